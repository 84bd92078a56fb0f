//! The payment provider's interface, as the service uses it: four money
//! operations and a look-up, each identified by the caller's idempotency
//! key. The provider acts at most once per key and answers a repeated key
//! with what it recorded, so a call whose outcome was lost can be made again.
//!
//! Only an answer that proves the provider did nothing ([`ProviderError::NotDone`])
//! lets the caller try the operation again under a *new* key. Anything else
//! that is not an answer ([`ProviderError::Unavailable`]: a transport error,
//! a 5xx, a timeout) may come after the provider acted: the call's outcome is
//! unknown, and it is asked about (or made again) by its own key.

use std::fmt;

use chrono::{DateTime, Utc};
use emporium_schemas::events::payment::FailureReason;
use emporium_schemas::values::{Money, PaymentMethod};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::domain::Operation;

/// The provider's reference for something it did (an authorization, a capture, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProviderRef(pub String);

impl fmt::Display for ProviderRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why the provider refused, for good. On the wire of the simulator in
/// another process ([`crate::simulator::remote`]) by its [`as_str`](Self::as_str) name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decline {
    /// The card issuer said no.
    Declined,
    InsufficientFunds,
    /// The authorization or capture named is not one the provider knows as settled.
    UnknownReference,
    /// Already captured, voided, or refunded in full.
    AlreadySettled,
    /// More than the authorization (or the capture) holds.
    AmountTooLarge,
}

impl Decline {
    /// The reason `payment.failed` gives.
    pub fn failure_reason(self) -> FailureReason {
        match self {
            Decline::InsufficientFunds => FailureReason::InsufficientFunds,
            Decline::Declined | Decline::UnknownReference | Decline::AlreadySettled | Decline::AmountTooLarge => {
                FailureReason::Declined
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Decline::Declined => "declined",
            Decline::InsufficientFunds => "insufficient_funds",
            Decline::UnknownReference => "unknown_reference",
            Decline::AlreadySettled => "already_settled",
            Decline::AmountTooLarge => "amount_too_large",
        }
    }
}

/// A call that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderError {
    /// Refused for good; the same key will be refused again.
    #[error("declined: {}", .0.as_str())]
    Declined(Decline),
    /// The provider answered, explicitly, that it did not act (and recorded
    /// that under the key): a call with a new key may succeed.
    #[error("not done: {0}")]
    NotDone(String),
    /// No answer that says what happened (a transport error, a 5xx): the
    /// provider may have acted. Ask it by the same key; never retry under a
    /// new one.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
}

/// Where a request stands at the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// Received, not decided yet.
    Pending,
    Succeeded,
    Declined(Decline),
    /// The provider did not act (and says so).
    Failed(String),
}

impl RecordState {
    /// The answer a call with this record's key gets; `None` while pending.
    pub fn answer(&self, reference: &ProviderRef) -> Option<Result<ProviderRef, ProviderError>> {
        match self {
            RecordState::Pending => None,
            RecordState::Succeeded => Some(Ok(reference.clone())),
            RecordState::Declined(decline) => Some(Err(ProviderError::Declined(*decline))),
            RecordState::Failed(message) => Some(Err(ProviderError::NotDone(message.clone()))),
        }
    }
}

/// What the provider recorded for one idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderRecord {
    pub key: String,
    pub operation: Operation,
    /// This record's own reference (an authorization's is what captures and voids name).
    pub reference: ProviderRef,
    /// The authorization a capture or void acts on; the capture a refund acts on.
    pub target: Option<ProviderRef>,
    pub amount: Option<Money>,
    pub method: Option<PaymentMethod>,
    pub state: RecordState,
    pub arrived_at: DateTime<Utc>,
}

/// A payment provider. Every method names its idempotency key; the boxed
/// futures keep the trait usable as `Arc<dyn Provider>`.
pub trait Provider: Send + Sync + fmt::Debug {
    /// Holds `amount` on the customer's `method`.
    fn authorize(
        &self,
        key: String,
        method: PaymentMethod,
        amount: Money,
    ) -> BoxFuture<'_, Result<ProviderRef, ProviderError>>;

    /// Takes `amount` of an authorization.
    fn capture(
        &self,
        key: String,
        authorization: ProviderRef,
        amount: Money,
    ) -> BoxFuture<'_, Result<ProviderRef, ProviderError>>;

    /// Releases an authorization that was not captured.
    fn void(&self, key: String, authorization: ProviderRef) -> BoxFuture<'_, Result<ProviderRef, ProviderError>>;

    /// Pays `amount` of a capture back.
    fn refund(
        &self,
        key: String,
        capture: ProviderRef,
        amount: Money,
    ) -> BoxFuture<'_, Result<ProviderRef, ProviderError>>;

    /// What the provider recorded for `key`, if it ever received it.
    fn lookup(&self, key: String) -> BoxFuture<'_, Result<Option<ProviderRecord>, ProviderError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_failure_is_answered_as_not_done() {
        let reference = ProviderRef("cap_1".into());
        let answer = RecordState::Failed("capture temporarily unavailable".into()).answer(&reference);
        assert_eq!(answer, Some(Err(ProviderError::NotDone("capture temporarily unavailable".into()))));
        assert_eq!(RecordState::Pending.answer(&reference), None);
    }

    #[test]
    fn every_decline_is_read_back_from_its_name() {
        let all = [
            Decline::Declined,
            Decline::InsufficientFunds,
            Decline::UnknownReference,
            Decline::AlreadySettled,
            Decline::AmountTooLarge,
        ];
        for decline in all {
            let name = serde_json::to_value(decline).unwrap();
            assert_eq!(name, decline.as_str());
            assert_eq!(serde_json::from_value::<Decline>(name).unwrap(), decline);
        }
        assert!(serde_json::from_value::<Decline>("stolen".into()).is_err());
    }
}
