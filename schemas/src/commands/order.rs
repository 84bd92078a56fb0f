//! `cmd.order.*`: placing, cancelling and reading one order, keyed by its id.

use serde::{Deserialize, Serialize};

use super::impl_command;
use crate::values::{Address, NonEmpty, OrderId, PaymentMethod, ProductQuantity, Text, UserId};

/// Create the order (sent by the cart at checkout). The order prices the lines
/// from the catalog itself; the cart's prices are never trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceOrder {
    /// UUIDv5 of customer and idempotency key, so a retry finds the same order.
    pub order_id: OrderId,
    pub customer_id: UserId,
    pub idempotency_key: Text,
    /// Digest of the checkout request: the same key with another body is refused.
    pub request_digest: Text,
    pub lines: NonEmpty<ProductQuantity>,
    pub shipping_address: Address,
    pub payment_method: PaymentMethod,
}
impl_command!(PlaceOrder => "order", "place", 1, Partitioned);

/// Cancel an order before it ships (customer request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelOrder {
    pub order_id: OrderId,
}
impl_command!(CancelOrder => "order", "cancel", 1, Partitioned);

/// Read one order as the principal may see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetOrder {
    pub order_id: OrderId,
}
impl_command!(GetOrder => "order", "get", 1, Partitioned);
