//! The chaos scenarios of `just chaos`: each on a stack of its own (private
//! Postgres, NATS and Redis; one process per service; the simulated provider
//! in its own process) under a steady load of checkouts, then checked: every
//! checkout accepted is an order in a final state, and the whole-system
//! invariants hold. They kill and restart servers, so they run one at a time
//! and never beside other tests: `#[ignore]`d here, run by `just chaos`
//! (`--run-ignored only`, one thread), which sets `EMPORIUM_BIN`.
//!
//! Each prints one `chaos:` line with what it did and how long each part took.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a test reports by panicking, and prints its timings

use std::time::Duration;

use emporium_load::chaos::{ChaosRun, duplicate_published_events, shorten_duplicate_window};
use emporium_load::stack::SERVICES;

/// How long each service (and Postgres) stays down before it is started again.
const DEAD_FOR: Duration = Duration::from_secs(3);
/// Checkouts accepted after a recovery before the next fault: the system works again.
const RECOVERED: usize = 20;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "kills processes: run alone by `just chaos`"]
async fn every_service_killed_and_restarted_in_turn_loses_no_order() {
    let mut run = ChaosRun::start("kill -9 of each service in turn", &[]).await.unwrap();
    run.fault();
    for service in SERVICES {
        run.stack.kill(service).await.unwrap();
        // The outage's length is the scenario's own: work piles up meanwhile.
        tokio::time::sleep(DEAD_FOR).await;
        run.stack.restart(service).await.unwrap();
        run.until_placed(RECOVERED).await.unwrap_or_else(|error| panic!("after restarting {service}: {error:#}"));
    }
    println!("{}", run.finish().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "stops the NATS server: run alone by `just chaos`"]
async fn nats_stopped_for_ten_seconds_loses_no_order() {
    let mut run = ChaosRun::start("NATS stopped for 10 s", &[]).await.unwrap();
    run.fault();
    run.stack.nats.stop().await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    run.stack.nats.restart().await.unwrap();
    run.until_placed(2 * RECOVERED).await.unwrap();
    println!("{}", run.finish().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "restarts the Postgres server: run alone by `just chaos`"]
async fn a_postgres_restart_loses_no_order() {
    let mut run = ChaosRun::start("Postgres restarted", &[]).await.unwrap();
    run.fault();
    run.stack.postgres.stop().await.unwrap();
    tokio::time::sleep(DEAD_FOR).await;
    run.stack.postgres.restart().await.unwrap();
    run.until_placed(2 * RECOVERED).await.unwrap();
    println!("{}", run.finish().await.unwrap());
}

/// Order actors passivate after 2 s idle, so most duplicates reach an order
/// that must be loaded again to see it already applied them.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "restarts processes: run alone by `just chaos`"]
async fn events_duplicated_at_the_broker_are_applied_once() {
    let mut run = ChaosRun::start("duplicates at the broker", &[("ORDER_IDLE_SECS", "2")]).await.unwrap();
    run.fault();
    let jetstream = async_nats::jetstream::new(run.nats.clone());
    // Idle long enough for the warm-up's orders to be passivated.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_restart = duplicate_published_events(&jetstream).await.unwrap();
    run.until_placed(RECOVERED).await.unwrap();
    for service in ["catalog", "inventory", "order", "payment", "shipping", "notification"] {
        run.stack.restart(service).await.unwrap();
    }
    let after_restart = duplicate_published_events(&jetstream).await.unwrap();
    run.until_placed(RECOVERED).await.unwrap();
    let summary = run.finish().await.unwrap();
    println!("{summary} ({before_restart} events duplicated before the consumers' restart, {after_restart} after)");
}

/// The streams keep duplicates for 1 s here (120 s in production), so the
/// replay of all but the last second's events reaches the consumers.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "replays every outbox: run alone by `just chaos`"]
async fn replaying_every_outbox_changes_nothing() {
    let mut run = ChaosRun::start("outbox replay --since 1h", &[]).await.unwrap();
    shorten_duplicate_window(&async_nats::jetstream::new(run.nats.clone()), Duration::from_secs(1)).await.unwrap();
    run.until_placed(RECOVERED).await.unwrap();
    run.fault();
    let replayed = run.stack.operator(&["outbox", "replay", "--since", "1h"]).await.unwrap();
    run.until_placed(RECOVERED).await.unwrap();
    let summary = run.finish().await.unwrap();
    println!("{summary} ({})", replayed.lines().collect::<Vec<_>>().join("; "));
}
