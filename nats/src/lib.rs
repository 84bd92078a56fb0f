//! Emporium's JetStream plumbing.
//!
//! # Layout
//! - [`topology`]: streams, the DLQ, KV buckets and durable consumers, as code,
//!   with their retention limits.
//! - [`provision`]: creates or updates all of it, idempotently (`emporium provision`).
//! - [`buckets`]: KV buckets on nats-server 2.9 (created as their backing stream).

pub mod buckets;
pub mod provision;
pub mod topology;

pub use provision::{ProvisionError, provision};
pub use topology::{Bucket, Subscription, Topology};
