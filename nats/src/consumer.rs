//! The one consumer loop every event handler runs in.
//!
//! It pulls batches from a durable consumer, decodes each message into the
//! handler's typed events, and acks only after the handler returns, i.e. after
//! its effect is committed. Messages of different keys are handled
//! concurrently; messages of one key strictly in stream order, even across
//! retries: when a handler fails, the message is NAKed with backoff and the
//! key's later messages are held (their ack deadline extended) until its
//! redelivery has been handled, so a handler sees each key's `seq` increase.
//! The loop bounds deliveries itself: at the last attempt the message goes to
//! the DLQ (and is TERMed once the DLQ has acked); malformed and rejected
//! messages go there at once. Malformed is: larger than an event may be
//! ([`MAX_EVENT_BYTES`]), not an event envelope, or an envelope its subject
//! contradicts; such a message is dead-lettered before it is given a lane,
//! since its key cannot be trusted. A well-formed event of a type or version
//! the handler does not take is acked: during a migration, producers publish
//! the next major version beside the current one. A handler that panics is
//! treated as one that asked for a retry, so the loop, and every other key
//! in it, goes on.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::pull::Batch;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use emporium_schemas::{DecodeError, EntityKey, Envelope, Event, MAX_EVENT_BYTES, RawEnvelope, Seq};
use futures::stream::{FuturesUnordered, ReadyChunks};
use futures::{FutureExt, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::dlq;

/// The events a handler takes, decoded from a raw envelope. Implemented for
/// every single event type, and by [`event_set!`](crate::event_set) for enums.
pub trait EventSet: Sized + Send {
    /// `Ok(None)` for an event the handler does not take (it is acked).
    fn decode(raw: RawEnvelope) -> Result<Option<Envelope<Self>>, DecodeError>;
}

impl<D: Event + Send> EventSet for D {
    fn decode(raw: RawEnvelope) -> Result<Option<Envelope<Self>>, DecodeError> {
        if raw.is::<D>() { raw.decode().map(Some) } else { Ok(None) }
    }
}

/// Declares an enum of the events a handler takes, one variant per event type.
#[macro_export]
macro_rules! event_set {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($variant:ident($event:ty)),+ $(,)? }) => {
        $(#[$meta])*
        $vis enum $name { $($variant($event)),+ }

        impl $crate::consumer::EventSet for $name {
            fn decode(
                raw: ::emporium_schemas::RawEnvelope,
            ) -> Result<Option<::emporium_schemas::Envelope<Self>>, ::emporium_schemas::DecodeError> {
                $(
                    if raw.is::<$event>() {
                        return raw.decode::<$event>().map(|envelope| Some(envelope.map($name::$variant)));
                    }
                )+
                Ok(None)
            }
        }
    };
}

/// Where an event stands against the last `seq` a handler applied for its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// The next one: apply it.
    Next,
    /// Later than the next one: `missing` events between were not seen (yet).
    Ahead { missing: u64 },
    /// Already applied: ack as a no-op.
    Duplicate,
    /// Older than what was applied: ack as a no-op.
    Stale,
}

impl Freshness {
    /// Compares `incoming` with `last_applied` (`None`: nothing applied yet).
    pub fn of(last_applied: Option<Seq>, incoming: Seq) -> Self {
        let last = last_applied.map_or(0, Seq::get);
        let incoming = incoming.get();
        match incoming.cmp(&(last + 1)) {
            std::cmp::Ordering::Equal => Freshness::Next,
            std::cmp::Ordering::Greater => Freshness::Ahead { missing: incoming - last - 1 },
            std::cmp::Ordering::Less if incoming == last => Freshness::Duplicate,
            std::cmp::Ordering::Less => Freshness::Stale,
        }
    }

    /// Whether the event changes nothing and is acked as a no-op.
    pub fn is_noop(self) -> bool {
        matches!(self, Freshness::Duplicate | Freshness::Stale)
    }
}

/// What a handler made of an event; either way it is acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    Applied,
    /// A stale or duplicate event, acked as a no-op.
    Skipped,
}

/// Why a handler did not handle an event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Try again later (NAK with backoff): a store or peer was unavailable,
    /// or the event must wait for an earlier one.
    #[error("retry: {0}")]
    Retry(String),
    /// The event is impossible or malformed: straight to the DLQ.
    #[error("rejected: {0}")]
    Reject(String),
}

/// A handler's own error, told apart as the consumer loop needs: worth
/// trying again, or dead-lettered now. An error that says which converts
/// into a [`HandlerError`], so a handler returns it with `?`.
pub trait Retryable: std::fmt::Display {
    /// Whether the event may apply later: a store or peer was unavailable,
    /// or an earlier event is still to come.
    fn is_retryable(&self) -> bool;
}

impl<E: Retryable> From<E> for HandlerError {
    fn from(error: E) -> Self {
        if error.is_retryable() {
            HandlerError::Retry(error.to_string())
        } else {
            HandlerError::Reject(error.to_string())
        }
    }
}

/// Where a delivery came from.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub subject: String,
    pub stream_sequence: u64,
    /// 1 for the first delivery.
    pub attempt: i64,
}

/// Handles one context's events for one service.
pub trait Handler: Send + Sync + 'static {
    type Event: EventSet;

    /// Handles `event`; returns once its effect is committed.
    fn handle(
        &self,
        event: Envelope<Self::Event>,
        delivery: &Delivery,
    ) -> impl Future<Output = Result<Handled, HandlerError>> + Send;
}

/// How a consumer loop pulls, retries and gives up.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Messages per pull request.
    pub batch: usize,
    /// How long one pull request waits for messages.
    pub expires: Duration,
    /// Deliveries before the loop dead-letters a message; below the server's
    /// `max_deliver`, which is only a safety net.
    pub max_attempts: i64,
    /// NAK delay after the first failure, doubled per attempt up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// How long a key's later messages are held for a NAKed one to come back
    /// before they are handled anyway.
    pub hold_limit: Duration,
    /// Larger messages are dead-lettered unread.
    pub max_payload: usize,
}

impl Default for LoopConfig {
    fn default() -> Self {
        Self {
            batch: 256,
            expires: Duration::from_secs(5),
            max_attempts: 8,
            backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(15),
            hold_limit: Duration::from_secs(90),
            max_payload: MAX_EVENT_BYTES,
        }
    }
}

impl LoopConfig {
    fn backoff(&self, attempt: i64) -> Duration {
        let doublings = u32::try_from(attempt.saturating_sub(1)).unwrap_or(u32::MAX).min(16);
        self.backoff.saturating_mul(1 << doublings).min(self.max_backoff)
    }
}

/// Counters of what a loop did, for tests, logs and benchmarks.
#[derive(Debug, Default)]
pub struct LoopStats {
    pub applied: AtomicU64,
    pub skipped: AtomicU64,
    pub unhandled: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
}

impl LoopStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A message with what the loop read off it.
struct Incoming {
    message: jetstream::Message,
    subject: String,
    stream: String,
    stream_sequence: u64,
    attempt: i64,
}

/// A key whose message was NAKed: its later messages wait for that one.
struct Held {
    waiting_for: u64,
    since: Instant,
    /// By stream sequence, so each is kept once (its latest delivery).
    messages: BTreeMap<u64, (Incoming, RawEnvelope)>,
}

/// A key's chain of messages in the handler; yields the key and, if the
/// chain ended in a NAK, what is held for it.
type Chain<'a> = Pin<Box<dyn Future<Output = (EntityKey, Option<Held>)> + Send + 'a>>;

/// Per-key state between messages.
#[derive(Default)]
struct Lanes {
    /// Keys whose NAKed message has not come back yet.
    held: HashMap<EntityKey, Held>,
    /// Keys with a chain in the handler, and what arrived for them since.
    busy: HashMap<EntityKey, Vec<(Incoming, RawEnvelope)>>,
}

/// The next chunk of ready messages; pends while there is no pull request.
async fn next_chunk(
    batch: &mut Option<ReadyChunks<Batch>>,
) -> Option<Vec<Result<jetstream::Message, async_nats::Error>>> {
    match batch {
        Some(batch) => batch.next().await,
        None => std::future::pending().await,
    }
}

/// One durable consumer's loop.
pub struct ConsumerLoop<H> {
    jetstream: jetstream::Context,
    stream: String,
    durable: String,
    handler: Arc<H>,
    config: LoopConfig,
    stats: Arc<LoopStats>,
}

impl<H> std::fmt::Debug for ConsumerLoop<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerLoop").field("stream", &self.stream).field("durable", &self.durable).finish()
    }
}

impl<H: Handler> ConsumerLoop<H> {
    pub fn new(
        jetstream: jetstream::Context,
        stream: impl Into<String>,
        durable: impl Into<String>,
        handler: Arc<H>,
        config: LoopConfig,
    ) -> Self {
        Self { jetstream, stream: stream.into(), durable: durable.into(), handler, config, stats: Arc::default() }
    }

    pub fn stats(&self) -> Arc<LoopStats> {
        self.stats.clone()
    }

    /// Runs until `stop` is cancelled, then finishes the work in hand. Keeps
    /// pulling through server restarts and outages.
    ///
    /// Each key is a lane: its messages go to the handler one chain at a
    /// time, while other keys' chains run alongside and the next messages are
    /// pulled, so the handler's commits overlap (and group-commit together)
    /// instead of waiting for one another. The server's `max_ack_pending`
    /// bounds what is in flight.
    pub async fn run(self, stop: CancellationToken) {
        let this = &self;
        let mut lanes = Lanes::default();
        let mut running: FuturesUnordered<Chain<'_>> = FuturesUnordered::new();
        let mut consumer: Option<PullConsumer> = None;
        let mut batch: Option<ReadyChunks<Batch>> = None;
        let mut retry_at = Instant::now();
        let mut failures = 0u32;
        let mut overdue_check = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                Some((key, still_held)) = running.next(), if !running.is_empty() => {
                    this.chain_done(key, still_held, &mut lanes, &mut running).await;
                }
                chunk = next_chunk(&mut batch), if batch.is_some() => match chunk {
                    Some(chunk) => {
                        for message in chunk {
                            match message {
                                Ok(message) => this.admit(message, &mut lanes, &mut running).await,
                                Err(error) => {
                                    tracing::warn!(consumer = %this.durable, %error, "pull failed; retrying");
                                    batch = None;
                                }
                            }
                        }
                    }
                    // The pull request is complete (its count or its expiry): pull again.
                    None => batch = None,
                },
                () = tokio::time::sleep_until(retry_at), if batch.is_none() => match this.pull(&mut consumer).await {
                    Ok(pulled) => {
                        failures = 0;
                        batch = Some(pulled.ready_chunks(this.config.batch));
                    }
                    Err(error) => {
                        failures = failures.saturating_add(1);
                        retry_at = Instant::now() + this.config.backoff(i64::from(failures)).min(Duration::from_secs(5));
                        tracing::warn!(consumer = %this.durable, %error, "pull failed; retrying");
                    }
                },
                _ = overdue_check.tick() => this.release_overdue(&mut lanes, &mut running).await,
            }
        }
        // Drain: finish the chains in the handler; start nothing new (what is
        // queued or held is redelivered to whoever runs next).
        while let Some((key, _)) = running.next().await {
            lanes.busy.remove(&key);
        }
        tracing::debug!(consumer = %this.durable, "consumer loop stopped");
    }

    /// Opens one pull request. The consumer is looked up once (a JetStream
    /// API request) and kept until a pull fails, not looked up per batch.
    async fn pull(&self, consumer: &mut Option<PullConsumer>) -> Result<Batch, async_nats::Error> {
        let current = match consumer {
            Some(current) => current,
            None => consumer
                .insert(self.jetstream.get_stream_no_info(&self.stream).await?.get_consumer(&self.durable).await?),
        };
        let pulled = current.batch().max_messages(self.config.batch).expires(self.config.expires).messages().await;
        pulled.map_err(|error| {
            *consumer = None;
            error.into()
        })
    }

    /// Takes one delivered message into its key's lane: behind a running
    /// chain, into the key's held set, or as a new chain.
    async fn admit<'a>(
        &'a self,
        message: jetstream::Message,
        lanes: &mut Lanes,
        running: &mut FuturesUnordered<Chain<'a>>,
    ) {
        let Some(incoming) = self.incoming(message) else { return };
        let raw = match self.read(&incoming) {
            Ok(raw) => raw,
            Err(reason) => return self.dead_letter(&incoming, &reason).await,
        };
        let key = raw.key().clone();
        if let Some(queued) = lanes.busy.get_mut(&key) {
            queued.push((incoming, raw));
            return;
        }
        if let Some(mut waiting) = lanes.held.remove(&key) {
            let back = incoming.stream_sequence == waiting.waiting_for;
            if !back {
                ack(&incoming.message, AckKind::Progress).await;
            }
            waiting.messages.insert(incoming.stream_sequence, (incoming, raw));
            if back {
                self.start(key, waiting.messages.into_values().collect(), lanes, running);
            } else {
                lanes.held.insert(key, waiting);
            }
            return;
        }
        self.start(key, vec![(incoming, raw)], lanes, running);
    }

    /// The message's envelope, or why it is malformed.
    fn read(&self, incoming: &Incoming) -> Result<RawEnvelope, String> {
        let size = incoming.message.payload.len();
        if size > self.config.max_payload {
            return Err(format!("too large: {size} bytes, the limit is {}", self.config.max_payload));
        }
        let raw = RawEnvelope::from_json(&incoming.message.payload).map_err(|error| format!("undecodable: {error}"))?;
        raw.check_subject(&incoming.subject).map_err(|error| format!("undecodable: {error}"))?;
        Ok(raw)
    }

    fn start<'a>(
        &'a self,
        key: EntityKey,
        chain: Vec<(Incoming, RawEnvelope)>,
        lanes: &mut Lanes,
        running: &mut FuturesUnordered<Chain<'a>>,
    ) {
        lanes.busy.insert(key.clone(), Vec::new());
        running.push(Box::pin(async move {
            let still_held = self.run_chain(chain).await;
            (key, still_held)
        }));
    }

    /// A key's chain finished: hold what queued behind it if the chain ended
    /// in a NAK, else run it next.
    async fn chain_done<'a>(
        &'a self,
        key: EntityKey,
        still_held: Option<Held>,
        lanes: &mut Lanes,
        running: &mut FuturesUnordered<Chain<'a>>,
    ) {
        let queued = lanes.busy.remove(&key).unwrap_or_default();
        match still_held {
            Some(mut waiting) => {
                extend_deadlines(queued.iter()).await;
                for (incoming, raw) in queued {
                    waiting.messages.insert(incoming.stream_sequence, (incoming, raw));
                }
                lanes.held.insert(key, waiting);
            }
            None if !queued.is_empty() => self.start(key, queued, lanes, running),
            None => {}
        }
    }

    /// Hands one key's messages to the handler in order; at the first retry,
    /// holds the rest until that message comes back.
    async fn run_chain(&self, chain: Vec<(Incoming, RawEnvelope)>) -> Option<Held> {
        let mut chain = chain.into_iter();
        while let Some((incoming, raw)) = chain.next() {
            if self.handle_one(&incoming, raw).await {
                continue;
            }
            // Held even when nothing follows yet: the key's next message may
            // arrive before this one comes back.
            let rest: BTreeMap<u64, (Incoming, RawEnvelope)> =
                chain.map(|(incoming, raw)| (incoming.stream_sequence, (incoming, raw))).collect();
            extend_deadlines(rest.values()).await;
            return Some(Held { waiting_for: incoming.stream_sequence, since: Instant::now(), messages: rest });
        }
        None
    }

    /// Handles, acks, NAKs or dead-letters one message. Returns false when it
    /// was NAKed, i.e. the key's later messages must wait for it.
    async fn handle_one(&self, incoming: &Incoming, raw: RawEnvelope) -> bool {
        let envelope = match H::Event::decode(raw) {
            Ok(Some(envelope)) => envelope,
            Ok(None) => {
                self.stats.unhandled.fetch_add(1, Ordering::Relaxed);
                ack(&incoming.message, AckKind::Ack).await;
                return true;
            }
            Err(error) => {
                self.dead_letter(incoming, &format!("undecodable: {error}")).await;
                return true;
            }
        };
        let delivery = Delivery {
            subject: incoming.subject.clone(),
            stream_sequence: incoming.stream_sequence,
            attempt: incoming.attempt,
        };
        let outcome =
            AssertUnwindSafe(self.handler.handle(envelope, &delivery)).catch_unwind().await.unwrap_or_else(|panic| {
                Err(HandlerError::Retry(format!("the handler panicked: {}", panic_message(&*panic))))
            });
        match outcome {
            Ok(handled) => {
                let counter = match handled {
                    Handled::Applied => &self.stats.applied,
                    Handled::Skipped => &self.stats.skipped,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                ack(&incoming.message, AckKind::Ack).await;
                true
            }
            Err(HandlerError::Reject(reason)) => {
                self.dead_letter(incoming, &format!("rejected: {reason}")).await;
                true
            }
            Err(HandlerError::Retry(reason)) if incoming.attempt >= self.config.max_attempts => {
                self.dead_letter(incoming, &format!("gave up after {} attempts: {reason}", incoming.attempt)).await;
                true
            }
            Err(HandlerError::Retry(reason)) => {
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
                let delay = self.config.backoff(incoming.attempt);
                tracing::debug!(consumer = %self.durable, subject = %incoming.subject, attempt = incoming.attempt, %reason, "retrying");
                ack(&incoming.message, AckKind::Nak(Some(delay))).await;
                false
            }
        }
    }

    /// Hands held messages to the handler once their key has waited too long
    /// (the NAKed message was dead-lettered elsewhere or the server gave up).
    async fn release_overdue<'a>(&'a self, lanes: &mut Lanes, running: &mut FuturesUnordered<Chain<'a>>) {
        let overdue: Vec<EntityKey> = lanes
            .held
            .iter()
            .filter(|(_, h)| h.since.elapsed() >= self.config.hold_limit)
            .map(|(k, _)| k.clone())
            .collect();
        for key in overdue {
            if let Some(waiting) = lanes.held.remove(&key) {
                tracing::warn!(consumer = %self.durable, %key, "held messages released without their predecessor");
                self.start(key, waiting.messages.into_values().collect(), lanes, running);
            }
        }
    }

    /// Reads the delivery metadata; a message without it cannot be acked and is dropped from this round.
    fn incoming(&self, message: jetstream::Message) -> Option<Incoming> {
        let (stream, stream_sequence, attempt) = match message.info() {
            Ok(info) => (info.stream.to_owned(), info.stream_sequence, info.delivered),
            Err(error) => {
                tracing::warn!(consumer = %self.durable, %error, "message without JetStream metadata ignored");
                return None;
            }
        };
        let subject = message.subject.to_string();
        Some(Incoming { message, subject, stream, stream_sequence, attempt })
    }

    /// Publishes `incoming` to the DLQ, awaits the ack, then TERMs it. If the
    /// DLQ cannot take it, NAKs it instead so nothing is lost.
    async fn dead_letter(&self, incoming: &Incoming, reason: &str) {
        let origin = dlq::Origin {
            consumer: &self.durable,
            stream: &incoming.stream,
            stream_sequence: incoming.stream_sequence,
            subject: &incoming.subject,
            attempts: incoming.attempt,
            reason,
        };
        match dlq::dead_letter(
            &self.jetstream,
            &origin,
            incoming.message.headers.as_ref(),
            incoming.message.payload.clone(),
        )
        .await
        {
            Ok(()) => {
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(consumer = %self.durable, subject = %incoming.subject, attempts = incoming.attempt, %reason, "dead-lettered");
                ack(&incoming.message, AckKind::Term).await;
            }
            Err(error) => {
                tracing::error!(consumer = %self.durable, %error, "DLQ unavailable; message will be redelivered");
                ack(&incoming.message, AckKind::Nak(Some(self.config.backoff(incoming.attempt)))).await;
            }
        }
    }
}

/// What a panic said, when it said it with a string (as `panic!` and `expect` do).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str)).unwrap_or("?")
}

/// Tells the server the held messages are still being worked on.
async fn extend_deadlines<'a>(messages: impl Iterator<Item = &'a (Incoming, RawEnvelope)>) {
    for (incoming, _) in messages {
        ack(&incoming.message, AckKind::Progress).await;
    }
}

/// Acks are best effort: a lost ack means a redelivery, which handlers tolerate.
async fn ack(message: &jetstream::Message, kind: AckKind) {
    if let Err(error) = message.ack_with(kind).await {
        tracing::debug!(%error, "ack not sent; the message will be redelivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: u64) -> Seq {
        Seq::try_from(n).unwrap()
    }

    #[test]
    fn the_first_event_of_a_key_is_next() {
        assert_eq!(Freshness::of(None, seq(1)), Freshness::Next);
        assert_eq!(Freshness::of(None, seq(3)), Freshness::Ahead { missing: 2 });
    }

    #[test]
    fn an_event_is_judged_against_the_last_applied_seq() {
        let last = Some(seq(5));
        assert_eq!(Freshness::of(last, seq(6)), Freshness::Next);
        assert_eq!(Freshness::of(last, seq(9)), Freshness::Ahead { missing: 3 });
        assert_eq!(Freshness::of(last, seq(5)), Freshness::Duplicate);
        assert_eq!(Freshness::of(last, seq(2)), Freshness::Stale);
        assert!(Freshness::of(last, seq(5)).is_noop() && Freshness::of(last, seq(2)).is_noop());
        assert!(!Freshness::of(last, seq(6)).is_noop());
    }

    #[test]
    fn backoff_doubles_per_attempt_up_to_its_cap() {
        let config = LoopConfig {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..Default::default()
        };
        let delays: Vec<_> = (1..=6).map(|attempt| config.backoff(attempt).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    }
}
