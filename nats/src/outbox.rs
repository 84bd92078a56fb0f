//! The transactional outbox and its relay.
//!
//! A service writes its events with [`append`] in the transaction that changes
//! its state, then calls [`OutboxSignal::wake`] after the commit. One relay per
//! service database leads under a lease; it publishes unpublished rows in
//! `position` order (which is each key's commit order), pipelined, marks them
//! published once JetStream acked them, and keeps them for the replay window.
//!
//! Waking: in-process through the signal. A process that is not the leader
//! forwards its wakes as one `NOTIFY` per burst, outside any business
//! transaction (a NOTIFY inside one takes a global lock at commit and would
//! serialise group commit). Polling catches anything else.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use emporium_schemas::{EntityKey, MessageId, Seq};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::lease::{Acquire, Leases};
use crate::publisher::{OutgoingEvent, PartialPublish, Publisher, UnknownEventType};

/// Creates the outbox and inbox tables in a service database. Their history
/// is kept in its own table, so a service's own migrations never collide
/// with these.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name("_emporium_messaging_migrations");
    migrator.run(pool).await
}

/// Writes `events` to the outbox in the caller's transaction.
pub async fn append(tx: &mut PgConnection, events: &[OutgoingEvent]) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut schemas = Vec::with_capacity(events.len());
    let mut keys = Vec::with_capacity(events.len());
    let mut seqs = Vec::with_capacity(events.len());
    let mut payloads = Vec::with_capacity(events.len());
    let mut traceparents = Vec::with_capacity(events.len());
    for event in events {
        ids.push(*event.id.as_uuid());
        types.push(event.event_type.type_name);
        schemas.push(i32::try_from(event.event_type.version).unwrap_or(i32::MAX));
        keys.push(event.key.as_str());
        seqs.push(i64::try_from(event.seq.get()).unwrap_or(i64::MAX));
        payloads.push(event.payload.as_ref());
        traceparents.push(event.traceparent.as_deref());
    }
    // One statement for the whole batch: rows keep the order given.
    sqlx::query(
        "INSERT INTO outbox (id, type_name, schema, key, seq, payload, traceparent)
         SELECT id, type_name, schema, key, seq, payload, traceparent
         FROM UNNEST($1::uuid[], $2::text[], $3::int4[], $4::text[], $5::int8[], $6::bytea[], $7::text[])
              WITH ORDINALITY AS e(id, type_name, schema, key, seq, payload, traceparent, n)
         ORDER BY n",
    )
    .bind(&ids)
    .bind(&types)
    .bind(&schemas)
    .bind(&keys)
    .bind(&seqs)
    .bind(&payloads)
    .bind(&traceparents)
    .execute(tx)
    .await?;
    Ok(())
}

/// Wakes the relay after a commit. Cheap; clones share one signal. Many
/// wakes before the relay looks count as one.
#[derive(Debug, Clone, Default)]
pub struct OutboxSignal(Arc<Notify>);

impl OutboxSignal {
    pub fn wake(&self) {
        self.0.notify_one();
    }

    /// Waits for a wake; one made since the last wait counts.
    pub async fn woken(&self) {
        self.0.notified().await;
    }
}

/// A relay step failed; the rows stay and are published on a later step.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Publish(#[from] PartialPublish),
    #[error(transparent)]
    Unknown(#[from] UnknownEventType),
    #[error("outbox row {position}: {reason}")]
    Corrupt { position: i64, reason: String },
}

/// How the relay paces itself.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows read and published per step.
    pub batch: i64,
    /// How often it looks when nothing woke it.
    pub poll: Duration,
    pub lease_ttl: Duration,
    /// How long published rows are kept for `outbox replay`.
    pub replay_window: Duration,
    pub prune_every: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch: 1_000,
            poll: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(15),
            replay_window: Duration::from_secs(7 * 24 * 60 * 60),
            prune_every: Duration::from_secs(10 * 60),
        }
    }
}

/// What a relay did: for benchmarks and logs.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub published: AtomicU64,
    /// Transactions that marked rows published.
    pub marks: AtomicU64,
}

/// One service's outbox relay.
#[derive(Debug, Clone)]
pub struct OutboxRelay {
    service: String,
    pool: PgPool,
    publisher: Publisher,
    leases: Leases,
    signal: OutboxSignal,
    config: RelayConfig,
    stats: Arc<RelayStats>,
}

impl OutboxRelay {
    /// What every service with an outbox starts with: its leases, held as
    /// `<service>-<unique id>` in the `locks` bucket, and its relay, to run.
    /// The leases serve the service's other leaders (sweepers).
    pub async fn for_service(
        service: &str,
        pool: PgPool,
        jetstream: async_nats::jetstream::Context,
        partitions: u16,
        clock: crate::SharedClock,
        signal: OutboxSignal,
    ) -> Result<(Leases, Self), crate::LeaseError> {
        let locks = crate::topology::LOCKS.name;
        let bucket = jetstream
            .get_key_value(locks)
            .await
            .map_err(|e| crate::LeaseError::Unavailable { name: locks.to_owned(), message: e.to_string() })?;
        let leases = Leases::new(bucket, format!("{service}-{}", MessageId::new_v7()), clock);
        let publisher = Publisher::new(jetstream, partitions);
        let relay = Self::new(service, pool, publisher, leases.clone(), signal, RelayConfig::default());
        Ok((leases, relay))
    }

    pub fn new(
        service: impl Into<String>,
        pool: PgPool,
        publisher: Publisher,
        leases: Leases,
        signal: OutboxSignal,
        config: RelayConfig,
    ) -> Self {
        Self { service: service.into(), pool, publisher, leases, signal, config, stats: Arc::default() }
    }

    pub fn stats(&self) -> Arc<RelayStats> {
        self.stats.clone()
    }

    fn lease_name(&self) -> String {
        format!("outbox-relay.{}", self.service)
    }

    fn channel(&self) -> String {
        format!("outbox_{}", self.service)
    }

    /// Publishes everything unpublished, a batch at a time, until none is
    /// left. Returns how many rows it published. The relay's step; tests
    /// drive it directly.
    pub async fn publish_pending(&self) -> Result<usize, RelayError> {
        let mut total = 0;
        loop {
            let step = std::time::Instant::now();
            let rows = sqlx::query(
                "SELECT position, id, type_name, schema, key, seq, payload, traceparent
                 FROM outbox WHERE published_at IS NULL ORDER BY position LIMIT $1",
            )
            .bind(self.config.batch)
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                return Ok(total);
            }
            let (positions, events) = decode_rows(&rows)?;
            let read = step.elapsed();
            let published = match self.publisher.publish_all(&events).await {
                Ok(report) => report.acked,
                Err(partial) => {
                    // Mark the acknowledged prefix; the rest is retried in order.
                    self.mark_published(&positions[..partial.report.acked]).await?;
                    return Err(partial.into());
                }
            };
            let acked = step.elapsed();
            self.mark_published(&positions[..published]).await?;
            tracing::debug!(rows = published, ?read, ?acked, done = ?step.elapsed(), "outbox step");
            total += published;
            if rows.len() < usize::try_from(self.config.batch).unwrap_or(usize::MAX) {
                return Ok(total);
            }
        }
    }

    async fn mark_published(&self, positions: &[i64]) -> Result<(), sqlx::Error> {
        if positions.is_empty() {
            return Ok(());
        }
        // The range lets the planner see how few rows these are: on a table
        // grown faster than its statistics, a long array alone read as a
        // sequential scan of the whole outbox.
        let (first, last) = positions.iter().fold((i64::MAX, i64::MIN), |(lo, hi), &p| (lo.min(p), hi.max(p)));
        sqlx::query(
            "UPDATE outbox SET published_at = clock_timestamp()
             WHERE position BETWEEN $2 AND $3 AND position = ANY($1)",
        )
        .bind(positions)
        .bind(first)
        .bind(last)
        .execute(&self.pool)
        .await?;
        self.stats.marks.fetch_add(1, Ordering::Relaxed);
        self.stats.published.fetch_add(positions.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Deletes published rows, and inbox rows, older than the replay window.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let window = self.config.replay_window.as_secs_f64();
        let outbox = sqlx::query(
            "DELETE FROM outbox WHERE published_at IS NOT NULL AND created_at < now() - make_interval(secs => $1)",
        )
        .bind(window)
        .execute(&self.pool)
        .await?;
        let inbox = sqlx::query("DELETE FROM inbox WHERE processed_at < now() - make_interval(secs => $1)")
            .bind(window)
            .execute(&self.pool)
            .await?;
        Ok(outbox.rows_affected() + inbox.rows_affected())
    }

    /// Runs until `stop`: contends for leadership; while leader, publishes
    /// whenever woken, notified or polled; while not, forwards local wakes
    /// to the leader with NOTIFY.
    pub async fn run(self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            match self.leases.acquire(&self.lease_name(), self.config.lease_ttl).await {
                Ok(Acquire::Acquired(lease)) => {
                    tracing::info!(service = %self.service, "outbox relay leading");
                    let keeper = lease.keep(stop.child_token());
                    self.lead(&stop, &keeper.lost()).await;
                    keeper.join().await;
                }
                Ok(Acquire::HeldBy { holder, .. }) => {
                    tracing::debug!(service = %self.service, %holder, "outbox relay following");
                    self.follow(&stop, self.config.lease_ttl / 3).await;
                }
                Err(error) => {
                    tracing::warn!(service = %self.service, %error, "outbox relay cannot reach the locks bucket");
                    self.follow(&stop, self.config.poll).await;
                }
            }
        }
    }

    /// Forwards local wakes to the leader for `period`.
    async fn follow(&self, stop: &CancellationToken, period: Duration) {
        let until = tokio::time::Instant::now() + period;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(until) => return,
                () = self.signal.woken() => {
                    if let Err(error) = sqlx::query("SELECT pg_notify($1, '')").bind(self.channel()).execute(&self.pool).await {
                        tracing::debug!(%error, "outbox NOTIFY failed; the leader will poll");
                    }
                    // At most one NOTIFY per burst of commits.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }

    async fn lead(&self, stop: &CancellationToken, lost: &CancellationToken) {
        let listening = async {
            let mut listener = PgListener::connect_with(&self.pool).await?;
            listener.listen(&self.channel()).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = listening
            .await
            .inspect_err(|error| tracing::warn!(%error, "outbox relay cannot LISTEN; polling only"))
            .ok();
        let mut last_prune = tokio::time::Instant::now();
        let mut failures: u32 = 0;
        while !stop.is_cancelled() && !lost.is_cancelled() {
            let pause = match self.publish_pending().await {
                Ok(_) => {
                    failures = 0;
                    self.config.poll
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(service = %self.service, %error, "outbox relay step failed; rows wait");
                    Duration::from_millis(100).saturating_mul(1 << failures.min(5)).min(self.config.poll)
                }
            };
            if last_prune.elapsed() >= self.config.prune_every {
                last_prune = tokio::time::Instant::now();
                match self.prune().await {
                    Ok(pruned) => tracing::debug!(pruned, "outbox pruned"),
                    Err(error) => tracing::warn!(%error, "outbox prune failed"),
                }
            }
            tokio::select! {
                () = stop.cancelled() => {}
                () = lost.cancelled() => {}
                () = self.signal.woken(), if failures == 0 => {}
                () = notified(&mut listener), if failures == 0 => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
        // One last step so a clean shutdown leaves nothing behind.
        if !lost.is_cancelled()
            && let Err(error) = self.publish_pending().await
        {
            tracing::warn!(%error, "outbox relay could not flush on shutdown; rows wait");
        }
    }
}

/// Waits for a NOTIFY; pends forever without a listener (polling covers it).
async fn notified(listener: &mut Option<PgListener>) {
    match listener {
        Some(listener) => {
            if listener.recv().await.is_err() {
                // The listener reconnects on the next recv; don't spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        None => std::future::pending().await,
    }
}

fn decode_rows(rows: &[sqlx::postgres::PgRow]) -> Result<(Vec<i64>, Vec<OutgoingEvent>), RelayError> {
    let mut positions = Vec::with_capacity(rows.len());
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let position: i64 = row.try_get("position")?;
        let corrupt = |reason: String| RelayError::Corrupt { position, reason };
        let key = EntityKey::try_from(row.try_get::<String, _>("key")?).map_err(|e| corrupt(e.to_string()))?;
        let seq = Seq::try_from(row.try_get::<i64, _>("seq")?).map_err(|e| corrupt(e.to_string()))?;
        let schema = u32::try_from(row.try_get::<i32, _>("schema")?).map_err(|e| corrupt(e.to_string()))?;
        let mut event = OutgoingEvent::from_parts(
            MessageId::from_uuid(row.try_get("id")?),
            row.try_get("type_name")?,
            schema,
            key,
            seq,
            Bytes::from(row.try_get::<Vec<u8>, _>("payload")?),
        )?;
        event.traceparent = row.try_get("traceparent")?;
        positions.push(position);
        events.push(event);
    }
    Ok((positions, events))
}

/// Republishes every outbox row written since `since`, published or not, in
/// order (`emporium outbox replay`). JetStream drops what it still holds
/// within its duplicate window; consumers treat the rest as duplicates.
pub async fn replay_since(pool: &PgPool, publisher: &Publisher, since: DateTime<Utc>) -> Result<usize, RelayError> {
    const BATCH: i64 = 1_000;
    let mut after = 0i64;
    let mut total = 0;
    loop {
        let rows = sqlx::query(
            "SELECT position, id, type_name, schema, key, seq, payload, traceparent
             FROM outbox WHERE created_at >= $1 AND position > $2 ORDER BY position LIMIT $3",
        )
        .bind(since)
        .bind(after)
        .bind(BATCH)
        .fetch_all(pool)
        .await?;
        let Some(last) = rows.last() else { return Ok(total) };
        after = last.try_get("position")?;
        let (_, events) = decode_rows(&rows)?;
        total += publisher.publish_all(&events).await?.acked;
    }
}
