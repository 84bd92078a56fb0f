//! Many handlers' transactions committed as one.
//!
//! Postgres commits are the machine's scarce resource (DESIGN.md: at most a
//! few per checkout), yet every consumed event wants its own transaction:
//! inbox row, state change, outbox rows. A [`BatchWriter`] takes units of
//! work from concurrent callers and runs everything queued since its last
//! transaction in one: each unit inside a savepoint, so a unit that fails is
//! undone alone, then one commit for all. A caller hears its unit's result
//! only once that commit is durable, so it acks its message after the effect
//! is committed, as the consumer loop requires. Batches grow with load and
//! are one unit when idle.
//!
//! A unit hands back, with its result, the events it announces. The writer
//! appends the kept units' events to the outbox in one statement just before
//! the commit, and wakes the service's relay once the commit is durable.
//! [`BatchWriter::apply_once`] is how a consumed event is applied: its inbox
//! row and its work in one unit, the work skipped for an event applied before.
//!
//! The units run one after another on the writer's connection, so units of
//! one batch never wait on each other's locks; they hold their locks until
//! the batch commits, a few milliseconds longer than alone.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use emporium_schemas::MessageId;
use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};

use crate::inbox;
use crate::outbox::{self, OutboxSignal};
use crate::publisher::OutgoingEvent;

/// A unit's own failure, or the batch's.
#[derive(Debug, thiserror::Error)]
pub enum BatchError<E> {
    /// The unit failed; nothing it wrote was kept.
    #[error(transparent)]
    Unit(E),
    /// The unit succeeded but its batch could not be committed: nothing was kept.
    #[error("the batch transaction failed: {0}")]
    Database(#[source] sqlx::Error),
    #[error("the batch writer has stopped")]
    Stopped,
}

impl<E: From<sqlx::Error>> BatchError<E> {
    /// One error of the unit's own type: its own failure, or the batch's as a
    /// database error (a stopped writer reads as a closed pool: the caller is
    /// shutting down, and its event is taken again after the restart).
    pub fn into_unit_error(self) -> E {
        match self {
            BatchError::Unit(error) => error,
            BatchError::Database(error) => error.into(),
            BatchError::Stopped => sqlx::Error::PoolClosed.into(),
        }
    }
}

/// How a unit's caller is told once the batch's fate is known.
type Deliver = Box<dyn FnOnce(Result<(), Arc<sqlx::Error>>) + Send>;
/// What a unit hands back once it ran: the events to append if its writes
/// are to be kept (`None`: undo them), and how to tell its caller.
type Ran = (Option<Vec<OutgoingEvent>>, Deliver);
/// A unit runs on the batch's connection, or, when no transaction could be
/// begun, is handed the error and answers its caller without running.
type Unit = Box<dyn for<'c> FnOnce(Result<&'c mut PgConnection, Arc<sqlx::Error>>) -> BoxFuture<'c, Ran> + Send>;

/// Counters for benchmarks and logs.
#[derive(Debug, Default)]
pub struct BatchStats {
    pub transactions: AtomicU64,
    pub units: AtomicU64,
}

/// A handle to one batch writer. Cheap to clone; the writer stops when every
/// handle is dropped, after running what was queued.
#[derive(Debug, Clone)]
pub struct BatchWriter {
    sender: mpsc::Sender<Unit>,
    stats: Arc<BatchStats>,
}

/// Most units in one transaction: a bound on how long locks are held.
const MAX_BATCH: usize = 256;

impl BatchWriter {
    /// Starts a writer on `pool` (it holds one connection while it writes);
    /// `outbox` is woken after every commit that appended events.
    pub fn start(pool: PgPool, outbox: OutboxSignal) -> Self {
        let (sender, receiver) = mpsc::channel(4 * MAX_BATCH);
        let stats = Arc::new(BatchStats::default());
        tokio::spawn(run(pool, outbox, receiver, stats.clone()));
        Self { sender, stats }
    }

    /// Runs `work` in the writer's next transaction and returns its result
    /// once that transaction has committed, with the events `work` announced
    /// in the outbox. `Err` from `work` undoes its writes alone.
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, BatchError<E>>
    where
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<(T, Vec<OutgoingEvent>), E>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<T, BatchError<E>>>();
        let unit: Unit = Box::new(move |connection| {
            Box::pin(async move {
                let outcome = match connection {
                    Ok(connection) => work(connection).await,
                    Err(error) => {
                        let _ = reply.send(Err(BatchError::Database(shared_error(&error))));
                        let nothing_more: Deliver = Box::new(|_| {});
                        return (None, nothing_more);
                    }
                };
                let (outcome, kept) = match outcome {
                    Ok((value, events)) => (Ok(value), Some(events)),
                    Err(error) => (Err(error), None),
                };
                let deliver: Deliver = Box::new(move |committed| {
                    let result = match (outcome, committed) {
                        (Ok(value), Ok(())) => Ok(value),
                        (Err(error), _) => Err(BatchError::Unit(error)),
                        (Ok(_), Err(error)) => Err(BatchError::Database(shared_error(&error))),
                    };
                    // The caller may have stopped waiting; the outcome stands regardless.
                    let _ = reply.send(result);
                });
                (kept, deliver)
            })
        });
        self.sender.send(unit).await.map_err(|_| BatchError::Stopped)?;
        answer.await.unwrap_or(Err(BatchError::Stopped))
    }

    /// Applies `event` once for `consumer`: records its inbox row and runs
    /// `work` in the writer's next transaction, like [`run`](Self::run).
    /// `Ok(None)`: the event was applied before (a redelivery, a replay) and
    /// `work` did not run. The batch's own failure comes back as a database
    /// error of the unit's type ([`BatchError::into_unit_error`]), which the
    /// caller retries like any other.
    pub async fn apply_once<T, E, F>(&self, consumer: &'static str, event: MessageId, work: F) -> Result<Option<T>, E>
    where
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<(T, Vec<OutgoingEvent>), E>> + Send + 'static,
        T: Send + 'static,
        E: From<sqlx::Error> + Send + 'static,
    {
        self.run(move |tx| {
            Box::pin(async move {
                if !inbox::record(&mut *tx, consumer, event).await? {
                    return Ok((None, Vec::new()));
                }
                let (value, events) = work(tx).await?;
                Ok((Some(value), events))
            })
        })
        .await
        .map_err(BatchError::into_unit_error)
    }

    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }
}

/// `sqlx::Error` is not `Clone`; every caller of a failed batch gets its text.
fn shared_error(error: &sqlx::Error) -> sqlx::Error {
    sqlx::Error::Protocol(format!("batch: {error}"))
}

async fn run(pool: PgPool, outbox: OutboxSignal, mut receiver: mpsc::Receiver<Unit>, stats: Arc<BatchStats>) {
    let mut queued: VecDeque<Unit> = VecDeque::with_capacity(MAX_BATCH);
    while let Some(first) = receiver.recv().await {
        queued.push_back(first);
        while queued.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => queued.push_back(next),
                Err(_) => break,
            }
        }
        // A batch that fails part-way leaves its untouched units queued for the next.
        while !queued.is_empty() {
            stats.transactions.fetch_add(1, Ordering::Relaxed);
            let ran = write(&pool, &outbox, &mut queued).await;
            stats.units.fetch_add(ran as u64, Ordering::Relaxed);
        }
    }
}

/// Runs queued units in one transaction, taking them from the front of
/// `queued`; returns how many it took. Each unit's caller is answered. When
/// no transaction can be begun, every queued unit is answered with that error.
///
/// The savepoint between two units is one round trip ("RELEASE; SAVEPOINT"),
/// so a batch of n units costs n + 1 round trips besides the units' own
/// statements and the one that appends their events, where n transactions
/// would cost 2n.
async fn write(pool: &PgPool, signal: &OutboxSignal, queued: &mut VecDeque<Unit>) -> usize {
    let mut connection = match pool.acquire().await {
        Ok(connection) => connection,
        Err(error) => return abandon(queued, error).await,
    };
    // One unit alone needs no savepoint: its failure rolls back the transaction.
    let alone = queued.len() == 1;
    let begin = if alone { "BEGIN" } else { "BEGIN; SAVEPOINT unit" };
    if let Err(error) = sqlx::raw_sql(begin).execute(&mut *connection).await {
        connection.close_on_drop();
        return abandon(queued, error).await;
    }
    let mut delivered: Vec<Deliver> = Vec::new();
    // The kept units' events, in unit order: each key's events keep their order.
    let mut announced: Vec<OutgoingEvent> = Vec::new();
    let outcome = async {
        while let Some(unit) = queued.pop_front() {
            // A unit that panics is undone like one that failed; its caller, never
            // answered, hears that the writer stopped and retries.
            let (kept, deliver) = match AssertUnwindSafe(unit(Ok(&mut *connection))).catch_unwind().await {
                Ok(ran) => ran,
                Err(_) => (None, Box::new(|_| {}) as Deliver),
            };
            delivered.push(deliver);
            let keep = kept.is_some();
            announced.extend(kept.into_iter().flatten());
            let more = !queued.is_empty();
            let between = match (keep, alone, more) {
                (false, true, _) => Some("ROLLBACK"),
                (false, false, _) => Some("ROLLBACK TO SAVEPOINT unit"),
                (true, false, true) => Some("RELEASE SAVEPOINT unit; SAVEPOINT unit"),
                (true, _, false) => None,
                (true, true, true) => None,
            };
            if let Some(sql) = between {
                sqlx::raw_sql(sql).execute(&mut *connection).await?;
            }
            if !keep && alone {
                return Ok(());
            }
        }
        outbox::append(&mut connection, &announced).await?;
        sqlx::raw_sql("COMMIT").execute(&mut *connection).await?;
        Ok::<_, sqlx::Error>(())
    }
    .await;
    if outcome.is_err() {
        // The connection may still be inside the transaction: never hand it back to the pool.
        connection.close_on_drop();
    }
    let ran = delivered.len();
    let committed = outcome.map_err(Arc::new);
    match &committed {
        Ok(()) if !announced.is_empty() => signal.wake(),
        Ok(()) => {}
        Err(error) => {
            tracing::warn!(%error, units = ran, "a batch transaction failed; its units will be retried by their callers");
        }
    }
    for deliver in delivered {
        deliver(committed.clone());
    }
    ran
}

async fn abandon(queued: &mut VecDeque<Unit>, error: sqlx::Error) -> usize {
    tracing::warn!(%error, units = queued.len(), "no batch transaction could be begun");
    let error = Arc::new(error);
    let count = queued.len();
    for unit in queued.drain(..) {
        // A unit handed the error answers its caller itself.
        let _ = unit(Err(error.clone())).await;
    }
    count
}
