//! The inbox: a consumer records `(consumer, event id)` in the transaction
//! that applies the event, so a redelivered or replayed event finds its row
//! and changes nothing.

use emporium_schemas::MessageId;
use sqlx::PgConnection;

/// Records that `consumer` applies `event`, in the caller's transaction.
/// Returns false if it already had: the caller must then change nothing.
pub async fn record(tx: &mut PgConnection, consumer: &str, event: MessageId) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query("INSERT INTO inbox (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(consumer)
        .bind(event.as_uuid())
        .execute(tx)
        .await?;
    Ok(inserted.rows_affected() == 1)
}
