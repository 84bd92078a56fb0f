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

use std::sync::Arc;

use emporium_system::{PASSWORD, Stack, drive, knob, ms, token};
use reqwest::Method;
use serde_json::json;

#[tokio::main]
async fn main() {
    let secs = knob("BENCH_SECS", 5);
    let stack = Stack::unlimited().await;
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
