//! The simulated payment provider: keeps its own records (so "charged
//! twice" can be checked against them), acts at most once per idempotency
//! key, answers after a fixed latency, and knows the test tokens of
//! DESIGN.md:
//!
//! | token | authorization | capture |
//! |---|---|---|
//! | `tok_visa` | authorized | captured |
//! | `tok_capture_flaky` | authorized | fails twice per authorization (an explicit "not done" answer), then captured |
//! | `tok_declined`, any unknown `tok_*` | declined | — |
//! | `tok_insufficient_funds` | declined: insufficient funds | — |
//! | `tok_timeout` | recorded as pending, never answered; settles as authorized once the clock passes `late_settle` after it arrived | — |
//!
//! The provider works on its own: a request keeps going when its caller
//! stops waiting for the answer, as at a real provider.
//!
//! For race tests, [`Simulator::hold_authorizations`] parks arriving
//! authorizations at a gate (counted by [`Simulator::held`]) until
//! [`Simulator::release_authorizations`].
//!
//! It runs inside payment's process, or as a system of its own that payment
//! reaches over NATS ([`remote`]), as [`Placement`] says.

pub mod remote;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use emporium_nats::SharedClock;
use emporium_schemas::values::{Money, PaymentMethod};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::PaymentSettings;
use crate::domain::Operation;
use crate::provider::{Decline, Provider, ProviderError, ProviderRecord, ProviderRef, RecordState};

/// How many captures of a `tok_capture_flaky` authorization fail before one succeeds.
pub const FLAKY_CAPTURE_FAILURES: u32 = 2;

/// The simulator's behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimulatorConfig {
    /// How long every answer takes.
    pub latency: Duration,
    /// When a `tok_timeout` authorization settles, after it arrived (by the injected clock).
    pub late_settle: Duration,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self { latency: Duration::from_millis(20), late_settle: Duration::from_secs(60) }
    }
}

impl From<&PaymentSettings> for SimulatorConfig {
    fn from(settings: &PaymentSettings) -> Self {
        Self { latency: settings.provider_latency, late_settle: settings.sim_late_settle }
    }
}

/// Where payment finds the simulated provider (`PAYMENT_SIMULATOR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// `in-process` (the default): inside payment's own process, so its
    /// records go when that process does.
    #[default]
    InProcess,
    /// `remote`: in a process of its own (`emporium provider`), reached over
    /// NATS through [`remote::RemoteSimulator`]; its records outlive payment.
    Remote,
}

impl std::str::FromStr for Placement {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "in-process" => Ok(Placement::InProcess),
            "remote" => Ok(Placement::Remote),
            other => Err(format!("expected in-process or remote, got {other:?}")),
        }
    }
}

/// A request as it arrives (in process, or over the wire of [`remote`]).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "snake_case")]
enum Request {
    Authorize { method: PaymentMethod, amount: Money },
    Capture { authorization: ProviderRef, amount: Money },
    Void { authorization: ProviderRef },
    Refund { capture: ProviderRef, amount: Money },
}

/// What later requests did to an authorization or capture.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    captured: bool,
    voided: bool,
    refunded: i64,
    failed_captures: u32,
}

#[derive(Debug)]
struct Records {
    late_settle: TimeDelta,
    records: Vec<ProviderRecord>,
    by_key: HashMap<String, usize>,
    by_reference: HashMap<ProviderRef, usize>,
    usage: HashMap<ProviderRef, Usage>,
    next_reference: u64,
}

impl Records {
    /// A pending `tok_timeout` authorization settles once its time has come.
    fn settle_if_due(&mut self, index: usize, now: DateTime<Utc>) {
        let late_settle = self.late_settle;
        if let Some(record) = self.records.get_mut(index)
            && record.state == RecordState::Pending
            && record.arrived_at.checked_add_signed(late_settle).is_some_and(|settles_at| now >= settles_at)
        {
            record.state = RecordState::Succeeded;
        }
    }

    fn find(&mut self, key: &str, now: DateTime<Utc>) -> Option<&ProviderRecord> {
        let index = *self.by_key.get(key)?;
        self.settle_if_due(index, now);
        self.records.get(index)
    }

    /// A settled record of `operation` by reference, with what was done to it since.
    fn settled(
        &mut self,
        reference: &ProviderRef,
        operation: Operation,
        now: DateTime<Utc>,
    ) -> Option<(ProviderRecord, Usage)> {
        let index = *self.by_reference.get(reference)?;
        self.settle_if_due(index, now);
        let record = self.records.get(index)?;
        (record.operation == operation && record.state == RecordState::Succeeded)
            .then(|| (record.clone(), self.usage.get(reference).copied().unwrap_or_default()))
    }

    /// Acts on `request` unless `key` was seen: then answers what was recorded.
    /// `None`: no answer (yet).
    fn act(&mut self, key: String, request: Request, now: DateTime<Utc>) -> Option<Result<ProviderRef, ProviderError>> {
        if let Some(record) = self.find(&key, now) {
            return record.state.answer(&record.reference);
        }
        let (operation, target, amount, method, state) = match request {
            Request::Authorize { method, amount } => {
                let state = match method.as_str() {
                    "tok_visa" | "tok_capture_flaky" => RecordState::Succeeded,
                    "tok_insufficient_funds" => RecordState::Declined(Decline::InsufficientFunds),
                    "tok_timeout" => RecordState::Pending,
                    _ => RecordState::Declined(Decline::Declined),
                };
                (Operation::Authorize, None, Some(amount), Some(method), state)
            }
            Request::Capture { authorization, amount } => {
                let state = self.capture(&authorization, &amount, now);
                (Operation::Capture, Some(authorization), Some(amount), None, state)
            }
            Request::Void { authorization } => {
                let state = match self.settled(&authorization, Operation::Authorize, now) {
                    None => RecordState::Declined(Decline::UnknownReference),
                    Some((_, usage)) if usage.captured || usage.voided => {
                        RecordState::Declined(Decline::AlreadySettled)
                    }
                    Some(_) => RecordState::Succeeded,
                };
                (Operation::Void, Some(authorization), None, None, state)
            }
            Request::Refund { capture, amount } => {
                let state = match self.settled(&capture, Operation::Capture, now) {
                    None => RecordState::Declined(Decline::UnknownReference),
                    Some((record, usage)) => match record.amount {
                        Some(captured)
                            if captured.currency == amount.currency
                                && usage.refunded.saturating_add(amount.amount.get()) <= captured.amount.get() =>
                        {
                            RecordState::Succeeded
                        }
                        _ => RecordState::Declined(Decline::AmountTooLarge),
                    },
                };
                (Operation::Refund, Some(capture), Some(amount), None, state)
            }
        };
        if state == RecordState::Succeeded
            && let Some(target) = &target
        {
            let usage = self.usage.entry(target.clone()).or_default();
            match operation {
                Operation::Capture => usage.captured = true,
                Operation::Void => usage.voided = true,
                Operation::Refund => {
                    usage.refunded = usage.refunded.saturating_add(amount.as_ref().map_or(0, |a| a.amount.get()));
                }
                Operation::Authorize => {}
            }
        }
        self.next_reference += 1;
        let reference = ProviderRef(format!("{}_{:08}", prefix(operation), self.next_reference));
        let answer = state.answer(&reference);
        let index = self.records.len();
        self.by_key.insert(key.clone(), index);
        self.by_reference.insert(reference.clone(), index);
        self.records.push(ProviderRecord { key, operation, reference, target, amount, method, state, arrived_at: now });
        answer
    }

    fn capture(&mut self, authorization: &ProviderRef, amount: &Money, now: DateTime<Utc>) -> RecordState {
        let Some((record, usage)) = self.settled(authorization, Operation::Authorize, now) else {
            return RecordState::Declined(Decline::UnknownReference);
        };
        if usage.captured || usage.voided {
            return RecordState::Declined(Decline::AlreadySettled);
        }
        let fits = record
            .amount
            .as_ref()
            .is_some_and(|held| held.currency == amount.currency && amount.amount.get() <= held.amount.get());
        if !fits {
            return RecordState::Declined(Decline::AmountTooLarge);
        }
        let flaky = record.method.as_ref().is_some_and(|m| m.as_str() == "tok_capture_flaky");
        if flaky && usage.failed_captures < FLAKY_CAPTURE_FAILURES {
            self.usage.entry(authorization.clone()).or_default().failed_captures += 1;
            return RecordState::Failed("capture temporarily unavailable".to_owned());
        }
        RecordState::Succeeded
    }
}

fn prefix(operation: Operation) -> &'static str {
    match operation {
        Operation::Authorize => "auth",
        Operation::Capture => "cap",
        Operation::Void => "void",
        Operation::Refund => "refund",
    }
}

#[derive(Debug)]
struct Shared {
    latency: Duration,
    clock: SharedClock,
    records: Mutex<Records>,
    /// `true` while authorizations are held at the gate.
    gate: watch::Sender<bool>,
    held: AtomicUsize,
}

impl Shared {
    fn records(&self) -> MutexGuard<'_, Records> {
        // A panic while holding the lock leaves the records as they were last written; keep using them.
        self.records.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn process(&self, key: String, request: Request) -> Option<Result<ProviderRef, ProviderError>> {
        if matches!(request, Request::Authorize { .. }) && self.records().find(&key, self.clock.now()).is_none() {
            self.pass_gate().await;
        }
        let answer = self.records().act(key, request, self.clock.now());
        tokio::time::sleep(self.latency).await;
        answer
    }

    async fn pass_gate(&self) {
        let mut gate = self.gate.subscribe();
        if !*gate.borrow_and_update() {
            return;
        }
        let _waiting = Waiting::at(&self.held);
        // Err only if the sender is gone, and the simulator holds it.
        let _ = gate.wait_for(|held| !*held).await;
    }
}

/// Counts a request at the gate for as long as it waits there.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn at(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The simulated provider; clones share its records.
#[derive(Debug, Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
}

impl Simulator {
    pub fn new(config: SimulatorConfig, clock: SharedClock) -> Self {
        let records = Records {
            late_settle: TimeDelta::from_std(config.late_settle).unwrap_or(TimeDelta::MAX),
            records: Vec::new(),
            by_key: HashMap::new(),
            by_reference: HashMap::new(),
            usage: HashMap::new(),
            next_reference: 0,
        };
        let (gate, _) = watch::channel(false);
        Self {
            shared: Arc::new(Shared {
                latency: config.latency,
                clock,
                records: Mutex::new(records),
                gate,
                held: AtomicUsize::new(0),
            }),
        }
    }

    /// Every record, in arrival order (pending ones settled if their time has come).
    pub fn records(&self) -> Vec<ProviderRecord> {
        self.records_page(0, usize::MAX)
    }

    /// At most `limit` records from the `from`th on, as [`records`](Self::records) has them.
    fn records_page(&self, from: usize, limit: usize) -> Vec<ProviderRecord> {
        let now = self.shared.clock.now();
        let mut records = self.shared.records();
        let end = from.saturating_add(limit).min(records.records.len());
        for index in from..end {
            records.settle_if_due(index, now);
        }
        records.records.get(from..end).map(<[ProviderRecord]>::to_vec).unwrap_or_default()
    }

    /// Test control: authorizations arriving from now on wait at a gate.
    pub fn hold_authorizations(&self) {
        self.shared.gate.send_replace(true);
    }

    /// Test control: lets every held authorization through, and later ones pass.
    pub fn release_authorizations(&self) {
        self.shared.gate.send_replace(false);
    }

    /// Test control: how many authorizations wait at the gate.
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Sends `request` to the provider, which works on it on its own; the
    /// returned future is its answer, and never resolves if there is none.
    fn submit(&self, key: String, request: Request) -> BoxFuture<'_, Result<ProviderRef, ProviderError>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let (answer, answered) = oneshot::channel();
            tokio::spawn(async move {
                if let Some(reply) = shared.process(key, request).await {
                    // The caller may have stopped waiting; the provider acted all the same.
                    let _ = answer.send(reply);
                }
            });
            match answered.await {
                Ok(reply) => reply,
                Err(_) => std::future::pending().await,
            }
        })
    }
}

impl Provider for Simulator {
    fn authorize(
        &self,
        key: String,
        method: PaymentMethod,
        amount: Money,
    ) -> BoxFuture<'_, Result<ProviderRef, ProviderError>> {
        self.submit(key, Request::Authorize { method, amount })
    }

    fn capture(
        &self,
        key: String,
        authorization: ProviderRef,
        amount: Money,
    ) -> BoxFuture<'_, Result<ProviderRef, ProviderError>> {
        self.submit(key, Request::Capture { authorization, amount })
    }

    fn void(&self, key: String, authorization: ProviderRef) -> BoxFuture<'_, Result<ProviderRef, ProviderError>> {
        self.submit(key, Request::Void { authorization })
    }

    fn refund(
        &self,
        key: String,
        capture: ProviderRef,
        amount: Money,
    ) -> BoxFuture<'_, Result<ProviderRef, ProviderError>> {
        self.submit(key, Request::Refund { capture, amount })
    }

    fn lookup(&self, key: String) -> BoxFuture<'_, Result<Option<ProviderRecord>, ProviderError>> {
        Box::pin(async move {
            tokio::time::sleep(self.shared.latency).await;
            Ok(self.shared.records().find(&key, self.shared.clock.now()).cloned())
        })
    }
}

#[cfg(test)]
mod tests {
    use emporium_nats::ManualClock;
    use emporium_schemas::values::Currency;

    use super::*;

    fn simulator() -> (Simulator, ManualClock) {
        let clock = ManualClock::at(Utc::now());
        let config = SimulatorConfig { latency: Duration::ZERO, late_settle: Duration::from_secs(60) };
        (Simulator::new(config, Arc::new(clock.clone())), clock)
    }

    fn eur(amount: i64) -> Money {
        Money { amount: amount.try_into().unwrap(), currency: Currency::try_from("EUR".to_owned()).unwrap() }
    }

    fn token(name: &str) -> PaymentMethod {
        PaymentMethod::try_from(name.to_owned()).unwrap()
    }

    async fn authorized(simulator: &Simulator, key: &str, method: &str) -> ProviderRef {
        simulator.authorize(key.to_owned(), token(method), eur(500)).await.unwrap()
    }

    #[test]
    fn the_simulator_runs_in_process_or_remote_and_nowhere_else() {
        assert_eq!("in-process".parse(), Ok(Placement::InProcess));
        assert_eq!("remote".parse(), Ok(Placement::Remote));
        assert!("elsewhere".parse::<Placement>().is_err());
    }

    #[tokio::test]
    async fn tokens_decide_authorizations() {
        let (simulator, _) = simulator();
        assert!(simulator.authorize("a".into(), token("tok_visa"), eur(500)).await.is_ok());
        assert!(simulator.authorize("b".into(), token("tok_capture_flaky"), eur(500)).await.is_ok());
        for (key, method, decline) in [
            ("c", "tok_declined", Decline::Declined),
            ("d", "tok_insufficient_funds", Decline::InsufficientFunds),
            ("e", "tok_mastercard", Decline::Declined),
        ] {
            let answer = simulator.authorize(key.into(), token(method), eur(500)).await;
            assert_eq!(answer, Err(ProviderError::Declined(decline)), "{method}");
        }
        assert_eq!(simulator.records().len(), 5);
    }

    #[tokio::test]
    async fn the_same_key_is_answered_from_the_record_and_never_acted_on_twice() {
        let (simulator, _) = simulator();
        let first = authorized(&simulator, "pay:authorize:1", "tok_visa").await;
        let again = authorized(&simulator, "pay:authorize:1", "tok_visa").await;
        assert_eq!(first, again);
        let capture = simulator.capture("pay:capture:1".into(), first.clone(), eur(500)).await.unwrap();
        let repeated = simulator.capture("pay:capture:1".into(), first.clone(), eur(500)).await.unwrap();
        assert_eq!(capture, repeated);
        assert_eq!(simulator.records().len(), 2);
        // A capture under another key finds the authorization already captured.
        let second = simulator.capture("pay:capture:2".into(), first, eur(500)).await;
        assert_eq!(second, Err(ProviderError::Declined(Decline::AlreadySettled)));
    }

    #[tokio::test]
    async fn a_flaky_capture_fails_twice_per_authorization_then_succeeds() {
        let (simulator, _) = simulator();
        let authorization = authorized(&simulator, "a", "tok_capture_flaky").await;
        for attempt in 1..=2 {
            let failed = simulator.capture(format!("c{attempt}"), authorization.clone(), eur(500)).await;
            assert!(matches!(failed, Err(ProviderError::NotDone(_))), "attempt {attempt}");
        }
        assert!(simulator.capture("c3".into(), authorization, eur(500)).await.is_ok());
        // The count is per authorization: another one fails twice again.
        let other = authorized(&simulator, "b", "tok_capture_flaky").await;
        assert!(simulator.capture("d1".into(), other, eur(500)).await.is_err());
    }

    #[tokio::test]
    async fn a_timeout_token_is_never_answered_and_settles_later_by_the_clock() {
        let (simulator, clock) = simulator();
        let call = simulator.authorize("slow".into(), token("tok_timeout"), eur(500));
        assert!(tokio::time::timeout(Duration::from_millis(100), call).await.is_err(), "it answered");
        let pending = simulator.lookup("slow".into()).await.unwrap().unwrap();
        assert_eq!(pending.state, RecordState::Pending);
        clock.advance(Duration::from_secs(61));
        let settled = simulator.lookup("slow".into()).await.unwrap().unwrap();
        assert_eq!(settled.state, RecordState::Succeeded);
        // Asked again with its key, it answers now, without acting again (a
        // second `tok_timeout` request would never answer: the guard makes that a failure).
        let again = tokio::time::timeout(Duration::from_secs(10), authorized(&simulator, "slow", "tok_timeout")).await;
        assert_eq!(again.expect("the repeated key was acted on again"), settled.reference);
        assert_eq!(simulator.records().len(), 1);
    }

    #[tokio::test]
    async fn void_and_refund_act_only_on_what_can_be_undone() {
        let (simulator, _) = simulator();
        let authorization = authorized(&simulator, "a", "tok_visa").await;
        assert!(simulator.void("v1".into(), authorization.clone()).await.is_ok());
        let after_void = simulator.capture("c1".into(), authorization.clone(), eur(500)).await;
        assert_eq!(after_void, Err(ProviderError::Declined(Decline::AlreadySettled)));
        assert!(simulator.void("v2".into(), authorization).await.is_err(), "voided once");

        let other = authorized(&simulator, "b", "tok_visa").await;
        let capture = simulator.capture("c2".into(), other, eur(500)).await.unwrap();
        assert!(simulator.refund("r1".into(), capture.clone(), eur(300)).await.is_ok());
        let too_much = simulator.refund("r2".into(), capture.clone(), eur(300)).await;
        assert_eq!(too_much, Err(ProviderError::Declined(Decline::AmountTooLarge)));
        assert!(simulator.refund("r3".into(), capture, eur(200)).await.is_ok());
        assert_eq!(simulator.lookup("nobody".into()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn held_authorizations_wait_at_the_gate_until_released() {
        let (simulator, _) = simulator();
        simulator.hold_authorizations();
        let waiting = tokio::spawn({
            let simulator = simulator.clone();
            async move { simulator.authorize("held".into(), token("tok_visa"), eur(500)).await }
        });
        let mut spins = 0;
        while simulator.held() == 0 {
            spins += 1;
            assert!(spins < 10_000, "the authorization never reached the gate");
            tokio::task::yield_now().await;
        }
        assert!(simulator.records().is_empty(), "held requests are not acted on");
        simulator.release_authorizations();
        assert!(waiting.await.unwrap().is_ok());
        assert_eq!(simulator.held(), 0);
    }
}
