//! Decisions committed per second through the entity host, the Postgres store
//! and the group-commit writer (state row, outbox event), and how many
//! Postgres transactions they took per 1,000 decisions.
//!
//! Knobs: `COMMIT_ENTITIES` (default 2,000), `COMMIT_DECISIONS` (default 40,000),
//! `COMMIT_CALLERS` (concurrent callers, default 512).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a bench program: output is its purpose

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::Utc;
use emporium_actors::{CommitMeta, EntityHost, GroupCommit, HostConfig, Persistent, PgStore, WriterConfig, postgres};
use emporium_nats::{OutboxSignal, OutgoingEvent, outbox};
use emporium_schemas::{EntityKey, Seq};
use emporium_test_harness::TestDatabase;
use emporium_test_harness::events::shipped_payload;

#[path = "support/counter.rs"]
mod counter;

use counter::{Counter, Incremented};

impl Persistent for Counter {
    const KIND: &'static str = "counter";

    fn key(id: &u32) -> EntityKey {
        EntityKey::try_from(id.to_string()).unwrap()
    }

    fn id(key: &EntityKey) -> Option<u32> {
        key.as_str().parse().ok()
    }

    fn outgoing(
        key: &EntityKey,
        seq: Seq,
        _: &Incremented,
        meta: &CommitMeta,
    ) -> Result<Option<OutgoingEvent>, serde_json::Error> {
        OutgoingEvent::caused_by(key.clone(), seq, meta.origin(), shipped_payload()).map(Some)
    }

    fn deadline_reached(_: chrono::DateTime<Utc>) {}
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let entities = env("COMMIT_ENTITIES", 2_000);
    let decisions = env("COMMIT_DECISIONS", 40_000);
    let callers = env("COMMIT_CALLERS", 512);
    let db = TestDatabase::create().await.unwrap();
    outbox::migrate(db.pool()).await.unwrap();
    postgres::migrate(db.pool()).await.unwrap();
    let (writer, _) = GroupCommit::start(db.pool().clone(), OutboxSignal::default(), WriterConfig::default());
    let config = HostConfig {
        idle_after: Duration::from_secs(600),
        max_in_flight: callers * 2,
        call_timeout: Duration::from_secs(60),
    };
    let host = EntityHost::<Counter>::start(PgStore::new(db.pool().clone(), writer.clone()), config).await.unwrap();

    let started = Instant::now();
    let per_caller = decisions / callers;
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let host = host.clone();
            tokio::spawn(async move {
                for i in 0..per_caller {
                    let id = (caller * 7919 + i * 31) % entities;
                    host.send(u32::try_from(id).unwrap(), ()).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let done = (per_caller * callers) as f64;
    let transactions = writer.stats().transactions.load(Ordering::Relaxed) as f64;
    println!("bench: group_commit_decisions_per_sec = {:.0} decisions/s", done / elapsed.as_secs_f64());
    println!("bench: group_commit_pg_commits_per_1000_decisions = {:.1} commits", transactions * 1_000.0 / done);
}
