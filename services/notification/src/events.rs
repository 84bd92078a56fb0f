//! The event handlers: identity tells whom to write to; order, payment and
//! shipping events become notifications ([`domain::decide`]).
//!
//! Each event is applied in one transaction with its inbox row, its
//! notifications and their queued emails, so a redelivered or replayed
//! event creates nothing new; the (event, recipient) unique key holds even
//! after the inbox row is pruned.

use std::sync::Arc;

use emporium_nats::{Delivery, Handled, Handler, HandlerError, SharedClock, event_set};
use emporium_schemas::events::identity::UserRegistered;
use emporium_schemas::events::order::{OrderCancelled, OrderConfirmed, OrderPlaced};
use emporium_schemas::events::payment::{PaymentCaptured, PaymentRefunded, PaymentVoided};
use emporium_schemas::events::shipping::{ShippingCreated, ShippingDelivered, ShippingShipped};
use emporium_schemas::values::OrderId;
use emporium_schemas::{Envelope, MessageId};
use sqlx::PgPool;

use crate::domain::{self, Decision, Fact, Line};
use crate::sender::MailSignal;
use crate::store::{self, StoreError};

/// What the handlers and the commands share.
#[derive(Debug)]
pub struct Notifier {
    pub pool: PgPool,
    pub clock: SharedClock,
    pub mail: MailSignal,
}

/// Why an event was not applied: storage (retry), or an order not known yet (retry).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("order {0} is not known yet; waiting for its order.placed")]
    UnknownOrder(OrderId),
}

impl From<sqlx::Error> for ApplyError {
    fn from(error: sqlx::Error) -> Self {
        ApplyError::Store(StoreError::Database(error))
    }
}

impl From<ApplyError> for HandlerError {
    fn from(error: ApplyError) -> Self {
        // Both pass: the database comes back, the order's events arrive.
        HandlerError::Retry(error.to_string())
    }
}

/// Consumer names in the inbox.
pub const IDENTITY_CONSUMER: &str = "notification-identity";
pub const ORDER_CONSUMER: &str = "notification-order";
pub const PAYMENT_CONSUMER: &str = "notification-payment";
pub const SHIPPING_CONSUMER: &str = "notification-shipping";

impl Notifier {
    /// Applies `fact` with `consumer`'s inbox entry for `event`, in one transaction.
    pub async fn apply(&self, consumer: &str, event: MessageId, fact: &Fact) -> Result<Handled, ApplyError> {
        let now = self.clock.now();
        let mut tx = self.pool.begin().await?;
        if !emporium_nats::inbox::record(&mut tx, consumer, event).await? {
            return Ok(Handled::Skipped);
        }
        let known = match fact.customer() {
            Some(_) => None,
            None => store::customer_of(&mut tx, fact.order()).await?,
        };
        let (remember, drafts) = match domain::decide(fact, known) {
            Decision::Notify { remember, drafts } => (remember, drafts),
            // Rolled back with the inbox row: the redelivery tries again.
            Decision::UnknownOrder(order) => return Err(ApplyError::UnknownOrder(order)),
        };
        if let Some(customer) = remember {
            store::remember_order(&mut tx, fact.order(), customer, now).await?;
        }
        let (created, emails) = store::create(&mut tx, event, &drafts, now).await?;
        tx.commit().await?;
        if emails > 0 {
            self.mail.wake();
        }
        Ok(if created > 0 || remember.is_some() { Handled::Applied } else { Handled::Skipped })
    }

    async fn learn_user(&self, event: &Envelope<UserRegistered>) -> Result<Handled, ApplyError> {
        let user = &event.data;
        let mut tx = self.pool.begin().await?;
        if !emporium_nats::inbox::record(&mut tx, IDENTITY_CONSUMER, event.id).await? {
            return Ok(Handled::Skipped);
        }
        store::upsert_user(&mut tx, user.user_id, user.email.as_str(), user.name.as_str(), self.clock.now()).await?;
        tx.commit().await?;
        // Emails queued before the address was known may go now.
        self.mail.wake();
        Ok(Handled::Applied)
    }
}

/// Learns users' addresses and names.
#[derive(Debug)]
pub struct IdentityEvents(pub Arc<Notifier>);

impl Handler for IdentityEvents {
    type Event = UserRegistered;

    async fn handle(&self, event: Envelope<UserRegistered>, _delivery: &Delivery) -> Result<Handled, HandlerError> {
        Ok(self.0.learn_user(&event).await?)
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

/// Remembers orders' customers; tells of confirmations (customer and
/// sellers) and cancellations.
#[derive(Debug)]
pub struct OrderEvents(pub Arc<Notifier>);

impl Handler for OrderEvents {
    type Event = OrderEvent;

    async fn handle(&self, event: Envelope<OrderEvent>, _delivery: &Delivery) -> Result<Handled, HandlerError> {
        let fact = match &event.data {
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
        };
        Ok(self.0.apply(ORDER_CONSUMER, event.id, &fact).await?)
    }
}

event_set!(
    /// The payment events notification takes (the customer hears of money moving).
    #[derive(Debug)]
    pub enum PaymentEvent {
        Captured(PaymentCaptured),
        Refunded(PaymentRefunded),
        Voided(PaymentVoided),
    }
);

#[derive(Debug)]
pub struct PaymentEvents(pub Arc<Notifier>);

impl Handler for PaymentEvents {
    type Event = PaymentEvent;

    async fn handle(&self, event: Envelope<PaymentEvent>, _delivery: &Delivery) -> Result<Handled, HandlerError> {
        let fact = match &event.data {
            PaymentEvent::Captured(e) => Fact::PaymentCaptured { order: e.order_id, amount: e.amount.clone() },
            PaymentEvent::Refunded(e) => Fact::PaymentRefunded { order: e.order_id, amount: e.amount.clone() },
            PaymentEvent::Voided(e) => Fact::PaymentVoided { order: e.order_id, amount: e.amount.clone() },
        };
        Ok(self.0.apply(PAYMENT_CONSUMER, event.id, &fact).await?)
    }
}

event_set!(
    /// The shipping events notification takes. A cancelled shipment follows
    /// a cancelled order, which the customer has heard of already.
    #[derive(Debug)]
    pub enum ShippingEvent {
        Created(ShippingCreated),
        Shipped(ShippingShipped),
        Delivered(ShippingDelivered),
    }
);

#[derive(Debug)]
pub struct ShippingEvents(pub Arc<Notifier>);

impl Handler for ShippingEvents {
    type Event = ShippingEvent;

    async fn handle(&self, event: Envelope<ShippingEvent>, _delivery: &Delivery) -> Result<Handled, HandlerError> {
        let fact = match &event.data {
            ShippingEvent::Created(e) => Fact::ShipmentCreated {
                order: e.order_id,
                carrier: e.carrier.as_str().to_owned(),
                tracking_number: e.tracking_number.as_str().to_owned(),
            },
            ShippingEvent::Shipped(e) => {
                Fact::ShipmentShipped { order: e.order_id, tracking_number: e.tracking_number.as_str().to_owned() }
            }
            ShippingEvent::Delivered(e) => Fact::ShipmentDelivered { order: e.order_id },
        };
        Ok(self.0.apply(SHIPPING_CONSUMER, event.id, &fact).await?)
    }
}
