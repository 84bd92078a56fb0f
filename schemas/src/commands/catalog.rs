//! `cmd.catalog.*`: products, categories and search, answered by any catalog
//! instance in the `catalog` queue group.
//!
//! Names and descriptions arrive as plain strings: the catalog owns their
//! rules and names the offending field. Money and ids are typed, so a bad
//! currency or a negative amount is refused where the request is read. The
//! answers are defined here too, since the gateway hands them to clients as
//! they are.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::impl_command;
use crate::values::{CategoryId, Money, ProductId, ReviewId, Stars, StockLevel, UserId};

/// Put a product on sale; the caller (a seller or an admin) becomes its seller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreateProduct {
    #[schema(example = "Mechanical keyboard", min_length = 1, max_length = 200)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schema(max_length = 5000)]
    pub description: String,
    pub price: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub category_id: Option<CategoryId>,
}
impl_command!(CreateProduct => "catalog", "create_product", 1, QueueGroup);

/// Change a product (its seller or an admin); absent fields stay as they
/// are, `"category_id": null` takes it out of its category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UpdateProduct {
    /// Filled in by the gateway from the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub product_id: Option<ProductId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Money>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub category_id: Option<Option<CategoryId>>,
}
impl_command!(UpdateProduct => "catalog", "update_product", 1, QueueGroup);

/// A field that is present, even as `null`, is `Some`: absent and `null` differ.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Take a product off sale (its seller or an admin). It stays in the
/// database, so orders keep pointing at it, but is no longer found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteProduct {
    pub product_id: ProductId,
}
impl_command!(DeleteProduct => "catalog", "delete_product", 1, QueueGroup);

/// One product, as anyone may see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetProduct {
    pub product_id: ProductId,
}
impl_command!(GetProduct => "catalog", "get_product", 1, QueueGroup);

/// How search results are ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    /// Best match first (the default with `q`; otherwise newest).
    #[default]
    Relevance,
    /// Cheapest first.
    PriceAsc,
    /// Dearest first.
    PriceDesc,
    /// Most recently added first.
    Newest,
    /// Best rated first; unrated products last.
    Rating,
}

/// Search and browse: full-text `q` with filters, one page at a time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchProducts {
    /// Words to look for in names and descriptions (stemmed; `"quoted phrases"`, `or` and `-word` work).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    /// A category; products of its subcategories are included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<String>, format = Uuid)]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub category: Option<CategoryId>,
    /// Lowest price in minor units, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_price: Option<i64>,
    /// Highest price in minor units, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price: Option<i64>,
    /// Only this seller's products.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<String>, format = Uuid)]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub seller: Option<UserId>,
    /// Only products with stock available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_stock: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort: Option<SortOrder>,
    /// `next_cursor` of the previous page; the other parameters must be the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Products per page, 1 to 100 (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}
impl_command!(SearchProducts => "catalog", "search_products", 1, QueueGroup);

/// The category tree, every node once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListCategories {}
impl_command!(ListCategories => "catalog", "list_categories", 1, QueueGroup);

/// Add a category (admins), at the top or below `parent_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreateCategory {
    #[schema(example = "Keyboards", min_length = 1, max_length = 100)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub parent_id: Option<CategoryId>,
}
impl_command!(CreateCategory => "catalog", "create_category", 1, QueueGroup);

/// Review a product (signed in, with a delivered order containing it; never
/// one's own product), once. Rating, title and body arrive plain: the
/// catalog owns their rules and names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AddReview {
    /// Filled in by the gateway from the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub product_id: Option<ProductId>,
    /// 1 to 5 stars.
    #[schema(example = 4, minimum = 1, maximum = 5)]
    pub rating: u8,
    #[schema(example = "Warm light, solid base", min_length = 1, max_length = 200)]
    pub title: String,
    #[schema(example = "Bright enough to read by and it does not wobble.", min_length = 1, max_length = 5000)]
    pub body: String,
}
impl_command!(AddReview => "catalog", "add_review", 1, QueueGroup);

/// A product's reviews, newest first, one page at a time (anyone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListReviews {
    pub product_id: ProductId,
    /// `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// 1 to 100; 20 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}
impl_command!(ListReviews => "catalog", "list_reviews", 1, QueueGroup);

/// A review as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReviewView {
    #[schema(value_type = String, format = Uuid)]
    pub id: ReviewId,
    #[schema(value_type = String, format = Uuid)]
    pub product_id: ProductId,
    #[schema(value_type = String, format = Uuid)]
    pub author_id: UserId,
    #[schema(value_type = u8, minimum = 1, maximum = 5, example = 4)]
    pub rating: Stars,
    pub title: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

/// One page of reviews.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReviewPage {
    pub items: Vec<ReviewView>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A product's rating from its reviews.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Rating {
    /// Mean of the ratings (1 to 5), absent before the first review.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average: Option<f64>,
    pub count: u32,
}

impl Eq for Rating {}

/// A product as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProductView {
    #[schema(value_type = String, format = Uuid)]
    pub id: ProductId,
    #[schema(value_type = String, format = Uuid)]
    pub seller_id: UserId,
    pub name: String,
    pub description: String,
    pub price: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub category_id: Option<CategoryId>,
    /// As inventory last reported it.
    pub stock: StockLevel,
    pub rating: Rating,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One page of search results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProductPage {
    pub items: Vec<ProductView>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A category's place in the tree: one step of its path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CategoryStep {
    #[schema(value_type = String, format = Uuid)]
    pub id: CategoryId,
    pub name: String,
}

/// A node of the category tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CategoryView {
    #[schema(value_type = String, format = Uuid)]
    pub id: CategoryId,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub parent_id: Option<CategoryId>,
    /// From the root down to this category, itself included.
    pub path: Vec<CategoryStep>,
    #[schema(value_type = Vec<String>)]
    pub children: Vec<CategoryId>,
}
