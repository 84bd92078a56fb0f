//! The dead-letter queue: where the consumer loop puts a message it gives up
//! on, with why, after how many attempts, and where it came from; and the
//! operator's view of it (`emporium dlq list|replay`).
//!
//! A dead letter is the original payload on `dlq.<durable>` with the original
//! headers plus `Emporium-Dlq-*` headers. Replaying one republishes it to its
//! original subject (under a fresh `Nats-Msg-Id`, so the duplicate window does
//! not swallow it) and then deletes it from the DLQ.

use async_nats::HeaderMap;
use async_nats::header::HeaderName;
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::RawMessageErrorKind;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::topology::{DLQ_STREAM, DLQ_SUBJECT_PREFIX};

pub const REASON: &str = "Emporium-Dlq-Reason";
pub const ATTEMPTS: &str = "Emporium-Dlq-Attempts";
pub const SUBJECT: &str = "Emporium-Dlq-Subject";
pub const STREAM: &str = "Emporium-Dlq-Stream";
pub const STREAM_SEQUENCE: &str = "Emporium-Dlq-Stream-Seq";
pub const CONSUMER: &str = "Emporium-Dlq-Consumer";
pub const MESSAGE_ID: &str = "Emporium-Dlq-Msg-Id";

/// A DLQ operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("DLQ unavailable: {0}")]
    Unavailable(String),
    #[error("no dead letter at DLQ sequence {0}")]
    NotFound(u64),
    #[error("dead letter {0} lacks its original subject")]
    NoSubject(u64),
}

fn name_of(name: &HeaderName) -> &str {
    AsRef::<str>::as_ref(name)
}

fn is(name: &HeaderName, other: &str) -> bool {
    name_of(name).eq_ignore_ascii_case(other)
}

fn unavailable(error: impl std::fmt::Display) -> DlqError {
    DlqError::Unavailable(error.to_string())
}

/// Where a message came from and why it is given up on.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    pub consumer: &'a str,
    pub stream: &'a str,
    pub stream_sequence: u64,
    pub subject: &'a str,
    pub attempts: i64,
    pub reason: &'a str,
}

/// Publishes a dead letter and waits for JetStream to store it.
pub async fn dead_letter(
    jetstream: &jetstream::Context,
    origin: &Origin<'_>,
    headers: Option<&HeaderMap>,
    payload: Bytes,
) -> Result<(), DlqError> {
    let mut out = HeaderMap::new();
    for (name, values) in headers.into_iter().flat_map(HeaderMap::iter) {
        for value in values {
            if is(name, NATS_MESSAGE_ID.as_ref()) {
                out.insert(MESSAGE_ID, value.as_str());
            } else {
                out.append(name.clone(), value.clone());
            }
        }
    }
    // Headers are single-line: keep the reason on one line.
    out.insert(REASON, origin.reason.replace(['\r', '\n'], " ").as_str());
    out.insert(ATTEMPTS, origin.attempts.to_string().as_str());
    out.insert(SUBJECT, origin.subject);
    out.insert(STREAM, origin.stream);
    out.insert(STREAM_SEQUENCE, origin.stream_sequence.to_string().as_str());
    out.insert(CONSUMER, origin.consumer);
    // One dead letter per (consumer, message), even if this publish is retried.
    let id = format!("{}.{}.{}", origin.consumer, origin.stream, origin.stream_sequence);
    out.insert(NATS_MESSAGE_ID, id.as_str());
    let subject = format!("{DLQ_SUBJECT_PREFIX}.{}", origin.consumer);
    jetstream.publish_with_headers(subject, out, payload).await.map_err(unavailable)?.await.map_err(unavailable)?;
    Ok(())
}

/// A message in the DLQ.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its sequence in the DLQ stream: what `dlq replay` takes.
    pub sequence: u64,
    pub at: DateTime<Utc>,
    pub consumer: String,
    pub subject: String,
    pub reason: String,
    pub attempts: i64,
    pub headers: HeaderMap,
    pub payload: Bytes,
}

impl DeadLetter {
    fn from_stream(message: StreamMessage) -> Self {
        let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default();
        let at = DateTime::<Utc>::from_timestamp(message.time.unix_timestamp(), message.time.nanosecond())
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        Self {
            sequence: message.sequence,
            at,
            consumer: header(CONSUMER),
            subject: header(SUBJECT),
            reason: header(REASON),
            attempts: header(ATTEMPTS).parse().unwrap_or(0),
            headers: message.headers,
            payload: message.payload,
        }
    }
}

/// Every dead letter, oldest first, up to `limit`.
pub async fn list(jetstream: &jetstream::Context, limit: usize) -> Result<Vec<DeadLetter>, DlqError> {
    let stream = jetstream.get_stream_no_info(DLQ_STREAM).await.map_err(unavailable)?;
    let mut letters = Vec::new();
    let mut next = 1;
    while letters.len() < limit {
        match stream.get_first_raw_message_by_subject(format!("{DLQ_SUBJECT_PREFIX}.>"), next).await {
            Ok(message) => {
                next = message.sequence + 1;
                letters.push(DeadLetter::from_stream(message));
            }
            Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => break,
            Err(error) => return Err(unavailable(error)),
        }
    }
    Ok(letters)
}

/// Republishes dead letter `sequence` to its original subject, then removes it
/// from the DLQ. Consumers that already applied it treat it as a duplicate.
pub async fn replay(jetstream: &jetstream::Context, sequence: u64) -> Result<(), DlqError> {
    let stream = jetstream.get_stream_no_info(DLQ_STREAM).await.map_err(unavailable)?;
    let message = match stream.get_raw_message(sequence).await {
        Ok(message) => message,
        Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => return Err(DlqError::NotFound(sequence)),
        Err(error) => return Err(unavailable(error)),
    };
    let letter = DeadLetter::from_stream(message);
    if letter.subject.is_empty() {
        return Err(DlqError::NoSubject(sequence));
    }
    let mut headers = HeaderMap::new();
    for (name, values) in letter.headers.iter() {
        if name_of(name).starts_with("Emporium-Dlq-") || is(name, NATS_MESSAGE_ID.as_ref()) {
            continue;
        }
        for value in values {
            headers.append(name.clone(), value.clone());
        }
    }
    let original_id = letter.headers.get(MESSAGE_ID).map(|v| v.as_str().to_owned()).unwrap_or_default();
    headers.insert(NATS_MESSAGE_ID, format!("{original_id}.replay.{sequence}").as_str());
    jetstream
        .publish_with_headers(letter.subject.clone(), headers, letter.payload)
        .await
        .map_err(unavailable)?
        .await
        .map_err(unavailable)?;
    stream.delete_message(sequence).await.map_err(unavailable)?;
    tracing::info!(dlq.sequence = sequence, subject = %letter.subject, "dead letter replayed");
    Ok(())
}
