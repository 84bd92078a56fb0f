//! The inbox: a consumer records `(consumer, event id)` in the transaction
//! that applies the event, so a redelivered or replayed event finds its row
//! and changes nothing. And, for events of one key that arrive through
//! different consumers, a lock that makes their transactions take turns.

use emporium_schemas::MessageId;
use sqlx::PgConnection;
use uuid::Uuid;

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

/// Serialises every transaction about `key` (an order, say) until the
/// caller's transaction ends. The consumer loop keeps one key's events in
/// order within one stream; events of that key from another stream are
/// handled concurrently, and where both may find "nothing yet" (no row to
/// lock) they would each miss the other.
pub async fn lock_key(tx: &mut PgConnection, key: Uuid) -> Result<(), sqlx::Error> {
    // The random tail of the id (a v7's leading bytes are a timestamp); a
    // collision of two keys only makes one wait for the other.
    let mut tail = [0_u8; 8];
    tail.copy_from_slice(&key.as_bytes()[8..]);
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(i64::from_be_bytes(tail)).execute(tx).await?;
    Ok(())
}
