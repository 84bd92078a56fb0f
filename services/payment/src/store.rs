//! Payment's Postgres tables: payments (with their lines), provider
//! attempts, and the journal. Runtime queries. A payment row is always
//! locked before its attempts, in every transaction, so none can deadlock
//! another.

use chrono::{DateTime, Utc};
use emporium_schemas::Origin;
use emporium_schemas::values::{Currency, MinorUnits, Money, OrderId, PaymentId, PaymentMethod, ProductId, UserId};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::domain::{self, Operation, Status};
use crate::journal::{Account, EntryKind, JournalEntry, JournalError, Posting, SaleLine};
use crate::provider::ProviderRef;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a stored value is not valid: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Runs payment's migrations and the messaging tables' (outbox, inbox).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("./migrations").run(pool).await?;
    emporium_nats::outbox::migrate(pool).await
}

fn money(amount: i64, currency: String) -> Result<Money, StoreError> {
    let amount = MinorUnits::try_from(amount).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let currency = Currency::try_from(currency).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(Money { amount, currency })
}

fn method(token: String) -> Result<PaymentMethod, StoreError> {
    PaymentMethod::try_from(token).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// What was ordered: known once the placement was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ordered {
    pub customer: UserId,
    pub amount: Money,
    pub method: PaymentMethod,
}

/// A locked payment row.
#[derive(Debug, Clone)]
pub struct PaymentRow {
    pub payment_id: PaymentId,
    pub order_id: OrderId,
    pub status: Status,
    /// The number of `payment.*` events emitted so far.
    pub version: i64,
    pub cancel_requested: bool,
    /// Absent only while the placement is unseen (a cancellation or held
    /// stock seen before it).
    pub ordered: Option<Ordered>,
    pub correlation_id: Uuid,
    pub authorization_ref: Option<ProviderRef>,
    pub capture_ref: Option<ProviderRef>,
    pub retry_at: Option<DateTime<Utc>>,
}

impl PaymentRow {
    /// The payment as the rules see it. A call is in flight exactly when an
    /// operation is under way and not waiting to be tried again: every path
    /// that starts an attempt moves the payment to its operation's status
    /// with no `retry_at`, and an attempt is only closed with the payment
    /// moved on (to another status, or to a later `retry_at`), in one
    /// transaction.
    pub fn rules(&self) -> domain::Payment {
        domain::Payment {
            status: self.status,
            cancel_requested: self.cancel_requested,
            call_in_flight: self.status.is_underway() && self.retry_at.is_none(),
        }
    }

    fn from_row(row: &PgRow) -> Result<Self, StoreError> {
        let status: String = row.try_get("status")?;
        let status = Status::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("payment status {status}")))?;
        let customer: Option<Uuid> = row.try_get("customer_id")?;
        let amount: Option<i64> = row.try_get("amount")?;
        let currency: Option<String> = row.try_get("currency")?;
        let token: Option<String> = row.try_get("payment_method")?;
        let ordered = match (customer, amount, currency, token) {
            (Some(customer), Some(amount), Some(currency), Some(token)) => Some(Ordered {
                customer: UserId::from_uuid(customer),
                amount: money(amount, currency)?,
                method: method(token)?,
            }),
            _ => None,
        };
        let reference = |column: &str| -> Result<Option<ProviderRef>, sqlx::Error> {
            Ok(row.try_get::<Option<String>, _>(column)?.map(ProviderRef))
        };
        Ok(Self {
            payment_id: PaymentId::from_uuid(row.try_get("payment_id")?),
            order_id: OrderId::from_uuid(row.try_get("order_id")?),
            status,
            version: row.try_get("version")?,
            cancel_requested: row.try_get("cancel_requested")?,
            ordered,
            correlation_id: row.try_get("correlation_id")?,
            authorization_ref: reference("authorization_ref")?,
            capture_ref: reference("capture_ref")?,
            retry_at: row.try_get("retry_at")?,
        })
    }
}

const PAYMENT_COLUMNS: &str =
    "p.payment_id, p.order_id, p.status, p.version, p.cancel_requested, p.customer_id, p.amount,
    p.currency, p.payment_method, p.correlation_id, p.authorization_ref, p.capture_ref, p.retry_at";

/// The payment `condition` (on `$1`, a fixed string of this module) picks.
async fn select_payment<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    condition: &'static str,
    id: &Uuid,
) -> Result<Option<PaymentRow>, StoreError> {
    let query = format!("SELECT {PAYMENT_COLUMNS} FROM payments p WHERE {condition}");
    let row = sqlx::query(sqlx::AssertSqlSafe(query)).bind(id).fetch_optional(executor).await?;
    row.as_ref().map(PaymentRow::from_row).transpose()
}

/// Locks and reads the payment of `order`.
pub async fn lock_payment_by_order(tx: &mut PgConnection, order: OrderId) -> Result<Option<PaymentRow>, StoreError> {
    select_payment(tx, "order_id = $1 FOR UPDATE", order.as_uuid()).await
}

/// Locks and reads a payment.
pub async fn lock_payment(tx: &mut PgConnection, payment: PaymentId) -> Result<Option<PaymentRow>, StoreError> {
    select_payment(tx, "payment_id = $1 FOR UPDATE", payment.as_uuid()).await
}

/// An order's payment as it is now, without locking (tests, operators).
pub async fn payment_of(pool: &PgPool, order: OrderId) -> Result<Option<PaymentRow>, StoreError> {
    select_payment(pool, "order_id = $1", order.as_uuid()).await
}

/// An order line, as the ledger will split it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLine {
    pub product: ProductId,
    pub seller: UserId,
    pub quantity: u32,
    pub unit_price: i64,
}

/// A payment recorded from `order.placed`.
#[derive(Debug, Clone)]
pub struct NewPayment {
    pub payment_id: PaymentId,
    pub order_id: OrderId,
    pub ordered: Ordered,
    pub lines: Vec<NewLine>,
    pub correlation_id: Uuid,
}

/// Records a payment awaiting stock, with its lines, unless the order has
/// one. Returns whether it was new.
pub async fn insert_payment(
    tx: &mut PgConnection,
    payment: &NewPayment,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let lines = LineColumns::of(&payment.lines);
    let inserted: i64 = sqlx::query_scalar(
        "WITH payment AS (
             INSERT INTO payments (payment_id, order_id, status, customer_id, amount, currency, payment_method,
                                   correlation_id, created_at, updated_at)
             VALUES ($1, $2, 'awaiting_stock', $3, $4, $5, $6, $7, $8, $8)
             ON CONFLICT (order_id) DO NOTHING
             RETURNING payment_id),
         lines AS (
             INSERT INTO payment_lines (payment_id, line_no, product_id, seller_id, quantity, unit_price)
             SELECT payment.payment_id, line_no, product_id, seller_id, quantity, unit_price
             FROM payment, unnest($9::int[], $10::uuid[], $11::uuid[], $12::int[], $13::bigint[])
                  AS l(line_no, product_id, seller_id, quantity, unit_price))
         SELECT count(*) FROM payment",
    )
    .bind(payment.payment_id.as_uuid())
    .bind(payment.order_id.as_uuid())
    .bind(payment.ordered.customer.as_uuid())
    .bind(payment.ordered.amount.amount.get())
    .bind(payment.ordered.amount.currency.as_str())
    .bind(payment.ordered.method.as_str())
    .bind(payment.correlation_id)
    .bind(now)
    .bind(&lines.numbers)
    .bind(&lines.products)
    .bind(&lines.sellers)
    .bind(&lines.quantities)
    .bind(&lines.prices)
    .fetch_one(&mut *tx)
    .await?;
    Ok(inserted == 1)
}

/// Fills in what was ordered on a payment recorded before its placement was
/// seen (its stock already held); its status is the caller's to move.
pub async fn record_placement(
    tx: &mut PgConnection,
    payment_id: PaymentId,
    payment: &NewPayment,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE payments SET customer_id = $2, amount = $3, currency = $4, payment_method = $5, correlation_id = $6,
                updated_at = $7
         WHERE payment_id = $1",
    )
    .bind(payment_id.as_uuid())
    .bind(payment.ordered.customer.as_uuid())
    .bind(payment.ordered.amount.amount.get())
    .bind(payment.ordered.amount.currency.as_str())
    .bind(payment.ordered.method.as_str())
    .bind(payment.correlation_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    insert_lines(tx, payment_id, &payment.lines).await
}

/// Order lines as the columns `payment_lines` is filled from.
struct LineColumns {
    numbers: Vec<i32>,
    products: Vec<Uuid>,
    sellers: Vec<Uuid>,
    quantities: Vec<i32>,
    prices: Vec<i64>,
}

impl LineColumns {
    fn of(lines: &[NewLine]) -> Self {
        Self {
            numbers: (1..).take(lines.len()).collect(),
            products: lines.iter().map(|l| *l.product.as_uuid()).collect(),
            sellers: lines.iter().map(|l| *l.seller.as_uuid()).collect(),
            quantities: lines.iter().map(|l| i32::try_from(l.quantity).unwrap_or(i32::MAX)).collect(),
            prices: lines.iter().map(|l| l.unit_price).collect(),
        }
    }
}

async fn insert_lines(tx: &mut PgConnection, payment: PaymentId, lines: &[NewLine]) -> Result<(), StoreError> {
    let lines = LineColumns::of(lines);
    sqlx::query(
        "INSERT INTO payment_lines (payment_id, line_no, product_id, seller_id, quantity, unit_price)
         SELECT $1, line_no, product_id, seller_id, quantity, unit_price
         FROM unnest($2::int[], $3::uuid[], $4::uuid[], $5::int[], $6::bigint[])
              AS l(line_no, product_id, seller_id, quantity, unit_price)",
    )
    .bind(payment.as_uuid())
    .bind(&lines.numbers)
    .bind(&lines.products)
    .bind(&lines.sellers)
    .bind(&lines.quantities)
    .bind(&lines.prices)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Remembers an order cancelled before its placement was seen. Returns
/// whether it was new (not: another event's row was committed first).
pub async fn insert_cancelled_unseen(
    tx: &mut PgConnection,
    order: OrderId,
    correlation_id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    insert_unseen(tx, order, Status::Cancelled, correlation_id, now).await
}

/// Remembers an order whose stock was held before its placement was seen.
/// Returns whether it was new.
pub async fn insert_stock_held_unseen(
    tx: &mut PgConnection,
    order: OrderId,
    correlation_id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    insert_unseen(tx, order, Status::AwaitingPlacement, correlation_id, now).await
}

/// A payment row with nothing known of the order but its id.
async fn insert_unseen(
    tx: &mut PgConnection,
    order: OrderId,
    status: Status,
    correlation_id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO payments (payment_id, order_id, status, correlation_id, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $5)
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(order.as_uuid())
    .bind(status.as_str())
    .bind(correlation_id)
    .bind(now)
    .execute(tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// A locked payment's new state. References and a failure reason, once
/// known, are kept (`None` leaves them as they are).
#[derive(Debug, Clone)]
pub struct PaymentChange<'a> {
    pub status: Status,
    pub version: i64,
    pub cancel_requested: bool,
    pub authorization_ref: Option<&'a ProviderRef>,
    pub capture_ref: Option<&'a ProviderRef>,
    pub failure_reason: Option<&'a str>,
    pub retry_at: Option<DateTime<Utc>>,
}

pub async fn update_payment(
    tx: &mut PgConnection,
    payment: PaymentId,
    change: &PaymentChange<'_>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE payments SET status = $2, version = $3, cancel_requested = $4,
                authorization_ref = coalesce($5, authorization_ref), capture_ref = coalesce($6, capture_ref),
                failure_reason = coalesce($7, failure_reason), retry_at = $8, updated_at = $9
         WHERE payment_id = $1",
    )
    .bind(payment.as_uuid())
    .bind(change.status.as_str())
    .bind(change.version)
    .bind(change.cancel_requested)
    .bind(change.authorization_ref.map(|r| r.0.as_str()))
    .bind(change.capture_ref.map(|r| r.0.as_str()))
    .bind(change.failure_reason)
    .bind(change.retry_at)
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

/// A payment's lines, as the ledger splits them (their prices are in the payment's currency).
pub async fn sale_lines(
    tx: &mut PgConnection,
    payment: PaymentId,
    currency: &Currency,
) -> Result<Vec<SaleLine>, StoreError> {
    let rows =
        sqlx::query("SELECT seller_id, quantity, unit_price FROM payment_lines WHERE payment_id = $1 ORDER BY line_no")
            .bind(payment.as_uuid())
            .fetch_all(tx)
            .await?;
    rows.iter()
        .map(|row| {
            let quantity: i32 = row.try_get("quantity")?;
            Ok(SaleLine {
                seller: UserId::from_uuid(row.try_get("seller_id")?),
                quantity: u32::try_from(quantity).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                unit_price: money(row.try_get("unit_price")?, currency.as_str().to_owned())?,
            })
        })
        .collect()
}

/// Where an attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptStatus {
    /// Committed; the call is being (or about to be) made.
    Started,
    /// The call timed out: the provider may or may not have acted.
    Unknown,
    Succeeded,
    Declined,
    Failed,
}

impl AttemptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Started => "started",
            AttemptStatus::Unknown => "unknown",
            AttemptStatus::Succeeded => "succeeded",
            AttemptStatus::Declined => "declined",
            AttemptStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "started" => AttemptStatus::Started,
            "unknown" => AttemptStatus::Unknown,
            "succeeded" => AttemptStatus::Succeeded,
            "declined" => AttemptStatus::Declined,
            "failed" => AttemptStatus::Failed,
            _ => return None,
        })
    }

    /// Its outcome is not recorded yet.
    pub fn is_open(self) -> bool {
        matches!(self, AttemptStatus::Started | AttemptStatus::Unknown)
    }
}

/// What a call asks of the provider, whole, so it can be made again with the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Authorize { method: PaymentMethod },
    Capture { authorization: ProviderRef },
    Void { authorization: ProviderRef },
    Refund { capture: ProviderRef },
}

impl Request {
    pub fn operation(&self) -> Operation {
        match self {
            Request::Authorize { .. } => Operation::Authorize,
            Request::Capture { .. } => Operation::Capture,
            Request::Void { .. } => Operation::Void,
            Request::Refund { .. } => Operation::Refund,
        }
    }

    fn method(&self) -> Option<&str> {
        match self {
            Request::Authorize { method } => Some(method.as_str()),
            _ => None,
        }
    }

    fn target(&self) -> Option<&str> {
        match self {
            Request::Authorize { .. } => None,
            Request::Capture { authorization } | Request::Void { authorization } => Some(&authorization.0),
            Request::Refund { capture } => Some(&capture.0),
        }
    }

    fn from_parts(
        operation: Operation,
        method: Option<String>,
        target: Option<String>,
    ) -> Option<Result<Self, StoreError>> {
        Some(match operation {
            Operation::Authorize => self::method(method?).map(|method| Request::Authorize { method }),
            Operation::Capture => Ok(Request::Capture { authorization: ProviderRef(target?) }),
            Operation::Void => Ok(Request::Void { authorization: ProviderRef(target?) }),
            Operation::Refund => Ok(Request::Refund { capture: ProviderRef(target?) }),
        })
    }
}

/// One provider call: its key, its request, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub key: String,
    pub payment_id: PaymentId,
    pub order_id: OrderId,
    /// 1 for the operation's first attempt on this payment.
    pub number: u32,
    pub status: AttemptStatus,
    pub request: Request,
    pub amount: Money,
    pub origin: Origin,
}

impl Attempt {
    pub fn operation(&self) -> Operation {
        self.request.operation()
    }

    fn from_row(row: &PgRow) -> Result<Self, StoreError> {
        let operation: String = row.try_get("operation")?;
        let operation = Operation::parse(&operation)
            .ok_or_else(|| StoreError::Corrupt(format!("attempt operation {operation}")))?;
        let status: String = row.try_get("attempt_status")?;
        let number: i32 = row.try_get("attempt")?;
        let key: String = row.try_get("idempotency_key")?;
        let request = Request::from_parts(operation, row.try_get("attempt_method")?, row.try_get("target_ref")?)
            .ok_or_else(|| StoreError::Corrupt(format!("attempt {key} lacks its request")))??;
        Ok(Self {
            payment_id: PaymentId::from_uuid(row.try_get("payment_id")?),
            order_id: OrderId::from_uuid(row.try_get("order_id")?),
            number: u32::try_from(number).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            status: AttemptStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("attempt status {status}")))?,
            request,
            amount: money(row.try_get("attempt_amount")?, row.try_get("attempt_currency")?)?,
            origin: Origin {
                correlation_id: row.try_get("attempt_correlation_id")?,
                causation_id: row.try_get("causation_id")?,
            },
            key,
        })
    }
}

/// Named apart from the payment's columns, so one row can carry both.
const ATTEMPT_COLUMNS: &str = "a.idempotency_key, a.payment_id, p.order_id, a.operation, a.attempt,
    a.status AS attempt_status, a.amount AS attempt_amount, a.currency AS attempt_currency,
    a.payment_method AS attempt_method, a.target_ref, a.correlation_id AS attempt_correlation_id, a.causation_id";

/// A call to record before it is made.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub payment_id: PaymentId,
    pub order_id: OrderId,
    pub request: Request,
    pub amount: Money,
    pub origin: Origin,
}

/// Records the next attempt of an operation on a locked payment, `started`,
/// with its idempotency key.
pub async fn insert_attempt(
    tx: &mut PgConnection,
    attempt: NewAttempt,
    now: DateTime<Utc>,
) -> Result<Attempt, StoreError> {
    let operation = attempt.request.operation();
    // The next number and the key made of it, in the statement that inserts it.
    let (key, number): (String, i32) = sqlx::query_as(
        "WITH next AS (
             SELECT coalesce(max(attempt), 0) + 1 AS attempt
             FROM provider_attempts WHERE payment_id = $2 AND operation = $3)
         INSERT INTO provider_attempts (idempotency_key, payment_id, operation, attempt, status, amount, currency,
                                        payment_method, target_ref, correlation_id, causation_id, started_at)
         SELECT $1 || next.attempt, $2, $3, next.attempt, 'started', $4, $5, $6, $7, $8, $9, $10 FROM next
         RETURNING idempotency_key, attempt",
    )
    .bind(domain::idempotency_key_prefix(attempt.payment_id.as_uuid(), operation))
    .bind(attempt.payment_id.as_uuid())
    .bind(operation.as_str())
    .bind(attempt.amount.amount.get())
    .bind(attempt.amount.currency.as_str())
    .bind(attempt.request.method())
    .bind(attempt.request.target())
    .bind(attempt.origin.correlation_id)
    .bind(attempt.origin.causation_id)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let number = u32::try_from(number).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(Attempt {
        key,
        payment_id: attempt.payment_id,
        order_id: attempt.order_id,
        number,
        status: AttemptStatus::Started,
        request: attempt.request,
        amount: attempt.amount,
        origin: attempt.origin,
    })
}

/// Locks and reads an attempt and its payment.
pub async fn lock_attempt(tx: &mut PgConnection, key: &str) -> Result<Option<(PaymentRow, Attempt)>, StoreError> {
    let query = format!(
        "SELECT {PAYMENT_COLUMNS}, {ATTEMPT_COLUMNS} FROM provider_attempts a JOIN payments p USING (payment_id)
         WHERE a.idempotency_key = $1 FOR UPDATE OF p, a"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(query)).bind(key).fetch_optional(tx).await?;
    row.as_ref().map(|row| Ok((PaymentRow::from_row(row)?, Attempt::from_row(row)?))).transpose()
}

/// The latest attempt of `operation` on a payment.
pub async fn last_attempt(
    tx: &mut PgConnection,
    payment: PaymentId,
    operation: Operation,
) -> Result<Option<Attempt>, StoreError> {
    let query = format!(
        "SELECT {ATTEMPT_COLUMNS} FROM provider_attempts a JOIN payments p USING (payment_id)
         WHERE a.payment_id = $1 AND a.operation = $2 ORDER BY a.attempt DESC LIMIT 1"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(query))
        .bind(payment.as_uuid())
        .bind(operation.as_str())
        .fetch_optional(tx)
        .await?;
    row.as_ref().map(Attempt::from_row).transpose()
}

/// Records an attempt's outcome.
pub async fn finish_attempt(
    tx: &mut PgConnection,
    key: &str,
    status: AttemptStatus,
    provider_ref: Option<&ProviderRef>,
    outcome: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE provider_attempts SET status = $2, provider_ref = $3, outcome = $4, finished_at = $5
         WHERE idempotency_key = $1",
    )
    .bind(key)
    .bind(status.as_str())
    .bind(provider_ref.map(|r| r.0.as_str()))
    .bind(outcome)
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

/// A started call timed out (or had no conclusive answer): its outcome is
/// unknown until recovery asks.
pub async fn mark_unknown<'c>(executor: impl sqlx::PgExecutor<'c>, key: &str) -> Result<bool, StoreError> {
    let marked = sqlx::query(
        "UPDATE provider_attempts SET status = 'unknown' WHERE idempotency_key = $1 AND status = 'started'",
    )
    .bind(key)
    .execute(executor)
    .await?;
    Ok(marked.rows_affected() == 1)
}

/// Recovery asked the provider about these attempts: those still open go
/// to the back of recovery's queue.
pub async fn mark_checked(pool: &PgPool, keys: &[String], now: DateTime<Utc>) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE provider_attempts SET checked_at = $2
         WHERE idempotency_key = ANY($1) AND status IN ('started', 'unknown')",
    )
    .bind(keys)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// Attempts whose outcome recovery must find: every `unknown` one, and
/// `started` ones older than `started_before` (a crash between commit and
/// call); never asked about first, then those asked least recently, so
/// attempts the provider keeps answering "pending" cannot starve newer ones.
pub async fn attempts_to_recover(
    pool: &PgPool,
    started_before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Attempt>, StoreError> {
    let query = format!(
        "SELECT {ATTEMPT_COLUMNS} FROM provider_attempts a JOIN payments p USING (payment_id)
         WHERE a.status = 'unknown' OR (a.status = 'started' AND a.started_at < $1)
         ORDER BY a.checked_at NULLS FIRST, a.started_at LIMIT $2"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(query)).bind(started_before).bind(limit).fetch_all(pool).await?;
    rows.iter().map(Attempt::from_row).collect()
}

/// Payments whose next capture, void or refund attempt is due.
pub async fn due_retries(pool: &PgPool, now: DateTime<Utc>, limit: i64) -> Result<Vec<PaymentId>, StoreError> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT payment_id FROM payments WHERE retry_at IS NOT NULL AND retry_at <= $1 ORDER BY retry_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(ids.into_iter().map(PaymentId::from_uuid).collect())
}

/// Posts (balanced) entries, in one statement. The database refuses an
/// unbalanced one again at commit.
pub async fn post_entries(
    tx: &mut PgConnection,
    order: OrderId,
    payment: PaymentId,
    entries: &[JournalEntry],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let ids: Vec<Uuid> = entries.iter().map(|_| Uuid::now_v7()).collect();
    let kinds: Vec<&str> = entries.iter().map(|entry| entry.kind().as_str()).collect();
    let (mut entry_ids, mut numbers, mut accounts, mut parties, mut currencies, mut amounts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (id, entry) in ids.iter().zip(entries) {
        for (number, posting) in (1_i32..).zip(entry.postings()) {
            entry_ids.push(*id);
            numbers.push(number);
            accounts.push(posting.account.as_str());
            parties.push(posting.party);
            currencies.push(posting.currency.as_str());
            amounts.push(posting.amount);
        }
    }
    sqlx::query(
        "WITH entries AS (
             INSERT INTO journal_entries (id, order_id, payment_id, kind, created_at)
             SELECT id, $1, $2, kind, $3 FROM unnest($4::uuid[], $5::text[]) AS e(id, kind))
         INSERT INTO journal_lines (entry_id, line_no, account, party, currency, amount)
         SELECT * FROM unnest($6::uuid[], $7::int[], $8::text[], $9::uuid[], $10::text[], $11::bigint[])",
    )
    .bind(order.as_uuid())
    .bind(payment.as_uuid())
    .bind(now)
    .bind(&ids)
    .bind(&kinds)
    .bind(&entry_ids)
    .bind(&numbers)
    .bind(&accounts)
    .bind(&parties)
    .bind(&currencies)
    .bind(&amounts)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A payment's posted entry of `kind`, read back (and checked to balance).
pub async fn posted_entry(
    tx: &mut PgConnection,
    payment: PaymentId,
    kind: EntryKind,
) -> Result<Option<JournalEntry>, StoreError> {
    let rows = sqlx::query(
        "SELECT l.account, l.party, l.currency, l.amount
         FROM journal_entries e JOIN journal_lines l ON l.entry_id = e.id
         WHERE e.payment_id = $1 AND e.kind = $2 ORDER BY l.line_no",
    )
    .bind(payment.as_uuid())
    .bind(kind.as_str())
    .fetch_all(tx)
    .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let postings = rows.iter().map(posting).collect::<Result<Vec<_>, _>>()?;
    Ok(Some(JournalEntry::new(kind, postings)?))
}

/// A journal line read back.
pub(crate) fn posting(row: &PgRow) -> Result<Posting, StoreError> {
    let account: String = row.try_get("account")?;
    let currency: String = row.try_get("currency")?;
    Ok(Posting {
        account: Account::parse(&account).ok_or_else(|| StoreError::Corrupt(format!("account {account}")))?,
        party: row.try_get("party")?,
        currency: Currency::try_from(currency).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        amount: row.try_get("amount")?,
    })
}
