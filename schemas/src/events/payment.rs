//! `payment.*` events: authorization, capture, and their compensations.

use serde::{Deserialize, Serialize};

use super::impl_event;
use crate::values::{Money, OrderId, PaymentId, Text};

/// The provider holds the amount on the customer's payment method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentAuthorized {
    pub order_id: OrderId,
    pub payment_id: PaymentId,
    pub amount: Money,
    /// The provider's reference for the authorization.
    pub provider_ref: Text,
}
impl_event!(PaymentAuthorized => "payment", "authorized", 1);

/// Why the provider refused an authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    Declined,
    InsufficientFunds,
    ProviderError,
}

/// The authorization was refused; the order is cancelled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub order_id: OrderId,
    pub payment_id: PaymentId,
    pub amount: Money,
    pub reason: FailureReason,
}
impl_event!(PaymentFailed => "payment", "failed", 1);

/// The authorized amount was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentCaptured {
    pub order_id: OrderId,
    pub payment_id: PaymentId,
    pub amount: Money,
    pub provider_ref: Text,
}
impl_event!(PaymentCaptured => "payment", "captured", 1);

/// Capture failed after its bounded retries; an operator must look.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentCaptureFailed {
    pub order_id: OrderId,
    pub payment_id: PaymentId,
    pub amount: Money,
    pub attempts: u32,
    pub reason: Text,
}
impl_event!(PaymentCaptureFailed => "payment", "capture_failed", 1);

/// An authorization was released without capture (cancellation before capture).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentVoided {
    pub order_id: OrderId,
    pub payment_id: PaymentId,
    pub amount: Money,
}
impl_event!(PaymentVoided => "payment", "voided", 1);

/// A captured amount was paid back (cancellation after capture).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub order_id: OrderId,
    pub payment_id: PaymentId,
    pub amount: Money,
}
impl_event!(PaymentRefunded => "payment", "refunded", 1);
