//! The simulated provider as a system of its own, reached over NATS
//! request/reply: a [`Listener`] answers on [`SUBJECT`] from a [`Simulator`]
//! in the process that runs it (`emporium provider`), and [`RemoteSimulator`] is
//! the [`Provider`] payment calls it through. The records then live with the
//! provider, not with payment: a payment process killed mid-call finds, once
//! restarted, what the provider did under each key, and the invariants read
//! the same records ([`RemoteSimulator::records`]).
//!
//! The wire is JSON, one call per request: the operation with its
//! idempotency key and arguments; the reply is what the call answers in
//! process. A call the simulator does not answer (`tok_timeout`) gets no
//! reply, so the caller's timeout fires as it would at a real provider, and
//! a request that never arrived (NATS down) is one the provider never acted on.

use std::time::Duration;

use emporium_schemas::values::{Money, PaymentMethod};
use futures::StreamExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Request, Simulator};
use crate::provider::{Provider, ProviderError, ProviderRecord, ProviderRef};

/// Where the simulator takes calls. Outside the `cmd.`/`evt.` namespaces: the
/// provider is not one of Emporium's services.
pub const SUBJECT: &str = "provider.simulator";

/// Records per page of [`RemoteSimulator::records`]: well under NATS's 1 MB payload limit.
const RECORDS_PAGE: usize = 1_000;

/// A call as it travels.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
enum Call {
    /// A money operation under its idempotency key.
    Money {
        key: String,
        request: Request,
    },
    Lookup {
        key: String,
    },
    Records {
        from: usize,
        limit: usize,
    },
}

/// A reply as it travels.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    /// A money operation's answer, as the simulator gives it in process.
    Answer(Result<ProviderRef, ProviderError>),
    Record(Option<ProviderRecord>),
    Records(Vec<ProviderRecord>),
    /// Nothing was done: the request was not a call the simulator can read.
    Unreadable(String),
}

fn undecodable(what: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unavailable(format!("an answer the simulator's client cannot read: {what}"))
}

/// The simulator taking calls on [`SUBJECT`].
#[derive(Debug)]
pub struct Listener {
    simulator: Simulator,
    nats: async_nats::Client,
    calls: async_nats::Subscriber,
}

impl Listener {
    /// Subscribes `simulator` to [`SUBJECT`]; calls sent once this returns reach it.
    pub async fn bind(simulator: Simulator, nats: async_nats::Client) -> Result<Self, ListenError> {
        let calls = nats.subscribe(SUBJECT).await.map_err(|error| ListenError(error.to_string()))?;
        // The server has the subscription once it answers a ping sent after it.
        nats.flush().await.map_err(|error| ListenError(error.to_string()))?;
        Ok(Self { simulator, nats, calls })
    }

    /// Answers calls until `stop`, each on a task of its own (a slow call
    /// holds up no other); then lets the calls already taken finish.
    pub async fn serve(mut self, stop: CancellationToken) {
        let tasks = TaskTracker::new();
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => break,
                message = self.calls.next() => match message {
                    Some(message) => message,
                    None => break,
                },
            };
            let Some(reply_to) = message.reply.clone() else { continue };
            let (simulator, nats) = (self.simulator.clone(), self.nats.clone());
            tasks.spawn(async move {
                let reply = match serde_json::from_slice::<Call>(&message.payload) {
                    Ok(call) => simulator.answer(call).await,
                    Err(error) => Some(Reply::Unreadable(format!("an unreadable call: {error}"))),
                };
                let Some(reply) = reply else { return };
                match serde_json::to_vec(&reply) {
                    // A reply lost on its way is, to the caller, a call of unknown outcome: it asks again by key.
                    Ok(payload) => {
                        if let Err(error) = nats.publish(reply_to, payload.into()).await {
                            tracing::warn!(%error, "the simulated provider's reply was not sent");
                        }
                    }
                    Err(error) => tracing::error!(%error, "the simulated provider's reply cannot be encoded"),
                }
            });
        }
        tasks.close();
        tasks.wait().await;
    }
}

/// The simulator could not subscribe to its subject.
#[derive(Debug, thiserror::Error)]
#[error("the simulated provider cannot take calls: {0}")]
pub struct ListenError(String);

impl Simulator {
    /// The reply to `call`; `None` when the simulator gives none (a pending authorization).
    async fn answer(&self, call: Call) -> Option<Reply> {
        match call {
            Call::Money { key, request } => self.shared.process(key, request).await.map(Reply::Answer),
            Call::Lookup { key } => Some(Reply::Record(Provider::lookup(self, key).await.ok().flatten())),
            Call::Records { from, limit } => Some(Reply::Records(self.records_page(from, limit))),
        }
    }
}

/// The simulator in another process, as a [`Provider`]: each call is a NATS
/// request that waits at most `timeout` for its reply.
#[derive(Debug, Clone)]
pub struct RemoteSimulator {
    nats: async_nats::Client,
    timeout: Duration,
}

impl RemoteSimulator {
    pub fn new(nats: async_nats::Client, timeout: Duration) -> Self {
        Self { nats, timeout }
    }

    /// Sends `call`. No reply (no responder, a timeout, a transport error)
    /// says nothing about what the provider did: the outcome is unknown.
    async fn ask(&self, call: &Call) -> Result<Reply, ProviderError> {
        let payload = serde_json::to_vec(call).map_err(|error| ProviderError::Unavailable(error.to_string()))?;
        let request = async_nats::Request::new().payload(payload.into()).timeout(Some(self.timeout));
        let message = self
            .nats
            .send_request(SUBJECT, request)
            .await
            .map_err(|error| ProviderError::Unavailable(format!("the simulated provider: {error}")))?;
        serde_json::from_slice(&message.payload).map_err(undecodable)
    }

    fn money(&self, key: String, request: Request) -> BoxFuture<'_, Result<ProviderRef, ProviderError>> {
        Box::pin(async move {
            match self.ask(&Call::Money { key, request }).await? {
                Reply::Answer(answer) => answer,
                other => Err(undecodable(format_args!("{other:?} to a money call"))),
            }
        })
    }

    /// Every record the provider keeps, in arrival order, read a page at a time.
    pub async fn records(&self) -> Result<Vec<ProviderRecord>, ProviderError> {
        let mut records = Vec::new();
        loop {
            let page = match self.ask(&Call::Records { from: records.len(), limit: RECORDS_PAGE }).await? {
                Reply::Records(page) => page,
                other => return Err(undecodable(format_args!("{other:?} to a records call"))),
            };
            let last = page.len() < RECORDS_PAGE;
            records.extend(page);
            if last {
                return Ok(records);
            }
        }
    }
}

impl Provider for RemoteSimulator {
    fn authorize(
        &self,
        key: String,
        method: PaymentMethod,
        amount: Money,
    ) -> BoxFuture<'_, Result<ProviderRef, ProviderError>> {
        self.money(key, Request::Authorize { method, amount })
    }

    fn capture(
        &self,
        key: String,
        authorization: ProviderRef,
        amount: Money,
    ) -> BoxFuture<'_, Result<ProviderRef, ProviderError>> {
        self.money(key, Request::Capture { authorization, amount })
    }

    fn void(&self, key: String, authorization: ProviderRef) -> BoxFuture<'_, Result<ProviderRef, ProviderError>> {
        self.money(key, Request::Void { authorization })
    }

    fn refund(
        &self,
        key: String,
        capture: ProviderRef,
        amount: Money,
    ) -> BoxFuture<'_, Result<ProviderRef, ProviderError>> {
        self.money(key, Request::Refund { capture, amount })
    }

    fn lookup(&self, key: String) -> BoxFuture<'_, Result<Option<ProviderRecord>, ProviderError>> {
        Box::pin(async move {
            match self.ask(&Call::Lookup { key }).await? {
                Reply::Record(record) => Ok(record),
                other => Err(undecodable(format_args!("{other:?} to a lookup"))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;
    use emporium_nats::ManualClock;
    use emporium_schemas::values::Currency;
    use emporium_test_harness::NatsServer;

    use super::*;
    use crate::provider::{Decline, RecordState};
    use crate::simulator::SimulatorConfig;

    fn eur(amount: i64) -> Money {
        Money { amount: amount.try_into().unwrap(), currency: Currency::try_from("EUR".to_owned()).unwrap() }
    }

    fn token(name: &str) -> PaymentMethod {
        PaymentMethod::try_from(name.to_owned()).unwrap()
    }

    /// A private NATS server with the simulator answering on it.
    struct Provided {
        server: NatsServer,
        simulator: Simulator,
        stop: CancellationToken,
    }

    impl Provided {
        async fn start() -> Self {
            let server = NatsServer::start().await.unwrap();
            let config = SimulatorConfig { latency: Duration::ZERO, late_settle: Duration::from_secs(60) };
            let simulator = Simulator::new(config, Arc::new(ManualClock::at(Utc::now())));
            let nats = async_nats::connect(server.url()).await.unwrap();
            let listener = Listener::bind(simulator.clone(), nats).await.unwrap();
            let stop = CancellationToken::new();
            tokio::spawn(listener.serve(stop.clone()));
            Self { server, simulator, stop }
        }

        /// A client as a payment process has it (each a connection of its own).
        async fn client(&self) -> RemoteSimulator {
            let nats = async_nats::connect(self.server.url()).await.unwrap();
            RemoteSimulator::new(nats, Duration::from_secs(2))
        }
    }

    impl Drop for Provided {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    async fn authorized(client: &RemoteSimulator, key: &str) -> ProviderRef {
        client.authorize(key.to_owned(), token("tok_visa"), eur(500)).await.unwrap()
    }

    #[tokio::test]
    async fn a_key_is_acted_on_once_whichever_process_repeats_it() {
        let provided = Provided::start().await;
        let first = provided.client().await;
        let reference = authorized(&first, "pay:authorize:1").await;
        // Payment restarted: a new connection repeats the key and gets the record's answer.
        let second = provided.client().await;
        assert_eq!(authorized(&second, "pay:authorize:1").await, reference);
        let capture = second.capture("pay:capture:1".into(), reference.clone(), eur(500)).await.unwrap();
        let again = second.capture("pay:capture:2".into(), reference, eur(500)).await;
        assert_eq!(again, Err(ProviderError::Declined(Decline::AlreadySettled)));

        let records = first.records().await.unwrap();
        assert_eq!(records, provided.simulator.records());
        assert_eq!(records.len(), 3);
        assert_eq!(records[1].reference, capture);
        let looked_up = second.lookup("pay:capture:2".into()).await.unwrap().unwrap();
        assert_eq!(looked_up.state, RecordState::Declined(Decline::AlreadySettled));
        assert_eq!(second.lookup("never".into()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_call_the_simulator_leaves_unanswered_is_of_unknown_outcome_and_found_pending() {
        let provided = Provided::start().await;
        let client = provided.client().await;
        let quick = RemoteSimulator::new(client.nats.clone(), Duration::from_millis(200));
        let unanswered = quick.authorize("slow".into(), token("tok_timeout"), eur(500)).await;
        assert!(matches!(unanswered, Err(ProviderError::Unavailable(_))), "{unanswered:?}");
        let record = client.lookup("slow".into()).await.unwrap().unwrap();
        assert_eq!(record.state, RecordState::Pending);
    }

    #[tokio::test]
    async fn records_are_read_across_pages() {
        let provided = Provided::start().await;
        let client = provided.client().await;
        authorized(&client, "first").await;
        for n in 1..RECORDS_PAGE + 5 {
            client.authorize(format!("key-{n}"), token("tok_declined"), eur(100)).await.unwrap_err();
        }
        let records = client.records().await.unwrap();
        assert_eq!(records.len(), RECORDS_PAGE + 5);
        assert_eq!(records, provided.simulator.records());
    }

    #[tokio::test]
    async fn without_the_simulator_a_call_is_of_unknown_outcome() {
        let server = NatsServer::start().await.unwrap();
        let nats = async_nats::connect(server.url()).await.unwrap();
        let client = RemoteSimulator::new(nats, Duration::from_millis(500));
        let answer = client.authorize("nobody-home".into(), token("tok_visa"), eur(500)).await;
        assert!(matches!(answer, Err(ProviderError::Unavailable(_))), "{answer:?}");
    }
}
