//! Customers and a seller driving Emporium the way clients do: over the
//! public HTTP API, signed in with bearer tokens, and listening to the order
//! events on NATS to learn how each checkout ended.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use emporium_system::shop::address;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::time::Instant;

const PASSWORD: &str = "load generator password";

/// A signed-in account.
#[derive(Debug, Clone)]
pub struct Account {
    pub token: String,
}

/// A shop on a running gateway: a seller's products, in stock.
#[derive(Debug, Clone)]
pub struct Shop {
    http: reqwest::Client,
    base: String,
    pub products: Vec<String>,
}

impl Shop {
    /// Signs a seller up and puts `products` products on sale, each with `stock` units.
    pub async fn open(base: &str, products: usize, stock: u32) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().pool_max_idle_per_host(1024).build()?;
        let mut shop = Self { http, base: base.to_owned(), products: Vec::new() };
        let seller = shop.account("seller").await?;
        for n in 0..products {
            let body = json!({
                "name": format!("Load chair {n}"),
                "description": "A chair for load tests",
                "price": { "amount": 1_000 + n, "currency": "EUR" },
            });
            let product = shop.send(&seller, reqwest::Method::POST, "/api/v1/products", &body).await?;
            let id = product["id"].as_str().context("a product without an id")?.to_owned();
            shop.set_stock(&seller, &id, stock).await?;
            shop.products.push(id);
        }
        Ok(shop)
    }

    /// Registers and signs in a new account with `role`.
    pub async fn account(&self, role: &str) -> anyhow::Result<Account> {
        let email = format!("{role}-{}@load.example", uuid::Uuid::now_v7().simple());
        let body = json!({ "email": email, "password": PASSWORD, "name": "Load Tester", "role": role });
        let registered = self.post_patiently("/api/v1/auth/register", &body).await?;
        ensure!(registered.status() == 201, "register: {}", registered.status());
        let login = json!({ "email": email, "password": PASSWORD });
        let session: Value = self.post_patiently("/api/v1/auth/login", &login).await?.json().await?;
        let token = session["access_token"].as_str().context("login without an access token")?.to_owned();
        Ok(Account { token })
    }

    /// Registers and signs in `count` new accounts with `role`, a few at a time.
    pub async fn accounts(&self, role: &str, count: usize) -> anyhow::Result<Vec<Account>> {
        futures::stream::iter(0..count).map(|_| self.account(role)).buffer_unordered(16).try_collect().await
    }

    /// POSTs `body`, waiting out 503s (password hashing sheds load) as a client would.
    async fn post_patiently(&self, path: &str, body: &Value) -> anyhow::Result<reqwest::Response> {
        for _ in 0..100 {
            let response = self.http.post(format!("{}{path}", self.base)).json(body).send().await?;
            if response.status() != 503 {
                return Ok(response);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{path}: still 503 after 10 s")
    }

    async fn send(&self, who: &Account, method: reqwest::Method, path: &str, body: &Value) -> anyhow::Result<Value> {
        let response =
            self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&who.token).json(body).send().await?;
        let status = response.status();
        let text = response.text().await?;
        ensure!(status.is_success(), "{path}: {status} {text}");
        Ok(serde_json::from_str(&text)?)
    }

    /// Sets stock, waiting while inventory has not yet heard of a new product.
    async fn set_stock(&self, seller: &Account, product: &str, quantity: u32) -> anyhow::Result<()> {
        let url = format!("{}/api/v1/products/{product}/stock", self.base);
        for _ in 0..400 {
            let response =
                self.http.put(&url).bearer_auth(&seller.token).json(&json!({ "quantity": quantity })).send().await?;
            match response.status().as_u16() {
                200 => return Ok(()),
                503 => tokio::time::sleep(Duration::from_millis(25)).await,
                status => bail!("setting stock: {status}"),
            }
        }
        bail!("inventory never learned of product {product}")
    }

    /// Fills the customer's cart with one unit of each of `products`, then
    /// checks out; an outage fails it. Returns the order id and when the checkout was sent.
    pub async fn checkout(&self, customer: &Account, products: &[&str]) -> anyhow::Result<(String, Instant)> {
        let checkout = self.checkout_through_outages(customer, products, "tok_visa", Duration::ZERO).await?;
        Ok((checkout.order, checkout.sent))
    }

    /// [`checkout`](Self::checkout) paying with `method`, each request riding
    /// out outages for up to `patience` as [`send_through_outages`](Self::send_through_outages) does.
    pub async fn checkout_through_outages(
        &self,
        customer: &Account,
        products: &[&str],
        method: &str,
        patience: Duration,
    ) -> anyhow::Result<Checkout> {
        let mut retries = 0;
        for product in products {
            let line = json!({ "product_id": product, "quantity": 1 });
            let added = self
                .send_through_outages(customer, reqwest::Method::POST, "/api/v1/cart/items", &line, None, patience)
                .await?;
            retries += added.retries;
            ensure!(added.status == 200, "adding to the cart: {} {}", added.status, added.body);
        }
        let body = json!({ "shipping_address": address(), "payment_method": method });
        let key = uuid::Uuid::now_v7().to_string();
        let sent = Instant::now();
        let accepted = self
            .send_through_outages(customer, reqwest::Method::POST, "/api/v1/cart/checkout", &body, Some(&key), patience)
            .await?;
        retries += accepted.retries;
        ensure!(accepted.status == 202, "checking out: {} {}", accepted.status, accepted.body);
        let order = serde_json::from_str::<Value>(&accepted.body)
            .ok()
            .and_then(|accepted| accepted["order_id"].as_str().map(str::to_owned))
            .with_context(|| format!("checking out: 202 without an order id: {}", accepted.body))?;
        Ok(Checkout { order, sent, retries })
    }

    /// Sends a request as a client that rides out outages: again and again,
    /// a moment apart, through connection errors, 5xx and 429, until another
    /// answer comes or `patience` runs out. Every try carries the same
    /// `idempotency_key`, if one is given, so each is the same request.
    pub async fn send_through_outages(
        &self,
        who: &Account,
        method: reqwest::Method,
        path: &str,
        body: &Value,
        idempotency_key: Option<&str>,
        patience: Duration,
    ) -> anyhow::Result<Answer> {
        let deadline = Instant::now() + patience;
        let mut retries = 0;
        loop {
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(&who.token)
                .timeout(TRY_TIMEOUT)
                .json(body);
            if let Some(key) = idempotency_key {
                request = request.header("idempotency-key", key);
            }
            let last = match request.send().await {
                Ok(response) if !(response.status().is_server_error() || response.status() == 429) => {
                    let status = response.status().as_u16();
                    return Ok(Answer { status, body: response.text().await.unwrap_or_default(), retries });
                }
                Ok(response) => format!("{} {}", response.status(), response.text().await.unwrap_or_default()),
                Err(error) => error.to_string(),
            };
            if Instant::now() >= deadline {
                bail!("{path}: no answer but outages within {patience:?} ({retries} retries); the last: {last}");
            }
            retries += 1;
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// How long a client riding out an outage waits between tries.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How long it waits for one try's answer (the gateway gives up on its services sooner).
const TRY_TIMEOUT: Duration = Duration::from_secs(15);

/// A checkout the gateway accepted.
#[derive(Debug, Clone)]
pub struct Checkout {
    pub order: String,
    /// When the checkout request was first sent.
    pub sent: Instant,
    /// Tries of its requests that met a connection error, a 5xx or a 429.
    pub retries: u32,
}

/// The answer a client riding out outages got in the end.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    /// Tries before it that met a connection error, a 5xx or a 429.
    pub retries: u32,
}

/// How a checkout ended, and when it was heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Confirmed(Instant),
    Cancelled(Instant),
}

impl Outcome {
    pub fn at(self) -> Instant {
        match self {
            Outcome::Confirmed(at) | Outcome::Cancelled(at) => at,
        }
    }
}

enum Slot {
    Heard(Outcome),
    Awaited(oneshot::Sender<Outcome>),
}

/// Listens to `order.confirmed` and `order.cancelled` on NATS and tells each
/// waiter how its order ended.
#[derive(Clone, Default)]
pub struct Outcomes(Arc<Mutex<HashMap<String, Slot>>>);

impl std::fmt::Debug for Outcomes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outcomes").finish_non_exhaustive()
    }
}

impl Outcomes {
    /// Subscribes on `nats` and records outcomes from now on.
    pub async fn listen(nats: &async_nats::Client) -> anyhow::Result<Self> {
        let outcomes = Self::default();
        let mut events = nats.subscribe("evt.order.>").await?;
        let recorder = outcomes.clone();
        tokio::spawn(async move {
            while let Some(message) = events.next().await {
                let at = Instant::now();
                let subject = message.subject.as_str();
                let outcome = if subject.starts_with("evt.order.confirmed.") {
                    Outcome::Confirmed(at)
                } else if subject.starts_with("evt.order.cancelled.") {
                    Outcome::Cancelled(at)
                } else {
                    continue;
                };
                let Ok(envelope) = serde_json::from_slice::<Value>(&message.payload) else { continue };
                if let Some(order) = envelope["data"]["order_id"].as_str() {
                    recorder.heard(order.to_owned(), outcome);
                }
            }
        });
        Ok(outcomes)
    }

    fn heard(&self, order: String, outcome: Outcome) {
        let mut slots = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match slots.remove(&order) {
            Some(Slot::Awaited(waiter)) => {
                let _ = waiter.send(outcome);
            }
            // The first outcome heard stands (a redelivered event repeats it).
            Some(Slot::Heard(first)) => {
                slots.insert(order, Slot::Heard(first));
            }
            None => {
                slots.insert(order, Slot::Heard(outcome));
            }
        }
    }

    /// How `order` ended, waiting up to `patience` for it.
    pub async fn of(&self, order: &str, patience: Duration) -> anyhow::Result<Outcome> {
        let waiting = {
            let mut slots = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(Slot::Heard(outcome)) = slots.remove(order) {
                return Ok(outcome);
            }
            let (tx, rx) = oneshot::channel();
            slots.insert(order.to_owned(), Slot::Awaited(tx));
            rx
        };
        match tokio::time::timeout(patience, waiting).await {
            Ok(Ok(outcome)) => Ok(outcome),
            _ => bail!("order {order} did not end within {patience:?}"),
        }
    }
}
