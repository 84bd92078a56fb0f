//! `cmd.cart.*`: a customer's cart, keyed by the customer's id.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::impl_command;
use crate::values::{Address, Money, OrderId, PaymentMethod, ProductId, Quantity, Text, UserId};

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

/// The namespace of checkout-derived order ids (UUIDv5), fixed forever:
/// changing it would give a retried checkout a second order.
const CHECKOUT_NAMESPACE: uuid::Uuid = uuid::uuid!("0f6b3c1e-7d2a-5b8e-9c4f-3a1d2e5f6b7c");

impl Checkout {
    /// The order this checkout creates: derived from the customer and the
    /// idempotency key, so every retry of it names the same order.
    pub fn order_id(&self, customer: &UserId) -> OrderId {
        let name = format!("{customer}/{}", self.idempotency_key.as_str());
        OrderId::from_uuid(uuid::Uuid::new_v5(&CHECKOUT_NAMESPACE, name.as_bytes()))
    }

    /// A digest of the request body (address and payment method): the same key
    /// with another body is refused rather than answered with the first order.
    pub fn request_digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let body =
            serde_json::json!({ "shipping_address": self.shipping_address, "payment_method": self.payment_method });
        let digest = Sha256::digest(body.to_string().as_bytes());
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

/// One line of a cart, priced as the catalog priced it when it was last changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CartLine {
    #[schema(value_type = String, format = Uuid)]
    pub product_id: ProductId,
    pub name: String,
    #[schema(value_type = u32, minimum = 1, maximum = 99)]
    pub quantity: Quantity,
    /// The catalog's price when the line was last changed; the order prices anew.
    pub unit_price: Money,
}

/// A checkout that has begun and not yet finished: the cart is frozen meanwhile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CheckoutInFlight {
    #[schema(value_type = String, format = Uuid)]
    pub order_id: OrderId,
}

/// A cart as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CartView {
    pub lines: Vec<CartLine>,
    /// Sums per currency (a cart may mix currencies; an order may not).
    pub totals: Vec<Money>,
    /// Counts every change; 0 for a cart never written.
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout: Option<CheckoutInFlight>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn checkout(key: &str, method: &str) -> Checkout {
        serde_json::from_value(serde_json::json!({
            "idempotency_key": key,
            "shipping_address": {"name": "Ada", "line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"},
            "payment_method": method,
        }))
        .unwrap()
    }

    #[test]
    fn the_same_customer_and_key_always_name_the_same_order() {
        let customer = UserId::new_v7();
        assert_eq!(checkout("k1", "tok_visa").order_id(&customer), checkout("k1", "tok_declined").order_id(&customer));
        assert_ne!(checkout("k1", "tok_visa").order_id(&customer), checkout("k2", "tok_visa").order_id(&customer));
        assert_ne!(
            checkout("k1", "tok_visa").order_id(&customer),
            checkout("k1", "tok_visa").order_id(&UserId::new_v7())
        );
    }

    #[test]
    fn another_body_has_another_digest() {
        assert_eq!(checkout("k1", "tok_visa").request_digest(), checkout("k2", "tok_visa").request_digest());
        assert_ne!(checkout("k1", "tok_visa").request_digest(), checkout("k1", "tok_declined").request_digest());
    }
}
