//! The catalog's Postgres tables: categories, products and their read-model
//! columns. Runtime queries (no compile-time database). A product change and
//! its event commit together through the outbox.

use chrono::{DateTime, Utc};
use emporium_actors::StateChange;
use emporium_nats::OutgoingEvent;
use emporium_schemas::commands::catalog::{CategoryStep, CategoryView, ProductView, Rating};
use emporium_schemas::values::{CategoryId, Currency, Money, ProductId, StockLevel, UserId, ValueError};
use futures::future::BoxFuture;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a sibling category has this name")]
    CategoryNameTaken,
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
        "INSERT INTO products (id, seller_id, name, description, price_amount, currency, category_id,
                               category_path, version, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $9)
         RETURNING {PRODUCT_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.as_uuid())
        .bind(seller.as_uuid())
        .bind(&fields.name)
        .bind(&fields.description)
        .bind(fields.price.amount.get())
        .bind(fields.price.currency.as_str())
        .bind(fields.category_id.map(|c| *c.as_uuid()))
        .bind(category_path)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
    emporium_nats::outbox::append(tx, std::slice::from_ref(event)).await?;
    product_of(&row)
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
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.as_uuid())
        .bind(&fields.name)
        .bind(&fields.description)
        .bind(fields.price.amount.get())
        .bind(fields.price.currency.as_str())
        .bind(fields.category_id.map(|c| *c.as_uuid()))
        .bind(category_path)
        .bind(version)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
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
    let names: std::collections::HashMap<Uuid, String> =
        sqlx::query_as("SELECT id, name FROM categories WHERE id = ANY($1)")
            .bind(&path)
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect();
    Ok(CategoryView {
        id,
        name: name.to_owned(),
        parent_id: parent.map(|(parent, _)| parent),
        path: path
            .iter()
            .map(|step| CategoryStep {
                id: CategoryId::from_uuid(*step),
                name: names.get(step).cloned().unwrap_or_default(),
            })
            .collect(),
        children: Vec::new(),
    })
}

/// The whole category tree, roots first, every node with its path and children.
pub async fn categories(pool: &PgPool) -> Result<Vec<CategoryView>, StoreError> {
    let rows = sqlx::query("SELECT id, parent_id, name, path FROM categories ORDER BY cardinality(path), lower(name)")
        .fetch_all(pool)
        .await?;
    let mut names = std::collections::HashMap::with_capacity(rows.len());
    let mut children: std::collections::HashMap<Uuid, Vec<CategoryId>> = std::collections::HashMap::new();
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
                name: names.get(&id).cloned().unwrap_or_default(),
                parent_id: row.try_get::<Option<Uuid>, _>("parent_id")?.map(CategoryId::from_uuid),
                path: path
                    .iter()
                    .map(|step| CategoryStep {
                        id: CategoryId::from_uuid(*step),
                        name: names.get(step).cloned().unwrap_or_default(),
                    })
                    .collect(),
                children: children.remove(&id).unwrap_or_default(),
            })
        })
        .collect()
}
