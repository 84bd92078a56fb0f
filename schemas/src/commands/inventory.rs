//! `cmd.inventory.*`: stock levels set by a product's owner.

use serde::{Deserialize, Serialize};

use super::impl_command;
use crate::values::ProductId;

/// Set a product's on-hand stock; refused (409) below what is reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetStock {
    pub product_id: ProductId,
    pub on_hand: u32,
}
impl_command!(SetStock => "inventory", "set_stock", 1, QueueGroup);
