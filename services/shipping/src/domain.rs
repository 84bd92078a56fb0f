//! Shipping's rules, free of I/O: which shipment an order gets, what its
//! tracking number looks like, what an order event does to a shipment, and
//! which carrier move is legal in which status.

use emporium_schemas::Seq;
use emporium_schemas::commands::order::ShipmentStatus;
use emporium_schemas::values::{OrderId, ShipmentId};
use uuid::Uuid;

/// The namespace of shipment ids: an order's shipment id is the UUIDv5 of its
/// order id under it, so however often `order.confirmed` arrives, the order
/// can only ever have this one shipment.
const SHIPMENT_NAMESPACE: Uuid = uuid::uuid!("6d0c4f1a-8b3e-5a27-9f61-2c7e4d9b0a35");

/// The one shipment `order` can have.
pub fn shipment_id(order: OrderId) -> ShipmentId {
    ShipmentId::from_uuid(Uuid::new_v5(&SHIPMENT_NAMESPACE, order.as_uuid().as_bytes()))
}

/// The highest serial a tracking number can carry (eight digits).
pub const MAX_SERIAL: u32 = 99_999_999;

/// A tracking number in the UPU S10 form parcels carry worldwide: two letters
/// of service, eight digits of serial, a check digit, two letters of country.
/// `ZZ` is the ISO 3166 code reserved for "no country": this carrier is not a
/// real one. The serial comes from a database sequence, so no two shipments
/// share a number (a hash of the id would collide within a few thousand).
pub fn tracking_number(serial: u32) -> Option<String> {
    (serial <= MAX_SERIAL).then(|| format!("EP{serial:08}{}ZZ", s10_check_digit(serial)))
}

/// The S10 check digit: the serial's digits weighted 8 6 4 2 3 5 9 7, then
/// 11 minus the sum modulo 11, where 10 becomes 0 and 11 becomes 5.
fn s10_check_digit(serial: u32) -> u32 {
    const WEIGHTS: [u32; 8] = [8, 6, 4, 2, 3, 5, 9, 7];
    let mut digits = [0_u32; 8];
    let mut rest = serial;
    for digit in digits.iter_mut().rev() {
        *digit = rest % 10;
        rest /= 10;
    }
    let sum: u32 = digits.iter().zip(WEIGHTS).map(|(d, w)| d * w).sum();
    match 11 - sum % 11 {
        10 => 0,
        11 => 5,
        check => check,
    }
}

/// The shipment's version after reaching `status`: the `seq` of the event
/// that announced it (created 1, shipped 2, delivered 3, cancelled 2).
pub fn version(status: ShipmentStatus) -> Seq {
    let created = Seq::FIRST;
    match status {
        ShipmentStatus::Created => created,
        ShipmentStatus::Shipped | ShipmentStatus::Cancelled => created.next(),
        ShipmentStatus::Delivered => created.next().next(),
    }
}

/// What shipping knows of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Nothing yet.
    Nothing,
    /// Its cancellation came before its confirmation (out of order, or a
    /// replay): a later `order.confirmed` must create nothing.
    CancelledFirst,
    /// Its shipment, in this status.
    Shipment(ShipmentStatus),
}

/// The order events that concern shipping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStep {
    Confirmed,
    Cancelled,
}

/// What to do about an order event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderAction {
    /// Create the shipment (`shipping.created`).
    Create,
    /// Cancel the shipment that was not yet handed over (`shipping.cancelled`).
    Cancel,
    /// Remember the cancellation so the confirmation, when it comes, creates nothing.
    RememberCancelled,
    /// The parcel already left: it stays as it is. The order refuses a
    /// cancellation after shipping, so only a crossing of the two gets here;
    /// worth a warning for an operator.
    TooLateToCancel,
    /// A duplicate or a replay: nothing changes.
    Nothing,
}

/// What `step` does given what shipping knows of the order. Each step is
/// idempotent: seen a second time it is `Nothing`.
pub fn on_order(known: Known, step: OrderStep) -> OrderAction {
    use {Known as K, OrderAction as A, OrderStep as O, ShipmentStatus as S};
    match (known, step) {
        (K::Nothing, O::Confirmed) => A::Create,
        (K::Nothing, O::Cancelled) => A::RememberCancelled,
        (K::Shipment(S::Created), O::Cancelled) => A::Cancel,
        (K::Shipment(S::Shipped | S::Delivered), O::Cancelled) => A::TooLateToCancel,
        (K::CancelledFirst | K::Shipment(_), O::Confirmed)
        | (K::CancelledFirst | K::Shipment(S::Cancelled), O::Cancelled) => A::Nothing,
    }
}

/// A carrier's report about a parcel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// It took the parcel.
    Ship,
    /// It delivered the parcel.
    Deliver,
}

impl Move {
    /// The status the move leads to.
    pub fn target(self) -> ShipmentStatus {
        match self {
            Move::Ship => ShipmentStatus::Shipped,
            Move::Deliver => ShipmentStatus::Delivered,
        }
    }
}

/// What a legal move does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveOutcome {
    /// The shipment reaches the move's status: announce it.
    Advance(ShipmentStatus),
    /// The shipment made this move already: a carrier's retry, answered with
    /// the shipment as it is and announced nowhere.
    AlreadyDone,
}

/// Why a move was refused (409).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoveError {
    #[error("a cancelled shipment cannot be {}", past(*.0))]
    Cancelled(Move),
    #[error("a shipment must be shipped before it is delivered")]
    NotShipped,
    #[error("a delivered shipment cannot be shipped again")]
    AlreadyDelivered,
}

fn past(action: Move) -> &'static str {
    match action {
        Move::Ship => "shipped",
        Move::Deliver => "delivered",
    }
}

/// The carrier's moves: created → shipped → delivered, nothing after a
/// cancellation, and the move already made answered as done.
pub fn decide_move(status: ShipmentStatus, action: Move) -> Result<MoveOutcome, MoveError> {
    use {Move as M, MoveOutcome as O, ShipmentStatus as S};
    match (status, action) {
        (S::Created, M::Ship) | (S::Shipped, M::Deliver) => Ok(O::Advance(action.target())),
        (S::Shipped, M::Ship) | (S::Delivered, M::Deliver) => Ok(O::AlreadyDone),
        (S::Created, M::Deliver) => Err(MoveError::NotShipped),
        (S::Delivered, M::Ship) => Err(MoveError::AlreadyDelivered),
        (S::Cancelled, _) => Err(MoveError::Cancelled(action)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    use {Known as K, ShipmentStatus as S};

    #[test]
    fn given_an_order_when_its_shipment_id_is_derived_twice_then_it_is_the_same_and_another_orders_differs() {
        let (order, other) = (OrderId::new_v7(), OrderId::new_v7());
        assert_eq!(shipment_id(order), shipment_id(order));
        assert_ne!(shipment_id(order), shipment_id(other));
        assert_eq!(shipment_id(order).as_uuid().get_version_num(), 5);
    }

    #[test]
    fn given_serials_when_turned_into_tracking_numbers_then_they_carry_the_s10_check_digit() {
        // The UPU's own worked example (AA473124829GB): serial 47312482 has check digit 9.
        assert_eq!(tracking_number(47_312_482).unwrap(), "EP473124829ZZ");
        // Sum 0: 11 - 0 = 11, which S10 writes as 5.
        assert_eq!(tracking_number(0).unwrap(), "EP000000005ZZ");
        // Sum 1·7 = 7 → 4.
        assert_eq!(tracking_number(1).unwrap(), "EP000000014ZZ");
        assert_eq!(tracking_number(MAX_SERIAL).unwrap().len(), 13);
        assert_eq!(tracking_number(MAX_SERIAL + 1), None);
    }

    #[test]
    fn given_each_status_when_announced_then_its_seq_follows_the_contract() {
        assert_eq!([S::Created, S::Shipped, S::Delivered, S::Cancelled].map(|s| version(s).get()), [1, 2, 3, 2]);
    }

    #[test]
    fn given_what_is_known_when_an_order_event_arrives_then_the_shipment_follows() {
        use {OrderAction as A, OrderStep as O};
        let table = [
            (K::Nothing, O::Confirmed, A::Create),
            (K::Nothing, O::Cancelled, A::RememberCancelled),
            (K::CancelledFirst, O::Confirmed, A::Nothing),
            (K::CancelledFirst, O::Cancelled, A::Nothing),
            (K::Shipment(S::Created), O::Confirmed, A::Nothing),
            (K::Shipment(S::Created), O::Cancelled, A::Cancel),
            (K::Shipment(S::Shipped), O::Confirmed, A::Nothing),
            (K::Shipment(S::Shipped), O::Cancelled, A::TooLateToCancel),
            (K::Shipment(S::Delivered), O::Confirmed, A::Nothing),
            (K::Shipment(S::Delivered), O::Cancelled, A::TooLateToCancel),
            (K::Shipment(S::Cancelled), O::Confirmed, A::Nothing),
            (K::Shipment(S::Cancelled), O::Cancelled, A::Nothing),
        ];
        for (given, when, then) in table {
            assert_eq!(on_order(given, when), then, "given {given:?} when {when:?}");
        }
    }

    #[test]
    fn given_each_status_when_the_carrier_moves_then_only_the_next_step_advances() {
        use {Move as M, MoveOutcome as O};
        let table = [
            (S::Created, M::Ship, Ok(O::Advance(S::Shipped))),
            (S::Created, M::Deliver, Err(MoveError::NotShipped)),
            (S::Shipped, M::Ship, Ok(O::AlreadyDone)),
            (S::Shipped, M::Deliver, Ok(O::Advance(S::Delivered))),
            (S::Delivered, M::Ship, Err(MoveError::AlreadyDelivered)),
            (S::Delivered, M::Deliver, Ok(O::AlreadyDone)),
            (S::Cancelled, M::Ship, Err(MoveError::Cancelled(M::Ship))),
            (S::Cancelled, M::Deliver, Err(MoveError::Cancelled(M::Deliver))),
        ];
        for (given, when, then) in table {
            assert_eq!(decide_move(given, when), then, "given {given:?} when {when:?}");
        }
    }

    #[test]
    fn given_a_refused_move_when_explained_then_the_message_names_it() {
        assert_eq!(MoveError::Cancelled(Move::Ship).to_string(), "a cancelled shipment cannot be shipped");
    }
}
