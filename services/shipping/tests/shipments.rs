//! Shipping against real Postgres (and, for the carrier's commands, a private
//! NATS server): one shipment per order however often its events arrive,
//! cancellations in either order, and one announcement per move however
//! many reports race.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use chrono::Utc;
use emporium_nats::{Delivery, Handled, Handler, ManualClock, OutboxSignal, SharedClock};
use emporium_schemas::commands::order::ShipmentStatus;
use emporium_schemas::commands::shipping::{DeliverShipment, ShipShipment, ShipmentDetails};
use emporium_schemas::events::order::{CancelReason, OrderCancelled, OrderConfirmed, OrderStatus};
use emporium_schemas::values::{OrderId, PricedLine, ProductId, Role, ShipmentId, UserId};
use emporium_schemas::{CommandEnvelope, EntityKey, Envelope, ErrorKind, Principal, Reply, Seq};
use emporium_shipping::saga::{OrderEvent, OrderEvents, Shipping};
use emporium_shipping::{ShippingSettings, domain};
use emporium_test_harness::values::{address, euros, text};
use emporium_test_harness::{TestDatabase, TestService};
use sqlx::PgPool;
use uuid::Uuid;

fn confirmed(order: OrderId) -> Envelope<OrderEvent> {
    let line = PricedLine {
        product_id: ProductId::new_v7(),
        seller_id: UserId::new_v7(),
        quantity: 2_u32.try_into().unwrap(),
        unit_price: euros(1500),
    };
    let data = OrderConfirmed {
        order_id: order,
        customer_id: UserId::new_v7(),
        lines: vec![line].try_into().unwrap(),
        total: euros(3000),
        shipping_address: address(),
    };
    envelope(order, 3, OrderEvent::Confirmed(data))
}

fn cancelled(order: OrderId) -> Envelope<OrderEvent> {
    let data = OrderCancelled {
        order_id: order,
        customer_id: UserId::new_v7(),
        reason: CancelReason::CustomerRequest,
        previous_status: OrderStatus::Confirmed,
    };
    envelope(order, 4, OrderEvent::Cancelled(data))
}

fn envelope(order: OrderId, seq: u64, data: OrderEvent) -> Envelope<OrderEvent> {
    let key = EntityKey::from(*order.as_uuid());
    Envelope::new(key, Seq::try_from(seq).unwrap(), *order.as_uuid(), Uuid::now_v7(), data)
}

fn delivery(attempt: i64) -> Delivery {
    Delivery { subject: "evt.order.test".to_owned(), stream_sequence: 1, attempt }
}

/// A migrated database of the test's own, for the store without NATS.
async fn database() -> TestDatabase {
    let db = TestDatabase::create().await.unwrap();
    emporium_shipping::store::migrate(db.pool()).await.unwrap();
    db
}

/// The order event handler on a migrated database.
struct Store {
    pool: PgPool,
    handler: OrderEvents,
}

impl Store {
    fn on(pool: &PgPool) -> Self {
        let clock: SharedClock = Arc::new(ManualClock::at(Utc::now()));
        let shipping = Shipping::new(pool.clone(), OutboxSignal::default(), clock, text("Emporium Post"));
        Self { pool: pool.clone(), handler: OrderEvents(Arc::new(shipping)) }
    }

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn handle(&self, event: &Envelope<OrderEvent>, attempt: i64) -> Handled {
        self.handler.handle(event.clone(), &delivery(attempt)).await.unwrap()
    }
}

async fn shipments(pool: &PgPool, order: OrderId) -> Vec<(Uuid, String)> {
    sqlx::query_as("SELECT id, status FROM shipments WHERE order_id = $1")
        .bind(order.as_uuid())
        .fetch_all(pool)
        .await
        .unwrap()
}

/// (type, key, seq) of every event shipping wrote to its outbox, in order.
async fn outbox(pool: &PgPool) -> Vec<(String, String, i64)> {
    sqlx::query_as("SELECT type_name, key, seq FROM outbox ORDER BY position").fetch_all(pool).await.unwrap()
}

#[tokio::test]
async fn a_redelivered_order_confirmed_creates_no_second_shipment_and_no_second_event() {
    let db = database().await;
    let store = Store::on(db.pool());
    let order = OrderId::new_v7();
    let event = confirmed(order);

    assert_eq!(store.handle(&event, 1).await, Handled::Applied);
    assert_eq!(store.handle(&event, 2).await, Handled::Skipped, "the same event id, delivered again");
    // A replay of the order's history carries new event ids: the shipment id decides.
    assert_eq!(store.handle(&confirmed(order), 1).await, Handled::Skipped, "a replay under a new id");

    let found = shipments(store.pool(), order).await;
    assert_eq!(found, vec![(*domain::shipment_id(order).as_uuid(), "created".to_owned())]);
    assert_eq!(outbox(store.pool()).await, vec![("shipping.created".to_owned(), order.as_uuid().to_string(), 1)]);
    let tracking: String =
        sqlx::query_scalar("SELECT tracking_number FROM shipments").fetch_one(store.pool()).await.unwrap();
    assert!(tracking.starts_with("EP") && tracking.ends_with("ZZ") && tracking.len() == 13, "{tracking}");
}

#[tokio::test]
async fn a_cancellation_seen_before_the_confirmation_keeps_it_from_creating_a_shipment() {
    let db = database().await;
    let store = Store::on(db.pool());
    let order = OrderId::new_v7();

    assert_eq!(store.handle(&cancelled(order), 1).await, Handled::Skipped, "nothing to announce");
    assert_eq!(store.handle(&confirmed(order), 1).await, Handled::Skipped);

    assert!(shipments(store.pool(), order).await.is_empty());
    assert!(outbox(store.pool()).await.is_empty());
}

#[tokio::test]
async fn a_cancelled_order_cancels_its_shipment_once() {
    let db = database().await;
    let store = Store::on(db.pool());
    let order = OrderId::new_v7();
    store.handle(&confirmed(order), 1).await;
    let cancel = cancelled(order);

    assert_eq!(store.handle(&cancel, 1).await, Handled::Applied);
    assert_eq!(store.handle(&cancel, 2).await, Handled::Skipped);
    assert_eq!(store.handle(&cancelled(order), 1).await, Handled::Skipped, "a replay under a new id");

    assert_eq!(shipments(store.pool(), order).await[0].1, "cancelled");
    let key = order.as_uuid().to_string();
    assert_eq!(
        outbox(store.pool()).await,
        vec![("shipping.created".to_owned(), key.clone(), 1), ("shipping.cancelled".to_owned(), key, 2)]
    );
}

/// The whole service on a private NATS server, for the carrier's commands.
struct World {
    service: TestService,
    /// The order event handler on the service's database, to make shipments.
    store: Store,
}

impl World {
    async fn start() -> Self {
        let service = TestService::prepare(1, emporium_shipping::subscriptions(), emporium_shipping::store::migrate)
            .await
            .unwrap();
        let deps = service.dependencies(Arc::new(ManualClock::at(Utc::now())));
        let settings = ShippingSettings::from_source(|_| None).unwrap();
        service.spawn(|stop| emporium_shipping::run(settings, deps, stop));
        service.until_answering("shipping", ShipShipment { shipment_id: ShipmentId::new_v7() }).await.unwrap();
        Self { store: Store::on(service.pool()), service }
    }

    async fn ship(&self, shipment: ShipmentId, role: Role) -> Reply<ShipmentDetails> {
        let principal = Principal { user_id: UserId::new_v7(), role };
        let command = CommandEnvelope::new(None, Some(principal), ShipShipment { shipment_id: shipment });
        self.service.caller().call(&command, "test").await.unwrap()
    }

    async fn deliver(&self, shipment: ShipmentId) -> Reply<ShipmentDetails> {
        let principal = Principal { user_id: UserId::new_v7(), role: Role::Admin };
        let command = CommandEnvelope::new(None, Some(principal), DeliverShipment { shipment_id: shipment });
        self.service.caller().call(&command, "test").await.unwrap()
    }

    /// A shipment created for a new order; returns the order and the shipment.
    async fn shipment(&self) -> (OrderId, ShipmentId) {
        let order = OrderId::new_v7();
        assert_eq!(self.store.handle(&confirmed(order), 1).await, Handled::Applied);
        (order, domain::shipment_id(order))
    }
}

fn ok(reply: Reply<ShipmentDetails>) -> ShipmentDetails {
    match reply {
        Reply::Ok(shipment) => shipment,
        Reply::Error(error) => panic!("refused: {error}"),
    }
}

fn refused(reply: Reply<ShipmentDetails>) -> ErrorKind {
    match reply {
        Reply::Ok(shipment) => panic!("accepted: {shipment:?}"),
        Reply::Error(error) => error.kind,
    }
}

#[tokio::test]
async fn concurrent_ship_reports_announce_the_shipment_once() {
    let world = World::start().await;
    let (order, shipment) = world.shipment().await;

    let reports = (0..8).map(|_| world.ship(shipment, Role::Admin));
    let answers = futures::future::join_all(reports).await;
    for answer in answers {
        let shipped = ok(answer);
        assert_eq!((shipped.status, shipped.order_id), (ShipmentStatus::Shipped, order));
        assert!(shipped.shipped_at.is_some());
    }
    let shipped: Vec<_> =
        outbox(world.store.pool()).await.into_iter().filter(|(t, _, _)| t == "shipping.shipped").collect();
    assert_eq!(shipped, vec![("shipping.shipped".to_owned(), order.as_uuid().to_string(), 2)]);
}

#[tokio::test]
async fn the_carrier_moves_a_shipment_only_forward_and_only_as_an_admin() {
    let world = World::start().await;
    let (order, shipment) = world.shipment().await;

    assert_eq!(refused(world.deliver(shipment).await), ErrorKind::Conflict, "deliver before ship");
    assert_eq!(refused(world.ship(shipment, Role::Customer).await), ErrorKind::Forbidden);
    assert_eq!(refused(world.ship(shipment, Role::Seller).await), ErrorKind::Forbidden);
    let anonymous = CommandEnvelope::new(None, None, ShipShipment { shipment_id: shipment });
    let anonymous: Reply<ShipmentDetails> = world.service.caller().call(&anonymous, "test").await.unwrap();
    assert_eq!(refused(anonymous), ErrorKind::Unauthenticated);
    assert_eq!(refused(world.ship(ShipmentId::new_v7(), Role::Admin).await), ErrorKind::NotFound);

    assert_eq!(ok(world.ship(shipment, Role::Admin).await).status, ShipmentStatus::Shipped);
    let delivered = ok(world.deliver(shipment).await);
    assert_eq!(delivered.status, ShipmentStatus::Delivered);
    assert!(delivered.shipped_at.is_some() && delivered.delivered_at.is_some() && delivered.cancelled_at.is_none());
    assert_eq!(ok(world.deliver(shipment).await), delivered, "a retried report changes nothing");
    assert_eq!(refused(world.ship(shipment, Role::Admin).await), ErrorKind::Conflict, "ship after delivery");

    // The order's cancellation, crossing the shipment, leaves the parcel delivered.
    assert_eq!(world.store.handle(&cancelled(order), 1).await, Handled::Skipped);
    let key = order.as_uuid().to_string();
    assert_eq!(
        outbox(world.store.pool()).await,
        vec![
            ("shipping.created".to_owned(), key.clone(), 1),
            ("shipping.shipped".to_owned(), key.clone(), 2),
            ("shipping.delivered".to_owned(), key, 3),
        ]
    );
}

#[tokio::test]
async fn a_cancelled_shipment_cannot_be_shipped() {
    let world = World::start().await;
    let (order, shipment) = world.shipment().await;
    assert_eq!(world.store.handle(&cancelled(order), 1).await, Handled::Applied);

    assert_eq!(refused(world.ship(shipment, Role::Admin).await), ErrorKind::Conflict);
    assert_eq!(refused(world.deliver(shipment).await), ErrorKind::Conflict);
}
