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
//! [`BatchWriter::apply_once`] is how a consumed event is applied: its work
//! runs once its [`Claim`] is won. A batch's first round trip begins the
//! transaction, takes the claimed keys' locks and inserts every claimed
//! inbox row at once; a unit whose row was there already (a redelivery, a
//! replay) does not run.
//!
//! The units run one after another on the writer's connection, so units of
//! one batch never wait on each other's locks; they hold their locks until
//! the batch commits, a few milliseconds longer than alone.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::collections::HashSet;
use std::fmt::Write as _;

use emporium_schemas::MessageId;
use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool, Row as _};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

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

/// What applying a consumed event claims before its work runs: `consumer`'s
/// inbox row for `event` and, optionally, a key every transaction claiming
/// it takes turns on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    consumer: &'static str,
    event: MessageId,
    serialised_on: Option<Uuid>,
}

impl Claim {
    pub fn new(consumer: &'static str, event: MessageId) -> Self {
        Self { consumer, event, serialised_on: None }
    }

    /// Serialises the event's transaction with every other one claiming
    /// `key` (an order, say) until it commits: for events of one key that
    /// arrive through different consumers, and where each may find "nothing
    /// yet" (no row to lock) and miss the other.
    pub fn serialised_on(self, key: Uuid) -> Self {
        Self { serialised_on: Some(key), ..self }
    }

    fn row(&self) -> (String, Uuid) {
        (self.consumer.to_owned(), *self.event.as_uuid())
    }
}

/// How a unit's caller is told once the batch's fate is known.
type Deliver = Box<dyn FnOnce(Result<(), Arc<sqlx::Error>>) + Send>;
/// What a unit hands back once it ran: the events to append if its writes
/// are to be kept (`None`: undo them), and how to tell its caller.
type Ran = (Option<Vec<OutgoingEvent>>, Deliver);

/// What a unit is given when its turn comes.
enum Turn<'c> {
    /// Run on the batch's connection.
    Run(&'c mut PgConnection),
    /// Its event was applied before: answer without running.
    Applied,
    /// It cannot run (no transaction could be begun): answer with the error.
    Failed(Arc<sqlx::Error>),
}

/// A unit's work: given its turn, it runs (or not) and answers its caller.
type Run = Box<dyn for<'c> FnOnce(Turn<'c>) -> BoxFuture<'c, Ran> + Send>;

/// A queued unit of work, with what it claims.
struct Unit {
    claim: Option<Claim>,
    run: Run,
}

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
        // A unit that claims nothing always runs: `None` never comes back.
        self.submit(None, work).await?.ok_or(BatchError::Stopped)
    }

    /// Applies a consumed event once: runs `work` in the writer's next
    /// transaction, like [`run`](Self::run), if `claim` is won (its inbox
    /// row is new). `Ok(None)`: the event was applied before (a redelivery,
    /// a replay) and `work` did not run. The batch's own failure comes back
    /// as a database error of the unit's type ([`BatchError::into_unit_error`]),
    /// which the caller retries like any other.
    pub async fn apply_once<T, E, F>(&self, claim: Claim, work: F) -> Result<Option<T>, E>
    where
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<(T, Vec<OutgoingEvent>), E>> + Send + 'static,
        T: Send + 'static,
        E: From<sqlx::Error> + Send + 'static,
    {
        self.submit(Some(claim), work).await.map_err(BatchError::into_unit_error)
    }

    async fn submit<T, E, F>(&self, claim: Option<Claim>, work: F) -> Result<Option<T>, BatchError<E>>
    where
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<(T, Vec<OutgoingEvent>), E>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<Option<T>, BatchError<E>>>();
        let run: Run = Box::new(move |turn| {
            Box::pin(async move {
                let outcome = match turn {
                    Turn::Run(connection) => work(connection).await.map(|(value, events)| (Some(value), events)),
                    Turn::Applied => Ok((None, Vec::new())),
                    Turn::Failed(error) => {
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
        self.sender.send(Unit { claim, run }).await.map_err(|_| BatchError::Stopped)?;
        answer.await.unwrap_or(Err(BatchError::Stopped))
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
/// Round trips: the first begins the transaction and settles every claim
/// ([`begin`]); a savepoint is taken before each unit that runs after
/// another has written ("RELEASE; SAVEPOINT", one round trip); then the
/// units' own statements, the one that appends their events, and the
/// commit. A unit alone needs no savepoint: its failure rolls back the
/// transaction.
async fn write(pool: &PgPool, signal: &OutboxSignal, queued: &mut VecDeque<Unit>) -> usize {
    let mut connection = match pool.acquire().await {
        Ok(connection) => connection,
        Err(error) => return abandon(queued, error).await,
    };
    let alone = queued.len() == 1;
    let claims: Vec<Claim> = queued.iter().filter_map(|unit| unit.claim).collect();
    let mut won = match begin(&mut connection, &claims, alone).await {
        Ok(won) => won,
        Err(error) => {
            connection.close_on_drop();
            return abandon(queued, error).await;
        }
    };
    let mut delivered: Vec<Deliver> = Vec::new();
    // The kept units' events, in unit order: each key's events keep their order.
    let mut announced: Vec<OutgoingEvent> = Vec::new();
    let outcome = async {
        // Whether a unit wrote since the savepoint was last taken.
        let mut dirty = false;
        while let Some(Unit { claim, run }) = queued.pop_front() {
            let row = claim.as_ref().map(Claim::row);
            let fresh = row.as_ref().is_none_or(|row| won.remove(row));
            if !fresh {
                // Applied before, or claimed by an earlier unit of this batch.
                let turn = match &row {
                    Some(row) if won.lost_to_a_failed_copy(row) => Turn::Failed(Arc::new(sqlx::Error::Protocol(
                        "an earlier copy of this event failed in the same batch; it is taken again".to_owned(),
                    ))),
                    _ => Turn::Applied,
                };
                let (_, deliver) = run(turn).await;
                delivered.push(deliver);
                continue;
            }
            if dirty {
                sqlx::raw_sql("RELEASE SAVEPOINT unit; SAVEPOINT unit").execute(&mut *connection).await?;
                dirty = false;
            }
            // A unit that panics is undone like one that failed; its caller, never
            // answered, hears that the writer stopped and retries.
            let (kept, deliver) = match AssertUnwindSafe(run(Turn::Run(&mut connection))).catch_unwind().await {
                Ok(ran) => ran,
                Err(_) => (None, Box::new(|_| {}) as Deliver),
            };
            delivered.push(deliver);
            match kept {
                Some(events) => {
                    announced.extend(events);
                    dirty = !alone;
                }
                None if alone => {
                    sqlx::raw_sql("ROLLBACK").execute(&mut *connection).await?;
                    return Ok(());
                }
                None => {
                    // The inbox row came before the savepoint: it goes with its unit's writes.
                    let mut undo = "ROLLBACK TO SAVEPOINT unit".to_owned();
                    if let Some(row) = &row {
                        won.failed(row.clone());
                        undo = format!("{undo}; {}", inbox::forget_statement(row));
                    }
                    sqlx::raw_sql(sqlx::AssertSqlSafe(undo)).execute(&mut *connection).await?;
                }
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

/// The inbox rows a batch won, as its units take them.
#[derive(Debug, Default)]
struct Won {
    new: HashSet<(String, Uuid)>,
    /// Rows whose unit failed, and were deleted again.
    failed: HashSet<(String, Uuid)>,
}

impl Won {
    /// Whether `row` is the batch's to apply, once: a second unit with the same row is not.
    fn remove(&mut self, row: &(String, Uuid)) -> bool {
        self.new.remove(row)
    }

    fn failed(&mut self, row: (String, Uuid)) {
        self.failed.insert(row);
    }

    /// Whether `row` was won by an earlier unit that failed: a copy must not
    /// read as applied, or its delivery would be acked with nothing applied.
    fn lost_to_a_failed_copy(&self, row: &(String, Uuid)) -> bool {
        self.failed.contains(row)
    }
}

/// Begins the batch's transaction in one round trip: takes the claimed
/// keys' locks (in one order, so two batches never wait on each other),
/// inserts every claimed inbox row, and takes the first savepoint unless
/// the unit is alone. Returns the rows that were new.
///
/// One simple-protocol statement list, so its values are written as
/// literals (the [`inbox`] module's statements).
async fn begin(connection: &mut PgConnection, claims: &[Claim], alone: bool) -> Result<Won, sqlx::Error> {
    let mut sql = "BEGIN".to_owned();
    let keys: Vec<Uuid> = claims.iter().filter_map(|claim| claim.serialised_on).collect();
    if !keys.is_empty() {
        let _ = write!(sql, "; {}", inbox::lock_statement(&keys));
    }
    if !claims.is_empty() {
        let rows: Vec<(String, Uuid)> = claims.iter().map(Claim::row).collect();
        let _ = write!(sql, "; {}", inbox::record_statement(&rows));
    }
    if !alone {
        sql.push_str("; SAVEPOINT unit");
    }
    let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).fetch_all(&mut *connection).await?;
    let mut won = Won::default();
    // The locks' rows have one column; the inbox rows two.
    for row in rows.iter().filter(|row| row.len() == 2) {
        won.new.insert((row.try_get(0)?, row.try_get(1)?));
    }
    Ok(won)
}

async fn abandon(queued: &mut VecDeque<Unit>, error: sqlx::Error) -> usize {
    tracing::warn!(%error, units = queued.len(), "no batch transaction could be begun");
    let error = Arc::new(error);
    let count = queued.len();
    for unit in queued.drain(..) {
        // A unit handed the error answers its caller itself.
        let _ = (unit.run)(Turn::Failed(error.clone())).await;
    }
    count
}
