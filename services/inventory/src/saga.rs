//! Inventory's part in the checkout saga and its other event handlers.
//!
//! Each event is applied once through the batch writer
//! ([`BatchWriter::apply_once`]): its inbox row, its changes and its events
//! commit together, so a redelivered event changes nothing; the
//! reservation's state decides what a step means ([`domain::decide`]), so
//! steps arriving twice or out of order change nothing either. Stock rows
//! are locked in product-id order, which keeps concurrent orders over the
//! same products from deadlocking, and a CHECK constraint keeps
//! `reserved <= on_hand` whatever happens.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use emporium_nats::{
    BatchWriter, Claim, Delivery, Handled, Handler, HandlerError, OutboxSignal, OutgoingEvent, Retryable, SharedClock,
    event_set,
};
use emporium_schemas::events::catalog::{ProductCreated, ProductDeleted};
use emporium_schemas::events::inventory::{
    InventoryRejected, InventoryReleased, InventoryReserved, ReleaseReason, StockChangeReason, StockChanged,
};
use emporium_schemas::events::order::{OrderCancelled, OrderConfirmed, OrderPlaced};
use emporium_schemas::events::shipping::ShippingShipped;
use emporium_schemas::values::{NonEmpty, OrderId, ProductId, ProductQuantity, Quantity, StockLevel};
use emporium_schemas::{EntityKey, Envelope, Event, MessageId, Origin, Seq};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{self, Action, Reservation, SagaStep};
use crate::store::{self, Cause, Delta, MovementReason, StoreError};

/// What the handlers and the backstop share.
#[derive(Debug)]
pub struct Inventory {
    pub pool: PgPool,
    pub outbox: OutboxSignal,
    pub clock: SharedClock,
    /// The backstop never releases a hold sooner than this after placement.
    pub backstop_floor: Duration,
    /// Commits the saga handlers' transactions in batches.
    writer: BatchWriter,
}

/// Why applying an event failed: storage (retry) or an event we cannot encode (reject).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("encoding an event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("a stored version is not a seq: {0}")]
    Version(#[from] emporium_schemas::envelope::InvalidSeq),
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

/// An event of entity `key` at version `seq`, caused by `origin`.
fn event<D: Event>(key: Uuid, seq: i64, origin: Origin, data: D) -> Result<OutgoingEvent, ApplyError> {
    Ok(OutgoingEvent::caused_by(EntityKey::from(key), Seq::try_from(seq)?, origin, data)?)
}

/// `inventory.stock_changed` for each changed row.
pub(crate) fn stock_changed(
    changed: &[(ProductId, StockLevel, i64)],
    reason: StockChangeReason,
    origin: Origin,
) -> Result<Vec<OutgoingEvent>, ApplyError> {
    changed
        .iter()
        .map(|(product, level, version)| {
            event(*product.as_uuid(), *version, origin, StockChanged { product_id: *product, level: *level, reason })
        })
        .collect()
}

/// Lines as events carry them: a quantity above a line's maximum is split.
fn product_quantities(lines: &[(ProductId, u32)]) -> Option<NonEmpty<ProductQuantity>> {
    let mut out = Vec::new();
    for (product, mut left) in lines.iter().copied() {
        while left > 0 {
            let take = left.min(Quantity::MAX);
            out.push(ProductQuantity { product_id: product, quantity: Quantity::try_from(take).ok()? });
            left -= take;
        }
    }
    NonEmpty::try_from(out).ok()
}

fn as_delta(lines: &[(ProductId, u32)], on_hand_sign: i32, reserved_sign: i32) -> Vec<Delta> {
    lines
        .iter()
        .map(|(product, quantity)| {
            let quantity = i32::try_from(*quantity).unwrap_or(i32::MAX);
            Delta { product: *product, on_hand: on_hand_sign * quantity, reserved: reserved_sign * quantity }
        })
        .collect()
}

/// A saga step with what it needs.
#[derive(Debug, Clone)]
enum Step {
    Placed {
        lines: Vec<(ProductId, u32)>,
        placed_at: DateTime<Utc>,
        deadline_at: DateTime<Utc>,
    },
    Confirmed,
    Cancelled,
    Shipped,
    /// The backstop: like a cancellation, but only of a hold never confirmed.
    Expired,
}

impl Inventory {
    pub fn new(pool: PgPool, outbox: OutboxSignal, clock: SharedClock, backstop_floor: Duration) -> Self {
        Self { writer: BatchWriter::start(pool.clone(), outbox.clone()), pool, outbox, clock, backstop_floor }
    }

    /// Applies `step` to `order`'s reservation in `tx`; returns the events to commit with it.
    async fn step(
        &self,
        tx: &mut PgConnection,
        order: OrderId,
        step: &Step,
        origin: Origin,
    ) -> Result<Vec<OutgoingEvent>, ApplyError> {
        let now = self.clock.now();
        let current = store::lock_reservation(tx, order).await?;
        let state = current.as_ref().map_or(Reservation::Unknown, |r| r.state);
        let saga_step = match step {
            Step::Placed { .. } => SagaStep::Placed,
            Step::Confirmed => SagaStep::Confirmed,
            Step::Cancelled | Step::Expired => SagaStep::Cancelled,
            Step::Shipped => SagaStep::Shipped,
        };
        let order_key = *order.as_uuid();
        let (version, held, confirmed) = current.map_or((0, Vec::new(), false), |r| (r.version, r.lines, r.confirmed));
        match (domain::decide(state, saga_step), step) {
            (Action::Reserve, Step::Placed { lines, placed_at, deadline_at }) => {
                let (placed_at, deadline_at) = (*placed_at, *deadline_at);
                let lines = domain::merge_lines(lines.iter().copied());
                let rows = store::lock_stock(tx, lines.iter().map(|(p, _)| *p)).await?;
                let stock = rows.iter().map(|(p, row)| (*p, row.stock)).collect();
                match domain::reserve(&lines, &stock) {
                    Ok(()) => {
                        let expires_at = domain::backstop_expiry(placed_at, deadline_at, self.backstop_floor);
                        store::insert_reservation(tx, order, Reservation::Held, &lines, Some(expires_at), now).await?;
                        let cause =
                            Cause { reason: MovementReason::Reserved, actor: None, order: Some(order), at: now };
                        let changed = store::apply(tx, &as_delta(&lines, 0, 1), cause).await?;
                        let Some(held) = product_quantities(&lines) else { return Ok(Vec::new()) };
                        let reserved = InventoryReserved { order_id: order, lines: held, expires_at };
                        let mut events = vec![event(order_key, 1, origin, reserved)?];
                        events.extend(stock_changed(&changed, StockChangeReason::Reserved, origin)?);
                        Ok(events)
                    }
                    Err(short) => {
                        store::insert_reservation(tx, order, Reservation::Rejected, &[], None, now).await?;
                        let Ok(short_lines) = NonEmpty::try_from(short) else { return Ok(Vec::new()) };
                        Ok(vec![event(order_key, 1, origin, InventoryRejected { order_id: order, short_lines })?])
                    }
                }
            }
            (Action::MarkConfirmed, _) => {
                store::mark_confirmed(tx, order, now).await?;
                Ok(Vec::new())
            }
            (Action::Release, Step::Expired) if confirmed => Ok(Vec::new()),
            (Action::Release, _) => {
                let expired = matches!(step, Step::Expired);
                store::lock_stock(tx, held.iter().map(|(p, _)| *p)).await?;
                let reason = if expired { MovementReason::Expired } else { MovementReason::Released };
                let cause = Cause { reason, actor: None, order: Some(order), at: now };
                let changed = store::apply(tx, &as_delta(&held, 0, -1), cause).await?;
                store::update_reservation(tx, order, Reservation::Released, version + 1, now).await?;
                let Some(lines) = product_quantities(&held) else { return Ok(Vec::new()) };
                let reason = if expired { ReleaseReason::Expired } else { ReleaseReason::OrderCancelled };
                let released = InventoryReleased { order_id: order, lines, reason };
                let mut events = vec![event(order_key, version + 1, origin, released)?];
                events.extend(stock_changed(&changed, StockChangeReason::Released, origin)?);
                Ok(events)
            }
            (Action::Deduct, _) => {
                store::lock_stock(tx, held.iter().map(|(p, _)| *p)).await?;
                let cause = Cause { reason: MovementReason::Shipped, actor: None, order: Some(order), at: now };
                let changed = store::apply(tx, &as_delta(&held, -1, -1), cause).await?;
                store::update_reservation(tx, order, Reservation::Shipped, version, now).await?;
                Ok(stock_changed(&changed, StockChangeReason::Shipped, origin)?)
            }
            (Action::RememberCancelled, _) => {
                store::insert_reservation(tx, order, Reservation::CancelledUnseen, &[], None, now).await?;
                Ok(Vec::new())
            }
            (Action::Nothing, _) | (Action::Reserve, _) => Ok(Vec::new()),
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
        step: Step,
        origin: Origin,
    ) -> Result<Handled, ApplyError> {
        let this = self.clone();
        let applied = self
            .writer
            .apply_once(Claim::new(consumer, event), move |tx| {
                Box::pin(async move {
                    let events = this.step(tx, order, &step, origin).await?;
                    let handled = if events.is_empty() { Handled::Skipped } else { Handled::Applied };
                    Ok::<_, ApplyError>((handled, events))
                })
            })
            .await?;
        Ok(applied.unwrap_or(Handled::Skipped))
    }

    /// Releases every unconfirmed hold past its backstop; returns how many.
    /// The backstop's step, which tests drive directly.
    pub async fn release_expired(&self) -> Result<usize, ApplyError> {
        let due = store::expired_holds(&self.pool, self.clock.now(), 500).await?;
        let mut released = 0;
        for order in due {
            let origin = Origin { correlation_id: *order.as_uuid(), causation_id: Uuid::now_v7() };
            let mut tx = self.pool.begin().await?;
            let events = self.step(&mut tx, order, &Step::Expired, origin).await?;
            emporium_nats::outbox::append(&mut tx, &events).await?;
            tx.commit().await?;
            if !events.is_empty() {
                tracing::warn!(order.id = %order, "an unconfirmed reservation expired and was released");
                released += 1;
            }
        }
        if released > 0 {
            self.outbox.wake();
        }
        Ok(released)
    }
}

event_set!(
    /// The order events inventory takes.
    #[derive(Debug)]
    pub enum OrderEvent {
        Placed(OrderPlaced),
        Confirmed(OrderConfirmed),
        Cancelled(OrderCancelled),
    }
);

event_set!(
    /// The catalog events inventory takes: who owns a product, and when it is gone.
    #[derive(Debug)]
    pub enum CatalogEvent {
        Created(ProductCreated),
        Deleted(ProductDeleted),
    }
);

/// Consumer names in the inbox.
pub const ORDER_CONSUMER: &str = "inventory-order";
pub const SHIPPING_CONSUMER: &str = "inventory-shipping";
pub const CATALOG_CONSUMER: &str = "inventory-catalog";

/// Reserves on `order.placed`, stops the backstop on `order.confirmed`,
/// releases on `order.cancelled`.
#[derive(Debug)]
pub struct OrderEvents(pub Arc<Inventory>);

impl Handler for OrderEvents {
    type Event = OrderEvent;

    async fn handle(&self, event: Envelope<OrderEvent>, _delivery: &Delivery) -> Result<Handled, HandlerError> {
        let origin = Origin::from(&event);
        let (order, step) = match &event.data {
            OrderEvent::Placed(placed) => {
                let lines = placed.lines.as_slice().iter().map(|l| (l.product_id, l.quantity.get())).collect();
                let step = Step::Placed { lines, placed_at: event.occurred_at, deadline_at: placed.deadline_at };
                (placed.order_id, step)
            }
            OrderEvent::Confirmed(confirmed) => (confirmed.order_id, Step::Confirmed),
            OrderEvent::Cancelled(cancelled) => (cancelled.order_id, Step::Cancelled),
        };
        Ok(self.0.apply_event(ORDER_CONSUMER, event.id, order, step, origin).await?)
    }
}

/// Turns the hold into a deduction when the order's parcel leaves.
#[derive(Debug)]
pub struct ShippingEvents(pub Arc<Inventory>);

impl Handler for ShippingEvents {
    type Event = ShippingShipped;

    async fn handle(&self, event: Envelope<ShippingShipped>, _delivery: &Delivery) -> Result<Handled, HandlerError> {
        let origin = Origin::from(&event);
        Ok(self.0.apply_event(SHIPPING_CONSUMER, event.id, event.data.order_id, Step::Shipped, origin).await?)
    }
}

/// Learns products and their owners from the catalog.
#[derive(Debug)]
pub struct CatalogEvents(pub Arc<Inventory>);

impl Handler for CatalogEvents {
    type Event = CatalogEvent;

    async fn handle(&self, event: Envelope<CatalogEvent>, _delivery: &Delivery) -> Result<Handled, HandlerError> {
        Ok(self.apply(event).await?)
    }
}

impl CatalogEvents {
    async fn apply(&self, event: Envelope<CatalogEvent>) -> Result<Handled, ApplyError> {
        let (inventory, origin) = (self.0.clone(), Origin::from(&event));
        let applied = self
            .0
            .writer
            .apply_once(Claim::new(CATALOG_CONSUMER, event.id), move |tx| {
                Box::pin(async move {
                    let events = inventory.learn_product(tx, &event.data, origin).await?;
                    Ok::<_, ApplyError>((Handled::Applied, events))
                })
            })
            .await?;
        Ok(applied.unwrap_or(Handled::Skipped))
    }
}

impl Inventory {
    /// Lists a new product at zero stock (announced) or delists a deleted one, in `tx`.
    async fn learn_product(
        &self,
        tx: &mut PgConnection,
        event: &CatalogEvent,
        origin: Origin,
    ) -> Result<Vec<OutgoingEvent>, ApplyError> {
        let now = self.clock.now();
        match event {
            CatalogEvent::Created(created) => {
                if !store::list_product(tx, created.product_id, created.seller_id, now).await? {
                    return Ok(Vec::new());
                }
                let listed = StockChanged {
                    product_id: created.product_id,
                    level: StockLevel::default(),
                    reason: StockChangeReason::Listed,
                };
                Ok(vec![self::event(*created.product_id.as_uuid(), 1, origin, listed)?])
            }
            CatalogEvent::Deleted(deleted) => {
                store::delist_product(tx, deleted.product_id, deleted.seller_id, now).await?;
                Ok(Vec::new())
            }
        }
    }
}
