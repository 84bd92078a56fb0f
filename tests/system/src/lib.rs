//! Support for the whole-system tests and benchmarks. A [`Stack`] is a whole
//! front door for one test: a private NATS server (provisioned), a fresh
//! identity database, a Redis key prefix of its own, the identity service and
//! the gateway, both real, talking over real connections; and, for tests that
//! need them, the catalog and inventory services, then every other service of
//! a sale, each on its own database. [`shop`] opens a shop on top: a seller, a
//! product in stock, a customer, and their steps. [`invariants`] is what must
//! hold once a scenario has settled; every scenario with the commerce services
//! up ends with [`Stack::settled`].

// Test code: a panic, with its message, is how a test reports the failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod invariants;
pub mod shop;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use emporium_gateway::{Dependencies as GatewayDeps, Gateway, GatewaySettings};
use emporium_identity::{Dependencies as IdentityDeps, IdentitySettings};
use emporium_nats::{ManualClock, SharedClock, Subscription, Topology, provision};
use emporium_order::OrderSettings;
use emporium_payment::PaymentSettings;
use emporium_payment::simulator::{Simulator, SimulatorConfig};
use emporium_platform::Readiness;
use emporium_platform::settings::Environment;
use emporium_schemas::commands::cart::GetCart;
use emporium_schemas::commands::catalog::ListCategories;
use emporium_schemas::commands::identity::GetKeys;
use emporium_schemas::commands::inventory::GetStock;
use emporium_schemas::commands::notification::ListNotifications;
use emporium_schemas::commands::order::{GetOrder, ListOrders};
use emporium_schemas::commands::shipping::ShipShipment;
use emporium_schemas::values::{OrderId, ProductId, ShipmentId};
use emporium_schemas::{Command, CommandEnvelope, EntityKey};
use emporium_test_harness::{SmtpServer, TestDatabase, TestNats, TestRedis};
use reqwest::{Method, RequestBuilder, Response};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::invariants::{Databases, DeadLetters, System};

pub const PASSWORD: &str = "correct horse battery";

/// How long a test waits for the system to reach a state.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The checkout's services as a test sees them.
#[derive(Debug)]
pub struct Commerce {
    /// Order's, payment's and shipping's time (and the simulated provider's).
    pub clock: Arc<ManualClock>,
    pub simulator: Arc<Simulator>,
    pub order_db: TestDatabase,
    pub payment_db: TestDatabase,
    pub shipping_db: TestDatabase,
    pub notification_db: TestDatabase,
    /// Where the notification service sends its emails.
    pub smtp: SmtpServer,
}

#[derive(Debug)]
pub struct Stack {
    pub base: String,
    pub http: reqwest::Client,
    /// The PEM identity signs with, so tests can forge and expire tokens.
    pub signing_pem: String,
    identity_settings: IdentitySettings,
    identity_stop: CancellationToken,
    identity: Option<JoinHandle<Result<(), emporium_identity::IdentityError>>>,
    gateway_stop: CancellationToken,
    catalog_stop: CancellationToken,
    commerce_stop: CancellationToken,
    /// Order, payment and cart, once started.
    pub commerce: Option<Commerce>,
    pub catalog_db: Option<TestDatabase>,
    pub inventory_db: Option<TestDatabase>,
    pub nats: TestNats,
    pub redis: TestRedis,
    pub db: TestDatabase,
}

impl Stack {
    pub async fn start() -> Self {
        Box::pin(Self::with(|_, _| {})).await
    }

    /// A stack without rate limits, for benchmarks: their clients share one address.
    pub async fn unlimited() -> Self {
        Box::pin(Self::with(|_, gateway| {
            gateway.rate_limits.per_ip = u64::MAX / 4;
            gateway.rate_limits.per_user = u64::MAX / 4;
            gateway.rate_limits.auth_per_ip = u64::MAX / 4;
        }))
        .await
    }

    /// A stack whose settings `adjust` may change first.
    pub async fn with(adjust: impl FnOnce(&mut IdentitySettings, &mut GatewaySettings)) -> Self {
        let nats = provisioned_nats().await;
        let redis = TestRedis::connect().await.unwrap();
        let db = TestDatabase::create().await.unwrap();

        let signing_pem = emporium_identity::tokens::SigningKey::generate_pem().unwrap();
        let mut identity_settings = IdentitySettings::from_source(|_| None, Environment::Development).unwrap();
        identity_settings.signing_key = Some(SecretString::from(signing_pem.clone()));
        let mut gateway_settings = GatewaySettings::from_source(|_| None).unwrap();
        // Tests play several clients from one machine.
        gateway_settings.trust_forwarded_for = true;
        gateway_settings.jwks_refetch = Duration::ZERO;
        // Idle live streams show their keep-alives within a test's patience.
        gateway_settings.stream_keep_alive = Duration::from_millis(200);
        adjust(&mut identity_settings, &mut gateway_settings);

        let gateway_deps = GatewayDeps {
            nats: nats.client().clone(),
            redis: redis.client().clone(),
            redis_prefix: redis.prefix().to_owned(),
            partitions: 1,
        };
        let gateway =
            Gateway::bind("127.0.0.1:0".parse().unwrap(), &gateway_settings, gateway_deps, Readiness::default())
                .await
                .unwrap();
        let base = format!("http://{}", gateway.local_addr().unwrap());
        let gateway_stop = CancellationToken::new();
        tokio::spawn(gateway.run_until_stopped(gateway_stop.clone()));

        let mut stack = Self {
            base,
            http: reqwest::Client::new(),
            signing_pem,
            identity_settings,
            identity_stop: CancellationToken::new(),
            identity: None,
            gateway_stop,
            catalog_stop: CancellationToken::new(),
            commerce_stop: CancellationToken::new(),
            commerce: None,
            catalog_db: None,
            inventory_db: None,
            nats,
            redis,
            db,
        };
        stack.start_identity().await;
        stack
    }

    /// Starts identity and waits until it answers through the gateway.
    async fn start_identity(&mut self) {
        let deps = IdentityDeps {
            pool: self.db.pool().clone(),
            nats: self.nats.client().clone(),
            redis: self.redis.client().clone(),
            redis_prefix: self.redis.prefix().to_owned(),
            partitions: 1,
        };
        self.identity_stop = CancellationToken::new();
        self.identity = Some(tokio::spawn(emporium_identity::run(
            self.identity_settings.clone(),
            deps,
            self.identity_stop.clone(),
        )));
        self.until_answering("identity", |probe| async move { probe.answers(None, GetKeys {}).await }).await;
    }

    /// A stack with the catalog and inventory running too.
    pub async fn with_catalog() -> Self {
        // Boxed: the stack is large, and so would every caller's future be.
        let mut stack = Box::pin(Self::start()).await;
        Box::pin(stack.start_catalog()).await;
        stack
    }

    /// Starts catalog and inventory, each on a fresh database, and waits until both answer.
    pub async fn start_catalog(&mut self) {
        let (catalog_db, inventory_db) = (TestDatabase::create().await.unwrap(), TestDatabase::create().await.unwrap());
        let catalog = self.runtime(&catalog_db, Arc::new(emporium_nats::SystemClock));
        let settings = emporium_catalog::CatalogSettings::from_source(|_| None).unwrap();
        tokio::spawn(emporium_catalog::run(settings, catalog, self.catalog_stop.clone()));
        let inventory = self.runtime(&inventory_db, Arc::new(emporium_nats::SystemClock));
        let settings = emporium_inventory::InventorySettings::from_source(|_| None).unwrap();
        tokio::spawn(emporium_inventory::run(settings, inventory, self.catalog_stop.clone()));
        self.catalog_db = Some(catalog_db);
        self.inventory_db = Some(inventory_db);
        self.until_answering("catalog or inventory", |probe| async move {
            probe.answers(None, ListCategories {}).await
                && probe.answers(None, GetStock { product_id: ProductId::new_v7() }).await
        })
        .await;
    }

    /// A stack with every service of a checkout: catalog, inventory, order,
    /// payment (against the simulated provider), shipping and cart. Order and payment
    /// read the test's [`ManualClock`], so deadlines pass when the test says;
    /// `adjust` may change their settings first.
    pub async fn with_commerce(adjust: impl FnOnce(&mut OrderSettings, &mut PaymentSettings)) -> Self {
        let mut stack = Self::with_catalog().await;
        Box::pin(stack.start_commerce(adjust)).await;
        stack
    }

    /// Starts order, payment, shipping and cart (catalog and inventory must run already).
    pub async fn start_commerce(&mut self, adjust: impl FnOnce(&mut OrderSettings, &mut PaymentSettings)) {
        let stack = self;
        let clock = Arc::new(ManualClock::at(chrono::Utc::now()));
        let mut order_settings = OrderSettings::from_source(|_| None).unwrap();
        order_settings.sweep_every = Duration::from_millis(25);
        let mut payment_settings = PaymentSettings::from_source(|_| None).unwrap();
        payment_settings.provider_latency = Duration::from_millis(2);
        payment_settings.provider_timeout = Duration::from_millis(300);
        payment_settings.recovery_every = Duration::from_millis(25);
        payment_settings.retry_backoff = Duration::from_millis(10);
        adjust(&mut order_settings, &mut payment_settings);

        let (order_db, payment_db) = (TestDatabase::create().await.unwrap(), TestDatabase::create().await.unwrap());
        let shared: SharedClock = clock.clone();
        let order = stack.runtime(&order_db, shared.clone());
        tokio::spawn(emporium_order::run(order_settings, order, stack.commerce_stop.clone()));
        let simulator = Arc::new(Simulator::new(SimulatorConfig::from(&payment_settings), shared.clone()));
        let payment = emporium_payment::Dependencies {
            pool: payment_db.pool().clone(),
            nats: stack.nats.client().clone(),
            partitions: 1,
            clock: shared.clone(),
            provider: simulator.clone(),
        };
        tokio::spawn(emporium_payment::run(payment_settings, payment, stack.commerce_stop.clone()));
        // Shipping too, so every checkout test runs the whole after-sale flow.
        let shipping_db = TestDatabase::create().await.unwrap();
        let shipping = stack.runtime(&shipping_db, shared.clone());
        let shipping_settings = emporium_shipping::ShippingSettings::from_source(|_| None).unwrap();
        tokio::spawn(emporium_shipping::run(shipping_settings, shipping, stack.commerce_stop.clone()));
        // Notification on its own (system) clock, emailing through a test SMTP server.
        let (notification_db, smtp) = (TestDatabase::create().await.unwrap(), SmtpServer::start().await.unwrap());
        let notification = stack.runtime(&notification_db, Arc::new(emporium_nats::SystemClock));
        let smtp_url = smtp.url();
        let notification_settings = emporium_notification::NotificationSettings::from_source(|name| match name {
            "NOTIFICATION_EMAIL" => Some(smtp_url.clone()),
            "NOTIFICATION_EMAIL_POLL_MS" => Some("50".to_owned()),
            _ => None,
        })
        .unwrap();
        tokio::spawn(emporium_notification::run(notification_settings, notification, stack.commerce_stop.clone()));
        let cart = emporium_cart::Dependencies {
            nats: stack.nats.client().clone(),
            redis: stack.redis.client().clone(),
            redis_prefix: stack.redis.prefix().to_owned(),
            partitions: 1,
            clock: shared,
        };
        let cart_settings = emporium_cart::CartSettings::from_source(|_| None).unwrap();
        tokio::spawn(emporium_cart::run(cart_settings, cart, stack.commerce_stop.clone()));

        stack
            .until_answering("order or cart", |probe| async move {
                let key = Some(EntityKey::from(uuid::Uuid::now_v7()));
                probe.answers(None, ListOrders::default()).await
                    && probe.answers(key.clone(), GetOrder { order_id: OrderId::new_v7() }).await
                    && probe.answers(key, GetCart {}).await
            })
            .await;
        stack
            .until_answering("shipping", |probe| async move {
                probe.answers(None, ShipShipment { shipment_id: ShipmentId::new_v7() }).await
            })
            .await;
        stack
            .until_answering(
                "notification",
                |probe| async move { probe.answers(None, ListNotifications::default()).await },
            )
            .await;
        stack.commerce = Some(Commerce { clock, simulator, order_db, payment_db, shipping_db, notification_db, smtp });
    }

    /// What an event-driven service of this stack runs on: `db`, the stack's NATS, one partition, `clock`.
    fn runtime(&self, db: &TestDatabase, clock: SharedClock) -> emporium_nats::runtime::Dependencies {
        emporium_nats::runtime::Dependencies {
            pool: db.pool().clone(),
            nats: self.nats.client().clone(),
            partitions: 1,
            clock,
        }
    }

    /// Waits (at most [`PATIENCE`]) until `probe` finds `who` answering.
    async fn until_answering<F, Fut>(&self, who: &str, probe: F)
    where
        F: Fn(Probe) -> Fut,
        Fut: Future<Output = bool>,
    {
        let caller = emporium_nats::Caller::new(self.nats.client().clone(), Duration::from_millis(500));
        let up = emporium_test_harness::eventually(PATIENCE, || probe(Probe(caller.clone()))).await;
        assert!(up, "{who} never answered");
    }

    pub fn commerce(&self) -> &Commerce {
        self.commerce.as_ref().expect("started with_commerce")
    }

    /// What the invariants read: every service's database, JetStream and the provider's records.
    pub fn system(&self) -> System {
        let commerce = self.commerce();
        let pool = |db: &Option<TestDatabase>| db.as_ref().expect("start_catalog first").pool().clone();
        System {
            databases: Databases {
                identity: self.db.pool().clone(),
                catalog: pool(&self.catalog_db),
                inventory: pool(&self.inventory_db),
                order: commerce.order_db.pool().clone(),
                payment: commerce.payment_db.pool().clone(),
                shipping: commerce.shipping_db.pool().clone(),
                notification: commerce.notification_db.pool().clone(),
            },
            jetstream: async_nats::jetstream::new(self.nats.client().clone()),
            provider: commerce.simulator.clone(),
        }
    }

    /// Waits until the system has settled after a scenario and asserts the
    /// [`invariants`] hold, the DLQ empty; names whatever broke them.
    pub async fn settled(&self) {
        self.settled_with(DeadLetters::None).await;
    }

    /// [`settled`](Self::settled), for a scenario that means to leave `dead_letters`.
    pub async fn settled_with(&self, dead_letters: DeadLetters) {
        let violations = self.system().settle(PATIENCE, dead_letters).await.unwrap();
        let report: Vec<String> = violations.iter().map(ToString::to_string).collect();
        assert!(violations.is_empty(), "the system never settled with its invariants holding:\n{}", report.join("\n"));
    }

    /// Starts a second catalog instance on the same database: the two share
    /// the queue group, so reads land on either.
    pub async fn start_another_catalog(&self) {
        let deps =
            self.runtime(self.catalog_db.as_ref().expect("start_catalog first"), Arc::new(emporium_nats::SystemClock));
        let settings = emporium_catalog::CatalogSettings::from_source(|_| None).unwrap();
        tokio::spawn(emporium_catalog::run(settings, deps, self.catalog_stop.clone()));
        // Its subscriptions are in place once it answers; give it a moment to be among the answerers.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    /// Stops identity and starts it again signing with `pem` (a key rotation).
    pub async fn restart_identity_with_key(&mut self, pem: String) {
        self.identity_stop.cancel();
        if let Some(identity) = self.identity.take() {
            identity.await.unwrap().unwrap();
        }
        self.identity_settings.signing_key = Some(SecretString::from(pem.clone()));
        self.signing_pem = pem;
        self.start_identity().await;
    }

    /// Stops identity for good (the gateway stays).
    pub async fn stop_identity(&mut self) {
        self.identity_stop.cancel();
        if let Some(identity) = self.identity.take() {
            identity.await.unwrap().unwrap();
        }
    }

    /// Shuts the gateway down (gracefully, as SIGTERM would).
    pub fn stop_gateway(&self) {
        self.gateway_stop.cancel();
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    pub async fn register(&self, email: &str, role: &str) -> Response {
        let body = json!({ "email": email, "password": PASSWORD, "name": "Test User", "role": role });
        self.request(Method::POST, "/api/v1/auth/register").json(&body).send().await.unwrap()
    }

    pub async fn login_from(&self, email: &str, password: &str, ip: &str) -> Response {
        self.request(Method::POST, "/api/v1/auth/login")
            .header("x-forwarded-for", ip)
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap()
    }

    /// Registers `email` with `role` and signs in: the session's JSON.
    pub async fn signed_up(&self, email: &str, role: &str) -> Value {
        assert_eq!(self.register(email, role).await.status(), 201);
        self.signed_in(email, PASSWORD).await
    }

    pub async fn signed_in(&self, email: &str, password: &str) -> Value {
        let response = self.login_from(email, password, "192.0.2.1").await;
        assert_eq!(response.status(), 200, "login of {email}");
        response.json().await.unwrap()
    }

    pub async fn get_as(&self, token: &str, path: &str) -> Response {
        self.request(Method::GET, path).bearer_auth(token).send().await.unwrap()
    }

    /// Sends `body` as JSON with `method`, signed in with `token`.
    pub async fn send_as(&self, token: &str, method: Method, path: &str, body: &Value) -> Response {
        self.request(method, path).bearer_auth(token).json(body).send().await.unwrap()
    }

    /// An access token of a new account with `role`.
    pub async fn access(&self, role: &str) -> String {
        let email = format!("{role}-{}@example.com", uuid::Uuid::now_v7().simple());
        token(&self.signed_up(&email, role).await, "access_token")
    }

    /// An access token of a new customer who signs up and in from `ip`: one
    /// of many shoppers, each on its own address (and so its own rate limits).
    pub async fn shopper_at(&self, ip: &str) -> String {
        let email = format!("shopper-{}@example.com", uuid::Uuid::now_v7().simple());
        let body = json!({ "email": email, "password": PASSWORD, "name": "Shopper", "role": "customer" });
        let response = self
            .request(Method::POST, "/api/v1/auth/register")
            .header("x-forwarded-for", ip)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "registering {email}");
        let response = self.login_from(&email, PASSWORD, ip).await;
        assert_eq!(response.status(), 200, "login of {email}");
        token(&response.json().await.unwrap(), "access_token")
    }

    /// The bootstrap admin's access token.
    pub async fn admin(&self) -> String {
        token(&self.signed_in("admin@emporium.test", "emporium-admin").await, "access_token")
    }

    /// Puts a product on sale as `seller`; returns it.
    pub async fn product(&self, seller: &str, name: &str, amount: i64) -> Value {
        let body = json!({ "name": name, "description": format!("{name}, well made"), "price": { "amount": amount, "currency": "EUR" } });
        let response = self.send_as(seller, Method::POST, "/api/v1/products", &body).await;
        assert_eq!(response.status(), 201, "creating {name}");
        response.json().await.unwrap()
    }

    /// Sets a product's stock as `owner`, retrying while inventory has not learned of it yet.
    pub async fn stock(&self, owner: &str, product: &str, quantity: u32) -> Value {
        let path = format!("/api/v1/products/{product}/stock");
        for _ in 0..200 {
            let response = self.send_as(owner, Method::PUT, &path, &json!({ "quantity": quantity })).await;
            if response.status() != 503 {
                assert_eq!(response.status(), 200, "setting stock");
                return response.json().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("inventory never learned of {product}");
    }
}

/// What every service consumes.
pub fn subscriptions() -> Vec<Subscription> {
    [
        emporium_catalog::subscriptions(),
        emporium_inventory::subscriptions(),
        emporium_order::subscriptions(),
        emporium_payment::subscriptions(),
        emporium_shipping::subscriptions(),
        emporium_notification::subscriptions(),
    ]
    .concat()
}

/// A private NATS server with every stream, bucket and consumer of the services, one partition.
pub async fn provisioned_nats() -> TestNats {
    let nats = TestNats::start().await.unwrap();
    provision(&async_nats::jetstream::new(nats.client().clone()), &Topology::new(1, subscriptions())).await.unwrap();
    nats
}

/// Asks services whether they are up.
#[derive(Debug)]
pub struct Probe(emporium_nats::Caller);

impl Probe {
    /// Whether `command` got a reply: any, even a refusal ("sign in first",
    /// "overloaded"), means its service is subscribed.
    pub async fn answers<C: Command>(&self, key: Option<EntityKey>, command: C) -> bool {
        self.0.call::<_, Value>(&CommandEnvelope::new(key, None, command), "probe").await.is_ok()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.identity_stop.cancel();
        self.gateway_stop.cancel();
        self.catalog_stop.cancel();
        self.commerce_stop.cancel();
    }
}

/// Asserts `response` is a problem with `status` and returns its body.
pub async fn problem(response: Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    let body: Value = response.json().await.unwrap();
    assert!(body["type"].as_str().unwrap().starts_with("https://emporium.dev/problems/"), "{body}");
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string() && body["detail"].is_string(), "{body}");
    body
}

pub fn token(session: &Value, field: &str) -> String {
    session[field].as_str().unwrap().to_owned()
}

/// Reads with `read` until `reached` holds for the reading, then returns it;
/// past [`PATIENCE`] fails with `failure` and the last reading.
pub async fn read_until<F, Fut>(failure: &str, mut read: F, reached: impl Fn(&Value) -> bool) -> Value
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Value>,
{
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let value = read().await;
        if reached(&value) {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "{failure}: {value:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A benchmark's setting from the environment, else `default`.
pub fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs `clients` loops of `request` for `secs` (benchmarks); returns (ok per second, p50, p99).
pub async fn drive<F, Fut>(clients: u64, secs: u64, request: F) -> (f64, Duration, Duration)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let request = std::sync::Arc::new(request);
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0_u64;
            while std::time::Instant::now() < until {
                let at = std::time::Instant::now();
                if request().await {
                    latencies.push(at.elapsed());
                } else {
                    failed += 1;
                }
            }
            (latencies, failed)
        }));
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    for task in tasks {
        let (mine, failures) = task.await.unwrap();
        latencies.extend(mine);
        failed += failures;
    }
    assert_eq!(failed, 0, "requests failed during the benchmark");
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    (latencies.len() as f64 / elapsed, at(0.50), at(0.99))
}

pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
