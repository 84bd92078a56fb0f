//! What must hold once the whole system has settled after a scenario, read
//! from where each service keeps its truth: every order final; the stock
//! explained by its movements and its held reservations, agreeing with each
//! order and with the catalog's read model, never negative; nobody charged
//! twice or left charged for a cancelled order, by the provider's own
//! records; the payment ledger reconciled; every outbox drained and every
//! consumer caught up; the DLQ empty unless dead letters were expected.
//!
//! [`System`] is only pools, a JetStream context and a source of provider
//! records, so anything that can reach the services' databases and NATS can
//! check it: the in-process [`Stack`](crate::Stack) (through
//! [`Stack::settled`](crate::Stack::settled)) or a runner whose services are
//! real processes.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use emporium_payment::domain::{Operation, Status};
use emporium_payment::ledger::{self, Mismatch};
use emporium_payment::provider::{ProviderRecord, ProviderRef, RecordState};
use emporium_payment::simulator::Simulator;
use emporium_payment::simulator::remote::RemoteSimulator;
use futures::TryStreamExt;
use futures::future::BoxFuture;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// How many dead letters the scenario meant to cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetters {
    None,
    Exactly(usize),
}

/// The databases of the services whose state the invariants read.
#[derive(Debug, Clone)]
pub struct Databases {
    pub identity: PgPool,
    pub catalog: PgPool,
    pub inventory: PgPool,
    pub order: PgPool,
    pub payment: PgPool,
    pub shipping: PgPool,
    pub notification: PgPool,
}

impl Databases {
    /// Lazily connecting pools on each service's database, `url_of(service)` telling where it is.
    pub fn connect_lazy(url_of: impl Fn(&str) -> String) -> Result<Self, sqlx::Error> {
        let pool = |service: &str| PgPoolOptions::new().max_connections(2).connect_lazy(&url_of(service));
        Ok(Self {
            identity: pool("identity")?,
            catalog: pool("catalog")?,
            inventory: pool("inventory")?,
            order: pool("order")?,
            payment: pool("payment")?,
            shipping: pool("shipping")?,
            notification: pool("notification")?,
        })
    }

    /// Every service's database, named, for what each one holds alike (its outbox).
    fn all(&self) -> [(&'static str, &PgPool); 7] {
        [
            ("identity", &self.identity),
            ("catalog", &self.catalog),
            ("inventory", &self.inventory),
            ("order", &self.order),
            ("payment", &self.payment),
            ("shipping", &self.shipping),
            ("notification", &self.notification),
        ]
    }
}

/// Where the payment provider's own records come from.
pub trait ProviderRecords: Send + Sync + fmt::Debug {
    fn records(&self) -> BoxFuture<'_, Result<Vec<ProviderRecord>, CheckError>>;
}

/// The in-process simulator keeps its records in memory.
impl ProviderRecords for Simulator {
    fn records(&self) -> BoxFuture<'_, Result<Vec<ProviderRecord>, CheckError>> {
        Box::pin(async move { Ok(Simulator::records(self)) })
    }
}

/// The simulator in a process of its own sends its records over NATS.
impl ProviderRecords for RemoteSimulator {
    fn records(&self) -> BoxFuture<'_, Result<Vec<ProviderRecord>, CheckError>> {
        Box::pin(async move {
            RemoteSimulator::records(self).await.map_err(|error| CheckError::Provider(error.to_string()))
        })
    }
}

/// The system as the check sees it.
#[derive(Debug, Clone)]
pub struct System {
    pub databases: Databases,
    pub jetstream: jetstream::Context,
    pub provider: Arc<dyn ProviderRecords>,
}

/// The check could not read what it needs (not a violation: nothing was judged).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("reading a service database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("reading the payment ledger: {0}")]
    Ledger(#[from] emporium_payment::store::StoreError),
    #[error("reading JetStream: {0}")]
    JetStream(String),
    #[error("reading the provider's records: {0}")]
    Provider(String),
}

fn jetstream_error(error: impl fmt::Display) -> CheckError {
    CheckError::JetStream(error.to_string())
}

/// Something that must not be, once the system has settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// An order is not confirmed, shipped, delivered or cancelled.
    OrderNotFinal { order: Uuid, status: String },
    /// A stock row is not what its movements add up to.
    StockUnexplained { product: Uuid, on_hand: i64, reserved: i64, moved_on_hand: i64, moved_reserved: i64 },
    /// A stock row's reserved units are not those of the reservations held.
    ReservedNotHeld { product: Uuid, reserved: i64, held: i64 },
    /// On hand, reserved or available below zero.
    StockNegative { product: Uuid, on_hand: i64, reserved: i64 },
    /// The catalog shows a product's stock other than inventory holds it.
    CatalogStockStale { product: Uuid, catalog: (i64, i64, i64), inventory: (i64, i64) },
    /// An order's reservation is not in the state the order's status requires.
    ReservationDisagrees { order: Uuid, order_status: String, reservation: Option<String> },
    /// The provider did one payment's authorization or capture more than once.
    ChargedTwice { order: Uuid, operation: &'static str, times: usize },
    /// The provider refunded a capture more than it captured.
    OverRefunded { capture: String, captured: i64, refunded: i64 },
    /// A cancelled order still holds the customer's money (captured, or authorized and never voided).
    CancelledButCharged { order: Uuid, captured: i64, refunded: i64, authorization_held: bool },
    /// A payment has a provider call in flight or due.
    PaymentUnderway { order: Uuid, status: String },
    /// The ledger, the payments and the provider's records disagree.
    Ledger(Mismatch),
    /// A service's outbox has rows it never published.
    OutboxNotDrained { service: &'static str, unpublished: i64 },
    /// A durable consumer has messages it has not been given or has not acked.
    ConsumerBehind { consumer: String, pending: u64, unacked: usize },
    /// The DLQ holds other than the dead letters the scenario meant to cause.
    DeadLetters { expected: DeadLetters, found: Vec<String> },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::OrderNotFinal { order, status } => write!(f, "order {order} is not final: {status}"),
            Violation::StockUnexplained { product, on_hand, reserved, moved_on_hand, moved_reserved } => write!(
                f,
                "stock of {product} is {on_hand} on hand / {reserved} reserved, its movements add up to \
                 {moved_on_hand} / {moved_reserved}"
            ),
            Violation::ReservedNotHeld { product, reserved, held } => {
                write!(f, "stock of {product} has {reserved} reserved, held reservations {held}")
            }
            Violation::StockNegative { product, on_hand, reserved } => {
                write!(f, "stock of {product} below zero: {on_hand} on hand, {reserved} reserved")
            }
            Violation::CatalogStockStale { product, catalog, inventory } => write!(
                f,
                "the catalog shows {product} at {} on hand / {} reserved / {} available, inventory holds {} / {}",
                catalog.0, catalog.1, catalog.2, inventory.0, inventory.1
            ),
            Violation::ReservationDisagrees { order, order_status, reservation } => write!(
                f,
                "order {order} is {order_status} but its reservation is {}",
                reservation.as_deref().unwrap_or("missing")
            ),
            Violation::ChargedTwice { order, operation, times } => {
                write!(f, "the provider did order {order}'s {operation} {times} times")
            }
            Violation::OverRefunded { capture, captured, refunded } => {
                write!(f, "capture {capture} of {captured} was refunded {refunded}")
            }
            Violation::CancelledButCharged { order, captured, refunded, authorization_held } => write!(
                f,
                "cancelled order {order} keeps money: captured {captured}, refunded {refunded}, \
                 authorization held: {authorization_held}"
            ),
            Violation::PaymentUnderway { order, status } => write!(f, "order {order}'s payment is still {status}"),
            Violation::Ledger(mismatch) => write!(f, "the ledger does not reconcile: {mismatch:?}"),
            Violation::OutboxNotDrained { service, unpublished } => {
                write!(f, "{service}'s outbox has {unpublished} unpublished rows")
            }
            Violation::ConsumerBehind { consumer, pending, unacked } => {
                write!(f, "consumer {consumer} is behind: {pending} pending, {unacked} unacked")
            }
            Violation::DeadLetters { expected, found } => {
                write!(f, "the DLQ holds {} dead letters, expected {expected:?}: {found:#?}", found.len())
            }
        }
    }
}

/// An order's status and, once cancelled, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderState {
    pub status: String,
    pub cancel_reason: Option<String>,
}

const FINAL: [&str; 4] = ["confirmed", "shipped", "delivered", "cancelled"];

impl System {
    /// Waits, at most `patience`, until the system is settled: every
    /// invariant holds. Returns what still broke them at the deadline (empty: settled).
    pub async fn settle(&self, patience: Duration, dead_letters: DeadLetters) -> Result<Vec<Violation>, CheckError> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let violations = self.check(dead_letters).await?;
            if violations.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(violations);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every invariant, once, as things stand now.
    pub async fn check(&self, dead_letters: DeadLetters) -> Result<Vec<Violation>, CheckError> {
        let mut violations = Vec::new();
        let orders: HashMap<Uuid, String> =
            self.orders().await?.into_iter().map(|(order, state)| (order, state.status)).collect();
        violations.extend(
            orders
                .iter()
                .filter(|(_, status)| !FINAL.contains(&status.as_str()))
                .map(|(order, status)| Violation::OrderNotFinal { order: *order, status: status.clone() }),
        );
        self.check_stock(&orders, &mut violations).await?;
        self.check_money(&orders, &mut violations).await?;
        violations.extend(queued(&self.databases, &self.jetstream).await?);
        let letters = emporium_nats::dlq::list(&self.jetstream, 1_000).await.map_err(jetstream_error)?;
        let expected = match dead_letters {
            DeadLetters::None => 0,
            DeadLetters::Exactly(count) => count,
        };
        if letters.len() != expected {
            let found = letters
                .iter()
                .map(|letter| {
                    format!("{} from {} by {}: {}", letter.sequence, letter.subject, letter.consumer, letter.reason)
                })
                .collect();
            violations.push(Violation::DeadLetters { expected: dead_letters, found });
        }
        Ok(violations)
    }

    /// Every order, by id, as the order service keeps it.
    pub async fn orders(&self) -> Result<HashMap<Uuid, OrderState>, CheckError> {
        let rows = sqlx::query(
            "SELECT id::uuid AS id, coalesce(state ->> 'status', '') AS status, state ->> 'cancel_reason' AS reason
             FROM entity_state WHERE kind = 'order'",
        )
        .fetch_all(&self.databases.order)
        .await?;
        Ok(rows
            .iter()
            .map(|row| {
                let state = OrderState { status: row.try_get("status")?, cancel_reason: row.try_get("reason")? };
                Ok((row.try_get("id")?, state))
            })
            .collect::<Result<_, sqlx::Error>>()?)
    }

    /// Inventory's stock against its movements, its held reservations and
    /// the orders; the catalog's read model against inventory.
    async fn check_stock(
        &self,
        orders: &HashMap<Uuid, String>,
        violations: &mut Vec<Violation>,
    ) -> Result<(), CheckError> {
        let stock = sqlx::query(
            "SELECT s.product_id, s.on_hand::bigint AS on_hand, s.reserved::bigint AS reserved,
                    coalesce(m.on_hand, 0) AS moved_on_hand, coalesce(m.reserved, 0) AS moved_reserved,
                    coalesce(h.held, 0) AS held
             FROM stock s
             LEFT JOIN (SELECT product_id, sum(on_hand_delta)::bigint AS on_hand,
                               sum(reserved_delta)::bigint AS reserved
                        FROM movements GROUP BY product_id) m USING (product_id)
             LEFT JOIN (SELECT l.product_id, sum(l.quantity)::bigint AS held
                        FROM reservation_lines l JOIN reservations r USING (order_id)
                        WHERE r.status = 'held' GROUP BY l.product_id) h USING (product_id)",
        )
        .fetch_all(&self.databases.inventory)
        .await?;
        let mut inventory = HashMap::new();
        for row in &stock {
            let product: Uuid = row.try_get("product_id")?;
            let (on_hand, reserved): (i64, i64) = (row.try_get("on_hand")?, row.try_get("reserved")?);
            let (moved_on_hand, moved_reserved): (i64, i64) =
                (row.try_get("moved_on_hand")?, row.try_get("moved_reserved")?);
            let held: i64 = row.try_get("held")?;
            if (on_hand, reserved) != (moved_on_hand, moved_reserved) {
                violations.push(Violation::StockUnexplained {
                    product,
                    on_hand,
                    reserved,
                    moved_on_hand,
                    moved_reserved,
                });
            }
            if reserved != held {
                violations.push(Violation::ReservedNotHeld { product, reserved, held });
            }
            if reserved < 0 || on_hand < reserved {
                violations.push(Violation::StockNegative { product, on_hand, reserved });
            }
            inventory.insert(product, (on_hand, reserved));
        }

        let shown = sqlx::query(
            "SELECT id, on_hand::bigint AS on_hand, reserved::bigint AS reserved, available::bigint AS available
             FROM products",
        )
        .fetch_all(&self.databases.catalog)
        .await?;
        for row in &shown {
            let product: Uuid = row.try_get("id")?;
            let catalog: (i64, i64, i64) =
                (row.try_get("on_hand")?, row.try_get("reserved")?, row.try_get("available")?);
            // A product inventory has no row for holds nothing.
            let held = inventory.get(&product).copied().unwrap_or((0, 0));
            if (catalog.0, catalog.1) != held || catalog.2 != held.0 - held.1 || catalog.2 < 0 {
                violations.push(Violation::CatalogStockStale { product, catalog, inventory: held });
            }
        }

        let reservations: HashMap<Uuid, String> = sqlx::query("SELECT order_id, status FROM reservations")
            .fetch_all(&self.databases.inventory)
            .await?
            .iter()
            .map(|row| Ok((row.try_get("order_id")?, row.try_get("status")?)))
            .collect::<Result<_, sqlx::Error>>()?;
        for (order, status) in orders {
            let reservation = reservations.get(order);
            let agrees = match status.as_str() {
                "confirmed" => reservation.is_some_and(|r| r == "held"),
                "shipped" | "delivered" => reservation.is_some_and(|r| r == "shipped"),
                "cancelled" => reservation.is_none_or(|r| r != "held" && r != "shipped"),
                // Not final: reported as such.
                _ => true,
            };
            if !agrees {
                violations.push(Violation::ReservationDisagrees {
                    order: *order,
                    order_status: status.clone(),
                    reservation: reservation.cloned(),
                });
            }
        }
        Ok(())
    }

    /// The provider's records per payment: no authorization or capture
    /// twice, no refund beyond its capture, no money kept for a cancelled
    /// order, no call under way; then the ledger's own reconciliation.
    async fn check_money(
        &self,
        orders: &HashMap<Uuid, String>,
        violations: &mut Vec<Violation>,
    ) -> Result<(), CheckError> {
        let pool = &self.databases.payment;
        let records = self.provider.records().await?;
        for row in sqlx::query("SELECT order_id, status FROM payments").fetch_all(pool).await? {
            let status: String = row.try_get("status")?;
            if Status::parse(&status).is_some_and(Status::is_underway) {
                violations.push(Violation::PaymentUnderway { order: row.try_get("order_id")?, status });
            }
        }
        // The order each idempotency key was used for (through its payment).
        let order_of: HashMap<String, Uuid> = sqlx::query(
            "SELECT a.idempotency_key, p.order_id FROM provider_attempts a JOIN payments p USING (payment_id)",
        )
        .fetch_all(pool)
        .await?
        .iter()
        .map(|row| Ok((row.try_get("idempotency_key")?, row.try_get("order_id")?)))
        .collect::<Result<_, sqlx::Error>>()?;

        let succeeded: Vec<&ProviderRecord> =
            records.iter().filter(|record| record.state == RecordState::Succeeded).collect();
        let amount = |record: &ProviderRecord| record.amount.as_ref().map_or(0, |money| money.amount.get());
        // What the provider did per order (through the payment its keys belong to).
        let mut per_order: HashMap<Uuid, Vec<&ProviderRecord>> = HashMap::new();
        for record in &succeeded {
            if let Some(order) = order_of.get(&record.key) {
                per_order.entry(*order).or_default().push(record);
            }
        }
        for (order, done) in &per_order {
            let count = |operation: Operation| done.iter().filter(|record| record.operation == operation).count();
            for operation in [Operation::Authorize, Operation::Capture] {
                let times = count(operation);
                if times > 1 {
                    violations.push(Violation::ChargedTwice { order: *order, operation: operation.as_str(), times });
                }
            }
            if orders.get(order).is_some_and(|status| status == "cancelled") {
                let sum = |operation: Operation| -> i64 {
                    done.iter().filter(|record| record.operation == operation).map(|record| amount(record)).sum()
                };
                let (captured, refunded) = (sum(Operation::Capture), sum(Operation::Refund));
                let authorization_held =
                    count(Operation::Authorize) > 0 && count(Operation::Capture) == 0 && count(Operation::Void) == 0;
                if captured != refunded || authorization_held {
                    violations.push(Violation::CancelledButCharged {
                        order: *order,
                        captured,
                        refunded,
                        authorization_held,
                    });
                }
            }
        }
        // Refunds name the capture they pay back, by the provider's own reference.
        let mut refunded: HashMap<&ProviderRef, i64> = HashMap::new();
        for refund in succeeded.iter().filter(|record| record.operation == Operation::Refund) {
            if let Some(capture) = &refund.target {
                *refunded.entry(capture).or_default() += amount(refund);
            }
        }
        for capture in succeeded.iter().filter(|record| record.operation == Operation::Capture) {
            let back = refunded.get(&capture.reference).copied().unwrap_or(0);
            if back > amount(capture) {
                violations.push(Violation::OverRefunded {
                    capture: capture.reference.to_string(),
                    captured: amount(capture),
                    refunded: back,
                });
            }
        }

        violations.extend(ledger::reconcile(pool, &records).await?.into_iter().map(Violation::Ledger));
        Ok(())
    }
}

/// Work still queued anywhere: outbox rows not yet published, and messages a
/// durable consumer of the event streams has not yet been given or not yet
/// acked. Empty once the system has caught up (the load generator's lag ends
/// there too).
pub async fn queued(databases: &Databases, jetstream: &jetstream::Context) -> Result<Vec<Violation>, CheckError> {
    let mut violations = Vec::new();
    for (service, pool) in databases.all() {
        let unpublished: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetch_one(pool).await?;
        if unpublished > 0 {
            violations.push(Violation::OutboxNotDrained { service, unpublished });
        }
    }
    for context in emporium_nats::topology::CONTEXTS {
        let stream = jetstream
            .get_stream_no_info(emporium_nats::topology::event_stream(context))
            .await
            .map_err(jetstream_error)?;
        let consumers: Vec<_> = stream.consumers().try_collect().await.map_err(jetstream_error)?;
        for consumer in consumers.into_iter().filter(|info| info.config.durable_name.is_some()) {
            if consumer.num_pending > 0 || consumer.num_ack_pending > 0 {
                violations.push(Violation::ConsumerBehind {
                    consumer: consumer.name,
                    pending: consumer.num_pending,
                    unacked: consumer.num_ack_pending,
                });
            }
        }
    }
    Ok(violations)
}
