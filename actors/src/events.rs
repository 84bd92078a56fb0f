//! Event handlers that route events to entity actors: the consumer loop hands
//! an event over, the route names the entity and its command, and the host
//! commits the decision with the event's inbox entry, so a redelivered or
//! replayed event changes nothing and the loop acks only after the commit.

use std::sync::Arc;

use emporium_nats::{Delivery, EventSet, Handled, Handler, HandlerError};
use emporium_schemas::{Envelope, Origin};

use crate::entity::{CommitMeta, Entity};
use crate::host::{EntityHost, HostError};
use crate::writer::InboxEntry;

/// Which entity an event concerns and what to tell it.
pub trait EventRoute<E: Entity>: Send + Sync + 'static {
    type Event: EventSet;

    /// `None`: the event concerns no entity of this kind (acked as handled).
    fn route(&self, event: &Envelope<Self::Event>) -> Option<(E::Id, E::Command)>;
}

/// A consumer-loop [`Handler`] that delivers routed events to an entity host.
pub struct ToEntities<E: Entity, R> {
    host: EntityHost<E>,
    route: R,
    /// The consumer's name in the inbox.
    consumer: Arc<str>,
}

impl<E: Entity, R> std::fmt::Debug for ToEntities<E, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToEntities").field("consumer", &self.consumer).finish_non_exhaustive()
    }
}

impl<E: Entity, R> ToEntities<E, R> {
    pub fn new(host: EntityHost<E>, route: R, consumer: impl Into<Arc<str>>) -> Self {
        Self { host, route, consumer: consumer.into() }
    }
}

impl<E: Entity, R: EventRoute<E>> Handler for ToEntities<E, R> {
    type Event = R::Event;

    async fn handle(&self, event: Envelope<R::Event>, _delivery: &Delivery) -> Result<Handled, HandlerError> {
        let Some((id, command)) = self.route.route(&event) else { return Ok(Handled::Skipped) };
        let meta = CommitMeta {
            inbox: Some(InboxEntry { consumer: self.consumer.clone(), event: event.id }),
            ..Origin::from(&event).into()
        };
        match self.host.send_with(id, command, meta).await {
            Ok(events) if events.is_empty() => Ok(Handled::Skipped),
            Ok(_) => Ok(Handled::Applied),
            // The entity's rules refuse what the event implies: an impossible event.
            Err(HostError::Rejected(rejection)) => Err(HandlerError::Reject(rejection.to_string())),
            // Overload, a failed actor, storage trouble: not acked, redelivered later.
            Err(error) => Err(HandlerError::Retry(error.to_string())),
        }
    }
}
