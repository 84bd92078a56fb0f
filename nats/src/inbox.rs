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

/// The statement that takes the advisory locks serialising transactions
/// about each of `keys` (an order, say), in one order so two transactions
/// never wait on each other. Written with literals, for a simple-protocol
/// statement list (the batch writer's first round trip); it returns a row
/// of one column per lock.
pub(crate) fn lock_statement(keys: &[Uuid]) -> String {
    let mut ids: Vec<i64> = keys.iter().map(|key| lock_id(*key)).collect();
    ids.sort_unstable();
    ids.dedup();
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    format!("SELECT pg_advisory_xact_lock(k) FROM unnest('{{{}}}'::bigint[]) AS k", ids.join(","))
}

/// The statement that records `rows` (consumer, event), in one order, and
/// returns the two columns of those that were new. Written with literals,
/// like [`lock_statement`].
pub(crate) fn record_statement(rows: &[(String, Uuid)]) -> String {
    let mut rows: Vec<&(String, Uuid)> = rows.iter().collect();
    rows.sort_unstable();
    let values: Vec<String> =
        rows.iter().map(|(consumer, event)| format!("({}, '{event}'::uuid)", quoted(consumer))).collect();
    format!(
        "INSERT INTO inbox (consumer, event_id) VALUES {} ON CONFLICT DO NOTHING RETURNING consumer, event_id",
        values.join(", ")
    )
}

/// The statement that deletes one recorded row again (its work was undone).
/// Written with literals, like [`lock_statement`].
pub(crate) fn forget_statement((consumer, event): &(String, Uuid)) -> String {
    format!("DELETE FROM inbox WHERE consumer = {} AND event_id = '{event}'", quoted(consumer))
}

/// `text` as an SQL string literal.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The advisory lock that serialises transactions about `key`: the random
/// tail of the id (a v7's leading bytes are a timestamp); a collision of two
/// keys only makes one wait for the other.
fn lock_id(key: Uuid) -> i64 {
    let mut tail = [0_u8; 8];
    tail.copy_from_slice(&key.as_bytes()[8..]);
    i64::from_be_bytes(tail)
}
