//! Payment's part in the checkout saga: the handlers of `order.*` and
//! `inventory.reserved`.
//!
//! A handler decides what its event means for the order's payment
//! ([`domain::decide`]) and commits that with its inbox row through the
//! batch writer ([`BatchWriter::apply_once`]): the payment's new state and,
//! when a call is due, the call's attempt row. It never calls the provider
//! itself: once committed, the call is handed to a worker ([`crate::calls`])
//! and the event is acked, so the provider's latency never holds a
//! consumer's ack window.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use emporium_nats::{
    BatchWriter, Claim, Delivery, Handled, Handler, HandlerError, OutboxSignal, Retryable, SharedClock, event_set,
};
use emporium_schemas::events::inventory::InventoryReserved;
use emporium_schemas::events::order::{OrderCancelled, OrderConfirmed, OrderPlaced};
use emporium_schemas::values::{OrderId, PaymentId};
use emporium_schemas::{Envelope, MessageId, Origin};
use sqlx::{PgConnection, PgPool};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::PaymentSettings;
use crate::domain::{self, Action, Operation, SagaStep};
use crate::journal::{self, JournalError, SaleLine};
use crate::provider::Provider;
use crate::store::{
    self, Attempt, NewAttempt, NewLine, NewPayment, Ordered, PaymentChange, PaymentRow, Request, StoreError,
};

/// How calls are made, retried and booked.
#[derive(Debug, Clone)]
pub struct CallConfig {
    pub timeout: std::time::Duration,
    pub capture_attempts: u32,
    pub retry_backoff: std::time::Duration,
    pub commission_bps: u32,
    /// Attempts (and due retries) one recovery step takes on.
    pub recovery_batch: i64,
}

/// What the handlers, the call workers and recovery share.
#[derive(Debug)]
pub struct Payments {
    pub pool: PgPool,
    pub outbox: OutboxSignal,
    pub clock: SharedClock,
    pub provider: Arc<dyn Provider>,
    pub config: CallConfig,
    /// Commits the handlers' and the call outcomes' transactions in batches.
    pub(crate) writer: BatchWriter,
    /// Bounds the provider calls in flight.
    pub(crate) calls: Semaphore,
    pub(crate) workers: TaskTracker,
    /// Cancelled on shutdown: calls not yet made are left to recovery.
    pub(crate) stopping: CancellationToken,
}

impl Payments {
    pub fn new(
        pool: PgPool,
        outbox: OutboxSignal,
        clock: SharedClock,
        provider: Arc<dyn Provider>,
        settings: &PaymentSettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            writer: BatchWriter::start(pool.clone(), outbox.clone()),
            pool,
            outbox,
            clock,
            provider,
            config: CallConfig {
                timeout: settings.provider_timeout,
                capture_attempts: settings.capture_attempts,
                retry_backoff: settings.retry_backoff,
                commission_bps: settings.commission_bps,
                recovery_batch: 100,
            },
            calls: Semaphore::new(settings.max_concurrent_calls),
            workers: TaskTracker::new(),
            stopping: CancellationToken::new(),
        })
    }

    /// Stops starting calls and waits for those in flight (each bounded by
    /// its timeout). Calls not made stay `started`; recovery makes them.
    pub async fn drain(&self) {
        self.stopping.cancel();
        self.workers.close();
        self.workers.wait().await;
    }
}

/// Why applying an event or an outcome failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The event needs a step not seen yet.
    #[error("waiting: {0}")]
    Wait(String),
    #[error("malformed order: {0}")]
    Malformed(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
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
        match self {
            ApplyError::Store(_) | ApplyError::Wait(_) => true,
            ApplyError::Malformed(_) | ApplyError::Journal(_) | ApplyError::Encode(_) | ApplyError::Version(_) => false,
        }
    }
}

/// A saga event with what it carries.
#[derive(Debug, Clone)]
enum Step {
    Placed(Box<OrderPlaced>),
    StockReserved,
    Confirmed,
    Cancelled,
}

impl Step {
    fn kind(&self) -> SagaStep {
        match self {
            Step::Placed(_) => SagaStep::Placed,
            Step::StockReserved => SagaStep::StockReserved,
            Step::Confirmed => SagaStep::Confirmed,
            Step::Cancelled => SagaStep::Cancelled,
        }
    }
}

/// The payment recorded for a placement: refused (to the DLQ) if its lines
/// cannot be booked, so nothing is ever captured that the ledger cannot split.
fn new_payment(placed: &OrderPlaced, origin: Origin, commission_bps: u32) -> Result<NewPayment, ApplyError> {
    let lines = placed.lines.as_slice();
    let sale_lines: Vec<SaleLine> = lines
        .iter()
        .map(|l| SaleLine { seller: l.seller_id, quantity: l.quantity.get(), unit_price: l.unit_price.clone() })
        .collect();
    journal::capture_entries(placed.customer_id, &placed.total, &sale_lines, commission_bps)
        .map_err(|error| ApplyError::Malformed(error.to_string()))?;
    Ok(NewPayment {
        payment_id: PaymentId::new_v7(),
        order_id: placed.order_id,
        ordered: Ordered {
            customer: placed.customer_id,
            amount: placed.total.clone(),
            method: placed.payment_method.clone(),
        },
        lines: lines
            .iter()
            .map(|l| NewLine {
                product: l.product_id,
                seller: l.seller_id,
                quantity: l.quantity.get(),
                unit_price: l.unit_price.amount.get(),
            })
            .collect(),
        correlation_id: origin.correlation_id,
    })
}

impl Payments {
    /// Records the next attempt of `operation` on a locked payment (the
    /// caller moves the payment to its new status in the same transaction).
    pub(crate) async fn start_attempt(
        &self,
        tx: &mut PgConnection,
        payment: &PaymentRow,
        operation: Operation,
        origin: Origin,
    ) -> Result<Attempt, ApplyError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("payment {} has no {what}", payment.payment_id));
        let ordered = payment.ordered.as_ref().ok_or_else(|| corrupt("order details"))?;
        let authorization = || payment.authorization_ref.clone().ok_or_else(|| corrupt("authorization"));
        let request = match operation {
            Operation::Authorize => Request::Authorize { method: ordered.method.clone() },
            Operation::Capture => Request::Capture { authorization: authorization()? },
            Operation::Void => Request::Void { authorization: authorization()? },
            Operation::Refund => {
                Request::Refund { capture: payment.capture_ref.clone().ok_or_else(|| corrupt("capture"))? }
            }
        };
        let attempt = NewAttempt {
            payment_id: payment.payment_id,
            order_id: payment.order_id,
            request,
            amount: ordered.amount.clone(),
            origin,
        };
        Ok(store::insert_attempt(tx, attempt, self.clock.now()).await?)
    }

    /// Starts `operation` on a locked payment: records its next attempt and
    /// moves the payment to the operation's status, nothing due again.
    pub(crate) async fn begin(
        &self,
        tx: &mut PgConnection,
        payment: &PaymentRow,
        operation: Operation,
        origin: Origin,
        now: DateTime<Utc>,
    ) -> Result<Attempt, ApplyError> {
        let attempt = self.start_attempt(tx, payment, operation, origin).await?;
        let change = PaymentChange { status: operation.underway(), retry_at: None, ..unchanged(payment) };
        store::update_payment(tx, payment.payment_id, &change, now).await?;
        Ok(attempt)
    }

    /// Applies `step` to `order`'s payment once for `consumer`'s `event`, in
    /// the batch writer's next transaction; once committed, hands a started
    /// call to a worker.
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
                    let applied = this.apply_in(tx, order, step, origin).await?;
                    Ok::<_, ApplyError>((applied, Vec::new()))
                })
            })
            .await?;
        let Some((handled, call)) = applied else { return Ok(Handled::Skipped) };
        if let Some(call) = call {
            self.dispatch(call);
        }
        Ok(handled)
    }

    /// [`Payments::apply_event`]'s writes, in `tx`; the call to make once they are committed.
    async fn apply_in(
        &self,
        tx: &mut PgConnection,
        order: OrderId,
        step: Step,
        origin: Origin,
    ) -> Result<(Handled, Option<Attempt>), ApplyError> {
        let now = self.clock.now();
        let current = store::lock_payment_by_order(tx, order).await?;
        let action = domain::decide(current.as_ref().map(PaymentRow::rules).as_ref(), step.kind());
        let mut call = None;
        match (action, &current) {
            (Action::Record, _) => {
                let Step::Placed(placed) = &step else { return Ok((Handled::Skipped, None)) };
                let recorded = new_payment(placed, origin, self.config.commission_bps)?;
                if !store::insert_payment(tx, &recorded, now).await? {
                    return Err(raced(order, &step));
                }
            }
            (Action::RecordAndAuthorize, Some(payment)) => {
                let Step::Placed(placed) = &step else { return Ok((Handled::Skipped, None)) };
                let recorded = new_payment(placed, origin, self.config.commission_bps)?;
                store::record_placement(tx, payment.payment_id, &recorded, now).await?;
                let placed_payment = PaymentRow {
                    ordered: Some(recorded.ordered),
                    correlation_id: recorded.correlation_id,
                    ..payment.clone()
                };
                call = Some(self.begin(tx, &placed_payment, Operation::Authorize, origin, now).await?);
            }
            (Action::RecordStockHeldUnseen, _) => {
                if !store::insert_stock_held_unseen(tx, order, origin.correlation_id, now).await? {
                    return Err(raced(order, &step));
                }
            }
            (Action::Start(operation), Some(payment)) => {
                call = Some(self.begin(tx, payment, operation, origin, now).await?);
            }
            (Action::RememberCancel, Some(payment)) => {
                let change = PaymentChange { cancel_requested: true, ..unchanged(payment) };
                store::update_payment(tx, payment.payment_id, &change, now).await?;
            }
            (Action::MarkCancelled, Some(payment)) => {
                let change = PaymentChange { status: domain::Status::Cancelled, ..unchanged(payment) };
                store::update_payment(tx, payment.payment_id, &change, now).await?;
            }
            (Action::RecordCancelledUnseen, _) => {
                if !store::insert_cancelled_unseen(tx, order, origin.correlation_id, now).await? {
                    return Err(raced(order, &step));
                }
            }
            (Action::Wait, _) => {
                return Err(ApplyError::Wait(format!("order {order}: {:?} before its payment is ready", step.kind())));
            }
            // Nothing to change but the inbox row; the event means nothing
            // on a redelivery either, since a payment's status only moves on.
            (Action::Nothing, _) | (_, None) => return Ok((Handled::Skipped, None)),
        }
        Ok((Handled::Applied, call))
    }
}

/// Another event's payment row for the order was committed while this one
/// decided on none: the event is taken again (rolled back, inbox row and
/// all) and then sees that row, rather than being lost.
fn raced(order: OrderId, step: &Step) -> ApplyError {
    ApplyError::Wait(format!("order {order}: {:?} raced another event recording its payment", step.kind()))
}

/// A locked payment's state as it is, to change a field or two of.
fn unchanged(payment: &PaymentRow) -> PaymentChange<'static> {
    PaymentChange {
        status: payment.status,
        version: payment.version,
        cancel_requested: payment.cancel_requested,
        authorization_ref: None,
        capture_ref: None,
        failure_reason: None,
        retry_at: payment.retry_at,
    }
}

event_set!(
    /// The order events payment takes.
    #[derive(Debug)]
    pub enum OrderEvent {
        Placed(OrderPlaced),
        Confirmed(OrderConfirmed),
        Cancelled(OrderCancelled),
    }
);

/// Consumer names in the inbox.
pub const ORDER_CONSUMER: &str = "payment-order";
pub const INVENTORY_CONSUMER: &str = "payment-inventory";

/// Records the payment on `order.placed`, captures on `order.confirmed`,
/// voids or refunds on `order.cancelled`.
#[derive(Debug)]
pub struct OrderEvents(pub Arc<Payments>);

impl Handler for OrderEvents {
    type Event = OrderEvent;

    async fn handle(&self, event: Envelope<OrderEvent>, _delivery: &Delivery) -> Result<Handled, HandlerError> {
        let origin = Origin::from(&event);
        let (order, step) = match &event.data {
            OrderEvent::Placed(placed) => (placed.order_id, Step::Placed(Box::new(placed.clone()))),
            OrderEvent::Confirmed(confirmed) => (confirmed.order_id, Step::Confirmed),
            OrderEvent::Cancelled(cancelled) => (cancelled.order_id, Step::Cancelled),
        };
        Ok(self.0.apply_event(ORDER_CONSUMER, event.id, order, step, origin).await?)
    }
}

/// Authorizes once the order's stock is held.
#[derive(Debug)]
pub struct InventoryEvents(pub Arc<Payments>);

impl Handler for InventoryEvents {
    type Event = InventoryReserved;

    async fn handle(&self, event: Envelope<InventoryReserved>, _delivery: &Delivery) -> Result<Handled, HandlerError> {
        let origin = Origin::from(&event);
        let order = event.data.order_id;
        Ok(self.0.apply_event(INVENTORY_CONSUMER, event.id, order, Step::StockReserved, origin).await?)
    }
}
