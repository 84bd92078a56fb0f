//! The checkout saga end to end, through the HTTP API, with every service of
//! a checkout running for real (catalog, inventory, order, payment against
//! the simulated provider, cart) over real NATS, Postgres and Redis. Each path
//! of DESIGN.md's saga is a test; every one ends with the system settled and
//! its invariants holding (the payment ledger reconciled against the
//! provider's own records among them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use emporium_payment::domain::Operation;
use emporium_payment::provider::RecordState;
use emporium_system::shop::{Shop, address, status, timeline};
use emporium_system::{PATIENCE, problem};
use reqwest::Method;
use serde_json::{Value, json};

/// A shop with the steps and readings of the checkout tests.
struct Checkouts(Shop);

impl std::ops::Deref for Checkouts {
    type Target = Shop;

    fn deref(&self) -> &Shop {
        &self.0
    }
}

async fn shop(on_hand: u32) -> Checkouts {
    Checkouts(Shop::open(on_hand).await)
}

impl Checkouts {
    /// Waits until the product shows `reserved` units held.
    async fn reserved_becomes(&self, reserved: u64) {
        self.stock_when(&format!("reserved never became {reserved}"), |stock| stock["reserved"] == reserved).await;
    }

    /// Buys one, paying with tok_visa, while the provider holds authorizations;
    /// returns (the order id) once this one's is held.
    async fn buy_with_authorization_held(&self) -> String {
        let simulator = &self.stack.commerce().simulator;
        simulator.hold_authorizations();
        let order_id = self.buy(1, "tok_visa").await;
        let held = emporium_test_harness::eventually(PATIENCE, || async { simulator.held() >= 1 }).await;
        assert!(held, "the authorization never reached the provider");
        order_id
    }

    /// Moves order's and payment's clocks on.
    fn advance(&self, by: Duration) {
        self.stack.commerce().clock.advance(by);
    }

    /// How many provider records of `operation` ended in `state`.
    fn provider(&self, operation: Operation, succeeded: bool) -> usize {
        self.stack
            .commerce()
            .simulator
            .records()
            .iter()
            .filter(|record| record.operation == operation)
            .filter(|record| matches!(record.state, RecordState::Succeeded) == succeeded)
            .count()
    }
}

fn payment(order: &Value) -> &str {
    order["payment"]["status"].as_str().unwrap()
}

#[tokio::test]
async fn a_paid_checkout_is_confirmed_and_captured() {
    let shop = shop(10).await;
    let cart = shop.add(2).await;
    assert_eq!(cart["lines"][0]["unit_price"]["amount"], 2_500);
    let key = "first-checkout";
    let response = shop.checkout_with(key, "tok_visa").await;
    assert_eq!(response.status(), 202);
    let order_id = response.json::<Value>().await.unwrap()["order_id"].as_str().unwrap().to_owned();

    // A retry with the same key finds the same order; with another body it is refused.
    let again: Value = shop.checkout_with(key, "tok_visa").await.json().await.unwrap();
    assert_eq!(again["order_id"], order_id.as_str());
    problem(shop.checkout_with(key, "tok_declined").await, 422).await;

    let order = shop.order_when(&order_id, "captured", |o| payment(o) == "captured").await;
    assert_eq!(status(&order), "confirmed");
    assert_eq!(timeline(&order), ["pending", "reserved", "confirmed"]);
    assert_eq!(order["total"], json!({ "amount": 5_000, "currency": "EUR" }));
    assert_eq!(order["lines"][0]["quantity"], 2);
    assert!(order.get("cancel_reason").is_none());

    let cart: Value = shop.stack.get_as(&shop.customer, "/api/v1/cart").await.json().await.unwrap();
    assert_eq!(cart["lines"], json!([]), "the cart is emptied once the order exists");
    shop.reserved_becomes(2).await;
    assert_eq!(shop.provider(Operation::Capture, true), 1);

    // The customer lists it; the seller sees it as a sale, not a purchase; another customer not at all.
    let mine: Value = shop.stack.get_as(&shop.customer, "/api/v1/orders").await.json().await.unwrap();
    assert_eq!(mine["items"][0]["id"], order_id.as_str());
    let sales: Value = shop.stack.get_as(&shop.seller, "/api/v1/seller/orders").await.json().await.unwrap();
    assert_eq!(sales["items"][0]["id"], order_id.as_str());
    let bought: Value = shop.stack.get_as(&shop.seller, "/api/v1/orders").await.json().await.unwrap();
    assert_eq!(bought["items"], json!([]));
    problem(shop.stack.get_as(&shop.customer, "/api/v1/seller/orders").await, 403).await;
    let stranger = shop.stack.access("customer").await;
    problem(shop.stack.get_as(&stranger, &format!("/api/v1/orders/{order_id}")).await, 404).await;
    let theirs: Value = shop.stack.get_as(&stranger, "/api/v1/orders").await.json().await.unwrap();
    assert_eq!(theirs["items"], json!([]));
    shop.stack.settled().await;
}

#[tokio::test]
async fn a_checkout_beyond_the_stock_is_cancelled_out_of_stock() {
    let shop = shop(1).await;
    let order_id = shop.buy(2, "tok_visa").await;
    let order = shop.order_reaching(&order_id, "cancelled").await;
    assert_eq!(order["cancel_reason"], "out_of_stock");
    assert_eq!(payment(&order), "pending");
    assert_eq!(shop.stock().await["reserved"], 0);
    assert_eq!(shop.provider(Operation::Authorize, true), 0);
    shop.stack.settled().await;
}

#[tokio::test]
async fn a_declined_payment_cancels_the_order_and_releases_the_stock() {
    let shop = shop(5).await;
    let order_id = shop.buy(3, "tok_declined").await;
    let order = shop.order_reaching(&order_id, "cancelled").await;
    assert_eq!(order["cancel_reason"], "payment_declined");
    assert_eq!(payment(&order), "failed");
    assert_eq!(timeline(&order), ["pending", "reserved", "cancelled"]);
    shop.reserved_becomes(0).await;
    shop.stack.settled().await;
}

#[tokio::test]
async fn a_provider_that_never_answers_times_the_checkout_out_and_its_late_authorization_is_voided() {
    let shop = shop(5).await;
    let order_id = shop.buy(1, "tok_timeout").await;
    shop.order_reaching(&order_id, "reserved").await;
    shop.reserved_becomes(1).await;

    // The deadline passes with the authorization unanswered.
    shop.advance(Duration::from_secs(31));
    let order = shop.order_reaching(&order_id, "cancelled").await;
    assert_eq!(order["cancel_reason"], "payment_timeout");
    shop.reserved_becomes(0).await;

    // The provider authorizes after all; payment finds it by its key and voids it.
    shop.advance(Duration::from_secs(120));
    let order = shop.order_when(&order_id, "voided", |o| payment(o) == "voided").await;
    assert_eq!(status(&order), "cancelled");
    assert_eq!(shop.provider(Operation::Authorize, true), 1);
    assert_eq!(shop.provider(Operation::Void, true), 1);
    assert_eq!(shop.provider(Operation::Capture, true), 0);
    shop.stack.settled().await;
}

#[tokio::test]
async fn a_customer_cancels_before_shipment_and_gets_the_stock_released_and_the_money_back() {
    let shop = shop(5).await;
    let order_id = shop.buy(2, "tok_visa").await;
    shop.order_when(&order_id, "captured", |o| payment(o) == "captured").await;

    let response = shop.cancel(&order_id).await;
    assert_eq!(response.status(), 200);
    let cancelled: Value = response.json().await.unwrap();
    assert_eq!((status(&cancelled), cancelled["cancel_reason"].as_str()), ("cancelled", Some("customer_request")));

    let order = shop.order_when(&order_id, "refunded", |o| payment(o) == "refunded").await;
    assert_eq!(timeline(&order), ["pending", "reserved", "confirmed", "cancelled"]);
    shop.reserved_becomes(0).await;
    assert_eq!(shop.provider(Operation::Refund, true), 1);

    // Cancelling again changes nothing; a seller may not cancel it.
    assert_eq!(shop.cancel(&order_id).await.status(), 200);
    problem(shop.cancel_as(&shop.seller, &order_id).await, 403).await;
    shop.stack.settled().await;
}

#[tokio::test]
async fn a_capture_that_fails_twice_succeeds_on_the_third_attempt() {
    let shop = shop(5).await;
    let order_id = shop.buy(1, "tok_capture_flaky").await;
    shop.order_reaching(&order_id, "confirmed").await;
    // Retries are due by the payment's clock: move it on until the capture lands.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let order = shop.order(&order_id).await;
        if payment(&order) == "captured" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never captured: {order:#}");
        shop.advance(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(shop.provider(Operation::Capture, false), 2, "two failed captures");
    assert_eq!(shop.provider(Operation::Capture, true), 1, "then one");
    shop.stack.settled().await;
}

/// Cancel racing confirm: the authorization is held at the provider while the
/// customer cancels, then let through (and the other way round). Both end in
/// one consistent state: cancelled, stock released, no money kept.
#[tokio::test]
async fn a_cancel_that_overtakes_the_authorization_ends_cancelled_with_the_authorization_voided() {
    let shop = shop(5).await;
    let order_id = shop.buy_with_authorization_held().await;

    assert_eq!(shop.cancel(&order_id).await.status(), 200);
    shop.stack.commerce().simulator.release_authorizations();

    let order = shop.order_when(&order_id, "voided", |o| payment(o) == "voided").await;
    assert_eq!((status(&order), order["cancel_reason"].as_str()), ("cancelled", Some("customer_request")));
    assert!(!timeline(&order).contains(&"confirmed"), "{order:#}");
    shop.reserved_becomes(0).await;
    assert_eq!(shop.provider(Operation::Capture, true), 0);
    shop.stack.settled().await;
}

#[tokio::test]
async fn a_cancel_that_follows_the_authorization_ends_cancelled_with_the_payment_undone() {
    let shop = shop(5).await;
    let order_id = shop.buy_with_authorization_held().await;
    shop.stack.commerce().simulator.release_authorizations();
    shop.order_reaching(&order_id, "confirmed").await;

    assert_eq!(shop.cancel(&order_id).await.status(), 200);
    let order = shop.order_when(&order_id, "voided or refunded", |o| matches!(payment(o), "voided" | "refunded")).await;
    assert_eq!((status(&order), order["cancel_reason"].as_str()), ("cancelled", Some("customer_request")));
    shop.reserved_becomes(0).await;
    shop.stack.settled().await;
}

#[tokio::test]
async fn checkout_needs_a_key_and_a_cart_with_lines() {
    let shop = shop(5).await;
    let no_key = shop
        .stack
        .request(Method::POST, "/api/v1/cart/checkout")
        .bearer_auth(&shop.customer)
        .json(&json!({ "shipping_address": address(), "payment_method": "tok_visa" }))
        .send()
        .await
        .unwrap();
    problem(no_key, 400).await;
    problem(shop.checkout_with("empty-cart", "tok_visa").await, 422).await;
    let anonymous = shop.stack.request(Method::GET, "/api/v1/cart").send().await.unwrap();
    problem(anonymous, 401).await;
    shop.stack.settled().await;
}
