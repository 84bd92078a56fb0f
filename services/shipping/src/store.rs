//! Shipping's Postgres tables: shipments, and orders cancelled before
//! shipping saw them confirmed. Runtime queries; events go to the outbox in
//! the same transaction as the change they announce.

use chrono::{DateTime, Utc};
use emporium_schemas::commands::order::ShipmentStatus;
use emporium_schemas::commands::shipping::ShipmentDetails;
use emporium_schemas::values::{OrderId, ShipmentId, Text};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};

use crate::domain;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a stored value is not valid: {0}")]
    Corrupt(String),
    #[error("every tracking number serial is used")]
    SerialsExhausted,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Runs shipping's migrations and the messaging tables' (outbox, inbox).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("./migrations").run(pool).await?;
    emporium_nats::outbox::migrate(pool).await
}

fn status_str(status: ShipmentStatus) -> &'static str {
    match status {
        ShipmentStatus::Created => "created",
        ShipmentStatus::Shipped => "shipped",
        ShipmentStatus::Delivered => "delivered",
        ShipmentStatus::Cancelled => "cancelled",
    }
}

fn parse_status(text: &str) -> Option<ShipmentStatus> {
    Some(match text {
        "created" => ShipmentStatus::Created,
        "shipped" => ShipmentStatus::Shipped,
        "delivered" => ShipmentStatus::Delivered,
        "cancelled" => ShipmentStatus::Cancelled,
        _ => return None,
    })
}

fn text(row: &PgRow, column: &str) -> Result<Text, StoreError> {
    let value: String = row.try_get(column)?;
    Text::try_from(value).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn details(row: &PgRow) -> Result<ShipmentDetails, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(ShipmentDetails {
        id: ShipmentId::from_uuid(row.try_get("id")?),
        order_id: OrderId::from_uuid(row.try_get("order_id")?),
        status: parse_status(&status).ok_or_else(|| StoreError::Corrupt(format!("shipment status {status}")))?,
        carrier: text(row, "carrier")?,
        tracking_number: text(row, "tracking_number")?,
        created_at: row.try_get("created_at")?,
        shipped_at: row.try_get("shipped_at")?,
        delivered_at: row.try_get("delivered_at")?,
        cancelled_at: row.try_get("cancelled_at")?,
    })
}

/// The columns [`details`] reads, as a literal (sqlx takes only static SQL).
macro_rules! columns {
    () => {
        "id, order_id, status, carrier, tracking_number, created_at, shipped_at, delivered_at, cancelled_at"
    };
}

/// What shipping knows of `order`, with its shipment (locked) if it has one.
pub async fn known(
    tx: &mut PgConnection,
    order: OrderId,
) -> Result<(domain::Known, Option<ShipmentDetails>), StoreError> {
    let row = sqlx::query(concat!("SELECT ", columns!(), " FROM shipments WHERE order_id = $1 FOR UPDATE"))
        .bind(order.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(row) = row {
        let shipment = details(&row)?;
        return Ok((domain::Known::Shipment(shipment.status), Some(shipment)));
    }
    let cancelled: Option<i32> = sqlx::query_scalar("SELECT 1 FROM cancelled_first WHERE order_id = $1")
        .bind(order.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
    Ok((if cancelled.is_some() { domain::Known::CancelledFirst } else { domain::Known::Nothing }, None))
}

/// The next tracking number.
pub async fn next_tracking_number(tx: &mut PgConnection) -> Result<Text, StoreError> {
    let serial: i32 = match sqlx::query_scalar("SELECT nextval('tracking_serials')::integer").fetch_one(tx).await {
        Ok(serial) => serial,
        // 2200H: sequence_generator_limit_exceeded.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("2200H") => {
            return Err(StoreError::SerialsExhausted);
        }
        Err(e) => return Err(e.into()),
    };
    u32::try_from(serial)
        .ok()
        .and_then(domain::tracking_number)
        .and_then(|number| Text::try_from(number).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("tracking serial {serial}")))
}

/// Records a new shipment.
pub async fn insert(tx: &mut PgConnection, shipment: &ShipmentDetails) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO shipments (id, order_id, status, version, carrier, tracking_number, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(shipment.id.as_uuid())
    .bind(shipment.order_id.as_uuid())
    .bind(status_str(shipment.status))
    .bind(version(shipment.status))
    .bind(shipment.carrier.as_str())
    .bind(shipment.tracking_number.as_str())
    .bind(shipment.created_at)
    .execute(tx)
    .await?;
    Ok(())
}

fn version(status: ShipmentStatus) -> i64 {
    i64::try_from(domain::version(status).get()).unwrap_or(i64::MAX)
}

/// Remembers that `order` was cancelled before shipping saw it confirmed.
pub async fn remember_cancelled(tx: &mut PgConnection, order: OrderId, at: DateTime<Utc>) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO cancelled_first (order_id, cancelled_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(order.as_uuid())
        .bind(at)
        .execute(tx)
        .await?;
    Ok(())
}

/// A shipment, locked until the transaction ends: moves on one shipment wait for each other.
pub async fn lock(tx: &mut PgConnection, shipment: ShipmentId) -> Result<Option<ShipmentDetails>, StoreError> {
    let row = sqlx::query(concat!("SELECT ", columns!(), " FROM shipments WHERE id = $1 FOR UPDATE"))
        .bind(shipment.as_uuid())
        .fetch_optional(tx)
        .await?;
    row.as_ref().map(details).transpose()
}

/// Moves a locked shipment to `status` at `at`, stamping that status's time.
/// Returns the shipment as it now is.
pub async fn set_status(
    tx: &mut PgConnection,
    shipment: ShipmentId,
    status: ShipmentStatus,
    at: DateTime<Utc>,
) -> Result<ShipmentDetails, StoreError> {
    // Each status stamps its own time; the others keep theirs.
    let row = sqlx::query(concat!(
        "UPDATE shipments SET status = $2, version = $3, updated_at = $4,
             shipped_at = CASE WHEN $2 = 'shipped' THEN $4 ELSE shipped_at END,
             delivered_at = CASE WHEN $2 = 'delivered' THEN $4 ELSE delivered_at END,
             cancelled_at = CASE WHEN $2 = 'cancelled' THEN $4 ELSE cancelled_at END
         WHERE id = $1 RETURNING ",
        columns!()
    ))
    .bind(shipment.as_uuid())
    .bind(status_str(status))
    .bind(version(status))
    .bind(at)
    .fetch_optional(tx)
    .await?;
    let row = row.ok_or_else(|| StoreError::Corrupt(format!("shipment {shipment} vanished under its lock")))?;
    details(&row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_each_status_when_stored_then_it_reads_back() {
        for status in
            [ShipmentStatus::Created, ShipmentStatus::Shipped, ShipmentStatus::Delivered, ShipmentStatus::Cancelled]
        {
            assert_eq!(parse_status(status_str(status)), Some(status));
        }
    }
}
