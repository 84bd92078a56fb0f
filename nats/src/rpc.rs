//! Request/reply between the gateway and the services: commands on
//! `cmd.<context>.<op>`, and entity commands on `cmd.<context>.<op>.<partition>`,
//! answered by an instance in the service's queue group.
//!
//! [`Caller`] sends a command with a deadline and the request id in a header;
//! [`Routes`] binds each command type (on each partition, for entity
//! commands) to an async function and [`serve`] answers them, a bounded
//! number at a time, in one answering loop. A request beyond that bound is
//! answered `overloaded` at once rather than queued: the gateway turns it into
//! 503 + `Retry-After`, which is cheaper for everyone than a growing backlog.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{HeaderMap, RequestErrorKind};
use emporium_schemas::registry::Addressing;
use emporium_schemas::{Command, CommandEnvelope, ErrorKind, Partition, Reply, ReplyError};
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// The header that carries the HTTP request id into the services' logs.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Why a command got no usable answer. The service's own refusals are not
/// errors here: they arrive as `Reply::Error`.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no instance serves {0}")]
    NoResponders(String),
    #[error("{0} did not answer in time")]
    TimedOut(String),
    #[error("request failed: {0}")]
    Transport(String),
    #[error("cannot encode the command: {0}")]
    Encode(serde_json::Error),
    /// A partition-addressed command without the key that picks its partition.
    #[error("{0} is partition-addressed and needs a key")]
    MissingKey(&'static str),
    #[error("the answer is not a reply: {0}")]
    Undecodable(serde_json::Error),
}

/// Sends commands and waits, at most `deadline`, for their replies.
#[derive(Debug, Clone)]
pub struct Caller {
    client: async_nats::Client,
    deadline: Duration,
    /// The deployment's partition count, to address entity commands.
    partitions: u16,
}

impl Caller {
    /// A caller for a deployment of one partition (see [`with_partitions`](Self::with_partitions)).
    pub fn new(client: async_nats::Client, deadline: Duration) -> Self {
        Self { client, deadline, partitions: 1 }
    }

    /// Addresses partitioned commands among `partitions` partitions.
    #[must_use]
    pub fn with_partitions(mut self, partitions: u16) -> Self {
        self.partitions = partitions;
        self
    }

    /// Sends `command` to its queue group, or to the owner of its key's
    /// partition if it is partition-addressed, and decodes the reply.
    pub async fn call<C: Command, A: DeserializeOwned>(
        &self,
        command: &CommandEnvelope<C>,
        request_id: &str,
    ) -> Result<Reply<A>, CallError> {
        let subject = match C::TYPE.addressing {
            Addressing::QueueGroup => C::TYPE.subject(None),
            Addressing::Partitioned => {
                let key = command.key.as_ref().ok_or(CallError::MissingKey(C::TYPE.type_name))?;
                C::TYPE.subject(Some(Partition::of(key, self.partitions)))
            }
        };
        let payload = command.to_json().map_err(CallError::Encode)?;
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID_HEADER, request_id);
        let request = async_nats::Request::new().payload(payload.into()).headers(headers).timeout(Some(self.deadline));
        let message = self.client.send_request(subject.clone(), request).await.map_err(|error| match error.kind() {
            RequestErrorKind::NoResponders => CallError::NoResponders(subject),
            RequestErrorKind::TimedOut => CallError::TimedOut(subject),
            _ => CallError::Transport(error.to_string()),
        })?;
        serde_json::from_slice(&message.payload).map_err(CallError::Undecodable)
    }
}

/// An encoded reply on its way.
type Answer = Pin<Box<dyn Future<Output = Vec<u8>> + Send>>;
type Route<S> = Box<dyn Fn(Arc<S>, &[u8]) -> Answer + Send + Sync>;

/// Command types bound to the functions that answer them, sharing a state `S`.
pub struct Routes<S> {
    state: Arc<S>,
    table: HashMap<String, Route<S>>,
}

impl<S> std::fmt::Debug for Routes<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes").field("subjects", &self.table.keys().collect::<Vec<_>>()).finish()
    }
}

impl<S: Send + Sync + 'static> Routes<S> {
    pub fn new(state: S) -> Self {
        Self::from_arc(Arc::new(state))
    }

    /// Routes over a state the service also shares with other tasks.
    pub fn from_arc(state: Arc<S>) -> Self {
        Self { state, table: HashMap::new() }
    }

    /// Answers command `C` with `answer`. A payload that is not a `C` is
    /// refused as `invalid` before `answer` sees it.
    pub fn on<C, A, F, Fut>(mut self, answer: F) -> Self
    where
        C: Command + Send + 'static,
        A: Serialize,
        F: Fn(Arc<S>, CommandEnvelope<C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<A, ReplyError>> + Send + 'static,
    {
        self.table.insert(C::TYPE.subject(None), route(Arc::new(answer), |_: &CommandEnvelope<C>| Ok(())));
        self
    }

    /// Answers the partition-addressed command `C` on each of `partitions`
    /// (of `partition_count`), for the entities this instance owns. A command
    /// whose key is missing or belongs to another partition is refused as
    /// `invalid` before `answer` sees it: it would reach the wrong owner.
    pub fn on_partitioned<C, A, F, Fut>(
        mut self,
        partitions: impl IntoIterator<Item = Partition>,
        partition_count: u16,
        answer: F,
    ) -> Self
    where
        C: Command + Send + 'static,
        A: Serialize,
        F: Fn(Arc<S>, CommandEnvelope<C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<A, ReplyError>> + Send + 'static,
    {
        let answer = Arc::new(answer);
        for partition in partitions {
            let owned = move |command: &CommandEnvelope<C>| match &command.key {
                Some(key) if Partition::of(key, partition_count) == partition => Ok(()),
                Some(key) => Err(ReplyError::new(
                    ErrorKind::Invalid,
                    format!("key {key} does not belong to partition {partition}"),
                )),
                None => Err(ReplyError::new(ErrorKind::Invalid, "a partitioned command needs a key")),
            };
            self.table.insert(C::TYPE.subject(Some(partition)), route(answer.clone(), owned));
        }
        self
    }
}

/// One command's route: decode a `C` (else `invalid`), `admit` it (else its
/// refusal), then `answer` it and encode the reply.
fn route<S, C, A, F, Fut>(
    answer: Arc<F>,
    admit: impl Fn(&CommandEnvelope<C>) -> Result<(), ReplyError> + Send + Sync + 'static,
) -> Route<S>
where
    S: Send + Sync + 'static,
    C: Command + Send + 'static,
    A: Serialize,
    F: Fn(Arc<S>, CommandEnvelope<C>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<A, ReplyError>> + Send + 'static,
{
    Box::new(move |state, payload| {
        let admitted = CommandEnvelope::<C>::from_json(payload)
            .map_err(|error| ReplyError::new(ErrorKind::Invalid, error.to_string()))
            .and_then(|command| admit(&command).map(|()| command));
        let answer = answer.clone();
        Box::pin(async move {
            let reply = match admitted {
                Ok(command) => match answer(state, command).await {
                    Ok(result) => Reply::Ok(result),
                    Err(error) => Reply::Error(error),
                },
                Err(error) => Reply::Error(error),
            };
            encode_reply(&reply)
        })
    })
}

/// A reply as JSON; one that cannot be encoded becomes an `internal` error (logged).
fn encode_reply<A: Serialize>(reply: &Reply<A>) -> Vec<u8> {
    serde_json::to_vec(reply).unwrap_or_else(|error| {
        tracing::error!(%error, "reply not encodable");
        let internal = Reply::<()>::Error(ReplyError::new(ErrorKind::Internal, "the reply could not be encoded"));
        serde_json::to_vec(&internal).unwrap_or_default()
    })
}

/// How many requests one instance handles at once; the rest are told to come back.
#[derive(Debug, Clone, Copy)]
pub struct ServeConfig {
    pub max_in_flight: usize,
    /// What an `overloaded` reply suggests as `Retry-After`.
    pub retry_after: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self { max_in_flight: 256, retry_after: Duration::from_secs(1) }
    }
}

/// The answer to a command that failed on our side (storage, a bug): the
/// error is logged here, once, inside the command's span (its subject names
/// the service); the caller learns nothing more than that it failed.
pub fn internal(error: &dyn std::fmt::Display) -> ReplyError {
    tracing::error!(%error, "command failed");
    ReplyError::new(ErrorKind::Internal, "the request could not be completed")
}

/// Answers every route's command in `queue_group` until `stop`, each request
/// in a task of its own, at most `config.max_in_flight` at once (the rest are
/// answered `overloaded` at once), then lets the requests in flight finish.
pub async fn serve<S: Send + Sync + 'static>(
    client: async_nats::Client,
    queue_group: &str,
    routes: Routes<S>,
    config: ServeConfig,
    stop: CancellationToken,
) -> Result<(), async_nats::SubscribeError> {
    let mut subscriptions = Vec::with_capacity(routes.table.len());
    // Partition subjects too are in the queue group: until partitions are
    // owned through leases, a second instance must not answer the same
    // request twice (version checks fence whatever both actors might do).
    for subject in routes.table.keys() {
        subscriptions.push(client.queue_subscribe(subject.clone(), queue_group.to_owned()).await?);
    }
    let permits = Arc::new(Semaphore::new(config.max_in_flight));
    let in_flight = TaskTracker::new();
    let mut requests = futures::stream::select_all(subscriptions);
    loop {
        let request = tokio::select! {
            () = stop.cancelled() => break,
            request = requests.next() => match request { Some(request) => request, None => break },
        };
        let Some(reply_to) = request.reply.clone() else { continue };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let shed = ReplyError::new(ErrorKind::Overloaded, "too many requests in flight; retry shortly")
                .retry_after(config.retry_after.as_secs().max(1));
            if let Err(error) = client.publish(reply_to, encode_reply(&Reply::<()>::Error(shed)).into()).await {
                tracing::debug!(%error, "overloaded reply not sent");
            }
            continue;
        };
        let request_id = request
            .headers
            .as_ref()
            .and_then(|headers| headers.get(REQUEST_ID_HEADER))
            .map(|value| value.as_str().to_owned())
            .unwrap_or_default();
        let span = tracing::info_span!("command", subject = %request.subject, request.id = %request_id);
        // Every subscription is a route's subject.
        let Some(route) = routes.table.get(request.subject.as_str()) else { continue };
        let answer = route(routes.state.clone(), &request.payload);
        let client = client.clone();
        in_flight.spawn(
            async move {
                let body = answer.await;
                if let Err(error) = client.publish(reply_to, body.into()).await {
                    tracing::warn!(%error, "reply not sent");
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
    in_flight.close();
    in_flight.wait().await;
    Ok(())
}
