//! The cart's rules, free of I/O: what each command does to a cart in each
//! state, and the checkout's freeze, completion and thaw.
//!
//! The catalog's answer (does the product exist, at what price) arrives in
//! the command, asked before it reached the actor, so `decide` stays pure.
//! A checkout freezes the cart: while its order is being placed nothing may
//! change, so the order gets exactly the lines the customer saw.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use emporium_actors::{Entity, Versioned};
use emporium_schemas::commands::cart::{CartLine, CartView, CheckoutInFlight};
use emporium_schemas::values::{
    Address, Currency, MinorUnits, Money, NonEmpty, OrderId, PaymentMethod, ProductId, ProductQuantity, Quantity, Text,
    UserId,
};
use serde::{Deserialize, Serialize};

/// Most units of one product in a cart.
pub const MAX_QUANTITY: u32 = 99;
/// Most distinct products in a cart.
pub const MAX_LINES: usize = 50;
/// How many completed checkouts a cart remembers, so a late retry of one is
/// answered with its order instead of checking out the (emptied) cart again.
pub const REMEMBERED_CHECKOUTS: usize = 10;

/// The cart entity: one per customer, keyed by the customer's id.
#[derive(Debug)]
pub struct Cart;

/// A cart as stored: its lines, the checkout that froze it, and the
/// checkouts it completed last.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartState {
    pub lines: Vec<CartLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout: Option<FrozenCheckout>,
    /// Oldest first.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub completed: VecDeque<CompletedCheckout>,
}

/// A product as the catalog describes it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub product_id: ProductId,
    pub name: String,
    pub unit_price: Money,
}

/// A checkout request, with what is derived from it: the order it creates and
/// the digest that tells a retry from another request under the same key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutRequest {
    pub idempotency_key: Text,
    pub request_digest: Text,
    pub order_id: OrderId,
    pub shipping_address: Address,
    pub payment_method: PaymentMethod,
}

/// The checkout a cart is frozen for: everything needed to place its order
/// again after a crash or a timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrozenCheckout {
    pub request: CheckoutRequest,
    pub lines: NonEmpty<ProductQuantity>,
    pub frozen_at: DateTime<Utc>,
}

/// A checkout that made its order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedCheckout {
    pub idempotency_key: Text,
    pub request_digest: Text,
    pub order_id: OrderId,
}

/// What the cart is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CartCommand {
    /// Add `quantity` of a product; `listing` is `None` when the catalog has no such product.
    AddItem {
        product_id: ProductId,
        quantity: Quantity,
        listing: Option<Listing>,
    },
    /// Set a line's quantity (and refresh its name and price from `listing`).
    SetQuantity {
        product_id: ProductId,
        quantity: Quantity,
        listing: Option<Listing>,
    },
    RemoveItem {
        product_id: ProductId,
    },
    /// Freeze the cart for this checkout (or find it frozen or completed for it already).
    BeginCheckout {
        request: CheckoutRequest,
        at: DateTime<Utc>,
    },
    /// The checkout's order exists: empty the cart and remember the checkout.
    CompleteCheckout {
        idempotency_key: Text,
    },
    /// The order was refused: unfreeze the cart, lines kept.
    ThawCheckout {
        idempotency_key: Text,
    },
}

/// What happened to a cart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CartEvent {
    LineAdded(CartLine),
    /// A line's quantity, name or price changed; it replaces the line of its product.
    LineChanged(CartLine),
    LineRemoved(ProductId),
    CheckoutBegun(FrozenCheckout),
    CheckoutCompleted(CompletedCheckout),
    CheckoutThawed,
}

/// Why a command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("a checkout is in progress")]
    CheckoutInProgress,
    #[error("at most {MAX_QUANTITY} of one product fit in a cart")]
    QuantityAboveLimit,
    #[error("a cart holds at most {MAX_LINES} products")]
    TooManyLines,
    #[error("no such product")]
    NoSuchProduct,
    #[error("the product is not in the cart")]
    NotInCart,
    #[error("the cart is empty")]
    EmptyCart,
    #[error("this idempotency key was used for another checkout request")]
    KeyReused,
}

/// Where a checkout stands in a cart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckoutStatus<'a> {
    /// The cart is frozen for it: its order is being placed.
    Frozen(&'a FrozenCheckout),
    /// It completed: its order exists.
    Completed(&'a CompletedCheckout),
    /// The cart knows nothing of it (never seen, thawed, or long forgotten).
    Unknown,
}

impl CartState {
    fn line(&self, product_id: ProductId) -> Option<&CartLine> {
        self.lines.iter().find(|line| line.product_id == product_id)
    }

    /// Where the checkout under `idempotency_key` stands.
    pub fn checkout_status(&self, idempotency_key: &Text) -> CheckoutStatus<'_> {
        if let Some(frozen) = self.checkout.as_ref().filter(|frozen| frozen.request.idempotency_key == *idempotency_key)
        {
            return CheckoutStatus::Frozen(frozen);
        }
        self.completed
            .iter()
            .find(|done| done.idempotency_key == *idempotency_key)
            .map_or(CheckoutStatus::Unknown, CheckoutStatus::Completed)
    }
}

/// A quantity within the cart's limit.
fn within_limit(quantity: u32) -> Result<Quantity, Refusal> {
    if quantity > MAX_QUANTITY {
        return Err(Refusal::QuantityAboveLimit);
    }
    Quantity::try_from(quantity).map_err(|_| Refusal::QuantityAboveLimit)
}

fn line(listing: Listing, quantity: Quantity) -> CartLine {
    CartLine { product_id: listing.product_id, name: listing.name, quantity, unit_price: listing.unit_price }
}

impl Entity for Cart {
    type Id = UserId;
    type State = CartState;
    type Command = CartCommand;
    type Event = CartEvent;
    type Rejection = Refusal;

    fn decide(state: &CartState, command: &CartCommand) -> Result<Vec<CartEvent>, Refusal> {
        use CartCommand as C;
        let editing = matches!(command, C::AddItem { .. } | C::SetQuantity { .. } | C::RemoveItem { .. });
        if editing && state.checkout.is_some() {
            return Err(Refusal::CheckoutInProgress);
        }
        match command {
            C::AddItem { product_id, quantity, listing } => {
                let listing = listing.clone().ok_or(Refusal::NoSuchProduct)?;
                match state.line(*product_id) {
                    Some(existing) => {
                        let quantity = within_limit(existing.quantity.get() + quantity.get())?;
                        Ok(vec![CartEvent::LineChanged(line(listing, quantity))])
                    }
                    None if state.lines.len() >= MAX_LINES => Err(Refusal::TooManyLines),
                    None => Ok(vec![CartEvent::LineAdded(line(listing, within_limit(quantity.get())?))]),
                }
            }
            C::SetQuantity { product_id, quantity, listing } => {
                let existing = state.line(*product_id).ok_or(Refusal::NotInCart)?;
                let quantity = within_limit(quantity.get())?;
                let changed = line(listing.clone().ok_or(Refusal::NoSuchProduct)?, quantity);
                Ok(if changed == *existing { Vec::new() } else { vec![CartEvent::LineChanged(changed)] })
            }
            C::RemoveItem { product_id } => {
                state.line(*product_id).ok_or(Refusal::NotInCart)?;
                Ok(vec![CartEvent::LineRemoved(*product_id)])
            }
            C::BeginCheckout { request, at } => begin_checkout(state, request, *at),
            C::CompleteCheckout { idempotency_key } => Ok(match state.checkout_status(idempotency_key) {
                CheckoutStatus::Frozen(frozen) => vec![CartEvent::CheckoutCompleted(CompletedCheckout {
                    idempotency_key: frozen.request.idempotency_key.clone(),
                    request_digest: frozen.request.request_digest.clone(),
                    order_id: frozen.request.order_id,
                })],
                // Completed already, or thawed meanwhile: nothing is frozen for it.
                CheckoutStatus::Completed(_) | CheckoutStatus::Unknown => Vec::new(),
            }),
            C::ThawCheckout { idempotency_key } => Ok(match state.checkout_status(idempotency_key) {
                CheckoutStatus::Frozen(_) => vec![CartEvent::CheckoutThawed],
                CheckoutStatus::Completed(_) | CheckoutStatus::Unknown => Vec::new(),
            }),
        }
    }

    fn apply(state: &mut CartState, event: &CartEvent) {
        match event {
            CartEvent::LineAdded(line) => state.lines.push(line.clone()),
            CartEvent::LineChanged(changed) => {
                if let Some(line) = state.lines.iter_mut().find(|line| line.product_id == changed.product_id) {
                    *line = changed.clone();
                }
            }
            CartEvent::LineRemoved(product_id) => state.lines.retain(|line| line.product_id != *product_id),
            CartEvent::CheckoutBegun(frozen) => state.checkout = Some(frozen.clone()),
            CartEvent::CheckoutCompleted(done) => {
                state.lines.clear();
                state.checkout = None;
                state.completed.push_back(done.clone());
                while state.completed.len() > REMEMBERED_CHECKOUTS {
                    state.completed.pop_front();
                }
            }
            CartEvent::CheckoutThawed => state.checkout = None,
        }
    }
}

/// A checkout freezes the cart, unless it is a retry: a retry of the frozen
/// checkout resumes it and a retry of a completed one is answered with its
/// order, both without a change (the caller reads which from the state).
fn begin_checkout(state: &CartState, request: &CheckoutRequest, at: DateTime<Utc>) -> Result<Vec<CartEvent>, Refusal> {
    let retry_of =
        |digest: &Text| if *digest == request.request_digest { Ok(Vec::new()) } else { Err(Refusal::KeyReused) };
    match state.checkout_status(&request.idempotency_key) {
        CheckoutStatus::Frozen(frozen) => return retry_of(&frozen.request.request_digest),
        CheckoutStatus::Completed(done) => return retry_of(&done.request_digest),
        CheckoutStatus::Unknown => {}
    }
    if state.checkout.is_some() {
        return Err(Refusal::CheckoutInProgress);
    }
    let lines: Vec<ProductQuantity> = state
        .lines
        .iter()
        .map(|line| ProductQuantity { product_id: line.product_id, quantity: line.quantity })
        .collect();
    let lines = NonEmpty::try_from(lines).map_err(|_| Refusal::EmptyCart)?;
    Ok(vec![CartEvent::CheckoutBegun(FrozenCheckout { request: request.clone(), lines, frozen_at: at })])
}

/// Whether a checkout has been frozen so long that its placement must have
/// been lost (a crash, a timeout): the next command places its order again.
pub fn is_stale(frozen: &FrozenCheckout, now: DateTime<Utc>, freeze_for: Duration) -> bool {
    let freeze_for = TimeDelta::from_std(freeze_for).unwrap_or(TimeDelta::MAX);
    now.signed_duration_since(frozen.frozen_at) >= freeze_for
}

/// The cart as its owner sees it.
pub fn view(cart: &Versioned<CartState>) -> CartView {
    CartView {
        lines: cart.state.lines.clone(),
        totals: totals(&cart.state.lines),
        version: cart.version,
        checkout: cart.state.checkout.as_ref().map(|frozen| CheckoutInFlight { order_id: frozen.request.order_id }),
    }
}

/// Sums per currency, in the order each currency first appears.
fn totals(lines: &[CartLine]) -> Vec<Money> {
    let mut sums: Vec<(Currency, i64)> = Vec::new();
    for line in lines {
        let amount = line.unit_price.amount.get().saturating_mul(i64::from(line.quantity.get()));
        match sums.iter_mut().find(|(currency, _)| *currency == line.unit_price.currency) {
            Some((_, sum)) => *sum = sum.saturating_add(amount),
            None => sums.push((line.unit_price.currency.clone(), amount)),
        }
    }
    // Prices are never negative and the sums saturate, so every sum is a valid amount.
    sums.into_iter()
        .filter_map(|(currency, sum)| Some(Money { amount: MinorUnits::try_from(sum).ok()?, currency }))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use emporium_schemas::values::CountryCode;

    use super::*;

    fn money(amount: i64, currency: &str) -> Money {
        Money { amount: amount.try_into().unwrap(), currency: Currency::try_from(currency.to_owned()).unwrap() }
    }

    fn quantity(n: u32) -> Quantity {
        n.try_into().unwrap()
    }

    fn text(s: &str) -> Text {
        Text::try_from(s.to_owned()).unwrap()
    }

    fn listing(product_id: ProductId, price: i64) -> Listing {
        Listing { product_id, name: "Teapot".to_owned(), unit_price: money(price, "EUR") }
    }

    fn cart_line(product_id: ProductId, n: u32, price: i64) -> CartLine {
        line(listing(product_id, price), quantity(n))
    }

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z").unwrap().to_utc()
    }

    fn request(key: &str, digest: &str) -> CheckoutRequest {
        CheckoutRequest {
            idempotency_key: text(key),
            request_digest: text(digest),
            order_id: OrderId::new_v7(),
            shipping_address: Address {
                name: text("Ada"),
                line1: text("1 Main St"),
                line2: None,
                city: text("Springfield"),
                postal_code: text("12345"),
                country: CountryCode::try_from("US".to_owned()).unwrap(),
            },
            payment_method: PaymentMethod::try_from("tok_visa".to_owned()).unwrap(),
        }
    }

    /// A cart made by `events`, the way the actor would have built it.
    fn given(events: &[CartEvent]) -> CartState {
        let mut state = CartState::default();
        for event in events {
            Cart::apply(&mut state, event);
        }
        state
    }

    #[allow(clippy::needless_pass_by_value)] // reads as a sentence: when(cart, add(..))
    fn when(state: &CartState, command: CartCommand) -> Result<Vec<CartEvent>, Refusal> {
        Cart::decide(state, &command)
    }

    fn add(product_id: ProductId, n: u32) -> CartCommand {
        CartCommand::AddItem { product_id, quantity: quantity(n), listing: Some(listing(product_id, 500)) }
    }

    fn set(product_id: ProductId, n: u32) -> CartCommand {
        CartCommand::SetQuantity { product_id, quantity: quantity(n), listing: Some(listing(product_id, 500)) }
    }

    fn frozen(request: &CheckoutRequest, product_id: ProductId) -> FrozenCheckout {
        let lines = NonEmpty::try_from(vec![ProductQuantity { product_id, quantity: quantity(1) }]).unwrap();
        FrozenCheckout { request: request.clone(), lines, frozen_at: at() }
    }

    fn completed(request: &CheckoutRequest) -> CompletedCheckout {
        CompletedCheckout {
            idempotency_key: request.idempotency_key.clone(),
            request_digest: request.request_digest.clone(),
            order_id: request.order_id,
        }
    }

    #[test]
    fn given_an_empty_cart_when_a_product_is_added_then_a_line_is_added_at_the_catalog_price() {
        let product = ProductId::new_v7();
        assert_eq!(when(&given(&[]), add(product, 2)), Ok(vec![CartEvent::LineAdded(cart_line(product, 2, 500))]));
    }

    #[test]
    fn given_a_line_when_more_of_it_is_added_then_its_quantity_grows_and_its_price_is_refreshed() {
        let product = ProductId::new_v7();
        let cart = given(&[CartEvent::LineAdded(cart_line(product, 2, 450))]);
        assert_eq!(when(&cart, add(product, 3)), Ok(vec![CartEvent::LineChanged(cart_line(product, 5, 500))]));
    }

    #[test]
    fn given_a_line_when_adding_beyond_ninety_nine_then_it_is_refused() {
        let product = ProductId::new_v7();
        let cart = given(&[CartEvent::LineAdded(cart_line(product, 98, 500))]);
        assert!(when(&cart, add(product, 1)).is_ok());
        assert_eq!(when(&cart, add(product, 2)), Err(Refusal::QuantityAboveLimit));
        assert_eq!(when(&given(&[]), add(product, 100)), Err(Refusal::QuantityAboveLimit));
    }

    #[test]
    fn given_fifty_lines_when_another_product_is_added_then_it_is_refused_but_existing_lines_still_grow() {
        let products: Vec<ProductId> = (0..MAX_LINES).map(|_| ProductId::new_v7()).collect();
        let events: Vec<CartEvent> = products.iter().map(|p| CartEvent::LineAdded(cart_line(*p, 1, 500))).collect();
        let cart = given(&events);
        assert_eq!(when(&cart, add(ProductId::new_v7(), 1)), Err(Refusal::TooManyLines));
        assert!(when(&cart, add(products[0], 1)).is_ok());
    }

    #[test]
    fn given_a_product_the_catalog_does_not_know_when_added_then_it_is_refused() {
        let product = ProductId::new_v7();
        let command = CartCommand::AddItem { product_id: product, quantity: quantity(1), listing: None };
        assert_eq!(when(&given(&[]), command), Err(Refusal::NoSuchProduct));
    }

    #[test]
    fn given_a_line_when_its_quantity_is_set_then_it_changes_and_setting_it_again_changes_nothing() {
        let product = ProductId::new_v7();
        let cart = given(&[CartEvent::LineAdded(cart_line(product, 2, 500))]);
        assert_eq!(when(&cart, set(product, 7)), Ok(vec![CartEvent::LineChanged(cart_line(product, 7, 500))]));
        assert_eq!(when(&cart, set(product, 2)), Ok(vec![]));
        assert_eq!(when(&cart, set(product, 100)), Err(Refusal::QuantityAboveLimit));
    }

    #[test]
    fn given_a_line_whose_product_is_gone_when_its_quantity_is_set_then_it_is_refused() {
        let product = ProductId::new_v7();
        let cart = given(&[CartEvent::LineAdded(cart_line(product, 2, 500))]);
        let command = CartCommand::SetQuantity { product_id: product, quantity: quantity(3), listing: None };
        assert_eq!(when(&cart, command), Err(Refusal::NoSuchProduct));
    }

    #[test]
    fn given_a_product_not_in_the_cart_when_it_is_set_or_removed_then_it_is_not_found() {
        let cart = given(&[CartEvent::LineAdded(cart_line(ProductId::new_v7(), 1, 500))]);
        let stranger = ProductId::new_v7();
        assert_eq!(when(&cart, set(stranger, 1)), Err(Refusal::NotInCart));
        assert_eq!(when(&cart, CartCommand::RemoveItem { product_id: stranger }), Err(Refusal::NotInCart));
    }

    #[test]
    fn given_a_line_when_it_is_removed_then_the_others_stay() {
        let (kept, removed) = (ProductId::new_v7(), ProductId::new_v7());
        let mut cart =
            given(&[CartEvent::LineAdded(cart_line(kept, 1, 500)), CartEvent::LineAdded(cart_line(removed, 1, 500))]);
        let events = when(&cart, CartCommand::RemoveItem { product_id: removed }).unwrap();
        assert_eq!(events, vec![CartEvent::LineRemoved(removed)]);
        Cart::apply(&mut cart, &events[0]);
        assert_eq!(cart.lines, vec![cart_line(kept, 1, 500)]);
    }

    #[test]
    fn given_a_cart_with_lines_when_checking_out_then_it_freezes_with_those_lines() {
        let product = ProductId::new_v7();
        let cart = given(&[CartEvent::LineAdded(cart_line(product, 1, 500))]);
        let request = request("k1", "d1");
        let events = when(&cart, CartCommand::BeginCheckout { request: request.clone(), at: at() });
        assert_eq!(events, Ok(vec![CartEvent::CheckoutBegun(frozen(&request, product))]));
    }

    #[test]
    fn given_an_empty_cart_when_checking_out_then_it_is_refused() {
        let command = CartCommand::BeginCheckout { request: request("k1", "d1"), at: at() };
        assert_eq!(when(&given(&[]), command), Err(Refusal::EmptyCart));
    }

    #[test]
    fn given_a_frozen_cart_when_edited_then_every_edit_is_refused() {
        let product = ProductId::new_v7();
        let request = request("k1", "d1");
        let cart = given(&[
            CartEvent::LineAdded(cart_line(product, 1, 500)),
            CartEvent::CheckoutBegun(frozen(&request, product)),
        ]);
        for edit in [
            add(product, 1),
            add(ProductId::new_v7(), 1),
            set(product, 3),
            CartCommand::RemoveItem { product_id: product },
        ] {
            assert_eq!(when(&cart, edit), Err(Refusal::CheckoutInProgress));
        }
    }

    #[test]
    fn given_a_frozen_cart_when_checking_out_again_then_the_same_key_resumes_and_others_are_refused() {
        let product = ProductId::new_v7();
        let first = request("k1", "d1");
        let cart = given(&[
            CartEvent::LineAdded(cart_line(product, 1, 500)),
            CartEvent::CheckoutBegun(frozen(&first, product)),
        ]);
        let again = |request: CheckoutRequest| when(&cart, CartCommand::BeginCheckout { request, at: at() });
        assert_eq!(again(first.clone()), Ok(vec![]));
        assert_eq!(cart.checkout_status(&first.idempotency_key), CheckoutStatus::Frozen(&frozen(&first, product)));
        assert_eq!(again(request("k1", "another body")), Err(Refusal::KeyReused));
        assert_eq!(again(request("k2", "d1")), Err(Refusal::CheckoutInProgress));
    }

    #[test]
    fn given_a_frozen_cart_when_its_order_exists_then_it_empties_and_remembers_the_checkout() {
        let product = ProductId::new_v7();
        let request = request("k1", "d1");
        let cart = given(&[
            CartEvent::LineAdded(cart_line(product, 1, 500)),
            CartEvent::CheckoutBegun(frozen(&request, product)),
        ]);
        let events = when(&cart, CartCommand::CompleteCheckout { idempotency_key: text("k1") }).unwrap();
        assert_eq!(events, vec![CartEvent::CheckoutCompleted(completed(&request))]);
        let mut done = cart.clone();
        Cart::apply(&mut done, &events[0]);
        assert!(done.lines.is_empty() && done.checkout.is_none());
        assert_eq!(done.checkout_status(&request.idempotency_key), CheckoutStatus::Completed(&completed(&request)));
        // Completing twice, or completing another key, changes nothing.
        assert_eq!(when(&done, CartCommand::CompleteCheckout { idempotency_key: text("k1") }), Ok(vec![]));
        assert_eq!(when(&cart, CartCommand::CompleteCheckout { idempotency_key: text("k2") }), Ok(vec![]));
    }

    #[test]
    fn given_a_completed_checkout_when_its_key_comes_again_then_it_is_answered_and_another_body_is_refused() {
        let request = request("k1", "d1");
        let cart = given(&[CartEvent::CheckoutCompleted(completed(&request))]);
        let again = |request: CheckoutRequest| when(&cart, CartCommand::BeginCheckout { request, at: at() });
        assert_eq!(again(request.clone()), Ok(vec![]));
        assert_eq!(again(CheckoutRequest { request_digest: text("d2"), ..request }), Err(Refusal::KeyReused));
    }

    #[test]
    fn given_a_frozen_cart_when_its_order_is_refused_then_it_thaws_with_its_lines() {
        let product = ProductId::new_v7();
        let request = request("k1", "d1");
        let cart = given(&[
            CartEvent::LineAdded(cart_line(product, 1, 500)),
            CartEvent::CheckoutBegun(frozen(&request, product)),
        ]);
        let events = when(&cart, CartCommand::ThawCheckout { idempotency_key: text("k1") }).unwrap();
        assert_eq!(events, vec![CartEvent::CheckoutThawed]);
        let mut thawed = cart.clone();
        Cart::apply(&mut thawed, &events[0]);
        assert_eq!(thawed.lines, cart.lines);
        assert!(when(&thawed, add(product, 1)).is_ok());
        assert_eq!(when(&thawed, CartCommand::ThawCheckout { idempotency_key: text("k1") }), Ok(vec![]));
    }

    #[test]
    fn given_many_checkouts_when_completed_then_only_the_last_few_are_remembered() {
        let requests: Vec<CheckoutRequest> =
            (0..=REMEMBERED_CHECKOUTS).map(|i| request(&format!("k{i}"), "d")).collect();
        let events: Vec<CartEvent> = requests.iter().map(|r| CartEvent::CheckoutCompleted(completed(r))).collect();
        let cart = given(&events);
        assert_eq!(cart.completed.len(), REMEMBERED_CHECKOUTS);
        assert_eq!(cart.checkout_status(&requests[0].idempotency_key), CheckoutStatus::Unknown);
        let last = &requests[REMEMBERED_CHECKOUTS];
        assert_eq!(cart.checkout_status(&last.idempotency_key), CheckoutStatus::Completed(&completed(last)));
    }

    #[test]
    fn given_a_freeze_when_time_passes_then_it_turns_stale_at_the_limit() {
        let frozen = frozen(&request("k1", "d1"), ProductId::new_v7());
        let limit = Duration::from_secs(30);
        assert!(!is_stale(&frozen, at() + TimeDelta::seconds(29), limit));
        assert!(is_stale(&frozen, at() + TimeDelta::seconds(30), limit));
    }

    #[test]
    fn given_lines_in_two_currencies_when_viewed_then_each_currency_has_its_total() {
        let (a, b) = (ProductId::new_v7(), ProductId::new_v7());
        let mut dollars = cart_line(b, 1, 300);
        dollars.unit_price = money(300, "USD");
        let cart = given(&[CartEvent::LineAdded(cart_line(a, 3, 250)), CartEvent::LineAdded(dollars)]);
        let view = view(&Versioned { version: 2, state: cart });
        assert_eq!(view.totals, vec![money(750, "EUR"), money(300, "USD")]);
        assert_eq!(view.version, 2);
        assert!(view.checkout.is_none());
    }
}
