//! What JetStream holds for Emporium, as code: one event stream per context,
//! the dead-letter stream, three KV buckets, and one durable pull consumer per
//! (service, source stream, partition). Every stream and bucket has limits.

use std::time::Duration;

use emporium_schemas::Partition;

/// Every context that publishes events, each with its stream `EVT_<CONTEXT>`.
pub const CONTEXTS: &[&str] = &["identity", "catalog", "inventory", "order", "payment", "shipping"];

/// The stream of dead letters: messages a consumer gave up on.
pub const DLQ_STREAM: &str = "DLQ";
/// DLQ subjects: `dlq.<consumer durable name>`.
pub const DLQ_SUBJECT_PREFIX: &str = "dlq";

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const MIB: i64 = 1024 * 1024;

/// The stream that holds `context`'s events.
pub fn event_stream(context: &str) -> String {
    format!("EVT_{}", context.to_uppercase())
}

/// A KV bucket and its limits. On 2.9 buckets are created as their backing
/// stream `KV_<name>` (see [`crate::buckets`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub name: &'static str,
    /// How long an entry lives (the stream's `max_age`).
    pub ttl: Duration,
    pub max_bytes: i64,
    /// Values kept per key.
    pub history: i64,
}

/// `idempotency`: HTTP `Idempotency-Key` → stored response, kept 24 h.
pub const IDEMPOTENCY: Bucket = Bucket { name: "idempotency", ttl: DAY, max_bytes: 256 * MIB, history: 1 };
/// `dedup`: `<consumer>:<event id>` for side-effect-only handlers; outlives the
/// outbox replay window so a replayed event is still recognised.
pub const DEDUP: Bucket =
    Bucket { name: "dedup", ttl: Duration::from_secs(8 * 24 * 60 * 60), max_bytes: 512 * MIB, history: 1 };
/// `locks`: leases (relay leader, sweepers, partition ownership). Each value
/// carries its own expiry; the TTL only clears keys nobody renews any more.
pub const LOCKS: Bucket = Bucket { name: "locks", ttl: DAY, max_bytes: 16 * MIB, history: 1 };

/// A service's interest in one context's events: one durable consumer per partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub service: &'static str,
    pub context: &'static str,
}

impl Subscription {
    /// `<service>-<context>-<partition>`: stable, so a restart resumes where it stopped.
    pub fn durable_name(&self, partition: Partition) -> String {
        format!("{}-{}-{partition}", self.service, self.context)
    }

    /// The one filter subject (2.9 takes one) selecting the partition's events.
    pub fn filter_subject(&self, partition: Partition) -> String {
        format!("evt.{}.*.*.{partition}.*", self.context)
    }
}

/// Everything to provision, with its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub partitions: u16,
    pub event_max_age: Duration,
    pub event_max_bytes: i64,
    /// Window in which JetStream drops a second publish with the same `Nats-Msg-Id`.
    pub duplicate_window: Duration,
    pub dlq_max_age: Duration,
    pub dlq_max_bytes: i64,
    pub buckets: Vec<Bucket>,
    pub subscriptions: Vec<Subscription>,
    /// The server's own redelivery bound: a safety net a few above the consumer
    /// loop's own bound, which dead-letters first.
    pub max_deliver: i64,
    pub ack_wait: Duration,
    pub max_ack_pending: i64,
}

impl Topology {
    /// Production limits for `partitions` partitions and these subscriptions.
    pub fn new(partitions: u16, subscriptions: Vec<Subscription>) -> Self {
        Self {
            partitions,
            event_max_age: 7 * DAY,
            event_max_bytes: 1024 * MIB,
            duplicate_window: Duration::from_secs(120),
            dlq_max_age: 30 * DAY,
            dlq_max_bytes: 256 * MIB,
            buckets: vec![IDEMPOTENCY, DEDUP, LOCKS],
            subscriptions,
            max_deliver: 12,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 4_096,
        }
    }

    pub fn partitions(&self) -> impl Iterator<Item = Partition> {
        Partition::all(self.partitions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_filters_one_partition_of_one_context() {
        let subscription = Subscription { service: "payment", context: "inventory" };
        let p2 = Topology::new(4, vec![]).partitions().nth(2).unwrap();
        assert_eq!(subscription.durable_name(p2), "payment-inventory-p02");
        assert_eq!(subscription.filter_subject(p2), "evt.inventory.*.*.p02.*");
    }

    #[test]
    fn every_context_of_the_registry_has_a_stream() {
        for event in emporium_schemas::registry::events() {
            assert!(CONTEXTS.contains(&event.context), "{} has no stream", event.context);
        }
    }
}
