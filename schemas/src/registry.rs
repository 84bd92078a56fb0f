//! The subject registry: every event and command type, its subject and its schema file.
//!
//! Subjects are built here and nowhere else. Events travel on
//! `evt.<context>.<event>.v<major>.<partition>.<key>`; entity commands on
//! `cmd.<context>.<op>.<partition>`, other commands on `cmd.<context>.<op>`.
//! `asyncapi.json` lists the same channels and a test holds the two together.

use std::fmt;

use crate::envelope::EntityKey;

/// One event type at one major version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventType {
    /// The owning bounded context, which is also its stream: `order` → `EVT_ORDER`.
    pub context: &'static str,
    /// Past tense, snake case: `placed`, `capture_failed`.
    pub name: &'static str,
    /// The schema's major version.
    pub version: u32,
    /// `<context>.<name>`, the envelope's `type`.
    pub type_name: &'static str,
    /// Path of the JSON Schema below `schemas/json/`.
    pub schema_file: &'static str,
}

/// Builds an [`EventType`] constant with its derived names spelled out at compile time.
#[macro_export]
macro_rules! event_type {
    ($context:literal, $name:literal, $version:literal) => {
        $crate::registry::EventType {
            context: $context,
            name: $name,
            version: $version,
            type_name: concat!($context, ".", $name),
            schema_file: concat!("events/", $context, ".", $name, ".v", $version, ".json"),
        }
    };
}

impl EventType {
    /// The subject one event of this type is published on.
    pub fn subject(&self, partition: Partition, key: &EntityKey) -> String {
        format!("evt.{}.{}.v{}.{partition}.{key}", self.context, self.name, self.version)
    }

    /// The subject as an AsyncAPI channel address, with its two parameters.
    pub fn channel(&self) -> String {
        format!("evt.{}.{}.v{}.{{partition}}.{{key}}", self.context, self.name, self.version)
    }
}

/// An event subject read back into its tokens:
/// `evt.<context>.<event>.v<major>.<partition>.<key>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSubject<'a> {
    pub context: &'a str,
    pub name: &'a str,
    pub version: u32,
    /// As written: `p03`.
    pub partition: &'a str,
    pub key: &'a str,
}

impl<'a> EventSubject<'a> {
    /// `None` unless `subject` has the shape of an event subject.
    pub fn parse(subject: &'a str) -> Option<Self> {
        let mut tokens = subject.split('.');
        let mut next = || tokens.next().filter(|token| !token.is_empty());
        let (Some("evt"), Some(context), Some(name), Some(version), Some(partition), Some(key), None) =
            (next(), next(), next(), next(), next(), next(), next())
        else {
            return None;
        };
        let version = version.strip_prefix('v')?.parse().ok()?;
        Some(Self { context, name, version, partition, key })
    }
}

/// How a command finds the one service instance that handles it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Addressing {
    /// Served only by the owner of the entity's partition, so one entity has one actor.
    Partitioned,
    /// Any instance in the service's queue group may answer.
    QueueGroup,
}

/// One command (NATS request/reply) at one major version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommandType {
    pub context: &'static str,
    /// Imperative, snake case: `place`, `add_item`.
    pub op: &'static str,
    pub version: u32,
    pub addressing: Addressing,
    /// `<context>.<op>`, the command envelope's `type`.
    pub type_name: &'static str,
    /// Path of the JSON Schema below `schemas/json/`.
    pub schema_file: &'static str,
}

/// Builds a [`CommandType`] constant.
#[macro_export]
macro_rules! command_type {
    ($context:literal, $op:literal, $version:literal, $addressing:ident) => {
        $crate::registry::CommandType {
            context: $context,
            op: $op,
            version: $version,
            addressing: $crate::registry::Addressing::$addressing,
            type_name: concat!($context, ".", $op),
            schema_file: concat!("commands/", $context, ".", $op, ".v", $version, ".json"),
        }
    };
}

impl CommandType {
    /// The subject to send this command on; `partition` is required for
    /// partition-addressed commands and ignored otherwise.
    pub fn subject(&self, partition: Option<Partition>) -> String {
        match (self.addressing, partition) {
            (Addressing::Partitioned, Some(partition)) => {
                format!("cmd.{}.{}.{partition}", self.context, self.op)
            }
            _ => format!("cmd.{}.{}", self.context, self.op),
        }
    }

    /// The subject as an AsyncAPI channel address.
    pub fn channel(&self) -> String {
        match self.addressing {
            Addressing::Partitioned => format!("cmd.{}.{}.{{partition}}", self.context, self.op),
            Addressing::QueueGroup => format!("cmd.{}.{}", self.context, self.op),
        }
    }
}

/// A shard of the key space: `stable_hash(key) % partitions`, shown as `p03`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition(u16);

impl Partition {
    /// Most partitions a deployment may have; two digits in the subject token.
    pub const MAX_COUNT: u16 = 100;

    /// The partition of `key` among `count` partitions (`count` is clamped to 1..=100).
    pub fn of(key: &EntityKey, count: u16) -> Self {
        let count = u64::from(count.clamp(1, Self::MAX_COUNT));
        // The remainder is below 100, so the narrowing cannot truncate.
        Self((fnv1a_64(key.as_str().as_bytes()) % count) as u16)
    }

    pub const fn index(self) -> u16 {
        self.0
    }

    /// All partitions of a deployment with `count` partitions.
    pub fn all(count: u16) -> impl Iterator<Item = Partition> {
        (0..count.clamp(1, Self::MAX_COUNT)).map(Partition)
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{:02}", self.0)
    }
}

/// FNV-1a: tiny, and stable across Rust versions and platforms, unlike std's hasher,
/// so every process (and every language) agrees on a key's partition forever.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(PRIME))
}

/// Every event type this code base knows, at every published major version.
pub fn events() -> &'static [EventType] {
    crate::events::ALL
}

/// Every command type this code base knows.
pub fn commands() -> &'static [CommandType] {
    crate::commands::ALL
}

/// Looks up an event type by the envelope's `type` and `schema`.
pub fn event_type(type_name: &str, version: u32) -> Option<&'static EventType> {
    events().iter().find(|event| event.type_name == type_name && event.version == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> EntityKey {
        EntityKey::try_from(text.to_owned()).unwrap()
    }

    #[test]
    fn the_partition_of_a_key_never_changes() {
        // Pinned values: changing the hash would move every entity to another partition.
        let order = key("0193a5c2-7d4e-7c1a-9f00-0123456789ab");
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(Partition::of(&order, 4), Partition::of(&order, 4));
        assert_eq!(Partition::of(&order, 1).to_string(), "p00");
    }

    #[test]
    fn keys_spread_over_all_partitions() {
        let mut seen = [0u32; 4];
        for i in 0..4_000 {
            seen[usize::from(Partition::of(&key(&format!("k{i}")), 4).index())] += 1;
        }
        assert!(seen.iter().all(|n| (800..1200).contains(n)), "uneven spread {seen:?}");
    }

    #[test]
    fn an_event_subject_names_context_event_version_partition_and_key() {
        let placed = event_type!("order", "placed", 1);
        let order = key("0193a5c2-7d4e-7c1a-9f00-0123456789ab");
        let partition = Partition::of(&order, 4);
        assert_eq!(
            placed.subject(partition, &order),
            format!("evt.order.placed.v1.{partition}.0193a5c2-7d4e-7c1a-9f00-0123456789ab")
        );
        assert_eq!(placed.schema_file, "events/order.placed.v1.json");
    }

    #[test]
    fn an_event_subject_reads_back_into_the_tokens_it_was_built_from() {
        let placed = event_type!("order", "placed", 1);
        let order = key("0193a5c2-7d4e-7c1a-9f00-0123456789ab");
        let subject = placed.subject(Partition::of(&order, 4), &order);
        let read = EventSubject::parse(&subject).unwrap();
        assert_eq!((read.context, read.name, read.version, read.key), ("order", "placed", 1, order.as_str()));
        assert_eq!(read.partition, Partition::of(&order, 4).to_string());
        for other in
            ["cmd.order.place.p01", "evt.order.placed.v1.p01", "evt.order.placed.1.p01.k", "evt.order..v1.p01.k"]
        {
            assert_eq!(EventSubject::parse(other), None, "{other}");
        }
        assert_eq!(EventSubject::parse("evt.order.placed.v1.p01.k.extra"), None);
    }

    #[test]
    fn event_types_are_unique_and_found_by_name_and_version() {
        let mut seen = std::collections::HashSet::new();
        for event in events() {
            assert!(seen.insert((event.type_name, event.version)), "{} twice", event.type_name);
            assert_eq!(event_type(event.type_name, event.version), Some(event));
        }
        assert_eq!(event_type("order.placed", 99), None);
    }
}
