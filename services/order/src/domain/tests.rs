//! Given the events so far, when a command or fact arrives, then these events
//! (or this refusal). The table tests walk every status × every input.

#![allow(clippy::unwrap_used)]

use chrono::TimeZone;

use super::*;

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

fn money(amount: i64) -> Money {
    serde_json::from_value(serde_json::json!({"amount": amount, "currency": "EUR"})).unwrap()
}

fn line(seller: UserId, quantity: u32, price: i64) -> PricedLine {
    PricedLine {
        product_id: emporium_schemas::values::ProductId::new_v7(),
        seller_id: seller,
        quantity: quantity.try_into().unwrap(),
        unit_price: money(price),
    }
}

fn placement(digest: &str) -> Placement {
    let (a, b) = (UserId::new_v7(), UserId::new_v7());
    // The same products every time: a retried checkout asks for the same items.
    let mut lines = vec![line(a, 2, 500), line(b, 1, 250)];
    for (n, line) in (1_u128..).zip(&mut lines) {
        line.product_id = emporium_schemas::values::ProductId::from_uuid(uuid::Uuid::from_u128(n));
    }
    Placement {
        order_id: OrderId::new_v7(),
        customer_id: UserId::new_v7(),
        idempotency_key: "key-1".into(),
        request_digest: digest.into(),
        total: sum(&lines).unwrap(),
        lines: lines.try_into().unwrap(),
        shipping_address: serde_json::from_value(serde_json::json!({
            "name": "Ada", "line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"
        }))
        .unwrap(),
        payment_method: "tok_visa".to_owned().try_into().unwrap(),
        deadline_at: t(30),
    }
}

/// The state after `commands`, each decided and applied in turn.
fn given(commands: &[OrderCommand]) -> OrderState {
    let mut state = OrderState::default();
    for command in commands {
        for event in decide(&state, command).unwrap() {
            apply(&mut state, &event);
        }
    }
    state
}

fn then(state: &OrderState, command: &OrderCommand) -> (Result<Vec<OrderEvent>, Rejection>, OrderState) {
    let outcome = decide(state, command);
    let mut next = state.clone();
    if let Ok(events) = &outcome {
        for event in events {
            apply(&mut next, event);
        }
    }
    (outcome, next)
}

fn order(state: &OrderState) -> &Order {
    state.0.as_ref().unwrap()
}

fn place() -> OrderCommand {
    OrderCommand::Place { placement: Box::new(placement("digest-a")), at: t(0) }
}

fn fact(fact: Fact, seq: u64) -> OrderCommand {
    OrderCommand::Saga { fact, seq, at: t(5) }
}

fn shipment_id() -> ShipmentId {
    ShipmentId::from_uuid(uuid::Uuid::from_u128(7))
}

/// The commands that bring a new order to `status`.
fn history(status: OrderStatus) -> Vec<OrderCommand> {
    let mut commands = vec![place()];
    match status {
        OrderStatus::Pending => {}
        OrderStatus::Reserved => commands.push(fact(Fact::StockReserved, 1)),
        OrderStatus::Confirmed => commands.extend([fact(Fact::StockReserved, 1), fact(Fact::PaymentAuthorized, 1)]),
        OrderStatus::Shipped => commands.extend([
            fact(Fact::StockReserved, 1),
            fact(Fact::PaymentAuthorized, 1),
            fact(Fact::ShipmentCreated(shipment_id()), 1),
            fact(Fact::ShipmentShipped(shipment_id()), 2),
        ]),
        OrderStatus::Delivered => commands.extend([
            fact(Fact::StockReserved, 1),
            fact(Fact::PaymentAuthorized, 1),
            fact(Fact::ShipmentCreated(shipment_id()), 1),
            fact(Fact::ShipmentShipped(shipment_id()), 2),
            fact(Fact::ShipmentDelivered(shipment_id()), 3),
        ]),
        OrderStatus::Cancelled => commands.push(OrderCommand::Cancel { at: t(1) }),
    }
    commands
}

const STATUSES: [OrderStatus; 6] = [
    OrderStatus::Pending,
    OrderStatus::Reserved,
    OrderStatus::Confirmed,
    OrderStatus::Shipped,
    OrderStatus::Delivered,
    OrderStatus::Cancelled,
];

/// What an input should do to an order in a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The order moves to this status.
    Moves(OrderStatus),
    /// Nothing changes (a no-op, acked).
    Nothing,
    /// The status stays, something else (payment or shipment) is recorded.
    Records,
    /// Refused: no history produces this.
    Refused,
}

fn check(status: OrderStatus, input: &OrderCommand, expect: Expect) {
    let state = given(&history(status));
    assert_eq!(order(&state).status, status, "history for {status:?}");
    let (outcome, next) = then(&state, input);
    let label = format!("{status:?} × {input:?}");
    match expect {
        Expect::Moves(to) => {
            assert!(outcome.is_ok(), "{label}: {outcome:?}");
            assert_eq!(order(&next).status, to, "{label}");
            assert_eq!(order(&next).timeline.last().unwrap().status, to, "{label}: timeline");
        }
        Expect::Nothing => assert_eq!(outcome, Ok(Vec::new()), "{label}"),
        Expect::Records => {
            assert!(outcome.as_ref().is_ok_and(|events| !events.is_empty()), "{label}: {outcome:?}");
            assert_eq!(order(&next).status, status, "{label}");
        }
        Expect::Refused => assert!(matches!(outcome, Err(Rejection::Impossible { .. })), "{label}: {outcome:?}"),
    }
}

#[test]
fn every_status_meets_every_fact_as_the_transition_table_says() {
    use Expect::{Moves, Nothing, Records, Refused};
    use OrderStatus::{Cancelled, Confirmed, Delivered, Reserved, Shipped};
    let s = shipment_id();
    // Seq 10 is newer than anything the histories applied.
    #[rustfmt::skip]
    let table: [(Fact, [Expect; 6]); 13] = [
        //                                  Pending              Reserved              Confirmed         Shipped           Delivered         Cancelled
        (Fact::StockReserved,           [Moves(Reserved),     Nothing,              Nothing,          Nothing,          Nothing,          Nothing]),
        (Fact::StockRejected,           [Moves(Cancelled),    Refused,              Refused,          Refused,          Refused,          Nothing]),
        (Fact::StockReleased,           [Nothing,             Nothing,              Nothing,          Nothing,          Nothing,          Nothing]),
        (Fact::PaymentAuthorized,       [Moves(Confirmed),    Moves(Confirmed),     Nothing,          Nothing,          Nothing,          Records]),
        (Fact::PaymentFailed,           [Moves(Cancelled),    Moves(Cancelled),     Refused,          Refused,          Refused,          Records]),
        (Fact::PaymentCaptured,         [Refused,             Refused,              Records,          Records,          Records,          Records]),
        (Fact::PaymentCaptureFailed,    [Refused,             Refused,              Records,          Records,          Records,          Records]),
        (Fact::PaymentVoided,           [Refused,             Refused,              Records,          Records,          Records,          Records]),
        (Fact::PaymentRefunded,         [Refused,             Refused,              Records,          Records,          Records,          Records]),
        (Fact::ShipmentCreated(s),      [Refused,             Refused,              Records,          Nothing,          Nothing,          Records]),
        (Fact::ShipmentShipped(s),      [Refused,             Refused,              Moves(Shipped),   Nothing,          Nothing,          Records]),
        (Fact::ShipmentDelivered(s),    [Refused,             Refused,              Moves(Delivered), Moves(Delivered), Nothing,          Records]),
        (Fact::ShipmentCancelled(s),    [Refused,             Refused,              Records,          Nothing,          Nothing,          Records]),
    ];
    for (fact_, expects) in table {
        for (status, expect) in STATUSES.into_iter().zip(expects) {
            check(status, &fact(fact_, 10), expect);
        }
    }
}

#[test]
fn a_cancel_is_taken_until_the_order_ships() {
    use Expect::{Moves, Nothing};
    let cancel = OrderCommand::Cancel { at: t(6) };
    for status in [OrderStatus::Pending, OrderStatus::Reserved, OrderStatus::Confirmed] {
        check(status, &cancel, Moves(OrderStatus::Cancelled));
        let (_, next) = then(&given(&history(status)), &cancel);
        assert_eq!(order(&next).cancel_reason, Some(CancelReason::CustomerRequest));
    }
    check(OrderStatus::Cancelled, &cancel, Nothing);
    for status in [OrderStatus::Shipped, OrderStatus::Delivered] {
        let (outcome, _) = then(&given(&history(status)), &cancel);
        assert_eq!(outcome, Err(Rejection::TooLateToCancel(status)));
    }
}

#[test]
fn the_deadline_cancels_only_an_unconfirmed_order_and_only_once_due() {
    use Expect::{Moves, Nothing};
    let early = OrderCommand::DeadlineReached { at: t(29) };
    let due = OrderCommand::DeadlineReached { at: t(30) };
    for status in STATUSES {
        check(status, &early, Nothing);
    }
    check(OrderStatus::Pending, &due, Moves(OrderStatus::Cancelled));
    check(OrderStatus::Reserved, &due, Moves(OrderStatus::Cancelled));
    for status in [OrderStatus::Confirmed, OrderStatus::Shipped, OrderStatus::Delivered, OrderStatus::Cancelled] {
        check(status, &due, Nothing);
    }
    let (_, waiting_on_stock) = then(&given(&history(OrderStatus::Pending)), &due);
    assert_eq!(order(&waiting_on_stock).cancel_reason, Some(CancelReason::Timeout));
    let (_, waiting_on_payment) = then(&given(&history(OrderStatus::Reserved)), &due);
    assert_eq!(order(&waiting_on_payment).cancel_reason, Some(CancelReason::PaymentTimeout));
}

#[test]
fn a_placed_order_is_announced_with_its_lines_and_a_pending_timeline() {
    let (outcome, state) = then(&OrderState::default(), &place());
    let events = outcome.unwrap();
    assert!(matches!(events.as_slice(), [OrderEvent::Placed(_)]));
    let order = order(&state);
    assert_eq!(order.status, OrderStatus::Pending);
    assert_eq!(order.total, money(1250));
    assert_eq!(order.seller_ids.len(), 2);
    assert_eq!(order.timeline, vec![TimelineEntry { status: OrderStatus::Pending, at: t(0) }]);
}

#[test]
fn placing_again_with_the_same_body_changes_nothing_and_another_body_is_refused() {
    let state = given(&[place()]);
    let same = OrderCommand::Place { placement: Box::new(placement("digest-a")), at: t(9) };
    assert_eq!(decide(&state, &same), Ok(Vec::new()));
    let other = OrderCommand::Place { placement: Box::new(placement("digest-b")), at: t(9) };
    assert_eq!(decide(&state, &other), Err(Rejection::KeyReused));
}

#[test]
fn finding_an_order_tells_a_retry_from_a_reused_key() {
    let items = placement("digest-a").items();
    let find = |digest: &str, items: &[(emporium_schemas::values::ProductId, u32)]| OrderCommand::Find {
        request_digest: digest.to_owned(),
        items: items.to_vec(),
    };
    assert_eq!(decide(&OrderState::default(), &find("digest-a", &items)), Err(Rejection::NotPlaced));
    let state = given(&[place()]);
    assert_eq!(decide(&state, &find("digest-a", &items)), Ok(Vec::new()));
    assert_eq!(decide(&state, &find("digest-b", &items)), Err(Rejection::KeyReused));
    assert_eq!(decide(&state, &find("digest-a", &items[..1])), Err(Rejection::KeyReused));
}

#[test]
fn the_same_key_and_body_with_another_cart_is_refused() {
    let state = given(&[place()]);
    let mut same_body_other_cart = placement("digest-a");
    same_body_other_cart.lines = vec![line(UserId::new_v7(), 1, 500)].try_into().unwrap();
    let retry = OrderCommand::Place { placement: Box::new(same_body_other_cart), at: t(9) };
    assert_eq!(decide(&state, &retry), Err(Rejection::KeyReused));
}

#[test]
fn nothing_but_placing_reaches_an_order_that_does_not_exist() {
    let nothing = OrderState::default();
    for command in
        [OrderCommand::Cancel { at: t(1) }, OrderCommand::DeadlineReached { at: t(100) }, fact(Fact::StockReserved, 1)]
    {
        assert_eq!(decide(&nothing, &command), Err(Rejection::NotPlaced));
    }
}

#[test]
fn a_fact_no_newer_than_the_last_from_its_source_is_stale() {
    let state = given(&[place(), fact(Fact::StockReserved, 3)]);
    assert_eq!(order(&state).seen.inventory, 3);
    // Older and equal seqs from inventory change nothing, even a rejection.
    assert_eq!(decide(&state, &fact(Fact::StockRejected, 2)), Ok(Vec::new()));
    assert_eq!(decide(&state, &fact(Fact::StockReserved, 3)), Ok(Vec::new()));
    // Payment has its own sequence.
    assert!(!decide(&state, &fact(Fact::PaymentAuthorized, 1)).unwrap().is_empty());
}

#[test]
fn a_late_authorization_does_not_overwrite_a_void() {
    let state = given(&[
        place(),
        fact(Fact::StockReserved, 1),
        OrderCommand::Cancel { at: t(2) },
        fact(Fact::PaymentVoided, 3),
    ]);
    assert_eq!(order(&state).payment, PaymentStatus::Voided);
    assert_eq!(decide(&state, &fact(Fact::PaymentAuthorized, 2)), Ok(Vec::new()));
}

#[test]
fn an_authorization_before_the_reservation_implies_it() {
    let (outcome, state) = then(&given(&[place()]), &fact(Fact::PaymentAuthorized, 1));
    assert!(outcome.is_ok());
    let statuses: Vec<OrderStatus> = order(&state).timeline.iter().map(|entry| entry.status).collect();
    assert_eq!(statuses, [OrderStatus::Pending, OrderStatus::Reserved, OrderStatus::Confirmed]);
    assert_eq!(order(&state).payment, PaymentStatus::Authorized);
}

#[test]
fn a_delivery_before_the_shipment_left_implies_it() {
    let state = given(&history(OrderStatus::Confirmed));
    let (_, state) = then(&state, &fact(Fact::ShipmentDelivered(shipment_id()), 4));
    let statuses: Vec<OrderStatus> = order(&state).timeline.iter().map(|entry| entry.status).collect();
    assert_eq!(statuses.last_chunk::<2>(), Some(&[OrderStatus::Shipped, OrderStatus::Delivered]));
}

#[test]
fn a_cancellation_tells_what_the_order_left() {
    let state = given(&history(OrderStatus::Confirmed));
    let events = decide(&state, &OrderCommand::Cancel { at: t(7) }).unwrap();
    let [OrderEvent::Cancelled { public, .. }] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!(public.previous_status, OrderStatus::Confirmed);
    assert_eq!(public.reason, CancelReason::CustomerRequest);
}

fn as_(user: UserId, role: Role) -> Principal {
    Principal { user_id: user, role }
}

#[test]
fn customers_see_their_own_orders_sellers_their_own_lines_admins_everything() {
    let state = given(&[place()]);
    let order = order(&state);
    let seller = order.lines.as_slice()[0].seller_id;
    let whole = view(order, &as_(order.customer_id, Role::Customer)).unwrap();
    assert_eq!(whole.lines.len(), 2);
    assert_eq!(whole.total, money(1250));
    assert_eq!(view(order, &as_(UserId::new_v7(), Role::Admin)).unwrap(), whole);
    assert_eq!(view(order, &as_(UserId::new_v7(), Role::Customer)), None);
    assert_eq!(view(order, &as_(UserId::new_v7(), Role::Seller)), None);
    let theirs = view(order, &as_(seller, Role::Seller)).unwrap();
    assert_eq!(theirs.lines.len(), 1);
    assert_eq!(theirs.total, money(1000));
    assert!(may_cancel(order, &as_(order.customer_id, Role::Customer)));
    assert_eq!(Viewer::of(&as_(seller, Role::Seller), true), Some(Viewer::Seller(seller)));
    assert_eq!(Viewer::of(&as_(seller, Role::Seller), false), Some(Viewer::Customer(seller)));
    assert_eq!(Viewer::of(&as_(seller, Role::Customer), true), None);
    assert_eq!(Viewer::of(&as_(seller, Role::Admin), false), Some(Viewer::Admin));
    assert!(!may_cancel(order, &as_(seller, Role::Seller)));
}

#[test]
fn sums_refuse_mixed_currencies() {
    let seller = UserId::new_v7();
    let mut dollars = line(seller, 1, 100);
    dollars.unit_price.currency = "USD".to_owned().try_into().unwrap();
    assert_eq!(sum(&[line(seller, 1, 100), dollars]), None);
    assert_eq!(sum(&[line(seller, 3, 100)]), Some(money(300)));
}
