//! Leases in the `locks` bucket: who leads the outbox relay, runs a sweeper or
//! owns a partition.
//!
//! A lease is a key whose value names its holder and its expiry. It is taken
//! with `create` (or, once expired, with a compare-and-set on the revision the
//! taker read) and renewed with a compare-and-set on the holder's last
//! revision, so two holders can never both renew: the one whose write lands
//! second is refused and learns it has lost. A [`LeaseKeeper`] renews in the
//! background and cancels its token the moment the lease is lost or runs out
//! unrenewed, which is when guarded work must stop.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;

/// A lease operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Someone else holds it now (a renewal's compare-and-set was refused or
    /// the lease ran out): stop the guarded work.
    #[error("lease {name} lost")]
    Lost { name: String },
    #[error("lease {name}: locks bucket unavailable: {message}")]
    Unavailable { name: String, message: String },
}

/// What a lease key holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LeaseValue {
    holder: String,
    expires_at: DateTime<Utc>,
}

/// The result of trying to take a lease.
#[derive(Debug)]
pub enum Acquire {
    Acquired(Lease),
    HeldBy { holder: String, until: DateTime<Utc> },
}

/// Takes leases in one bucket for one holder.
#[derive(Debug, Clone)]
pub struct Leases {
    bucket: Arc<kv::Store>,
    holder: String,
    clock: SharedClock,
}

impl Leases {
    /// `holder` must be unique to this process instance.
    pub fn new(bucket: kv::Store, holder: impl Into<String>, clock: SharedClock) -> Self {
        Self { bucket: Arc::new(bucket), holder: holder.into(), clock }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Takes lease `name` for `ttl` if nobody holds it or its holder let it expire.
    pub async fn acquire(&self, name: &str, ttl: Duration) -> Result<Acquire, LeaseError> {
        let unavailable = |error: &dyn std::fmt::Display| LeaseError::Unavailable {
            name: name.to_owned(),
            message: error.to_string(),
        };
        let now = self.clock.now();
        let value = LeaseValue { holder: self.holder.clone(), expires_at: expires(now, ttl) };
        let current = self.bucket.entry(name).await.map_err(|e| unavailable(&e))?;
        let written = match current {
            None => self.bucket.create(name, encode(&value)).await.map_err(|error| match error.kind() {
                kv::CreateErrorKind::AlreadyExists => None,
                _ => Some(unavailable(&error)),
            }),
            Some(entry) => {
                let free = entry.operation != Operation::Put;
                let held = if free { None } else { decode(&entry.value) };
                if let Some(held) = held.filter(|held| held.expires_at > now && held.holder != self.holder) {
                    return Ok(Acquire::HeldBy { holder: held.holder, until: held.expires_at });
                }
                self.bucket.update(name, encode(&value), entry.revision).await.map_err(|error| match error.kind() {
                    kv::UpdateErrorKind::WrongLastRevision => None,
                    _ => Some(unavailable(&error)),
                })
            }
        };
        match written {
            Ok(revision) => Ok(Acquire::Acquired(Lease {
                name: name.to_owned(),
                ttl,
                revision,
                expires_at: value.expires_at,
                holder: self.holder.clone(),
                bucket: self.bucket.clone(),
                clock: self.clock.clone(),
            })),
            // Someone else wrote between our read and our write: they hold it.
            Err(None) => {
                match self.bucket.entry(name).await.map_err(|e| unavailable(&e))?.and_then(|e| decode(&e.value)) {
                    Some(held) => Ok(Acquire::HeldBy { holder: held.holder, until: held.expires_at }),
                    None => Ok(Acquire::HeldBy { holder: String::new(), until: now }),
                }
            }
            Err(Some(error)) => Err(error),
        }
    }
}

/// A lease this process holds.
#[derive(Debug)]
pub struct Lease {
    name: String,
    ttl: Duration,
    revision: u64,
    expires_at: DateTime<Utc>,
    holder: String,
    bucket: Arc<kv::Store>,
    clock: SharedClock,
}

impl Lease {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
    }

    /// Whether the lease is still ours by its own expiry (a renewal may still be refused).
    pub fn is_current(&self) -> bool {
        self.clock.now() < self.expires_at
    }

    /// Extends the lease by its ttl from now. A refused compare-and-set, or a
    /// lease that ran out before the renewal, is [`LeaseError::Lost`].
    pub async fn renew(&mut self) -> Result<(), LeaseError> {
        let now = self.clock.now();
        if now >= self.expires_at {
            return Err(self.lost());
        }
        let value = LeaseValue { holder: self.holder.clone(), expires_at: expires(now, self.ttl) };
        match self.bucket.update(&self.name, encode(&value), self.revision).await {
            Ok(revision) => {
                self.revision = revision;
                self.expires_at = value.expires_at;
                Ok(())
            }
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(self.lost()),
            Err(error) => Err(LeaseError::Unavailable { name: self.name.clone(), message: error.to_string() }),
        }
    }

    /// Gives the lease up so another holder need not wait for it to expire.
    pub async fn release(self) {
        let value = LeaseValue { holder: String::new(), expires_at: DateTime::<Utc>::UNIX_EPOCH };
        if let Err(error) = self.bucket.update(&self.name, encode(&value), self.revision).await {
            tracing::debug!(lease = %self.name, %error, "lease not released; it will expire");
        }
    }

    /// Renews the lease in the background every third of its ttl until
    /// `stop` is cancelled (then releases it) or the lease is lost.
    pub fn keep(self, stop: CancellationToken) -> LeaseKeeper {
        let lost = CancellationToken::new();
        let task = tokio::spawn(keep(self, stop, lost.clone()));
        LeaseKeeper { lost, task }
    }

    fn lost(&self) -> LeaseError {
        LeaseError::Lost { name: self.name.clone() }
    }
}

/// A lease being renewed in the background.
#[derive(Debug)]
pub struct LeaseKeeper {
    lost: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseKeeper {
    /// Cancelled the moment the lease is lost or runs out unrenewed.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Waits for the keeper to stop (after release or loss).
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

/// Runs `tick` every `every` while this process holds the lease `name`
/// (a sweeper's leader), until `stop`. Another holder makes it wait and try
/// again; a lost lease stops the ticking at once.
pub async fn while_leading<F, Fut>(leases: &Leases, name: &str, every: Duration, stop: CancellationToken, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let ttl = (every * 3).max(Duration::from_secs(3));
    while !stop.is_cancelled() {
        match leases.acquire(name, ttl).await {
            Ok(Acquire::Acquired(lease)) => {
                let keeper = lease.keep(stop.child_token());
                let lost = keeper.lost();
                while !stop.is_cancelled() && !lost.is_cancelled() {
                    tick().await;
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = lost.cancelled() => {}
                        () = tokio::time::sleep(every) => {}
                    }
                }
                keeper.join().await;
            }
            Ok(Acquire::HeldBy { .. }) | Err(_) => {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(ttl / 3) => {}
                }
            }
        }
    }
}

async fn keep(mut lease: Lease, stop: CancellationToken, lost: CancellationToken) {
    let interval = lease.ttl / 3;
    loop {
        // Wake to renew, or at the latest when the lease would run out.
        let until_expiry = (lease.expires_at - lease.clock.now()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            () = stop.cancelled() => {
                lease.release().await;
                return;
            }
            () = tokio::time::sleep(interval.min(until_expiry)) => {}
        }
        match lease.renew().await {
            Ok(()) => {}
            Err(LeaseError::Lost { name }) => {
                tracing::warn!(lease = %name, "lease lost; stopping the work it guards");
                lost.cancel();
                return;
            }
            Err(error @ LeaseError::Unavailable { .. }) => {
                // Keep trying until it runs out; `renew` reports Lost after that.
                tracing::warn!(%error, "lease renewal failed; retrying");
            }
        }
    }
}

fn expires(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    now + chrono::TimeDelta::from_std(ttl).unwrap_or(chrono::TimeDelta::MAX)
}

fn encode(value: &LeaseValue) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

fn decode(bytes: &[u8]) -> Option<LeaseValue> {
    serde_json::from_slice(bytes).ok()
}
