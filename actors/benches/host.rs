//! Entity messages per second through the host, in memory: the actor layer's
//! own cost (routing, one actor per entity, decide, apply, a version-checked
//! in-memory commit, the reply), without Postgres or NATS.
//!
//! Prints `bench: <name> = <value> <unit>` lines for `just bench`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a bench program: output is its purpose

use std::sync::Arc;
use std::time::{Duration, Instant};

use emporium_actors::{EntityHost, HostConfig, MemoryStore};

#[path = "support/counter.rs"]
mod counter;

use counter::Counter;

const ENTITIES: u32 = 10_000;
const MESSAGES: u32 = 400_000;
const CALLERS: u32 = 512;

#[tokio::main]
async fn main() {
    let store = Arc::new(MemoryStore::<Counter>::default());
    let config = HostConfig { idle_after: Duration::from_secs(600), max_in_flight: 100_000, ..HostConfig::default() };
    let host = EntityHost::start(store.clone(), config).await.unwrap();

    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..CALLERS {
        let host = host.clone();
        callers.spawn(async move {
            for i in 0..MESSAGES / CALLERS {
                host.send((caller * 7919 + i) % ENTITIES, ()).await.unwrap();
            }
        });
    }
    while let Some(done) = callers.join_next().await {
        done.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sent = f64::from(MESSAGES / CALLERS * CALLERS);
    assert_eq!(store.commits() as f64, sent);
    println!(
        "bench: entity messages through the host (in memory, {ENTITIES} entities, {CALLERS} callers) = {:.0} msg/s",
        sent / elapsed
    );
    host.stop().await;
}
