//! Group commit: one writer per service commits many decisions in one
//! Postgres transaction.
//!
//! Callers (entity actors, event handlers) hand the writer a [`Commit`]: an
//! inbox entry, a version-checked state change and outbox events, any of them
//! optional. The writer takes everything queued since its last transaction
//! (so batches grow with load and shrink to one when idle), writes it in one
//! transaction, and answers each caller. A duplicate inbox entry or a failed
//! version check fails its own commit alone, without savepoints: the unit's
//! other writes are skipped or undone inside the transaction. A database
//! error fails the batch, whose commits are then retried one by one so that
//! one bad commit cannot fail its neighbours.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use emporium_nats::OutgoingEvent;
use emporium_nats::outbox::{self, OutboxSignal};
use emporium_schemas::MessageId;
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// A version-checked write of one entity's state.
pub trait StateChange: Send + Sync + 'static {
    /// Writes the change in `tx`; `Ok(false)` if the stored version was not the
    /// expected one (then it must have written nothing).
    fn write<'a>(&'a self, tx: &'a mut PgConnection) -> BoxFuture<'a, Result<bool, sqlx::Error>>;

    /// The `entity_state` row this change writes, when it is one: the writer
    /// writes a batch's rows in one statement instead of calling [`write`](Self::write).
    fn entity_row(&self) -> Option<&EntityRow> {
        None
    }
}

/// One entity's row in `entity_state`, written only over the version it
/// was decided on (`expected` 0: a new entity).
#[derive(Debug, Clone)]
pub struct EntityRow {
    pub kind: &'static str,
    pub id: String,
    pub expected: i64,
    pub version: i64,
    pub state: serde_json::Value,
    pub deadline: Option<DateTime<Utc>>,
}

impl StateChange for EntityRow {
    fn write<'a>(&'a self, tx: &'a mut PgConnection) -> BoxFuture<'a, Result<bool, sqlx::Error>> {
        Box::pin(async move { Ok(!write_entity_rows(tx, &[self]).await?.is_empty()) })
    }

    fn entity_row(&self) -> Option<&EntityRow> {
        Some(self)
    }
}

/// Writes entity rows, new ones and changed ones each in one statement;
/// returns the indexes (into `rows`) of those written. A row not written
/// found another version stored (or, new, a row already there); of two rows
/// for one entity, at most one is written.
async fn write_entity_rows(tx: &mut PgConnection, rows: &[&EntityRow]) -> Result<HashSet<usize>, sqlx::Error> {
    let mut written = HashSet::new();
    // New rows: the first for each entity is tried, the others conflict with it.
    let mut new: HashMap<(&str, &str), usize> = HashMap::new();
    for (n, row) in rows.iter().enumerate().filter(|(_, row)| row.expected == 0) {
        new.entry((row.kind, row.id.as_str())).or_insert(n);
    }
    if !new.is_empty() {
        let new_rows: Vec<&EntityRow> = new.values().map(|&n| rows[n]).collect();
        let columns = EntityColumns::of(&new_rows);
        let inserted: Vec<(String, String)> = sqlx::query_as(
            "INSERT INTO entity_state (kind, id, version, state, deadline_at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::jsonb[], $5::timestamptz[])
             ON CONFLICT DO NOTHING
             RETURNING kind, id",
        )
        .bind(&columns.kinds)
        .bind(&columns.ids)
        .bind(&columns.versions)
        .bind(&columns.states)
        .bind(&columns.deadlines)
        .fetch_all(&mut *tx)
        .await?;
        written.extend(inserted.iter().filter_map(|(kind, id)| new.get(&(kind.as_str(), id.as_str())).copied()));
    }
    // Changed rows: a row matched by two changes is updated once, with one of them.
    let (indexes, changed): (Vec<i32>, Vec<&EntityRow>) =
        (0_i32..).zip(rows.iter().copied()).filter(|(_, row)| row.expected != 0).unzip();
    if !changed.is_empty() {
        let columns = EntityColumns::of(&changed);
        let expected: Vec<i64> = changed.iter().map(|row| row.expected).collect();
        let updated: Vec<i32> = sqlx::query_scalar(
            "UPDATE entity_state e
             SET version = u.version, state = u.state, deadline_at = u.deadline_at, updated_at = now()
             FROM unnest($1::text[], $2::text[], $3::bigint[], $4::jsonb[], $5::timestamptz[], $6::bigint[], $7::int[])
                  AS u(kind, id, version, state, deadline_at, expected, n)
             WHERE e.kind = u.kind AND e.id = u.id AND e.version = u.expected
             RETURNING u.n",
        )
        .bind(&columns.kinds)
        .bind(&columns.ids)
        .bind(&columns.versions)
        .bind(&columns.states)
        .bind(&columns.deadlines)
        .bind(&expected)
        .bind(&indexes)
        .fetch_all(&mut *tx)
        .await?;
        written.extend(updated.into_iter().filter_map(|n| usize::try_from(n).ok()));
    }
    Ok(written)
}

/// Entity rows as the columns they are written from.
struct EntityColumns<'a> {
    kinds: Vec<&'a str>,
    ids: Vec<&'a str>,
    versions: Vec<i64>,
    states: Vec<&'a serde_json::Value>,
    deadlines: Vec<Option<DateTime<Utc>>>,
}

impl<'a> EntityColumns<'a> {
    fn of(rows: &[&'a EntityRow]) -> Self {
        Self {
            kinds: rows.iter().map(|row| row.kind).collect(),
            ids: rows.iter().map(|row| row.id.as_str()).collect(),
            versions: rows.iter().map(|row| row.version).collect(),
            states: rows.iter().map(|row| &row.state).collect(),
            deadlines: rows.iter().map(|row| row.deadline).collect(),
        }
    }
}

/// That `consumer` applied event `event`: recorded so a redelivery is a no-op.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InboxEntry {
    pub consumer: Arc<str>,
    pub event: MessageId,
}

/// One caller's writes, committed all together or not at all.
#[derive(Default)]
pub struct Commit {
    pub inbox: Option<InboxEntry>,
    pub state: Option<Box<dyn StateChange>>,
    pub outbox: Vec<OutgoingEvent>,
}

impl std::fmt::Debug for Commit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commit")
            .field("inbox", &self.inbox)
            .field("state", &self.state.is_some())
            .field("outbox", &self.outbox.len())
            .finish()
    }
}

/// Why a commit did not happen. Nothing of it was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The inbox already holds the event: it was applied before.
    #[error("event already applied")]
    Duplicate,
    /// The state's version check failed: the decision was made on stale state.
    #[error("version conflict")]
    Conflict,
    #[error("database: {0}")]
    Database(String),
    #[error("the writer has stopped")]
    Stopped,
}

/// How the writer batches.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Most commits in one transaction.
    pub max_batch: usize,
    /// Commits that may wait for the writer; callers beyond it wait to enqueue.
    pub queue: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self { max_batch: 1_024, queue: 16_384 }
    }
}

/// Counters: transactions and commits, for benchmarks and logs.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub transactions: AtomicU64,
    pub commits: AtomicU64,
}

type Request = (Commit, oneshot::Sender<Result<(), CommitError>>);

/// A handle to a service's writer. Cheap to clone; the writer stops when
/// every handle is dropped, after committing what was queued.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    sender: mpsc::Sender<Request>,
    stats: Arc<WriterStats>,
}

impl GroupCommit {
    /// Starts the writer on `pool`; `signal` wakes the outbox relay after
    /// every transaction that wrote events.
    pub fn start(pool: PgPool, signal: OutboxSignal, config: WriterConfig) -> (Self, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(config.queue.max(1));
        let stats = Arc::new(WriterStats::default());
        let task = tokio::spawn(run(pool, signal, config, receiver, stats.clone()));
        (Self { sender, stats }, task)
    }

    /// Commits `commit` with whatever else is queued; returns once it is durable.
    pub async fn commit(&self, commit: Commit) -> Result<(), CommitError> {
        let (reply, answer) = oneshot::channel();
        self.sender.send((commit, reply)).await.map_err(|_| CommitError::Stopped)?;
        answer.await.unwrap_or(Err(CommitError::Stopped))
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }
}

async fn run(
    pool: PgPool,
    signal: OutboxSignal,
    config: WriterConfig,
    mut receiver: mpsc::Receiver<Request>,
    stats: Arc<WriterStats>,
) {
    let mut batch = Vec::with_capacity(config.max_batch);
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        while batch.len() < config.max_batch {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (commits, replies): (Vec<Commit>, Vec<_>) = batch.drain(..).unzip();
        let wrote_events = commits.iter().any(|c| !c.outbox.is_empty());
        let results = commit_isolated(&pool, &commits, &stats).await;
        if wrote_events {
            signal.wake();
        }
        stats.commits.fetch_add(commits.len() as u64, Ordering::Relaxed);
        for (reply, result) in replies.into_iter().zip(results) {
            // The caller may have given up waiting; the commit stands regardless.
            let _ = reply.send(result);
        }
    }
}

/// Commits `commits` in one transaction; on a database error, one by one.
async fn commit_isolated(pool: &PgPool, commits: &[Commit], stats: &WriterStats) -> Vec<Result<(), CommitError>> {
    stats.transactions.fetch_add(1, Ordering::Relaxed);
    match commit_batch(pool, commits).await {
        Ok(results) => results,
        Err(error) if commits.len() == 1 => vec![Err(CommitError::Database(error.to_string()))],
        Err(error) => {
            tracing::warn!(%error, commits = commits.len(), "group commit failed; committing one by one");
            let mut results = Vec::with_capacity(commits.len());
            for commit in commits {
                stats.transactions.fetch_add(1, Ordering::Relaxed);
                results.push(match commit_batch(pool, std::slice::from_ref(commit)).await {
                    Ok(mut one) => one.pop().unwrap_or(Err(CommitError::Stopped)),
                    Err(error) => Err(CommitError::Database(error.to_string())),
                });
            }
            results
        }
    }
}

async fn commit_batch(pool: &PgPool, commits: &[Commit]) -> Result<Vec<Result<(), CommitError>>, sqlx::Error> {
    let mut results: Vec<Result<(), CommitError>> = vec![Ok(()); commits.len()];
    let mut tx = pool.begin().await?;

    // Inbox first, in one statement: a unit whose entry exists is a duplicate.
    let mut seen = HashSet::new();
    let mut consumers = Vec::new();
    let mut events = Vec::new();
    for (i, commit) in commits.iter().enumerate() {
        if let Some(entry) = &commit.inbox {
            if seen.insert(entry) {
                consumers.push(entry.consumer.as_ref());
                events.push(*entry.event.as_uuid());
            } else {
                results[i] = Err(CommitError::Duplicate);
            }
        }
    }
    if !events.is_empty() {
        let inserted: Vec<(String, Uuid)> = sqlx::query_as(
            "INSERT INTO inbox (consumer, event_id) SELECT * FROM UNNEST($1::text[], $2::uuid[])
             ON CONFLICT DO NOTHING RETURNING consumer, event_id",
        )
        .bind(&consumers)
        .bind(&events)
        .fetch_all(&mut *tx)
        .await?;
        let inserted: HashSet<(&str, Uuid)> = inserted.iter().map(|(c, e)| (c.as_str(), *e)).collect();
        for (i, commit) in commits.iter().enumerate() {
            if let (Some(entry), Ok(())) = (&commit.inbox, &results[i])
                && !inserted.contains(&(entry.consumer.as_ref(), *entry.event.as_uuid()))
            {
                results[i] = Err(CommitError::Duplicate);
            }
        }
    }

    // State, version-checked: entity rows all at once, other changes one by
    // one; a conflict undoes its unit's inbox row.
    let (mut entity_units, mut entity_rows) = (Vec::new(), Vec::new());
    let mut conflicts = Vec::new();
    for (i, commit) in commits.iter().enumerate() {
        let Some(state) = &commit.state else { continue };
        if results[i].is_err() {
            continue;
        }
        match state.entity_row() {
            Some(row) => {
                entity_units.push(i);
                entity_rows.push(row);
            }
            None if !state.write(&mut tx).await? => conflicts.push(i),
            None => {}
        }
    }
    let written = write_entity_rows(&mut tx, &entity_rows).await?;
    conflicts.extend(entity_units.iter().enumerate().filter(|(n, _)| !written.contains(n)).map(|(_, &i)| i));
    let mut undo_consumers = Vec::new();
    let mut undo_events = Vec::new();
    for i in conflicts {
        results[i] = Err(CommitError::Conflict);
        if let Some(entry) = &commits[i].inbox {
            undo_consumers.push(entry.consumer.as_ref());
            undo_events.push(*entry.event.as_uuid());
        }
    }
    if !undo_events.is_empty() {
        sqlx::query("DELETE FROM inbox WHERE (consumer, event_id) IN (SELECT * FROM UNNEST($1::text[], $2::uuid[]))")
            .bind(&undo_consumers)
            .bind(&undo_events)
            .execute(&mut *tx)
            .await?;
    }

    // Outbox rows of the units that stand, in one statement, in unit order.
    let events: Vec<OutgoingEvent> = commits
        .iter()
        .zip(&results)
        .filter(|(_, result)| result.is_ok())
        .flat_map(|(commit, _)| commit.outbox.iter().cloned())
        .collect();
    outbox::append(&mut tx, &events).await?;
    tx.commit().await?;
    Ok(results)
}
