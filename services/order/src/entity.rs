//! The order as an entity of the actor runtime: one actor per order, its
//! state a row of `entity_state`, its public events written to the outbox in
//! the same (group) commit, its checkout deadline durable.

use chrono::{DateTime, Utc};
use emporium_actors::{CommitMeta, Entity, Persistent};
use emporium_nats::OutgoingEvent;
use emporium_schemas::values::OrderId;
use emporium_schemas::{EntityKey, Event, Seq};
use uuid::Uuid;

use crate::domain::{self, OrderCommand, OrderEvent, OrderState, Rejection};

/// The order entity kind.
#[derive(Debug)]
pub struct Orders;

impl Entity for Orders {
    type Id = OrderId;
    type State = OrderState;
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Rejection = Rejection;

    fn decide(state: &OrderState, command: &OrderCommand) -> Result<Vec<OrderEvent>, Rejection> {
        domain::decide(state, command)
    }

    fn apply(state: &mut OrderState, event: &OrderEvent) {
        domain::apply(state, event);
    }
}

fn encode<D: Event>(key: &EntityKey, seq: Seq, meta: &CommitMeta, data: D) -> Result<OutgoingEvent, serde_json::Error> {
    OutgoingEvent::caused_by(key.clone(), seq, meta.origin(), data)
}

impl Persistent for Orders {
    const KIND: &'static str = "order";

    fn key(id: &OrderId) -> EntityKey {
        EntityKey::from(*id.as_uuid())
    }

    fn id(key: &EntityKey) -> Option<OrderId> {
        key.as_str().parse::<Uuid>().ok().map(OrderId::from_uuid)
    }

    fn outgoing(
        key: &EntityKey,
        seq: Seq,
        event: &OrderEvent,
        meta: &CommitMeta,
    ) -> Result<Option<OutgoingEvent>, serde_json::Error> {
        Ok(Some(match event {
            OrderEvent::Placed(order) => encode(key, seq, meta, order.placed_event())?,
            OrderEvent::Confirmed { public, .. } => encode(key, seq, meta, public.as_ref().clone())?,
            OrderEvent::Cancelled { public, .. } => encode(key, seq, meta, public.clone())?,
            OrderEvent::Shipped { public, .. } => encode(key, seq, meta, public.clone())?,
            OrderEvent::Delivered { public, .. } => encode(key, seq, meta, public.as_ref().clone())?,
            // The order's own bookkeeping: payment and shipping already announced these.
            OrderEvent::Reserved { .. }
            | OrderEvent::PaymentChanged(_)
            | OrderEvent::ShipmentChanged(_)
            | OrderEvent::Noted { .. } => return Ok(None),
        }))
    }

    fn deadline(state: &OrderState) -> Option<DateTime<Utc>> {
        state.0.as_ref().filter(|order| order.awaits_confirmation()).map(|order| order.deadline_at)
    }

    fn deadline_reached(now: DateTime<Utc>) -> OrderCommand {
        OrderCommand::DeadlineReached { at: now }
    }
}
