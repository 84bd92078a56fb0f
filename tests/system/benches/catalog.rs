//! Search and product reads over real HTTP against 100,000 products: the
//! gateway, identity, catalog and inventory in this process, Postgres, NATS
//! and Redis real. Anonymous clients (the catalog is public), so each request
//! is: two rate-limit counters in Redis, a NATS request/reply, and for search
//! one Postgres query (full text, filters, sorts in rotation); for detail, the
//! catalog's in-process cache.
//!
//! Prints `bench: <name> = <value> <unit>` lines for `just bench`. Knobs:
//! `BENCH_SECS` (default 5), `BENCH_PRODUCTS` (100000), `BENCH_SEARCH_CLIENTS` (32).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use emporium_system::{Stack, drive, knob, ms};
use reqwest::Method;
use uuid::Uuid;

#[tokio::main]
async fn main() {
    let secs = knob("BENCH_SECS", 5);
    let products = knob("BENCH_PRODUCTS", 100_000);
    let mut stack = Stack::unlimited().await;
    stack.start_catalog().await;
    let pool = stack.catalog_db.as_ref().unwrap().pool().clone();
    let seeding = Instant::now();
    emporium_catalog::seed::seed(&pool, usize::try_from(products).unwrap()).await.unwrap();
    eprintln!("seeded {products} products in {:.1} s", seeding.elapsed().as_secs_f64());

    let categories: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM categories").fetch_all(&pool).await.unwrap();
    let words = ["lamp", "teapot", "mirror", "blanket", "candle", "basket", "towel", "sofa"];
    let mut queries = Vec::new();
    for (i, word) in words.iter().enumerate() {
        let category = categories[i % categories.len()];
        queries.push(format!("q={word}"));
        queries.push(format!("q={word}&sort=price_asc&in_stock=true"));
        queries.push(format!("q={word}s&min_price=10000&max_price=40000"));
        queries.push(format!("category={category}&sort=price_desc"));
        queries.push(format!("category={category}&q={word}"));
        queries.push(format!("min_price={}&max_price={}&sort=price_asc", i * 1000, i * 1000 + 5000));
        queries.push("sort=rating&in_stock=true".to_owned());
        queries.push("sort=newest".to_owned());
    }
    let queries = Arc::new(queries);
    let stack = Arc::new(stack);
    let next = Arc::new(AtomicUsize::new(0));

    let clients = knob("BENCH_SEARCH_CLIENTS", 32);
    let (searches, p50, p99) = drive(clients, secs, {
        let (stack, queries, next) = (stack.clone(), queries.clone(), next.clone());
        move || {
            let (stack, queries, next) = (stack.clone(), queries.clone(), next.clone());
            async move {
                let query = &queries[next.fetch_add(1, Ordering::Relaxed) % queries.len()];
                let response = stack.request(Method::GET, &format!("/api/v1/products?{query}")).send().await;
                response.is_ok_and(|r| r.status() == 200)
            }
        }
    })
    .await;
    println!(
        "bench: catalog_searches_per_sec ({products} products, {} query shapes, {clients} clients) = {searches:.0} req/s",
        queries.len()
    );
    println!("bench: catalog_search_latency ({clients} clients) = p50 {:.2} ms, p99 {:.2} ms", ms(p50), ms(p99));

    let sample: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM products ORDER BY random() LIMIT 1000").fetch_all(&pool).await.unwrap();
    let sample = Arc::new(sample);
    let (reads, p50, p99) = drive(clients, secs, {
        let (stack, sample, next) = (stack.clone(), sample.clone(), next.clone());
        move || {
            let (stack, sample, next) = (stack.clone(), sample.clone(), next.clone());
            async move {
                let id = sample[next.fetch_add(1, Ordering::Relaxed) % sample.len()];
                let response = stack.request(Method::GET, &format!("/api/v1/products/{id}")).send().await;
                response.is_ok_and(|r| r.status() == 200)
            }
        }
    })
    .await;
    println!(
        "bench: product_reads_per_sec (GET /api/v1/products/{{id}}, 1,000 hot products, {clients} clients) = {reads:.0} req/s"
    );
    println!("bench: product_read_latency ({clients} clients) = p50 {:.2} ms, p99 {:.2} ms", ms(p50), ms(p99));
}
