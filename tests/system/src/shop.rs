//! A shop for end-to-end tests: every service of a sale running, a seller
//! with one product in stock, a customer, and the steps a test takes through
//! the HTTP API (fill the cart, check out, read the order or the stock until
//! it reaches a state, cancel, play the carrier).

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::{Stack, read_until, token};

#[derive(Debug)]
pub struct Shop {
    pub stack: Stack,
    pub seller: String,
    pub seller_email: String,
    pub customer: String,
    pub customer_email: String,
    /// The seller's one product, 25.00 EUR.
    pub product: String,
}

/// The product's price in minor units.
pub const PRICE: i64 = 2_500;

impl Shop {
    /// A shop whose product has `on_hand` in stock.
    pub async fn open(on_hand: u32) -> Self {
        Box::pin(Self::open_with(on_hand, |_, _| {})).await
    }

    /// Like [`open`](Self::open); `adjust` may change order's and payment's settings first.
    pub async fn open_with(
        on_hand: u32,
        adjust: impl FnOnce(&mut emporium_order::OrderSettings, &mut emporium_payment::PaymentSettings),
    ) -> Self {
        let stack = Box::pin(Stack::with_commerce(adjust)).await;
        let unique = uuid::Uuid::now_v7().simple().to_string();
        let (seller_email, customer_email) =
            (format!("seller-{unique}@example.com"), format!("ada-{unique}@example.com"));
        let seller = token(&stack.signed_up(&seller_email, "seller").await, "access_token");
        let customer = token(&stack.signed_up(&customer_email, "customer").await, "access_token");
        let product = stack.product(&seller, "Walnut desk lamp", PRICE).await["id"].as_str().unwrap().to_owned();
        stack.stock(&seller, &product, on_hand).await;
        Self { stack, seller, seller_email, customer, customer_email, product }
    }

    /// Puts `quantity` of the product in `customer`'s cart: the cart.
    pub async fn add_as(&self, customer: &str, quantity: u32) -> Value {
        let body = json!({ "product_id": self.product, "quantity": quantity });
        let response = self.stack.send_as(customer, Method::POST, "/api/v1/cart/items", &body).await;
        assert_eq!(response.status(), 200, "adding to the cart");
        response.json().await.unwrap()
    }

    pub async fn add(&self, quantity: u32) -> Value {
        self.add_as(&self.customer, quantity).await
    }

    /// `customer` checks out with `Idempotency-Key: key`, paying with `method`.
    pub async fn checkout_as(&self, customer: &str, key: &str, method: &str) -> Response {
        self.stack
            .request(Method::POST, "/api/v1/cart/checkout")
            .bearer_auth(customer)
            .header("idempotency-key", key)
            .json(&json!({ "shipping_address": address(), "payment_method": method }))
            .send()
            .await
            .unwrap()
    }

    pub async fn checkout_with(&self, key: &str, method: &str) -> Response {
        self.checkout_as(&self.customer, key, method).await
    }

    /// `customer` fills the cart with `quantity` and checks out paying with `method`: the order id.
    pub async fn buy_as(&self, customer: &str, quantity: u32, method: &str) -> String {
        self.add_as(customer, quantity).await;
        let response = self.checkout_as(customer, &format!("checkout-{}", uuid::Uuid::now_v7()), method).await;
        assert_eq!(response.status(), 202, "checkout");
        let accepted: Value = response.json().await.unwrap();
        accepted["order_id"].as_str().unwrap().to_owned()
    }

    pub async fn buy(&self, quantity: u32, method: &str) -> String {
        self.buy_as(&self.customer, quantity, method).await
    }

    /// Order `id` as `viewer` sees it.
    pub async fn order_as(&self, viewer: &str, id: &str) -> Value {
        let response = self.stack.get_as(viewer, &format!("/api/v1/orders/{id}")).await;
        assert_eq!(response.status(), 200, "reading order {id}");
        response.json().await.unwrap()
    }

    pub async fn order(&self, id: &str) -> Value {
        self.order_as(&self.customer, id).await
    }

    /// The order as `viewer` sees it once `reached` holds, polling until it does.
    pub async fn order_when_as(&self, viewer: &str, id: &str, what: &str, reached: impl Fn(&Value) -> bool) -> Value {
        read_until(&format!("order never {what}"), || self.order_as(viewer, id), reached).await
    }

    pub async fn order_when(&self, id: &str, what: &str, reached: impl Fn(&Value) -> bool) -> Value {
        self.order_when_as(&self.customer, id, what, reached).await
    }

    /// The order once its status is `wanted`.
    pub async fn order_reaching(&self, id: &str, wanted: &str) -> Value {
        self.order_when(id, wanted, |order| status(order) == wanted).await
    }

    /// `who` cancels order `id`.
    pub async fn cancel_as(&self, who: &str, id: &str) -> Response {
        self.stack.send_as(who, Method::POST, &format!("/api/v1/orders/{id}/cancel"), &json!({})).await
    }

    pub async fn cancel(&self, id: &str) -> Response {
        self.cancel_as(&self.customer, id).await
    }

    /// The order's shipment id, once shipping has created it.
    pub async fn shipment(&self, order: &str) -> String {
        self.shipment_as(&self.customer, order).await
    }

    /// `viewer`'s order's shipment id, once shipping has created it.
    pub async fn shipment_as(&self, viewer: &str, order: &str) -> String {
        let order = self.order_when_as(viewer, order, "given a shipment", |o| o["shipment"]["id"].is_string()).await;
        order["shipment"]["id"].as_str().unwrap().to_owned()
    }

    /// `who` reports the carrier's `step` (`ship` or `deliver`) of `shipment`.
    pub async fn carrier(&self, who: &str, shipment: &str, step: &str) -> Response {
        self.stack.send_as(who, Method::POST, &format!("/api/v1/shipments/{shipment}/{step}"), &json!({})).await
    }

    /// [`carrier`](Self::carrier), which must succeed.
    pub async fn report(&self, who: &str, shipment: &str, step: &str) {
        assert_eq!(self.carrier(who, shipment, step).await.status(), 200, "{step}");
    }

    /// The admin, standing in for the carrier, ships and delivers `viewer`'s
    /// confirmed `order`; returns once the order shows it delivered.
    pub async fn deliver_as(&self, viewer: &str, order: &str) {
        let (admin, shipment) = (self.stack.admin().await, self.shipment_as(viewer, order).await);
        for step in ["ship", "deliver"] {
            self.report(&admin, &shipment, step).await;
        }
        self.order_when_as(viewer, order, "delivered", |o| status(o) == "delivered").await;
    }

    /// The product as anyone sees it (with its stock and rating).
    pub async fn product(&self) -> Value {
        let response = self.stack.request(Method::GET, &format!("/api/v1/products/{}", self.product)).send().await;
        let response = response.unwrap();
        assert_eq!(response.status(), 200, "reading the product");
        response.json().await.unwrap()
    }

    /// The product's stock as the catalog shows it.
    pub async fn stock(&self) -> Value {
        self.product().await["stock"].clone()
    }

    /// The product's stock once `reached` holds, polling until it does.
    pub async fn stock_when(&self, failure: &str, reached: impl Fn(&Value) -> bool) -> Value {
        read_until(failure, || self.stock(), reached).await
    }
}

/// The order's status.
pub fn status(order: &Value) -> &str {
    order["status"].as_str().unwrap()
}

pub fn address() -> Value {
    json!({ "name": "Ada Lovelace", "line1": "12 St James's Square", "city": "London", "postal_code": "SW1Y 4JH", "country": "GB" })
}

/// The statuses of the order's timeline, oldest first.
pub fn timeline(order: &Value) -> Vec<&str> {
    order["timeline"].as_array().unwrap().iter().map(|entry| entry["status"].as_str().unwrap()).collect()
}
