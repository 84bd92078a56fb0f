//! `catalog.*` events: products put on sale, changed and taken off sale.
//! Key: the product id; `seq`: the product's version after the change.

use serde::{Deserialize, Serialize};

use super::impl_event;
use crate::values::{CategoryId, Money, ProductId, Text, UserId};

/// A seller put a product on sale; inventory learns its owner from this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductCreated {
    pub product_id: ProductId,
    pub seller_id: UserId,
    pub name: Text,
    pub price: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_id: Option<CategoryId>,
}
impl_event!(ProductCreated => "catalog", "product_created", 1);

/// A product changed; the payload is its whole new state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductUpdated {
    pub product_id: ProductId,
    pub seller_id: UserId,
    pub name: Text,
    pub price: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_id: Option<CategoryId>,
}
impl_event!(ProductUpdated => "catalog", "product_updated", 1);

/// A product was taken off sale: it can no longer be found nor reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductDeleted {
    pub product_id: ProductId,
    pub seller_id: UserId,
}
impl_event!(ProductDeleted => "catalog", "product_deleted", 1);
