//! Reviews and the seller's products through the front door, with every
//! service running for real: a customer buys a product, the order is
//! shipped and delivered (an admin standing in for the carrier), and only
//! then may they review it, once; the product shows its rating; everyone
//! else is refused. Sellers list their own products with their stock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use emporium_system::shop::Shop;
use emporium_system::{PATIENCE, Stack, problem, read_until};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use uuid::Uuid;

/// A shop with 20 in stock, its reviews and the steps to earn one.
struct Reviews(Shop);

impl std::ops::Deref for Reviews {
    type Target = Shop;

    fn deref(&self) -> &Shop {
        &self.0
    }
}

async fn shop() -> Reviews {
    Reviews(Shop::open(20).await)
}

fn review(rating: u8, title: &str) -> Value {
    json!({ "rating": rating, "title": title, "body": "Bright enough to read by, and it does not wobble." })
}

impl Reviews {
    /// `customer`'s confirmed `order` is shipped and delivered; returns once
    /// the catalog has heard of the delivery (its verified purchase is recorded).
    async fn delivered(&self, customer: &str, order: &str) {
        self.deliver_as(customer, order).await;
        let catalog = self.stack.catalog_db.as_ref().unwrap().pool().clone();
        let order_id = Uuid::parse_str(order).unwrap();
        let learned = emporium_test_harness::eventually(PATIENCE, || {
            let catalog = catalog.clone();
            async move {
                sqlx::query("SELECT 1 FROM verified_purchases WHERE order_id = $1")
                    .bind(order_id)
                    .fetch_optional(&catalog)
                    .await
                    .unwrap()
                    .is_some()
            }
        })
        .await;
        assert!(learned, "the catalog never learned of delivered order {order}");
    }

    /// A new customer with a delivered order of the product.
    async fn buyer(&self) -> String {
        let customer = self.stack.access("customer").await;
        let order = self.buy_as(&customer, 1, "tok_visa").await;
        self.delivered(&customer, &order).await;
        customer
    }

    async fn post_review(&self, token: &str, body: &Value) -> Response {
        self.stack.send_as(token, Method::POST, &format!("/api/v1/products/{}/reviews", self.product), body).await
    }

    async fn reviews(&self, query: &str) -> Value {
        let path = format!("/api/v1/products/{}/reviews{query}", self.product);
        let response = self.stack.request(Method::GET, &path).send().await.unwrap();
        assert_eq!(response.status(), 200, "listing reviews");
        response.json().await.unwrap()
    }
}

#[tokio::test]
async fn only_a_customer_with_a_delivered_order_reviews_the_product_and_only_once() {
    let shop = shop().await;
    let buyer = shop.buyer().await;

    let response = shop.post_review(&buyer, &review(4, "Warm light, solid base")).await;
    assert_eq!(response.status(), 201);
    let written: Value = response.json().await.unwrap();
    assert_eq!(written["product_id"], shop.product.as_str());
    assert_eq!((written["rating"].as_u64(), written["title"].as_str()), (Some(4), Some("Warm light, solid base")));
    assert!(written["id"].is_string() && written["author_id"].is_string() && written["created_at"].is_string());

    // The product shows it at once.
    let rating = &shop.product().await["rating"];
    assert_eq!((rating["average"].as_f64(), rating["count"].as_u64()), (Some(4.0), Some(1)));

    // Once only.
    let twice = problem(shop.post_review(&buyer, &review(5, "Even better")).await, 409).await;
    assert!(twice["detail"].as_str().unwrap().contains("already"), "{twice}");

    // Values are checked and named.
    let six = problem(shop.post_review(&buyer, &review(6, "Off the scale")).await, 422).await;
    assert_eq!(six["field"], "rating", "{six}");
    let untitled = problem(shop.post_review(&buyer, &review(3, "  ")).await, 422).await;
    assert_eq!(untitled["field"], "title", "{untitled}");

    // A customer without an order of it, one whose order is confirmed but not delivered, and the seller are refused.
    let stranger = shop.stack.access("customer").await;
    let refused = problem(shop.post_review(&stranger, &review(1, "Never got one")).await, 403).await;
    assert!(refused["detail"].as_str().unwrap().contains("delivered order"), "{refused}");
    let waiting = shop.stack.access("customer").await;
    let confirmed = shop.buy_as(&waiting, 1, "tok_visa").await;
    shop.shipment_as(&waiting, &confirmed).await;
    problem(shop.post_review(&waiting, &review(2, "Still waiting")).await, 403).await;
    let own = problem(shop.post_review(&shop.seller, &review(5, "Best lamp ever")).await, 403).await;
    assert!(own["detail"].as_str().unwrap().contains("own products"), "{own}");

    // Signing in is needed, and the product must be on sale.
    let anonymous = shop.stack.request(Method::POST, &format!("/api/v1/products/{}/reviews", shop.product));
    problem(anonymous.json(&review(5, "Anonymous")).send().await.unwrap(), 401).await;
    let unknown = format!("/api/v1/products/{}/reviews", Uuid::now_v7());
    problem(shop.stack.send_as(&buyer, Method::POST, &unknown, &review(5, "Ghost")).await, 404).await;
    problem(shop.stack.request(Method::GET, &unknown).send().await.unwrap(), 404).await;

    // Nothing refused counted.
    let rating = &shop.product().await["rating"];
    assert_eq!((rating["average"].as_f64(), rating["count"].as_u64()), (Some(4.0), Some(1)));
    shop.stack.settled().await;
}

#[tokio::test]
async fn two_reviewers_make_the_average_and_reviews_list_newest_first() {
    let shop = shop().await;
    let (first, second) = (shop.buyer().await, shop.buyer().await);
    assert_eq!(shop.reviews("").await, json!({ "items": [] }));

    assert_eq!(shop.post_review(&first, &review(5, "Lovely")).await.status(), 201);
    assert_eq!(shop.post_review(&second, &review(2, "Wobbles")).await.status(), 201);

    let rating = &shop.product().await["rating"];
    assert_eq!((rating["average"].as_f64(), rating["count"].as_u64()), (Some(3.5), Some(2)));
    // Search shows the same rating as the product page.
    let found: Value =
        shop.stack.request(Method::GET, "/api/v1/products?q=walnut").send().await.unwrap().json().await.unwrap();
    assert_eq!(found["items"][0]["rating"], *rating);

    let all = shop.reviews("").await;
    let titles: Vec<&str> = all["items"].as_array().unwrap().iter().map(|r| r["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["Wobbles", "Lovely"]);
    assert!(all.get("next_cursor").is_none());

    // One at a time, the same order, nothing twice.
    let page = shop.reviews("?limit=1").await;
    assert_eq!(page["items"][0]["title"], "Wobbles");
    let cursor = page["next_cursor"].as_str().unwrap();
    let next = shop.reviews(&format!("?limit=1&cursor={cursor}")).await;
    assert_eq!(next["items"][0]["title"], "Lovely");
    assert!(next.get("next_cursor").is_none());

    let path = format!("/api/v1/products/{}/reviews?limit=0", shop.product);
    let bad = problem(shop.stack.request(Method::GET, &path).send().await.unwrap(), 422).await;
    assert_eq!(bad["field"], "limit");
    shop.stack.settled().await;
}

#[tokio::test]
async fn a_seller_lists_their_own_products_with_stock_and_nobody_elses() {
    let stack = Stack::with_catalog().await;
    let (seller, rival, customer) =
        (stack.access("seller").await, stack.access("seller").await, stack.access("customer").await);
    let lamp = stack.product(&seller, "Walnut desk lamp", 2_500).await["id"].as_str().unwrap().to_owned();
    let rug = stack.product(&seller, "Wool rug", 9_900).await["id"].as_str().unwrap().to_owned();
    let gone = stack.product(&seller, "Brass kettle", 4_000).await["id"].as_str().unwrap().to_owned();
    let stool = stack.product(&rival, "Oak stool", 3_000).await;
    let (theirs, rival_id) =
        (stool["id"].as_str().unwrap().to_owned(), stool["seller_id"].as_str().unwrap().to_owned());
    stack.stock(&seller, &lamp, 7).await;
    stack.stock(&rival, &theirs, 3).await;
    let deleted = stack.request(Method::DELETE, &format!("/api/v1/products/{gone}")).bearer_auth(&seller);
    assert_eq!(deleted.send().await.unwrap().status(), 204);

    // The stock read model follows inventory within moments.
    let mine = read_until(
        "the lamp's stock never showed",
        || async { stack.get_as(&seller, "/api/v1/seller/products").await.json().await.unwrap() },
        |page| page["items"][1]["stock"]["on_hand"] == 7,
    )
    .await;
    let ids: Vec<&str> = mine["items"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [rug.as_str(), lamp.as_str()], "their own products on sale, newest first");
    assert_eq!(mine["items"][1]["stock"], json!({ "on_hand": 7, "reserved": 0, "available": 7 }));
    assert_eq!(mine["items"][0]["stock"], json!({ "on_hand": 0, "reserved": 0, "available": 0 }));

    // Paged like /products; a `seller` parameter cannot show another's.
    let first: Value = stack.get_as(&seller, "/api/v1/seller/products?limit=1").await.json().await.unwrap();
    assert_eq!(first["items"][0]["id"], rug.as_str());
    let cursor = first["next_cursor"].as_str().unwrap();
    let second: Value =
        stack.get_as(&seller, &format!("/api/v1/seller/products?limit=1&cursor={cursor}")).await.json().await.unwrap();
    assert_eq!(second["items"][0]["id"], lamp.as_str());
    assert!(second.get("next_cursor").is_none());
    let widened: Value =
        stack.get_as(&seller, &format!("/api/v1/seller/products?seller={rival_id}")).await.json().await.unwrap();
    assert_eq!(widened["items"].as_array().unwrap().len(), 2);
    let rivals: Value = stack.get_as(&rival, "/api/v1/seller/products").await.json().await.unwrap();
    let rival_ids: Vec<&str> = rivals["items"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(rival_ids, [theirs.as_str()]);

    problem(stack.get_as(&customer, "/api/v1/seller/products").await, 403).await;
    problem(stack.request(Method::GET, "/api/v1/seller/products").send().await.unwrap(), 401).await;
}
