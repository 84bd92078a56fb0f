//! The commit-and-publish path end to end: entities commit events to the
//! outbox through group commit, the relay publishes them to JetStream, and a
//! consumer in another service database applies each once (inbox + state)
//! through its own group commit.
//!
//! Prints events/s from first commit to last apply (all entities committing
//! as fast as they can), Postgres write commits per 1,000 events (both writers
//! plus the relay's marks), and the relay's publish lag p99 (row written →
//! marked published) at a steady 2,000 events/s. Knobs:
//! `PIPELINE_EVENTS` (default 50,000), `PIPELINE_ENTITIES` (default 512).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)] // a benchmark reports on stdout

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use chrono::Utc;
use emporium_actors::writer::WriterStats;
use emporium_actors::{Commit, GroupCommit, InboxEntry, StateChange, WriterConfig};
use emporium_nats::topology::{LOCKS, event_stream};
use emporium_nats::{
    ConsumerLoop, Delivery, Handled, Handler, HandlerError, Leases, LoopConfig, OutboxRelay, OutboxSignal,
    OutgoingEvent, Publisher, RelayConfig, Subscription, SystemClock, Topology, outbox, provision,
};
use emporium_schemas::events::order::OrderShipped;
use emporium_schemas::{EntityKey, Envelope, Partition};
use emporium_test_harness::events::order_shipped;
use emporium_test_harness::{TestDatabase, TestNats};
use futures::future::BoxFuture;
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const PARTITIONS: u16 = 4;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The consumer's read model: the last seq seen per key.
struct Project {
    key: EntityKey,
    seq: i64,
}

impl StateChange for Project {
    fn write<'a>(&'a self, tx: &'a mut PgConnection) -> BoxFuture<'a, Result<bool, sqlx::Error>> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO shipped (key, last_seq) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET last_seq = GREATEST(shipped.last_seq, $2)",
            )
            .bind(self.key.as_str())
            .bind(self.seq)
            .execute(tx)
            .await?;
            Ok(true)
        })
    }
}

struct Consumer {
    writer: GroupCommit,
    consumer: Arc<str>,
    applied: AtomicU64,
}

impl Handler for Consumer {
    type Event = OrderShipped;

    async fn handle(&self, event: Envelope<OrderShipped>, _: &Delivery) -> Result<Handled, HandlerError> {
        let commit = Commit {
            inbox: Some(InboxEntry { consumer: self.consumer.clone(), event: event.id }),
            state: Some(Box::new(Project { key: event.key, seq: i64::try_from(event.seq.get()).unwrap() })),
            outbox: Vec::new(),
        };
        match self.writer.commit(commit).await {
            Ok(()) => {
                self.applied.fetch_add(1, Ordering::Relaxed);
                Ok(Handled::Applied)
            }
            Err(emporium_actors::CommitError::Duplicate) => Ok(Handled::Skipped),
            Err(error) => Err(HandlerError::Retry(error.to_string())),
        }
    }
}

fn event(key: &EntityKey, seq: u64) -> OutgoingEvent {
    OutgoingEvent::encode(&order_shipped(key, seq)).unwrap()
}

fn transactions(stats: &WriterStats) -> u64 {
    stats.transactions.load(Ordering::Relaxed)
}

#[tokio::main]
async fn main() {
    let events = env("PIPELINE_EVENTS", 50_000);
    let entities = env("PIPELINE_ENTITIES", 512).min(events);
    let nats = TestNats::start().await.unwrap();
    let js = jetstream::new(nats.client().clone());
    let subscription = Subscription { service: "bench", context: "order" };
    provision(&js, &Topology::new(PARTITIONS, vec![subscription.clone()])).await.unwrap();
    let producer_db = TestDatabase::create().await.unwrap();
    let consumer_db = TestDatabase::create().await.unwrap();
    for db in [&producer_db, &consumer_db] {
        outbox::migrate(db.pool()).await.unwrap();
    }
    sqlx::query("CREATE TABLE shipped (key TEXT PRIMARY KEY, last_seq BIGINT NOT NULL)")
        .execute(consumer_db.pool())
        .await
        .unwrap();
    let stop = CancellationToken::new();

    // The producing service: its writer and its relay.
    let signal = OutboxSignal::default();
    let (producer, _) = GroupCommit::start(producer_db.pool().clone(), signal.clone(), WriterConfig::default());
    let leases = Leases::new(js.get_key_value(LOCKS.name).await.unwrap(), "bench", Arc::new(SystemClock));
    let relay = OutboxRelay::new(
        "bench",
        producer_db.pool().clone(),
        Publisher::new(js.clone(), PARTITIONS),
        leases,
        signal,
        RelayConfig::default(),
    );
    let relay_stats = relay.stats();
    tokio::spawn(relay.run(stop.clone()));

    // The consuming service: one loop per partition, its own writer.
    let (writer, _) = GroupCommit::start(consumer_db.pool().clone(), OutboxSignal::default(), WriterConfig::default());
    let consumer = Arc::new(Consumer { writer: writer.clone(), consumer: "bench".into(), applied: AtomicU64::new(0) });
    for partition in Partition::all(PARTITIONS) {
        let consumer_loop = ConsumerLoop::new(
            js.clone(),
            event_stream("order"),
            subscription.durable_name(partition),
            consumer.clone(),
            LoopConfig::default(),
        );
        tokio::spawn(consumer_loop.run(stop.clone()));
    }

    // Entities: each commits its events one decision at a time.
    let started = Instant::now();
    let per_entity = events / entities;
    let total = per_entity * entities;
    let producers: Vec<_> = (0..entities)
        .map(|_| {
            let producer = producer.clone();
            tokio::spawn(async move {
                let key = EntityKey::from(Uuid::now_v7());
                for seq in 1..=per_entity as u64 {
                    producer.commit(Commit { outbox: vec![event(&key, seq)], ..Default::default() }).await.unwrap();
                }
            })
        })
        .collect();
    for producer in producers {
        producer.await.unwrap();
    }
    let produced = started.elapsed();
    let mut published = None;
    while consumer.applied.load(Ordering::Relaxed) < total as u64 {
        assert!(started.elapsed() < Duration::from_secs(600), "the pipeline stalled");
        if published.is_none() && relay_stats.published.load(Ordering::Relaxed) >= total as u64 {
            published = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    // Where the time went, for whoever tunes this path (stderr: not a bench line).
    eprintln!("committed all after {produced:?}, published all after {published:?}, applied all after {elapsed:?}");

    let commits =
        transactions(producer.stats()) + transactions(writer.stats()) + relay_stats.marks.load(Ordering::Relaxed);

    // The relay's lag at a steady load below saturation (under saturation it
    // is only the backlog): 2,000 events/s for 3 s, 20 entities per 10 ms.
    let paced_from = Utc::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut paced = Vec::new();
    for _ in 0..300 {
        tick.tick().await;
        for _ in 0..20 {
            let producer = producer.clone();
            paced.push(tokio::spawn(async move {
                let key = EntityKey::from(Uuid::now_v7());
                producer.commit(Commit { outbox: vec![event(&key, 1)], ..Default::default() }).await.unwrap();
            }));
        }
    }
    for commit in paced {
        commit.await.unwrap();
    }
    while relay_stats.published.load(Ordering::Relaxed) < total as u64 + 6_000 {
        assert!(started.elapsed() < Duration::from_secs(600), "the relay stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    let lag_p99: f64 = sqlx::query_scalar(
        "SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM published_at - created_at))
         FROM outbox WHERE created_at >= $1",
    )
    .bind(paced_from)
    .fetch_one(producer_db.pool())
    .await
    .unwrap();
    println!("bench: pipeline_events_per_sec = {:.0} events/s", total as f64 / elapsed.as_secs_f64());
    println!("bench: pipeline_pg_commits_per_1000_events = {:.1} commits", commits as f64 * 1_000.0 / total as f64);
    println!("bench: relay_publish_lag_p99_at_2000_events_per_sec = {:.1} ms", lag_p99 * 1_000.0);
}
