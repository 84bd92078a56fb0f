//! The cart service against real Redis, a private NATS server and the real
//! catalog (on a fresh database). `cmd.order.place` is answered by a small
//! responder on the same NATS server that records each request and answers
//! as the test says: accept, refuse, or stay silent.
//!
//! Covered: lines priced by the catalog and its answers reused; limits per
//! line and per cart; who may use a cart; concurrent edits serialized by the
//! actor; the time to live; the compare-and-set commit; checkout freeze,
//! resume, completion and thaw; the same key with another body; and stale
//! freezes resolved by the next command.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use emporium_actors::{CommitMeta, EntityStore, StoreError};
use emporium_cart::domain::{Cart, CartState};
use emporium_cart::store::RedisStore;
use emporium_cart::{CartSettings, Dependencies};
use emporium_nats::{Caller, ManualClock, Topology, provision};
use emporium_schemas::commands::cart::{AddItem, CartLine, CartView, Checkout, GetCart, RemoveItem, SetQuantity};
use emporium_schemas::commands::catalog::{CreateProduct, ListCategories, ProductView, UpdateProduct};
use emporium_schemas::commands::order::{OrderAccepted, PlaceOrder};
use emporium_schemas::values::{Currency, Money, ProductId, Role, UserId};
use emporium_schemas::{Command, CommandEnvelope, EntityKey, ErrorKind, Partition, Principal, Reply, ReplyError};
use emporium_test_harness::{TestDatabase, TestNats, TestRedis, eventually};
use fred::interfaces::KeysInterface as _;
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

const PARTITIONS: u16 = 2;
const TTL: Duration = Duration::from_secs(3600);
const FREEZE: Duration = Duration::from_secs(30);

/// How the stand-in order service answers `cmd.order.place`.
#[derive(Debug, Clone)]
enum OrderAnswer {
    Accept,
    Refuse(ReplyError),
    Silent,
}

/// A cart service with everything it talks to, for one test.
struct World {
    nats: TestNats,
    redis: TestRedis,
    _catalog_db: TestDatabase,
    clock: ManualClock,
    stop: CancellationToken,
    seller: Principal,
    order_answer: Arc<Mutex<OrderAnswer>>,
    placed: Arc<Mutex<Vec<CommandEnvelope<PlaceOrder>>>>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn euros(amount: i64) -> Money {
    Money { amount: amount.try_into().unwrap(), currency: Currency::try_from("EUR".to_owned()).unwrap() }
}

fn checkout(key: &str, payment_method: &str) -> Checkout {
    serde_json::from_value(serde_json::json!({
        "idempotency_key": key,
        "shipping_address": {"name": "Ada", "line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"},
        "payment_method": payment_method,
    }))
    .unwrap()
}

fn ok<T: std::fmt::Debug>(reply: Reply<T>) -> T {
    match reply {
        Reply::Ok(answer) => answer,
        Reply::Error(error) => panic!("refused: {error:?}"),
    }
}

fn refusal<T: std::fmt::Debug>(reply: Reply<T>) -> ReplyError {
    match reply {
        Reply::Error(error) => error,
        Reply::Ok(answer) => panic!("expected a refusal, got {answer:?}"),
    }
}

fn quantities(view: &CartView) -> Vec<(ProductId, u32)> {
    view.lines.iter().map(|line| (line.product_id, line.quantity.get())).collect()
}

impl World {
    async fn start() -> Self {
        Self::with(|_| {}).await
    }

    async fn with(adjust: impl FnOnce(&mut CartSettings)) -> Self {
        let nats = TestNats::start().await.unwrap();
        let jetstream = async_nats::jetstream::new(nats.client().clone());
        provision(&jetstream, &Topology::new(PARTITIONS, emporium_catalog::subscriptions())).await.unwrap();
        let redis = TestRedis::connect().await.unwrap();
        let catalog_db = TestDatabase::create().await.unwrap();
        let stop = CancellationToken::new();
        let clock = ManualClock::at(Utc::now());

        let catalog = emporium_catalog::Dependencies {
            pool: catalog_db.pool().clone(),
            nats: nats.client().clone(),
            partitions: PARTITIONS,
            clock: Arc::new(emporium_nats::SystemClock),
        };
        let catalog_settings = emporium_catalog::CatalogSettings::from_source(|_| None).unwrap();
        tokio::spawn(emporium_catalog::run(catalog_settings, catalog, stop.clone()));

        let mut settings = CartSettings::from_source(|_| None).unwrap();
        settings.ttl = TTL;
        settings.freeze_for = FREEZE;
        // A silent order service is given up on quickly; the value is no assertion.
        settings.order_timeout = Duration::from_millis(300);
        adjust(&mut settings);
        let deps = Dependencies {
            nats: nats.client().clone(),
            redis: redis.client().clone(),
            redis_prefix: redis.prefix().to_owned(),
            partitions: PARTITIONS,
            clock: Arc::new(clock.clone()),
        };
        tokio::spawn(emporium_cart::run(settings, deps, stop.clone()));

        let world = Self {
            nats,
            redis,
            _catalog_db: catalog_db,
            clock,
            stop,
            seller: Principal { user_id: UserId::new_v7(), role: Role::Seller },
            order_answer: Arc::new(Mutex::new(OrderAnswer::Accept)),
            placed: Arc::new(Mutex::new(Vec::new())),
        };
        world.answer_orders().await;
        world.wait_until_up().await;
        world
    }

    /// The stand-in for the order service: records every `cmd.order.place`
    /// and answers it as `order_answer` says.
    async fn answer_orders(&self) {
        let client = self.nats.client().clone();
        let mut requests = client.subscribe("cmd.order.place.*").await.unwrap();
        let (answer, placed, stop) = (self.order_answer.clone(), self.placed.clone(), self.stop.clone());
        tokio::spawn(async move {
            loop {
                let request = tokio::select! {
                    () = stop.cancelled() => break,
                    request = requests.next() => match request { Some(request) => request, None => break },
                };
                let command = CommandEnvelope::<PlaceOrder>::from_json(&request.payload).unwrap();
                let order_id = command.data.order_id;
                placed.lock().unwrap().push(command);
                let reply = match answer.lock().unwrap().clone() {
                    OrderAnswer::Accept => Reply::Ok(OrderAccepted { order_id }),
                    OrderAnswer::Refuse(error) => Reply::Error(error),
                    OrderAnswer::Silent => continue,
                };
                if let Some(reply_to) = request.reply {
                    client.publish(reply_to, serde_json::to_vec(&reply).unwrap().into()).await.unwrap();
                }
            }
        });
    }

    async fn wait_until_up(&self) {
        let probe = Principal { user_id: UserId::new_v7(), role: Role::Customer };
        let up = eventually(Duration::from_secs(20), || async {
            let caller = Caller::new(self.nats.client().clone(), Duration::from_millis(500));
            let categories = CommandEnvelope::new(None, None, ListCategories {});
            let catalog = caller.call::<_, serde_json::Value>(&categories, "probe");
            let cart = self.try_send::<GetCart, CartView>(probe, probe.user_id, GetCart {});
            catalog.await.is_ok() && cart.await.is_some()
        })
        .await;
        assert!(up, "the catalog or the cart never answered");
    }

    fn answer_orders_with(&self, answer: OrderAnswer) {
        *self.order_answer.lock().unwrap() = answer;
    }

    fn placed(&self) -> Vec<CommandEnvelope<PlaceOrder>> {
        self.placed.lock().unwrap().clone()
    }

    async fn try_send<C: Command + Serialize, A: DeserializeOwned>(
        &self,
        principal: Principal,
        owner: UserId,
        data: C,
    ) -> Option<Reply<A>> {
        let caller = Caller::new(self.nats.client().clone(), Duration::from_secs(10)).with_partitions(PARTITIONS);
        let command = CommandEnvelope::new(Some(EntityKey::from(*owner.as_uuid())), Some(principal), data);
        caller.call(&command, "test").await.ok()
    }

    /// Sends a cart command as `customer`, for their own cart.
    async fn send<C: Command + Serialize, A: DeserializeOwned>(&self, customer: Principal, data: C) -> Reply<A> {
        self.try_send(customer, customer.user_id, data).await.expect("the cart service answers")
    }

    async fn view(&self, customer: Principal) -> CartView {
        ok(self.send(customer, GetCart {}).await)
    }

    async fn add(&self, customer: Principal, product_id: ProductId, quantity: u32) -> Reply<CartView> {
        self.send(customer, AddItem { product_id, quantity: quantity.try_into().unwrap() }).await
    }

    async fn set(&self, customer: Principal, product_id: ProductId, quantity: u32) -> Reply<CartView> {
        self.send(customer, SetQuantity { product_id, quantity: quantity.try_into().unwrap() }).await
    }

    async fn check_out(&self, customer: Principal, request: Checkout) -> Reply<OrderAccepted> {
        self.send(customer, request).await
    }

    /// A product put on sale in the catalog by the test's seller.
    async fn product(&self, name: &str, price: i64) -> ProductId {
        let caller = Caller::new(self.nats.client().clone(), Duration::from_secs(10));
        let create =
            CreateProduct { name: name.to_owned(), description: String::new(), price: euros(price), category_id: None };
        let created: Reply<ProductView> =
            caller.call(&CommandEnvelope::new(None, Some(self.seller), create), "test").await.unwrap();
        ok(created).id
    }

    async fn reprice(&self, product_id: ProductId, price: i64) {
        let caller = Caller::new(self.nats.client().clone(), Duration::from_secs(10));
        let update = UpdateProduct {
            product_id: Some(product_id),
            name: None,
            description: None,
            price: Some(euros(price)),
            category_id: None,
        };
        let updated: Reply<ProductView> =
            caller.call(&CommandEnvelope::new(None, Some(self.seller), update), "test").await.unwrap();
        ok(updated);
    }

    fn store(&self) -> RedisStore {
        RedisStore::new(self.redis.client().clone(), self.redis.prefix(), TTL)
    }

    async fn ttl_ms(&self, customer: Principal) -> i64 {
        self.redis.client().pttl(self.store().key(&customer.user_id)).await.unwrap()
    }
}

fn customer() -> Principal {
    Principal { user_id: UserId::new_v7(), role: Role::Customer }
}

#[tokio::test]
async fn lines_are_added_changed_and_removed_at_the_catalog_s_price() {
    let world = World::start().await;
    let (teapot, cups) = (world.product("Teapot", 2500).await, world.product("Cups", 400).await);
    let ada = customer();
    assert_eq!(world.view(ada).await.version, 0, "a cart never written");

    ok(world.add(ada, teapot, 1).await);
    let view = ok(world.add(ada, teapot, 2).await);
    assert_eq!(
        view.lines,
        vec![CartLine {
            product_id: teapot,
            name: "Teapot".to_owned(),
            quantity: 3.try_into().unwrap(),
            unit_price: euros(2500)
        }]
    );
    let view = ok(world.add(ada, cups, 4).await);
    assert_eq!(quantities(&view), vec![(teapot, 3), (cups, 4)]);
    assert_eq!(view.totals, vec![euros(3 * 2500 + 4 * 400)]);
    assert_eq!(view.version, 3);

    assert_eq!(quantities(&ok(world.set(ada, cups, 6).await)), vec![(teapot, 3), (cups, 6)]);
    let view: CartView = ok(world.send(ada, RemoveItem { product_id: teapot }).await);
    assert_eq!(quantities(&view), vec![(cups, 6)]);
    assert_eq!(world.view(ada).await, view);
}

#[tokio::test]
async fn a_product_the_catalog_does_not_know_is_refused_and_one_not_in_the_cart_is_not_found() {
    let world = World::start().await;
    let ada = customer();
    let unknown = ProductId::new_v7();
    let error = refusal(world.add(ada, unknown, 1).await);
    assert_eq!((error.kind, error.field.as_deref()), (ErrorKind::Invalid, Some("product_id")));

    let teapot = world.product("Teapot", 2500).await;
    ok(world.add(ada, teapot, 1).await);
    let other = world.product("Cups", 400).await;
    assert_eq!(refusal(world.set(ada, other, 2).await).kind, ErrorKind::NotFound);
    let removed: Reply<CartView> = world.send(ada, RemoveItem { product_id: other }).await;
    assert_eq!(refusal(removed).kind, ErrorKind::NotFound);
    assert_eq!(quantities(&world.view(ada).await), vec![(teapot, 1)]);
}

#[tokio::test]
async fn a_line_holds_at_most_ninety_nine() {
    let world = World::start().await;
    let teapot = world.product("Teapot", 2500).await;
    let ada = customer();
    ok(world.add(ada, teapot, 99).await);
    for refused in [world.add(ada, teapot, 1).await, world.set(ada, teapot, 100).await] {
        let error = refusal(refused);
        assert_eq!((error.kind, error.field.as_deref()), (ErrorKind::Invalid, Some("quantity")));
    }
    let other = world.product("Cups", 400).await;
    assert_eq!(refusal(world.add(ada, other, 100).await).field.as_deref(), Some("quantity"));
    assert_eq!(quantities(&world.view(ada).await), vec![(teapot, 99)]);
}

#[tokio::test]
async fn fifty_concurrent_adds_of_different_products_all_land_and_a_fifty_first_product_is_refused() {
    let world = World::start().await;
    let mut products = Vec::new();
    for i in 0..51 {
        products.push(world.product(&format!("Product {i}"), 100 + i).await);
    }
    let ada = customer();
    let adds = products[..50].iter().map(|product| world.add(ada, *product, 1));
    for reply in futures::future::join_all(adds).await {
        ok(reply);
    }
    let view = world.view(ada).await;
    assert_eq!(view.lines.len(), 50);
    assert_eq!(view.version, 50, "every add committed once");

    let error = refusal(world.add(ada, products[50], 1).await);
    assert_eq!((error.kind, error.field.as_deref()), (ErrorKind::Invalid, Some("cart")));
    ok(world.add(ada, products[0], 1).await);
}

#[tokio::test]
async fn fifty_concurrent_adds_of_one_product_make_fifty() {
    let world = World::start().await;
    let teapot = world.product("Teapot", 2500).await;
    let ada = customer();
    let adds = (0..50).map(|_| world.add(ada, teapot, 1));
    for reply in futures::future::join_all(adds).await {
        ok(reply);
    }
    let view = world.view(ada).await;
    assert_eq!(quantities(&view), vec![(teapot, 50)]);
    assert_eq!(view.version, 50);
}

#[tokio::test]
async fn only_its_signed_in_owner_may_use_a_cart() {
    let world = World::start().await;
    let (ada, eve) = (customer(), customer());
    let teapot = world.product("Teapot", 2500).await;
    ok(world.add(ada, teapot, 1).await);

    let peek: Reply<CartView> = world.try_send(eve, ada.user_id, GetCart {}).await.unwrap();
    assert_eq!(refusal(peek).kind, ErrorKind::Forbidden);
    let admin = Principal { user_id: UserId::new_v7(), role: Role::Admin };
    let meddle: Reply<CartView> = world
        .try_send(admin, ada.user_id, AddItem { product_id: teapot, quantity: 1.try_into().unwrap() })
        .await
        .unwrap();
    assert_eq!(refusal(meddle).kind, ErrorKind::Forbidden);

    // Anonymous, and sent to a partition the key does not belong to, straight on the subject.
    let key = EntityKey::from(*ada.user_id.as_uuid());
    let raw = |subject: String, principal: Option<Principal>| {
        let body = CommandEnvelope::new(Some(key.clone()), principal, GetCart {}).to_json().unwrap();
        let client = world.nats.client().clone();
        async move {
            let answer = client.request(subject, body.into()).await.unwrap();
            serde_json::from_slice::<Reply<CartView>>(&answer.payload).unwrap()
        }
    };
    let own = Partition::of(&key, PARTITIONS);
    let other = Partition::all(PARTITIONS).find(|partition| *partition != own).unwrap();
    assert_eq!(refusal(raw(GetCart::TYPE.subject(Some(own)), None).await).kind, ErrorKind::Unauthenticated);
    let misrouted = refusal(raw(GetCart::TYPE.subject(Some(other)), Some(ada)).await);
    assert_eq!(misrouted.kind, ErrorKind::Invalid);
    assert!(misrouted.message.contains("does not belong to partition"), "{}", misrouted.message);
    assert_eq!(quantities(&world.view(ada).await), vec![(teapot, 1)]);
}

#[tokio::test]
async fn a_catalog_answer_is_reused_for_the_cache_period_then_asked_again() {
    let world = World::start().await;
    let teapot = world.product("Teapot", 2500).await;
    let ada = customer();
    ok(world.add(ada, teapot, 1).await);
    world.reprice(teapot, 3000).await;
    let view = ok(world.add(ada, teapot, 1).await);
    assert_eq!(view.lines[0].unit_price, euros(2500), "within the cache period the first answer is reused");

    world.clock.advance(Duration::from_millis(5000));
    let view = ok(world.set(ada, teapot, 2).await);
    assert_eq!(view.lines[0].unit_price, euros(3000), "after it the catalog is asked again");
    assert_eq!(view.totals, vec![euros(6000)]);
}

#[tokio::test]
async fn a_cart_lives_as_long_as_it_is_used() {
    let world = World::start().await;
    let teapot = world.product("Teapot", 2500).await;
    let ada = customer();
    ok(world.add(ada, teapot, 1).await);
    let ttl = i64::try_from(TTL.as_millis()).unwrap();
    assert!(world.ttl_ms(ada).await > ttl - 60_000, "a commit sets the time to live");

    let key = world.store().key(&ada.user_id);
    let _: bool = world.redis.client().pexpire(key.as_str(), 20_000, None).await.unwrap();
    world.view(ada).await;
    assert!(world.ttl_ms(ada).await > 20_000, "a read starts it over");

    let _: bool = world.redis.client().pexpire(key.as_str(), 20_000, None).await.unwrap();
    ok(world.set(ada, teapot, 2).await);
    assert!(world.ttl_ms(ada).await > 20_000, "so does a change");
}

#[tokio::test]
async fn a_commit_on_a_stale_version_is_a_conflict() {
    let redis = TestRedis::connect().await.unwrap();
    let store = RedisStore::new(redis.client().clone(), redis.prefix(), TTL);
    let user = UserId::new_v7();
    let meta = CommitMeta::default();
    let fresh = store.load(&user).await.unwrap();
    assert_eq!((fresh.version, &fresh.state), (0, &CartState::default()));

    let state = CartState::default();
    // Only the number of events matters to the store: it moves the version by as many.
    let events = [emporium_cart::domain::CartEvent::CheckoutThawed];
    EntityStore::<Cart>::commit(&store, &user, 0, &events, &state, &meta).await.unwrap();
    let stale = EntityStore::<Cart>::commit(&store, &user, 0, &events, &state, &meta).await;
    assert_eq!(stale, Err(StoreError::Conflict { expected: 0, found: 1 }));
    let ahead = EntityStore::<Cart>::commit(&store, &user, 5, &events, &state, &meta).await;
    assert_eq!(ahead, Err(StoreError::Conflict { expected: 5, found: 1 }));
    EntityStore::<Cart>::commit(&store, &user, 1, &events, &state, &meta).await.unwrap();
    assert_eq!(store.load(&user).await.unwrap().version, 2);
}

#[tokio::test]
async fn a_write_behind_the_actor_s_back_is_not_lost() {
    let world = World::start().await;
    let (teapot, cups, saucers) =
        (world.product("Teapot", 2500).await, world.product("Cups", 400).await, world.product("Saucers", 300).await);
    let ada = customer();
    ok(world.add(ada, teapot, 1).await);

    // Another writer (an instance taking over the partition) changes the cart.
    let store = world.store();
    let mut stored = store.read(&ada.user_id).await.unwrap();
    let mut line = stored.state.lines[0].clone();
    line.product_id = cups;
    stored.state.lines.push(line);
    let events = [emporium_cart::domain::CartEvent::CheckoutThawed];
    EntityStore::<Cart>::commit(&store, &ada.user_id, stored.version, &events, &stored.state, &CommitMeta::default())
        .await
        .unwrap();

    // The actor's copy is stale: its commit conflicts, it reloads and decides again.
    let view = ok(world.add(ada, saucers, 1).await);
    assert_eq!(quantities(&view), vec![(teapot, 1), (cups, 1), (saucers, 1)]);
    assert_eq!(view.version, 3);
}

#[tokio::test]
async fn a_checkout_places_the_order_then_empties_the_cart_and_a_retry_gets_the_same_order() {
    let world = World::start().await;
    let (teapot, cups) = (world.product("Teapot", 2500).await, world.product("Cups", 400).await);
    let ada = customer();
    ok(world.add(ada, teapot, 1).await);
    ok(world.add(ada, cups, 4).await);

    let request = checkout("k1", "tok_visa");
    let accepted = ok(world.check_out(ada, request.clone()).await);
    assert_eq!(accepted.order_id, request.order_id(&ada.user_id));
    let placed = world.placed();
    assert_eq!(placed.len(), 1);
    let order = &placed[0];
    assert_eq!(order.key, Some(EntityKey::from(*accepted.order_id.as_uuid())));
    assert_eq!(order.principal, Some(ada));
    assert_eq!(order.data.customer_id, ada.user_id);
    assert_eq!(order.data.idempotency_key, request.idempotency_key);
    assert_eq!(order.data.request_digest.as_str(), request.request_digest());
    assert_eq!(order.data.shipping_address, request.shipping_address);
    let lines: Vec<(ProductId, u32)> =
        order.data.lines.as_slice().iter().map(|line| (line.product_id, line.quantity.get())).collect();
    assert_eq!(lines, vec![(teapot, 1), (cups, 4)]);

    let view = world.view(ada).await;
    assert!(view.lines.is_empty() && view.checkout.is_none());

    assert_eq!(ok(world.check_out(ada, request.clone()).await), accepted, "the same key, the same order");
    assert_eq!(world.placed().len(), 1, "answered from the cart's memory");
    let error = refusal(world.check_out(ada, checkout("k1", "tok_declined")).await);
    assert_eq!((error.kind, error.field.as_deref()), (ErrorKind::Invalid, Some("idempotency_key")));

    let empty = refusal(world.check_out(ada, checkout("k2", "tok_visa")).await);
    assert_eq!((empty.kind, empty.field.as_deref()), (ErrorKind::Invalid, Some("cart")));
    assert_eq!(world.placed().len(), 1);
}

#[tokio::test]
async fn a_refused_order_thaws_the_cart_with_its_lines() {
    let world = World::start().await;
    let teapot = world.product("Teapot", 2500).await;
    let ada = customer();
    ok(world.add(ada, teapot, 2).await);
    world.answer_orders_with(OrderAnswer::Refuse(ReplyError::invalid("lines", "a product is no longer sold")));

    let error = refusal(world.check_out(ada, checkout("k1", "tok_visa")).await);
    assert_eq!((error.kind, error.field.as_deref()), (ErrorKind::Invalid, Some("lines")));
    let view = world.view(ada).await;
    assert_eq!(quantities(&view), vec![(teapot, 2)]);
    assert!(view.checkout.is_none());
    ok(world.add(ada, teapot, 1).await);

    world.answer_orders_with(OrderAnswer::Refuse(ReplyError::new(ErrorKind::Conflict, "busy")));
    assert_eq!(refusal(world.check_out(ada, checkout("k2", "tok_visa")).await).kind, ErrorKind::Conflict);
    assert_eq!(quantities(&world.view(ada).await), vec![(teapot, 3)]);
}

#[tokio::test]
async fn an_unanswered_checkout_keeps_the_cart_frozen_until_a_retry_with_its_key_completes_it() {
    let world = World::start().await;
    let teapot = world.product("Teapot", 2500).await;
    let ada = customer();
    ok(world.add(ada, teapot, 2).await);
    world.answer_orders_with(OrderAnswer::Silent);

    let request = checkout("k1", "tok_visa");
    assert_eq!(refusal(world.check_out(ada, request.clone()).await).kind, ErrorKind::Overloaded);
    let view = world.view(ada).await;
    assert_eq!(view.checkout.as_ref().map(|frozen| frozen.order_id), Some(request.order_id(&ada.user_id)));
    assert_eq!(quantities(&view), vec![(teapot, 2)]);

    let in_progress = refusal(world.add(ada, teapot, 1).await);
    assert_eq!((in_progress.kind, in_progress.message.as_str()), (ErrorKind::Conflict, "a checkout is in progress"));
    assert_eq!(refusal(world.set(ada, teapot, 1).await).kind, ErrorKind::Conflict);
    assert_eq!(refusal(world.check_out(ada, checkout("k2", "tok_visa")).await).kind, ErrorKind::Conflict);
    let reused = refusal(world.check_out(ada, checkout("k1", "tok_declined")).await);
    assert_eq!(reused.field.as_deref(), Some("idempotency_key"));
    assert_eq!(world.placed().len(), 1, "a fresh freeze is not placed again by other commands");

    world.answer_orders_with(OrderAnswer::Accept);
    let accepted = ok(world.check_out(ada, request.clone()).await);
    assert_eq!(accepted.order_id, request.order_id(&ada.user_id));
    let placed = world.placed();
    assert_eq!(placed.len(), 2);
    assert_eq!(placed[0].data, placed[1].data, "the retry places the very same order");
    let view = world.view(ada).await;
    assert!(view.lines.is_empty() && view.checkout.is_none());
}

#[tokio::test]
async fn a_stale_freeze_whose_order_exists_completes_before_the_next_command() {
    let world = World::start().await;
    let (teapot, cups) = (world.product("Teapot", 2500).await, world.product("Cups", 400).await);
    let ada = customer();
    ok(world.add(ada, teapot, 2).await);
    world.answer_orders_with(OrderAnswer::Silent);
    let request = checkout("k1", "tok_visa");
    assert_eq!(refusal(world.check_out(ada, request.clone()).await).kind, ErrorKind::Overloaded);

    world.clock.advance(FREEZE);
    world.answer_orders_with(OrderAnswer::Accept);
    let view = ok(world.add(ada, cups, 1).await);
    assert_eq!(quantities(&view), vec![(cups, 1)], "the frozen lines went into the order; the new one stays");
    let placed = world.placed();
    assert_eq!(placed.len(), 2);
    assert_eq!(placed[1].data.order_id, request.order_id(&ada.user_id));
    assert_eq!(ok(world.check_out(ada, request.clone()).await).order_id, request.order_id(&ada.user_id));
    assert_eq!(world.placed().len(), 2, "the completed checkout is remembered");
}

#[tokio::test]
async fn a_stale_freeze_whose_order_is_refused_thaws_before_the_next_command() {
    let world = World::start().await;
    let (teapot, cups) = (world.product("Teapot", 2500).await, world.product("Cups", 400).await);
    let ada = customer();
    ok(world.add(ada, teapot, 2).await);
    world.answer_orders_with(OrderAnswer::Silent);
    assert_eq!(refusal(world.check_out(ada, checkout("k1", "tok_visa")).await).kind, ErrorKind::Overloaded);

    world.clock.advance(FREEZE + Duration::from_secs(1));
    world.answer_orders_with(OrderAnswer::Refuse(ReplyError::invalid("lines", "a product is no longer sold")));
    let view = ok(world.add(ada, cups, 1).await);
    assert_eq!(quantities(&view), vec![(teapot, 2), (cups, 1)]);
    assert!(view.checkout.is_none());
    assert_eq!(world.placed().len(), 2);
}

#[tokio::test]
async fn a_stale_freeze_is_resolved_by_a_read_and_by_a_checkout_under_another_key() {
    let world = World::start().await;
    let teapot = world.product("Teapot", 2500).await;
    let (ada, bob) = (customer(), customer());
    for customer in [ada, bob] {
        ok(world.add(customer, teapot, 1).await);
    }
    world.answer_orders_with(OrderAnswer::Silent);
    for customer in [ada, bob] {
        assert_eq!(refusal(world.check_out(customer, checkout("k1", "tok_visa")).await).kind, ErrorKind::Overloaded);
    }
    world.clock.advance(FREEZE);

    // Still no answer: the read shows the checkout in flight.
    assert!(world.view(ada).await.checkout.is_some());

    world.answer_orders_with(OrderAnswer::Accept);
    let view = world.view(ada).await;
    assert!(view.lines.is_empty() && view.checkout.is_none(), "read after the stale checkout completed");

    // Bob's stale checkout completes, then his new one finds the cart empty.
    let empty = refusal(world.check_out(bob, checkout("k2", "tok_visa")).await);
    assert_eq!((empty.kind, empty.field.as_deref()), (ErrorKind::Invalid, Some("cart")));
    let bob_orders = world.placed().iter().filter(|order| order.data.customer_id == bob.user_id).count();
    assert_eq!(bob_orders, 2);
}
