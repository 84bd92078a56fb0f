//! Throughput of the front door over real HTTP (keep-alive), with identity
//! and the gateway in this process and Postgres, NATS and Redis real:
//! - logins/s: each one an Argon2id verify (parameters printed), a refresh
//!   token row and a signed JWT;
//! - authenticated reads/s: `GET /api/v1/me`, i.e. token verification,
//!   two rate-limit counters in Redis, a NATS request/reply and a Postgres
//!   read — the shape of `GET /products/{id}` until the catalog exists.
//!
//! Prints `bench: <name> = <value> <unit>` lines for `just bench`. Knobs:
//! `BENCH_SECS` (default 5), `BENCH_LOGIN_CLIENTS` (8), `BENCH_READ_CLIENTS` (64).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use support::{PASSWORD, Stack, token};

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs `clients` loops of `request` for `secs`; returns (ok per second, p50, p99).
async fn drive<F, Fut>(clients: u64, secs: u64, request: F) -> (f64, Duration, Duration)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let until = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0_u64;
            while Instant::now() < until {
                let at = Instant::now();
                if request().await {
                    latencies.push(at.elapsed());
                } else {
                    failed += 1;
                }
            }
            (latencies, failed)
        }));
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    for task in tasks {
        let (mine, failures) = task.await.unwrap();
        latencies.extend(mine);
        failed += failures;
    }
    assert_eq!(failed, 0, "requests failed during the benchmark");
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    (latencies.len() as f64 / elapsed, at(0.50), at(0.99))
}

#[tokio::main]
async fn main() {
    let secs = knob("BENCH_SECS", 5);
    let stack = Stack::with(|_, gateway| {
        gateway.rate_limits.auth_per_ip = u64::MAX / 4;
        gateway.rate_limits.per_ip = u64::MAX / 4;
        gateway.rate_limits.per_user = u64::MAX / 4;
    })
    .await;
    let session = stack.signed_up("bench@example.com", "customer").await;
    let access = token(&session, "access_token");
    let stack = Arc::new(stack);

    let clients = knob("BENCH_LOGIN_CLIENTS", 8);
    let login_stack = stack.clone();
    let (logins, p50, p99) = drive(clients, secs, move || {
        let stack = login_stack.clone();
        async move {
            let response = stack
                .request(Method::POST, "/api/v1/auth/login")
                .json(&json!({ "email": "bench@example.com", "password": PASSWORD }))
                .send()
                .await;
            response.is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    let params = emporium_identity::password::Argon2Params::default();
    println!("bench: logins_per_sec ({params}, {clients} clients) = {logins:.0} logins/s");
    println!("bench: login_latency ({clients} clients) = p50 {:.1} ms, p99 {:.1} ms", ms(p50), ms(p99));

    let clients = knob("BENCH_READ_CLIENTS", 64);
    let read_stack = stack.clone();
    let (reads, p50, p99) = drive(clients, secs, move || {
        let (stack, access) = (read_stack.clone(), access.clone());
        async move {
            let response = stack.request(Method::GET, "/api/v1/me").bearer_auth(&access).send().await;
            response.is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    println!("bench: authenticated_reads_per_sec (GET /api/v1/me, {clients} clients) = {reads:.0} req/s");
    println!("bench: authenticated_read_latency ({clients} clients) = p50 {:.2} ms, p99 {:.2} ms", ms(p50), ms(p99));
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
