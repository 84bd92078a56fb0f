//! The catalog's Postgres tables: categories, products and their read-model
//! columns, reviews and the verified purchases behind them. Runtime queries
//! (no compile-time database). A product change (a review included) and its
//! event commit together through the outbox.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use emporium_actors::StateChange;
use emporium_nats::OutgoingEvent;
use emporium_schemas::commands::catalog::{CategoryStep, CategoryView, ProductView, Rating, ReviewView};
use emporium_schemas::values::{
    CategoryId, Currency, Money, OrderId, ProductId, ReviewId, Stars, StockLevel, UserId, ValueError,
};
use futures::future::BoxFuture;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{PgConnection, PgPool, Postgres, Row};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a sibling category has this name")]
    CategoryNameTaken,
    #[error("the author has reviewed this product already")]
    AlreadyReviewed,
    #[error("a stored value is not valid: {0}")]
    Corrupt(#[from] ValueError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Runs the catalog's migrations and the messaging tables' (outbox, inbox).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("./migrations").run(pool).await?;
    emporium_nats::outbox::migrate(pool).await
}

/// The columns a [`ProductView`] is read from, for every query that returns products.
pub(crate) const PRODUCT_COLUMNS: &str = "id, seller_id, name, description, price_amount, currency, category_id, \
     on_hand, reserved, available, rating_avg, rating_count, created_at, updated_at";

fn count(row: &PgRow, column: &str) -> Result<u32, StoreError> {
    let value: i32 = row.try_get(column)?;
    Ok(u32::try_from(value).unwrap_or(0))
}

pub(crate) fn product_of(row: &PgRow) -> Result<ProductView, StoreError> {
    let rating_count = count(row, "rating_count")?;
    let on_hand = count(row, "on_hand")?;
    let reserved = count(row, "reserved")?;
    Ok(ProductView {
        id: ProductId::from_uuid(row.try_get("id")?),
        seller_id: UserId::from_uuid(row.try_get("seller_id")?),
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        price: Money {
            amount: row.try_get::<i64, _>("price_amount")?.try_into()?,
            currency: Currency::try_from(row.try_get::<String, _>("currency")?)?,
        },
        category_id: row.try_get::<Option<Uuid>, _>("category_id")?.map(CategoryId::from_uuid),
        stock: StockLevel { on_hand, reserved, available: count(row, "available")? },
        rating: Rating {
            average: (rating_count > 0).then(|| row.try_get("rating_avg")).transpose()?,
            count: rating_count,
        },
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// A product on sale, or `None` (never existed, or deleted).
pub async fn product(pool: &PgPool, id: ProductId) -> Result<Option<ProductView>, StoreError> {
    let sql = format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE id = $1 AND deleted_at IS NULL");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.as_uuid()).fetch_optional(pool).await?;
    row.as_ref().map(product_of).transpose()
}

/// A product's fields as a command may change them.
#[derive(Debug, Clone)]
pub struct ProductFields {
    pub name: String,
    pub description: String,
    pub price: Money,
    pub category_id: Option<CategoryId>,
}

/// A product on sale, locked for change in `tx`.
#[derive(Debug)]
pub struct LockedProduct {
    pub product: ProductView,
    pub version: i64,
    pub category_path: Vec<Uuid>,
}

pub async fn lock_product(tx: &mut PgConnection, id: ProductId) -> Result<Option<LockedProduct>, StoreError> {
    let sql = format!(
        "SELECT {PRODUCT_COLUMNS}, version, category_path FROM products WHERE id = $1 AND deleted_at IS NULL FOR UPDATE"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.as_uuid()).fetch_optional(tx).await?;
    row.map(|row| {
        Ok(LockedProduct {
            product: product_of(&row)?,
            version: row.try_get("version")?,
            category_path: row.try_get("category_path")?,
        })
    })
    .transpose()
}

/// The path of a category, or `None` if there is no such category.
pub async fn category_path(
    executor: impl sqlx::PgExecutor<'_>,
    id: CategoryId,
) -> Result<Option<Vec<Uuid>>, StoreError> {
    Ok(sqlx::query_scalar("SELECT path FROM categories WHERE id = $1")
        .bind(id.as_uuid())
        .fetch_optional(executor)
        .await?)
}

/// Inserts a product and its `catalog.product_created` event.
pub async fn create_product(
    tx: &mut PgConnection,
    id: ProductId,
    seller: UserId,
    fields: &ProductFields,
    category_path: &[Uuid],
    now: DateTime<Utc>,
    event: &OutgoingEvent,
) -> Result<ProductView, StoreError> {
    let sql = format!(
        "INSERT INTO products (id, name, description, price_amount, currency, category_id, category_path,
                               seller_id, version, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $9)
         RETURNING {PRODUCT_COLUMNS}"
    );
    let query = with_fields(sqlx::query(sqlx::AssertSqlSafe(sql)), id, fields, category_path);
    write_product(tx, query.bind(seller.as_uuid()).bind(now), event).await
}

/// Writes a locked product's new fields as `version` and its `catalog.product_updated` event.
pub async fn update_product(
    tx: &mut PgConnection,
    id: ProductId,
    fields: &ProductFields,
    category_path: &[Uuid],
    version: i64,
    now: DateTime<Utc>,
    event: &OutgoingEvent,
) -> Result<ProductView, StoreError> {
    let sql = format!(
        "UPDATE products SET name = $2, description = $3, price_amount = $4, currency = $5, category_id = $6,
                             category_path = $7, version = $8, updated_at = $9
         WHERE id = $1
         RETURNING {PRODUCT_COLUMNS}"
    );
    let query = with_fields(sqlx::query(sqlx::AssertSqlSafe(sql)), id, fields, category_path);
    write_product(tx, query.bind(version).bind(now), event).await
}

/// Binds a product's id as `$1`, then what a command may change as `$2` to
/// `$7`: name, description, price amount and currency, category and its path.
fn with_fields<'q>(
    query: Query<'q, Postgres, PgArguments>,
    id: ProductId,
    fields: &ProductFields,
    category_path: &[Uuid],
) -> Query<'q, Postgres, PgArguments> {
    query
        .bind(id.as_uuid())
        .bind(&fields.name)
        .bind(&fields.description)
        .bind(fields.price.amount.get())
        .bind(fields.price.currency.as_str())
        .bind(fields.category_id.map(|c| *c.as_uuid()))
        .bind(category_path)
}

/// Runs a product's insert or update (returning [`PRODUCT_COLUMNS`]) and
/// appends its event, in `tx`.
async fn write_product(
    tx: &mut PgConnection,
    query: Query<'_, Postgres, PgArguments>,
    event: &OutgoingEvent,
) -> Result<ProductView, StoreError> {
    let row = query.fetch_one(&mut *tx).await?;
    emporium_nats::outbox::append(tx, std::slice::from_ref(event)).await?;
    product_of(&row)
}

/// Marks a locked product deleted as `version`, with its `catalog.product_deleted` event.
pub async fn delete_product(
    tx: &mut PgConnection,
    id: ProductId,
    version: i64,
    now: DateTime<Utc>,
    event: &OutgoingEvent,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE products SET deleted_at = $2, updated_at = $2, version = $3 WHERE id = $1")
        .bind(id.as_uuid())
        .bind(now)
        .bind(version)
        .execute(&mut *tx)
        .await?;
    emporium_nats::outbox::append(tx, std::slice::from_ref(event)).await?;
    Ok(())
}

/// A stock level reported by inventory, written unless a newer one is
/// already there: a [`StateChange`] for the group-commit writer, whose
/// "stale" answer is exactly "a newer `seq` was applied".
#[derive(Debug, Clone, Copy)]
pub struct StockUpdate {
    pub product: ProductId,
    pub level: StockLevel,
    pub seq: u64,
}

impl StateChange for StockUpdate {
    fn write<'a>(&'a self, tx: &'a mut PgConnection) -> BoxFuture<'a, Result<bool, sqlx::Error>> {
        let as_int = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        Box::pin(async move {
            let applied = sqlx::query(
                "UPDATE products SET on_hand = $2, reserved = $3, stock_seq = $4 WHERE id = $1 AND stock_seq < $4",
            )
            .bind(self.product.as_uuid())
            .bind(as_int(self.level.on_hand))
            .bind(as_int(self.level.reserved))
            .bind(i64::try_from(self.seq).unwrap_or(i64::MAX))
            .execute(tx)
            .await?;
            Ok(applied.rows_affected() == 1)
        })
    }
}

/// That `customer` received `products` in `order`: the verified purchases
/// reviews need. A product received before keeps its first order. A
/// [`StateChange`] for the group-commit writer that never conflicts: the
/// event's inbox entry, committed with it, is what keeps it to once.
#[derive(Debug, Clone)]
pub struct Purchases {
    pub customer: UserId,
    pub order: OrderId,
    pub products: Vec<ProductId>,
    pub delivered_at: DateTime<Utc>,
}

impl StateChange for Purchases {
    fn write<'a>(&'a self, tx: &'a mut PgConnection) -> BoxFuture<'a, Result<bool, sqlx::Error>> {
        let products: Vec<Uuid> = self.products.iter().map(|p| *p.as_uuid()).collect();
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO verified_purchases (customer_id, product_id, order_id, delivered_at)
                 SELECT $1, product_id, $3, $4 FROM (SELECT DISTINCT unnest($2::uuid[]) AS product_id) AS received
                 ON CONFLICT DO NOTHING",
            )
            .bind(self.customer.as_uuid())
            .bind(&products)
            .bind(self.order.as_uuid())
            .bind(self.delivered_at)
            .execute(tx)
            .await?;
            Ok(true)
        })
    }
}

/// Whether `customer` received `product` in a delivered order.
pub async fn has_received(tx: &mut PgConnection, customer: UserId, product: ProductId) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM verified_purchases WHERE customer_id = $1 AND product_id = $2)",
    )
    .bind(customer.as_uuid())
    .bind(product.as_uuid())
    .fetch_one(tx)
    .await?)
}

/// A review to store: who wrote what about which product.
#[derive(Debug, Clone)]
pub struct NewReview<'a> {
    pub id: ReviewId,
    pub product: ProductId,
    pub author: UserId,
    pub rating: Stars,
    pub title: &'a str,
    pub body: &'a str,
    pub created_at: DateTime<Utc>,
}

const REVIEW_COLUMNS: &str = "id, product_id, author_id, rating, title, body, created_at";

fn review_of(row: &PgRow) -> Result<ReviewView, StoreError> {
    let rating: i16 = row.try_get("rating")?;
    let rating = u8::try_from(rating)
        .map_err(|_| ValueError::Invalid { what: "rating", value: rating.to_string() })
        .and_then(Stars::try_from)?;
    Ok(ReviewView {
        id: ReviewId::from_uuid(row.try_get("id")?),
        product_id: ProductId::from_uuid(row.try_get("product_id")?),
        author_id: UserId::from_uuid(row.try_get("author_id")?),
        rating,
        title: row.try_get("title")?,
        body: row.try_get("body")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Stores a review of a locked product, adds its stars to the product's
/// rating (a running sum and count, so the average is exact without
/// re-reading the reviews), makes the product `version`, and appends its
/// `catalog.review_added` event. A second review by the same author is
/// [`StoreError::AlreadyReviewed`].
pub async fn add_review(
    tx: &mut PgConnection,
    review: &NewReview<'_>,
    version: i64,
    event: &OutgoingEvent,
) -> Result<ReviewView, StoreError> {
    let sql = format!(
        "INSERT INTO reviews ({REVIEW_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {REVIEW_COLUMNS}"
    );
    let inserted = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(review.id.as_uuid())
        .bind(review.product.as_uuid())
        .bind(review.author.as_uuid())
        .bind(i16::from(review.rating.get()))
        .bind(review.title)
        .bind(review.body)
        .bind(review.created_at)
        .fetch_one(&mut *tx)
        .await;
    let row = match inserted {
        Err(sqlx::Error::Database(e)) if e.constraint() == Some("reviews_one_per_author") => {
            return Err(StoreError::AlreadyReviewed);
        }
        other => other?,
    };
    // The right-hand sides read the row as it was: the new sum and count are the old plus this review.
    sqlx::query(
        "UPDATE products SET rating_sum = rating_sum + $2, rating_count = rating_count + 1,
                             rating_avg = (rating_sum + $2)::double precision / (rating_count + 1), version = $3
         WHERE id = $1",
    )
    .bind(review.product.as_uuid())
    .bind(i64::from(review.rating.get()))
    .bind(version)
    .execute(&mut *tx)
    .await?;
    emporium_nats::outbox::append(tx, std::slice::from_ref(event)).await?;
    review_of(&row)
}

/// Up to `limit` of a product's reviews, newest first, older than `after`.
pub async fn reviews(
    pool: &PgPool,
    product: ProductId,
    after: Option<ReviewId>,
    limit: u32,
) -> Result<Vec<ReviewView>, StoreError> {
    // The keyset condition is written only when there is one, so it is
    // always an index condition rather than a filter over skipped rows.
    let mut sql = sqlx::QueryBuilder::<sqlx::Postgres>::new("SELECT ");
    sql.push(REVIEW_COLUMNS).push(" FROM reviews WHERE product_id = ").push_bind(*product.as_uuid());
    if let Some(after) = after {
        sql.push(" AND id < ").push_bind(*after.as_uuid());
    }
    sql.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(limit));
    let rows = sql.build().fetch_all(pool).await?;
    rows.iter().map(review_of).collect()
}

/// Adds a category below `parent` (whose path is given), or at the top; returns it.
pub async fn create_category(
    pool: &PgPool,
    id: CategoryId,
    name: &str,
    parent: Option<(CategoryId, &[Uuid])>,
) -> Result<CategoryView, StoreError> {
    let mut path = parent.map(|(_, path)| path.to_vec()).unwrap_or_default();
    path.push(*id.as_uuid());
    let inserted = sqlx::query("INSERT INTO categories (id, parent_id, name, path) VALUES ($1, $2, $3, $4)")
        .bind(id.as_uuid())
        .bind(parent.map(|(parent, _)| *parent.as_uuid()))
        .bind(name)
        .bind(&path)
        .execute(pool)
        .await;
    match inserted {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Err(StoreError::CategoryNameTaken),
        other => other?,
    };
    let names: HashMap<Uuid, String> = sqlx::query_as("SELECT id, name FROM categories WHERE id = ANY($1)")
        .bind(&path)
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect();
    Ok(CategoryView {
        id,
        name: name.to_owned(),
        parent_id: parent.map(|(parent, _)| parent),
        path: steps(&path, &names),
        children: Vec::new(),
    })
}

/// The whole category tree, roots first, every node with its path and children.
pub async fn categories(pool: &PgPool) -> Result<Vec<CategoryView>, StoreError> {
    let rows = sqlx::query("SELECT id, parent_id, name, path FROM categories ORDER BY cardinality(path), lower(name)")
        .fetch_all(pool)
        .await?;
    let mut names = HashMap::with_capacity(rows.len());
    let mut children: HashMap<Uuid, Vec<CategoryId>> = HashMap::new();
    for row in &rows {
        let id: Uuid = row.try_get("id")?;
        names.insert(id, row.try_get::<String, _>("name")?);
        if let Some(parent) = row.try_get::<Option<Uuid>, _>("parent_id")? {
            children.entry(parent).or_default().push(CategoryId::from_uuid(id));
        }
    }
    rows.iter()
        .map(|row| {
            let id: Uuid = row.try_get("id")?;
            let path: Vec<Uuid> = row.try_get("path")?;
            Ok(CategoryView {
                id: CategoryId::from_uuid(id),
                name: row.try_get("name")?,
                parent_id: row.try_get::<Option<Uuid>, _>("parent_id")?.map(CategoryId::from_uuid),
                path: steps(&path, &names),
                children: children.remove(&id).unwrap_or_default(),
            })
        })
        .collect()
}

/// A category's path, each step named from `names`.
fn steps(path: &[Uuid], names: &HashMap<Uuid, String>) -> Vec<CategoryStep> {
    path.iter()
        .map(|step| CategoryStep {
            id: CategoryId::from_uuid(*step),
            name: names.get(step).cloned().unwrap_or_default(),
        })
        .collect()
}
