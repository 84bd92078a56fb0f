//! The search and filter queries use their indexes: each is EXPLAINed over
//! 20,000 products (analyzed), and its plan must name the index and scan no
//! table sequentially.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use emporium_catalog::domain::Search;
use emporium_catalog::{search, seed::seed, store};
use emporium_schemas::commands::catalog::{SearchProducts, SortOrder};
use emporium_schemas::values::{CategoryId, UserId};
use emporium_test_harness::TestDatabase;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

async fn index_names(pool: &PgPool, request: SearchProducts) -> (Vec<String>, String) {
    let search = Search::parse(request).unwrap();
    let plan: Value = search::explain(&search).build_query_scalar().fetch_one(pool).await.unwrap();
    let text = plan.to_string();
    let mut names = Vec::new();
    collect(&plan, &mut names);
    (names, text)
}

fn collect(node: &Value, names: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            if let Some(Value::String(name)) = map.get("Index Name") {
                names.push(name.clone());
            }
            map.values().for_each(|v| collect(v, names));
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, names)),
        _ => {}
    }
}

#[tokio::test]
async fn every_search_and_filter_uses_its_index() {
    let db = TestDatabase::create().await.unwrap();
    store::migrate(db.pool()).await.unwrap();
    seed(db.pool(), 20_000).await.unwrap();
    // A small subcategory and a small seller: filters selective enough that
    // their own index beats walking a sort order's index.
    let (category, seller) = (Uuid::now_v7(), Uuid::now_v7());
    let parent: Uuid = sqlx::query_scalar("SELECT id FROM categories LIMIT 1").fetch_one(db.pool()).await.unwrap();
    sqlx::query("INSERT INTO categories (id, parent_id, name, path) VALUES ($1, $2, 'Small', $3)")
        .bind(category)
        .bind(parent)
        .bind(vec![parent, category])
        .execute(db.pool())
        .await
        .unwrap();
    sqlx::query(
        "UPDATE products SET category_id = $1, category_path = $2, seller_id = $3
         WHERE id IN (SELECT id FROM products ORDER BY id LIMIT 30)",
    )
    .bind(category)
    .bind(vec![parent, category])
    .bind(seller)
    .execute(db.pool())
    .await
    .unwrap();
    sqlx::query("VACUUM ANALYZE products").execute(db.pool()).await.unwrap();

    let cases: Vec<(&str, SearchProducts, &str)> = vec![
        ("full text", SearchProducts { q: Some("brass teapots".into()), ..Default::default() }, "products_search"),
        (
            "full text by price",
            SearchProducts { q: Some("walnut mirror".into()), sort: Some(SortOrder::PriceAsc), ..Default::default() },
            "products_search",
        ),
        (
            "category subtree",
            SearchProducts { category: Some(CategoryId::from_uuid(category)), ..Default::default() },
            "products_category",
        ),
        (
            "price range",
            SearchProducts {
                min_price: Some(1_000),
                max_price: Some(1_500),
                sort: Some(SortOrder::PriceAsc),
                ..Default::default()
            },
            "products_price",
        ),
        ("seller", SearchProducts { seller: Some(UserId::from_uuid(seller)), ..Default::default() }, "products_seller"),
        // No index reads `available` (stock copies would stop being HOT updates): newest order, filtered.
        ("in stock, newest", SearchProducts { in_stock: Some(true), ..Default::default() }, "products_newest"),
        ("newest", SearchProducts::default(), "products_newest"),
        ("cheapest", SearchProducts { sort: Some(SortOrder::PriceAsc), ..Default::default() }, "products_price"),
        ("dearest", SearchProducts { sort: Some(SortOrder::PriceDesc), ..Default::default() }, "products_price"),
        ("best rated", SearchProducts { sort: Some(SortOrder::Rating), ..Default::default() }, "products_rating"),
    ];
    for (what, request, index) in cases {
        let (names, plan) = index_names(db.pool(), request).await;
        assert!(names.iter().any(|n| n == index), "{what}: expected {index}, plan uses {names:?}: {plan}");
        assert!(!plan.contains("\"Seq Scan\""), "{what}: sequential scan in {plan}");
    }
}

#[tokio::test]
async fn relevance_ranks_name_matches_first_and_pages_without_overlap() {
    let db = TestDatabase::create().await.unwrap();
    store::migrate(db.pool()).await.unwrap();
    seed(db.pool(), 5_000).await.unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut request = SearchProducts { q: Some("kettle".into()), limit: Some(50), ..Default::default() };
    let mut ranks_in_name = true;
    loop {
        let page = search::search(db.pool(), &Search::parse(request.clone()).unwrap()).await.unwrap();
        for product in &page.items {
            assert!(seen.insert(product.id), "shown twice");
            let in_name = product.name.to_lowercase().contains("kettle");
            // Once the name matches end, no name match may follow.
            assert!(ranks_in_name || !in_name, "a name match ranked below a description-only match");
            ranks_in_name &= in_name;
        }
        match page.next {
            Some(cursor) => request.cursor = Some(cursor.encode()),
            None => break,
        }
    }
    let matching: i64 =
        sqlx::query_scalar("SELECT count(*) FROM products WHERE search @@ to_tsquery('english', 'kettle')")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(seen.len() as i64, matching);
}
