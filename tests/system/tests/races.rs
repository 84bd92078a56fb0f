//! Races through the HTTP API with every service running: many customers
//! after the last units, one cart checked out twice at once, one checkout
//! sent many times at once. Each ends with the system settled and its
//! invariants holding.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use emporium_system::shop::{Shop, status};
use futures::future::join_all;
use serde_json::Value;

/// The status and body of a checkout's answer.
async fn answer(response: reqwest::Response) -> (u16, Value) {
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn thirty_customers_after_the_last_seven_units_leave_seven_confirmed_and_twenty_three_out_of_stock() {
    let shop = Shop::open(7).await;
    // Each customer on an address of their own, as thirty shoppers would be.
    let shop = &shop;
    let customers =
        join_all((0..30).map(|n| async move { shop.stack.shopper_at(&format!("198.51.100.{n}")).await })).await;
    join_all(customers.iter().map(|customer| shop.add_as(customer, 1))).await;

    let orders = join_all(customers.iter().map(|customer| async move {
        let response = shop.checkout_as(customer, "last-units", "tok_visa").await;
        let (code, body) = answer(response).await;
        assert_eq!(code, 202, "{body}");
        (customer, body["order_id"].as_str().unwrap().to_owned())
    }))
    .await;
    shop.stack.settled().await;

    let mut outcomes = Vec::new();
    for (customer, order) in &orders {
        let order = shop.order_as(customer, order).await;
        outcomes.push((status(&order).to_owned(), order["cancel_reason"].as_str().map(str::to_owned)));
    }
    let confirmed = outcomes.iter().filter(|(status, _)| status == "confirmed").count();
    let out_of_stock = outcomes
        .iter()
        .filter(|outcome| **outcome == ("cancelled".to_owned(), Some("out_of_stock".to_owned())))
        .count();
    assert_eq!((confirmed, out_of_stock), (7, 23), "{outcomes:?}");
    let stock = shop.stock().await;
    let levels = ["on_hand", "reserved", "available"].map(|level| stock[level].as_i64());
    assert_eq!(levels, [Some(7), Some(7), Some(0)], "every unit held for the confirmed orders");
}

#[tokio::test]
async fn two_checkouts_of_one_cart_at_once_make_one_order_and_the_other_is_told_why() {
    let shop = Shop::open(20).await;
    // A few rounds, so the two requests meet the cart at different moments.
    for round in 0..5 {
        shop.add(1).await;
        let (a, b) = (format!("tab-a-{round}"), format!("tab-b-{round}"));
        let (first, second) = tokio::join!(shop.checkout_with(&a, "tok_visa"), shop.checkout_with(&b, "tok_visa"));
        let answers = [answer(first).await, answer(second).await];
        let accepted: Vec<&Value> = answers.iter().filter(|(code, _)| *code == 202).map(|(_, body)| body).collect();
        assert_eq!(accepted.len(), 1, "exactly one checkout makes the order: {answers:?}");
        let (code, refusal) = answers.iter().find(|(code, _)| *code != 202).unwrap();
        // In progress (409) while the other holds the cart, or empty (422) once it took the lines.
        match code {
            409 => assert!(refusal["detail"].as_str().unwrap().contains("in progress"), "{refusal}"),
            422 => assert!(refusal["detail"].as_str().unwrap().contains("empty"), "{refusal}"),
            _ => panic!("the other checkout got {code}: {refusal}"),
        }
    }
    shop.stack.settled().await;

    let orders: Value = shop.stack.get_as(&shop.customer, "/api/v1/orders").await.json().await.unwrap();
    let orders = orders["items"].as_array().unwrap();
    assert_eq!(orders.len(), 5, "one order per round: {orders:#?}");
    assert!(
        orders.iter().all(|order| status(order) == "confirmed" && order["lines"][0]["quantity"] == 1),
        "{orders:#?}"
    );
}

#[tokio::test]
async fn one_checkout_sent_twenty_times_at_once_makes_one_order_and_every_answer_names_it() {
    let shop = Shop::open(5).await;
    shop.add(2).await;

    let answers =
        join_all((0..20).map(|_| async { answer(shop.checkout_with("the-one", "tok_visa").await).await })).await;
    let ids: HashSet<&str> = answers
        .iter()
        .map(|(code, body)| {
            assert_eq!(*code, 202, "every request is the same checkout: {body}");
            body["order_id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    shop.stack.settled().await;

    let orders: Value = shop.stack.get_as(&shop.customer, "/api/v1/orders").await.json().await.unwrap();
    let orders = orders["items"].as_array().unwrap();
    assert_eq!(orders.len(), 1, "{orders:#?}");
    assert_eq!((status(&orders[0]), orders[0]["lines"][0]["quantity"].as_i64()), ("confirmed", Some(2)));
    assert_eq!(shop.stock().await["reserved"], 2);
}
