//! The order's part in the checkout saga: inventory, payment and shipping
//! events become facts for the order's actor, each with its source's `seq`
//! and the time the order learned it. The actor host commits each decision
//! with the event's inbox entry, so redeliveries and replays change nothing.

use emporium_actors::events::EventRoute;
use emporium_nats::{SharedClock, event_set};
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

/// The fact `event` reports for `order_id`, stamped with its seq and the time the order learns it.
fn fact_for<E>(
    clock: &SharedClock,
    event: &Envelope<E>,
    order_id: OrderId,
    fact: Fact,
) -> Option<(OrderId, OrderCommand)> {
    Some((order_id, OrderCommand::Saga { fact, seq: event.seq.get(), at: clock.now() }))
}

/// Inventory's events, routed to the orders they name.
#[derive(Debug, Clone)]
pub struct InventoryFacts(pub SharedClock);

impl EventRoute<Orders> for InventoryFacts {
    type Event = InventoryEvent;

    fn route(&self, event: &Envelope<InventoryEvent>) -> Option<(OrderId, OrderCommand)> {
        let (order_id, fact) = match &event.data {
            InventoryEvent::Reserved(e) => (e.order_id, Fact::StockReserved),
            InventoryEvent::Rejected(e) => (e.order_id, Fact::StockRejected),
            InventoryEvent::Released(e) => (e.order_id, Fact::StockReleased),
        };
        fact_for(&self.0, event, order_id, fact)
    }
}

/// Payment's events.
#[derive(Debug, Clone)]
pub struct PaymentFacts(pub SharedClock);

impl EventRoute<Orders> for PaymentFacts {
    type Event = PaymentEvent;

    fn route(&self, event: &Envelope<PaymentEvent>) -> Option<(OrderId, OrderCommand)> {
        let (order_id, fact) = match &event.data {
            PaymentEvent::Authorized(e) => (e.order_id, Fact::PaymentAuthorized),
            PaymentEvent::Failed(e) => (e.order_id, Fact::PaymentFailed),
            PaymentEvent::Captured(e) => (e.order_id, Fact::PaymentCaptured),
            PaymentEvent::CaptureFailed(e) => (e.order_id, Fact::PaymentCaptureFailed),
            PaymentEvent::Voided(e) => (e.order_id, Fact::PaymentVoided),
            PaymentEvent::Refunded(e) => (e.order_id, Fact::PaymentRefunded),
        };
        fact_for(&self.0, event, order_id, fact)
    }
}

/// Shipping's events.
#[derive(Debug, Clone)]
pub struct ShippingFacts(pub SharedClock);

impl EventRoute<Orders> for ShippingFacts {
    type Event = ShippingEvent;

    fn route(&self, event: &Envelope<ShippingEvent>) -> Option<(OrderId, OrderCommand)> {
        let (order_id, fact) = match &event.data {
            ShippingEvent::Created(e) => (e.order_id, Fact::ShipmentCreated(e.shipment_id)),
            ShippingEvent::Shipped(e) => (e.order_id, Fact::ShipmentShipped(e.shipment_id)),
            ShippingEvent::Delivered(e) => (e.order_id, Fact::ShipmentDelivered(e.shipment_id)),
            ShippingEvent::Cancelled(e) => (e.order_id, Fact::ShipmentCancelled(e.shipment_id)),
        };
        fact_for(&self.0, event, order_id, fact)
    }
}
