//! Search and browse: one SQL query per page, built from a validated
//! [`Search`]. Full-text matching uses the `search` tsvector (English
//! stemming, name weighted above description) and `ts_rank`; filters and
//! sorts each have a partial index; pages continue strictly after the
//! cursor's (sort key, id), so rows added or removed meanwhile never shift
//! the pages still to come.

use emporium_schemas::commands::catalog::{ProductView, SortOrder};
use emporium_schemas::values::ProductId;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use crate::domain::{Cursor, Search};
use crate::store::{PRODUCT_COLUMNS, StoreError, product_of};

/// One page and where the next one starts (`None`: this was the last).
#[derive(Debug)]
pub struct Page {
    pub items: Vec<ProductView>,
    pub next: Option<Cursor>,
}

pub async fn search(pool: &PgPool, search: &Search) -> Result<Page, StoreError> {
    let rows = query(search).build().fetch_all(pool).await?;
    let limit = usize::try_from(search.limit).unwrap_or(usize::MAX);
    let more = rows.len() > limit;
    let mut items = Vec::with_capacity(limit.min(rows.len()));
    let mut last_rank = 0.0f32;
    for row in rows.iter().take(limit) {
        items.push(product_of(row)?);
        if search.sort == SortOrder::Relevance {
            last_rank = row.try_get("rank")?;
        }
    }
    let next = match items.last() {
        Some(last) if more => Some(cursor_after(search.sort, last, last_rank)),
        _ => None,
    };
    Ok(Page { items, next })
}

fn cursor_after(sort: SortOrder, last: &ProductView, rank: f32) -> Cursor {
    let id = last.id;
    match sort {
        SortOrder::Relevance => Cursor::Relevance { rank, id },
        SortOrder::PriceAsc => Cursor::Price { amount: last.price.amount.get(), id, descending: false },
        SortOrder::PriceDesc => Cursor::Price { amount: last.price.amount.get(), id, descending: true },
        SortOrder::Newest => Cursor::Newest { id },
        SortOrder::Rating => Cursor::Rating { average: last.rating.average.unwrap_or(0.0), id },
    }
}

/// The page's SQL (one row more than the page, to tell whether another follows).
pub fn query(search: &Search) -> QueryBuilder<Postgres> {
    build(QueryBuilder::new("SELECT "), search)
}

/// The same query under `EXPLAIN (FORMAT JSON)`: tests check its plan uses the indexes.
pub fn explain(search: &Search) -> QueryBuilder<Postgres> {
    build(QueryBuilder::new("EXPLAIN (FORMAT JSON) SELECT "), search)
}

fn build(mut sql: QueryBuilder<Postgres>, search: &Search) -> QueryBuilder<Postgres> {
    let relevance = search.sort == SortOrder::Relevance;
    sql.push(PRODUCT_COLUMNS);
    if relevance {
        // The rank is computed once per match in the inner query, so the
        // keyset condition and the order can name it.
        sql.push(", rank FROM (SELECT ").push(PRODUCT_COLUMNS).push(", ts_rank(search, query) AS rank");
        sql.push(" FROM products, websearch_to_tsquery('english', ");
        sql.push_bind(search.q.clone().unwrap_or_default()).push(") AS query");
        sql.push(" WHERE deleted_at IS NULL AND search @@ query");
    } else {
        sql.push(" FROM products WHERE deleted_at IS NULL");
        if let Some(q) = &search.q {
            sql.push(" AND search @@ websearch_to_tsquery('english', ").push_bind(q.clone()).push(")");
        }
    }
    if let Some(category) = search.category {
        sql.push(" AND category_path @> ARRAY[").push_bind(*category.as_uuid()).push("]::uuid[]");
    }
    if let Some(min) = search.min_price {
        sql.push(" AND price_amount >= ").push_bind(min);
    }
    if let Some(max) = search.max_price {
        sql.push(" AND price_amount <= ").push_bind(max);
    }
    if let Some(seller) = search.seller {
        sql.push(" AND seller_id = ").push_bind(*seller.as_uuid());
    }
    if search.in_stock {
        sql.push(" AND available > 0");
    }
    if relevance {
        sql.push(") AS hit WHERE true");
    }
    let uuid = |id: &ProductId| *id.as_uuid();
    match &search.after {
        None => {}
        Some(Cursor::Relevance { rank, id }) => {
            sql.push(" AND (rank, id) < (").push_bind(*rank).push("::real, ").push_bind(uuid(id)).push(")");
        }
        Some(Cursor::Price { amount, id, descending }) => {
            sql.push(if *descending { " AND (price_amount, id) < (" } else { " AND (price_amount, id) > (" });
            sql.push_bind(*amount).push(", ").push_bind(uuid(id)).push(")");
        }
        Some(Cursor::Newest { id }) => {
            sql.push(" AND id < ").push_bind(uuid(id));
        }
        Some(Cursor::Rating { average, id }) => {
            sql.push(" AND (rating_avg, id) < (").push_bind(*average).push(", ").push_bind(uuid(id)).push(")");
        }
    }
    sql.push(match search.sort {
        SortOrder::Relevance => " ORDER BY rank DESC, id DESC",
        SortOrder::PriceAsc => " ORDER BY price_amount, id",
        SortOrder::PriceDesc => " ORDER BY price_amount DESC, id DESC",
        SortOrder::Newest => " ORDER BY id DESC",
        SortOrder::Rating => " ORDER BY rating_avg DESC, id DESC",
    });
    sql.push(" LIMIT ").push_bind(i64::from(search.limit) + 1);
    sql
}
