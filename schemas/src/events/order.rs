//! `order.*` events: the order's life from placed to delivered or cancelled.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::impl_event;
use crate::values::{
    Address, Money, NonEmpty, OrderId, PaymentMethod, PricedLine, ProductQuantity, ShipmentId, UserId,
};

/// A checkout created an order, priced from the catalog; inventory reserves its lines next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: OrderId,
    pub customer_id: UserId,
    pub lines: NonEmpty<PricedLine>,
    pub total: Money,
    pub shipping_address: Address,
    pub payment_method: PaymentMethod,
    /// When the checkout is cancelled if it is not confirmed by then.
    pub deadline_at: DateTime<Utc>,
}
impl_event!(OrderPlaced => "order", "placed", 1);

/// Stock is held and the payment authorized: payment captures, shipping creates a shipment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    pub order_id: OrderId,
    pub customer_id: UserId,
    pub lines: NonEmpty<PricedLine>,
    pub total: Money,
    pub shipping_address: Address,
}
impl_event!(OrderConfirmed => "order", "confirmed", 1);

/// Why an order was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    OutOfStock,
    PaymentDeclined,
    PaymentTimeout,
    Timeout,
    CustomerRequest,
}

/// The order's status, as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Pending,
    Reserved,
    Confirmed,
    Shipped,
    Delivered,
    Cancelled,
}

/// The order was cancelled before shipment; inventory releases, payment voids or refunds, shipping cancels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: OrderId,
    pub customer_id: UserId,
    pub reason: CancelReason,
    /// The status the order left, so compensations know what there is to undo.
    pub previous_status: OrderStatus,
}
impl_event!(OrderCancelled => "order", "cancelled", 1);

/// The order's shipment left the warehouse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderShipped {
    pub order_id: OrderId,
    pub customer_id: UserId,
    pub shipment_id: ShipmentId,
}
impl_event!(OrderShipped => "order", "shipped", 1);

/// The order reached the customer; its products may now be reviewed by them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderDelivered {
    pub order_id: OrderId,
    pub customer_id: UserId,
    pub shipment_id: ShipmentId,
    pub lines: NonEmpty<ProductQuantity>,
}
impl_event!(OrderDelivered => "order", "delivered", 1);
