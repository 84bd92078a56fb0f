//! Notifications through the HTTP API with every service running: a
//! checkout tells its customer each step (newest first, with the unread
//! count) and its seller of the new order, by email too (at a test SMTP
//! server); reading lowers the count; other people's notifications are not
//! found; a refused checkout tells the customer why and the seller nothing;
//! and replayed events add neither a notification nor an email.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_nats::HeaderMap;
use emporium_schemas::events::order::{OrderConfirmed, OrderPlaced};
use emporium_schemas::events::payment::PaymentCaptured;
use emporium_schemas::events::shipping::ShippingCreated;
use emporium_schemas::registry::EventType;
use emporium_schemas::{EntityKey, Event, Partition};
use emporium_system::shop::Shop;
use emporium_system::{PATIENCE, problem, read_until};
use emporium_test_harness::smtp::ReceivedMail;
use reqwest::Method;
use serde_json::{Value, json};

/// A shop with 10 in stock, read through its notifications and emails.
struct Inbox(Shop);

impl std::ops::Deref for Inbox {
    type Target = Shop;

    fn deref(&self) -> &Shop {
        &self.0
    }
}

async fn shop() -> Inbox {
    Inbox(Shop::open(10).await)
}

fn kinds(page: &Value) -> Vec<&str> {
    page["items"].as_array().unwrap().iter().map(|n| n["kind"].as_str().unwrap()).collect()
}

impl Inbox {
    async fn page(&self, who: &str, query: &str) -> Value {
        let response = self.stack.get_as(who, &format!("/api/v1/notifications{query}")).await;
        assert_eq!(response.status(), 200, "listing notifications");
        response.json().await.unwrap()
    }

    /// `who`'s notifications once they hold every one of `wanted` kinds.
    async fn page_with(&self, who: &str, wanted: &[&str]) -> Value {
        read_until(
            &format!("never got {wanted:?}"),
            || self.page(who, ""),
            |page| wanted.iter().all(|kind| kinds(page).contains(kind)),
        )
        .await
    }

    async fn read(&self, who: &str, id: &str) -> reqwest::Response {
        self.stack.send_as(who, Method::POST, &format!("/api/v1/notifications/{id}/read"), &json!({})).await
    }

    /// The emails at the SMTP server once there are `count`.
    async fn mails(&self, count: usize) -> Vec<ReceivedMail> {
        let smtp = &self.stack.commerce().smtp;
        let arrived = emporium_test_harness::eventually(PATIENCE, || async { smtp.received().len() >= count }).await;
        assert!(arrived, "{count} emails never arrived: {:#?}", smtp.received());
        smtp.received()
    }

    /// Publishes the order's `event_type` event again, as a replay after
    /// JetStream's duplicate window looks: the same bytes under a new
    /// `Nats-Msg-Id`. Waits until notification's consumer has acked it.
    async fn replay(&self, order: &str, event_type: EventType) {
        let jetstream = async_nats::jetstream::new(self.stack.nats.client().clone());
        let key = EntityKey::from(uuid::Uuid::parse_str(order).unwrap());
        let partition = Partition::of(&key, 1);
        let stream_name = emporium_nats::topology::event_stream(event_type.context);
        let stream = jetstream.get_stream(&stream_name).await.unwrap();
        let original = stream.get_last_raw_message_by_subject(&event_type.subject(partition, &key)).await.unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("replay-{}", uuid::Uuid::now_v7()).as_str());
        let ack = jetstream
            .publish_with_headers(original.subject.to_string(), headers, original.payload.clone())
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(!ack.duplicate, "JetStream took the replay for a duplicate");
        let durable = format!("{}-{}-{partition}", emporium_notification::SERVICE, event_type.context);
        let consumed = emporium_test_harness::eventually(PATIENCE, || async {
            stream.consumer_info(&durable).await.unwrap().ack_floor.stream_sequence >= ack.sequence
        })
        .await;
        assert!(consumed, "{durable} never acked the replay of {}", event_type.type_name);
    }

    async fn stored(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(self.stack.commerce().notification_db.pool()).await.unwrap()
    }
}

#[tokio::test]
async fn a_checkout_tells_the_customer_each_step_newest_first_and_the_seller_of_the_new_order() {
    let shop = shop().await;
    let order = shop.buy(2, "tok_visa").await;
    shop.page_with(&shop.customer, &["order_confirmed", "payment_captured", "shipment_created"]).await;
    let (admin, shipment) = (shop.stack.admin().await, shop.shipment(&order).await);
    shop.report(&admin, &shipment, "ship").await;
    shop.page_with(&shop.customer, &["order_shipped"]).await;
    shop.report(&admin, &shipment, "deliver").await;

    let page = shop.page_with(&shop.customer, &["order_delivered"]).await;
    let newest = kinds(&page);
    assert_eq!(&newest[..2], ["order_delivered", "order_shipped"], "newest first");
    let mut earlier = newest[2..].to_vec();
    earlier.sort_unstable();
    assert_eq!(earlier, ["order_confirmed", "payment_captured", "shipment_created"]);
    assert_eq!(page["unread"], 5);
    let items = page["items"].as_array().unwrap();
    let times: Vec<&str> = items.iter().map(|n| n["created_at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|pair| pair[0] >= pair[1]), "{times:?}");
    assert!(items.iter().all(|n| n["order_id"] == order.as_str() && n.get("read_at").is_none()));
    assert!(items[0]["body"].as_str().unwrap().contains("review"), "{}", items[0]["body"]);
    let confirmed = items.iter().find(|n| n["kind"] == "order_confirmed").unwrap();
    assert_eq!(confirmed["title"], "Order confirmed");
    assert!(confirmed["body"].as_str().unwrap().contains("2 items for EUR 50.00"), "{}", confirmed["body"]);

    // The seller hears of the sale (their lines), not of the customer's parcel.
    let sold = shop.page_with(&shop.seller, &["new_order"]).await;
    assert_eq!(kinds(&sold), ["new_order"]);
    let body = sold["items"][0]["body"].as_str().unwrap();
    assert!(body.contains(&shop.product) && body.contains("2 × product"), "{body}");

    // Emails: the confirmation and the seller's new order, then shipped and delivered.
    let mails = shop.mails(4).await;
    let mut sent: Vec<(String, String)> =
        mails.iter().map(|m| (m.to[0].clone(), m.header("Subject").unwrap())).collect();
    sent.sort();
    let mut expected = vec![
        (shop.customer_email.clone(), "Order confirmed".to_owned()),
        (shop.customer_email.clone(), "Order delivered".to_owned()),
        (shop.customer_email.clone(), "Order shipped".to_owned()),
        (shop.seller_email.clone(), "New order for your products".to_owned()),
    ];
    expected.sort();
    assert_eq!(sent, expected);
    let confirmation = mails.iter().find(|m| m.header("Subject").as_deref() == Some("Order confirmed")).unwrap();
    assert!(confirmation.body().starts_with("Hello Test User,"), "{}", confirmation.body());
    assert!(confirmation.body().contains(&order), "{}", confirmation.body());
    shop.stack.settled().await;
}

#[tokio::test]
async fn reading_lowers_the_unread_count_and_someone_elses_notification_is_not_found() {
    let shop = shop().await;
    shop.buy(1, "tok_visa").await;
    let page = shop.page_with(&shop.customer, &["order_confirmed", "payment_captured", "shipment_created"]).await;
    assert_eq!(page["unread"], 3);
    let first = page["items"][0]["id"].as_str().unwrap().to_owned();

    let response = shop.read(&shop.customer, &first).await;
    assert_eq!(response.status(), 200);
    let read: Value = response.json().await.unwrap();
    assert_eq!(read["id"], first.as_str());
    let read_at = read["read_at"].as_str().unwrap().to_owned();
    assert_eq!(shop.page(&shop.customer, "").await["unread"], 2);
    let again: Value = shop.read(&shop.customer, &first).await.json().await.unwrap();
    assert_eq!(again["read_at"], read_at.as_str(), "reading twice changes nothing");
    assert_eq!(shop.page(&shop.customer, "").await["unread"], 2);

    let unread = shop.page(&shop.customer, "?unread_only=true").await;
    assert_eq!(unread["items"].as_array().unwrap().len(), 2);
    assert!(unread["items"].as_array().unwrap().iter().all(|n| n["id"] != first.as_str()));
    let one = shop.page(&shop.customer, "?limit=1").await;
    assert_eq!(one["items"].as_array().unwrap().len(), 1);
    let rest = shop.page(&shop.customer, &format!("?limit=5&cursor={}", one["next_cursor"].as_str().unwrap())).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 2);
    assert!(rest.get("next_cursor").is_none());

    // Not the seller's, nor anyone's without a token; nonsense is named.
    problem(shop.read(&shop.seller, &first).await, 404).await;
    problem(shop.read(&shop.seller, &uuid::Uuid::now_v7().to_string()).await, 404).await;
    problem(shop.stack.request(Method::GET, "/api/v1/notifications").send().await.unwrap(), 401).await;
    let anonymous = shop.stack.request(Method::POST, &format!("/api/v1/notifications/{first}/read")).send().await;
    problem(anonymous.unwrap(), 401).await;
    for query in ["?limit=0", "?limit=500", "?unread_only=perhaps", "?cursor=yesterday"] {
        let field = query[1..].split('=').next().unwrap();
        assert_eq!(
            problem(shop.stack.get_as(&shop.customer, &format!("/api/v1/notifications{query}")).await, 422).await["field"],
            field
        );
    }
    assert_eq!(shop.page(&shop.customer, "").await["unread"], 2, "the seller's attempts changed nothing");
    shop.stack.settled().await;
}

#[tokio::test]
async fn a_declined_checkout_tells_the_customer_why_and_the_seller_nothing() {
    let shop = shop().await;
    shop.buy(1, "tok_declined").await;
    let page = shop.page_with(&shop.customer, &["order_cancelled"]).await;
    let cancelled = &page["items"][0];
    assert!(cancelled["body"].as_str().unwrap().contains("because the payment was declined"), "{cancelled}");
    let mails = shop.mails(1).await;
    assert_eq!(
        (mails[0].to[0].as_str(), mails[0].header("Subject").unwrap()),
        (shop.customer_email.as_str(), "Order cancelled".to_owned())
    );

    // Sellers are told at confirmation, and this order never was.
    assert_eq!(shop.page(&shop.seller, "").await["items"], json!([]));
    shop.stack.settled().await;
}

#[tokio::test]
async fn replayed_events_produce_no_second_notification_and_no_second_email() {
    let shop = shop().await;
    let order = shop.buy(1, "tok_visa").await;
    let customer = shop.page_with(&shop.customer, &["order_confirmed", "payment_captured", "shipment_created"]).await;
    let seller = shop.page_with(&shop.seller, &["new_order"]).await;
    shop.mails(2).await;
    let before =
        (shop.stored("SELECT count(*) FROM notifications").await, shop.stored("SELECT count(*) FROM emails").await);
    let replayed = [OrderPlaced::TYPE, OrderConfirmed::TYPE, PaymentCaptured::TYPE, ShippingCreated::TYPE];

    // Replayed while the inbox remembers them…
    for event_type in replayed {
        shop.replay(&order, event_type).await;
    }
    // …and after it forgot them (pruned): the (event, recipient) key still holds.
    sqlx::query("DELETE FROM inbox").execute(shop.stack.commerce().notification_db.pool()).await.unwrap();
    for event_type in replayed {
        shop.replay(&order, event_type).await;
    }

    let after =
        (shop.stored("SELECT count(*) FROM notifications").await, shop.stored("SELECT count(*) FROM emails").await);
    assert_eq!(after, before);
    assert_eq!(shop.page(&shop.customer, "").await, customer);
    assert_eq!(shop.page(&shop.seller, "").await, seller);
    // The sender marks a row sent a moment after the server took it.
    let all_sent = emporium_test_harness::eventually(PATIENCE, || async {
        shop.stored("SELECT count(*) FROM emails WHERE sent_at IS NULL").await == 0
    })
    .await;
    assert!(all_sent, "an email was left unsent");
    assert_eq!(shop.stack.commerce().smtp.received().len(), 2, "no email went twice");
    shop.stack.settled().await;
}
