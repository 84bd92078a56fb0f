//! Inventory against real Postgres and a private NATS server, driven only by
//! events on its subjects and commands over request/reply: all-or-nothing
//! reservations under contention, no deadlocks, idempotence under
//! duplicates, replays and disorder, stock never set below reserved, and the
//! backstop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use emporium_inventory::InventorySettings;
use emporium_inventory::saga::Inventory;
use emporium_nats::{ManualClock, OutboxSignal, OutgoingEvent};
use emporium_schemas::commands::inventory::{ProductStock, SetStock};
use emporium_schemas::events::catalog::ProductCreated;
use emporium_schemas::events::order::{CancelReason, OrderCancelled, OrderConfirmed, OrderPlaced, OrderStatus};
use emporium_schemas::events::shipping::ShippingShipped;
use emporium_schemas::values::{OrderId, PaymentMethod, PricedLine, ProductId, Role, ShipmentId, UserId};
use emporium_schemas::{CommandEnvelope, ErrorKind, Principal, Reply};
use emporium_test_harness::events::event;
use emporium_test_harness::values::{address, euros, text};
use emporium_test_harness::{TestService, eventually};
use sqlx::PgPool;
use uuid::Uuid;

const PARTITIONS: u16 = 2;

struct World {
    service: TestService,
    seller: UserId,
}

impl World {
    async fn start() -> Self {
        let service =
            TestService::prepare(PARTITIONS, emporium_inventory::subscriptions(), emporium_inventory::store::migrate)
                .await
                .unwrap();
        let deps = service.dependencies(Arc::new(emporium_nats::SystemClock));
        let settings = InventorySettings::from_source(|_| None).unwrap();
        service.spawn(|stop| emporium_inventory::run(settings, deps, stop));
        Self { service, seller: UserId::new_v7() }
    }

    fn pool(&self) -> &PgPool {
        self.service.pool()
    }

    async fn publish(&self, events: &[OutgoingEvent]) {
        self.service.publisher().publish_all(events).await.unwrap();
    }

    async fn set_stock(&self, product: ProductId, on_hand: u32, as_role: Role) -> Reply<ProductStock> {
        let principal =
            Principal { user_id: if as_role == Role::Admin { UserId::new_v7() } else { self.seller }, role: as_role };
        let command = CommandEnvelope::new(None, Some(principal), SetStock { product_id: product, on_hand });
        self.service.caller().call(&command, "test").await.unwrap()
    }

    /// A product inventory learned from the catalog, with `on_hand` set by its seller.
    async fn product(&self, on_hand: u32) -> ProductId {
        let product = ProductId::new_v7();
        let created = ProductCreated {
            product_id: product,
            seller_id: self.seller,
            name: text("Teapot"),
            price: euros(1500),
            category_id: None,
        };
        self.publish(&[event(*product.as_uuid(), 1, created)]).await;
        let listed = eventually(Duration::from_secs(20), || async {
            sqlx::query("SELECT 1 FROM stock WHERE product_id = $1")
                .bind(product.as_uuid())
                .fetch_optional(self.pool())
                .await
                .unwrap()
                .is_some()
        })
        .await;
        assert!(listed, "the product never reached inventory");
        if on_hand > 0 {
            assert!(matches!(self.set_stock(product, on_hand, Role::Seller).await, Reply::Ok(_)));
        }
        product
    }

    /// (on_hand, reserved) of a product.
    async fn level(&self, product: ProductId) -> (i32, i32) {
        let row: (i32, i32) = sqlx::query_as("SELECT on_hand, reserved FROM stock WHERE product_id = $1")
            .bind(product.as_uuid())
            .fetch_one(self.pool())
            .await
            .unwrap();
        row
    }

    async fn status(&self, order: OrderId) -> Option<String> {
        sqlx::query_scalar("SELECT status FROM reservations WHERE order_id = $1")
            .bind(order.as_uuid())
            .fetch_optional(self.pool())
            .await
            .unwrap()
    }

    async fn wait_for_reservations(&self, count: i64) {
        let done = eventually(Duration::from_secs(60), || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM reservations").fetch_one(self.pool()).await.unwrap();
            n >= count
        })
        .await;
        assert!(done, "not every order was decided");
    }

    async fn outbox_count(&self, type_name: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE type_name = $1")
            .bind(type_name)
            .fetch_one(self.pool())
            .await
            .unwrap()
    }
}

fn placed(order: OrderId, lines: &[(ProductId, u32)]) -> OrderPlaced {
    let seller = UserId::new_v7();
    let lines: Vec<PricedLine> = lines
        .iter()
        .map(|(product, quantity)| PricedLine {
            product_id: *product,
            seller_id: seller,
            quantity: (*quantity).try_into().unwrap(),
            unit_price: euros(100),
        })
        .collect();
    OrderPlaced {
        order_id: order,
        customer_id: UserId::new_v7(),
        total: euros(100),
        lines: lines.try_into().unwrap(),
        shipping_address: address(),
        payment_method: PaymentMethod::try_from("tok_visa".to_owned()).unwrap(),
        deadline_at: Utc::now() + chrono::TimeDelta::seconds(30),
    }
}

fn place(order: OrderId, lines: &[(ProductId, u32)]) -> OutgoingEvent {
    event(*order.as_uuid(), 1, placed(order, lines))
}

fn cancel(order: OrderId, seq: u64) -> OutgoingEvent {
    let cancelled = OrderCancelled {
        order_id: order,
        customer_id: UserId::new_v7(),
        reason: CancelReason::CustomerRequest,
        previous_status: OrderStatus::Reserved,
    };
    event(*order.as_uuid(), seq, cancelled)
}

#[tokio::test]
async fn two_hundred_orders_for_fifty_units_reserve_exactly_fifty() {
    let world = World::start().await;
    let teapot = world.product(50).await;
    let orders: Vec<OutgoingEvent> = (0..200).map(|_| place(OrderId::new_v7(), &[(teapot, 1)])).collect();
    world.publish(&orders).await;
    world.wait_for_reservations(200).await;

    assert_eq!(world.level(teapot).await, (50, 50));
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM reservations WHERE status = 'held'")
        .fetch_one(world.pool())
        .await
        .unwrap();
    assert_eq!(held, 50);
    assert_eq!(world.outbox_count("inventory.reserved").await, 50);
    assert_eq!(world.outbox_count("inventory.rejected").await, 150);
    // A refusal names the short line and what was left of it.
    let short: serde_json::Value = sqlx::query_scalar(
        "SELECT convert_from(payload, 'UTF8')::jsonb->'data'->'short_lines'->0 FROM outbox WHERE type_name = 'inventory.rejected' LIMIT 1",
    )
    .fetch_one(world.pool())
    .await
    .unwrap();
    assert_eq!(short, serde_json::json!({ "product_id": teapot.to_string(), "requested": 1, "available": 0 }));
    let movements: i64 = sqlx::query_scalar("SELECT count(*) FROM movements WHERE reason = 'reserved'")
        .fetch_one(world.pool())
        .await
        .unwrap();
    assert_eq!(movements, 50);
}

#[tokio::test]
async fn orders_over_the_same_products_in_opposite_orders_never_deadlock() {
    let world = World::start().await;
    let mut products = Vec::new();
    for _ in 0..6 {
        products.push(world.product(1_000).await);
    }
    let deadlocks = || async {
        let n: i64 = sqlx::query_scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            .fetch_one(world.pool())
            .await
            .unwrap();
        n
    };
    let before = deadlocks().await;
    let orders: Vec<OutgoingEvent> = (0..120)
        .map(|i| {
            let mut lines: Vec<(ProductId, u32)> = products.iter().map(|p| (*p, 2)).collect();
            if i % 2 == 1 {
                lines.reverse();
            }
            place(OrderId::new_v7(), &lines)
        })
        .collect();
    world.publish(&orders).await;
    world.wait_for_reservations(120).await;
    for product in &products {
        assert_eq!(world.level(*product).await, (1_000, 240));
    }
    // pg_stat counters are flushed lazily; a deadlock would also have shown as a retried, slower run.
    assert_eq!(deadlocks().await, before, "Postgres detected a deadlock");
}

#[tokio::test]
async fn duplicates_replays_and_disorder_change_nothing_twice() {
    let world = World::start().await;
    let teapot = world.product(10).await;

    // The same placement three times: once, its exact duplicate, and a replay under a fresh id.
    let order = OrderId::new_v7();
    let first = place(order, &[(teapot, 3)]);
    world.publish(&[first.clone(), first, place(order, &[(teapot, 3)])]).await;
    assert!(
        eventually(Duration::from_secs(20), || async { world.status(order).await.as_deref() == Some("held") }).await
    );
    // Then its cancellation, twice, and the placement replayed after it.
    world.publish(&[cancel(order, 2), cancel(order, 2), place(order, &[(teapot, 3)])]).await;
    assert!(
        eventually(Duration::from_secs(20), || async { world.status(order).await.as_deref() == Some("released") })
            .await
    );

    // A cancellation seen before its placement: the placement reserves nothing.
    let early = OrderId::new_v7();
    world.publish(&[cancel(early, 2), place(early, &[(teapot, 1)])]).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            world.status(early).await.as_deref() == Some("cancelled_unseen")
        })
        .await
    );

    // A shipped order: its hold becomes a deduction, once; a late cancellation undoes nothing.
    let shipped = OrderId::new_v7();
    world.publish(&[place(shipped, &[(teapot, 4)])]).await;
    assert!(
        eventually(Duration::from_secs(20), || async { world.status(shipped).await.as_deref() == Some("held") }).await
    );
    let parcel =
        ShippingShipped { order_id: shipped, shipment_id: ShipmentId::new_v7(), tracking_number: text("TRK1") };
    let ship = event(*shipped.as_uuid(), 2, parcel.clone());
    world.publish(&[ship.clone(), event(*shipped.as_uuid(), 2, parcel)]).await;
    assert!(
        eventually(Duration::from_secs(20), || async { world.status(shipped).await.as_deref() == Some("shipped") })
            .await
    );
    // (Shipping and order events travel on different streams, so only after
    // the shipment is applied is this cancellation certainly the later one.)
    world.publish(&[cancel(shipped, 4)]).await;

    // Let every consumer settle, then count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(world.level(teapot).await, (6, 0), "10 on hand - 4 shipped; nothing held");
    assert_eq!(world.outbox_count("inventory.reserved").await, 2);
    assert_eq!(world.outbox_count("inventory.released").await, 1);
    let movements: Vec<(String, i64)> =
        sqlx::query_as("SELECT reason, count(*) FROM movements GROUP BY reason ORDER BY reason")
            .fetch_all(world.pool())
            .await
            .unwrap();
    assert_eq!(movements, [("released".into(), 1), ("reserved".into(), 2), ("set".into(), 1), ("shipped".into(), 1)]);
}

#[tokio::test]
async fn stock_is_never_set_below_what_orders_hold() {
    let world = World::start().await;
    let teapot = world.product(5).await;
    let order = OrderId::new_v7();
    world.publish(&[place(order, &[(teapot, 3)])]).await;
    assert!(
        eventually(Duration::from_secs(20), || async { world.status(order).await.as_deref() == Some("held") }).await
    );

    match world.set_stock(teapot, 2, Role::Seller).await {
        Reply::Error(error) => assert_eq!(error.kind, ErrorKind::Conflict, "{error:?}"),
        Reply::Ok(stock) => panic!("set below reserved: {stock:?}"),
    }
    match world.set_stock(teapot, 3, Role::Admin).await {
        Reply::Ok(stock) => assert_eq!((stock.stock.on_hand, stock.stock.reserved, stock.stock.available), (3, 3, 0)),
        Reply::Error(error) => panic!("{error:?}"),
    }
    // Every change is a movement naming who, why and by how much.
    let set: Vec<(i32, Option<Uuid>)> =
        sqlx::query_as("SELECT on_hand_delta, actor_id FROM movements WHERE reason = 'set' ORDER BY at")
            .fetch_all(world.pool())
            .await
            .unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(set[0], (5, Some(*world.seller.as_uuid())));
    assert_eq!(set[1].0, -2);
    assert_ne!(set[1].1, Some(*world.seller.as_uuid()), "the admin is recorded as the actor");
}

#[tokio::test]
async fn the_backstop_releases_only_holds_never_confirmed() {
    let world = World::start().await;
    let teapot = world.product(10).await;
    let (forgotten, confirmed) = (OrderId::new_v7(), OrderId::new_v7());
    world.publish(&[place(forgotten, &[(teapot, 2)]), place(confirmed, &[(teapot, 3)])]).await;
    world.wait_for_reservations(2).await;
    let confirmation = OrderConfirmed {
        order_id: confirmed,
        customer_id: UserId::new_v7(),
        lines: placed(confirmed, &[(teapot, 3)]).lines,
        total: euros(300),
        shipping_address: placed(confirmed, &[(teapot, 3)]).shipping_address,
    };
    world.publish(&[event(*confirmed.as_uuid(), 3, confirmation)]).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            sqlx::query_scalar::<_, bool>("SELECT confirmed FROM reservations WHERE order_id = $1")
                .bind(confirmed.as_uuid())
                .fetch_one(world.pool())
                .await
                .unwrap()
        })
        .await
    );

    // The backstop's own clock, eleven deadlines (and past the floor) later.
    let clock = Arc::new(ManualClock::at(Utc::now()));
    let backstop = Inventory::new(world.pool().clone(), OutboxSignal::default(), clock.clone(), Duration::ZERO);
    assert_eq!(backstop.release_expired().await.unwrap(), 0, "nothing is due yet");
    clock.advance(Duration::from_secs(11 * 60));
    assert_eq!(backstop.release_expired().await.unwrap(), 1);
    assert_eq!(backstop.release_expired().await.unwrap(), 0, "released once");
    assert_eq!(world.status(forgotten).await.as_deref(), Some("released"));
    assert_eq!(world.status(confirmed).await.as_deref(), Some("held"));
    assert_eq!(world.level(teapot).await, (10, 3));
    let reason: String = sqlx::query_scalar("SELECT convert_from(payload, 'UTF8')::jsonb->'data'->>'reason' FROM outbox WHERE type_name = 'inventory.released'")
        .fetch_one(world.pool())
        .await
        .unwrap();
    assert_eq!(reason, "expired");
}
