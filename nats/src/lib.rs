//! Emporium's JetStream plumbing and the messaging contract around it.
//!
//! # Layout
//! - [`topology`]: streams, the DLQ, KV buckets and durable consumers, as code,
//!   with their retention limits.
//! - [`provision`]: creates or updates all of it, idempotently (`emporium provision`).
//! - [`buckets`]: KV buckets on nats-server 2.9 (created as their backing stream).
//! - [`publisher`]: subjects and `Nats-Msg-Id`s from event types; pipelined publishing.
//! - [`consumer`]: the one consumer loop (batches, ack after commit, NAK
//!   backoff, per-key order, the delivery bound) and the `seq` freshness check.
//! - [`dlq`]: dead letters, listed and replayed.
//! - [`outbox`], [`inbox`]: the transactional outbox with its relay, and the
//!   inbox that makes consumers idempotent.
//! - [`batch`]: many handlers' transactions committed as one, each unit in a savepoint.
//! - [`lease`]: leases in the `locks` bucket.
//! - [`dedup`]: the `dedup` bucket for side-effect-only handlers.
//! - [`rpc`]: request/reply for queue-group commands: the caller and the server.
//! - [`clock`]: injected wall-clock time.
//! - [`runtime`]: what every event-driven service starts and stops the same
//!   way: its relay, consumers and tasks, and the request loop, in order.

pub mod batch;
pub mod buckets;
pub mod clock;
pub mod consumer;
pub mod dedup;
pub mod dlq;
pub mod inbox;
pub mod lease;
pub mod outbox;
pub mod provision;
pub mod publisher;
pub mod rpc;
pub mod runtime;
pub mod topology;

pub use batch::{BatchError, BatchWriter, Claim};
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use consumer::{
    ConsumerLoop, Delivery, EventSet, Freshness, Handled, Handler, HandlerError, LoopConfig, Retryable,
};
pub use lease::{Acquire, Lease, LeaseError, Leases};
pub use outbox::{OutboxRelay, OutboxSignal, RelayConfig};
pub use provision::{ProvisionError, provision};
pub use publisher::{OutgoingEvent, Publisher};
pub use rpc::{CallError, Caller, Routes, ServeConfig};
pub use runtime::{ServiceError, ServiceRuntime};
pub use topology::{Bucket, Subscription, Topology};
