//! Real checkouts through the HTTP gateway, end to end: identity, catalog,
//! inventory, order, payment (the simulated provider, a fixed latency per
//! call) and cart in this process; Postgres, NATS and Redis real. Each client
//! is its own customer and loops: add a product to the cart, check out
//! (`POST /cart/checkout`), wait until the order is confirmed (its
//! `order.confirmed` event, heard on NATS; with `BENCH_FOLLOW=sse`, as the
//! customer would, on the order's live stream `GET /orders/{id}/events`),
//! again. Shipping and notification run too, as after every sale.
//!
//! Prints `bench: <name> = <value> <unit>` lines for `just bench`: confirmed
//! checkouts per second; p50/p95/p99 from the checkout request to the order
//! confirmed; Postgres commits per checkout (`pg_stat_database.xact_commit`
//! over the services' databases, read-only statements included) and WAL
//! flushes per checkout (`pg_stat_wal.wal_sync`, the durable writes).
//! Knobs: `BENCH_SECS` (default 10), `BENCH_CHECKOUT_CLIENTS` (64),
//! `BENCH_PROVIDER_LATENCY_MS` (20), `BENCH_CHECKOUT_PRODUCTS` (64),
//! `BENCH_FOLLOW` (`nats` or `sse`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use support::shop::address;
use support::{Stack, knob, ms};
use tokio::sync::oneshot;

/// When each order was confirmed, or who waits to hear it.
#[derive(Default)]
struct Confirmations(Mutex<HashMap<String, Confirmation>>);

enum Confirmation {
    Heard(Instant),
    Awaited(oneshot::Sender<Instant>),
}

impl Confirmations {
    fn heard(&self, order: String, at: Instant) {
        let mut map = self.0.lock().unwrap();
        match map.remove(&order) {
            Some(Confirmation::Awaited(waiter)) => {
                let _ = waiter.send(at);
            }
            _ => {
                map.insert(order, Confirmation::Heard(at));
            }
        }
    }

    async fn confirmed(&self, order: &str) -> Instant {
        let waiting = {
            let mut map = self.0.lock().unwrap();
            if let Some(Confirmation::Heard(at)) = map.remove(order) {
                return at;
            }
            let (tx, rx) = oneshot::channel();
            map.insert(order.to_owned(), Confirmation::Awaited(tx));
            rx
        };
        tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .unwrap_or_else(|_| panic!("order {order} never confirmed"))
            .unwrap()
    }
}

/// Commits over the services' databases, and WAL flushes of the whole server.
async fn commits(stack: &Stack) -> (i64, i64) {
    let commerce = stack.commerce();
    let pools = [
        stack.db.pool(),
        stack.catalog_db.as_ref().unwrap().pool(),
        stack.inventory_db.as_ref().unwrap().pool(),
        commerce.order_db.pool(),
        commerce.payment_db.pool(),
        commerce.shipping_db.pool(),
        commerce.notification_db.pool(),
    ];
    let mut total = 0;
    for pool in pools {
        let mut connection = pool.acquire().await.unwrap();
        sqlx::query("SELECT pg_stat_clear_snapshot()").execute(&mut *connection).await.unwrap();
        let count: i64 =
            sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
                .fetch_one(&mut *connection)
                .await
                .unwrap();
        total += count;
    }
    let wal: i64 =
        sqlx::query_scalar("SELECT wal_sync FROM pg_stat_wal").fetch_one(stack.db.pool()).await.unwrap_or_default();
    (total, wal)
}

/// When the order's live stream first shows it confirmed (the snapshot or a change).
async fn confirmed_on_stream(stack: &Stack, customer: &str, order: &str) -> Instant {
    let mut stream = stack.get_as(customer, &format!("/api/v1/orders/{order}/events")).await;
    assert_eq!(stream.status(), 200, "following the order");
    let mut seen = String::new();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("order {order} never confirmed on its stream"))
            .unwrap()
            .expect("the stream ended before the order was confirmed");
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
        if seen.contains(r#""status":"confirmed""#) {
            return Instant::now();
        }
    }
}

#[tokio::main]
async fn main() {
    let secs = knob("BENCH_SECS", 10);
    let clients = knob("BENCH_CHECKOUT_CLIENTS", 64);
    let latency_ms = knob("BENCH_PROVIDER_LATENCY_MS", 20);
    let product_count = knob("BENCH_CHECKOUT_PRODUCTS", 64);
    let over_sse = std::env::var("BENCH_FOLLOW").is_ok_and(|follow| follow == "sse");

    let mut stack = Stack::unlimited().await;
    Box::pin(stack.start_catalog()).await;
    Box::pin(stack.start_commerce(|_, payment| {
        payment.provider_latency = Duration::from_millis(latency_ms);
        payment.provider_timeout = Duration::from_secs(5);
    }))
    .await;

    let seller = stack.access("seller").await;
    let mut products = Vec::new();
    for n in 0..product_count {
        let product = stack.product(&seller, &format!("Bench chair {n}"), 1_000 + i64::try_from(n).unwrap()).await;
        let id = product["id"].as_str().unwrap().to_owned();
        stack.stock(&seller, &id, 1_000_000).await;
        products.push(id);
    }
    let mut customers = Vec::new();
    for _ in 0..clients {
        customers.push(stack.access("customer").await);
    }

    let confirmations = Arc::new(Confirmations::default());
    let mut confirmed_events = stack.nats.client().subscribe("evt.order.confirmed.>").await.unwrap();
    tokio::spawn({
        let confirmations = confirmations.clone();
        async move {
            while let Some(message) = confirmed_events.next().await {
                let at = Instant::now();
                let envelope: Value = serde_json::from_slice(&message.payload).unwrap();
                confirmations.heard(envelope["data"]["order_id"].as_str().unwrap().to_owned(), at);
            }
        }
    });

    let stack = Arc::new(stack);
    let (commits_before, wal_before) = commits(&stack).await;
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for (n, customer) in customers.into_iter().enumerate() {
        let (stack, confirmations) = (stack.clone(), confirmations.clone());
        let product = products[n % products.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let line = json!({ "product_id": product, "quantity": 1 });
                let added = stack.send_as(&customer, Method::POST, "/api/v1/cart/items", &line).await;
                assert_eq!(added.status(), 200, "adding to the cart");
                let body = json!({ "shipping_address": address(), "payment_method": "tok_visa" });
                let at = Instant::now();
                let response = stack
                    .request(Method::POST, "/api/v1/cart/checkout")
                    .bearer_auth(&customer)
                    .header("idempotency-key", uuid::Uuid::now_v7().to_string())
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 202, "checkout");
                let accepted: Value = response.json().await.unwrap();
                let order = accepted["order_id"].as_str().unwrap();
                let confirmed = if over_sse {
                    confirmed_on_stream(&stack, &customer, order).await
                } else {
                    confirmations.confirmed(order).await
                };
                latencies.push(confirmed.saturating_duration_since(at));
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Statistics reach pg_stat_database within a second of the commits.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (commits_after, wal_after) = commits(&stack).await;

    let checkouts = latencies.len();
    latencies.sort();
    let at = |q: f64| latencies[((checkouts as f64 * q) as usize).min(checkouts - 1)];
    let per_checkout = |delta: i64| delta as f64 / checkouts as f64;
    println!(
        "bench: checkouts_confirmed_per_sec ({clients} customers, provider latency {latency_ms} ms) = {:.0} checkouts/s",
        checkouts as f64 / elapsed
    );
    let heard = if over_sse { "over SSE" } else { "on NATS" };
    println!(
        "bench: checkout_to_confirmed ({clients} customers, heard {heard}) = p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
        ms(at(0.50)),
        ms(at(0.95)),
        ms(at(0.99))
    );
    println!(
        "bench: postgres_commits_per_checkout (all services, reads included) = {:.1} commits",
        per_checkout(commits_after - commits_before)
    );
    println!("bench: wal_flushes_per_checkout = {:.2} flushes", per_checkout(wal_after - wal_before));
}
