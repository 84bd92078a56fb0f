//! The batch writer against a real Postgres: concurrent units share one
//! commit, a failing unit is undone alone, and no caller hears success
//! before its writes are durable.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use emporium_nats::{BatchError, BatchWriter};
use emporium_test_harness::TestDatabase;
use futures::future::join_all;
use sqlx::PgPool;

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
                Ok(id)
            })
        })
        .await
}

#[tokio::test]
async fn concurrent_units_commit_together_and_a_failing_unit_is_undone_alone() {
    let db = TestDatabase::create().await.unwrap();
    let pool = table(&db).await;
    let writer = BatchWriter::start(pool.clone());

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
    let writer = BatchWriter::start(pool.clone());

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
    let writer = BatchWriter::start(pool.clone());
    pool.close().await;

    let results = join_all((0..5).map(|id| note(&writer, id, false))).await;
    assert!(results.iter().all(|r| matches!(r, Err(BatchError::Database(_)))), "{results:?}");
}
