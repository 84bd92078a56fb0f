//! Publishing events to JetStream: the one place where an event's subject and
//! `Nats-Msg-Id` are built from its type, and where publishes are pipelined.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishError};
use bytes::Bytes;
use emporium_schemas::registry::{EventType, event_type};
use emporium_schemas::{EntityKey, Envelope, Event, MessageId, Origin, Partition, Seq};

/// The header carrying W3C trace context across a hop.
pub const TRACEPARENT: &str = "traceparent";

/// An event ready to publish: its registered type, its key and seq, and the
/// encoded envelope, exactly as it will go on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingEvent {
    pub id: MessageId,
    pub event_type: &'static EventType,
    pub key: EntityKey,
    pub seq: Seq,
    pub payload: Bytes,
    pub traceparent: Option<String>,
}

/// An outbox row names an event type this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type {type_name} v{schema}")]
pub struct UnknownEventType {
    pub type_name: String,
    pub schema: u32,
}

impl OutgoingEvent {
    /// Encodes `envelope` for publishing.
    pub fn encode<D: Event>(envelope: &Envelope<D>) -> Result<Self, serde_json::Error> {
        Ok(Self {
            id: envelope.id,
            event_type: &D::TYPE,
            key: envelope.key.clone(),
            seq: envelope.seq,
            payload: Bytes::from(envelope.to_json()?),
            traceparent: None,
        })
    }

    /// Event `data` of entity `key` at version `seq`, caused by `origin`, encoded for publishing.
    pub fn caused_by<D: Event>(key: EntityKey, seq: Seq, origin: Origin, data: D) -> Result<Self, serde_json::Error> {
        Self::encode(&Envelope::new(key, seq, origin.correlation_id, origin.causation_id, data))
    }

    /// Rebuilds an event read back from storage (the outbox).
    pub fn from_parts(
        id: MessageId,
        type_name: &str,
        schema: u32,
        key: EntityKey,
        seq: Seq,
        payload: Bytes,
    ) -> Result<Self, UnknownEventType> {
        let event_type = event_type(type_name, schema)
            .ok_or_else(|| UnknownEventType { type_name: type_name.to_owned(), schema })?;
        Ok(Self { id, event_type, key, seq, payload, traceparent: None })
    }

    /// `<id>.v<schema>`: JetStream drops a second publish of the same event
    /// within the duplicate window, while v1 and v2 of one event stay distinct.
    pub fn message_id(&self) -> String {
        message_id(self.id, self.event_type.version)
    }

    /// `evt.<context>.<event>.v<major>.<partition>.<key>`.
    pub fn subject(&self, partitions: u16) -> String {
        self.event_type.subject(Partition::of(&self.key, partitions), &self.key)
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, self.message_id().as_str());
        if let Some(traceparent) = &self.traceparent {
            headers.insert(TRACEPARENT, traceparent.as_str());
        }
        headers
    }
}

/// The `Nats-Msg-Id` of version `schema` of event `id`.
pub fn message_id(id: MessageId, schema: u32) -> String {
    format!("{id}.v{schema}")
}

/// What a run of publishes achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Events JetStream acknowledged, duplicates included.
    pub acked: usize,
    /// Of those, the ones JetStream had already stored (same `Nats-Msg-Id`).
    pub duplicates: usize,
}

/// A run of publishes that stopped part-way: the first `report.acked` events
/// are stored; the rest may or may not be and must be published again.
#[derive(Debug, thiserror::Error)]
#[error("published {} of {attempted} events: {source}", report.acked)]
pub struct PartialPublish {
    pub report: PublishReport,
    pub attempted: usize,
    #[source]
    pub source: PublishError,
}

/// Publishes events with their subjects and ids built from their types.
#[derive(Debug, Clone)]
pub struct Publisher {
    jetstream: jetstream::Context,
    partitions: u16,
}

impl Publisher {
    pub fn new(jetstream: jetstream::Context, partitions: u16) -> Self {
        Self { jetstream, partitions }
    }

    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    /// Publishes `events` in order, pipelined: every publish is sent before
    /// the first acknowledgement is awaited. Returns once every ack is in, or
    /// at the first failure with the length of the acknowledged prefix, so a
    /// caller that retries from there keeps each key's order.
    pub async fn publish_all(&self, events: &[OutgoingEvent]) -> Result<PublishReport, PartialPublish> {
        let mut pending = Vec::with_capacity(events.len());
        let mut send_error = None;
        for event in events {
            let message =
                jetstream::message::PublishMessage::build().payload(event.payload.clone()).headers(event.headers());
            match self.jetstream.send_publish(event.subject(self.partitions), message).await {
                Ok(ack) => pending.push(ack),
                Err(error) => {
                    send_error = Some(error);
                    break;
                }
            }
        }

        let mut report = PublishReport::default();
        for ack in pending {
            match ack.await {
                Ok(ack) => {
                    report.acked += 1;
                    if ack.duplicate {
                        report.duplicates += 1;
                    }
                }
                Err(source) => return Err(PartialPublish { report, attempted: events.len(), source }),
            }
        }
        if report.duplicates > 0 {
            tracing::debug!(duplicates = report.duplicates, "JetStream already held some events");
        }
        match send_error {
            Some(source) => Err(PartialPublish { report, attempted: events.len(), source }),
            None => Ok(report),
        }
    }

    /// Publishes one event and awaits its ack.
    pub async fn publish(&self, event: &OutgoingEvent) -> Result<PublishReport, PartialPublish> {
        self.publish_all(std::slice::from_ref(event)).await
    }
}

#[cfg(test)]
mod tests {
    use emporium_test_harness::events::order_shipped;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn an_event_is_published_under_its_type_partition_and_key_with_a_versioned_message_id() {
        let key = EntityKey::from(Uuid::now_v7());
        let envelope = order_shipped(&key, 1);
        let event = OutgoingEvent::encode(&envelope).unwrap();
        assert_eq!(event.message_id(), format!("{}.v1", envelope.id));
        assert_eq!(event.subject(4), format!("evt.order.shipped.v1.{}.{key}", Partition::of(&key, 4)));
        let read_back = OutgoingEvent::from_parts(event.id, "order.shipped", 1, key, Seq::FIRST, event.payload.clone());
        assert_eq!(read_back.unwrap(), event);
        assert!(
            OutgoingEvent::from_parts(event.id, "order.shipped", 9, envelope.key, Seq::FIRST, Bytes::new()).is_err()
        );
    }
}
