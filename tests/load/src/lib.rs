//! Emporium under load and faults, as operators and customers meet it.
//!
//! - [`stack`]: the `emporium` binary as real processes on private Postgres,
//!   NATS and Redis servers; a process can be killed and restarted.
//! - [`shop`]: a seller's products and customers checking out over the HTTP
//!   API, and the order events on NATS that tell how each checkout ended.
//! - [`measure`]: CPU per process, Postgres commits, queued work, and the raw
//!   Postgres limit.
//! - [`steady`]: a steady load of checkouts that rides out outages.
//! - [`chaos`]: a chaos scenario's run under that load, and its final check
//!   by the whole-system invariants.
//!
//! The `loadgen` binary (`just bench`) puts these together; so do the chaos
//! scenarios in `tests/chaos.rs` (`just chaos`).

pub mod chaos;
pub mod measure;
pub mod shop;
pub mod stack;
pub mod steady;
