//! Shipping's part in the checkout saga: `order.confirmed` creates the
//! order's shipment, `order.cancelled` cancels it (or, seen first, keeps the
//! confirmation from creating one).
//!
//! Each event is applied once through the batch writer
//! ([`BatchWriter::apply_once`]): its inbox row, its changes and the events
//! it causes commit together, so a redelivered event changes nothing; the
//! shipment id is derived from the order id, so even a replay under a new
//! event id ([`domain::on_order`] decides it is `Nothing`) cannot create a
//! second one.

use std::sync::Arc;

use emporium_nats::{
    BatchWriter, Claim, Delivery, Handled, Handler, HandlerError, OutboxSignal, OutgoingEvent, Retryable, SharedClock,
    event_set,
};
use emporium_schemas::commands::order::ShipmentStatus;
use emporium_schemas::commands::shipping::ShipmentDetails;
use emporium_schemas::events::order::{OrderCancelled, OrderConfirmed};
use emporium_schemas::events::shipping::{ShippingCancelled, ShippingCreated};
use emporium_schemas::values::{OrderId, Text};
use emporium_schemas::{EntityKey, Envelope, Event, MessageId, Origin};
use sqlx::{PgConnection, PgPool};

use crate::domain::{self, OrderAction, OrderStep};
use crate::store::{self, StoreError};

/// What the event handlers and the command handlers share.
#[derive(Debug)]
pub struct Shipping {
    pub pool: PgPool,
    pub outbox: OutboxSignal,
    pub clock: SharedClock,
    /// The carrier named on every new shipment.
    pub carrier: Text,
    /// Commits the event handlers' transactions in batches.
    writer: BatchWriter,
}

/// Why applying an event or a move failed: storage (retry) or an event we
/// cannot encode (reject).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("encoding an event: {0}")]
    Encode(#[from] serde_json::Error),
}

impl From<sqlx::Error> for ApplyError {
    fn from(error: sqlx::Error) -> Self {
        ApplyError::Store(StoreError::Database(error))
    }
}

impl Retryable for ApplyError {
    fn is_retryable(&self) -> bool {
        matches!(self, ApplyError::Store(_))
    }
}

/// A `shipping.*` event announcing `shipment` in its status: keyed by the
/// order (the saga's key), its `seq` the shipment's version.
pub(crate) fn announce<D: Event>(
    shipment: &ShipmentDetails,
    origin: Origin,
    data: D,
) -> Result<OutgoingEvent, serde_json::Error> {
    let key = EntityKey::from(*shipment.order_id.as_uuid());
    OutgoingEvent::caused_by(key, domain::version(shipment.status), origin, data)
}

impl Shipping {
    pub fn new(pool: PgPool, outbox: OutboxSignal, clock: SharedClock, carrier: Text) -> Self {
        Self { writer: BatchWriter::start(pool.clone(), outbox.clone()), pool, outbox, clock, carrier }
    }

    /// Applies `step` to `order` in `tx`; returns the events to commit with it.
    async fn step(
        &self,
        tx: &mut PgConnection,
        order: OrderId,
        step: OrderStep,
        origin: Origin,
    ) -> Result<Vec<OutgoingEvent>, ApplyError> {
        let now = self.clock.now();
        let (known, shipment) = store::known(tx, order).await?;
        match (domain::on_order(known, step), shipment) {
            (OrderAction::Create, _) => {
                let shipment = ShipmentDetails {
                    id: domain::shipment_id(order),
                    order_id: order,
                    status: ShipmentStatus::Created,
                    carrier: self.carrier.clone(),
                    tracking_number: store::next_tracking_number(tx).await?,
                    created_at: now,
                    shipped_at: None,
                    delivered_at: None,
                    cancelled_at: None,
                };
                store::insert(tx, &shipment).await?;
                tracing::info!(order.id = %order, shipment.id = %shipment.id, "shipment created");
                let created = ShippingCreated {
                    order_id: order,
                    shipment_id: shipment.id,
                    carrier: shipment.carrier.clone(),
                    tracking_number: shipment.tracking_number.clone(),
                };
                Ok(vec![announce(&shipment, origin, created)?])
            }
            (OrderAction::Cancel, Some(shipment)) => {
                let cancelled = store::set_status(tx, shipment.id, ShipmentStatus::Cancelled, now).await?;
                tracing::info!(order.id = %order, shipment.id = %shipment.id, "shipment cancelled with its order");
                let data = ShippingCancelled { order_id: order, shipment_id: shipment.id };
                Ok(vec![announce(&cancelled, origin, data)?])
            }
            (OrderAction::RememberCancelled, _) => {
                store::remember_cancelled(tx, order, now).await?;
                Ok(Vec::new())
            }
            (OrderAction::TooLateToCancel, shipment) => {
                let status = shipment.map(|s| s.status);
                tracing::warn!(order.id = %order, ?status, "order cancelled after its parcel left; the shipment stays");
                Ok(Vec::new())
            }
            (OrderAction::Nothing | OrderAction::Cancel, _) => Ok(Vec::new()),
        }
    }

    /// Applies `step` once for `consumer`'s `event`, in the batch writer's
    /// next transaction. `Skipped` for an event applied before, and for one
    /// that announces nothing.
    async fn apply_event(
        self: &Arc<Self>,
        consumer: &'static str,
        event: MessageId,
        order: OrderId,
        step: OrderStep,
        origin: Origin,
    ) -> Result<Handled, ApplyError> {
        let this = self.clone();
        let applied = self
            .writer
            // Serialised on the order: a shipment row cannot be locked before it exists, and a
            // confirmation and a cancellation racing (a replay beside a live delivery) would
            // otherwise both see "nothing yet" and leave a shipment beside a remembered cancellation.
            .apply_once(Claim::new(consumer, event).serialised_on(*order.as_uuid()), move |tx| {
                Box::pin(async move {
                    let events = this.step(tx, order, step, origin).await?;
                    let handled = if events.is_empty() { Handled::Skipped } else { Handled::Applied };
                    Ok::<_, ApplyError>((handled, events))
                })
            })
            .await?;
        Ok(applied.unwrap_or(Handled::Skipped))
    }
}

event_set!(
    /// The order events shipping takes.
    #[derive(Debug, Clone)]
    pub enum OrderEvent {
        Confirmed(OrderConfirmed),
        Cancelled(OrderCancelled),
    }
);

/// The consumer's name in the inbox.
pub const ORDER_CONSUMER: &str = "shipping-order";

/// Creates the shipment on `order.confirmed`, cancels it on `order.cancelled`.
#[derive(Debug)]
pub struct OrderEvents(pub Arc<Shipping>);

impl Handler for OrderEvents {
    type Event = OrderEvent;

    async fn handle(&self, event: Envelope<OrderEvent>, _delivery: &Delivery) -> Result<Handled, HandlerError> {
        let origin = Origin::from(&event);
        let (order, step) = match &event.data {
            OrderEvent::Confirmed(confirmed) => (confirmed.order_id, OrderStep::Confirmed),
            OrderEvent::Cancelled(cancelled) => (cancelled.order_id, OrderStep::Cancelled),
        };
        Ok(self.0.apply_event(ORDER_CONSUMER, event.id, order, step, origin).await?)
    }
}
