//! The invariants check catches what it is there for: each test breaks one
//! invariant on purpose, in a quiet system (every service's database
//! migrated, NATS provisioned, no service running to mend it), and sees the
//! check name it, after first seeing the untouched system pass.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use emporium_nats::ManualClock;
use emporium_payment::domain::{Operation, idempotency_key};
use emporium_payment::provider::Provider;
use emporium_payment::simulator::{Simulator, SimulatorConfig};
use emporium_schemas::values::{Currency, Money, PaymentMethod};
use emporium_system::invariants::{Databases, DeadLetters, System, Violation};
use emporium_system::provisioned_nats;
use emporium_test_harness::{TestDatabase, TestNats};
use serde_json::json;
use uuid::Uuid;

/// A system with nothing in it and nothing running.
struct Quiet {
    system: System,
    simulator: Simulator,
    _nats: TestNats,
    _databases: Vec<TestDatabase>,
}

impl Quiet {
    async fn new() -> Self {
        let mut databases = Vec::new();
        for _ in 0..7 {
            databases.push(TestDatabase::create().await.unwrap());
        }
        let pool = |i: usize| databases[i].pool().clone();
        emporium_identity::store::migrate(&pool(0)).await.unwrap();
        emporium_catalog::store::migrate(&pool(1)).await.unwrap();
        emporium_inventory::store::migrate(&pool(2)).await.unwrap();
        emporium_order::store::migrate(&pool(3)).await.unwrap();
        emporium_payment::store::migrate(&pool(4)).await.unwrap();
        emporium_shipping::store::migrate(&pool(5)).await.unwrap();
        emporium_notification::store::migrate(&pool(6)).await.unwrap();
        let nats = provisioned_nats().await;
        let clock = Arc::new(ManualClock::at(Utc::now()));
        let config = SimulatorConfig { latency: Duration::ZERO, late_settle: Duration::from_secs(60) };
        let simulator = Simulator::new(config, clock);
        let system = System {
            databases: Databases {
                identity: pool(0),
                catalog: pool(1),
                inventory: pool(2),
                order: pool(3),
                payment: pool(4),
                shipping: pool(5),
                notification: pool(6),
            },
            jetstream: async_nats::jetstream::new(nats.client().clone()),
            provider: Arc::new(simulator.clone()),
        };
        let quiet = Self { system, simulator, _nats: nats, _databases: databases };
        assert_eq!(quiet.violations().await, [], "an untouched system breaks nothing");
        quiet
    }

    async fn violations(&self) -> Vec<Violation> {
        self.system.check(DeadLetters::None).await.unwrap()
    }
}

fn eur(amount: i64) -> Money {
    Money { amount: amount.try_into().unwrap(), currency: Currency::try_from("EUR".to_owned()).unwrap() }
}

#[tokio::test]
async fn an_order_left_pending_is_reported_and_never_settles() {
    let quiet = Quiet::new().await;
    let order = Uuid::now_v7();
    sqlx::query("INSERT INTO entity_state (kind, id, version, state) VALUES ('order', $1, 1, $2)")
        .bind(order.to_string())
        .bind(json!({ "status": "pending" }))
        .execute(&quiet.system.databases.order)
        .await
        .unwrap();

    let still = quiet.system.settle(Duration::from_millis(200), DeadLetters::None).await.unwrap();
    assert_eq!(still, [Violation::OrderNotFinal { order, status: "pending".into() }]);
}

#[tokio::test]
async fn an_unpublished_outbox_row_is_reported() {
    let quiet = Quiet::new().await;
    sqlx::query(
        "INSERT INTO outbox (id, type_name, schema, key, seq, payload)
         VALUES (gen_random_uuid(), 'payment.authorized', 1, 'some-order', 1, '\\x7b7d')",
    )
    .execute(&quiet.system.databases.payment)
    .await
    .unwrap();
    assert_eq!(quiet.violations().await, [Violation::OutboxNotDrained { service: "payment", unpublished: 1 }]);
}

#[tokio::test]
async fn stock_unexplained_by_movements_or_reservations_or_shown_otherwise_is_reported() {
    let quiet = Quiet::new().await;
    let product = Uuid::now_v7();
    let inventory = quiet.system.databases.inventory.clone();
    sqlx::query(
        "INSERT INTO stock (product_id, seller_id, on_hand, reserved, version, updated_at)
         VALUES ($1, gen_random_uuid(), 5, 2, 1, now())",
    )
    .bind(product)
    .execute(&inventory)
    .await
    .unwrap();
    // The catalog shows what the stock was set to, before anything was reserved.
    sqlx::query(
        "INSERT INTO products (id, seller_id, name, description, price_amount, currency, version, on_hand,
                               created_at, updated_at)
         VALUES ($1, gen_random_uuid(), 'Lamp', 'A lamp', 2500, 'EUR', 1, 5, now(), now())",
    )
    .bind(product)
    .execute(&quiet.system.databases.catalog)
    .await
    .unwrap();

    let violations = quiet.violations().await;
    assert_eq!(
        violations,
        [
            Violation::StockUnexplained { product, on_hand: 5, reserved: 2, moved_on_hand: 0, moved_reserved: 0 },
            Violation::ReservedNotHeld { product, reserved: 2, held: 0 },
            Violation::CatalogStockStale { product, catalog: (5, 0, 5), inventory: (5, 2) },
        ]
    );
}

#[tokio::test]
async fn a_second_capture_at_the_provider_is_reported() {
    let quiet = Quiet::new().await;
    let (payment, order) = (Uuid::now_v7(), Uuid::now_v7());
    let pool = quiet.system.databases.payment.clone();
    sqlx::query(
        "INSERT INTO payments (payment_id, order_id, status, version, customer_id, amount, currency, payment_method,
                               correlation_id, created_at, updated_at)
         VALUES ($1, $2, 'captured', 3, gen_random_uuid(), 2500, 'EUR', 'tok_visa', gen_random_uuid(), now(), now())",
    )
    .bind(payment)
    .bind(order)
    .execute(&pool)
    .await
    .unwrap();
    let calls = [(Operation::Authorize, 1), (Operation::Capture, 1), (Operation::Capture, 2)];
    for (operation, attempt) in calls {
        sqlx::query(
            "INSERT INTO provider_attempts (idempotency_key, payment_id, operation, attempt, status, amount, currency,
                                            correlation_id, causation_id, started_at)
             VALUES ($1, $2, $3, $4, 'succeeded', 2500, 'EUR', gen_random_uuid(), gen_random_uuid(), now())",
        )
        .bind(idempotency_key(&payment, operation, attempt))
        .bind(payment)
        .bind(operation.as_str())
        .bind(i32::try_from(attempt).unwrap())
        .execute(&pool)
        .await
        .unwrap();
    }
    // The simulator captures an authorization once; the second capture takes
    // another one, as if the payment had been authorized twice elsewhere.
    let simulator = &quiet.simulator;
    let visa = || PaymentMethod::try_from("tok_visa".to_owned()).unwrap();
    let first = simulator.authorize(idempotency_key(&payment, Operation::Authorize, 1), visa(), eur(2_500)).await;
    let second = simulator.authorize("elsewhere".to_owned(), visa(), eur(2_500)).await;
    for (attempt, authorization) in [(1, first), (2, second)] {
        let key = idempotency_key(&payment, Operation::Capture, attempt);
        simulator.capture(key, authorization.unwrap(), eur(2_500)).await.unwrap();
    }

    let violations = quiet.violations().await;
    assert!(violations.contains(&Violation::ChargedTwice { order, operation: "capture", times: 2 }), "{violations:#?}");
}

#[tokio::test]
async fn an_event_no_consumer_took_is_reported() {
    let quiet = Quiet::new().await;
    let subject = format!("evt.order.placed.v1.p00.{}", Uuid::now_v7());
    quiet.system.jetstream.publish(subject, "{}".into()).await.unwrap().await.unwrap();

    let violations = quiet.violations().await;
    assert!(!violations.is_empty());
    assert!(
        violations.iter().all(|v| matches!(v, Violation::ConsumerBehind { pending: 1, unacked: 0, .. })),
        "{violations:#?}"
    );
}

#[tokio::test]
async fn a_dead_letter_is_reported_unless_the_scenario_expects_it() {
    let quiet = Quiet::new().await;
    let origin = emporium_nats::dlq::Origin {
        consumer: "payment-inventory-p00",
        stream: "EVT_INVENTORY",
        stream_sequence: 7,
        subject: "evt.inventory.reserved.v1.p00.some-order",
        attempts: 5,
        reason: "malformed payload",
    };
    emporium_nats::dlq::dead_letter(&quiet.system.jetstream, &origin, None, "not json".into()).await.unwrap();

    let violations = quiet.violations().await;
    assert!(
        matches!(violations.as_slice(), [Violation::DeadLetters { found, .. }] if found.len() == 1),
        "{violations:#?}"
    );
    assert_eq!(quiet.system.check(DeadLetters::Exactly(1)).await.unwrap(), []);
}
