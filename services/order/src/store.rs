//! Reading orders back: one order by id, and the listings (newest first, a
//! page at a time) from the `entity_state` rows the actors commit.

use emporium_schemas::events::order::OrderStatus;
use emporium_schemas::values::{OrderId, UserId};
use sqlx::PgPool;

use crate::domain::{Order, OrderState, Viewer};
use crate::entity::Orders;

/// Creates or updates the order database: entity rows, outbox and inbox, listing indexes.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    emporium_actors::postgres::migrate(pool).await?;
    emporium_nats::outbox::migrate(pool).await?;
    sqlx::migrate!("./migrations").run(pool).await
}

/// Why reading failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("a stored order does not decode: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// Where a listing page starts: after this order (its sort key and id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub placed_at_micros: i64,
    pub id: OrderId,
}

impl Cursor {
    pub fn after(order: &Order) -> Self {
        Self { placed_at_micros: order.placed_at_micros, id: order.id }
    }

    pub fn encode(&self) -> String {
        format!("{}_{}", self.placed_at_micros, self.id)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (micros, id) = text.split_once('_')?;
        Some(Self { placed_at_micros: micros.parse().ok()?, id: OrderId::from_uuid(id.parse().ok()?) })
    }
}

/// One order, if it was placed.
pub async fn order(pool: &PgPool, id: OrderId) -> Result<Option<Order>, StoreError> {
    let state: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT state FROM entity_state WHERE kind = $1 AND id = $2")
            .bind(<Orders as emporium_actors::Persistent>::KIND)
            .bind(id.to_string())
            .fetch_optional(pool)
            .await?;
    match state {
        Some(state) => Ok(serde_json::from_value::<OrderState>(state)?.0),
        None => Ok(None),
    }
}

/// Up to `limit` orders `viewer` may see, newest first, after `cursor`.
pub async fn list(
    pool: &PgPool,
    viewer: Viewer,
    status: Option<OrderStatus>,
    cursor: Option<Cursor>,
    limit: u32,
) -> Result<Vec<Order>, StoreError> {
    let (customer, seller): (Option<UserId>, Option<UserId>) = match viewer {
        Viewer::Customer(user) => (Some(user), None),
        Viewer::Seller(user) => (None, Some(user)),
        Viewer::Admin => (None, None),
    };
    let status = status.map(|status| serde_json::to_value(status).ok().and_then(|v| v.as_str().map(str::to_owned)));
    let rows: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT state FROM entity_state
         WHERE kind = 'order'
           AND ($1::text IS NULL OR state ->> 'customer_id' = $1)
           AND ($2::text IS NULL OR state -> 'seller_ids' @> jsonb_build_array($2::text))
           AND ($3::text IS NULL OR state ->> 'status' = $3)
           AND ($4::bigint IS NULL OR ((state ->> 'placed_at_micros')::bigint, id) < ($4, $5::text))
         ORDER BY (state ->> 'placed_at_micros')::bigint DESC, id DESC
         LIMIT $6",
    )
    .bind(customer.map(|user| user.to_string()))
    .bind(seller.map(|user| user.to_string()))
    .bind(status.flatten())
    .bind(cursor.map(|c| c.placed_at_micros))
    .bind(cursor.map(|c| c.id.to_string()))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .filter_map(|row| serde_json::from_value::<OrderState>(row).map(|state| state.0).transpose())
        .collect::<Result<Vec<Order>, _>>()
        .map_err(StoreError::from)
}
