//! Bad events on the real streams, with every service running: on every
//! subject a service consumes, messages that are not JSON, larger than an
//! event may be, or envelopes that break the envelope's schema or contradict
//! their subject. Each lands in the DLQ once per consumer that received it,
//! with that consumer, the subject and the reason; and every consumer goes
//! on: a customer who signs up afterwards buys, is charged, is emailed, gets
//! the parcel and reviews the product, which takes a valid event through
//! each service's every subscription.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use emporium_nats::dlq;
use emporium_schemas::registry::events;
use emporium_schemas::{EntityKey, EventSubject, Partition};
use emporium_system::invariants::DeadLetters;
use emporium_system::shop::Shop;
use emporium_system::{PATIENCE, subscriptions};
use emporium_test_harness::events::{BadEvent, bad_events};
use emporium_test_harness::eventually;
use reqwest::Method;
use serde_json::json;

/// The stack's partition count.
const PARTITIONS: u16 = 1;

#[tokio::test]
async fn bad_events_on_every_consumed_subject_are_dead_lettered_by_each_consumer_which_goes_on() {
    let shop = Shop::open(10).await;
    let stack = &shop.stack;
    let jetstream = async_nats::jetstream::new(stack.nats.client().clone());

    // Every event type of every context some service consumes, bad in every way.
    let subscriptions = subscriptions();
    let mut expected: HashMap<(String, String), BadEvent> = HashMap::new();
    for event_type in events().iter().filter(|e| subscriptions.iter().any(|s| s.context == e.context)) {
        for bad in bad_events(event_type, PARTITIONS) {
            jetstream.publish(bad.subject.clone(), bad.payload.clone().into()).await.unwrap().await.unwrap();
            let key = EntityKey::try_from(EventSubject::parse(&bad.subject).unwrap().key.to_owned()).unwrap();
            for subscription in subscriptions.iter().filter(|s| s.context == event_type.context) {
                let consumer = subscription.durable_name(Partition::of(&key, PARTITIONS));
                expected.insert((consumer, bad.subject.clone()), bad.clone());
            }
        }
    }

    // Afterwards, a valid event through every subscription: a new customer
    // (identity) buys a new product (catalog, inventory), is charged (order,
    // payment) and emailed (notification), gets it (shipping) and may review it.
    let customer_email = format!("late-{}@example.com", uuid::Uuid::now_v7().simple());
    let customer = emporium_system::token(&stack.signed_up(&customer_email, "customer").await, "access_token");
    let product = stack.product(&shop.seller, "Oak bookend", 1_500).await["id"].as_str().unwrap().to_owned();
    stack.stock(&shop.seller, &product, 5).await;
    let add = json!({ "product_id": product, "quantity": 1 });
    assert_eq!(stack.send_as(&customer, Method::POST, "/api/v1/cart/items", &add).await.status(), 200);
    let checkout = shop.checkout_as(&customer, "after-the-bad-events", "tok_visa").await;
    assert_eq!(checkout.status(), 202);
    let order = checkout.json::<serde_json::Value>().await.unwrap()["order_id"].as_str().unwrap().to_owned();
    shop.deliver_as(&customer, &order).await;
    let review = json!({ "rating": 5, "title": "Holds the books", "body": "Heavy enough, and it does not scratch." });
    let reviewed = eventually(PATIENCE, || async {
        let path = format!("/api/v1/products/{product}/reviews");
        stack.send_as(&customer, Method::POST, &path, &review).await.status() == 201
    })
    .await;
    assert!(reviewed, "the catalog never took the delivered order as a verified purchase");
    let emailed = eventually(PATIENCE, || async {
        stack.commerce().smtp.received().iter().any(|mail| mail.to.contains(&customer_email))
    })
    .await;
    assert!(emailed, "notification never emailed the customer who signed up after the bad events");

    // Each bad event is in the DLQ once per consumer, which says why.
    let all_in = eventually(PATIENCE, || async { dlq::list(&jetstream, 2_000).await.unwrap().len() >= expected.len() });
    assert!(all_in.await, "not every bad event reached the DLQ from every consumer");
    let letters = dlq::list(&jetstream, 2_000).await.unwrap();
    for letter in &letters {
        let bad = expected
            .get(&(letter.consumer.clone(), letter.subject.clone()))
            .unwrap_or_else(|| panic!("an unexpected dead letter from {} on {}", letter.consumer, letter.subject));
        assert!(letter.reason.starts_with(bad.reason), "{} by {}: {}", bad.what, letter.consumer, letter.reason);
        assert_eq!(letter.attempts, 1, "{} by {}: dead-lettered at its first delivery", bad.what, letter.consumer);
        assert_eq!(letter.payload.as_ref(), bad.payload.as_slice(), "{}: the original payload", bad.what);
    }
    assert_eq!(letters.len(), expected.len(), "one dead letter per consumer and bad event");
    stack.settled_with(DeadLetters::Exactly(expected.len())).await;
}
