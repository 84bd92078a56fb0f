//! The entity-actor runtime: one supervised `ractor` actor per entity (one per
//! order, one per cart), spawned on its first message, passivated when idle.
//!
//! # Layout
//! - [`entity`]: what an entity is: pure `decide` and `apply`, and how its
//!   state is loaded and its decisions committed ([`EntityStore`]).
//! - [`host`]: [`EntityHost`], which spawns, routes to, passivates and
//!   supervises the actors, and bounds the work in flight.
//! - [`memory`]: an in-memory store, to measure the host alone.
//! - [`writer`]: group commit: many decisions (state, outbox and inbox rows)
//!   in one Postgres transaction.
//! - [`postgres`]: entities stored in Postgres ([`PgStore`]) through the writer.
//! - [`deadlines`]: durable deadlines, fired by a sweeper under a lease.
//! - [`events`]: consumer-loop handlers that route events to the same actors.
//!
//! One message at a time per entity is ractor's guarantee for one actor; the
//! host makes sure there is only one actor per entity id.

pub mod deadlines;
pub mod entity;
pub mod events;
pub mod host;
pub mod memory;
pub mod postgres;
pub mod writer;

pub use entity::{CommitMeta, Entity, EntityStore, StoreError, Versioned};
pub use host::{EntityHost, HostConfig, HostError, Outcome};
pub use memory::MemoryStore;
pub use postgres::{Persistent, PgStore};
pub use writer::{Commit, CommitError, GroupCommit, InboxEntry, StateChange, WriterConfig};
