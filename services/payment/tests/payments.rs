//! Payment against real Postgres and a private NATS server, driven only by
//! the upstream events on their subjects (and, for recovery, its step run
//! directly): authorization and capture, declines, flaky and exhausted
//! captures, voids and refunds, a late authorization voided, duplicates,
//! disorder, a crash between the attempt's commit and the call, a
//! cancellation racing an authorization in flight, a capture answered with
//! a 5xx after the provider acted, a void refused for good, and recovery
//! under many pending calls. Every test reconciles the ledger with the
//! simulated provider's records.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use emporium_nats::{Acquire, Lease, Leases, ManualClock, OutboxSignal, OutgoingEvent};
use emporium_payment::domain::Status;
use emporium_payment::journal::Account;
use emporium_payment::provider::{Decline, Provider, ProviderError, ProviderRecord, ProviderRef, RecordState};
use emporium_payment::store::{self, NewAttempt, PaymentChange, Request};
use emporium_payment::{Dependencies, PaymentSettings, Payments, Simulator, SimulatorConfig, ledger};
use emporium_schemas::Origin;
use emporium_schemas::events::inventory::InventoryReserved;
use emporium_schemas::events::order::{CancelReason, OrderCancelled, OrderConfirmed, OrderPlaced, OrderStatus};
use emporium_schemas::values::{Money, OrderId, PaymentMethod, PricedLine, ProductId, ProductQuantity, UserId};
use emporium_test_harness::events::event;
use emporium_test_harness::values::{address, euros};
use emporium_test_harness::{TestDatabase, TestService, eventually};
use futures::StreamExt;
use futures::future::BoxFuture;
use sqlx::PgPool;
use uuid::Uuid;

/// One partition, so each context has one durable consumer to watch.
const PARTITIONS: u16 = 1;
const WAIT: Duration = Duration::from_secs(30);

/// A `payment.*` event seen on the wire.
#[derive(Debug, Clone)]
struct Seen {
    key: String,
    type_name: String,
    seq: u64,
    data: serde_json::Value,
}

struct World {
    service: TestService,
    clock: ManualClock,
    simulator: Simulator,
    settings: PaymentSettings,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Held by tests that drive recovery themselves, so the service never runs it.
    _recovery_lease: Option<Lease>,
}

/// Who runs recovery steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovery {
    /// The service, every `recovery_every`.
    Service,
    /// The test, through its own engine (the service is kept from leading it).
    Test,
}

/// Settings for tests: fast recovery ticks and no capture backoff (the
/// clock stands still unless a test moves it, so a backoff would never pass).
fn test_settings() -> PaymentSettings {
    let mut settings = PaymentSettings::from_source(|_| None).unwrap();
    settings.recovery_every = Duration::from_millis(50);
    settings.retry_backoff = Duration::ZERO;
    settings.provider_latency = Duration::from_millis(5);
    settings
}

impl World {
    async fn start() -> Self {
        Self::with(Recovery::Service, |_| {}).await
    }

    async fn with(recovery: Recovery, adjust: impl FnOnce(&mut PaymentSettings)) -> Self {
        Self::with_provider(recovery, adjust, |simulator| Arc::new(simulator)).await
    }

    /// A world whose service reaches the simulator through `provider` (a
    /// test's recovery engine reaches it directly).
    async fn with_provider(
        recovery: Recovery,
        adjust: impl FnOnce(&mut PaymentSettings),
        provider: impl FnOnce(Simulator) -> Arc<dyn Provider>,
    ) -> Self {
        let mut settings = test_settings();
        adjust(&mut settings);
        let service =
            TestService::prepare(PARTITIONS, emporium_payment::subscriptions(), store::migrate).await.unwrap();

        let seen = Arc::new(Mutex::new(Vec::new()));
        let client = service.nats().client();
        let mut subscriber = client.subscribe("evt.payment.>").await.unwrap();
        client.flush().await.unwrap();
        tokio::spawn({
            let seen = seen.clone();
            async move {
                while let Some(message) = subscriber.next().await {
                    let envelope: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
                    seen.lock().unwrap().push(Seen {
                        key: envelope["key"].as_str().unwrap().to_owned(),
                        type_name: envelope["type"].as_str().unwrap().to_owned(),
                        seq: envelope["seq"].as_u64().unwrap(),
                        data: envelope["data"].clone(),
                    });
                }
            }
        });

        let clock = ManualClock::at(Utc::now());
        let recovery_lease = match recovery {
            Recovery::Service => None,
            Recovery::Test => {
                let locks = service.jetstream().get_key_value(emporium_nats::topology::LOCKS.name).await.unwrap();
                let leases = Leases::new(locks, "the test", Arc::new(clock.clone()));
                match leases.acquire(emporium_payment::RECOVERY_LEASE, Duration::from_secs(86_400)).await.unwrap() {
                    Acquire::Acquired(lease) => Some(lease),
                    Acquire::HeldBy { holder, .. } => panic!("the recovery lease is held by {holder}"),
                }
            }
        };
        let simulator = Simulator::new(SimulatorConfig::from(&settings), Arc::new(clock.clone()));
        let deps = Dependencies {
            pool: service.pool().clone(),
            nats: client.clone(),
            partitions: PARTITIONS,
            clock: Arc::new(clock.clone()),
            provider: provider(simulator.clone()),
        };
        service.spawn(|stop| emporium_payment::run(settings.clone(), deps, stop));
        Self { service, clock, simulator, settings, seen, _recovery_lease: recovery_lease }
    }

    fn pool(&self) -> &PgPool {
        self.service.pool()
    }

    async fn publish(&self, events: &[OutgoingEvent]) {
        self.service.publisher().publish_all(events).await.unwrap();
    }

    /// Publishes `event` under `message_id` (JetStream keeps a second copy of
    /// an event only under another id); returns its stream sequence.
    async fn publish_as(&self, event: &OutgoingEvent, message_id: &str) -> u64 {
        self.service.publish_as(event, message_id).await.unwrap().sequence
    }

    /// Publishes `event` under its own message id and waits until payment's
    /// consumer has acked it (an event that changes nothing leaves nothing else to wait for).
    async fn deliver(&self, event: &OutgoingEvent) {
        let sequence = self.publish_as(event, &event.message_id()).await;
        self.wait_consumed(event, sequence).await;
    }

    /// Waits until payment's consumer of `event`'s stream has acked everything up to stream sequence `sequence`.
    async fn wait_consumed(&self, event: &OutgoingEvent, sequence: u64) {
        self.service.until_consumed(emporium_payment::SERVICE, event, sequence).await.unwrap();
    }

    /// The `payment.*` events of `order` seen so far, in order.
    fn events(&self, order: OrderId) -> Vec<Seen> {
        let key = order.to_string();
        self.seen.lock().unwrap().iter().filter(|seen| seen.key == key).cloned().collect()
    }

    fn types(&self, order: OrderId) -> Vec<String> {
        self.events(order).into_iter().map(|seen| seen.type_name).collect()
    }

    /// Waits for `order`'s `type_name` event and returns it.
    async fn wait_for(&self, order: OrderId, type_name: &str) -> Seen {
        let arrived = eventually(WAIT, || async { self.events(order).iter().any(|s| s.type_name == type_name) }).await;
        assert!(arrived, "no {type_name} for {order}; saw {:?}", self.types(order));
        self.events(order).into_iter().find(|s| s.type_name == type_name).unwrap()
    }

    /// Places `placed` with its stock held, and waits for its `payment.authorized`.
    async fn authorized(&self, placed: &OrderPlaced) -> Seen {
        self.publish(&[place(placed), reserve(placed)]).await;
        self.wait_for(placed.order_id, "payment.authorized").await
    }

    async fn payment(&self, order: OrderId) -> Option<store::PaymentRow> {
        store::payment_of(self.pool(), order).await.unwrap()
    }

    async fn wait_status(&self, order: OrderId, status: Status) {
        let reached =
            eventually(WAIT, || async { self.payment(order).await.is_some_and(|p| p.status == status) }).await;
        assert!(reached, "{order} never became {status:?}: {:?}", self.payment(order).await.map(|p| p.status));
    }

    /// A payments engine of the test's own over the service's database and
    /// provider, to drive recovery a step at a time.
    fn engine(&self) -> Arc<Payments> {
        Payments::new(
            self.pool().clone(),
            OutboxSignal::default(),
            Arc::new(self.clock.clone()),
            Arc::new(self.simulator.clone()),
            &self.settings,
        )
    }

    /// The provider's records for `order`'s payment (by its attempts' keys).
    async fn provider_records(&self, order: OrderId) -> Vec<emporium_payment::provider::ProviderRecord> {
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT a.idempotency_key FROM provider_attempts a JOIN payments p USING (payment_id) WHERE p.order_id = $1",
        )
        .bind(order.as_uuid())
        .fetch_all(self.pool())
        .await
        .unwrap();
        self.simulator.records().into_iter().filter(|r| keys.contains(&r.key)).collect()
    }

    /// (operation, attempt number, status) of every attempt of `order`'s payment.
    async fn attempts(&self, order: OrderId) -> Vec<(String, i32, String)> {
        sqlx::query_as(
            "SELECT a.operation, a.attempt, a.status FROM provider_attempts a JOIN payments p USING (payment_id)
             WHERE p.order_id = $1 ORDER BY a.started_at, a.attempt",
        )
        .bind(order.as_uuid())
        .fetch_all(self.pool())
        .await
        .unwrap()
    }

    /// `order`'s ledger balances, zero ones left out.
    async fn balances(&self, order: OrderId) -> BTreeMap<(Account, Option<Uuid>), i64> {
        ledger::order_balances(self.pool(), order)
            .await
            .unwrap()
            .into_iter()
            .filter(|b| b.amount != 0)
            .map(|b| ((b.account, b.party), b.amount))
            .collect()
    }

    async fn entry_kinds(&self, order: OrderId) -> Vec<String> {
        sqlx::query_scalar("SELECT kind FROM journal_entries WHERE order_id = $1 ORDER BY id")
            .bind(order.as_uuid())
            .fetch_all(self.pool())
            .await
            .unwrap()
    }

    async fn assert_reconciled(&self) {
        let mismatches = emporium_payment::reconcile(self.pool(), &self.simulator.records()).await.unwrap();
        assert!(mismatches.is_empty(), "the ledger and the provider disagree: {mismatches:#?}");
    }

    /// `order`'s payment stayed cancelled and no call was ever made for it.
    async fn assert_never_charged(&self, order: OrderId) {
        assert_eq!(self.payment(order).await.unwrap().status, Status::Cancelled);
        assert!(self.attempts(order).await.is_empty());
        assert!(self.simulator.records().is_empty(), "the provider never heard of it");
        self.assert_reconciled().await;
    }
}

/// An attempt as [`World::attempts`] lists it.
fn attempt(operation: &str, number: i32, status: &str) -> (String, i32, String) {
    (operation.to_owned(), number, status.to_owned())
}

/// Alice's 2 × 1,005 and Bob's 1 × 999, captured: the sale split between
/// them (less 10 % commission, rounded down per line) and the platform.
fn split_sale(alice: UserId, bob: UserId) -> BTreeMap<(Account, Option<Uuid>), i64> {
    BTreeMap::from([
        ((Account::ProviderClearing, None), 3_009),
        ((Account::MerchantPayable, Some(*alice.as_uuid())), -1_809),
        ((Account::MerchantPayable, Some(*bob.as_uuid())), -900),
        ((Account::PlatformRevenue, None), -300),
    ])
}

/// An order paid with `token`: (seller, quantity, unit price) per line; the total is their sum.
fn order_placed(order: OrderId, token: &str, lines: &[(UserId, u32, i64)]) -> OrderPlaced {
    let priced: Vec<PricedLine> = lines
        .iter()
        .map(|(seller, quantity, price)| PricedLine {
            product_id: ProductId::new_v7(),
            seller_id: *seller,
            quantity: (*quantity).try_into().unwrap(),
            unit_price: euros(*price),
        })
        .collect();
    let total = lines.iter().map(|(_, quantity, price)| i64::from(*quantity) * price).sum();
    OrderPlaced {
        order_id: order,
        customer_id: UserId::new_v7(),
        lines: priced.try_into().unwrap(),
        total: euros(total),
        shipping_address: address(),
        payment_method: PaymentMethod::try_from(token.to_owned()).unwrap(),
        deadline_at: Utc::now() + chrono::TimeDelta::seconds(30),
    }
}

/// An order of one line of 1,000 from a fresh seller.
fn simple_order(order: OrderId, token: &str) -> OrderPlaced {
    order_placed(order, token, &[(UserId::new_v7(), 1, 1_000)])
}

fn place(placed: &OrderPlaced) -> OutgoingEvent {
    event(*placed.order_id.as_uuid(), 1, placed.clone())
}

fn reserve(placed: &OrderPlaced) -> OutgoingEvent {
    let reserved = InventoryReserved {
        order_id: placed.order_id,
        lines: placed.lines.map(|l| ProductQuantity { product_id: l.product_id, quantity: l.quantity }),
        expires_at: Utc::now() + chrono::TimeDelta::minutes(10),
    };
    event(*placed.order_id.as_uuid(), 1, reserved)
}

fn confirm(placed: &OrderPlaced) -> OutgoingEvent {
    let confirmed = OrderConfirmed {
        order_id: placed.order_id,
        customer_id: placed.customer_id,
        lines: placed.lines.clone(),
        total: placed.total.clone(),
        shipping_address: placed.shipping_address.clone(),
    };
    event(*placed.order_id.as_uuid(), 3, confirmed)
}

fn cancel(placed: &OrderPlaced, seq: u64, previous_status: OrderStatus) -> OutgoingEvent {
    let cancelled = OrderCancelled {
        order_id: placed.order_id,
        customer_id: placed.customer_id,
        reason: CancelReason::CustomerRequest,
        previous_status,
    };
    event(*placed.order_id.as_uuid(), seq, cancelled)
}

#[tokio::test]
async fn a_reserved_order_is_authorized_then_captured_and_the_ledger_splits_the_sale() {
    let world = World::start().await;
    let (alice, bob) = (UserId::new_v7(), UserId::new_v7());
    let order = OrderId::new_v7();
    // Alice: 2 × 1,005 (commission 201), Bob: 1 × 999 (commission 99, rounded down).
    let placed = order_placed(order, "tok_visa", &[(alice, 2, 1_005), (bob, 1, 999)]);

    let authorized = world.authorized(&placed).await;
    assert_eq!(authorized.seq, 1);
    assert_eq!(authorized.data["amount"], serde_json::json!({ "amount": 3_009, "currency": "EUR" }));
    let payment = world.payment(order).await.unwrap();
    assert_eq!(authorized.data["payment_id"], payment.payment_id.to_string());
    assert!(world.entry_kinds(order).await.is_empty(), "an authorization moves no money");

    world.publish(&[confirm(&placed)]).await;
    let captured = world.wait_for(order, "payment.captured").await;
    assert_eq!(captured.seq, 2);
    world.wait_status(order, Status::Captured).await;
    assert_eq!(world.types(order), ["payment.authorized", "payment.captured"]);

    let balances = world.balances(order).await;
    assert_eq!(balances, split_sale(alice, bob), "the customer nets to zero; the sale is split");
    assert_eq!(world.entry_kinds(order).await, ["charge", "sale"]);
    let operations: Vec<_> = world.provider_records(order).await.into_iter().map(|r| (r.operation, r.state)).collect();
    assert_eq!(operations.len(), 2, "one authorization, one capture: {operations:?}");
    world.assert_reconciled().await;
}

#[tokio::test]
async fn the_balances_of_every_account_show_a_captured_sale_split_and_the_customer_settled() {
    let world = World::start().await;
    let (alice, bob) = (UserId::new_v7(), UserId::new_v7());
    let order = OrderId::new_v7();
    let placed = order_placed(order, "tok_visa", &[(alice, 2, 1_005), (bob, 1, 999)]);
    world.publish(&[place(&placed), reserve(&placed)]).await;
    world.wait_status(order, Status::Authorized).await;
    world.publish(&[confirm(&placed)]).await;
    world.wait_status(order, Status::Captured).await;

    // The test's database holds this order's entries only: the whole journal is this order.
    let balances: Vec<_> = ledger::account_balances(world.pool()).await.unwrap();
    let customer: i64 = balances.iter().filter(|b| b.account == Account::Customer).map(|b| b.amount).sum();
    assert_eq!(customer, 0, "what the customer paid is what they bought");
    let balances: BTreeMap<_, _> =
        balances.into_iter().filter(|b| b.amount != 0).map(|b| ((b.account, b.party), b.amount)).collect();
    assert_eq!(balances, split_sale(alice, bob));
    assert_eq!(balances, world.balances(order).await, "per account and per order agree");
    world.assert_reconciled().await;
}

#[tokio::test]
async fn a_declined_card_fails_the_payment_with_its_reason() {
    let world = World::start().await;
    let (declined, broke) = (OrderId::new_v7(), OrderId::new_v7());
    let (first, second) = (simple_order(declined, "tok_declined"), simple_order(broke, "tok_insufficient_funds"));
    world.publish(&[place(&first), reserve(&first), place(&second), reserve(&second)]).await;

    assert_eq!(world.wait_for(declined, "payment.failed").await.data["reason"], "declined");
    assert_eq!(world.wait_for(broke, "payment.failed").await.data["reason"], "insufficient_funds");
    world.wait_status(declined, Status::Failed).await;
    world.wait_status(broke, Status::Failed).await;
    assert!(world.entry_kinds(declined).await.is_empty());
    assert_eq!(world.attempts(broke).await, [attempt("authorize", 1, "declined")]);
    world.assert_reconciled().await;
}

#[tokio::test]
async fn a_flaky_capture_fails_twice_then_succeeds() {
    let world = World::start().await;
    let order = OrderId::new_v7();
    let placed = simple_order(order, "tok_capture_flaky");
    world.authorized(&placed).await;
    world.publish(&[confirm(&placed)]).await;

    world.wait_for(order, "payment.captured").await;
    world.wait_status(order, Status::Captured).await;
    let captures: Vec<_> = world.attempts(order).await.into_iter().filter(|(op, _, _)| op == "capture").collect();
    assert_eq!(
        captures,
        [attempt("capture", 1, "failed"), attempt("capture", 2, "failed"), attempt("capture", 3, "succeeded")]
    );
    let at_provider: Vec<_> = world.provider_records(order).await.into_iter().map(|r| r.state).collect();
    assert_eq!(at_provider.iter().filter(|s| **s == RecordState::Succeeded).count(), 2, "{at_provider:?}");
    assert_eq!(world.types(order), ["payment.authorized", "payment.captured"]);
    assert_eq!(world.entry_kinds(order).await, ["charge", "sale"]);
    world.assert_reconciled().await;
}

#[tokio::test]
async fn a_capture_out_of_attempts_fails_is_counted_and_its_authorization_can_still_be_voided() {
    let world = World::with(Recovery::Service, |settings| settings.capture_attempts = 2).await;
    let counter = emporium_platform::counters::counter("payment_capture_failed_total", "captures given up");
    let before = counter.get();
    let order = OrderId::new_v7();
    let placed = simple_order(order, "tok_capture_flaky");
    world.authorized(&placed).await;
    world.publish(&[confirm(&placed)]).await;

    let failed = world.wait_for(order, "payment.capture_failed").await;
    assert_eq!(failed.data["attempts"], 2);
    assert_eq!(failed.seq, 2);
    world.wait_status(order, Status::CaptureFailed).await;
    assert!(counter.get() > before, "payment_capture_failed_total was not counted");
    assert!(world.entry_kinds(order).await.is_empty(), "nothing was captured, nothing is booked");
    world.assert_reconciled().await;

    world.publish(&[cancel(&placed, 4, OrderStatus::Confirmed)]).await;
    world.wait_for(order, "payment.voided").await;
    world.wait_status(order, Status::Voided).await;
    world.assert_reconciled().await;
}

#[tokio::test]
async fn cancelling_an_authorized_payment_voids_it() {
    let world = World::start().await;
    let order = OrderId::new_v7();
    let placed = simple_order(order, "tok_visa");
    world.authorized(&placed).await;
    world.wait_status(order, Status::Authorized).await;

    world.publish(&[cancel(&placed, 3, OrderStatus::Reserved)]).await;
    let voided = world.wait_for(order, "payment.voided").await;
    assert_eq!(voided.seq, 2);
    world.wait_status(order, Status::Voided).await;
    assert_eq!(world.types(order), ["payment.authorized", "payment.voided"]);
    assert!(world.entry_kinds(order).await.is_empty(), "a void moves no money");
    world.assert_reconciled().await;
}

#[tokio::test]
async fn cancelling_a_captured_payment_refunds_it_and_the_ledger_nets_to_zero() {
    let world = World::start().await;
    let order = OrderId::new_v7();
    let placed = order_placed(order, "tok_visa", &[(UserId::new_v7(), 3, 700), (UserId::new_v7(), 1, 55)]);
    world.authorized(&placed).await;
    world.publish(&[confirm(&placed)]).await;
    world.wait_for(order, "payment.captured").await;
    world.wait_status(order, Status::Captured).await;
    assert!(!world.balances(order).await.is_empty());

    world.publish(&[cancel(&placed, 4, OrderStatus::Confirmed)]).await;
    let refunded = world.wait_for(order, "payment.refunded").await;
    assert_eq!(refunded.seq, 3);
    world.wait_status(order, Status::Refunded).await;
    assert_eq!(world.types(order), ["payment.authorized", "payment.captured", "payment.refunded"]);
    assert_eq!(world.entry_kinds(order).await, ["charge", "sale", "unsale", "refund"]);
    assert_eq!(world.balances(order).await, BTreeMap::new(), "every account nets to zero for the order");
    world.assert_reconciled().await;
}

#[tokio::test]
async fn a_timed_out_authorization_of_a_cancelled_order_is_voided_once_the_provider_settles_it() {
    let world = World::with(Recovery::Test, |settings| settings.provider_timeout = Duration::from_millis(300)).await;
    let recovery = world.engine();
    let order = OrderId::new_v7();
    let placed = simple_order(order, "tok_timeout");
    world.publish(&[place(&placed), reserve(&placed)]).await;

    let unknown =
        eventually(WAIT, || async { world.attempts(order).await == [attempt("authorize", 1, "unknown")] }).await;
    assert!(unknown, "the call never timed out: {:?}", world.attempts(order).await);
    let still_pending = recovery.recover_once().await.unwrap();
    assert_eq!(still_pending.pending, 1, "the provider has it but has not decided");
    assert_eq!(world.payment(order).await.unwrap().status, Status::Authorizing);

    world.publish(&[cancel(&placed, 2, OrderStatus::Pending)]).await;
    let remembered =
        eventually(WAIT, || async { world.payment(order).await.is_some_and(|p| p.cancel_requested) }).await;
    assert!(remembered, "the cancellation was not remembered");

    world.clock.advance(Duration::from_secs(61));
    let recovered = recovery.recover_once().await.unwrap();
    assert_eq!(recovered.settled, 1, "{recovered:?}");
    assert_eq!(world.payment(order).await.unwrap().status, Status::Voided, "voided as soon as it was known");
    world.wait_for(order, "payment.voided").await;
    assert_eq!(world.types(order), ["payment.authorized", "payment.voided"]);
    let at_provider: Vec<_> =
        world.provider_records(order).await.into_iter().map(|r| (r.operation.as_str(), r.state)).collect();
    assert_eq!(at_provider, [("authorize", RecordState::Succeeded), ("void", RecordState::Succeeded)]);
    world.assert_reconciled().await;
}

#[tokio::test]
async fn a_duplicated_or_replayed_event_changes_nothing() {
    let world = World::start().await;
    let order = OrderId::new_v7();
    let placed = simple_order(order, "tok_visa");
    let (placement, reservation) = (place(&placed), reserve(&placed));
    world.publish(&[placement.clone(), reservation.clone()]).await;
    world.wait_for(order, "payment.authorized").await;
    world.wait_status(order, Status::Authorized).await;

    // The same envelopes again (stored a second time under other message ids),
    // and the reservation replayed under a fresh envelope id.
    let placed_again = world.publish_as(&placement, &format!("{}.again", placement.message_id())).await;
    world.publish_as(&reservation, &format!("{}.again", reservation.message_id())).await;
    let replay = reserve(&placed);
    let replayed = world.publish_as(&replay, &replay.message_id()).await;
    world.wait_consumed(&placement, placed_again).await;
    world.wait_consumed(&replay, replayed).await;

    assert_eq!(world.attempts(order).await, [attempt("authorize", 1, "succeeded")]);
    assert_eq!(world.provider_records(order).await.len(), 1);
    let payment = world.payment(order).await.unwrap();
    assert_eq!((payment.status, payment.version), (Status::Authorized, 1));
    let payments: i64 = sqlx::query_scalar("SELECT count(*) FROM payments").fetch_one(world.pool()).await.unwrap();
    assert_eq!(payments, 1);
    assert_eq!(world.types(order), ["payment.authorized"]);
    world.assert_reconciled().await;
}

#[tokio::test]
async fn held_stock_seen_before_the_placement_is_remembered_and_authorized_when_the_placement_arrives() {
    let world = World::start().await;
    let order = OrderId::new_v7();
    let placed = simple_order(order, "tok_visa");
    // Acked, not waited on: redelivered until the consumer's bound ran out,
    // a lagging order consumer would have sent it to the DLQ.
    world.deliver(&reserve(&placed)).await;
    let remembered = world.payment(order).await.unwrap();
    assert_eq!((remembered.status, remembered.ordered), (Status::AwaitingPlacement, None));
    assert!(world.attempts(order).await.is_empty());

    world.publish(&[place(&placed)]).await;
    world.wait_for(order, "payment.authorized").await;
    world.wait_status(order, Status::Authorized).await;
    assert_eq!(world.attempts(order).await, [attempt("authorize", 1, "succeeded")]);

    // What the late placement recorded is enough to capture and split the sale.
    world.publish(&[confirm(&placed)]).await;
    world.wait_for(order, "payment.captured").await;
    world.wait_status(order, Status::Captured).await;
    assert_eq!(world.types(order), ["payment.authorized", "payment.captured"]);
    assert_eq!(world.entry_kinds(order).await, ["charge", "sale"]);
    world.assert_reconciled().await;
}

#[tokio::test]
async fn an_order_cancelled_after_its_stock_was_held_but_before_its_placement_was_seen_is_never_authorized() {
    let world = World::start().await;
    let order = OrderId::new_v7();
    let placed = simple_order(order, "tok_visa");
    world.deliver(&reserve(&placed)).await;
    world.publish(&[cancel(&placed, 2, OrderStatus::Reserved)]).await;
    world.wait_status(order, Status::Cancelled).await;

    world.deliver(&place(&placed)).await;
    world.assert_never_charged(order).await;
}

#[tokio::test]
async fn a_cancellation_before_the_stock_is_held_means_no_authorization_later() {
    let world = World::start().await;
    let order = OrderId::new_v7();
    let placed = simple_order(order, "tok_visa");
    world.publish(&[place(&placed), cancel(&placed, 2, OrderStatus::Pending)]).await;
    world.wait_status(order, Status::Cancelled).await;

    world.deliver(&reserve(&placed)).await;
    world.assert_never_charged(order).await;
}

/// Records what a handler commits for `inventory.reserved` (the attempt,
/// `started`, and the payment authorizing), without making the call: the
/// state a crash between the commit and the call leaves.
async fn crash_before_calling(world: &World, order: OrderId) -> String {
    crash_before_calling_at(world, order, Duration::from_secs(60)).await
}

/// [`crash_before_calling`], the attempt started `ago` (longer than the call's timeout).
async fn crash_before_calling_at(world: &World, order: OrderId, ago: Duration) -> String {
    let mut tx = world.pool().begin().await.unwrap();
    let payment = store::lock_payment_by_order(&mut tx, order).await.unwrap().unwrap();
    let ordered = payment.ordered.clone().unwrap();
    let attempt = NewAttempt {
        payment_id: payment.payment_id,
        order_id: order,
        request: Request::Authorize { method: ordered.method },
        amount: ordered.amount,
        origin: Origin { correlation_id: Uuid::now_v7(), causation_id: Uuid::now_v7() },
    };
    // Started longer ago than the call's timeout: the process died with it.
    let long_ago = emporium_nats::Clock::now(&world.clock) - chrono::TimeDelta::from_std(ago).unwrap();
    let attempt = store::insert_attempt(&mut tx, attempt, long_ago).await.unwrap();
    let change = PaymentChange {
        status: Status::Authorizing,
        version: payment.version,
        cancel_requested: false,
        authorization_ref: None,
        capture_ref: None,
        failure_reason: None,
        retry_at: None,
    };
    store::update_payment(&mut tx, payment.payment_id, &change, long_ago).await.unwrap();
    tx.commit().await.unwrap();
    attempt.key
}

#[tokio::test]
async fn a_crash_between_the_attempt_and_the_call_is_recovered_without_charging_twice() {
    let world = World::with(Recovery::Test, |_| {}).await;
    let recovery = world.engine();

    // The call was never made: recovery finds nothing at the provider and makes it, with the same key.
    let never_called = OrderId::new_v7();
    let first = simple_order(never_called, "tok_visa");
    world.publish(&[place(&first)]).await;
    world.wait_status(never_called, Status::AwaitingStock).await;
    let key = crash_before_calling(&world, never_called).await;
    assert!(world.simulator.records().is_empty());
    let recovered = recovery.recover_once().await.unwrap();
    assert_eq!((recovered.reissued, recovered.settled), (1, 0), "{recovered:?}");
    assert_eq!(world.payment(never_called).await.unwrap().status, Status::Authorized);
    assert_eq!(recovery.recover_once().await.unwrap(), Default::default(), "nothing left to recover");
    let records = world.provider_records(never_called).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key, key);

    // The call was made, and the answer lost with the process: recovery reads the provider's record.
    let answer_lost = OrderId::new_v7();
    let second = simple_order(answer_lost, "tok_visa");
    world.publish(&[place(&second)]).await;
    world.wait_status(answer_lost, Status::AwaitingStock).await;
    let key = crash_before_calling(&world, answer_lost).await;
    let payment = world.payment(answer_lost).await.unwrap();
    let ordered = payment.ordered.unwrap();
    world.simulator.authorize(key.clone(), ordered.method, ordered.amount).await.unwrap();
    let recovered = recovery.recover_once().await.unwrap();
    assert_eq!((recovered.reissued, recovered.settled), (0, 1), "{recovered:?}");
    assert_eq!(world.payment(answer_lost).await.unwrap().status, Status::Authorized);

    // Both then capture once each, and the reservation arriving late authorizes nothing more.
    world.publish(&[reserve(&first), reserve(&second), confirm(&first), confirm(&second)]).await;
    world.wait_status(never_called, Status::Captured).await;
    world.wait_status(answer_lost, Status::Captured).await;
    for order in [never_called, answer_lost] {
        let operations: Vec<_> =
            world.provider_records(order).await.into_iter().map(|r| r.operation.as_str()).collect();
        assert_eq!(operations, ["authorize", "capture"], "{order}");
        // The status is committed a moment before the relay publishes its event.
        world.wait_for(order, "payment.captured").await;
        assert_eq!(world.types(order), ["payment.authorized", "payment.captured"]);
    }
    world.assert_reconciled().await;
}

#[tokio::test]
async fn a_cancellation_during_an_authorization_in_flight_voids_it_when_it_lands() {
    let world = World::start().await;
    world.simulator.hold_authorizations();
    let order = OrderId::new_v7();
    let placed = simple_order(order, "tok_visa");
    world.publish(&[place(&placed), reserve(&placed)]).await;
    let at_gate = eventually(WAIT, || async { world.simulator.held() >= 1 }).await;
    assert!(at_gate, "the authorization never reached the provider");

    world.publish(&[cancel(&placed, 2, OrderStatus::Reserved)]).await;
    let remembered =
        eventually(WAIT, || async { world.payment(order).await.is_some_and(|p| p.cancel_requested) }).await;
    assert!(remembered, "the cancellation was not remembered");
    assert!(world.simulator.records().is_empty(), "nothing was authorized yet");

    world.simulator.release_authorizations();
    world.wait_for(order, "payment.voided").await;
    world.wait_status(order, Status::Voided).await;
    assert_eq!(world.types(order), ["payment.authorized", "payment.voided"]);
    let authorizations =
        world.provider_records(order).await.into_iter().filter(|r| r.operation.as_str() == "authorize").count();
    assert_eq!(authorizations, 1);
    world.assert_reconciled().await;
}

#[tokio::test]
async fn the_database_refuses_an_unbalanced_entry_whatever_the_code_does() {
    let db = TestDatabase::create().await.unwrap();
    store::migrate(db.pool()).await.unwrap();
    let order = OrderId::new_v7();
    let mut tx = db.pool().begin().await.unwrap();
    store::insert_cancelled_unseen(&mut tx, order, Uuid::now_v7(), Utc::now()).await.unwrap();
    tx.commit().await.unwrap();
    let payment = store::payment_of(db.pool(), order).await.unwrap().unwrap();

    let entry = Uuid::now_v7();
    let mut tx = db.pool().begin().await.unwrap();
    sqlx::query(
        "INSERT INTO journal_entries (id, order_id, payment_id, kind, created_at) VALUES ($1, $2, $3, 'charge', now())",
    )
    .bind(entry)
    .bind(order.as_uuid())
    .bind(payment.payment_id.as_uuid())
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO journal_lines (entry_id, line_no, account, party, currency, amount)
         VALUES ($1, 1, 'customer', NULL, 'EUR', -100), ($1, 2, 'provider_clearing', NULL, 'EUR', 99)",
    )
    .bind(entry)
    .execute(&mut *tx)
    .await
    .unwrap();
    let refused = tx.commit().await.unwrap_err();
    assert!(refused.to_string().contains("does not balance"), "{refused}");
    let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM journal_entries").fetch_one(db.pool()).await.unwrap();
    assert_eq!(entries, 0);
}

/// What goes wrong between the service and the simulator.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The provider makes every capture, then the answer is lost to a 502.
    CaptureAnswerLost,
    /// The provider refuses every void for good.
    VoidRefused(Decline),
}

/// The simulator behind a faulty network or a stubborn provider.
#[derive(Debug)]
struct Faulty {
    simulator: Simulator,
    fault: Fault,
}

impl Provider for Faulty {
    fn authorize(
        &self,
        key: String,
        method: PaymentMethod,
        amount: Money,
    ) -> BoxFuture<'_, Result<ProviderRef, ProviderError>> {
        self.simulator.authorize(key, method, amount)
    }

    fn capture(
        &self,
        key: String,
        authorization: ProviderRef,
        amount: Money,
    ) -> BoxFuture<'_, Result<ProviderRef, ProviderError>> {
        Box::pin(async move {
            let answer = self.simulator.capture(key, authorization, amount).await;
            match self.fault {
                Fault::CaptureAnswerLost => Err(ProviderError::Unavailable("502 bad gateway".to_owned())),
                Fault::VoidRefused(_) => answer,
            }
        })
    }

    fn void(&self, key: String, authorization: ProviderRef) -> BoxFuture<'_, Result<ProviderRef, ProviderError>> {
        match self.fault {
            Fault::VoidRefused(decline) => Box::pin(async move { Err(ProviderError::Declined(decline)) }),
            Fault::CaptureAnswerLost => self.simulator.void(key, authorization),
        }
    }

    fn refund(
        &self,
        key: String,
        capture: ProviderRef,
        amount: Money,
    ) -> BoxFuture<'_, Result<ProviderRef, ProviderError>> {
        self.simulator.refund(key, capture, amount)
    }

    fn lookup(&self, key: String) -> BoxFuture<'_, Result<Option<ProviderRecord>, ProviderError>> {
        self.simulator.lookup(key)
    }
}

fn faulty(fault: Fault) -> impl FnOnce(Simulator) -> Arc<dyn Provider> {
    move |simulator| Arc::new(Faulty { simulator, fault })
}

#[tokio::test]
async fn a_capture_answered_with_a_server_error_after_the_provider_acted_is_asked_about_never_made_again() {
    let world = World::with_provider(Recovery::Test, |_| {}, faulty(Fault::CaptureAnswerLost)).await;
    let recovery = world.engine();
    let order = OrderId::new_v7();
    let placed = simple_order(order, "tok_visa");
    world.authorized(&placed).await;
    world.publish(&[confirm(&placed)]).await;

    let unknown =
        eventually(WAIT, || async { world.attempts(order).await.contains(&attempt("capture", 1, "unknown")) }).await;
    assert!(unknown, "a 502 did not leave the capture unknown: {:?}", world.attempts(order).await);
    assert_eq!(world.payment(order).await.unwrap().status, Status::Capturing);
    let captures =
        |records: Vec<ProviderRecord>| records.into_iter().filter(|r| r.operation.as_str() == "capture").count();
    assert_eq!(captures(world.provider_records(order).await), 1, "the provider did capture");

    let recovered = recovery.recover_once().await.unwrap();
    assert_eq!((recovered.settled, recovered.reissued, recovered.retried), (1, 0, 0), "{recovered:?}");
    assert_eq!(world.payment(order).await.unwrap().status, Status::Captured);
    world.wait_for(order, "payment.captured").await;
    let mut attempts = world.attempts(order).await;
    attempts.sort();
    assert_eq!(
        attempts,
        [attempt("authorize", 1, "succeeded"), attempt("capture", 1, "succeeded")],
        "no capture under a new key"
    );
    assert_eq!(captures(world.provider_records(order).await), 1);
    assert_eq!(world.types(order), ["payment.authorized", "payment.captured"]);
    assert_eq!(world.entry_kinds(order).await, ["charge", "sale"]);
    world.assert_reconciled().await;
}

#[tokio::test]
async fn a_void_the_provider_refuses_for_good_ends_the_compensation_and_is_counted_not_retried() {
    let refused = faulty(Fault::VoidRefused(Decline::AlreadySettled));
    let world = World::with_provider(Recovery::Test, |_| {}, refused).await;
    let recovery = world.engine();
    let counter = emporium_platform::counters::counter("payment_compensation_failed_total", "compensations refused");
    let before = counter.get();
    let order = OrderId::new_v7();
    let placed = simple_order(order, "tok_visa");
    world.authorized(&placed).await;
    world.wait_status(order, Status::Authorized).await;

    world.publish(&[cancel(&placed, 3, OrderStatus::Reserved)]).await;
    world.wait_status(order, Status::VoidFailed).await;
    assert!(counter.get() > before, "payment_compensation_failed_total was not counted");
    let payment = world.payment(order).await.unwrap();
    assert_eq!(payment.retry_at, None, "nothing is due again");
    let reason: Option<String> = sqlx::query_scalar("SELECT failure_reason FROM payments WHERE order_id = $1")
        .bind(order.as_uuid())
        .fetch_one(world.pool())
        .await
        .unwrap();
    assert_eq!(reason.as_deref(), Some("declined: already_settled"));

    // Long after any backoff, recovery still finds nothing to try again.
    world.clock.advance(Duration::from_secs(600));
    assert_eq!(recovery.recover_once().await.unwrap(), Default::default());
    let mut attempts = world.attempts(order).await;
    attempts.sort();
    assert_eq!(attempts, [attempt("authorize", 1, "succeeded"), attempt("void", 1, "declined")]);
    assert_eq!(world.payment(order).await.unwrap().status, Status::VoidFailed);
    assert_eq!(world.types(order), ["payment.authorized"], "no event type is invented for it");
    world.assert_reconciled().await;
}

#[tokio::test]
async fn calls_the_provider_keeps_pending_do_not_keep_recovery_from_newer_ones() {
    let world = World::with(Recovery::Test, |settings| settings.provider_timeout = Duration::from_millis(300)).await;
    let mut recovery = world.engine();
    // A batch this small stands for the 100 of production.
    Arc::get_mut(&mut recovery).unwrap().config.recovery_batch = 2;
    let pending = [OrderId::new_v7(), OrderId::new_v7()];
    for order in pending {
        let placed = simple_order(order, "tok_timeout");
        world.publish(&[place(&placed), reserve(&placed)]).await;
    }
    for order in pending {
        let unknown =
            eventually(WAIT, || async { world.attempts(order).await == [attempt("authorize", 1, "unknown")] }).await;
        assert!(unknown, "the call never timed out: {:?}", world.attempts(order).await);
    }
    assert_eq!(recovery.recover_once().await.unwrap().pending, 2);

    // A newer call of unknown outcome (its process died between commit and call) behind a full batch of pending ones.
    world.clock.advance(Duration::from_secs(10));
    let newer = OrderId::new_v7();
    world.publish(&[place(&simple_order(newer, "tok_visa"))]).await;
    world.wait_status(newer, Status::AwaitingStock).await;
    crash_before_calling_at(&world, newer, Duration::from_secs(1)).await;

    let recovered = recovery.recover_once().await.unwrap();
    assert_eq!((recovered.reissued, recovered.pending), (1, 1), "{recovered:?}");
    assert_eq!(world.payment(newer).await.unwrap().status, Status::Authorized);
    // The pending ones take turns: each is asked about again.
    assert_eq!(recovery.recover_once().await.unwrap().pending, 2);
    world.assert_reconciled().await;
}
