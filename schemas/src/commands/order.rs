//! `cmd.order.*`: placing, cancelling and reading one order, keyed by its id.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::impl_command;
use crate::events::order::{CancelReason, OrderStatus};
use crate::values::{
    Address, Money, NonEmpty, OrderId, PaymentMethod, PricedLine, ProductId, ProductQuantity, Quantity, ShipmentId,
    Text, UserId,
};

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

/// Orders newest first, one page at a time: the principal's own purchases
/// (admins: every order), or with `sales` the orders holding the principal's
/// products, their lines only (sellers and admins). Served by any order
/// instance (queue group).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListOrders {
    /// The seller's sales rather than the caller's purchases.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[param(ignore)]
    pub sales: bool,
    /// Only orders in this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<OrderStatus>,
    /// `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// 1 to 100; 20 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}
impl_command!(ListOrders => "order", "list", 1, QueueGroup);

/// The answer to a checkout: the order that now exists (or existed already).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderAccepted {
    #[schema(value_type = String, format = Uuid)]
    pub order_id: OrderId,
}

/// Where the order's payment stands, as the order last heard from payment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Not authorized yet.
    #[default]
    Pending,
    Authorized,
    /// Authorization refused.
    Failed,
    Captured,
    /// Capture gave up after its retries; an operator must look.
    CaptureFailed,
    Voided,
    Refunded,
}

/// The order's payment as clients see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PaymentView {
    pub status: PaymentStatus,
}

/// Where the order's shipment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShipmentStatus {
    Created,
    Shipped,
    Delivered,
    Cancelled,
}

/// The order's shipment, once shipping created one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShipmentView {
    #[schema(value_type = String, format = Uuid)]
    pub id: ShipmentId,
    pub status: ShipmentStatus,
}

/// One line of an order: what was bought, priced when the order was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderLineView {
    #[schema(value_type = String, format = Uuid)]
    pub product_id: ProductId,
    #[schema(value_type = String, format = Uuid)]
    pub seller_id: UserId,
    #[schema(value_type = u32, minimum = 1, maximum = 999)]
    pub quantity: Quantity,
    pub unit_price: Money,
}

impl From<&PricedLine> for OrderLineView {
    fn from(line: &PricedLine) -> Self {
        Self {
            product_id: line.product_id,
            seller_id: line.seller_id,
            quantity: line.quantity,
            unit_price: line.unit_price.clone(),
        }
    }
}

/// One step of the order's life: the status it reached and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TimelineEntry {
    pub status: OrderStatus,
    pub at: DateTime<Utc>,
}

/// An order as clients see it (DESIGN.md's shape, with a few more fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderView {
    #[schema(value_type = String, format = Uuid)]
    pub id: OrderId,
    #[schema(value_type = String, format = Uuid)]
    pub customer_id: UserId,
    pub status: OrderStatus,
    pub lines: Vec<OrderLineView>,
    /// The sum of the lines shown (a seller sees only theirs).
    pub total: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<CancelReason>,
    pub payment: PaymentView,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipment: Option<ShipmentView>,
    pub timeline: Vec<TimelineEntry>,
    pub placed_at: DateTime<Utc>,
    /// When the checkout is cancelled if it is not confirmed by then.
    pub deadline_at: DateTime<Utc>,
}

/// One page of orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<OrderView>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}
