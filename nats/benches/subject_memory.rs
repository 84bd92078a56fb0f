//! nats-server 2.9 keeps state per distinct subject. DESIGN.md puts the entity
//! key in the event subject, so one million orders mean one million subjects:
//! this measures the server's resident memory as they arrive, with the event
//! stream provisioned exactly as production provisions it, and compares it with
//! the same events on one subject per partition (the key in a header instead).
//!
//! Prints `bench: <name> = <value> <unit>` lines for `just bench`.
//! `SUBJECT_MEMORY_EVENTS` overrides the number of events (default 1,000,000),
//! `SUBJECT_MEMORY_MAX_BYTES` the stream's byte limit (default: production's),
//! to see whether memory follows the retention limit or grows past it, and
//! `SUBJECT_MEMORY_DUPLICATE_WINDOW_SECS` the duplicate window (default:
//! production's 120 s), whose `Nats-Msg-Id` table grows with the publish rate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a bench program: output is its purpose

use std::future::IntoFuture;
use std::time::Instant;

use async_nats::jetstream;
use emporium_nats::{Topology, provision};
use emporium_schemas::{EntityKey, Partition};
use emporium_test_harness::NatsServer;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

const PAYLOAD_BYTES: usize = 360;
const IN_FLIGHT: usize = 2_000;

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap();
    kib / 1024.0
}

/// Publishes `events` order events, the key in the subject or in a header.
async fn run(events: usize, key_in_subject: bool) -> Vec<(usize, f64)> {
    let server = NatsServer::start().await.unwrap();
    let pid = server.pid().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    let mut topology = Topology::new(4, vec![]);
    if let Some(max_bytes) = std::env::var("SUBJECT_MEMORY_MAX_BYTES").ok().and_then(|n| n.parse().ok()) {
        topology.event_max_bytes = max_bytes;
    }
    if let Some(secs) = std::env::var("SUBJECT_MEMORY_DUPLICATE_WINDOW_SECS").ok().and_then(|n| n.parse().ok()) {
        topology.duplicate_window = std::time::Duration::from_secs(secs);
    }
    provision(&js, &topology).await.unwrap();

    let placed = emporium_schemas::event_type!("order", "placed", 1);
    let payload = bytes::Bytes::from(vec![b'x'; PAYLOAD_BYTES]);
    let mut samples = vec![(0, rss_mib(pid))];
    let mut pending = FuturesUnordered::new();
    let started = Instant::now();
    for i in 0..events {
        let key = EntityKey::from(uuid::Uuid::now_v7());
        let partition = Partition::of(&key, topology.partitions);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("{i}.v1").as_str());
        let subject = if key_in_subject {
            placed.subject(partition, &key)
        } else {
            headers.insert("Emporium-Key", key.as_str());
            format!("evt.order.placed.v1.{partition}")
        };
        pending.push(js.publish_with_headers(subject, headers, payload.clone()).await.unwrap().into_future());
        if pending.len() >= IN_FLIGHT {
            pending.next().await.unwrap().unwrap();
        }
        if (i + 1) % (events / 4).max(1) == 0 {
            while let Some(ack) = pending.next().await {
                ack.unwrap();
            }
            samples.push((i + 1, rss_mib(pid)));
        }
    }
    while let Some(ack) = pending.next().await {
        ack.unwrap();
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    let mode = if key_in_subject { "key in subject" } else { "key in header" };
    println!("bench: JetStream publish, {mode}, {IN_FLIGHT} in flight = {rate:.0} msg/s");
    samples
}

#[tokio::main]
async fn main() {
    let events: usize = std::env::var("SUBJECT_MEMORY_EVENTS").ok().and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    for key_in_subject in [true, false] {
        let mode = if key_in_subject { "key in subject" } else { "key in header" };
        for (published, mib) in run(events, key_in_subject).await {
            println!("bench: nats-server RSS, {mode}, after {published} events = {mib:.0} MiB");
        }
    }
}
