//! `cmd.inventory.*`: stock levels, set by a product's owner and read by anyone.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::impl_command;
use crate::values::{ProductId, StockLevel};

/// Set a product's on-hand stock; refused (409) below what is reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetStock {
    pub product_id: ProductId,
    pub on_hand: u32,
}
impl_command!(SetStock => "inventory", "set_stock", 1, QueueGroup);

/// A product's stock as inventory holds it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetStock {
    pub product_id: ProductId,
}
impl_command!(GetStock => "inventory", "get_stock", 1, QueueGroup);

/// What set_stock and get_stock answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProductStock {
    #[schema(value_type = String, format = Uuid)]
    pub product_id: ProductId,
    #[serde(flatten)]
    pub stock: StockLevel,
}
