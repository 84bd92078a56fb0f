//! The email sender: one leader per deployment (a lease), woken in-process
//! when a commit queued emails, polling otherwise. A step claims a batch of
//! due emails with `FOR UPDATE SKIP LOCKED`, hands them to the sink one by
//! one, and marks those the sink accepted sent in the same transaction: one
//! commit per batch, not per email (Postgres commits are the scarce
//! resource). A failure is counted, its error kept, and the email tried
//! again after a growing wait. A crash before the commit leaves the batch
//! due: sent at least once, never dropped.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use emporium_nats::{Leases, SharedClock};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::domain;
use crate::mail::{OutgoingEmail, Sink};
use crate::store::{self, StoreError};

/// Wakes the sender after a commit that queued emails (or made waiting ones
/// sendable). Clones share one signal; wakes before it looks count as one.
#[derive(Debug, Clone, Default)]
pub struct MailSignal(Arc<Notify>);

impl MailSignal {
    pub fn wake(&self) {
        self.0.notify_one();
    }

    async fn woken(&self) {
        self.0.notified().await;
    }
}

/// How the sender paces itself.
#[derive(Debug, Clone, Copy)]
pub struct SenderConfig {
    /// How often it looks when nothing woke it; a retry goes at most this long after it fell due.
    pub poll: Duration,
    /// The wait after a first failure, doubled per failure up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Emails sent per step at most, so a backlog does not hold the step forever.
    pub batch: usize,
}

/// What one step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    pub sent: usize,
    pub failed: usize,
}

/// Sends queued emails through a sink.
#[derive(Debug)]
pub struct Sender {
    pool: PgPool,
    clock: SharedClock,
    sink: Arc<dyn Sink>,
    config: SenderConfig,
    signal: MailSignal,
}

impl Sender {
    pub fn new(
        pool: PgPool,
        clock: SharedClock,
        sink: Arc<dyn Sink>,
        config: SenderConfig,
        signal: MailSignal,
    ) -> Self {
        Self { pool, clock, sink, config, signal }
    }

    /// Sends the emails due now, each at most once in this step; stops at
    /// the first failure (the sink is likely down: the rest wait for the
    /// next step rather than each failing in turn). The sender's step,
    /// which tests drive directly.
    pub async fn send_due(&self) -> Result<Sent, StoreError> {
        let mut tx = self.pool.begin().await?;
        let due = store::claim_due(&mut tx, self.clock.now(), self.config.batch).await?;
        if due.is_empty() {
            return Ok(Sent::default());
        }
        let mut sent = Vec::with_capacity(due.len());
        let mut failed = 0;
        for due in due {
            let email = OutgoingEmail {
                id: due.id,
                to_name: due.name.clone(),
                to_address: due.address.clone(),
                subject: due.subject.clone(),
                text: domain::email_text(&due.name, &due.body),
                date: self.clock.now(),
            };
            if let Err(error) = self.sink.send(&email).await {
                let attempts = due.attempts.saturating_add(1);
                let wait = domain::retry_delay(attempts, self.config.backoff, self.config.max_backoff);
                let now = self.clock.now();
                let retry_at = now + TimeDelta::from_std(wait).unwrap_or(TimeDelta::MAX);
                store::mark_failed(&mut tx, due.id, &error.to_string(), now, retry_at).await?;
                tracing::warn!(email.id = %due.id, attempts, retry_in_secs = wait.as_secs(), %error, "an email was not accepted; it stays queued");
                failed = 1;
                break;
            }
            sent.push(due.id);
        }
        store::mark_sent(&mut tx, &sent, self.clock.now()).await?;
        tx.commit().await?;
        Ok(Sent { sent: sent.len(), failed })
    }

    /// Sends while this process leads `mailer.notification`, until `stop`.
    pub async fn run(self, leases: Leases, stop: CancellationToken) {
        // Ticks back to back: each tick sends what is due, then waits for a wake or the poll.
        emporium_nats::lease::while_leading(&leases, "mailer.notification", Duration::ZERO, stop.clone(), || async {
            let again = match self.send_due().await {
                // A full batch: more may be due at once.
                Ok(done) => done.sent >= self.config.batch,
                Err(error) => {
                    tracing::warn!(%error, "the email sender cannot reach its database");
                    false
                }
            };
            if !again {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = self.signal.woken() => {}
                    () = tokio::time::sleep(self.config.poll) => {}
                }
            }
        })
        .await;
    }
}
