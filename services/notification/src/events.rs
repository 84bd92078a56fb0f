//! The event handlers: identity tells whom to write to; order, payment and
//! shipping events become notifications ([`domain::decide`]).
//!
//! Each event is applied once through the batch writer
//! ([`BatchWriter::apply_once`]): its inbox row, its notifications and their
//! queued emails commit together, so a redelivered or replayed event creates
//! nothing new; the (event, recipient) unique key holds even after the inbox
//! row is pruned.
//!
//! Payment and shipping events name only their order. One that arrives
//! before its customer is known (the order's `order.placed` still behind in
//! the order stream, as after downtime) is **parked**: kept whole (type,
//! data, when it happened) in `parked_events` in the transaction of its
//! inbox row, and acked, so it neither waits in the consumer loop's backoff
//! nor ends in the DLQ. The order event that names the customer takes the
//! order's parked events with its own writes and tells them, oldest
//! first, through the one path a live event takes (`Notifier::notify`).
//! Every event of an order is applied under the order's lock (its claim is
//! serialised on the order): the order's row cannot be locked before it
//! exists, and a payment event parking beside its `order.placed` committing
//! (two streams, two consumers) would otherwise each miss the other, the
//! event parked after the order took its parked events, and left there for good.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use emporium_nats::{
    BatchWriter, Claim, Delivery, Handled, Handler, HandlerError, OutboxSignal, Retryable, SharedClock, event_set,
};
use emporium_platform::counters::Counter;
use emporium_schemas::events::identity::UserRegistered;
use emporium_schemas::events::order::{OrderCancelled, OrderConfirmed, OrderPlaced};
use emporium_schemas::events::payment::{PaymentCaptured, PaymentRefunded, PaymentVoided};
use emporium_schemas::events::shipping::{ShippingCreated, ShippingDelivered, ShippingShipped};
use emporium_schemas::values::OrderId;
use emporium_schemas::{Envelope, Event, EventType, MessageId};
use sqlx::{PgConnection, PgPool};

use crate::domain::{self, Decision, Fact, Line};
use crate::sender::MailSignal;
use crate::store::{self, Parked, StoreError};

/// What the handlers and the commands share.
#[derive(Debug)]
pub struct Notifier {
    pub pool: PgPool,
    pub clock: SharedClock,
    pub mail: MailSignal,
    /// Commits the event handlers' transactions in batches.
    writer: BatchWriter,
}

/// Why an event was not applied. Each is retried: the database comes back;
/// the others cannot happen for the events taken (an order event names its
/// customer, ours encode and decode) and, retried, end in the DLQ where an
/// operator sees them.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("order {0} is not known yet and this event cannot be parked")]
    UnknownOrder(OrderId),
    #[error("a parked event could not be encoded or decoded: {0}")]
    Parcel(#[from] serde_json::Error),
}

impl From<sqlx::Error> for ApplyError {
    fn from(error: sqlx::Error) -> Self {
        ApplyError::Store(StoreError::Database(error))
    }
}

impl Retryable for ApplyError {
    fn is_retryable(&self) -> bool {
        true
    }
}

/// Consumer names in the inbox.
pub const IDENTITY_CONSUMER: &str = "notification-identity";
pub const ORDER_CONSUMER: &str = "notification-order";
pub const PAYMENT_CONSUMER: &str = "notification-payment";
pub const SHIPPING_CONSUMER: &str = "notification-shipping";

/// Events parked until their order's customer is known: a steady climb
/// means the order stream lags behind payment and shipping.
fn parked_total() -> &'static Counter {
    emporium_platform::counters::counter(
        "notification_events_parked_total",
        "Payment and shipping events parked until their order's customer is known (order.placed)",
    )
}

/// An event as notification hears it.
pub trait Tells {
    /// What happened, as far as notifications care.
    fn fact(&self) -> Fact;

    /// Its envelope's type and its data, to park it until its order's
    /// customer is known; `None` for an event that names the customer
    /// itself and never waits.
    fn parcel(&self) -> Option<Result<(EventType, serde_json::Value), serde_json::Error>>;
}

/// What telling one or more events made.
#[derive(Debug, Default, Clone, Copy)]
struct Made {
    notifications: usize,
    emails: usize,
    /// The event named the order's customer, who is now remembered.
    remembered: bool,
    /// Parked events of the order told with it.
    unparked: usize,
}

impl Made {
    fn add(&mut self, other: Made) {
        self.notifications += other.notifications;
        self.emails += other.emails;
        self.remembered |= other.remembered;
        self.unparked += other.unparked;
    }
}

/// What applying an event did, to act on once it is committed.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Told(Made),
    /// Parked until its order's customer is known; `new` is false for one
    /// parked already (a replay after its inbox row was pruned).
    Parked {
        new: bool,
        event_type: &'static str,
    },
}

impl Notifier {
    pub fn new(pool: PgPool, clock: SharedClock, mail: MailSignal) -> Self {
        // Notification emits no events: its writer's commits never wake a relay.
        let writer = BatchWriter::start(pool.clone(), OutboxSignal::default());
        Self { pool, clock, mail, writer }
    }

    /// Applies `event` once for `consumer`: tells it, or parks it when its
    /// order's customer is not known yet; and when it names the customer,
    /// tells the order's parked events too. Once committed (and only then,
    /// so an event retried after a failed batch is reported once), wakes the
    /// email sender for the emails it queued, and counts and logs a parking.
    pub async fn apply<E: Tells + Send + Sync + 'static>(
        self: &Arc<Self>,
        consumer: &'static str,
        event: Envelope<E>,
    ) -> Result<Handled, ApplyError> {
        let (this, id, fact) = (self.clone(), event.id, event.data.fact());
        let order = fact.order();
        let applied = self
            .writer
            .apply_once(Claim::new(consumer, id).serialised_on(*order.as_uuid()), move |tx| {
                Box::pin(async move { this.tell_or_park(tx, &event, fact).await.map(|outcome| (outcome, Vec::new())) })
            })
            .await?;
        Ok(match applied {
            None | Some(Outcome::Parked { new: false, .. }) => Handled::Skipped,
            Some(Outcome::Parked { new: true, event_type }) => {
                parked_total().increment();
                tracing::info!(
                    order.id = %order,
                    event.id = %id,
                    event_type,
                    "event parked until its order's customer is known"
                );
                Handled::Applied
            }
            Some(Outcome::Told(made)) => {
                if made.emails > 0 {
                    self.mail.wake();
                }
                if made.unparked > 0 {
                    tracing::info!(order.id = %order, events = made.unparked, "parked events told now their order is known");
                }
                if made.notifications > 0 || made.remembered { Handled::Applied } else { Handled::Skipped }
            }
        })
    }

    /// [`Notifier::apply`]'s writes, in `tx`, under the order's lock.
    async fn tell_or_park<E: Tells>(
        &self,
        tx: &mut PgConnection,
        event: &Envelope<E>,
        fact: Fact,
    ) -> Result<Outcome, ApplyError> {
        let now = self.clock.now();
        let order = fact.order();
        let Some(mut made) = self.notify(tx, event.id, &fact, now).await? else {
            return park(tx, event, order, now).await;
        };
        if made.remembered {
            made.add(self.unpark(tx, order, now).await?);
        }
        Ok(Outcome::Told(made))
    }

    /// The one path from an event's fact to its notifications and queued
    /// emails, for an event arriving now and a parked one taken back alike:
    /// remembers the customer the fact names and creates what
    /// [`domain::decide`] says. `None`: the order's customer is not known yet.
    async fn notify(
        &self,
        tx: &mut PgConnection,
        event: MessageId,
        fact: &Fact,
        now: DateTime<Utc>,
    ) -> Result<Option<Made>, ApplyError> {
        let known = match fact.customer() {
            Some(_) => None,
            None => store::customer_of(tx, fact.order()).await?,
        };
        let (remember, drafts) = match domain::decide(fact, known) {
            Decision::Notify { remember, drafts } => (remember, drafts),
            Decision::UnknownOrder(_) => return Ok(None),
        };
        if let Some(customer) = remember {
            store::remember_order(tx, fact.order(), customer, now).await?;
        }
        let (notifications, emails) = store::create(tx, event, &drafts, now).await?;
        Ok(Some(Made { notifications, emails, remembered: remember.is_some(), unparked: 0 }))
    }

    /// Takes `order`'s parked events, its customer now remembered in `tx`,
    /// and tells each as if it had just arrived, in the order they happened.
    async fn unpark(&self, tx: &mut PgConnection, order: OrderId, now: DateTime<Utc>) -> Result<Made, ApplyError> {
        let parked = store::take_parked(tx, order).await?;
        let mut made = Made::default();
        for event in &parked {
            let fact = parked_fact(event)?;
            made.add(self.notify(tx, event.event, &fact, now).await?.ok_or(ApplyError::UnknownOrder(order))?);
        }
        made.unparked = parked.len();
        Ok(made)
    }

    async fn learn_user(self: &Arc<Self>, event: Envelope<UserRegistered>) -> Result<Handled, ApplyError> {
        let this = self.clone();
        let applied = self
            .writer
            .apply_once(Claim::new(IDENTITY_CONSUMER, event.id), move |tx| {
                Box::pin(async move {
                    let user = &event.data;
                    let (email, name) = (user.email.as_str(), user.name.as_str());
                    store::upsert_user(tx, user.user_id, email, name, this.clock.now()).await?;
                    Ok::<_, ApplyError>(((), Vec::new()))
                })
            })
            .await?;
        if applied.is_none() {
            return Ok(Handled::Skipped);
        }
        // Emails queued before the address was known may go now.
        self.mail.wake();
        Ok(Handled::Applied)
    }
}

/// Parks `event` of `order`, whose customer is not known yet, in `tx`.
async fn park<E: Tells>(
    tx: &mut PgConnection,
    event: &Envelope<E>,
    order: OrderId,
    now: DateTime<Utc>,
) -> Result<Outcome, ApplyError> {
    let Some(parcel) = event.data.parcel() else {
        return Err(ApplyError::UnknownOrder(order));
    };
    let (kind, data) = parcel?;
    let parked = Parked {
        event: event.id,
        order,
        event_type: kind.type_name.to_owned(),
        schema: kind.version,
        data,
        occurred_at: event.occurred_at,
    };
    let new = store::park(tx, &parked, now).await?;
    Ok(Outcome::Parked { new, event_type: kind.type_name })
}

/// A parked event's fact, decoded back from its stored type and data.
fn parked_fact(parked: &Parked) -> Result<Fact, ApplyError> {
    if let Some(event) = PaymentEvent::from_parked(parked) {
        return Ok(event?.fact());
    }
    if let Some(event) = ShippingEvent::from_parked(parked) {
        return Ok(event?.fact());
    }
    let what = format!("parked event {} is a {} v{}", parked.event, parked.event_type, parked.schema);
    Err(StoreError::Corrupt(what).into())
}

/// Declares an [`event_set!`] of events that name only their order and may
/// be parked: each is stored by its envelope's type and schema with its
/// data, and decoded back the same way.
macro_rules! parkable_set {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($variant:ident($event:ty)),+ $(,)? }) => {
        event_set!($(#[$meta])* $vis enum $name { $($variant($event)),+ });

        impl $name {
            fn to_parked(&self) -> Result<(EventType, serde_json::Value), serde_json::Error> {
                match self {
                    $($name::$variant(data) => Ok((<$event as Event>::TYPE, serde_json::to_value(data)?)),)+
                }
            }

            /// `None`: `parked` is none of these events.
            fn from_parked(parked: &Parked) -> Option<Result<Self, serde_json::Error>> {
                $(
                    let kind = <$event as Event>::TYPE;
                    if parked.event_type == kind.type_name && parked.schema == kind.version {
                        return Some(serde_json::from_value(parked.data.clone()).map($name::$variant));
                    }
                )+
                None
            }
        }
    };
}

/// Learns users' addresses and names.
#[derive(Debug)]
pub struct IdentityEvents(pub Arc<Notifier>);

impl Handler for IdentityEvents {
    type Event = UserRegistered;

    async fn handle(&self, event: Envelope<UserRegistered>, _delivery: &Delivery) -> Result<Handled, HandlerError> {
        Ok(self.0.learn_user(event).await?)
    }
}

event_set!(
    /// The order events notification takes.
    #[derive(Debug)]
    pub enum OrderEvent {
        Placed(OrderPlaced),
        Confirmed(OrderConfirmed),
        Cancelled(OrderCancelled),
    }
);

impl Tells for OrderEvent {
    fn fact(&self) -> Fact {
        match self {
            OrderEvent::Placed(placed) => Fact::OrderPlaced { order: placed.order_id, customer: placed.customer_id },
            OrderEvent::Confirmed(confirmed) => Fact::OrderConfirmed {
                order: confirmed.order_id,
                customer: confirmed.customer_id,
                lines: confirmed
                    .lines
                    .iter()
                    .map(|line| Line {
                        product: line.product_id,
                        seller: line.seller_id,
                        quantity: line.quantity.get(),
                        unit_price: line.unit_price.clone(),
                    })
                    .collect(),
                total: confirmed.total.clone(),
            },
            OrderEvent::Cancelled(cancelled) => Fact::OrderCancelled {
                order: cancelled.order_id,
                customer: cancelled.customer_id,
                reason: cancelled.reason,
                previous: cancelled.previous_status,
            },
        }
    }

    fn parcel(&self) -> Option<Result<(EventType, serde_json::Value), serde_json::Error>> {
        None
    }
}

/// Remembers orders' customers (telling the parked events of theirs);
/// tells of confirmations (customer and sellers) and cancellations.
#[derive(Debug)]
pub struct OrderEvents(pub Arc<Notifier>);

impl Handler for OrderEvents {
    type Event = OrderEvent;

    async fn handle(&self, event: Envelope<OrderEvent>, _delivery: &Delivery) -> Result<Handled, HandlerError> {
        Ok(self.0.apply(ORDER_CONSUMER, event).await?)
    }
}

parkable_set!(
    /// The payment events notification takes (the customer hears of money moving).
    #[derive(Debug)]
    pub enum PaymentEvent {
        Captured(PaymentCaptured),
        Refunded(PaymentRefunded),
        Voided(PaymentVoided),
    }
);

impl Tells for PaymentEvent {
    fn fact(&self) -> Fact {
        match self {
            PaymentEvent::Captured(e) => Fact::PaymentCaptured { order: e.order_id, amount: e.amount.clone() },
            PaymentEvent::Refunded(e) => Fact::PaymentRefunded { order: e.order_id, amount: e.amount.clone() },
            PaymentEvent::Voided(e) => Fact::PaymentVoided { order: e.order_id, amount: e.amount.clone() },
        }
    }

    fn parcel(&self) -> Option<Result<(EventType, serde_json::Value), serde_json::Error>> {
        Some(self.to_parked())
    }
}

#[derive(Debug)]
pub struct PaymentEvents(pub Arc<Notifier>);

impl Handler for PaymentEvents {
    type Event = PaymentEvent;

    async fn handle(&self, event: Envelope<PaymentEvent>, _delivery: &Delivery) -> Result<Handled, HandlerError> {
        Ok(self.0.apply(PAYMENT_CONSUMER, event).await?)
    }
}

parkable_set!(
    /// The shipping events notification takes. A cancelled shipment follows
    /// a cancelled order, which the customer has heard of already.
    #[derive(Debug)]
    pub enum ShippingEvent {
        Created(ShippingCreated),
        Shipped(ShippingShipped),
        Delivered(ShippingDelivered),
    }
);

impl Tells for ShippingEvent {
    fn fact(&self) -> Fact {
        match self {
            ShippingEvent::Created(e) => Fact::ShipmentCreated {
                order: e.order_id,
                carrier: e.carrier.as_str().to_owned(),
                tracking_number: e.tracking_number.as_str().to_owned(),
            },
            ShippingEvent::Shipped(e) => {
                Fact::ShipmentShipped { order: e.order_id, tracking_number: e.tracking_number.as_str().to_owned() }
            }
            ShippingEvent::Delivered(e) => Fact::ShipmentDelivered { order: e.order_id },
        }
    }

    fn parcel(&self) -> Option<Result<(EventType, serde_json::Value), serde_json::Error>> {
        Some(self.to_parked())
    }
}

#[derive(Debug)]
pub struct ShippingEvents(pub Arc<Notifier>);

impl Handler for ShippingEvents {
    type Event = ShippingEvent;

    async fn handle(&self, event: Envelope<ShippingEvent>, _delivery: &Delivery) -> Result<Handled, HandlerError> {
        Ok(self.0.apply(SHIPPING_CONSUMER, event).await?)
    }
}
