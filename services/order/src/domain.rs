//! The order's rules: DESIGN.md's transition table as pure code.
//!
//! `decide` says what a command or a saga fact means in each status, `apply`
//! records it. Facts come from three other services over streams that keep
//! no order between them, so each fact carries its source's `seq`: a fact no
//! newer than the last one applied from that source is stale and changes
//! nothing, and a fact that implies a step the order has not seen yet
//! (an authorization before the reservation) applies that step too. A fact
//! that no history could produce (stock rejected after the order was
//! confirmed) is refused, and its event goes to the DLQ.

use chrono::{DateTime, Utc};
use emporium_schemas::Principal;
use emporium_schemas::commands::order::{
    OrderLineView, OrderView, PaymentStatus, PaymentView, ShipmentStatus, ShipmentView, TimelineEntry,
};
use emporium_schemas::events::order::{
    CancelReason, OrderCancelled, OrderConfirmed, OrderDelivered, OrderPlaced, OrderShipped, OrderStatus,
};
use emporium_schemas::values::{
    Address, Money, NonEmpty, OrderId, PaymentMethod, PricedLine, ProductId, ProductQuantity, Role, ShipmentId, UserId,
    merge_quantities,
};
use serde::{Deserialize, Serialize};

/// A placed order, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub customer_id: UserId,
    pub idempotency_key: String,
    pub request_digest: String,
    pub lines: NonEmpty<PricedLine>,
    /// Every seller with a line here, once each (the sellers' listing index).
    pub seller_ids: Vec<UserId>,
    pub total: Money,
    pub shipping_address: Address,
    pub payment_method: PaymentMethod,
    pub placed_at: DateTime<Utc>,
    /// `placed_at` in microseconds: the listings' sort key (an indexable number).
    pub placed_at_micros: i64,
    pub deadline_at: DateTime<Utc>,
    pub status: OrderStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<CancelReason>,
    pub payment: PaymentStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipment: Option<ShipmentView>,
    pub timeline: Vec<TimelineEntry>,
    /// The newest `seq` applied from each source.
    pub seen: Seen,
}

/// An order's state: nothing until it is placed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderState(pub Option<Order>);

/// The services whose facts move an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Inventory,
    Payment,
    Shipping,
}

/// The newest `seq` applied per source (0: none yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub inventory: u64,
    pub payment: u64,
    pub shipping: u64,
}

impl Seen {
    fn of(&self, source: Source) -> u64 {
        match source {
            Source::Inventory => self.inventory,
            Source::Payment => self.payment,
            Source::Shipping => self.shipping,
        }
    }

    fn note(&mut self, source: Source, seq: u64) {
        let slot = match source {
            Source::Inventory => &mut self.inventory,
            Source::Payment => &mut self.payment,
            Source::Shipping => &mut self.shipping,
        };
        *slot = (*slot).max(seq);
    }
}

/// What another service reported about the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    StockReserved,
    StockRejected,
    StockReleased,
    PaymentAuthorized,
    PaymentFailed,
    PaymentCaptured,
    PaymentCaptureFailed,
    PaymentVoided,
    PaymentRefunded,
    ShipmentCreated(ShipmentId),
    ShipmentShipped(ShipmentId),
    ShipmentDelivered(ShipmentId),
    ShipmentCancelled(ShipmentId),
}

impl Fact {
    pub fn source(self) -> Source {
        match self {
            Fact::StockReserved | Fact::StockRejected | Fact::StockReleased => Source::Inventory,
            Fact::PaymentAuthorized
            | Fact::PaymentFailed
            | Fact::PaymentCaptured
            | Fact::PaymentCaptureFailed
            | Fact::PaymentVoided
            | Fact::PaymentRefunded => Source::Payment,
            Fact::ShipmentCreated(_)
            | Fact::ShipmentShipped(_)
            | Fact::ShipmentDelivered(_)
            | Fact::ShipmentCancelled(_) => Source::Shipping,
        }
    }
}

/// A checkout's order, priced from the catalog, to be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub order_id: OrderId,
    pub customer_id: UserId,
    pub idempotency_key: String,
    pub request_digest: String,
    pub lines: NonEmpty<PricedLine>,
    pub total: Money,
    pub shipping_address: Address,
    pub payment_method: PaymentMethod,
    pub deadline_at: DateTime<Utc>,
}

/// What an order is told.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderCommand {
    Place {
        placement: Box<Placement>,
        at: DateTime<Utc>,
    },
    /// Is there already the order this checkout (body digest, items) placed?
    /// Refused `NotPlaced` if not, `KeyReused` if its key placed another.
    Find {
        request_digest: String,
        items: Vec<(ProductId, u32)>,
    },
    /// The customer (or an admin) cancels.
    Cancel {
        at: DateTime<Utc>,
    },
    /// Another service's event, with its `seq` for that source.
    Saga {
        fact: Fact,
        seq: u64,
        at: DateTime<Utc>,
    },
    /// The sweeper: the deadline has passed by `at`.
    DeadlineReached {
        at: DateTime<Utc>,
    },
}

/// What happened to an order. Some are published (see `entity`), the rest
/// the order keeps to itself.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderEvent {
    Placed(Box<Order>),
    Reserved {
        at: DateTime<Utc>,
    },
    Confirmed {
        at: DateTime<Utc>,
        public: Box<OrderConfirmed>,
    },
    Cancelled {
        at: DateTime<Utc>,
        public: OrderCancelled,
    },
    Shipped {
        at: DateTime<Utc>,
        public: OrderShipped,
    },
    Delivered {
        at: DateTime<Utc>,
        public: Box<OrderDelivered>,
    },
    PaymentChanged(PaymentStatus),
    ShipmentChanged(ShipmentView),
    /// The newest fact applied from `source`.
    Noted {
        source: Source,
        seq: u64,
    },
}

/// Why an order refuses a command or a fact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("no such order")]
    NotPlaced,
    #[error("this idempotency key was used for a checkout with another body")]
    KeyReused,
    #[error("an order that is {0:?} can no longer be cancelled")]
    TooLateToCancel(OrderStatus),
    #[error("{fact:?} cannot happen to an order that is {status:?}")]
    Impossible { fact: Fact, status: OrderStatus },
}

/// The events `command` causes in `state`, or why it is refused.
pub fn decide(state: &OrderState, command: &OrderCommand) -> Result<Vec<OrderEvent>, Rejection> {
    let Some(order) = &state.0 else {
        return match command {
            OrderCommand::Place { placement, at } => Ok(vec![OrderEvent::Placed(Box::new(place(placement, *at)))]),
            _ => Err(Rejection::NotPlaced),
        };
    };
    match command {
        // A retried checkout finds its order; another body or cart under the same key is refused.
        OrderCommand::Place { placement, .. } if order.placed_by(&placement.request_digest, &placement.items()) => {
            Ok(Vec::new())
        }
        OrderCommand::Place { .. } => Err(Rejection::KeyReused),
        OrderCommand::Find { request_digest, items } if order.placed_by(request_digest, items) => Ok(Vec::new()),
        OrderCommand::Find { .. } => Err(Rejection::KeyReused),
        OrderCommand::Cancel { at } => match order.status {
            OrderStatus::Pending | OrderStatus::Reserved | OrderStatus::Confirmed => {
                Ok(vec![cancel(order, CancelReason::CustomerRequest, *at)])
            }
            OrderStatus::Cancelled => Ok(Vec::new()),
            status @ (OrderStatus::Shipped | OrderStatus::Delivered) => Err(Rejection::TooLateToCancel(status)),
        },
        OrderCommand::DeadlineReached { at } if *at < order.deadline_at => Ok(Vec::new()),
        OrderCommand::DeadlineReached { at } => Ok(match order.status {
            OrderStatus::Pending => vec![cancel(order, CancelReason::Timeout, *at)],
            OrderStatus::Reserved => vec![cancel(order, CancelReason::PaymentTimeout, *at)],
            _ => Vec::new(),
        }),
        OrderCommand::Saga { fact, seq, at } => {
            let source = fact.source();
            if *seq <= order.seen.of(source) {
                return Ok(Vec::new()); // stale or duplicate
            }
            let mut events = transition(order, *fact, *at)?;
            if !events.is_empty() {
                events.push(OrderEvent::Noted { source, seq: *seq });
            }
            Ok(events)
        }
    }
}

fn place(placement: &Placement, at: DateTime<Utc>) -> Order {
    let mut seller_ids: Vec<UserId> = placement.lines.iter().map(|line| line.seller_id).collect();
    seller_ids.sort();
    seller_ids.dedup();
    Order {
        id: placement.order_id,
        customer_id: placement.customer_id,
        idempotency_key: placement.idempotency_key.clone(),
        request_digest: placement.request_digest.clone(),
        lines: placement.lines.clone(),
        seller_ids,
        total: placement.total.clone(),
        shipping_address: placement.shipping_address.clone(),
        payment_method: placement.payment_method.clone(),
        placed_at: at,
        placed_at_micros: at.timestamp_micros(),
        deadline_at: placement.deadline_at,
        status: OrderStatus::Pending,
        cancel_reason: None,
        payment: PaymentStatus::Pending,
        shipment: None,
        timeline: vec![TimelineEntry { status: OrderStatus::Pending, at }],
        seen: Seen::default(),
    }
}

fn cancel(order: &Order, reason: CancelReason, at: DateTime<Utc>) -> OrderEvent {
    OrderEvent::Cancelled {
        at,
        public: OrderCancelled {
            order_id: order.id,
            customer_id: order.customer_id,
            reason,
            previous_status: order.status,
        },
    }
}

fn confirm(order: &Order, at: DateTime<Utc>) -> OrderEvent {
    OrderEvent::Confirmed {
        at,
        public: Box::new(OrderConfirmed {
            order_id: order.id,
            customer_id: order.customer_id,
            lines: order.lines.clone(),
            total: order.total.clone(),
            shipping_address: order.shipping_address.clone(),
        }),
    }
}

fn ship(order: &Order, shipment_id: ShipmentId, at: DateTime<Utc>) -> OrderEvent {
    OrderEvent::Shipped { at, public: OrderShipped { order_id: order.id, customer_id: order.customer_id, shipment_id } }
}

fn deliver(order: &Order, shipment_id: ShipmentId, at: DateTime<Utc>) -> OrderEvent {
    let lines = order.lines.map(|line| ProductQuantity { product_id: line.product_id, quantity: line.quantity });
    OrderEvent::Delivered {
        at,
        public: Box::new(OrderDelivered { order_id: order.id, customer_id: order.customer_id, shipment_id, lines }),
    }
}

fn payment(order: &Order, status: PaymentStatus) -> Vec<OrderEvent> {
    if order.payment == status { Vec::new() } else { vec![OrderEvent::PaymentChanged(status)] }
}

fn shipment(order: &Order, id: ShipmentId, status: ShipmentStatus) -> Vec<OrderEvent> {
    let next = ShipmentView { id, status };
    if order.shipment == Some(next) { Vec::new() } else { vec![OrderEvent::ShipmentChanged(next)] }
}

/// What `fact` means for `order` in its status: the transition table.
fn transition(order: &Order, fact: Fact, at: DateTime<Utc>) -> Result<Vec<OrderEvent>, Rejection> {
    use OrderStatus::{Cancelled, Confirmed, Delivered, Pending, Reserved, Shipped};
    let impossible = Err(Rejection::Impossible { fact, status: order.status });
    let status = order.status;
    Ok(match fact {
        // Inventory tells us of its releases; the order already knows why.
        Fact::StockReleased => Vec::new(),
        Fact::StockReserved => match status {
            Pending => vec![OrderEvent::Reserved { at }],
            Reserved | Confirmed | Shipped | Delivered | Cancelled => Vec::new(),
        },
        Fact::StockRejected => match status {
            Pending => vec![cancel(order, CancelReason::OutOfStock, at)],
            Cancelled => Vec::new(),
            Reserved | Confirmed | Shipped | Delivered => return impossible,
        },
        Fact::PaymentAuthorized => match status {
            // Payment authorizes only reserved stock: the reservation happened.
            Pending => {
                [vec![OrderEvent::Reserved { at }, confirm(order, at)], payment(order, PaymentStatus::Authorized)]
                    .concat()
            }
            Reserved => [vec![confirm(order, at)], payment(order, PaymentStatus::Authorized)].concat(),
            // Too late: payment voids it once it hears of the cancellation.
            Cancelled if order.payment == PaymentStatus::Pending => payment(order, PaymentStatus::Authorized),
            Confirmed | Shipped | Delivered | Cancelled => Vec::new(),
        },
        Fact::PaymentFailed => match status {
            Pending | Reserved => {
                [payment(order, PaymentStatus::Failed), vec![cancel(order, CancelReason::PaymentDeclined, at)]].concat()
            }
            Cancelled => payment(order, PaymentStatus::Failed),
            Confirmed | Shipped | Delivered => return impossible,
        },
        // Capture follows confirmation; voids and refunds follow an authorization.
        Fact::PaymentCaptured | Fact::PaymentCaptureFailed | Fact::PaymentVoided | Fact::PaymentRefunded
            if matches!(status, Pending | Reserved) =>
        {
            return impossible;
        }
        Fact::PaymentCaptured => payment(order, PaymentStatus::Captured),
        Fact::PaymentCaptureFailed => payment(order, PaymentStatus::CaptureFailed),
        Fact::PaymentVoided => payment(order, PaymentStatus::Voided),
        Fact::PaymentRefunded => payment(order, PaymentStatus::Refunded),
        // Shipping starts from a confirmed order.
        Fact::ShipmentCreated(_)
        | Fact::ShipmentShipped(_)
        | Fact::ShipmentDelivered(_)
        | Fact::ShipmentCancelled(_)
            if matches!(status, Pending | Reserved) =>
        {
            return impossible;
        }
        Fact::ShipmentCreated(id) => match status {
            Confirmed | Cancelled if order.shipment.is_none() => shipment(order, id, ShipmentStatus::Created),
            _ => Vec::new(),
        },
        Fact::ShipmentShipped(id) => match status {
            Confirmed => [shipment(order, id, ShipmentStatus::Shipped), vec![ship(order, id, at)]].concat(),
            // Shipped despite the cancellation (the two crossed): recorded for an operator, the order stays cancelled.
            Cancelled => shipment(order, id, ShipmentStatus::Shipped),
            _ => Vec::new(),
        },
        Fact::ShipmentDelivered(id) => match status {
            // Delivery implies the shipment left.
            Confirmed => {
                [shipment(order, id, ShipmentStatus::Delivered), vec![ship(order, id, at), deliver(order, id, at)]]
                    .concat()
            }
            Shipped => [shipment(order, id, ShipmentStatus::Delivered), vec![deliver(order, id, at)]].concat(),
            Cancelled => shipment(order, id, ShipmentStatus::Delivered),
            _ => Vec::new(),
        },
        Fact::ShipmentCancelled(id) => match status {
            Shipped | Delivered => Vec::new(),
            _ => shipment(order, id, ShipmentStatus::Cancelled),
        },
    })
}

/// `event`'s effect on `state`.
pub fn apply(state: &mut OrderState, event: &OrderEvent) {
    if let OrderEvent::Placed(order) = event {
        state.0 = Some(order.as_ref().clone());
        return;
    }
    let Some(order) = &mut state.0 else { return };
    let reach = |order: &mut Order, status: OrderStatus, at: DateTime<Utc>| {
        order.status = status;
        order.timeline.push(TimelineEntry { status, at });
    };
    match event {
        OrderEvent::Placed(_) => {}
        OrderEvent::Reserved { at } => reach(order, OrderStatus::Reserved, *at),
        OrderEvent::Confirmed { at, .. } => reach(order, OrderStatus::Confirmed, *at),
        OrderEvent::Cancelled { at, public } => {
            order.cancel_reason = Some(public.reason);
            reach(order, OrderStatus::Cancelled, *at);
        }
        OrderEvent::Shipped { at, .. } => reach(order, OrderStatus::Shipped, *at),
        OrderEvent::Delivered { at, .. } => reach(order, OrderStatus::Delivered, *at),
        OrderEvent::PaymentChanged(status) => order.payment = *status,
        OrderEvent::ShipmentChanged(shipment) => order.shipment = Some(*shipment),
        OrderEvent::Noted { source, seq } => order.seen.note(*source, *seq),
    }
}

/// The products and quantities `lines` ask for, merged per product.
fn items(lines: &NonEmpty<PricedLine>) -> Vec<(ProductId, u32)> {
    merge_quantities(lines.iter().map(|line| (line.product_id, line.quantity.get())))
}

impl Placement {
    /// The products and quantities asked for.
    pub fn items(&self) -> Vec<(ProductId, u32)> {
        items(&self.lines)
    }
}

impl Order {
    /// Whether a checkout with this body digest and these items is the one
    /// that placed the order (a retry), rather than its key reused.
    pub fn placed_by(&self, request_digest: &str, items: &[(ProductId, u32)]) -> bool {
        self.request_digest == request_digest && items == self::items(&self.lines)
    }

    /// The order as `OrderPlaced` announces it.
    pub fn placed_event(&self) -> OrderPlaced {
        OrderPlaced {
            order_id: self.id,
            customer_id: self.customer_id,
            lines: self.lines.clone(),
            total: self.total.clone(),
            shipping_address: self.shipping_address.clone(),
            payment_method: self.payment_method.clone(),
            deadline_at: self.deadline_at,
        }
    }

    /// Whether the checkout deadline still matters (the sweeper watches it).
    pub fn awaits_confirmation(&self) -> bool {
        matches!(self.status, OrderStatus::Pending | OrderStatus::Reserved)
    }
}

/// Whose orders a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    /// Orders the user placed.
    Customer(UserId),
    /// Orders holding the seller's products.
    Seller(UserId),
    /// Every order.
    Admin,
}

impl Viewer {
    /// Whose orders `principal` lists: with `sales`, the orders holding their
    /// products (sellers and admins only); else their own purchases, or every
    /// order for an admin. `None`: a customer has no sales to list.
    pub fn of(principal: &Principal, sales: bool) -> Option<Self> {
        match (principal.role, sales) {
            (Role::Customer, true) => None,
            (Role::Seller | Role::Admin, true) => Some(Viewer::Seller(principal.user_id)),
            (Role::Admin, false) => Some(Viewer::Admin),
            (Role::Seller | Role::Customer, false) => Some(Viewer::Customer(principal.user_id)),
        }
    }
}

/// The order as `principal` may see it: its customer and admins see it whole,
/// a seller with lines in it sees only those (and their sum), anyone else nothing.
pub fn view(order: &Order, principal: &Principal) -> Option<OrderView> {
    let whole = principal.role == Role::Admin || principal.user_id == order.customer_id;
    let lines: Vec<&PricedLine> = if whole {
        order.lines.iter().collect()
    } else if principal.role == Role::Seller {
        order.lines.iter().filter(|line| line.seller_id == principal.user_id).collect()
    } else {
        Vec::new()
    };
    if lines.is_empty() {
        return None;
    }
    let total = if whole { order.total.clone() } else { sum(lines.iter().copied())? };
    Some(OrderView {
        id: order.id,
        customer_id: order.customer_id,
        status: order.status,
        lines: lines.into_iter().map(OrderLineView::from).collect(),
        total,
        cancel_reason: order.cancel_reason,
        payment: PaymentView { status: order.payment },
        shipment: order.shipment,
        timeline: order.timeline.clone(),
        placed_at: order.placed_at,
        deadline_at: order.deadline_at,
    })
}

/// Whether `principal` may cancel the order: its customer or an admin.
pub fn may_cancel(order: &Order, principal: &Principal) -> bool {
    principal.role == Role::Admin || principal.user_id == order.customer_id
}

/// The sum of `lines` (quantity × unit price) in their one currency; `None`
/// if the lines mix currencies or the sum overflows.
pub fn sum<'a>(lines: impl IntoIterator<Item = &'a PricedLine>) -> Option<Money> {
    let mut total: Option<(i64, &emporium_schemas::values::Currency)> = None;
    for line in lines {
        let amount = line.unit_price.amount.get().checked_mul(i64::from(line.quantity.get()))?;
        total = Some(match total {
            None => (amount, &line.unit_price.currency),
            Some((sum, currency)) if *currency == line.unit_price.currency => (sum.checked_add(amount)?, currency),
            Some(_) => return None,
        });
    }
    let (amount, currency) = total?;
    Some(Money { amount: amount.try_into().ok()?, currency: currency.clone() })
}

#[cfg(test)]
mod tests;
