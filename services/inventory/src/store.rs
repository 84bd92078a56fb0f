//! Inventory's Postgres tables: stock, reservations (with their lines) and
//! movements. Runtime queries. Every function that changes stock records
//! its movements in the same transaction; events go to the outbox there too.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use emporium_schemas::values::{OrderId, ProductId, StockLevel, UserId};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::domain::{Reservation, Stock};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a stored value is not valid: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Runs inventory's migrations and the messaging tables' (outbox, inbox).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("./migrations").run(pool).await?;
    emporium_nats::outbox::migrate(pool).await
}

fn count(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

/// The stock in a row with `on_hand` and `reserved` columns.
fn stock_of(row: &PgRow, delisted: bool) -> Result<Stock, sqlx::Error> {
    Ok(Stock { on_hand: count(row.try_get("on_hand")?), reserved: count(row.try_get("reserved")?), delisted })
}

/// A locked stock row.
#[derive(Debug, Clone, Copy)]
pub struct StockRow {
    pub seller: UserId,
    pub stock: Stock,
}

/// Starts listing a product at zero stock, unless inventory already knows it.
/// Returns whether it was new.
pub async fn list_product(
    tx: &mut PgConnection,
    product: ProductId,
    seller: UserId,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO stock (product_id, seller_id, version, updated_at) VALUES ($1, $2, 1, $3)
         ON CONFLICT (product_id) DO NOTHING",
    )
    .bind(product.as_uuid())
    .bind(seller.as_uuid())
    .bind(now)
    .execute(tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Takes a product off sale. A product never listed is remembered as
/// delisted, so its late (or replayed) creation lists nothing.
pub async fn delist_product(
    tx: &mut PgConnection,
    product: ProductId,
    seller: UserId,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO stock (product_id, seller_id, version, delisted_at, updated_at) VALUES ($1, $2, 1, $3, $3)
         ON CONFLICT (product_id) DO UPDATE SET delisted_at = coalesce(stock.delisted_at, $3)",
    )
    .bind(product.as_uuid())
    .bind(seller.as_uuid())
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

/// Locks the stock rows of `products` in product-id order (the order every
/// transaction locks them in, so none can deadlock another) and reads them.
pub async fn lock_stock(
    tx: &mut PgConnection,
    products: impl IntoIterator<Item = ProductId>,
) -> Result<BTreeMap<ProductId, StockRow>, StoreError> {
    let ids: Vec<Uuid> = products.into_iter().map(|p| *p.as_uuid()).collect();
    let rows = sqlx::query(
        "SELECT product_id, seller_id, on_hand, reserved, delisted_at IS NOT NULL AS delisted
         FROM stock WHERE product_id = ANY($1) ORDER BY product_id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(tx)
    .await?;
    rows.iter()
        .map(|row| {
            let stock = stock_of(row, row.try_get("delisted")?)?;
            let seller = UserId::from_uuid(row.try_get("seller_id")?);
            Ok((ProductId::from_uuid(row.try_get("product_id")?), StockRow { seller, stock }))
        })
        .collect()
}

/// A product's stock now, without locking.
pub async fn stock(pool: &PgPool, product: ProductId) -> Result<Option<StockLevel>, StoreError> {
    let row = sqlx::query("SELECT on_hand, reserved FROM stock WHERE product_id = $1 AND delisted_at IS NULL")
        .bind(product.as_uuid())
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(|row| stock_of(row, false)).transpose()?.map(|stock| stock.level()))
}

/// Why a stock row changed, as its movement records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MovementReason {
    Set,
    Reserved,
    Released,
    Expired,
    Shipped,
}

impl MovementReason {
    fn as_str(self) -> &'static str {
        match self {
            MovementReason::Set => "set",
            MovementReason::Reserved => "reserved",
            MovementReason::Released => "released",
            MovementReason::Expired => "expired",
            MovementReason::Shipped => "shipped",
        }
    }
}

/// One stock row's change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delta {
    pub product: ProductId,
    pub on_hand: i32,
    pub reserved: i32,
}

/// Who or what caused a set of changes.
#[derive(Debug, Clone, Copy)]
pub struct Cause {
    pub reason: MovementReason,
    pub actor: Option<UserId>,
    pub order: Option<OrderId>,
    pub at: DateTime<Utc>,
}

/// Applies `deltas` to locked stock rows and records a movement for each.
/// Returns each row's new level and version (its next `stock_changed` seq).
pub async fn apply(
    tx: &mut PgConnection,
    deltas: &[Delta],
    cause: Cause,
) -> Result<Vec<(ProductId, StockLevel, i64)>, StoreError> {
    let products: Vec<Uuid> = deltas.iter().map(|d| *d.product.as_uuid()).collect();
    let on_hand: Vec<i32> = deltas.iter().map(|d| d.on_hand).collect();
    let reserved: Vec<i32> = deltas.iter().map(|d| d.reserved).collect();
    let rows = sqlx::query(
        "UPDATE stock SET on_hand = stock.on_hand + d.on_hand, reserved = stock.reserved + d.reserved,
                          version = stock.version + 1, updated_at = $4
         FROM unnest($1::uuid[], $2::int[], $3::int[]) AS d(product_id, on_hand, reserved)
         WHERE stock.product_id = d.product_id
         RETURNING stock.product_id, stock.on_hand, stock.reserved, stock.version",
    )
    .bind(&products)
    .bind(&on_hand)
    .bind(&reserved)
    .bind(cause.at)
    .fetch_all(&mut *tx)
    .await?;
    if rows.len() != deltas.len() {
        return Err(StoreError::Corrupt(format!("{} of {} stock rows changed", rows.len(), deltas.len())));
    }
    let ids: Vec<Uuid> = deltas.iter().map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        "INSERT INTO movements (id, product_id, on_hand_delta, reserved_delta, reason, actor_id, order_id, at)
         SELECT id, product_id, on_hand, reserved, $5, $6, $7, $8
         FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::int[]) AS m(id, product_id, on_hand, reserved)",
    )
    .bind(&ids)
    .bind(&products)
    .bind(&on_hand)
    .bind(&reserved)
    .bind(cause.reason.as_str())
    .bind(cause.actor.map(|a| *a.as_uuid()))
    .bind(cause.order.map(|o| *o.as_uuid()))
    .bind(cause.at)
    .execute(&mut *tx)
    .await?;
    rows.iter()
        .map(|row| {
            let level = stock_of(row, false)?.level();
            Ok((ProductId::from_uuid(row.try_get("product_id")?), level, row.try_get("version")?))
        })
        .collect()
}

/// An order's reservation, locked: its state, version and held lines.
#[derive(Debug, Clone)]
pub struct ReservationRow {
    pub state: Reservation,
    pub version: i64,
    pub confirmed: bool,
    pub lines: Vec<(ProductId, u32)>,
}

pub async fn lock_reservation(tx: &mut PgConnection, order: OrderId) -> Result<Option<ReservationRow>, StoreError> {
    let Some(row) = sqlx::query("SELECT status, version, confirmed FROM reservations WHERE order_id = $1 FOR UPDATE")
        .bind(order.as_uuid())
        .fetch_optional(&mut *tx)
        .await?
    else {
        return Ok(None);
    };
    let status: String = row.try_get("status")?;
    let state =
        Reservation::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("reservation status {status}")))?;
    let lines =
        sqlx::query("SELECT product_id, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY product_id")
            .bind(order.as_uuid())
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|line| Ok((ProductId::from_uuid(line.try_get("product_id")?), count(line.try_get("quantity")?))))
            .collect::<Result<_, sqlx::Error>>()?;
    Ok(Some(ReservationRow { state, version: row.try_get("version")?, confirmed: row.try_get("confirmed")?, lines }))
}

/// Records a new reservation (held with its lines, rejected, or a cancellation seen first).
pub async fn insert_reservation(
    tx: &mut PgConnection,
    order: OrderId,
    state: Reservation,
    lines: &[(ProductId, u32)],
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO reservations (order_id, status, version, expires_at, created_at, updated_at)
         VALUES ($1, $2, 1, $3, $4, $4)",
    )
    .bind(order.as_uuid())
    .bind(state.as_str())
    .bind(expires_at)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if !lines.is_empty() {
        let products: Vec<Uuid> = lines.iter().map(|(p, _)| *p.as_uuid()).collect();
        let quantities: Vec<i32> = lines.iter().map(|(_, q)| i32::try_from(*q).unwrap_or(i32::MAX)).collect();
        sqlx::query(
            "INSERT INTO reservation_lines (order_id, product_id, quantity)
             SELECT $1, product_id, quantity FROM unnest($2::uuid[], $3::int[]) AS l(product_id, quantity)",
        )
        .bind(order.as_uuid())
        .bind(&products)
        .bind(&quantities)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Moves a locked reservation to `state` as `version`.
pub async fn update_reservation(
    tx: &mut PgConnection,
    order: OrderId,
    state: Reservation,
    version: i64,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE reservations SET status = $2, version = $3, updated_at = $4 WHERE order_id = $1")
        .bind(order.as_uuid())
        .bind(state.as_str())
        .bind(version)
        .bind(now)
        .execute(tx)
        .await?;
    Ok(())
}

/// The order was confirmed: its hold no longer expires.
pub async fn mark_confirmed(tx: &mut PgConnection, order: OrderId, now: DateTime<Utc>) -> Result<(), StoreError> {
    sqlx::query("UPDATE reservations SET confirmed = true, updated_at = $2 WHERE order_id = $1")
        .bind(order.as_uuid())
        .bind(now)
        .execute(tx)
        .await?;
    Ok(())
}

/// Unconfirmed holds past their backstop, oldest first.
pub async fn expired_holds(pool: &PgPool, now: DateTime<Utc>, limit: i64) -> Result<Vec<OrderId>, StoreError> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT order_id FROM reservations WHERE status = 'held' AND NOT confirmed AND expires_at <= $1
         ORDER BY expires_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(ids.into_iter().map(OrderId::from_uuid).collect())
}
