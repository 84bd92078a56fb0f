//! The inbox: a consumer records `(consumer, event id)` in the transaction
//! that applies the event, so a redelivered or replayed event finds its row
//! and changes nothing. And, for events of one key that arrive through
//! different consumers, a lock that makes their transactions take turns.
//! The batch writer does both for a unit's [`Claim`](crate::batch::Claim),
//! for all its units in one statement; [`record`] is the one-event form.

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

/// The advisory lock that serialises transactions about `key` (an order,
/// say): the random tail of the id (a v7's leading bytes are a timestamp);
/// a collision of two keys only makes one wait for the other. Taken by the
/// batch writer for a [`Claim`](crate::batch::Claim) serialised on `key`.
pub(crate) fn lock_id(key: Uuid) -> i64 {
    let mut tail = [0_u8; 8];
    tail.copy_from_slice(&key.as_bytes()[8..]);
    i64::from_be_bytes(tail)
}
