//! Notification's Postgres tables: users (addresses), orders (their
//! customers), events parked until their order is known, notifications and
//! the email queue. Runtime queries.

use chrono::{DateTime, Utc};
use emporium_schemas::MessageId;
use emporium_schemas::commands::notification::NotificationView;
use emporium_schemas::values::{NotificationId, OrderId, UserId};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::domain::{self, Draft};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a stored value is not valid: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Runs notification's migrations and the messaging tables' (inbox, outbox).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("./migrations").run(pool).await?;
    emporium_nats::outbox::migrate(pool).await
}

/// Learns (or relearns) where a user is written to.
pub async fn upsert_user(
    tx: &mut PgConnection,
    user: UserId,
    email: &str,
    name: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO users (user_id, email, name, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id) DO UPDATE SET email = $2, name = $3, updated_at = $4",
    )
    .bind(user.as_uuid())
    .bind(email)
    .bind(name)
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

/// Remembers an order's customer (an order has one for life).
pub async fn remember_order(
    tx: &mut PgConnection,
    order: OrderId,
    customer: UserId,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO orders (order_id, customer_id, created_at) VALUES ($1, $2, $3) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order.as_uuid())
    .bind(customer.as_uuid())
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

pub async fn customer_of(tx: &mut PgConnection, order: OrderId) -> Result<Option<UserId>, StoreError> {
    let customer: Option<Uuid> = sqlx::query_scalar("SELECT customer_id FROM orders WHERE order_id = $1")
        .bind(order.as_uuid())
        .fetch_optional(tx)
        .await?;
    Ok(customer.map(UserId::from_uuid))
}

/// An event kept until its order's customer is known: its envelope's type
/// and schema, and its data, to be decoded back as it arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct Parked {
    pub event: MessageId,
    pub order: OrderId,
    pub event_type: String,
    pub schema: u32,
    pub data: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
}

/// Parks `parked` in the caller's transaction; `false` if it is parked
/// already (a replay after the inbox forgot it).
pub async fn park(tx: &mut PgConnection, parked: &Parked, now: DateTime<Utc>) -> Result<bool, StoreError> {
    let schema = i32::try_from(parked.schema).map_err(|_| StoreError::Corrupt(format!("schema {}", parked.schema)))?;
    let inserted = sqlx::query(
        "INSERT INTO parked_events (event_id, order_id, event_type, schema, data, occurred_at, parked_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(parked.event.as_uuid())
    .bind(parked.order.as_uuid())
    .bind(&parked.event_type)
    .bind(schema)
    .bind(&parked.data)
    .bind(parked.occurred_at)
    .bind(now)
    .execute(tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Takes (deletes and returns) `order`'s parked events, in the order they
/// happened, in the caller's transaction.
pub async fn take_parked(tx: &mut PgConnection, order: OrderId) -> Result<Vec<Parked>, StoreError> {
    let rows = sqlx::query(
        "WITH taken AS (DELETE FROM parked_events WHERE order_id = $1 RETURNING *)
         SELECT event_id, order_id, event_type, schema, data, occurred_at FROM taken
         ORDER BY occurred_at, event_id",
    )
    .bind(order.as_uuid())
    .fetch_all(tx)
    .await?;
    rows.iter()
        .map(|row| {
            let schema: i32 = row.try_get("schema")?;
            Ok(Parked {
                event: MessageId::from_uuid(row.try_get("event_id")?),
                order: OrderId::from_uuid(row.try_get("order_id")?),
                event_type: row.try_get("event_type")?,
                schema: u32::try_from(schema).map_err(|_| StoreError::Corrupt(format!("parked schema {schema}")))?,
                data: row.try_get("data")?,
                occurred_at: row.try_get("occurred_at")?,
            })
        })
        .collect()
}

/// Creates the drafts of `event`, and queues the emails of those that send
/// one, in the caller's transaction and one statement. A recipient who
/// already has a notification of `event` gets nothing new (the unique key).
/// Returns how many notifications and emails were new.
pub async fn create(
    tx: &mut PgConnection,
    event: MessageId,
    drafts: &[Draft],
    now: DateTime<Utc>,
) -> Result<(usize, usize), StoreError> {
    if drafts.is_empty() {
        return Ok((0, 0));
    }
    let ids: Vec<Uuid> = drafts.iter().map(|_| *NotificationId::new_v7().as_uuid()).collect();
    let recipients: Vec<Uuid> = drafts.iter().map(|d| *d.recipient.as_uuid()).collect();
    let kinds: Vec<&str> = drafts.iter().map(|d| domain::kind_name(d.kind)).collect();
    let titles: Vec<&str> = drafts.iter().map(|d| d.title.as_str()).collect();
    let bodies: Vec<&str> = drafts.iter().map(|d| d.body.as_str()).collect();
    let orders: Vec<Option<Uuid>> = drafts.iter().map(|d| d.order.map(|o| *o.as_uuid())).collect();
    // An email's id, or none for a notification that is not emailed.
    let emails: Vec<Option<Uuid>> = drafts.iter().map(|d| d.email.then(Uuid::now_v7)).collect();
    // Only the notifications inserted (not already there) queue their email.
    let (created, queued): (i64, i64) = sqlx::query_as(
        "WITH draft AS (
             SELECT * FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::uuid[], $8::uuid[])
                 AS d (id, user_id, kind, title, body, order_id, email_id)
         ), created AS (
             INSERT INTO notifications (id, event_id, user_id, kind, title, body, order_id, created_at)
             SELECT id, $1, user_id, kind, title, body, order_id, $9 FROM draft
             ON CONFLICT ON CONSTRAINT notifications_event_recipient DO NOTHING
             RETURNING id
         ), queued AS (
             INSERT INTO emails (id, notification_id, user_id, subject, body, queued_at, next_attempt_at)
             SELECT draft.email_id, draft.id, draft.user_id, draft.title, draft.body, $9, $9
             FROM created JOIN draft USING (id)
             WHERE draft.email_id IS NOT NULL
             RETURNING 1
         )
         SELECT (SELECT count(*) FROM created), (SELECT count(*) FROM queued)",
    )
    .bind(event.as_uuid())
    .bind(&ids)
    .bind(&recipients)
    .bind(&kinds)
    .bind(&titles)
    .bind(&bodies)
    .bind(&orders)
    .bind(&emails)
    .bind(now)
    .fetch_one(tx)
    .await?;
    let count = |n: i64| usize::try_from(n).unwrap_or(0);
    Ok((count(created), count(queued)))
}

/// Where a page starts: after the notification with this time and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: NotificationId,
}

impl Cursor {
    pub fn after(view: &NotificationView) -> Self {
        Self { created_at: view.created_at, id: view.id }
    }

    /// `<microseconds since the epoch>_<id>`: Postgres keeps microseconds.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.created_at.timestamp_micros(), self.id)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (micros, id) = text.split_once('_')?;
        let created_at = DateTime::<Utc>::from_timestamp_micros(micros.parse().ok()?)?;
        Some(Self { created_at, id: NotificationId::from_uuid(id.parse().ok()?) })
    }
}

fn view(row: &PgRow) -> Result<NotificationView, StoreError> {
    let kind: String = row.try_get("kind")?;
    Ok(NotificationView {
        id: NotificationId::from_uuid(row.try_get("id")?),
        kind: domain::parse_kind(&kind).ok_or_else(|| StoreError::Corrupt(format!("notification kind {kind}")))?,
        title: row.try_get("title")?,
        body: row.try_get("body")?,
        order_id: row.try_get::<Option<Uuid>, _>("order_id")?.map(OrderId::from_uuid),
        created_at: row.try_get("created_at")?,
        read_at: row.try_get("read_at")?,
    })
}

/// Up to `limit` of `user`'s notifications, newest first, after `cursor`.
pub async fn list(
    pool: &PgPool,
    user: UserId,
    unread_only: bool,
    cursor: Option<Cursor>,
    limit: u32,
) -> Result<Vec<NotificationView>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, kind, title, body, order_id, created_at, read_at FROM notifications
         WHERE user_id = $1
           AND (NOT $2 OR read_at IS NULL)
           AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid))
         ORDER BY created_at DESC, id DESC
         LIMIT $5",
    )
    .bind(user.as_uuid())
    .bind(unread_only)
    .bind(cursor.map(|c| c.created_at))
    .bind(cursor.map(|c| *c.id.as_uuid()))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(view).collect()
}

pub async fn unread(pool: &PgPool, user: UserId) -> Result<u64, StoreError> {
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL")
        .bind(user.as_uuid())
        .fetch_one(pool)
        .await?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Marks `user`'s notification `id` read (the first time only); `None` if
/// there is no such notification of theirs.
pub async fn mark_read(
    pool: &PgPool,
    id: NotificationId,
    user: UserId,
    now: DateTime<Utc>,
) -> Result<Option<NotificationView>, StoreError> {
    let row = sqlx::query(
        "UPDATE notifications SET read_at = coalesce(read_at, $3) WHERE id = $1 AND user_id = $2
         RETURNING id, kind, title, body, order_id, created_at, read_at",
    )
    .bind(id.as_uuid())
    .bind(user.as_uuid())
    .bind(now)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(view).transpose()
}

/// An email due for sending, locked by its claimer.
#[derive(Debug, Clone)]
pub struct DueEmail {
    pub id: Uuid,
    pub subject: String,
    pub body: String,
    pub address: String,
    pub name: String,
    pub attempts: u32,
}

/// Claims up to `limit` emails due at `now`, oldest due first, locking their
/// rows for the rest of `tx` (others skip them). Emails of recipients with
/// no known address are not due: they wait for the address.
pub async fn claim_due(tx: &mut PgConnection, now: DateTime<Utc>, limit: usize) -> Result<Vec<DueEmail>, StoreError> {
    let rows = sqlx::query(
        "SELECT e.id, e.subject, e.body, e.attempts, u.email, u.name
         FROM emails e JOIN users u ON u.user_id = e.user_id
         WHERE e.sent_at IS NULL AND e.next_attempt_at <= $1
         ORDER BY e.next_attempt_at, e.id
         LIMIT $2
         FOR UPDATE OF e SKIP LOCKED",
    )
    .bind(now)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(tx)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(DueEmail {
                id: row.try_get("id")?,
                subject: row.try_get("subject")?,
                body: row.try_get("body")?,
                address: row.try_get("email")?,
                name: row.try_get("name")?,
                attempts: u32::try_from(row.try_get::<i32, _>("attempts")?).unwrap_or(0),
            })
        })
        .collect()
}

/// Records that the sink took these emails.
pub async fn mark_sent(tx: &mut PgConnection, ids: &[Uuid], now: DateTime<Utc>) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE emails SET sent_at = $2, attempts = attempts + 1, last_attempt_at = $2 WHERE id = ANY($1)")
        .bind(ids)
        .bind(now)
        .execute(tx)
        .await?;
    Ok(())
}

/// Records a failed attempt: counted, its error kept, the next one due at `retry_at`.
pub async fn mark_failed(
    tx: &mut PgConnection,
    id: Uuid,
    error: &str,
    now: DateTime<Utc>,
    retry_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE emails SET attempts = attempts + 1, last_attempt_at = $2, last_error = $3, next_attempt_at = $4
         WHERE id = $1",
    )
    .bind(id)
    .bind(now)
    .bind(error)
    .bind(retry_at)
    .execute(tx)
    .await?;
    Ok(())
}

/// Unsent emails whose recipient has no known address yet: they wait.
pub async fn awaiting_address(pool: &PgPool) -> Result<u64, StoreError> {
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM emails e WHERE e.sent_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM users u WHERE u.user_id = e.user_id)",
    )
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(count).unwrap_or(0))
}
