//! Inventory's rules, free of I/O: what a reservation takes, when it is
//! refused, what releasing and shipping give back, who may set stock and to
//! what, and what an order event means for a reservation in a given state.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use emporium_schemas::Principal;
use emporium_schemas::events::inventory::ShortLine;
use emporium_schemas::values::{ProductId, Role, StockLevel, UserId};

/// A product's stock row as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stock {
    pub on_hand: u32,
    pub reserved: u32,
    /// Taken off sale: nothing more may be reserved.
    pub delisted: bool,
}

impl Stock {
    pub fn available(&self) -> u32 {
        self.level().available
    }

    /// The level as clients see it; the table's CHECK keeps reserved within on hand.
    pub fn level(&self) -> StockLevel {
        StockLevel::new(self.on_hand, self.reserved.min(self.on_hand)).unwrap_or_default()
    }
}

/// An order's lines merged per product (an order may name a product twice),
/// in product-id order: the order rows are locked in, so two orders over the
/// same products always lock them in the same order and cannot deadlock.
pub fn merge_lines(lines: impl IntoIterator<Item = (ProductId, u32)>) -> Vec<(ProductId, u32)> {
    emporium_schemas::values::merge_quantities(lines)
}

/// Reserves every line or none. `stock` holds the rows found for the lines'
/// products (an unknown product has none). Returns the short lines when any
/// line cannot be had, naming what was available for each.
pub fn reserve(lines: &[(ProductId, u32)], stock: &BTreeMap<ProductId, Stock>) -> Result<(), Vec<ShortLine>> {
    let short: Vec<ShortLine> = lines
        .iter()
        .filter_map(|(product, requested)| {
            let available = stock.get(product).filter(|s| !s.delisted).map_or(0, Stock::available);
            (available < *requested).then_some(ShortLine { product_id: *product, requested: *requested, available })
        })
        .collect();
    if short.is_empty() { Ok(()) } else { Err(short) }
}

/// Why stock could not be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetStockError {
    #[error("only the product's seller or an admin may set its stock")]
    NotOwner,
    #[error("on hand cannot go below the {reserved} units reserved by orders")]
    BelowReserved { reserved: u32 },
    #[error("on hand may be at most {max}")]
    TooMuch { max: u32 },
}

/// The most units one product may have on hand (it is stored as a 32-bit integer).
pub const MAX_ON_HAND: u32 = i32::MAX as u32;

/// The owner (or an admin) sets on hand, never below what orders hold.
pub fn set_on_hand(principal: &Principal, seller: UserId, stock: Stock, on_hand: u32) -> Result<Stock, SetStockError> {
    if principal.role != Role::Admin && principal.user_id != seller {
        return Err(SetStockError::NotOwner);
    }
    if on_hand > MAX_ON_HAND {
        return Err(SetStockError::TooMuch { max: MAX_ON_HAND });
    }
    if on_hand < stock.reserved {
        return Err(SetStockError::BelowReserved { reserved: stock.reserved });
    }
    Ok(Stock { on_hand, ..stock })
}

/// Where an order's reservation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Never heard of the order.
    Unknown,
    /// Every line is held.
    Held,
    /// It could not be had; nothing is held.
    Rejected,
    /// Given back (cancelled, or expired by the backstop).
    Released,
    /// Left with the shipment: on hand and reserved both fell.
    Shipped,
    /// The order was cancelled before inventory saw it placed: a later
    /// `order.placed` (a replay, or out of order) must reserve nothing.
    CancelledUnseen,
}

impl Reservation {
    pub fn as_str(self) -> &'static str {
        match self {
            Reservation::Unknown => "unknown",
            Reservation::Held => "held",
            Reservation::Rejected => "rejected",
            Reservation::Released => "released",
            Reservation::Shipped => "shipped",
            Reservation::CancelledUnseen => "cancelled_unseen",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "held" => Reservation::Held,
            "rejected" => Reservation::Rejected,
            "released" => Reservation::Released,
            "shipped" => Reservation::Shipped,
            "cancelled_unseen" => Reservation::CancelledUnseen,
            _ => return None,
        })
    }
}

/// What the saga's events ask of inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SagaStep {
    Placed,
    Confirmed,
    Cancelled,
    Shipped,
}

/// What to do about a step, given the reservation's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Try to reserve every line (then `Held` or `Rejected`).
    Reserve,
    /// Stop the backstop: the order will not expire any more.
    MarkConfirmed,
    /// Give the held lines back.
    Release,
    /// Turn the held lines into a deduction from on hand.
    Deduct,
    /// Remember the cancellation so a later `placed` reserves nothing.
    RememberCancelled,
    /// Nothing to change: a duplicate, a replay, or a step with nothing to undo.
    Nothing,
}

/// The reservation's rules for the saga. Each step is idempotent: applied a
/// second time it is `Nothing`.
pub fn decide(state: Reservation, step: SagaStep) -> Action {
    use {Action as A, Reservation as R, SagaStep as S};
    match (state, step) {
        (R::Unknown, S::Placed) => A::Reserve,
        (R::Unknown, S::Cancelled) => A::RememberCancelled,
        (R::Held, S::Confirmed) => A::MarkConfirmed,
        (R::Held, S::Cancelled) => A::Release,
        (R::Held, S::Shipped) => A::Deduct,
        // Placed again: already decided. Confirmed or shipped without a hold:
        // nothing is held to confirm or ship (the order cannot have been
        // confirmed without a hold; a replay of old history lands here).
        (R::Held | R::Rejected | R::Released | R::Shipped | R::CancelledUnseen, S::Placed)
        | (R::Unknown | R::Rejected | R::Released | R::Shipped | R::CancelledUnseen, S::Confirmed | S::Shipped)
        | (R::Rejected | R::Released | R::Shipped | R::CancelledUnseen, S::Cancelled) => A::Nothing,
    }
}

/// When an unconfirmed reservation is given back by the backstop: ten times
/// the order's own deadline after it was placed (the order cancels itself long
/// before, so this only catches orders whose cancellation never arrived),
/// and never sooner than `floor` after placement.
pub fn backstop_expiry(placed_at: DateTime<Utc>, deadline_at: DateTime<Utc>, floor: Duration) -> DateTime<Utc> {
    let deadline = (deadline_at - placed_at).max(TimeDelta::zero());
    let floor = TimeDelta::from_std(floor).unwrap_or(TimeDelta::MAX);
    placed_at + (deadline * 10).max(floor)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn stock(on_hand: u32, reserved: u32) -> Stock {
        Stock { on_hand, reserved, delisted: false }
    }

    #[test]
    fn given_lines_naming_a_product_twice_when_merged_then_they_add_up_in_id_order() {
        let (a, b) = (ProductId::new_v7(), ProductId::new_v7());
        assert_eq!(merge_lines([(b, 1), (a, 2), (b, 3)]), vec![(a, 2), (b, 4)]);
    }

    #[test]
    fn given_enough_of_everything_when_reserving_then_all_lines_are_held() {
        let (a, b) = (ProductId::new_v7(), ProductId::new_v7());
        let rows = BTreeMap::from([(a, stock(5, 3)), (b, stock(1, 0))]);
        assert_eq!(reserve(&[(a, 2), (b, 1)], &rows), Ok(()));
    }

    #[test]
    fn given_one_short_line_when_reserving_then_nothing_is_held_and_the_short_lines_are_named() {
        let (a, b, unknown) = (ProductId::new_v7(), ProductId::new_v7(), ProductId::new_v7());
        let rows = BTreeMap::from([(a, stock(5, 4)), (b, stock(9, 0))]);
        let short = reserve(&[(a, 2), (b, 1), (unknown, 1)], &rows).unwrap_err();
        assert_eq!(
            short,
            vec![
                ShortLine { product_id: a, requested: 2, available: 1 },
                ShortLine { product_id: unknown, requested: 1, available: 0 },
            ]
        );
    }

    #[test]
    fn given_a_delisted_product_when_reserving_then_none_is_available() {
        let a = ProductId::new_v7();
        let rows = BTreeMap::from([(a, Stock { on_hand: 9, reserved: 0, delisted: true })]);
        assert_eq!(reserve(&[(a, 1)], &rows).unwrap_err()[0].available, 0);
    }

    #[test]
    fn given_reservations_when_setting_on_hand_below_them_then_it_is_refused() {
        let seller = UserId::new_v7();
        let owner = Principal { user_id: seller, role: Role::Seller };
        assert_eq!(set_on_hand(&owner, seller, stock(10, 4), 4).unwrap().available(), 0);
        assert_eq!(set_on_hand(&owner, seller, stock(10, 4), 3), Err(SetStockError::BelowReserved { reserved: 4 }));
        assert!(matches!(
            set_on_hand(&owner, seller, stock(0, 0), MAX_ON_HAND + 1),
            Err(SetStockError::TooMuch { .. })
        ));
    }

    #[test]
    fn given_someone_else_when_setting_stock_then_only_admins_may() {
        let seller = UserId::new_v7();
        let stranger = Principal { user_id: UserId::new_v7(), role: Role::Seller };
        let admin = Principal { user_id: UserId::new_v7(), role: Role::Admin };
        assert_eq!(set_on_hand(&stranger, seller, stock(0, 0), 5), Err(SetStockError::NotOwner));
        assert_eq!(set_on_hand(&admin, seller, stock(0, 0), 5).unwrap().on_hand, 5);
    }

    #[test]
    fn given_each_state_when_each_step_arrives_then_the_action_is_as_the_saga_needs() {
        use {Action as A, Reservation as R, SagaStep as S};
        let table = [
            (R::Unknown, S::Placed, A::Reserve),
            (R::Unknown, S::Confirmed, A::Nothing),
            (R::Unknown, S::Cancelled, A::RememberCancelled),
            (R::Unknown, S::Shipped, A::Nothing),
            (R::Held, S::Placed, A::Nothing),
            (R::Held, S::Confirmed, A::MarkConfirmed),
            (R::Held, S::Cancelled, A::Release),
            (R::Held, S::Shipped, A::Deduct),
            (R::Rejected, S::Placed, A::Nothing),
            (R::Rejected, S::Cancelled, A::Nothing),
            (R::Released, S::Cancelled, A::Nothing),
            (R::Released, S::Shipped, A::Nothing),
            (R::Shipped, S::Cancelled, A::Nothing),
            (R::Shipped, S::Shipped, A::Nothing),
            (R::CancelledUnseen, S::Placed, A::Nothing),
        ];
        for (state, step, expected) in table {
            assert_eq!(decide(state, step), expected, "{state:?} + {step:?}");
        }
    }

    #[test]
    fn given_an_order_deadline_when_placed_then_the_backstop_is_ten_times_it() {
        let placed = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().to_utc();
        let deadline = placed + TimeDelta::seconds(30);
        assert_eq!(backstop_expiry(placed, deadline, Duration::ZERO), placed + TimeDelta::seconds(300));
        assert_eq!(backstop_expiry(placed, deadline, Duration::from_secs(3600)), placed + TimeDelta::hours(1));
    }

    #[test]
    fn given_states_when_stored_then_they_read_back() {
        for state in [R::Held, R::Rejected, R::Released, R::Shipped, R::CancelledUnseen] {
            assert_eq!(Reservation::parse(state.as_str()), Some(state));
        }
    }
    use Reservation as R;
}
