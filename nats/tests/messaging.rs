//! The messaging backbone against real servers: the outbox relay through a
//! NATS outage, per-key order through NAKs and a server restart, the DLQ,
//! leases, the inbox and `outbox replay`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use chrono::Utc;
use emporium_nats::consumer::LoopStats;
use emporium_nats::topology::{LOCKS, event_stream};
use emporium_nats::{
    Acquire, ConsumerLoop, Delivery, Freshness, Handled, Handler, HandlerError, LeaseError, Leases, LoopConfig,
    ManualClock, OutboxRelay, OutboxSignal, OutgoingEvent, Publisher, RelayConfig, SharedClock, Subscription,
    SystemClock, Topology, dlq, inbox, outbox, provision,
};
use emporium_schemas::events::order::OrderShipped;
use emporium_schemas::{EntityKey, Envelope, Event, MessageId, Partition, Seq};
use emporium_test_harness::events::order_shipped;
use emporium_test_harness::{TestDatabase, TestNats, eventually};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const PARTITIONS: u16 = 4;
const SERVICE: &str = "probe";
/// The test service's interest in `order` events, which every test publishes.
const ORDERS: Subscription = Subscription { service: SERVICE, context: "order" };

/// Servers, provisioned streams and a migrated database for one test.
struct Fixture {
    nats: TestNats,
    db: TestDatabase,
    js: jetstream::Context,
    publisher: Publisher,
}

impl Fixture {
    async fn start() -> Self {
        Self::with_topology(|_| {}).await
    }

    async fn with_topology(adjust: impl FnOnce(&mut Topology)) -> Self {
        let nats = TestNats::start().await.unwrap();
        let js = jetstream::new(nats.client().clone());
        let mut topology = Topology::new(PARTITIONS, vec![ORDERS]);
        adjust(&mut topology);
        provision(&js, &topology).await.unwrap();
        let db = TestDatabase::create().await.unwrap();
        outbox::migrate(db.pool()).await.unwrap();
        let publisher = Publisher::new(js.clone(), PARTITIONS);
        Self { nats, db, js, publisher }
    }

    fn pool(&self) -> &PgPool {
        self.db.pool()
    }

    async fn leases(&self, holder: &str, clock: SharedClock) -> Leases {
        Leases::new(self.js.get_key_value(LOCKS.name).await.unwrap(), holder, clock)
    }

    async fn relay(&self, signal: &OutboxSignal) -> OutboxRelay {
        let config =
            RelayConfig { poll: Duration::from_millis(100), lease_ttl: Duration::from_secs(3), ..Default::default() };
        let leases = self.leases(&format!("relay-{}", Uuid::now_v7()), Arc::new(SystemClock)).await;
        OutboxRelay::new(SERVICE, self.pool().clone(), self.publisher.clone(), leases, signal.clone(), config)
    }

    /// One consumer loop per partition, all feeding `handler`.
    fn consume<H: Handler>(
        &self,
        handler: &Arc<H>,
        config: &LoopConfig,
        stop: &CancellationToken,
    ) -> Vec<Arc<LoopStats>> {
        Partition::all(PARTITIONS)
            .map(|partition| {
                let consumer = ConsumerLoop::new(
                    self.js.clone(),
                    event_stream("order"),
                    ORDERS.durable_name(partition),
                    handler.clone(),
                    config.clone(),
                );
                let stats = consumer.stats();
                tokio::spawn(consumer.run(stop.child_token()));
                stats
            })
            .collect()
    }

    async fn stream_messages(&self) -> u64 {
        let mut stream = self.js.get_stream(event_stream("order")).await.unwrap();
        stream.info().await.unwrap().state.messages
    }
}

/// A loop that gives each event three quick attempts before dead-lettering it.
fn three_quick_attempts() -> LoopConfig {
    LoopConfig {
        max_attempts: 3,
        backoff: Duration::from_millis(20),
        expires: Duration::from_secs(1),
        ..Default::default()
    }
}

fn total(stats: &[Arc<LoopStats>], counter: impl Fn(&LoopStats) -> &std::sync::atomic::AtomicU64) -> u64 {
    stats.iter().map(|s| LoopStats::get(counter(s))).sum()
}

fn shipped(key: &EntityKey, seq: u64) -> OutgoingEvent {
    OutgoingEvent::encode(&order_shipped(key, seq)).unwrap()
}

fn keys(count: usize) -> Vec<EntityKey> {
    (0..count).map(|_| EntityKey::from(Uuid::now_v7())).collect()
}

/// Writes `per_key` events for every key, one transaction per round of keys,
/// as entities would: each key's events in seq order.
async fn write_events(pool: &PgPool, keys: &[EntityKey], per_key: u64, signal: &OutboxSignal) {
    for seq in 1..=per_key {
        let events: Vec<_> = keys.iter().map(|key| shipped(key, seq)).collect();
        for chunk in events.chunks(500) {
            let mut tx = pool.begin().await.unwrap();
            outbox::append(&mut tx, chunk).await.unwrap();
            tx.commit().await.unwrap();
            signal.wake();
        }
    }
}

async fn unpublished(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetch_one(pool).await.unwrap()
}

/// Remembers, per key, the seqs a handler applied, in the order it applied them.
#[derive(Default)]
struct Applied {
    seqs: Mutex<HashMap<EntityKey, Vec<u64>>>,
}

impl Applied {
    fn last(&self, key: &EntityKey) -> Option<Seq> {
        self.seqs.lock().unwrap().get(key).and_then(|s| s.last()).map(|&s| Seq::try_from(s).unwrap())
    }

    fn push(&self, key: &EntityKey, seq: Seq) {
        self.seqs.lock().unwrap().entry(key.clone()).or_default().push(seq.get());
    }

    fn count(&self) -> usize {
        self.seqs.lock().unwrap().values().map(Vec::len).sum()
    }
}

/// Applies each key's events in seq order, fails about one delivery in twenty
/// on its first attempt, and records any event that arrives ahead of its turn.
struct Flaky {
    applied: Applied,
    out_of_order: Mutex<Vec<(EntityKey, u64)>>,
}

impl Handler for Flaky {
    type Event = OrderShipped;

    async fn handle(&self, event: Envelope<OrderShipped>, delivery: &Delivery) -> Result<Handled, HandlerError> {
        if delivery.attempt == 1 && event.id.as_uuid().as_u128().is_multiple_of(20) {
            return Err(HandlerError::Retry("injected failure".into()));
        }
        match Freshness::of(self.applied.last(&event.key), event.seq) {
            Freshness::Next => {
                self.applied.push(&event.key, event.seq);
                Ok(Handled::Applied)
            }
            Freshness::Duplicate | Freshness::Stale => Ok(Handled::Skipped),
            Freshness::Ahead { .. } => {
                self.out_of_order.lock().unwrap().push((event.key.clone(), event.seq.get()));
                Err(HandlerError::Retry("ahead of its turn".into()))
            }
        }
    }
}

#[tokio::test]
async fn the_relay_loses_nothing_while_nats_is_unreachable_and_publishes_in_order_once_it_is_back() {
    let mut fx = Fixture::start().await;
    let signal = OutboxSignal::default();
    let relay = fx.relay(&signal).await;
    let stop = CancellationToken::new();

    fx.nats.server().expect("a private nats-server").stop().await.unwrap();
    let relay_task = tokio::spawn(relay.clone().run(stop.clone()));
    let keys = keys(20);
    write_events(fx.pool(), &keys, 10, &signal).await;
    assert!(relay.publish_pending().await.is_err(), "publishing must fail while NATS is down");
    assert_eq!(unpublished(fx.pool()).await, 200, "every row waits");

    fx.nats.server().unwrap().restart().await.unwrap();
    assert!(eventually(Duration::from_secs(30), || async { unpublished(fx.pool()).await == 0 }).await);
    assert_eq!(fx.stream_messages().await, 200);

    // The stream holds each key's events in seq order.
    let stream = fx.js.get_stream(event_stream("order")).await.unwrap();
    let mut last: HashMap<String, u64> = HashMap::new();
    for sequence in 1..=200 {
        let message = stream.get_raw_message(sequence).await.unwrap();
        let raw = emporium_schemas::RawEnvelope::from_json(&message.payload).unwrap();
        let previous = last.insert(raw.key().to_string(), raw.seq().get()).unwrap_or(0);
        assert_eq!(raw.seq().get(), previous + 1, "key {} out of order", raw.key());
    }
    stop.cancel();
    relay_task.await.unwrap();
}

#[tokio::test]
async fn a_thousand_keys_of_twenty_events_arrive_in_order_and_once_despite_naks_and_a_restart() {
    let mut fx = Fixture::start().await;
    let signal = OutboxSignal::default();
    let stop = CancellationToken::new();
    let relay_task = tokio::spawn(fx.relay(&signal).await.run(stop.clone()));
    let handler = Arc::new(Flaky { applied: Applied::default(), out_of_order: Mutex::default() });
    let config = LoopConfig {
        backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        expires: Duration::from_secs(1),
        ..Default::default()
    };
    let stats = fx.consume(&handler, &config, &stop);

    let keys = keys(1_000);
    write_events(fx.pool(), &keys[..], 10, &signal).await;
    assert!(eventually(Duration::from_secs(60), || async { handler.applied.count() >= 5_000 }).await);

    // A restart in the middle, while events are still being written.
    let server = fx.nats.server().expect("a private nats-server");
    server.stop().await.unwrap();
    server.restart().await.unwrap();
    for seq in 11..=20 {
        let events: Vec<_> = keys.iter().map(|key| shipped(key, seq)).collect();
        let mut tx = fx.pool().begin().await.unwrap();
        outbox::append(&mut tx, &events).await.unwrap();
        tx.commit().await.unwrap();
        signal.wake();
    }

    let all = 1_000 * 20;
    assert!(
        eventually(Duration::from_secs(120), || async { handler.applied.count() >= all }).await,
        "applied {} of {all}",
        handler.applied.count()
    );
    assert_eq!(handler.applied.count(), all, "each event applied once");
    for key in &keys {
        let seqs = handler.applied.seqs.lock().unwrap().get(key).cloned().unwrap();
        assert_eq!(seqs, (1..=20).collect::<Vec<u64>>(), "key {key}");
    }
    assert!(handler.out_of_order.lock().unwrap().is_empty(), "events reached the handler ahead of their turn");
    assert!(total(&stats, |s| &s.retried) >= 500, "about 5 % of deliveries were NAKed");
    assert_eq!(total(&stats, |s| &s.dead_lettered), 0);
    stop.cancel();
    relay_task.await.unwrap();
}

/// Fails every delivery of the events it is told to, until mended.
struct Poisoned {
    poison: Mutex<Option<MessageId>>,
    mended: AtomicBool,
    applied: Mutex<Vec<MessageId>>,
}

impl Handler for Poisoned {
    type Event = OrderShipped;

    async fn handle(&self, event: Envelope<OrderShipped>, _: &Delivery) -> Result<Handled, HandlerError> {
        if *self.poison.lock().unwrap() == Some(event.id) && !self.mended.load(Ordering::SeqCst) {
            return Err(HandlerError::Retry("cannot handle this one yet".into()));
        }
        self.applied.lock().unwrap().push(event.id);
        Ok(Handled::Applied)
    }
}

#[tokio::test]
async fn a_poison_message_reaches_the_dlq_after_its_last_attempt_and_can_be_replayed() {
    let fx = Fixture::start().await;
    let handler =
        Arc::new(Poisoned { poison: Mutex::default(), mended: AtomicBool::new(false), applied: Mutex::default() });
    let stop = CancellationToken::new();
    let stats = fx.consume(&handler, &three_quick_attempts(), &stop);

    let key = EntityKey::from(Uuid::now_v7());
    let poison = shipped(&key, 1);
    *handler.poison.lock().unwrap() = Some(poison.id);
    fx.publisher.publish(&poison).await.unwrap();
    // Not an envelope at all: dead-lettered on its first delivery.
    fx.js
        .publish(format!("evt.order.shipped.v1.p00.{}", Uuid::now_v7()), "{not json".into())
        .await
        .unwrap()
        .await
        .unwrap();

    assert!(eventually(Duration::from_secs(20), || async { dlq::list(&fx.js, 10).await.unwrap().len() == 2 }).await);
    let letters = dlq::list(&fx.js, 10).await.unwrap();
    let gave_up = letters.iter().find(|l| l.reason.starts_with("gave up")).expect("the poison message");
    assert_eq!(gave_up.attempts, 3);
    assert_eq!(gave_up.subject, poison.subject(PARTITIONS));
    let durable = ORDERS.durable_name(Partition::of(&key, PARTITIONS));
    assert_eq!(gave_up.consumer, durable);
    assert_eq!(gave_up.headers.get(dlq::MESSAGE_ID).unwrap().as_str(), poison.message_id());
    let garbage = letters.iter().find(|l| l.reason.starts_with("undecodable")).expect("the garbage");
    assert_eq!(garbage.attempts, 1);

    // TERMed: the server will not deliver it again.
    let mut consumer: PullConsumer =
        fx.js.get_stream(event_stream("order")).await.unwrap().get_consumer(&durable).await.unwrap();
    assert_eq!(consumer.info().await.unwrap().num_ack_pending, 0);
    assert!(handler.applied.lock().unwrap().is_empty());

    handler.mended.store(true, Ordering::SeqCst);
    dlq::replay(&fx.js, gave_up.sequence).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async { handler.applied.lock().unwrap().contains(&poison.id) }).await
    );
    assert_eq!(dlq::list(&fx.js, 10).await.unwrap().len(), 1, "the replayed letter left the DLQ");
    assert!(matches!(dlq::replay(&fx.js, gave_up.sequence).await, Err(dlq::DlqError::NotFound(_))));
    assert_eq!(total(&stats, |s| &s.dead_lettered), 2);
    stop.cancel();
}

/// Applies every event, except that it panics on the one it is told to.
#[derive(Default)]
struct Brittle {
    panics_on: Mutex<Option<MessageId>>,
    applied: Mutex<Vec<MessageId>>,
}

impl Handler for Brittle {
    type Event = OrderShipped;

    async fn handle(&self, event: Envelope<OrderShipped>, _: &Delivery) -> Result<Handled, HandlerError> {
        assert!(*self.panics_on.lock().unwrap() != Some(event.id), "a bug in the handler");
        self.applied.lock().unwrap().push(event.id);
        Ok(Handled::Applied)
    }
}

#[tokio::test]
async fn malformed_events_are_dead_lettered_at_once_a_panic_after_its_attempts_and_the_loop_goes_on() {
    let fx = Fixture::start().await;
    let handler = Arc::new(Brittle::default());
    let stop = CancellationToken::new();
    let stats = fx.consume(&handler, &three_quick_attempts(), &stop);
    let publish = |subject: String, payload: Vec<u8>| async {
        fx.js.publish(subject, payload.into()).await.unwrap().await.unwrap();
    };

    let bad = emporium_test_harness::events::bad_events(&OrderShipped::TYPE, PARTITIONS);
    for event in &bad {
        publish(event.subject.clone(), event.payload.clone()).await;
    }
    // Well formed, of a version this build does not know: acked, as any
    // event the handler does not take.
    let key = EntityKey::from(Uuid::now_v7());
    let future = shipped(&key, 1);
    let mut envelope: serde_json::Value = serde_json::from_slice(&future.payload).unwrap();
    envelope["schema"] = 9.into();
    let subject = future.subject(PARTITIONS).replace(".v1.", ".v9.");
    publish(subject, serde_json::to_vec(&envelope).unwrap()).await;
    let fatal = shipped(&EntityKey::from(Uuid::now_v7()), 1);
    *handler.panics_on.lock().unwrap() = Some(fatal.id);
    fx.publisher.publish(&fatal).await.unwrap();
    // After all of them, on a key a malformed message used: handled.
    let after: Vec<OutgoingEvent> = bad
        .iter()
        .map(|event| {
            let key = event.subject.rsplit('.').next().unwrap().to_owned();
            shipped(&EntityKey::try_from(key).unwrap(), 1)
        })
        .collect();
    for event in &after {
        fx.publisher.publish(event).await.unwrap();
    }

    let expected = bad.len() + 1;
    assert!(
        eventually(Duration::from_secs(20), || async { dlq::list(&fx.js, 100).await.unwrap().len() == expected }).await
    );
    let letters = dlq::list(&fx.js, 100).await.unwrap();
    for event in &bad {
        let letter = letters.iter().find(|l| l.subject == event.subject).unwrap_or_else(|| panic!("{}", event.what));
        assert!(letter.reason.starts_with(event.reason), "{}: {}", event.what, letter.reason);
        assert_eq!(letter.attempts, 1, "{}: dead-lettered on its first delivery", event.what);
        assert_eq!(letter.payload.as_ref(), event.payload.as_slice(), "{}", event.what);
        let partition = event.subject.split('.').nth(4).unwrap();
        assert!(letter.consumer.ends_with(partition), "{}: {}", event.what, letter.consumer);
    }
    let panicked = letters.iter().find(|l| l.subject == fatal.subject(PARTITIONS)).expect("the panicking event");
    assert!(panicked.reason.contains("the handler panicked: a bug in the handler"), "{}", panicked.reason);
    assert_eq!(panicked.attempts, 3);

    assert!(
        eventually(Duration::from_secs(20), || async {
            let applied = handler.applied.lock().unwrap();
            after.iter().all(|event| applied.contains(&event.id))
        })
        .await,
        "the loops went on"
    );
    assert_eq!(handler.applied.lock().unwrap().len(), after.len());
    assert_eq!(total(&stats, |s| &s.unhandled), 1, "the unknown version was acked");
    assert_eq!(total(&stats, |s| &s.dead_lettered), u64::try_from(expected).unwrap());
    stop.cancel();
}

#[tokio::test]
async fn a_lease_has_one_holder_at_a_time_is_taken_over_after_expiry_and_a_late_renewal_is_refused() {
    let fx = Fixture::start().await;
    let clock = ManualClock::at(Utc::now());
    let ttl = Duration::from_secs(10);
    let a = fx.leases("a", Arc::new(clock.clone())).await;
    let b = fx.leases("b", Arc::new(clock.clone())).await;

    // Ten contenders at once: exactly one wins.
    let contenders = futures::future::join_all((0..10).map(|i| {
        let clock = clock.clone();
        let js = fx.js.clone();
        async move {
            let leases = Leases::new(js.get_key_value(LOCKS.name).await.unwrap(), format!("c{i}"), Arc::new(clock));
            leases.acquire("race", ttl).await.unwrap()
        }
    }))
    .await;
    assert_eq!(contenders.iter().filter(|c| matches!(c, Acquire::Acquired(_))).count(), 1);

    let Acquire::Acquired(mut held_by_a) = a.acquire("relay", ttl).await.unwrap() else {
        panic!("a takes a free lease")
    };
    match b.acquire("relay", ttl).await.unwrap() {
        Acquire::HeldBy { holder, .. } => assert_eq!(holder, "a"),
        Acquire::Acquired(_) => panic!("b must not take a held lease"),
    }
    held_by_a.renew().await.unwrap();

    // a pauses past its expiry; b takes over; a's late renewal is refused.
    clock.advance(ttl + Duration::from_secs(1));
    let Acquire::Acquired(_held_by_b) = b.acquire("relay", ttl).await.unwrap() else {
        panic!("b takes an expired lease")
    };
    assert!(matches!(held_by_a.renew().await, Err(LeaseError::Lost { .. })));
    match a.acquire("relay", ttl).await.unwrap() {
        Acquire::HeldBy { holder, .. } => assert_eq!(holder, "b"),
        Acquire::Acquired(_) => panic!("a must not take b's lease back"),
    }
}

#[tokio::test]
async fn a_kept_lease_tells_its_holder_at_once_when_it_runs_out() {
    let fx = Fixture::start().await;
    let clock = ManualClock::at(Utc::now());
    let leases = fx.leases("keeper", Arc::new(clock.clone())).await;
    let Acquire::Acquired(lease) = leases.acquire("sweeper", Duration::from_millis(300)).await.unwrap() else {
        panic!()
    };
    let keeper = lease.keep(CancellationToken::new());
    let lost = keeper.lost();
    // Renewals keep it while time runs normally…
    assert!(!eventually(Duration::from_millis(400), || async { lost.is_cancelled() }).await);
    // …but once its expiry passes unrenewed (the process was paused), it is lost.
    clock.advance(Duration::from_secs(1));
    assert!(eventually(Duration::from_secs(2), || async { lost.is_cancelled() }).await);
    keeper.join().await;
}

/// Keeps a projection in Postgres, applying each event once through the inbox.
struct Projection {
    pool: PgPool,
}

impl Handler for Projection {
    type Event = OrderShipped;

    async fn handle(&self, event: Envelope<OrderShipped>, _: &Delivery) -> Result<Handled, HandlerError> {
        let retry = |e: sqlx::Error| HandlerError::Retry(e.to_string());
        let mut tx = self.pool.begin().await.map_err(retry)?;
        if !inbox::record(&mut tx, "projection", event.id).await.map_err(retry)? {
            return Ok(Handled::Skipped);
        }
        sqlx::query(
            "INSERT INTO projection (key, applied, last_seq) VALUES ($1, 1, $2)
             ON CONFLICT (key) DO UPDATE SET applied = projection.applied + 1, last_seq = GREATEST(projection.last_seq, $2)",
        )
        .bind(event.key.as_str())
        .bind(i64::try_from(event.seq.get()).unwrap())
        .execute(&mut *tx)
        .await
        .map_err(retry)?;
        tx.commit().await.map_err(retry)?;
        Ok(Handled::Applied)
    }
}

async fn projection(pool: &PgPool) -> Vec<(String, i64, i64)> {
    sqlx::query_as("SELECT key, applied, last_seq FROM projection ORDER BY key").fetch_all(pool).await.unwrap()
}

#[tokio::test]
async fn outbox_replay_of_the_last_hour_changes_no_state_anywhere() {
    // A short duplicate window, so the replay reaches consumers instead of
    // being dropped by JetStream.
    let fx = Fixture::with_topology(|t| t.duplicate_window = Duration::from_secs(1)).await;
    sqlx::query("CREATE TABLE projection (key TEXT PRIMARY KEY, applied BIGINT NOT NULL, last_seq BIGINT NOT NULL)")
        .execute(fx.pool())
        .await
        .unwrap();
    let signal = OutboxSignal::default();
    let relay = fx.relay(&signal).await;
    let stop = CancellationToken::new();
    let stats = fx.consume(&Arc::new(Projection { pool: fx.pool().clone() }), &LoopConfig::default(), &stop);

    let keys = keys(10);
    write_events(fx.pool(), &keys, 5, &signal).await;
    assert_eq!(relay.publish_pending().await.unwrap(), 50);
    assert!(eventually(Duration::from_secs(20), || async { total(&stats, |s| &s.applied) == 50 }).await);
    let before = projection(fx.pool()).await;
    assert_eq!(before.len(), 10);
    assert!(before.iter().all(|(_, applied, last)| *applied == 5 && *last == 5));
    let published_before: Vec<(i64, chrono::DateTime<Utc>)> =
        sqlx::query_as("SELECT position, published_at FROM outbox ORDER BY position")
            .fetch_all(fx.pool())
            .await
            .unwrap();

    // Past the duplicate window (a server-side timer; nothing to poll for).
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let replayed =
        outbox::replay_since(fx.pool(), &fx.publisher, Utc::now() - chrono::TimeDelta::hours(1)).await.unwrap();
    assert_eq!(replayed, 50);
    assert!(eventually(Duration::from_secs(20), || async { total(&stats, |s| &s.skipped) == 50 }).await);
    assert_eq!(fx.stream_messages().await, 100, "the replay reached the stream");
    assert_eq!(projection(fx.pool()).await, before);
    assert_eq!(total(&stats, |s| &s.applied), 50);
    let published_after: Vec<(i64, chrono::DateTime<Utc>)> =
        sqlx::query_as("SELECT position, published_at FROM outbox ORDER BY position")
            .fetch_all(fx.pool())
            .await
            .unwrap();
    assert_eq!(published_after, published_before);
    stop.cancel();
}

#[tokio::test]
async fn the_dedup_bucket_runs_a_side_effect_once_per_consumer() {
    let fx = Fixture::start().await;
    let bucket = fx.js.get_key_value(emporium_nats::topology::DEDUP.name).await.unwrap();
    let mailer = emporium_nats::dedup::Dedup::new(bucket.clone(), "mailer");
    let other = emporium_nats::dedup::Dedup::new(bucket, "audit");
    let event = MessageId::new_v7();
    let runs = AtomicBool::new(false);
    let effect = || async {
        assert!(!runs.swap(true, Ordering::SeqCst), "the effect ran twice");
        Ok::<(), std::convert::Infallible>(())
    };
    assert!(mailer.once(event, effect()).await.unwrap());
    assert!(!mailer.once(event, effect()).await.unwrap());
    assert!(!other.seen(event).await.unwrap(), "consumers are deduplicated separately");
}

#[tokio::test]
async fn published_rows_are_kept_for_the_replay_window_and_pruned_after_it() {
    let fx = Fixture::start().await;
    let signal = OutboxSignal::default();
    let relay = fx.relay(&signal).await;
    let keys = keys(5);
    write_events(fx.pool(), &keys, 2, &signal).await;
    assert_eq!(relay.publish_pending().await.unwrap(), 10);
    let mut tx = fx.pool().begin().await.unwrap();
    outbox::append(&mut tx, &keys.iter().map(|key| shipped(key, 3)).collect::<Vec<_>>()).await.unwrap();
    assert!(inbox::record(&mut tx, "projection", MessageId::new_v7()).await.unwrap());
    tx.commit().await.unwrap();

    assert_eq!(relay.prune().await.unwrap(), 0, "everything is inside the replay window");
    // Age everything past the window (7 days by default).
    sqlx::query("UPDATE outbox SET created_at = created_at - interval '8 days'").execute(fx.pool()).await.unwrap();
    sqlx::query("UPDATE inbox SET processed_at = processed_at - interval '8 days'").execute(fx.pool()).await.unwrap();
    assert_eq!(relay.prune().await.unwrap(), 10 + 1, "published outbox rows and inbox rows go");
    assert_eq!(unpublished(fx.pool()).await, 5, "unpublished rows stay, however old");
}

#[tokio::test]
async fn a_commit_in_a_process_that_does_not_lead_wakes_the_leader_through_notify() {
    let fx = Fixture::start().await;
    // Two processes' relays; polling so slow that only a NOTIFY explains a prompt publish.
    let slow = RelayConfig { poll: Duration::from_secs(300), lease_ttl: Duration::from_secs(30), ..Default::default() };
    let relay = |signal: &OutboxSignal, holder: &str| {
        let (fx, signal, holder, config) = (&fx, signal.clone(), holder.to_owned(), slow.clone());
        async move {
            let leases = fx.leases(&holder, Arc::new(SystemClock)).await;
            OutboxRelay::new(SERVICE, fx.pool().clone(), fx.publisher.clone(), leases, signal, config)
        }
    };
    let (leader_signal, follower_signal) = (OutboxSignal::default(), OutboxSignal::default());
    let leader = relay(&leader_signal, "leader").await;
    let stop = CancellationToken::new();
    tokio::spawn(leader.run(stop.clone()));
    // Leading and listening: its LISTEN is the last statement of one of our backends.
    let listening = eventually(Duration::from_secs(10), || async {
        let listeners: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .fetch_one(fx.pool())
        .await
        .unwrap();
        listeners == 1
    })
    .await;
    assert!(listening);
    tokio::spawn(relay(&follower_signal, "follower").await.run(stop.clone()));

    // The follower's process commits and wakes its own relay, which forwards a NOTIFY.
    write_events(fx.pool(), &keys(3), 2, &follower_signal).await;
    assert!(eventually(Duration::from_secs(10), || async { unpublished(fx.pool()).await == 0 }).await);
    assert_eq!(fx.stream_messages().await, 6);
    stop.cancel();
}
