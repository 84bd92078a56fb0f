//! Who hears what, free of I/O: the notifications an event creates, their
//! words, which of them also go out by email (one table, [`sends_email`]),
//! and how a failed email backs off.
//!
//! Sellers are told of an order at `order.confirmed`, not `order.placed`: a
//! placed order may still be refused for stock or payment, and a seller told
//! "new order" for an order that then vanishes would start packing for
//! nothing. Confirmed means the stock is held and the payment authorized.

use std::collections::BTreeMap;
use std::time::Duration;

use emporium_schemas::commands::notification::NotificationKind;
use emporium_schemas::events::order::{CancelReason, OrderStatus};
use emporium_schemas::values::{Money, OrderId, ProductId, UserId};

/// One order line as a seller's notification names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub product: ProductId,
    pub seller: UserId,
    pub quantity: u32,
    pub unit_price: Money,
}

/// An event, as far as notifications care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    OrderPlaced { order: OrderId, customer: UserId },
    OrderConfirmed { order: OrderId, customer: UserId, lines: Vec<Line>, total: Money },
    OrderCancelled { order: OrderId, customer: UserId, reason: CancelReason, previous: OrderStatus },
    PaymentCaptured { order: OrderId, amount: Money },
    PaymentRefunded { order: OrderId, amount: Money },
    PaymentVoided { order: OrderId, amount: Money },
    ShipmentCreated { order: OrderId, carrier: String, tracking_number: String },
    ShipmentShipped { order: OrderId, tracking_number: String },
    ShipmentDelivered { order: OrderId },
}

impl Fact {
    /// The order the fact is about.
    pub fn order(&self) -> OrderId {
        match self {
            Fact::OrderPlaced { order, .. }
            | Fact::OrderConfirmed { order, .. }
            | Fact::OrderCancelled { order, .. }
            | Fact::PaymentCaptured { order, .. }
            | Fact::PaymentRefunded { order, .. }
            | Fact::PaymentVoided { order, .. }
            | Fact::ShipmentCreated { order, .. }
            | Fact::ShipmentShipped { order, .. }
            | Fact::ShipmentDelivered { order } => *order,
        }
    }

    /// The order's customer, when the event names them. Payment and
    /// shipping events carry only the order id: their customer is the one
    /// remembered from the order's own events.
    pub fn customer(&self) -> Option<UserId> {
        match self {
            Fact::OrderPlaced { customer, .. }
            | Fact::OrderConfirmed { customer, .. }
            | Fact::OrderCancelled { customer, .. } => Some(*customer),
            _ => None,
        }
    }
}

/// A notification to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub recipient: UserId,
    pub kind: NotificationKind,
    pub title: String,
    pub body: String,
    pub order: Option<OrderId>,
    /// Whether it also goes out by email ([`sends_email`]).
    pub email: bool,
}

/// What to do about a fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Remember the order's customer (if the fact names them) and create the drafts.
    Notify { remember: Option<UserId>, drafts: Vec<Draft> },
    /// The fact needs the order's customer, who is not known yet: it waits
    /// for the order's own events rather than guess, and is decided again,
    /// as if it had just arrived, once they name the customer.
    UnknownOrder(OrderId),
}

/// Which notifications also send an email: the one table. Emailed are
/// those a customer or seller must act on or would look for in their inbox
/// (a confirmation, a new sale, a cancellation, money back, the parcel
/// leaving and arriving); the rest are in-app only.
pub fn sends_email(kind: NotificationKind) -> bool {
    use NotificationKind as K;
    match kind {
        K::OrderConfirmed => true,
        K::NewOrder => true,
        K::OrderCancelled => true,
        K::PaymentCaptured => false,
        K::PaymentRefunded => true,
        K::PaymentVoided => false,
        K::ShipmentCreated => false,
        K::OrderShipped => true,
        K::OrderDelivered => true,
    }
}

/// The notifications `fact` creates, given the order's customer as
/// remembered (`known`); each recipient gets at most one per fact.
pub fn decide(fact: &Fact, known: Option<UserId>) -> Decision {
    let remember = fact.customer();
    let Some(customer) = remember.or(known) else {
        return Decision::UnknownOrder(fact.order());
    };
    let order = fact.order();
    let to_customer = |kind, title: &str, body: String| draft(customer, kind, title, body, order);
    use NotificationKind as K;
    let drafts = match fact {
        Fact::OrderPlaced { .. } => Vec::new(),
        Fact::OrderConfirmed { lines, total, .. } => {
            let count: u32 = lines.iter().map(|line| line.quantity).sum();
            let body = format!(
                "Your order {order} is confirmed: {} for {}. We will tell you when it ships.",
                items(count),
                money(total)
            );
            let mut drafts = vec![to_customer(K::OrderConfirmed, "Order confirmed", body)];
            drafts.extend(seller_drafts(order, customer, lines));
            drafts
        }
        Fact::OrderCancelled { reason, previous, .. } => {
            let money_note = if *previous == OrderStatus::Confirmed {
                "Any amount taken will be refunded."
            } else {
                "Nothing was charged; any hold on your payment method is released."
            };
            let body = format!("Your order {order} was cancelled because {}. {money_note}", reason_in_words(*reason));
            vec![to_customer(K::OrderCancelled, "Order cancelled", body)]
        }
        Fact::PaymentCaptured { amount, .. } => {
            let body = format!("We received your payment of {} for order {order}.", money(amount));
            vec![to_customer(K::PaymentCaptured, "Payment received", body)]
        }
        Fact::PaymentRefunded { amount, .. } => {
            let body = format!("{} for order {order} was refunded to your payment method.", money(amount));
            vec![to_customer(K::PaymentRefunded, "Refund issued", body)]
        }
        Fact::PaymentVoided { amount, .. } => {
            let body = format!("The {} held for order {order} was released; you were not charged.", money(amount));
            vec![to_customer(K::PaymentVoided, "Payment released", body)]
        }
        Fact::ShipmentCreated { carrier, tracking_number, .. } => {
            let body = format!(
                "Order {order} is being packed and will travel with {carrier}, tracking number {tracking_number}."
            );
            vec![to_customer(K::ShipmentCreated, "Shipment on its way to the carrier", body)]
        }
        Fact::ShipmentShipped { tracking_number, .. } => {
            let body = format!("Order {order} has left our warehouse (tracking number {tracking_number}).");
            vec![to_customer(K::OrderShipped, "Order shipped", body)]
        }
        Fact::ShipmentDelivered { .. } => {
            let body = format!("Order {order} was delivered. How was it? You can now review its products.");
            vec![to_customer(K::OrderDelivered, "Order delivered", body)]
        }
    };
    Decision::Notify { remember, drafts }
}

fn draft(recipient: UserId, kind: NotificationKind, title: &str, body: String, order: OrderId) -> Draft {
    Draft { recipient, kind, title: title.to_owned(), body, order: Some(order), email: sends_email(kind) }
}

/// One "new order" per distinct seller, naming only that seller's lines.
/// A seller who bought from themself is the customer, told once already.
fn seller_drafts(order: OrderId, customer: UserId, lines: &[Line]) -> Vec<Draft> {
    let mut by_seller: BTreeMap<UserId, Vec<&Line>> = BTreeMap::new();
    for line in lines.iter().filter(|line| line.seller != customer) {
        by_seller.entry(line.seller).or_default().push(line);
    }
    by_seller
        .into_iter()
        .map(|(seller, lines)| {
            let listed: Vec<String> = lines
                .iter()
                .map(|line| {
                    format!("- {} × product {} at {} each", line.quantity, line.product, money(&line.unit_price))
                })
                .collect();
            let mut body = format!("Order {order} is confirmed and holds your products:\n{}", listed.join("\n"));
            if let Some(subtotal) = subtotal(&lines) {
                body.push_str(&format!("\nYour lines come to {}.", money(&subtotal)));
            }
            draft(seller, NotificationKind::NewOrder, "New order for your products", body, order)
        })
        .collect()
}

/// The lines' sum, when they share one currency and it fits.
fn subtotal(lines: &[&Line]) -> Option<Money> {
    let currency = &lines.first()?.unit_price.currency;
    let mut sum: i64 = 0;
    for line in lines {
        if line.unit_price.currency != *currency {
            return None;
        }
        sum = sum.checked_add(line.unit_price.amount.get().checked_mul(i64::from(line.quantity))?)?;
    }
    Some(Money { amount: sum.try_into().ok()?, currency: currency.clone() })
}

fn items(count: u32) -> String {
    if count == 1 { "1 item".to_owned() } else { format!("{count} items") }
}

/// Why an order was cancelled, in words that finish "cancelled because …".
pub fn reason_in_words(reason: CancelReason) -> &'static str {
    match reason {
        CancelReason::OutOfStock => "some of its items are out of stock",
        CancelReason::PaymentDeclined => "the payment was declined",
        CancelReason::PaymentTimeout => "the payment was not confirmed in time",
        CancelReason::Timeout => "the checkout was not completed in time",
        CancelReason::CustomerRequest => "you asked us to cancel it",
    }
}

/// An amount as people read it: `EUR 25.00`, `JPY 1500`. Minor units per
/// ISO 4217: most currencies have two decimals, these have none or three.
pub fn money(money: &Money) -> String {
    const NO_DECIMALS: &[&str] = &[
        "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF",
    ];
    const THREE_DECIMALS: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
    let code = money.currency.as_str();
    let amount = money.amount.get();
    let decimals = if NO_DECIMALS.contains(&code) {
        0
    } else if THREE_DECIMALS.contains(&code) {
        3
    } else {
        2
    };
    if decimals == 0 {
        return format!("{code} {amount}");
    }
    let scale = 10_i64.pow(decimals);
    format!("{code} {}.{:0width$}", amount / scale, amount % scale, width = decimals as usize)
}

/// An email's text: the notification's body, addressed to its recipient.
pub fn email_text(name: &str, body: &str) -> String {
    format!("Hello {name},\n\n{body}\n\nThank you for shopping with Emporium.\n")
}

/// How long a failed email waits before its next attempt: `first`, doubled
/// per attempt made, at most `max`. It is never given up: an address that
/// keeps failing keeps being tried, `max` apart, with its last error kept.
pub fn retry_delay(attempts: u32, first: Duration, max: Duration) -> Duration {
    let doublings = attempts.saturating_sub(1).min(20);
    first.saturating_mul(1 << doublings).min(max)
}

/// The stored name of a kind (as the API spells it).
pub fn kind_name(kind: NotificationKind) -> &'static str {
    use NotificationKind as K;
    match kind {
        K::OrderConfirmed => "order_confirmed",
        K::NewOrder => "new_order",
        K::OrderCancelled => "order_cancelled",
        K::PaymentCaptured => "payment_captured",
        K::PaymentRefunded => "payment_refunded",
        K::PaymentVoided => "payment_voided",
        K::ShipmentCreated => "shipment_created",
        K::OrderShipped => "order_shipped",
        K::OrderDelivered => "order_delivered",
    }
}

/// Every kind, for parsing stored names back.
pub const KINDS: [NotificationKind; 9] = [
    NotificationKind::OrderConfirmed,
    NotificationKind::NewOrder,
    NotificationKind::OrderCancelled,
    NotificationKind::PaymentCaptured,
    NotificationKind::PaymentRefunded,
    NotificationKind::PaymentVoided,
    NotificationKind::ShipmentCreated,
    NotificationKind::OrderShipped,
    NotificationKind::OrderDelivered,
];

pub fn parse_kind(name: &str) -> Option<NotificationKind> {
    KINDS.into_iter().find(|kind| kind_name(*kind) == name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use emporium_schemas::values::Currency;

    use super::*;
    use NotificationKind as K;

    fn eur(cents: i64) -> Money {
        Money { amount: cents.try_into().unwrap(), currency: Currency::try_from("EUR".to_owned()).unwrap() }
    }

    fn line(seller: UserId, quantity: u32, cents: i64) -> Line {
        Line { product: ProductId::new_v7(), seller, quantity, unit_price: eur(cents) }
    }

    fn drafts(decision: Decision) -> Vec<Draft> {
        match decision {
            Decision::Notify { drafts, .. } => drafts,
            Decision::UnknownOrder(order) => panic!("order {order} unknown"),
        }
    }

    fn kinds_and_recipients(drafts: &[Draft]) -> Vec<(NotificationKind, UserId)> {
        drafts.iter().map(|d| (d.kind, d.recipient)).collect()
    }

    #[test]
    fn given_an_order_placed_when_decided_then_its_customer_is_remembered_and_nobody_is_told_yet() {
        let (order, customer) = (OrderId::new_v7(), UserId::new_v7());
        let decision = decide(&Fact::OrderPlaced { order, customer }, None);
        assert_eq!(decision, Decision::Notify { remember: Some(customer), drafts: Vec::new() });
    }

    #[test]
    fn given_an_order_confirmed_when_decided_then_the_customer_and_each_distinct_seller_hear_once() {
        let (order, customer) = (OrderId::new_v7(), UserId::new_v7());
        let (lamps, books) = (UserId::new_v7(), UserId::new_v7());
        let (lamp, shade, novel) = (line(lamps, 2, 2_500), line(lamps, 1, 900), line(books, 3, 1_200));
        let fact = Fact::OrderConfirmed {
            order,
            customer,
            lines: vec![lamp.clone(), novel.clone(), shade.clone()],
            total: eur(9_500),
        };
        let drafts = drafts(decide(&fact, None));
        let mut expected = vec![(K::OrderConfirmed, customer), (K::NewOrder, lamps), (K::NewOrder, books)];
        expected[1..].sort_by_key(|(_, seller)| *seller);
        assert_eq!(kinds_and_recipients(&drafts), expected);
        assert!(drafts[0].body.contains("6 items for EUR 95.00"), "{}", drafts[0].body);

        let to_lamps = drafts.iter().find(|d| d.recipient == lamps).unwrap();
        assert!(
            to_lamps.body.contains(&lamp.product.to_string()) && to_lamps.body.contains(&shade.product.to_string())
        );
        assert!(!to_lamps.body.contains(&novel.product.to_string()), "a seller sees only their lines");
        assert!(
            to_lamps.body.contains("2 × product") && to_lamps.body.contains("come to EUR 59.00"),
            "{}",
            to_lamps.body
        );
        assert!(drafts.iter().all(|d| d.order == Some(order) && d.email));
    }

    #[test]
    fn given_a_seller_buying_their_own_product_when_confirmed_then_they_hear_once_as_the_customer() {
        let (order, seller) = (OrderId::new_v7(), UserId::new_v7());
        let fact = Fact::OrderConfirmed { order, customer: seller, lines: vec![line(seller, 1, 100)], total: eur(100) };
        assert_eq!(kinds_and_recipients(&drafts(decide(&fact, None))), vec![(K::OrderConfirmed, seller)]);
    }

    #[test]
    fn given_a_cancellation_when_decided_then_the_customer_reads_the_reason_in_words() {
        let (order, customer) = (OrderId::new_v7(), UserId::new_v7());
        let fact =
            Fact::OrderCancelled { order, customer, reason: CancelReason::OutOfStock, previous: OrderStatus::Pending };
        let drafts = drafts(decide(&fact, None));
        assert_eq!(kinds_and_recipients(&drafts), vec![(K::OrderCancelled, customer)]);
        assert!(drafts[0].body.contains("because some of its items are out of stock"), "{}", drafts[0].body);
        assert!(drafts[0].body.contains("Nothing was charged"));

        let after_confirmation = Fact::OrderCancelled {
            order,
            customer,
            reason: CancelReason::CustomerRequest,
            previous: OrderStatus::Confirmed,
        };
        let body = &self::drafts(decide(&after_confirmation, None))[0].body;
        assert!(body.contains("you asked us to cancel it") && body.contains("will be refunded"), "{body}");
    }

    #[test]
    fn given_payment_and_shipping_facts_when_the_order_is_known_then_its_customer_hears_of_each() {
        let (order, customer) = (OrderId::new_v7(), UserId::new_v7());
        let table = [
            (Fact::PaymentCaptured { order, amount: eur(2_500) }, K::PaymentCaptured, "EUR 25.00"),
            (Fact::PaymentRefunded { order, amount: eur(2_500) }, K::PaymentRefunded, "EUR 25.00"),
            (Fact::PaymentVoided { order, amount: eur(2_500) }, K::PaymentVoided, "not charged"),
            (
                Fact::ShipmentCreated { order, carrier: "Parcelly".into(), tracking_number: "PX123".into() },
                K::ShipmentCreated,
                "Parcelly, tracking number PX123",
            ),
            (Fact::ShipmentShipped { order, tracking_number: "PX123".into() }, K::OrderShipped, "PX123"),
            (Fact::ShipmentDelivered { order }, K::OrderDelivered, "review"),
        ];
        for (fact, kind, words) in table {
            let decision = decide(&fact, Some(customer));
            let Decision::Notify { remember: None, drafts } = decision else { panic!("{fact:?}: {decision:?}") };
            assert_eq!(kinds_and_recipients(&drafts), vec![(kind, customer)], "{fact:?}");
            assert!(drafts[0].body.contains(words), "{fact:?}: {}", drafts[0].body);
            assert!(drafts[0].body.contains(&order.to_string()));
        }
    }

    #[test]
    fn given_a_payment_or_shipping_fact_of_an_unknown_order_when_decided_then_it_waits_for_the_order() {
        let order = OrderId::new_v7();
        for fact in [Fact::PaymentCaptured { order, amount: eur(1) }, Fact::ShipmentDelivered { order }] {
            assert_eq!(decide(&fact, None), Decision::UnknownOrder(order));
        }
    }

    #[test]
    fn given_the_email_table_then_the_ones_people_act_on_are_emailed() {
        for kind in
            [K::OrderConfirmed, K::NewOrder, K::OrderCancelled, K::OrderShipped, K::OrderDelivered, K::PaymentRefunded]
        {
            assert!(sends_email(kind), "{kind:?}");
        }
        for kind in [K::PaymentCaptured, K::PaymentVoided, K::ShipmentCreated] {
            assert!(!sends_email(kind), "{kind:?}");
        }
    }

    #[test]
    fn given_amounts_in_several_currencies_when_shown_then_minor_units_are_placed_right() {
        let of = |amount: i64, code: &str| Money {
            amount: amount.try_into().unwrap(),
            currency: Currency::try_from(code.to_owned()).unwrap(),
        };
        assert_eq!(money(&of(2_500, "EUR")), "EUR 25.00");
        assert_eq!(money(&of(5, "USD")), "USD 0.05");
        assert_eq!(money(&of(1_500, "JPY")), "JPY 1500");
        assert_eq!(money(&of(1_234, "KWD")), "KWD 1.234");
    }

    #[test]
    fn given_failed_attempts_when_backing_off_then_the_wait_doubles_up_to_the_ceiling() {
        let (first, max) = (Duration::from_secs(5), Duration::from_secs(60));
        let waits: Vec<u64> = (1..=6).map(|attempts| retry_delay(attempts, first, max).as_secs()).collect();
        assert_eq!(waits, vec![5, 10, 20, 40, 60, 60]);
        assert_eq!(retry_delay(u32::MAX, first, max), max);
    }

    #[test]
    fn given_every_kind_when_stored_then_it_reads_back_as_the_api_spells_it() {
        for kind in KINDS {
            assert_eq!(parse_kind(kind_name(kind)), Some(kind));
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{}\"", kind_name(kind)));
        }
        assert_eq!(parse_kind("gossip"), None);
    }

    #[test]
    fn given_a_name_and_body_when_an_email_is_written_then_it_greets_and_carries_the_body() {
        let text = email_text("Ada", "Your order is confirmed.");
        assert!(text.starts_with("Hello Ada,\n\nYour order is confirmed.\n"));
    }
}
