//! `cmd.cart.*`: a customer's cart, keyed by the customer's id.

use serde::{Deserialize, Serialize};

use super::impl_command;
use crate::values::{Address, PaymentMethod, ProductId, Quantity, Text};

/// Read the cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetCart {}
impl_command!(GetCart => "cart", "get", 1, Partitioned);

/// Add a product, or more of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddItem {
    pub product_id: ProductId,
    pub quantity: Quantity,
}
impl_command!(AddItem => "cart", "add_item", 1, Partitioned);

/// Set a line's quantity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetQuantity {
    pub product_id: ProductId,
    pub quantity: Quantity,
}
impl_command!(SetQuantity => "cart", "set_quantity", 1, Partitioned);

/// Remove a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveItem {
    pub product_id: ProductId,
}
impl_command!(RemoveItem => "cart", "remove_item", 1, Partitioned);

/// Turn the cart into an order; the same `idempotency_key` always finds the same order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkout {
    pub idempotency_key: Text,
    pub shipping_address: Address,
    pub payment_method: PaymentMethod,
}
impl_command!(Checkout => "cart", "checkout", 1, Partitioned);
