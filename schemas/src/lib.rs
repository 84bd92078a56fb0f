//! Emporium's message contracts: the event and command envelopes, every
//! payload as a Rust type, and the subject registry.
//!
//! # Layout
//! - `json/`: the hand-written JSON Schemas (draft 2020-12), one file per type
//!   and major version, with `DIGESTS` freezing every published file.
//! - `examples/<type>.v<N>/{valid,invalid}/`: payloads the tests hold the
//!   schemas and the types to.
//! - `asyncapi.json`: every channel with its schema, checked against [`registry`].
//! - [`values`]: validated newtypes (ids, money, quantity) shared by payloads.
//! - [`envelope`]: the envelopes, typed and raw.
//! - [`events`], [`commands`]: the payloads.

pub mod commands;
pub mod envelope;
pub mod events;
pub mod registry;
pub mod values;

pub use envelope::{
    Command, CommandEnvelope, DecodeError, EntityKey, Envelope, ErrorKind, Event, MAX_EVENT_BYTES, MessageId, Origin,
    Principal, RawEnvelope, Reply, ReplyError, Seq,
};
pub use registry::{Addressing, CommandType, EventSubject, EventType, Partition};
