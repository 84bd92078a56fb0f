//! `catalog.*` events: products put on sale, changed, taken off sale and
//! reviewed. Key: the product id; `seq`: the product's version after the
//! change (a review moves the product's rating, so it counts as one).

use serde::{Deserialize, Serialize};

use super::impl_event;
use crate::values::{CategoryId, Money, ProductId, ReviewId, Stars, Text, UserId};

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

/// A customer with a delivered order of the product reviewed it; the
/// product's rating now counts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewAdded {
    pub review_id: ReviewId,
    pub product_id: ProductId,
    pub author_id: UserId,
    pub rating: Stars,
}
impl_event!(ReviewAdded => "catalog", "review_added", 1);
