//! After the sale, through the HTTP API with every service running: a
//! confirmed order gets its shipment, the carrier (an admin standing in for
//! its webhook) ships and delivers it, and the order, the stock and the
//! customer's right to cancel follow.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use emporium_system::problem;
use emporium_system::shop::{Shop, status, timeline};
use reqwest::Method;
use serde_json::{Value, json};

/// A shop with 10 in stock and the admin, who stands in for the carrier.
struct Carrier {
    shop: Shop,
    admin: String,
}

async fn shop() -> Carrier {
    let shop = Shop::open(10).await;
    let admin = shop.stack.admin().await;
    Carrier { shop, admin }
}

impl std::ops::Deref for Carrier {
    type Target = Shop;

    fn deref(&self) -> &Shop {
        &self.shop
    }
}

fn shipment_status(order: &Value) -> Option<&str> {
    order["shipment"]["status"].as_str()
}

impl Carrier {
    /// Checks out `quantity` paying with tok_visa and waits until the order
    /// is confirmed with its shipment created: (order id, shipment id).
    async fn confirmed_order(&self, quantity: u32) -> (String, String) {
        let order_id = self.buy(quantity, "tok_visa").await;
        let order = self.order_when(&order_id, "given its shipment", |o| shipment_status(o) == Some("created")).await;
        assert_eq!(status(&order), "confirmed");
        let shipment = order["shipment"]["id"].as_str().unwrap().to_owned();
        (order_id, shipment)
    }

    /// Waits until the product shows `on_hand` and `reserved`.
    async fn stock_becomes(&self, on_hand: u64, reserved: u64) {
        self.stock_when(&format!("stock never became {on_hand}/{reserved}"), |stock| {
            stock["on_hand"] == on_hand && stock["reserved"] == reserved
        })
        .await;
    }

    /// How many `type_name` events shipping wrote to its outbox.
    async fn announced(&self, type_name: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE type_name = $1")
            .bind(type_name)
            .fetch_one(self.stack.commerce().shipping_db.pool())
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_confirmed_order_is_shipped_and_delivered_and_its_stock_leaves_the_warehouse() {
    let shop = shop().await;
    let (order_id, shipment) = shop.confirmed_order(2).await;
    shop.stock_becomes(10, 2).await;

    let response = shop.carrier(&shop.admin, &shipment, "ship").await;
    assert_eq!(response.status(), 200);
    let shipped: Value = response.json().await.unwrap();
    assert_eq!((shipped["id"].as_str(), shipped["order_id"].as_str()), (Some(&*shipment), Some(&*order_id)));
    assert_eq!(shipped["status"], "shipped");
    assert_eq!(shipped["carrier"], "Emporium Post");
    let tracking = shipped["tracking_number"].as_str().unwrap();
    assert!(tracking.len() == 13 && tracking.starts_with("EP") && tracking.ends_with("ZZ"), "{tracking}");
    assert!(shipped["created_at"].is_string() && shipped["shipped_at"].is_string(), "{shipped}");
    assert!(shipped.get("delivered_at").is_none() && shipped.get("cancelled_at").is_none(), "{shipped}");

    let order = shop.order_reaching(&order_id, "shipped").await;
    assert_eq!(shipment_status(&order), Some("shipped"));
    // The reservation became a deduction: both fall by the quantity.
    shop.stock_becomes(8, 0).await;
    problem(shop.cancel(&order_id).await, 409).await;

    // The carrier's webhook retries: the same answer, and nothing announced twice.
    let again = shop.carrier(&shop.admin, &shipment, "ship").await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap(), shipped);
    assert_eq!(shop.announced("shipping.shipped").await, 1);

    let response = shop.carrier(&shop.admin, &shipment, "deliver").await;
    assert_eq!(response.status(), 200);
    let delivered: Value = response.json().await.unwrap();
    assert_eq!(delivered["status"], "delivered");
    assert_eq!(delivered["shipped_at"], shipped["shipped_at"]);
    assert!(delivered["delivered_at"].is_string(), "{delivered}");
    let order = shop.order_reaching(&order_id, "delivered").await;
    assert_eq!(timeline(&order), ["pending", "reserved", "confirmed", "shipped", "delivered"]);
    assert_eq!(shipment_status(&order), Some("delivered"));
    assert_eq!(shop.carrier(&shop.admin, &shipment, "deliver").await.status(), 200);
    assert_eq!(shop.announced("shipping.delivered").await, 1);
    problem(shop.carrier(&shop.admin, &shipment, "ship").await, 409).await;
    shop.stock_becomes(8, 0).await;
    shop.stack.settled().await;
}

#[tokio::test]
async fn only_the_carrier_moves_a_shipment_and_only_forward() {
    let shop = shop().await;
    let (order_id, shipment) = shop.confirmed_order(1).await;

    problem(shop.carrier(&shop.admin, &shipment, "deliver").await, 409).await;
    problem(shop.carrier(&shop.customer, &shipment, "ship").await, 403).await;
    problem(shop.carrier(&shop.seller, &shipment, "ship").await, 403).await;
    let anonymous = shop.stack.request(Method::POST, &format!("/api/v1/shipments/{shipment}/ship")).send().await;
    problem(anonymous.unwrap(), 401).await;
    problem(shop.carrier(&shop.admin, &uuid::Uuid::now_v7().to_string(), "ship").await, 404).await;
    problem(shop.carrier(&shop.admin, "not-a-shipment", "ship").await, 400).await;

    // None of those moved anything.
    let order = shop.order(&order_id).await;
    assert_eq!((status(&order), shipment_status(&order)), ("confirmed", Some("created")));
    assert_eq!(shop.announced("shipping.shipped").await + shop.announced("shipping.delivered").await, 0);
    shop.stack.settled().await;
}

#[tokio::test]
async fn a_cancelled_order_cancels_its_shipment_which_then_cannot_ship() {
    let shop = shop().await;
    let (order_id, shipment) = shop.confirmed_order(3).await;
    shop.stock_becomes(10, 3).await;

    assert_eq!(shop.cancel(&order_id).await.status(), 200);
    let order =
        shop.order_when(&order_id, "showing its shipment cancelled", |o| shipment_status(o) == Some("cancelled")).await;
    assert_eq!(status(&order), "cancelled");
    assert_eq!(order["shipment"]["id"], shipment.as_str());

    problem(shop.carrier(&shop.admin, &shipment, "ship").await, 409).await;
    problem(shop.carrier(&shop.admin, &shipment, "deliver").await, 409).await;
    assert_eq!(shop.announced("shipping.cancelled").await, 1);
    shop.stock_becomes(10, 0).await;
    shop.stack.settled().await;
}

/// `seller`'s sales with `query`.
async fn sales(shop: &Shop, seller: &str, query: &str) -> Value {
    let response = shop.stack.get_as(seller, &format!("/api/v1/seller/orders{query}")).await;
    assert_eq!(response.status(), 200, "listing sales{query}");
    response.json().await.unwrap()
}

fn ids(page: &Value) -> Vec<&str> {
    page["items"].as_array().unwrap().iter().map(|order| order["id"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn each_seller_sees_their_own_lines_of_a_sale_and_filters_sales_by_status() {
    let shop = shop().await;
    let other_seller = shop.stack.access("seller").await;
    let napkins = shop.stack.product(&other_seller, "Linen napkins", 900).await["id"].as_str().unwrap().to_owned();
    shop.stack.stock(&other_seller, &napkins, 5).await;
    let item = json!({ "product_id": napkins, "quantity": 3 });
    assert_eq!(shop.stack.send_as(&shop.customer, Method::POST, "/api/v1/cart/items", &item).await.status(), 200);
    let (order_id, shipment) = shop.confirmed_order(2).await;

    // One order, two sellers: each sees the sale with their own lines only.
    let mine = sales(&shop, &shop.seller, "").await;
    assert_eq!(ids(&mine), [order_id.as_str()]);
    let lines = mine["items"][0]["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!((&lines[0]["product_id"], &lines[0]["quantity"]), (&json!(shop.product), &json!(2)));
    let theirs = sales(&shop, &other_seller, "").await;
    assert_eq!(theirs["items"][0]["lines"].as_array().unwrap().len(), 1);
    assert_eq!(theirs["items"][0]["lines"][0]["product_id"], napkins.as_str());

    assert_eq!(ids(&sales(&shop, &shop.seller, "?status=confirmed").await), [order_id.as_str()]);
    assert!(ids(&sales(&shop, &shop.seller, "?status=shipped").await).is_empty());
    shop.report(&shop.admin, &shipment, "ship").await;
    shop.order_reaching(&order_id, "shipped").await;
    assert_eq!(ids(&sales(&shop, &shop.seller, "?status=shipped").await), [order_id.as_str()]);
    assert!(ids(&sales(&shop, &other_seller, "?status=confirmed").await).is_empty());

    let bad = problem(shop.stack.get_as(&shop.seller, "/api/v1/seller/orders?status=lost").await, 422).await;
    assert_eq!(bad["field"], "status");
    shop.stack.settled().await;
}
