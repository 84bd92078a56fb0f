//! Provider calls: made by worker tasks after their attempt row is
//! committed, bounded by a semaphore and a timeout, and settled in one
//! transaction with the payment's new state, its events and its ledger
//! entries.
//!
//! Settling is a compare-and-set on the attempt: only an attempt still open
//! (`started` or `unknown`) is settled, so a worker and recovery that both
//! learn an outcome apply it once. A timed-out call leaves its attempt
//! `unknown`, and so does an answer that does not prove what the provider
//! did (a transport error or 5xx, which may come after it acted);
//! [`Payments::recover_once`] asks the provider by the attempt's key and
//! settles it, or makes the call again with the same key (the provider acts
//! once per key), and starts the retries that are due. Only an explicit
//! "not done" answer lets an operation be tried again under a new key.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use emporium_nats::{BatchError, OutgoingEvent};
use emporium_schemas::events::payment::{
    PaymentAuthorized, PaymentCaptureFailed, PaymentCaptured, PaymentFailed, PaymentRefunded, PaymentVoided,
};
use emporium_schemas::values::Text;
use emporium_schemas::{EntityKey, Event, Origin, Seq};
use futures::future::join_all;
use sqlx::PgConnection;

use crate::domain::{self, Emit, LedgerMove, Operation, Outcome, Status};
use crate::journal::{self, EntryKind};
use crate::provider::{ProviderError, ProviderRef};
use crate::saga::{ApplyError, Payments};
use crate::store::{self, Attempt, AttemptStatus, Ordered, PaymentChange, PaymentRow, Request, StoreError};

/// The counter operators watch for captures given up.
pub(crate) fn capture_failed_total() -> &'static emporium_platform::counters::Counter {
    emporium_platform::counters::counter(
        "payment_capture_failed_total",
        "Captures given up after their bounded attempts (payment.capture_failed)",
    )
}

/// The counter operators watch for voids and refunds the provider refused
/// for good (payments left `void_failed` or `refund_failed`).
pub(crate) fn compensation_failed_total() -> &'static emporium_platform::counters::Counter {
    emporium_platform::counters::counter(
        "payment_compensation_failed_total",
        "Voids and refunds the provider refused for good (payments void_failed or refund_failed)",
    )
}

/// What a provider call answered.
type Answer = Result<ProviderRef, ProviderError>;

/// What an answer settles its attempt as; `None`: it does not say what the
/// provider did, so the attempt's outcome is unknown.
fn conclusion(answer: &Answer) -> Option<(AttemptStatus, Outcome)> {
    match answer {
        Ok(_) => Some((AttemptStatus::Succeeded, Outcome::Succeeded)),
        Err(ProviderError::Declined(decline)) => {
            Some((AttemptStatus::Declined, Outcome::Declined(decline.failure_reason())))
        }
        Err(ProviderError::NotDone(_)) => Some((AttemptStatus::Failed, Outcome::Failed)),
        Err(ProviderError::Unavailable(_)) => None,
    }
}

/// What one recovery step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Attempts whose outcome the provider had, applied as if the call had answered.
    pub settled: usize,
    /// Attempts the provider never received, made again with the same key.
    pub reissued: usize,
    /// Attempts the provider has received but not decided: left for a later step.
    pub pending: usize,
    /// Captures, voids or refunds tried again because they were due.
    pub retried: usize,
}

/// What recovery made of one attempt.
enum Recovery {
    Settled,
    Reissued,
    Pending,
    /// The provider could not be asked; try again next step.
    Unreachable,
}

/// What settling an answer did, to act on once it is committed.
struct Settled {
    /// The call the outcome starts.
    next: Option<Attempt>,
    /// Logs and counts what happened; run only after the commit, so a
    /// settlement retried after a failed batch is reported once.
    report: Box<dyn FnOnce() + Send>,
}

impl Settled {
    /// A settlement that announces nothing and starts no call.
    fn nothing(report: impl FnOnce() + Send + 'static) -> (Self, Vec<OutgoingEvent>) {
        (Self { next: None, report: Box::new(report) }, Vec::new())
    }
}

impl Payments {
    /// Hands a committed attempt to a worker task.
    pub(crate) fn dispatch(self: &Arc<Self>, attempt: Attempt) {
        let this = self.clone();
        self.workers.spawn(async move { this.execute(attempt).await });
    }

    /// Makes the call and settles it, then any call its outcome starts
    /// (a void after a late authorization, a refund after a cancelled capture).
    async fn execute(self: &Arc<Self>, attempt: Attempt) {
        let mut next = Some(attempt);
        while let Some(attempt) = next.take() {
            next = self.call_and_settle(attempt).await;
        }
    }

    async fn call_and_settle(self: &Arc<Self>, attempt: Attempt) -> Option<Attempt> {
        let permit = tokio::select! {
            () = self.stopping.cancelled() => return None,
            permit = self.calls.acquire() => permit.ok()?,
        };
        let answer = tokio::time::timeout(self.config.timeout, self.invoke(&attempt)).await;
        drop(permit);
        let Ok(answer) = answer else {
            tracing::warn!(payment.id = %attempt.payment_id, key = %attempt.key, "provider call timed out; its outcome is unknown");
            if let Err(error) = store::mark_unknown(&self.pool, &attempt.key).await {
                // Still `started`: recovery takes it up once it is older than the timeout.
                tracing::warn!(%error, key = %attempt.key, "could not mark a call unknown");
            }
            return None;
        };
        match self.settle(&attempt, answer).await {
            Ok(next) => next,
            Err(error) => {
                // The attempt stays open; recovery asks the provider for its outcome.
                tracing::warn!(%error, key = %attempt.key, "could not settle a provider call; recovery will");
                None
            }
        }
    }

    async fn invoke(&self, attempt: &Attempt) -> Answer {
        let (key, amount) = (attempt.key.clone(), attempt.amount.clone());
        match &attempt.request {
            Request::Authorize { method } => self.provider.authorize(key, method.clone(), amount).await,
            Request::Capture { authorization } => self.provider.capture(key, authorization.clone(), amount).await,
            Request::Void { authorization } => self.provider.void(key, authorization.clone()).await,
            Request::Refund { capture } => self.provider.refund(key, capture.clone(), amount).await,
        }
    }

    /// Applies a call's answer, unless its attempt was settled already, in
    /// the batch writer's next transaction. Returns the call the outcome
    /// starts, if any, committed and to be made.
    async fn settle(self: &Arc<Self>, attempt: &Attempt, answer: Answer) -> Result<Option<Attempt>, ApplyError> {
        let (this, attempt) = (self.clone(), attempt.clone());
        let settled =
            self.writer.run(move |tx| Box::pin(async move { this.settle_in(tx, &attempt, answer).await })).await;
        let settled = settled.map_err(BatchError::into_unit_error)?;
        (settled.report)();
        Ok(settled.next)
    }

    /// [`Payments::settle`]'s writes, in `tx`, and the events they announce.
    async fn settle_in(
        &self,
        tx: &mut PgConnection,
        attempt: &Attempt,
        answer: Answer,
    ) -> Result<(Settled, Vec<OutgoingEvent>), ApplyError> {
        let now = self.clock.now();
        let corrupt = |what: String| ApplyError::Store(StoreError::Corrupt(what));
        let (payment, current) = store::lock_attempt(tx, &attempt.key)
            .await?
            .ok_or_else(|| corrupt(format!("attempt {} is gone", attempt.key)))?;
        if !current.status.is_open() {
            return Ok(Settled::nothing(|| {}));
        }
        let ordered =
            payment.ordered.clone().ok_or_else(|| corrupt(format!("payment {} has no order", payment.payment_id)))?;

        let Some((status, outcome)) = conclusion(&answer) else {
            // The provider may have acted: never try again under a new key; ask by this one.
            if current.status == AttemptStatus::Started {
                store::mark_unknown(tx, &attempt.key).await?;
            }
            let (payment, key, reason) = (payment.payment_id, attempt.key.clone(), answer_note(&answer));
            return Ok(Settled::nothing(move || {
                tracing::warn!(payment.id = %payment, %key, %reason, "no conclusive answer from the provider; its outcome is unknown");
            }));
        };
        let note = answer_note(&answer);
        let reference = answer.as_ref().ok();
        store::finish_attempt(tx, &attempt.key, status, reference, &note, now).await?;

        let Some(transition) = domain::settle(
            &payment.rules(),
            attempt.operation(),
            outcome,
            attempt.number,
            self.config.capture_attempts,
        ) else {
            let (id, key, status) = (payment.payment_id, attempt.key.clone(), payment.status.as_str());
            return Ok(Settled::nothing(move || {
                tracing::warn!(payment.id = %id, %key, status, "an outcome the payment was not waiting for");
            }));
        };

        // The payment as it is after this outcome: what the events, the ledger and the next call see.
        let mut settled = payment.clone();
        match (attempt.operation(), reference) {
            (Operation::Authorize, Some(reference)) => settled.authorization_ref = Some(reference.clone()),
            (Operation::Capture, Some(reference)) => settled.capture_ref = Some(reference.clone()),
            _ => {}
        }
        let origin = attempt.origin;
        let mut version = payment.version;
        let mut events = Vec::with_capacity(transition.emit.len());
        let mut failure_reason = transition.compensation_failed.then_some(note.as_str());
        for emit in &transition.emit {
            version += 1;
            events.push(payment_event(&settled, &ordered, version, *emit, &note, origin)?);
            failure_reason = match emit {
                Emit::Failed(reason) => Some(failure_text(*reason)),
                Emit::CaptureFailed { .. } => Some(note.as_str()),
                _ => failure_reason,
            };
        }
        if let Some(movement) = transition.ledger {
            self.book(tx, &settled, &ordered, movement).await?;
        }
        let next = match transition.start {
            Some(operation) => Some(self.start_attempt(tx, &settled, operation, origin).await?),
            None => None,
        };
        let retry_at = transition.retry.then(|| {
            let delay = domain::retry_delay(self.config.retry_backoff, attempt.number);
            TimeDelta::from_std(delay).ok().and_then(|delay| now.checked_add_signed(delay)).unwrap_or(now)
        });
        let change = PaymentChange {
            status: transition.status,
            version,
            cancel_requested: false,
            authorization_ref: settled.authorization_ref.as_ref(),
            capture_ref: settled.capture_ref.as_ref(),
            failure_reason,
            retry_at,
        };
        store::update_payment(tx, payment.payment_id, &change, now).await?;
        let (id, order, operation, number, key) =
            (payment.payment_id, payment.order_id, attempt.operation().as_str(), attempt.number, attempt.key.clone());
        let (gave_up, compensation_failed, status) =
            (transition.gave_up, transition.compensation_failed, transition.status.as_str());
        let report = move || {
            if let Some(at) = retry_at {
                tracing::warn!(payment.id = %id, operation, attempt = number, %at, reason = %note, "provider call failed; tried again later");
            }
            if gave_up {
                capture_failed_total().increment();
                tracing::error!(payment.id = %id, order.id = %order, attempts = number, reason = %note, "capture given up");
            }
            if compensation_failed {
                compensation_failed_total().increment();
                tracing::error!(payment.id = %id, order.id = %order, operation, %key, reason = %note, status, "the provider refused a compensation for good; an operator must look");
            }
        };
        Ok((Settled { next, report: Box::new(report) }, events))
    }

    /// Posts the ledger entries of a capture, or reverses them for a refund.
    async fn book(
        &self,
        tx: &mut PgConnection,
        payment: &PaymentRow,
        ordered: &Ordered,
        movement: LedgerMove,
    ) -> Result<(), ApplyError> {
        let (order, id, now) = (payment.order_id, payment.payment_id, self.clock.now());
        let entries = match movement {
            LedgerMove::Capture => {
                let lines = store::sale_lines(tx, id, &ordered.amount.currency).await?;
                let (charge, sale) =
                    journal::capture_entries(ordered.customer, &ordered.amount, &lines, self.config.commission_bps)?;
                [charge, sale]
            }
            LedgerMove::Refund => {
                let missing = |kind: EntryKind| {
                    StoreError::Corrupt(format!("payment {id} has no {} entry to reverse", kind.as_str()))
                };
                let charge =
                    store::posted_entry(tx, id, EntryKind::Charge).await?.ok_or_else(|| missing(EntryKind::Charge))?;
                let sale =
                    store::posted_entry(tx, id, EntryKind::Sale).await?.ok_or_else(|| missing(EntryKind::Sale))?;
                [sale.reversal(EntryKind::Unsale)?, charge.reversal(EntryKind::Refund)?]
            }
        };
        Ok(store::post_entries(tx, order, id, &entries, now).await?)
    }

    /// One recovery step: settles, or makes again with the same key, every
    /// call whose outcome is unknown (timed out, or `started` longer ago than
    /// the timeout: a crash between commit and call), then makes the
    /// retries that are due. Calls made here are awaited, with what follows
    /// them, so a test that drives this step sees their effect on return.
    pub async fn recover_once(self: &Arc<Self>) -> Result<Recovered, ApplyError> {
        let now = self.clock.now();
        let started_before = TimeDelta::from_std(self.config.timeout)
            .ok()
            .and_then(|timeout| now.checked_sub_signed(timeout))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let open = store::attempts_to_recover(&self.pool, started_before, self.config.recovery_batch).await?;
        let keys: Vec<String> = open.iter().map(|attempt| attempt.key.clone()).collect();
        let mut recovered = Recovered::default();
        for result in join_all(open.into_iter().map(|attempt| self.recover(attempt))).await {
            match result {
                Ok(Recovery::Settled) => recovered.settled += 1,
                Ok(Recovery::Reissued) => recovered.reissued += 1,
                Ok(Recovery::Pending) => recovered.pending += 1,
                Ok(Recovery::Unreachable) => {}
                Err(error) => tracing::warn!(%error, "recovering a provider call failed"),
            }
        }
        // Whatever the provider answered, each one asked about and still open
        // goes behind those not asked about as recently.
        if let Err(error) = store::mark_checked(&self.pool, &keys, self.clock.now()).await {
            tracing::warn!(%error, attempts = keys.len(), "could not record the look-ups");
        }
        let due = store::due_retries(&self.pool, now, self.config.recovery_batch).await?;
        for result in join_all(due.into_iter().map(|payment| self.retry(payment))).await {
            match result {
                Ok(true) => recovered.retried += 1,
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "a due retry failed to start"),
            }
        }
        Ok(recovered)
    }

    async fn recover(self: &Arc<Self>, attempt: Attempt) -> Result<Recovery, ApplyError> {
        let looked_up = {
            let Ok(_permit) = self.calls.acquire().await else { return Ok(Recovery::Unreachable) };
            tokio::time::timeout(self.config.timeout, self.provider.lookup(attempt.key.clone())).await
        };
        let record = match looked_up {
            Ok(Ok(record)) => record,
            Ok(Err(error)) => {
                tracing::warn!(%error, key = %attempt.key, "the provider could not be asked about a call");
                return Ok(Recovery::Unreachable);
            }
            Err(_) => {
                tracing::warn!(key = %attempt.key, "the provider did not answer a look-up in time");
                return Ok(Recovery::Unreachable);
            }
        };
        let Some(record) = record else {
            // The provider never received it: make it again, with the same key.
            tracing::info!(key = %attempt.key, "re-issuing a call the provider never received");
            self.execute(attempt).await;
            return Ok(Recovery::Reissued);
        };
        let Some(answer) = record.state.answer(&record.reference) else {
            if attempt.status == AttemptStatus::Started {
                store::mark_unknown(&self.pool, &attempt.key).await?;
            }
            return Ok(Recovery::Pending);
        };
        tracing::info!(key = %attempt.key, "settling a call from the provider's record");
        if let Some(next) = self.settle(&attempt, answer).await? {
            self.execute(next).await;
        }
        Ok(Recovery::Settled)
    }

    /// Starts the next attempt of a payment's due capture, void or refund, and makes it.
    async fn retry(self: &Arc<Self>, payment: emporium_schemas::values::PaymentId) -> Result<bool, ApplyError> {
        let now = self.clock.now();
        let mut tx = self.pool.begin().await?;
        let Some(payment) = store::lock_payment(&mut tx, payment).await? else { return Ok(false) };
        let operation = match payment.status {
            Status::Capturing => Operation::Capture,
            Status::Voiding => Operation::Void,
            Status::Refunding => Operation::Refund,
            _ => return Ok(false),
        };
        // No `retry_at`: a call is in flight, or nothing is due.
        if payment.retry_at.is_none_or(|at| at > now) {
            return Ok(false);
        }
        let origin = store::last_attempt(&mut tx, payment.payment_id, operation)
            .await?
            .map_or(Origin { correlation_id: payment.correlation_id, causation_id: payment.correlation_id }, |last| {
                last.origin
            });
        // The payment's status is `operation`'s already: only its `retry_at` is cleared.
        let attempt = self.begin(&mut tx, &payment, operation, origin, now).await?;
        tx.commit().await?;
        self.execute(attempt).await;
        Ok(true)
    }
}

/// What an unsuccessful answer said, for the attempt row and `capture_failed`.
fn answer_note(answer: &Answer) -> String {
    match answer {
        Ok(_) => "succeeded".to_owned(),
        Err(error) => error.to_string(),
    }
}

fn failure_text(reason: emporium_schemas::events::payment::FailureReason) -> &'static str {
    use emporium_schemas::events::payment::FailureReason;
    match reason {
        FailureReason::Declined => "declined",
        FailureReason::InsufficientFunds => "insufficient_funds",
        FailureReason::ProviderError => "provider_error",
    }
}

/// Free text as events carry it: 1 to 200 characters.
fn text(value: &str) -> Result<Text, ApplyError> {
    let value: String = value.chars().take(Text::MAX_CHARS).collect();
    let value = if value.is_empty() { "unknown".to_owned() } else { value };
    Text::try_from(value).map_err(|error| ApplyError::Store(StoreError::Corrupt(error.to_string())))
}

/// The `payment.*` event `emit` of a payment at `seq`, keyed by its order.
fn payment_event(
    payment: &PaymentRow,
    ordered: &Ordered,
    seq: i64,
    emit: Emit,
    note: &str,
    origin: Origin,
) -> Result<OutgoingEvent, ApplyError> {
    let (order_id, payment_id, amount) = (payment.order_id, payment.payment_id, ordered.amount.clone());
    let reference = |reference: &Option<ProviderRef>| text(reference.as_ref().map_or("", |r| r.0.as_str()));
    match emit {
        Emit::Authorized => {
            let provider_ref = reference(&payment.authorization_ref)?;
            encode(payment, seq, origin, PaymentAuthorized { order_id, payment_id, amount, provider_ref })
        }
        Emit::Failed(reason) => encode(payment, seq, origin, PaymentFailed { order_id, payment_id, amount, reason }),
        Emit::Captured => {
            let provider_ref = reference(&payment.capture_ref)?;
            encode(payment, seq, origin, PaymentCaptured { order_id, payment_id, amount, provider_ref })
        }
        Emit::CaptureFailed { attempts } => {
            let failed = PaymentCaptureFailed { order_id, payment_id, amount, attempts, reason: text(note)? };
            encode(payment, seq, origin, failed)
        }
        Emit::Voided => encode(payment, seq, origin, PaymentVoided { order_id, payment_id, amount }),
        Emit::Refunded => encode(payment, seq, origin, PaymentRefunded { order_id, payment_id, amount }),
    }
}

fn encode<D: Event>(payment: &PaymentRow, seq: i64, origin: Origin, data: D) -> Result<OutgoingEvent, ApplyError> {
    let key = EntityKey::from(*payment.order_id.as_uuid());
    Ok(OutgoingEvent::caused_by(key, Seq::try_from(seq)?, origin, data)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Decline;

    #[test]
    fn only_an_answer_that_says_what_happened_is_conclusive() {
        assert!(conclusion(&Err(ProviderError::Declined(Decline::AlreadySettled))).is_some());
        assert!(conclusion(&Err(ProviderError::NotDone("try later".into()))).is_some());
        assert!(conclusion(&Err(ProviderError::Unavailable("502 bad gateway".into()))).is_none());
    }
}
