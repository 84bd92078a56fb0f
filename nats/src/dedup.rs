//! Dedup for side-effect-only handlers (an email, a call to a provider): the
//! `dedup` bucket remembers which events a consumer has acted on, for longer
//! than the outbox replay window.
//!
//! Keys are `<consumer>.<event id>`: DESIGN.md writes `<consumer>:<event id>`,
//! but `:` is not a legal KV key character.

use async_nats::jetstream::kv;
use bytes::Bytes;
use emporium_schemas::MessageId;

/// The dedup bucket could not be read or written; the event must be retried.
#[derive(Debug, thiserror::Error)]
#[error("dedup bucket unavailable: {0}")]
pub struct DedupError(String);

/// One consumer's memory of the events it has acted on.
#[derive(Debug, Clone)]
pub struct Dedup {
    bucket: kv::Store,
    consumer: String,
}

impl Dedup {
    pub fn new(bucket: kv::Store, consumer: impl Into<String>) -> Self {
        Self { bucket, consumer: consumer.into() }
    }

    fn key(&self, event: MessageId) -> String {
        format!("{}.{event}", self.consumer)
    }

    /// Whether this consumer has already acted on `event`.
    pub async fn seen(&self, event: MessageId) -> Result<bool, DedupError> {
        let entry = self.bucket.entry(self.key(event)).await.map_err(|e| DedupError(e.to_string()))?;
        Ok(entry.is_some_and(|entry| entry.operation == kv::Operation::Put))
    }

    /// Records that this consumer has acted on `event`.
    pub async fn mark(&self, event: MessageId) -> Result<(), DedupError> {
        self.bucket.put(self.key(event), Bytes::new()).await.map_err(|e| DedupError(e.to_string()))?;
        Ok(())
    }

    /// Runs `effect` for `event` unless it already ran, then remembers it.
    /// At least once: a crash between the effect and the mark repeats the
    /// effect on redelivery, so effects should carry the event id downstream.
    /// Returns whether the effect ran.
    pub async fn once<F, E>(&self, event: MessageId, effect: F) -> Result<bool, OnceError<E>>
    where
        F: std::future::Future<Output = Result<(), E>>,
    {
        if self.seen(event).await.map_err(OnceError::Dedup)? {
            return Ok(false);
        }
        effect.await.map_err(OnceError::Effect)?;
        self.mark(event).await.map_err(OnceError::Dedup)?;
        Ok(true)
    }
}

/// Why [`Dedup::once`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OnceError<E> {
    #[error(transparent)]
    Dedup(DedupError),
    #[error("side effect failed: {0}")]
    Effect(E),
}
