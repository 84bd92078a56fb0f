//! Live order status (`GET /orders/{id}/events`, server-sent events) through
//! the HTTP API with every service running: a client follows a checkout to
//! delivery, a refused checkout to its cancellation, and only its own orders.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use emporium_system::shop::{Shop, timeline};
use emporium_system::{PATIENCE, Stack, problem};
use reqwest::Method;
use serde_json::{Value, json};

/// One block of a `text/event-stream`.
#[derive(Debug)]
enum Item {
    Event {
        name: String,
        id: Option<String>,
        data: Value,
    },
    /// A comment-only block: a keep-alive.
    Comment,
}

/// A minimal SSE reader over a streamed response body.
struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    async fn open(stack: &Stack, token: &str, order: &str) -> Self {
        let response = stack.get_as(token, &format!("/api/v1/orders/{order}/events")).await;
        assert_eq!(response.status(), 200, "opening the stream");
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        Self { response, buffer: String::new() }
    }

    /// The next block, or `None` once the server ended the stream.
    async fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return Some(parse(&block));
            }
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk()).await.expect("the stream went quiet");
            match chunk.unwrap() {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => {
                    assert!(self.buffer.trim().is_empty(), "the stream ended mid-event: {:?}", self.buffer);
                    return None;
                }
            }
        }
    }

    /// The next event, skipping keep-alives.
    async fn next_event(&mut self) -> Option<(String, Option<String>, Value)> {
        loop {
            match self.next().await? {
                Item::Event { name, id, data } => return Some((name, id, data)),
                Item::Comment => continue,
            }
        }
    }
}

fn parse(block: &str) -> Item {
    let (mut name, mut id, mut data) = (None, None, String::new());
    for line in block.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            name = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("id:") {
            id = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push_str(value.trim_start());
        }
    }
    match name {
        Some(name) => Item::Event { name, id, data: serde_json::from_str(&data).unwrap() },
        None => Item::Comment,
    }
}

async fn shop() -> Shop {
    Shop::open(5).await
}

fn statuses(order: &Value) -> Vec<String> {
    timeline(order).into_iter().map(str::to_owned).collect()
}

#[tokio::test]
async fn an_sse_client_follows_a_checkout_to_delivery() {
    let shop = shop().await;
    let admin = shop.stack.admin().await;
    let order = shop.buy(1, "tok_visa").await;
    let mut stream = EventStream::open(&shop.stack, &shop.customer, &order).await;

    let (name, id, snapshot) = stream.next_event().await.expect("the current order first");
    assert_eq!(name, "order");
    assert_eq!(snapshot["id"], order.as_str());
    let mut seen = statuses(&snapshot);
    assert_eq!(id, Some(seen.len().to_string()), "the snapshot's id counts its timeline");

    let (mut shipped, mut delivered) = (false, false);
    while let Some((name, id, data)) = stream.next_event().await {
        assert_eq!(name, "status", "{data}");
        let status = data["status"].as_str().unwrap().to_owned();
        seen.push(status.clone());
        assert_eq!(id, Some(seen.len().to_string()), "ids count the timeline");
        let order_then = timeline(&data["order"]);
        assert_eq!(order_then.get(seen.len() - 1), Some(&status.as_str()), "each change carries the order as read");
        match status.as_str() {
            "confirmed" if !shipped => {
                let shipment = shop.shipment(&order).await;
                shop.report(&admin, &shipment, "ship").await;
                shipped = true;
            }
            "shipped" if !delivered => {
                let shipment = data["order"]["shipment"]["id"].as_str().unwrap().to_owned();
                shop.report(&admin, &shipment, "deliver").await;
                delivered = true;
            }
            _ => {}
        }
    }
    // The stream ended by itself, after the final status, each status once and in order.
    assert_eq!(seen, ["pending", "reserved", "confirmed", "shipped", "delivered"]);
    shop.stack.settled().await;
}

#[tokio::test]
async fn a_declined_checkout_streams_its_cancellation_and_ends() {
    let shop = shop().await;
    let order = shop.buy(1, "tok_declined").await;
    let mut stream = EventStream::open(&shop.stack, &shop.customer, &order).await;

    let (name, _, snapshot) = stream.next_event().await.unwrap();
    assert_eq!(name, "order");
    let mut last = snapshot;
    while let Some((name, _, data)) = stream.next_event().await {
        assert_eq!(name, "status");
        last = data["order"].clone();
    }
    assert_eq!(last["status"], "cancelled");
    assert_eq!(last["cancel_reason"], "payment_declined");
    shop.stack.settled().await;
}

#[tokio::test]
async fn a_stream_of_a_finished_order_is_its_state_and_nothing_more() {
    let shop = shop().await;
    let order = shop.buy(1, "tok_declined").await;
    shop.order_reaching(&order, "cancelled").await;

    let mut stream = EventStream::open(&shop.stack, &shop.customer, &order).await;
    let (name, _, snapshot) = stream.next_event().await.unwrap();
    assert_eq!((name.as_str(), &snapshot["status"]), ("order", &json!("cancelled")));
    assert!(stream.next().await.is_none(), "a final state ends the stream at once");
    shop.stack.settled().await;
}

#[tokio::test]
async fn an_idle_stream_keeps_alive_and_ends_when_the_gateway_stops() {
    let shop = shop().await;
    let order = shop.buy(1, "tok_visa").await;
    let mut stream = EventStream::open(&shop.stack, &shop.customer, &order).await;

    // Confirmed orders wait for the carrier: the stream idles with keep-alives.
    let mut confirmed = false;
    while !confirmed {
        if let Item::Event { data, .. } = stream.next().await.unwrap() {
            // The snapshot's status, or the change's.
            confirmed = data["status"] == "confirmed";
        }
    }
    assert!(matches!(stream.next().await, Some(Item::Comment)), "a keep-alive while idle");

    shop.stack.stop_gateway();
    while let Some(item) = stream.next().await {
        assert!(matches!(item, Item::Comment), "nothing but keep-alives before the end: {item:?}");
    }
    shop.stack.settled().await;
}

#[tokio::test]
async fn only_the_orders_customer_may_follow_it() {
    let shop = shop().await;
    let order = shop.buy(1, "tok_visa").await;
    let stranger = shop.stack.access("customer").await;

    let path = format!("/api/v1/orders/{order}/events");
    problem(shop.stack.get_as(&stranger, &path).await, 404).await;
    problem(shop.stack.request(Method::GET, &path).send().await.unwrap(), 401).await;
    let unknown = format!("/api/v1/orders/{}/events", uuid::Uuid::now_v7());
    problem(shop.stack.get_as(&shop.customer, &unknown).await, 404).await;
    shop.stack.settled().await;
}
