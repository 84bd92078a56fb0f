//! The batch writer against a real Postgres: concurrent units share one
//! commit, a failing unit is undone alone, no caller hears success before
//! its writes are durable, and a consumed event is applied once with its
//! events in the outbox.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use emporium_nats::{BatchError, BatchWriter, Claim, OutboxSignal, OutgoingEvent};
use emporium_schemas::{EntityKey, MessageId};
use emporium_test_harness::TestDatabase;
use emporium_test_harness::events::order_shipped;
use futures::future::join_all;
use sqlx::PgPool;
use uuid::Uuid;

async fn table(db: &TestDatabase) -> &PgPool {
    let pool = db.pool();
    sqlx::query("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)").execute(pool).await.unwrap();
    pool
}

async fn ids(pool: &PgPool) -> Vec<i32> {
    sqlx::query_scalar("SELECT id FROM notes ORDER BY id").fetch_all(pool).await.unwrap()
}

async fn commits(pool: &PgPool) -> i64 {
    sqlx::query("SELECT pg_stat_clear_snapshot()").execute(pool).await.unwrap();
    sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A unit that writes note `id`, or fails on the way if `fail`.
async fn note(writer: &BatchWriter, id: i32, fail: bool) -> Result<i32, BatchError<sqlx::Error>> {
    writer
        .run(move |tx| {
            Box::pin(async move {
                sqlx::query("INSERT INTO notes (id, body) VALUES ($1, 'kept')").bind(id).execute(&mut *tx).await?;
                if fail {
                    // A duplicate key: the unit's own statement fails inside its savepoint.
                    sqlx::query("INSERT INTO notes (id, body) VALUES ($1, 'twice')").bind(id).execute(&mut *tx).await?;
                }
                Ok((id, Vec::new()))
            })
        })
        .await
}

#[tokio::test]
async fn concurrent_units_commit_together_and_a_failing_unit_is_undone_alone() {
    let db = TestDatabase::create().await.unwrap();
    let pool = table(&db).await;
    let writer = BatchWriter::start(pool.clone(), OutboxSignal::default());

    // Given two hundred units at once, every seventh failing half-way,
    let results = join_all((0..200).map(|id| note(&writer, id, id % 7 == 0))).await;

    // then the others are kept, each caller hears its own outcome,
    for (id, result) in (0..200).zip(&results) {
        match result {
            Ok(kept) => assert_eq!(*kept, id),
            Err(BatchError::Unit(_)) => assert_eq!(id % 7, 0, "unit {id} failed"),
            Err(other) => panic!("unit {id}: {other}"),
        }
    }
    let expected: Vec<i32> = (0..200).filter(|id| id % 7 != 0).collect();
    assert_eq!(ids(pool).await, expected, "a failed unit left nothing, the others everything");
    // and they took far fewer transactions than units.
    let transactions = writer.stats().transactions.load(std::sync::atomic::Ordering::Relaxed);
    assert!(transactions < 100, "{transactions} transactions for 200 units");
}

#[tokio::test]
async fn a_unit_alone_commits_once_and_its_failure_leaves_nothing() {
    let db = TestDatabase::create().await.unwrap();
    let pool = table(&db).await;
    let writer = BatchWriter::start(pool.clone(), OutboxSignal::default());

    let before = commits(pool).await;
    assert_eq!(note(&writer, 1, false).await.unwrap(), 1);
    assert!(matches!(note(&writer, 2, true).await, Err(BatchError::Unit(_))));
    assert_eq!(ids(pool).await, vec![1]);
    // One commit for the kept unit (the failed one rolled back); the reads here add theirs.
    assert!(commits(pool).await - before <= 3);
}

#[tokio::test]
async fn callers_hear_the_database_error_when_no_transaction_can_begin() {
    let db = TestDatabase::create().await.unwrap();
    let pool = table(&db).await;
    let writer = BatchWriter::start(pool.clone(), OutboxSignal::default());
    pool.close().await;

    let results = join_all((0..5).map(|id| note(&writer, id, false))).await;
    assert!(results.iter().all(|r| matches!(r, Err(BatchError::Database(_)))), "{results:?}");
}

/// Applies `event` for the "notes" consumer: writes note `id` and announces `announce`, or fails if `fail`.
async fn apply_note(
    writer: &BatchWriter,
    event: MessageId,
    id: i32,
    announce: Vec<OutgoingEvent>,
    fail: bool,
) -> Result<Option<i32>, sqlx::Error> {
    writer
        .apply_once(Claim::new("notes", event), move |tx| {
            Box::pin(async move {
                sqlx::query("INSERT INTO notes (id, body) VALUES ($1, 'kept')").bind(id).execute(&mut *tx).await?;
                if fail {
                    sqlx::query("INSERT INTO notes (id, body) VALUES ($1, 'twice')").bind(id).execute(&mut *tx).await?;
                }
                Ok((id, announce))
            })
        })
        .await
}

async fn outbox_ids(pool: &PgPool) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT id FROM outbox ORDER BY position").fetch_all(pool).await.unwrap()
}

#[tokio::test]
async fn a_consumed_event_is_applied_once_with_its_events_and_the_relay_is_woken_after_the_commit() {
    let db = TestDatabase::create().await.unwrap();
    let pool = table(&db).await;
    emporium_nats::outbox::migrate(pool).await.unwrap();
    let signal = OutboxSignal::default();
    let writer = BatchWriter::start(pool.clone(), signal.clone());
    let key = EntityKey::from(Uuid::now_v7());
    let shipped = OutgoingEvent::encode(&order_shipped(&key, 1)).unwrap();
    let (event, failing) = (MessageId::new_v7(), MessageId::new_v7());

    // Given an event applied, its copy, and another event whose work fails, with a copy
    // behind it whose work would not, all at once (one batch),
    let (first, again, failed, failed_copy) = tokio::join!(
        apply_note(&writer, event, 1, vec![shipped.clone()], false),
        apply_note(&writer, event, 2, vec![shipped.clone()], false),
        apply_note(&writer, failing, 3, vec![shipped.clone()], true),
        apply_note(&writer, failing, 4, Vec::new(), false),
    );

    // then the event's work ran once and its copy's not at all,
    assert_eq!(first.unwrap(), Some(1));
    assert_eq!(again.unwrap(), None, "a copy of an applied event is skipped");
    assert!(failed.is_err());
    // the failed event's copy is never told it was applied: it ran, or is to be taken again,
    match failed_copy {
        Ok(Some(4)) => assert_eq!(ids(pool).await, vec![1, 4]),
        Err(_) => assert_eq!(ids(pool).await, vec![1]),
        other => panic!("the copy of a failed event read {other:?}"),
    }
    sqlx::query("DELETE FROM notes WHERE id = 4").execute(pool).await.unwrap();
    sqlx::query("DELETE FROM inbox WHERE event_id = $1").bind(failing.as_uuid()).execute(pool).await.unwrap();
    // only the kept unit's events are in the outbox, and the relay was woken.
    assert_eq!(outbox_ids(pool).await, vec![*shipped.id.as_uuid()]);
    let woken = tokio::time::timeout(Duration::from_secs(5), signal.woken()).await;
    assert!(woken.is_ok(), "the relay was never woken");
    // The failed event left no inbox row: its redelivery runs its work.
    assert_eq!(apply_note(&writer, failing, 3, Vec::new(), false).await.unwrap(), Some(3));
    assert_eq!(ids(pool).await, vec![1, 3]);
}

#[tokio::test]
async fn units_serialised_on_one_key_take_turns_across_writers() {
    let db = TestDatabase::create().await.unwrap();
    let pool = table(&db).await;
    emporium_nats::outbox::migrate(pool).await.unwrap();
    // Given two writers (two replicas of a service), each applying an event of one order,
    let (one, other) = (
        BatchWriter::start(pool.clone(), OutboxSignal::default()),
        BatchWriter::start(pool.clone(), OutboxSignal::default()),
    );
    let order = Uuid::now_v7();
    let slow = tokio::spawn(async move {
        one.apply_once(Claim::new("notes", MessageId::new_v7()).serialised_on(order), move |tx| {
            Box::pin(async move {
                sqlx::query("INSERT INTO notes (id, body) VALUES (1, 'first')").execute(&mut *tx).await?;
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, sqlx::Error>(((), Vec::new()))
            })
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // when the second starts while the first still holds its transaction open,
    let seen = other
        .apply_once(Claim::new("notes", MessageId::new_v7()).serialised_on(order), move |tx| {
            Box::pin(async move {
                let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM notes").fetch_one(&mut *tx).await?;
                Ok::<_, sqlx::Error>((seen, Vec::new()))
            })
        })
        .await
        .unwrap();

    // then its work ran only once the first had committed.
    slow.await.unwrap().unwrap();
    assert_eq!(seen, Some(1), "the second unit ran beside the first");
}
