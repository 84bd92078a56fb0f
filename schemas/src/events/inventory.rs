//! `inventory.*` events: the checkout saga's reservations and their end, and
//! every change of a product's stock level.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::impl_event;
use crate::values::{NonEmpty, OrderId, ProductId, ProductQuantity, StockLevel};

/// Every line of the order is held; `expires_at` is the backstop for orders never confirmed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryReserved {
    pub order_id: OrderId,
    pub lines: NonEmpty<ProductQuantity>,
    pub expires_at: DateTime<Utc>,
}
impl_event!(InventoryReserved => "inventory", "reserved", 1);

/// A line that could not be reserved, and what was available for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShortLine {
    pub product_id: ProductId,
    pub requested: u32,
    pub available: u32,
}

/// Not every line could be reserved, so none was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryRejected {
    pub order_id: OrderId,
    pub short_lines: NonEmpty<ShortLine>,
}
impl_event!(InventoryRejected => "inventory", "rejected", 1);

/// Why a reservation was released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    /// The order was cancelled.
    OrderCancelled,
    /// The backstop: the order was never confirmed.
    Expired,
}

/// A reservation was given back to available stock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryReleased {
    pub order_id: OrderId,
    pub lines: NonEmpty<ProductQuantity>,
    pub reason: ReleaseReason,
}
impl_event!(InventoryReleased => "inventory", "released", 1);

/// Why a product's stock changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StockChangeReason {
    /// Inventory learned of the product (stock zero).
    Listed,
    /// The owner (or an admin) set what is on hand.
    Set,
    /// An order reserved some.
    Reserved,
    /// A reservation was given back.
    Released,
    /// A reservation left with its shipment: on hand and reserved both fell.
    Shipped,
}

/// A product's stock level after a change; the catalog shows it on the product.
/// Key: the product id; `seq`: the stock row's version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockChanged {
    pub product_id: ProductId,
    #[serde(flatten)]
    pub level: StockLevel,
    pub reason: StockChangeReason,
}
impl_event!(StockChanged => "inventory", "stock_changed", 1);
