//! The service runtime against real servers: what a service commits while it
//! drains is published before it stops, not at its next start.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use emporium_nats::topology::event_stream;
use emporium_nats::{
    Delivery, Handled, Handler, HandlerError, Leases, OutboxSignal, OutgoingEvent, Routes, ServiceRuntime, SharedClock,
    Subscription, SystemClock, Topology, outbox, provision,
};
use emporium_schemas::commands::catalog::GetProduct;
use emporium_schemas::events::order::OrderShipped;
use emporium_schemas::{EntityKey, Envelope, ErrorKind, ReplyError};
use emporium_test_harness::events::order_shipped;
use emporium_test_harness::{TestDatabase, TestNats, eventually};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const PARTITIONS: u16 = 2;
const SERVICE: &str = "probe";
/// The probe consumes its own events: the relay's output is its input.
const ORDERS: &Subscription = &Subscription { service: SERVICE, context: "order" };

/// Servers, provisioned streams and a migrated database for one test.
struct Fixture {
    nats: TestNats,
    db: TestDatabase,
    js: jetstream::Context,
}

impl Fixture {
    async fn start() -> Self {
        let nats = TestNats::start().await.unwrap();
        let js = jetstream::new(nats.client().clone());
        provision(&js, &Topology::new(PARTITIONS, vec![ORDERS.clone()])).await.unwrap();
        let db = TestDatabase::create().await.unwrap();
        outbox::migrate(db.pool()).await.unwrap();
        Self { nats, db, js }
    }

    async fn runtime(&self, outbox: &OutboxSignal, stop: &CancellationToken) -> (ServiceRuntime, Leases) {
        let clock: SharedClock = Arc::new(SystemClock);
        let (pool, nats) = (self.db.pool(), self.nats.client());
        ServiceRuntime::start(SERVICE, pool, nats, PARTITIONS, &clock, outbox, stop.clone()).await.unwrap()
    }

    async fn unpublished(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(self.db.pool())
            .await
            .unwrap()
    }

    async fn stream_messages(&self) -> u64 {
        let mut stream = self.js.get_stream(event_stream("order")).await.unwrap();
        stream.info().await.unwrap().state.messages
    }
}

fn shipped(key: &EntityKey) -> OutgoingEvent {
    OutgoingEvent::encode(&order_shipped(key, 1)).unwrap()
}

/// Commits `event` to the outbox as a service does: in a transaction, then a wake.
async fn commit(pool: &PgPool, event: OutgoingEvent, outbox: &OutboxSignal) {
    let mut tx = pool.begin().await.unwrap();
    outbox::append(&mut tx, &[event]).await.unwrap();
    tx.commit().await.unwrap();
    outbox.wake();
}

/// The one route a probe serves, so that its request loop has something to wait on.
fn routes() -> Routes<()> {
    Routes::new(()).on(|_, _: emporium_schemas::CommandEnvelope<GetProduct>| async {
        Err::<(), _>(ReplyError::new(ErrorKind::NotFound, "the probe has no products"))
    })
}

/// A handler still at work when the stop comes: on the `trigger` event it
/// says it started, waits for the stop, and only well after it commits a
/// `follow_up` event to the outbox.
struct SlowToFinish {
    pool: PgPool,
    outbox: OutboxSignal,
    stop: CancellationToken,
    trigger: EntityKey,
    follow_up: EntityKey,
    started: Arc<Notify>,
}

impl Handler for SlowToFinish {
    type Event = OrderShipped;

    async fn handle(&self, event: Envelope<OrderShipped>, _: &Delivery) -> Result<Handled, HandlerError> {
        if event.key != self.trigger {
            return Ok(Handled::Skipped);
        }
        self.started.notify_one();
        self.stop.cancelled().await;
        // Late enough that a relay stopped along with the consumers would be gone.
        tokio::time::sleep(Duration::from_millis(300)).await;
        commit(&self.pool, shipped(&self.follow_up), &self.outbox).await;
        Ok(Handled::Applied)
    }
}

#[tokio::test]
async fn an_event_committed_by_a_consumer_while_the_service_drains_is_published_before_serve_returns() {
    let fx = Fixture::start().await;
    let (outbox, stop) = (OutboxSignal::default(), CancellationToken::new());
    let (mut runtime, _) = fx.runtime(&outbox, &stop).await;
    let started = Arc::new(Notify::new());
    let trigger = EntityKey::from(Uuid::now_v7());
    runtime.consume(
        ORDERS,
        SlowToFinish {
            pool: fx.db.pool().clone(),
            outbox: outbox.clone(),
            stop: stop.clone(),
            trigger: trigger.clone(),
            follow_up: EntityKey::from(Uuid::now_v7()),
            started: started.clone(),
        },
    );
    let serving = tokio::spawn(Box::pin(runtime.serve(routes(), 8)));

    // Through the relay to the consumer: both are running.
    commit(fx.db.pool(), shipped(&trigger), &outbox).await;
    tokio::time::timeout(Duration::from_secs(10), started.notified()).await.expect("the trigger reached the handler");
    stop.cancel();
    serving.await.unwrap().unwrap();

    assert_eq!(fx.unpublished().await, 0, "the follow-up committed during the drain waits in the outbox");
    assert_eq!(fx.stream_messages().await, 2, "the trigger and the follow-up");
}

#[tokio::test]
async fn what_the_drain_work_commits_is_published_before_a_service_without_requests_stops() {
    let fx = Fixture::start().await;
    let (outbox, stop) = (OutboxSignal::default(), CancellationToken::new());
    let (mut runtime, _) = fx.runtime(&outbox, &stop).await;
    let (pool, signal, key) = (fx.db.pool().clone(), outbox.clone(), EntityKey::from(Uuid::now_v7()));
    // As payment's provider calls still in flight settle after its consumers have stopped.
    runtime.on_drain(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        commit(&pool, shipped(&key), &signal).await;
    });
    let waiting = tokio::spawn(Box::pin(runtime.wait()));

    // The relay leads: it publishes what is committed.
    commit(fx.db.pool(), shipped(&EntityKey::from(Uuid::now_v7())), &outbox).await;
    assert!(eventually(Duration::from_secs(10), || async { fx.stream_messages().await == 1 }).await);
    stop.cancel();
    waiting.await.unwrap();

    assert_eq!(fx.unpublished().await, 0, "the drain's event waits in the outbox");
    assert_eq!(fx.stream_messages().await, 2);
}
