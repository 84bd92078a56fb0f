//! The envelopes every message travels in.
//!
//! An event is `{id, type, schema, key, seq, occurred_at, correlation_id,
//! causation_id, data}` (`json/envelope.v1.json`); a command is
//! `{id, type, schema, key?, correlation_id, sent_at, principal?, data}`
//! (`json/command-envelope.v1.json`). Typed envelopes write `type` and
//! `schema` from the payload's type and refuse a message whose `type` or
//! `schema` is not theirs.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::registry::{CommandType, EventSubject, EventType};
pub use crate::values::MessageId;
use crate::values::{Role, UserId};

/// An event's payload type, bound to its registered type and version.
pub trait Event: Serialize + DeserializeOwned {
    const TYPE: EventType;
}

/// A command's payload type, bound to its registered type and version.
pub trait Command: Serialize + DeserializeOwned {
    const TYPE: CommandType;
}

/// Why a message could not be decoded. Such a message is malformed: it goes to the DLQ.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the payload (`data`) must be a JSON object")]
    DataNotAnObject,
    #[error("expected a {expected} v{expected_version} message, got {got} v{got_version}")]
    WrongType { expected: &'static str, expected_version: u32, got: String, got_version: u32 },
    #[error("a {type_name} v{version} event of key {key} cannot travel on {subject}")]
    WrongSubject { subject: String, type_name: String, version: u32, key: String },
}

/// The largest encoded event a consumer takes; a larger one is dead-lettered
/// unread. The largest event the domain rules allow, an `order.placed` of a
/// full cart (50 lines) with every address field at its longest, encodes to
/// under 16 KiB (a test holds it to that), so this leaves room for additive
/// fields while no producer can make every consumer parse megabytes.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// The saga or entity key an event belongs to; the last token of its subject,
/// so it may hold only letters, digits, `-` and `_` (no `.`, `*`, `>` or spaces).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EntityKey(String);

/// Why a string is not a valid [`EntityKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an entity key is 1 to 64 letters, digits, '-' or '_', got {0:?}")]
pub struct InvalidKey(String);

impl EntityKey {
    pub const MAX_LEN: usize = 64;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EntityKey {
    type Error = InvalidKey;
    fn try_from(key: String) -> Result<Self, InvalidKey> {
        let valid = (1..=Self::MAX_LEN).contains(&key.len())
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid { Ok(Self(key)) } else { Err(InvalidKey(key)) }
    }
}

impl From<EntityKey> for String {
    fn from(key: EntityKey) -> String {
        key.0
    }
}

impl From<Uuid> for EntityKey {
    fn from(uuid: Uuid) -> Self {
        Self(uuid.to_string())
    }
}

impl fmt::Display for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The emitting entity's version after the change: 1 for its first event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Seq(u64);

/// A sequence number must be at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("seq starts at 1")]
pub struct InvalidSeq;

impl Seq {
    pub const FIRST: Seq = Seq(1);

    pub const fn get(self) -> u64 {
        self.0
    }

    pub const fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl TryFrom<u64> for Seq {
    type Error = InvalidSeq;
    fn try_from(seq: u64) -> Result<Self, InvalidSeq> {
        if seq >= 1 { Ok(Self(seq)) } else { Err(InvalidSeq) }
    }
}

/// Versions are stored as Postgres `bigint`.
impl TryFrom<i64> for Seq {
    type Error = InvalidSeq;
    fn try_from(seq: i64) -> Result<Self, InvalidSeq> {
        u64::try_from(seq).map_err(|_| InvalidSeq).and_then(Seq::try_from)
    }
}

impl From<Seq> for u64 {
    fn from(seq: Seq) -> u64 {
        seq.0
    }
}

/// An event: a fact, past tense, with its place in its entity's history.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<D> {
    pub id: MessageId,
    pub key: EntityKey,
    pub seq: Seq,
    pub occurred_at: DateTime<Utc>,
    /// The id shared by every message of one business flow (one checkout).
    pub correlation_id: Uuid,
    /// The id of the command or event that caused this one.
    pub causation_id: Uuid,
    pub data: D,
}

impl<D> Envelope<D> {
    /// A new event of `key`'s entity at `seq`, with a fresh id and the current time.
    pub fn new(key: EntityKey, seq: Seq, correlation_id: Uuid, causation_id: Uuid, data: D) -> Self {
        Self { id: MessageId::new_v7(), key, seq, occurred_at: Utc::now(), correlation_id, causation_id, data }
    }

    /// The same event with its payload wrapped, e.g. into an enum of the
    /// events a consumer handles.
    pub fn map<E>(self, wrap: impl FnOnce(D) -> E) -> Envelope<E> {
        let Envelope { id, key, seq, occurred_at, correlation_id, causation_id, data } = self;
        Envelope { id, key, seq, occurred_at, correlation_id, causation_id, data: wrap(data) }
    }
}

/// Where new messages come from: the flow they belong to (`correlation_id`)
/// and the message that caused them (`causation_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
}

impl<D> From<&Envelope<D>> for Origin {
    fn from(event: &Envelope<D>) -> Self {
        Self { correlation_id: event.correlation_id, causation_id: *event.id.as_uuid() }
    }
}

impl<C> From<&CommandEnvelope<C>> for Origin {
    fn from(command: &CommandEnvelope<C>) -> Self {
        Self { correlation_id: command.correlation_id, causation_id: *command.id.as_uuid() }
    }
}

/// The envelope as it is on the wire; `T` is the payload, typed or raw.
#[derive(Debug, Serialize, Deserialize)]
struct EventWire<T> {
    id: MessageId,
    #[serde(rename = "type")]
    type_name: String,
    schema: u32,
    key: EntityKey,
    seq: Seq,
    occurred_at: DateTime<Utc>,
    correlation_id: Uuid,
    causation_id: Uuid,
    data: T,
}

impl<D: Event> Envelope<D> {
    /// Decodes an event of type `D`, refusing any other type or version.
    pub fn from_json(bytes: &[u8]) -> Result<Self, DecodeError> {
        RawEnvelope::from_json(bytes)?.decode()
    }

    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&EventWire {
            id: self.id,
            type_name: D::TYPE.type_name.to_owned(),
            schema: D::TYPE.version,
            key: self.key.clone(),
            seq: self.seq,
            occurred_at: self.occurred_at,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            data: &self.data,
        })
    }
}

/// An event whose payload is not decoded yet: consumers read the header
/// (`type`, `schema`, `key`, `seq`) to dispatch, then decode the payload once.
#[derive(Debug)]
pub struct RawEnvelope {
    wire: EventWire<Box<RawValue>>,
}

impl RawEnvelope {
    /// Reads the envelope; its payload must be a JSON object, whoever takes it.
    pub fn from_json(bytes: &[u8]) -> Result<Self, DecodeError> {
        let wire: EventWire<Box<RawValue>> = serde_json::from_slice(bytes)?;
        if !wire.data.get().starts_with('{') {
            return Err(DecodeError::DataNotAnObject);
        }
        Ok(Self { wire })
    }

    /// Refuses an envelope that contradicts the subject it travelled on: its
    /// `type`, `schema` and `key` are the subject's. Our producers build both
    /// from one event; a message whose two disagree was made by something
    /// else, and a consumer would only be guessing which one to believe.
    pub fn check_subject(&self, subject: &str) -> Result<(), DecodeError> {
        let agrees = EventSubject::parse(subject).is_some_and(|tokens| {
            self.wire.type_name.split_once('.') == Some((tokens.context, tokens.name))
                && self.wire.schema == tokens.version
                && self.wire.key.as_str() == tokens.key
        });
        if agrees {
            Ok(())
        } else {
            Err(DecodeError::WrongSubject {
                subject: subject.to_owned(),
                type_name: self.wire.type_name.clone(),
                version: self.wire.schema,
                key: self.wire.key.to_string(),
            })
        }
    }

    pub fn id(&self) -> MessageId {
        self.wire.id
    }
    pub fn type_name(&self) -> &str {
        &self.wire.type_name
    }
    pub fn schema(&self) -> u32 {
        self.wire.schema
    }
    pub fn key(&self) -> &EntityKey {
        &self.wire.key
    }
    pub fn seq(&self) -> Seq {
        self.wire.seq
    }

    /// Whether this is an event of type `D` (its name and major version).
    pub fn is<D: Event>(&self) -> bool {
        self.wire.type_name == D::TYPE.type_name && self.wire.schema == D::TYPE.version
    }

    pub fn decode<D: Event>(self) -> Result<Envelope<D>, DecodeError> {
        expect_type(D::TYPE.type_name, D::TYPE.version, &self.wire.type_name, self.wire.schema)?;
        let EventWire { id, key, seq, occurred_at, correlation_id, causation_id, data, .. } = self.wire;
        Ok(Envelope { id, key, seq, occurred_at, correlation_id, causation_id, data: decode_data(&data)? })
    }
}

/// Refuses a message whose `type` or `schema` is not the expected one.
fn expect_type(expected: &'static str, expected_version: u32, got: &str, got_version: u32) -> Result<(), DecodeError> {
    if got == expected && got_version == expected_version {
        Ok(())
    } else {
        Err(DecodeError::WrongType { expected, expected_version, got: got.to_owned(), got_version })
    }
}

/// Decodes a payload, which must be a JSON object as the schemas say: serde
/// alone would also take a struct's fields as a positional array.
fn decode_data<T: DeserializeOwned>(data: &RawValue) -> Result<T, DecodeError> {
    if !data.get().starts_with('{') {
        return Err(DecodeError::DataNotAnObject);
    }
    Ok(serde_json::from_str(data.get())?)
}

/// Who sent a command, as the gateway authenticated them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub user_id: UserId,
    pub role: Role,
}

/// A command: a request to an entity or service, answered by a [`Reply`].
#[derive(Debug, Clone, PartialEq)]
pub struct CommandEnvelope<C> {
    pub id: MessageId,
    /// The entity the command is for; present exactly for partition-addressed commands.
    pub key: Option<EntityKey>,
    pub correlation_id: Uuid,
    pub sent_at: DateTime<Utc>,
    /// Absent for anonymous requests (register, login).
    pub principal: Option<Principal>,
    pub data: C,
}

#[derive(Debug, Serialize, Deserialize)]
struct CommandWire<T> {
    id: MessageId,
    #[serde(rename = "type")]
    type_name: String,
    schema: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<EntityKey>,
    correlation_id: Uuid,
    sent_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    principal: Option<Principal>,
    data: T,
}

impl<C> CommandEnvelope<C> {
    /// A new command with a fresh id and correlation id, sent now. `key` is
    /// the entity for partition-addressed commands; `principal` the caller,
    /// absent for anonymous requests.
    pub fn new(key: Option<EntityKey>, principal: Option<Principal>, data: C) -> Self {
        Self { id: MessageId::new_v7(), key, correlation_id: Uuid::now_v7(), sent_at: Utc::now(), principal, data }
    }

    /// The caller, or the `unauthenticated` refusal for an anonymous command.
    pub fn signed_in(&self) -> Result<Principal, ReplyError> {
        self.principal.ok_or_else(|| ReplyError::new(ErrorKind::Unauthenticated, "sign in first"))
    }
}

impl<C: Command> CommandEnvelope<C> {
    /// Decodes a command of type `C`, refusing any other type or version.
    pub fn from_json(bytes: &[u8]) -> Result<Self, DecodeError> {
        let wire: CommandWire<Box<RawValue>> = serde_json::from_slice(bytes)?;
        expect_type(C::TYPE.type_name, C::TYPE.version, &wire.type_name, wire.schema)?;
        let CommandWire { id, key, correlation_id, sent_at, principal, data, .. } = wire;
        Ok(Self { id, key, correlation_id, sent_at, principal, data: decode_data(&data)? })
    }

    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&CommandWire {
            id: self.id,
            type_name: C::TYPE.type_name.to_owned(),
            schema: C::TYPE.version,
            key: self.key.clone(),
            correlation_id: self.correlation_id,
            sent_at: self.sent_at,
            principal: self.principal,
            data: &self.data,
        })
    }
}

/// The answer to a command: its result, or a typed error the gateway maps to HTTP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply<T> {
    Ok(T),
    Error(ReplyError),
}

/// A command's refusal, stable enough for clients to act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ReplyError {
    pub kind: ErrorKind,
    pub message: String,
    /// The offending field, for `invalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// When the caller may try again, for `rate_limited` and `overloaded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
}

impl ReplyError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), field: None, retry_after_secs: None }
    }

    /// A value broke a rule: 422 naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: Some(field.into()), ..Self::new(ErrorKind::Invalid, message) }
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }
}

/// What went wrong, one variant per HTTP status the gateway maps it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// 422: a value broke a rule.
    Invalid,
    /// 401
    Unauthenticated,
    /// 403
    Forbidden,
    /// 404: absent, or not the caller's.
    NotFound,
    /// 409: the entity's state does not allow it.
    Conflict,
    /// 429
    RateLimited,
    /// 503: shed; try again later.
    Overloaded,
    /// 500: logged by the service, never detailed to the client.
    Internal,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;
    use crate::events::order::OrderPlaced;
    use crate::values::Text;

    fn order_placed(key: &str, data: &serde_json::Value) -> serde_json::Value {
        json!({
            "id": "0193a5c3-0000-7000-8000-000000000001", "type": "order.placed", "schema": 1, "key": key, "seq": 1,
            "occurred_at": "2026-11-21T09:15:00Z",
            "correlation_id": "0193a5c1-aaaa-7000-8000-000000000001",
            "causation_id": "0193a5c1-bbbb-7000-8000-000000000001",
            "data": data,
        })
    }

    /// An `order.placed` of a full cart (50 lines, the cart's limit) whose
    /// address fields are 200 characters that each encode to six bytes.
    fn largest_order_placed() -> Vec<u8> {
        let text = "\u{1}".repeat(Text::MAX_CHARS);
        let line = |i: usize| {
            json!({
                "product_id": format!("0193a5c2-3333-7c1a-9f00-{i:012}"),
                "seller_id": "0193a5c2-2222-7c1a-9f00-0123456789ab",
                "quantity": 999,
                "unit_price": { "amount": i64::MAX, "currency": "EUR" },
            })
        };
        let data = json!({
            "order_id": "0193a5c2-7d4e-7c1a-9f00-0123456789ab",
            "customer_id": "0193a5c2-1111-7c1a-9f00-0123456789ab",
            "lines": (0..50).map(line).collect::<Vec<_>>(),
            "total": { "amount": i64::MAX, "currency": "EUR" },
            "shipping_address": {
                "name": text, "line1": text, "line2": text, "city": text, "postal_code": text, "country": "GB",
            },
            "payment_method": format!("tok_{}", "x".repeat(60)),
            "deadline_at": "2026-11-21T09:15:30.123456789Z",
        });
        serde_json::to_vec(&order_placed("0193a5c2-7d4e-7c1a-9f00-0123456789ab", &data)).unwrap()
    }

    #[test]
    fn the_largest_event_the_rules_allow_is_well_under_the_size_limit() {
        let bytes = largest_order_placed();
        Envelope::<OrderPlaced>::from_json(&bytes).unwrap();
        assert!(bytes.len() < 16 * 1024, "{} bytes", bytes.len());
        assert!(bytes.len() * 4 <= MAX_EVENT_BYTES);
    }

    #[test]
    fn an_envelope_whose_payload_is_not_an_object_is_refused_unread() {
        for data in [json!([1, 2]), json!("text"), json!(null)] {
            let bytes = serde_json::to_vec(&order_placed("k1", &data)).unwrap();
            assert!(matches!(RawEnvelope::from_json(&bytes), Err(DecodeError::DataNotAnObject)));
        }
        let bytes = serde_json::to_vec(&order_placed("k1", &json!({}))).unwrap();
        assert!(RawEnvelope::from_json(&bytes).is_ok(), "an object is read; its fields are the taker's business");
    }

    #[test]
    fn an_envelope_agrees_with_its_own_subject_and_with_no_other() {
        let raw = RawEnvelope::from_json(&serde_json::to_vec(&order_placed("k1", &json!({}))).unwrap()).unwrap();
        assert!(raw.check_subject("evt.order.placed.v1.p00.k1").is_ok());
        for subject in [
            "evt.order.placed.v2.p00.k1",
            "evt.order.confirmed.v1.p00.k1",
            "evt.payment.placed.v1.p00.k1",
            "evt.order.placed.v1.p00.k2",
            "evt.order.placed.v1.p00",
            "order.placed",
        ] {
            assert!(
                matches!(raw.check_subject(subject), Err(DecodeError::WrongSubject { .. })),
                "{subject} must be refused"
            );
        }
    }
}
