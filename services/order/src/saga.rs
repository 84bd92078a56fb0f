//! The order's part in the checkout saga: inventory, payment and shipping
//! events become facts for the order's actor, each with its source's `seq`
//! and the time the order learned it. The actor host commits each decision
//! with the event's inbox entry, so redeliveries and replays change nothing.

use emporium_actors::events::EventRoute;
use std::marker::PhantomData;

use emporium_nats::{EventSet, SharedClock, event_set};
use emporium_schemas::Envelope;
use emporium_schemas::events::inventory::{InventoryRejected, InventoryReleased, InventoryReserved};
use emporium_schemas::events::payment::{
    PaymentAuthorized, PaymentCaptureFailed, PaymentCaptured, PaymentFailed, PaymentRefunded, PaymentVoided,
};
use emporium_schemas::events::shipping::{ShippingCancelled, ShippingCreated, ShippingDelivered, ShippingShipped};
use emporium_schemas::values::OrderId;

use crate::domain::{Fact, OrderCommand};
use crate::entity::Orders;

event_set!(
    /// What inventory tells the order.
    #[derive(Debug)]
    pub enum InventoryEvent {
        Reserved(InventoryReserved),
        Rejected(InventoryRejected),
        Released(InventoryReleased),
    }
);

event_set!(
    /// What payment tells the order.
    #[derive(Debug)]
    pub enum PaymentEvent {
        Authorized(PaymentAuthorized),
        Failed(PaymentFailed),
        Captured(PaymentCaptured),
        CaptureFailed(PaymentCaptureFailed),
        Voided(PaymentVoided),
        Refunded(PaymentRefunded),
    }
);

event_set!(
    /// What shipping tells the order.
    #[derive(Debug)]
    pub enum ShippingEvent {
        Created(ShippingCreated),
        Shipped(ShippingShipped),
        Delivered(ShippingDelivered),
        Cancelled(ShippingCancelled),
    }
);

/// An event set whose every event names an order and reports a fact about it.
pub trait OrderFact {
    fn order_fact(&self) -> (OrderId, Fact);
}

impl OrderFact for InventoryEvent {
    fn order_fact(&self) -> (OrderId, Fact) {
        match self {
            InventoryEvent::Reserved(e) => (e.order_id, Fact::StockReserved),
            InventoryEvent::Rejected(e) => (e.order_id, Fact::StockRejected),
            InventoryEvent::Released(e) => (e.order_id, Fact::StockReleased),
        }
    }
}

impl OrderFact for PaymentEvent {
    fn order_fact(&self) -> (OrderId, Fact) {
        match self {
            PaymentEvent::Authorized(e) => (e.order_id, Fact::PaymentAuthorized),
            PaymentEvent::Failed(e) => (e.order_id, Fact::PaymentFailed),
            PaymentEvent::Captured(e) => (e.order_id, Fact::PaymentCaptured),
            PaymentEvent::CaptureFailed(e) => (e.order_id, Fact::PaymentCaptureFailed),
            PaymentEvent::Voided(e) => (e.order_id, Fact::PaymentVoided),
            PaymentEvent::Refunded(e) => (e.order_id, Fact::PaymentRefunded),
        }
    }
}

impl OrderFact for ShippingEvent {
    fn order_fact(&self) -> (OrderId, Fact) {
        match self {
            ShippingEvent::Created(e) => (e.order_id, Fact::ShipmentCreated(e.shipment_id)),
            ShippingEvent::Shipped(e) => (e.order_id, Fact::ShipmentShipped(e.shipment_id)),
            ShippingEvent::Delivered(e) => (e.order_id, Fact::ShipmentDelivered(e.shipment_id)),
            ShippingEvent::Cancelled(e) => (e.order_id, Fact::ShipmentCancelled(e.shipment_id)),
        }
    }
}

/// Routes one source's events (`E`) to the orders they name, each fact
/// stamped with its seq and the time the order learns it.
pub struct Facts<E> {
    clock: SharedClock,
    events: PhantomData<fn() -> E>,
}

impl<E> Facts<E> {
    pub fn new(clock: SharedClock) -> Self {
        Self { clock, events: PhantomData }
    }
}

impl<E> std::fmt::Debug for Facts<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Facts").finish_non_exhaustive()
    }
}

impl<E: EventSet + OrderFact + 'static> EventRoute<Orders> for Facts<E> {
    type Event = E;

    fn route(&self, event: &Envelope<E>) -> Option<(OrderId, OrderCommand)> {
        let (order_id, fact) = event.data.order_fact();
        Some((order_id, OrderCommand::Saga { fact, seq: event.seq.get(), at: self.clock.now() }))
    }
}
