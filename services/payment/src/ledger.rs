//! The ledger read back: balances per order and per account, and
//! reconciliation of payments and the journal with the provider's own
//! records. Reconciliation is meant for a quiet system (tests, an operator
//! after an incident): a payment with a call under way is judged only on
//! what cannot be in flight.

use std::collections::HashMap;

use emporium_schemas::values::{OrderId, PaymentId};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::domain::{Operation, Status};
use crate::journal::Posting;
use crate::provider::{ProviderRecord, RecordState};
use crate::store::{self, StoreError};

/// What an account (of a party) holds in one currency, + debit, − credit:
/// the sum of its postings, read back as one.
pub type Balance = Posting;

fn balances(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<Balance>, StoreError> {
    rows.iter().map(store::posting).collect()
}

/// Every account's balance from one order's entries.
pub async fn order_balances(pool: &PgPool, order: OrderId) -> Result<Vec<Balance>, StoreError> {
    let rows = sqlx::query(
        "SELECT l.account, l.party, l.currency, sum(l.amount)::bigint AS amount
         FROM journal_entries e JOIN journal_lines l ON l.entry_id = e.id
         WHERE e.order_id = $1
         GROUP BY l.account, l.party, l.currency ORDER BY l.account, l.party, l.currency",
    )
    .bind(order.as_uuid())
    .fetch_all(pool)
    .await?;
    balances(&rows)
}

/// Every account's balance (per party and currency) over the whole journal.
pub async fn account_balances(pool: &PgPool) -> Result<Vec<Balance>, StoreError> {
    let rows = sqlx::query(
        "SELECT account, party, currency, sum(amount)::bigint AS amount FROM journal_lines
         GROUP BY account, party, currency ORDER BY account, party, currency",
    )
    .fetch_all(pool)
    .await?;
    balances(&rows)
}

/// Something the ledger, the payments and the provider disagree on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// An entry whose lines do not sum to zero in a currency.
    Unbalanced { entry: Uuid, currency: String, sum: i64 },
    /// The order's provider clearing balance is not what the provider captured less refunded.
    Clearing { order: OrderId, ledger: i64, provider: i64 },
    /// The provider captured one payment more than once.
    CapturedTwice { order: OrderId, captures: usize },
    /// The payment's status says one thing, the provider's records another.
    Status { order: OrderId, status: Status, provider: String },
    /// The provider holds a record under a key no attempt of ours has.
    UnknownKey { key: String },
}

/// What the provider did for one payment, from its records.
#[derive(Debug, Default, Clone, Copy)]
struct AtProvider {
    authorized: bool,
    captures: usize,
    captured: i64,
    refunded: i64,
    voided: bool,
}

impl AtProvider {
    fn describe(&self) -> String {
        format!(
            "authorized: {}, captures: {}, captured: {}, refunded: {}, voided: {}",
            self.authorized, self.captures, self.captured, self.refunded, self.voided
        )
    }

    /// Whether a payment in `status` can have these records.
    fn agrees_with(&self, status: Status) -> bool {
        let untouched = self.captures == 0 && !self.voided;
        match status {
            Status::AwaitingPlacement | Status::AwaitingStock | Status::Cancelled | Status::Failed => !self.authorized,
            Status::Authorized | Status::CaptureFailed => self.authorized && untouched,
            Status::Captured => self.captures == 1 && self.refunded == 0 && !self.voided,
            Status::Voided => self.authorized && self.voided && self.captures == 0,
            Status::Refunded => self.captures == 1 && self.refunded == self.captured,
            // The provider refused the compensation: an operator must look
            // (the clearing balance is still checked).
            Status::VoidFailed | Status::RefundFailed => true,
            // A call may be in flight: nothing certain to compare.
            Status::Authorizing | Status::Capturing | Status::Voiding | Status::Refunding => true,
        }
    }
}

/// Checks, for every payment, that its order's provider clearing balance is
/// what the provider captured less refunded for it, that the provider
/// captured it at most once, and that its status agrees with the provider's
/// `records` (all of them, however the provider keeps them: the simulator
/// in-process, or read from wherever a provider running elsewhere does); and
/// that every journal entry balances. Empty: all agree.
pub async fn reconcile(pool: &PgPool, records: &[ProviderRecord]) -> Result<Vec<Mismatch>, StoreError> {
    let mut mismatches = Vec::new();

    let unbalanced = sqlx::query(
        "SELECT entry_id, currency, sum(amount)::bigint AS sum FROM journal_lines
         GROUP BY entry_id, currency HAVING sum(amount) <> 0 ORDER BY entry_id",
    )
    .fetch_all(pool)
    .await?;
    for row in &unbalanced {
        mismatches.push(Mismatch::Unbalanced {
            entry: row.try_get("entry_id")?,
            currency: row.try_get("currency")?,
            sum: row.try_get("sum")?,
        });
    }

    let keys: HashMap<String, PaymentId> = sqlx::query("SELECT idempotency_key, payment_id FROM provider_attempts")
        .fetch_all(pool)
        .await?
        .iter()
        .map(|row| Ok((row.try_get("idempotency_key")?, PaymentId::from_uuid(row.try_get("payment_id")?))))
        .collect::<Result<_, sqlx::Error>>()?;
    let mut at_provider: HashMap<PaymentId, AtProvider> = HashMap::new();
    for record in records {
        let Some(payment) = keys.get(&record.key) else {
            mismatches.push(Mismatch::UnknownKey { key: record.key.clone() });
            continue;
        };
        if record.state != RecordState::Succeeded {
            continue;
        }
        let done = at_provider.entry(*payment).or_default();
        let amount = record.amount.as_ref().map_or(0, |a| a.amount.get());
        match record.operation {
            Operation::Authorize => done.authorized = true,
            Operation::Capture => {
                done.captures += 1;
                done.captured += amount;
            }
            Operation::Void => done.voided = true,
            Operation::Refund => done.refunded += amount,
        }
    }

    let clearing: HashMap<Uuid, i64> = sqlx::query(
        "SELECT e.order_id, sum(l.amount)::bigint AS amount
         FROM journal_entries e JOIN journal_lines l ON l.entry_id = e.id
         WHERE l.account = 'provider_clearing' GROUP BY e.order_id",
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| Ok((row.try_get("order_id")?, row.try_get("amount")?)))
    .collect::<Result<_, sqlx::Error>>()?;

    let payments =
        sqlx::query("SELECT payment_id, order_id, status FROM payments ORDER BY payment_id").fetch_all(pool).await?;
    for row in &payments {
        let payment = PaymentId::from_uuid(row.try_get("payment_id")?);
        let order_uuid: Uuid = row.try_get("order_id")?;
        let order = OrderId::from_uuid(order_uuid);
        let status_text: String = row.try_get("status")?;
        let status =
            Status::parse(&status_text).ok_or_else(|| StoreError::Corrupt(format!("payment status {status_text}")))?;
        let done = at_provider.get(&payment).copied().unwrap_or_default();
        if done.captures > 1 {
            mismatches.push(Mismatch::CapturedTwice { order, captures: done.captures });
        }
        if !status.is_underway() {
            let ledger = clearing.get(&order_uuid).copied().unwrap_or(0);
            let provider = done.captured - done.refunded;
            if ledger != provider {
                mismatches.push(Mismatch::Clearing { order, ledger, provider });
            }
        }
        if !done.agrees_with(status) {
            mismatches.push(Mismatch::Status { order, status, provider: done.describe() });
        }
    }
    Ok(mismatches)
}
