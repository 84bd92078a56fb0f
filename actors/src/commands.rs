//! Partition-addressed commands: `cmd.<context>.<op>.<partition>`, request and
//! reply over NATS. Only the owner of a partition subscribes to it (one
//! instance owns them all until scale-out), so each entity has one actor in
//! the whole system; every request lands on that actor through the host.

use std::sync::Arc;

use emporium_nats::rpc::{Answer, ServeConfig, answer_requests, encode_reply};
use emporium_schemas::{Command, CommandEnvelope, ErrorKind, Partition, Reply, ReplyError};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::entity::{CommitMeta, Entity};
use crate::host::{EntityHost, HostError, Outcome};

/// Turns one command type into an entity's command, and its outcome into a reply.
pub trait CommandRoute<E: Entity>: Send + Sync + 'static {
    type Command: Command + Send;
    type Answer: Serialize + Send;

    /// The entity the command is for and what to tell it, or why it is refused.
    fn route(&self, command: CommandEnvelope<Self::Command>) -> Result<(E::Id, E::Command, CommitMeta), ReplyError>;

    /// What the caller is told once the entity has decided (or could not).
    fn answer(&self, outcome: Outcome<E>) -> Reply<Self::Answer>;
}

/// The reply for a host failure that is not the entity's own refusal.
pub fn host_error<R: std::fmt::Display>(error: &HostError<R>) -> ReplyError {
    let (kind, message) = match error {
        HostError::Rejected(rejection) => (ErrorKind::Conflict, rejection.to_string()),
        HostError::Overloaded => (ErrorKind::Overloaded, "too much work in flight; retry shortly".to_owned()),
        other => {
            tracing::error!(error = %other, "command failed");
            (ErrorKind::Internal, "the command could not be completed".to_owned())
        }
    };
    ReplyError::new(kind, message)
}

fn invalid(message: String) -> ReplyError {
    ReplyError::new(ErrorKind::Invalid, message)
}

/// Serves `R`'s command on the given partitions until `stop`, through the
/// one request-answering loop (`emporium_nats::rpc`): `config` bounds the
/// requests answered at once (set it to the host's in-flight bound; beyond
/// it requests are answered `overloaded` at once).
pub async fn serve<E: Entity, R: CommandRoute<E>>(
    client: async_nats::Client,
    host: EntityHost<E>,
    route: Arc<R>,
    partitions: Vec<Partition>,
    partition_count: u16,
    config: ServeConfig,
    stop: CancellationToken,
) -> Result<(), async_nats::SubscribeError> {
    let mut subscriptions = Vec::with_capacity(partitions.len());
    for partition in &partitions {
        subscriptions.push(client.subscribe(R::Command::TYPE.subject(Some(*partition))).await?);
    }
    let respond = move |subject: &str, payload: &[u8]| -> Option<Answer> {
        let (host, route, subject, payload) = (host.clone(), route.clone(), subject.to_owned(), payload.to_vec());
        Some(Box::pin(async move {
            encode_reply(&handle(&host, route.as_ref(), &subject, &payload, partition_count).await)
        }))
    };
    answer_requests(client, subscriptions, config, stop, respond).await;
    Ok(())
}

async fn handle<E: Entity, R: CommandRoute<E>>(
    host: &EntityHost<E>,
    route: &R,
    subject: &str,
    payload: &[u8],
    partition_count: u16,
) -> Reply<R::Answer> {
    let envelope = match CommandEnvelope::<R::Command>::from_json(payload) {
        Ok(envelope) => envelope,
        Err(error) => return Reply::Error(invalid(error.to_string())),
    };
    // A command on another partition's subject would reach the wrong owner.
    let Some(key) = &envelope.key else { return Reply::Error(invalid("a partitioned command needs a key".into())) };
    if R::Command::TYPE.subject(Some(Partition::of(key, partition_count))) != subject {
        return Reply::Error(invalid(format!("key {key} does not belong to {subject}")));
    }
    match route.route(envelope) {
        Ok((id, command, meta)) => route.answer(host.send_with(id, command, meta).await),
        Err(error) => Reply::Error(error),
    }
}
