//! Events for tests: any payload in an envelope of a key and seq; sample
//! events for tests and benchmarks that need some registered event and care
//! only about its envelope (key, seq, ids); and bad ones, for tests of what
//! consumers make of them.

use emporium_nats::OutgoingEvent;
use emporium_schemas::events::order::OrderShipped;
use emporium_schemas::values::{OrderId, ShipmentId, UserId};
use emporium_schemas::{EntityKey, Envelope, Event, EventType, MAX_EVENT_BYTES, Partition, Seq};
use serde_json::json;
use uuid::Uuid;

/// `data` as the event of `key`'s entity at `seq`, in a flow of its own.
///
/// # Panics
/// If `seq` is 0.
#[allow(clippy::expect_used)] // test support: a bad seq is the caller's bug
pub fn envelope<D>(key: impl Into<EntityKey>, seq: u64, data: D) -> Envelope<D> {
    let seq = Seq::try_from(seq).expect("seq starts at 1");
    Envelope::new(key.into(), seq, Uuid::now_v7(), Uuid::now_v7(), data)
}

/// [`envelope`], encoded for publishing (or an outbox).
///
/// # Panics
/// If `seq` is 0.
#[allow(clippy::expect_used)] // a registered event always encodes
pub fn event<D: Event>(key: impl Into<EntityKey>, seq: u64, data: D) -> OutgoingEvent {
    OutgoingEvent::encode(&envelope(key, seq, data)).expect("an event encodes")
}

/// An `order.shipped` payload with fresh ids.
pub fn shipped_payload() -> OrderShipped {
    OrderShipped { order_id: OrderId::new_v7(), customer_id: UserId::new_v7(), shipment_id: ShipmentId::new_v7() }
}

/// An `order.shipped` event of `key` at `seq`, in a flow of its own.
///
/// # Panics
/// If `seq` is 0.
pub fn order_shipped(key: &EntityKey, seq: u64) -> Envelope<OrderShipped> {
    envelope(key.clone(), seq, shipped_payload())
}

/// A message on an event subject that no consumer may take.
#[derive(Debug, Clone)]
pub struct BadEvent {
    /// What is wrong with it, for assertion messages.
    pub what: &'static str,
    pub subject: String,
    pub payload: Vec<u8>,
    /// How a consumer's dead letter of it gives the reason.
    pub reason: &'static str,
}

/// Messages on `event_type`'s subject that are bad in each way a consumer
/// must notice before it dispatches, each on a fresh key of its own: not
/// JSON, larger than an event may be, an envelope missing fields, with a
/// payload that is not an object, and envelopes that contradict their
/// subject's version, type or key.
pub fn bad_events(event_type: &EventType, partitions: u16) -> Vec<BadEvent> {
    let on_own_subject = |what, reason, payload: &dyn Fn(&EntityKey) -> serde_json::Value| {
        let key = EntityKey::from(Uuid::now_v7());
        let subject = event_type.subject(Partition::of(&key, partitions), &key);
        BadEvent { what, subject, payload: payload(&key).to_string().into_bytes(), reason }
    };
    let envelope = |key: &EntityKey, type_name: &str, schema: u32, data: serde_json::Value| {
        json!({
            "id": Uuid::now_v7(), "type": type_name, "schema": schema, "key": key, "seq": 1,
            "occurred_at": "2026-11-21T09:15:00Z", "correlation_id": Uuid::now_v7(), "causation_id": Uuid::now_v7(),
            "data": data,
        })
    };
    let (type_name, version) = (event_type.type_name, event_type.version);
    let mut bad = vec![
        on_own_subject("an envelope without key and seq", "undecodable", &|key| {
            let mut envelope = envelope(key, type_name, version, json!({}));
            if let Some(fields) = envelope.as_object_mut() {
                fields.remove("key");
                fields.remove("seq");
            }
            envelope
        }),
        on_own_subject("a payload that is not an object", "undecodable", &|key| {
            envelope(key, type_name, version, json!(["not", "an", "object"]))
        }),
        on_own_subject("another major version than its subject's", "undecodable", &|key| {
            envelope(key, type_name, version + 1, json!({}))
        }),
        on_own_subject("another type than its subject's", "undecodable", &|key| {
            envelope(key, &format!("{}.not_{}", event_type.context, event_type.name), version, json!({}))
        }),
        on_own_subject("another key than its subject's", "undecodable", &|_| {
            envelope(&EntityKey::from(Uuid::now_v7()), type_name, version, json!({}))
        }),
        on_own_subject("larger than an event may be", "too large", &|key| {
            envelope(key, type_name, version, json!({ "padding": "x".repeat(MAX_EVENT_BYTES) }))
        }),
    ];
    let key = EntityKey::from(Uuid::now_v7());
    bad.push(BadEvent {
        what: "not JSON",
        subject: event_type.subject(Partition::of(&key, partitions), &key),
        payload: b"{\"id\": \"0193a5c3-0000-7000-8000-0000000".to_vec(),
        reason: "undecodable",
    });
    bad
}
