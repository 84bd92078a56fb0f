//! Reviews in the catalog against real Postgres and a private NATS server,
//! driven by `order.delivered` on its subject and commands over
//! request/reply: who may review, once, the rating kept exact under
//! concurrent reviews, the event committed with the review, redelivered
//! orders recorded once, and pages of reviews newest first.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use emporium_catalog::CatalogSettings;
use emporium_catalog::projection::PURCHASES_CONSUMER;
use emporium_nats::OutgoingEvent;
use emporium_schemas::commands::catalog::{
    AddReview, CreateProduct, DeleteProduct, GetProduct, ListReviews, ProductView, ReviewPage, ReviewView,
};
use emporium_schemas::events::order::OrderDelivered;
use emporium_schemas::values::{Currency, Money, OrderId, ProductId, ProductQuantity, Role, ShipmentId, UserId};
use emporium_schemas::{Command, CommandEnvelope, Envelope, ErrorKind, Principal, Reply, ReplyError};
use emporium_test_harness::events::event;
use emporium_test_harness::{TestService, eventually};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use uuid::Uuid;

struct World {
    service: TestService,
    seller: Principal,
}

fn customer() -> Principal {
    Principal { user_id: UserId::new_v7(), role: Role::Customer }
}

fn review(product: ProductId, rating: u8) -> AddReview {
    AddReview {
        product_id: Some(product),
        rating,
        title: format!("{rating} stars"),
        body: "Does what it says.".to_owned(),
    }
}

impl World {
    async fn start() -> Self {
        let service =
            TestService::prepare(1, emporium_catalog::subscriptions(), emporium_catalog::store::migrate).await.unwrap();
        let deps = service.dependencies(std::sync::Arc::new(emporium_nats::SystemClock));
        let settings = CatalogSettings::from_source(|_| None).unwrap();
        service.spawn(|stop| emporium_catalog::run(settings, deps, stop));
        service.until_answering("the catalog", GetProduct { product_id: ProductId::new_v7() }).await.unwrap();
        Self { service, seller: Principal { user_id: UserId::new_v7(), role: Role::Seller } }
    }

    fn pool(&self) -> &PgPool {
        self.service.pool()
    }

    async fn send<C: Command, A: DeserializeOwned>(
        &self,
        principal: Option<Principal>,
        data: C,
    ) -> Result<A, ReplyError> {
        match self.service.caller().call(&CommandEnvelope::new(None, principal, data), "test").await.unwrap() {
            Reply::Ok(answer) => Ok(answer),
            Reply::Error(error) => Err(error),
        }
    }

    async fn product(&self) -> ProductId {
        let create = CreateProduct {
            name: "Walnut desk lamp".into(),
            description: String::new(),
            price: Money { amount: 2500.try_into().unwrap(), currency: Currency::try_from("EUR".to_owned()).unwrap() },
            category_id: None,
        };
        let product: ProductView = self.send(Some(self.seller), create).await.unwrap();
        product.id
    }

    async fn view(&self, product: ProductId) -> ProductView {
        self.send(None, GetProduct { product_id: product }).await.unwrap()
    }

    /// `order.delivered` of a new order of `customer` holding `products`.
    fn delivered(customer: Principal, products: &[ProductId]) -> OutgoingEvent {
        let order = OrderId::new_v7();
        let lines: Vec<ProductQuantity> = products
            .iter()
            .map(|product| ProductQuantity { product_id: *product, quantity: 1.try_into().unwrap() })
            .collect();
        let data = OrderDelivered {
            order_id: order,
            customer_id: customer.user_id,
            shipment_id: ShipmentId::new_v7(),
            lines: lines.try_into().unwrap(),
        };
        event(*order.as_uuid(), 5, data)
    }

    async fn purchases_of(&self, customer: Principal) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM verified_purchases WHERE customer_id = $1")
            .bind(customer.user_id.as_uuid())
            .fetch_one(self.pool())
            .await
            .unwrap()
    }

    /// Publishes a delivered order of `products` for `customer` and waits until the catalog recorded it.
    async fn deliver(&self, customer: Principal, products: &[ProductId]) {
        let before = self.purchases_of(customer).await;
        self.service.publisher().publish_all(&[Self::delivered(customer, products)]).await.unwrap();
        let recorded =
            eventually(Duration::from_secs(20), || async { self.purchases_of(customer).await > before }).await;
        assert!(recorded, "the delivered order never reached the catalog");
    }
}

#[tokio::test]
async fn a_customer_with_a_delivered_order_reviews_once_and_the_product_shows_it_at_once() {
    let world = World::start().await;
    let lamp = world.product().await;
    let buyer = customer();
    // Read (and cache) the product before the review.
    assert_eq!(world.view(lamp).await.rating.count, 0);
    world.deliver(buyer, &[lamp]).await;

    let mut events = world.service.nats().client().subscribe("evt.catalog.review_added.>").await.unwrap();
    let added: ReviewView = world.send(Some(buyer), review(lamp, 4)).await.unwrap();
    assert_eq!((added.product_id, added.author_id, added.rating.get()), (lamp, buyer.user_id, 4));
    assert_eq!((added.title.as_str(), added.body.as_str()), ("4 stars", "Does what it says."));

    // No stale read from the cache: the acknowledged review is in the rating.
    let rating = world.view(lamp).await.rating;
    assert_eq!((rating.average, rating.count), (Some(4.0), 1));

    let again = world.send::<_, ReviewView>(Some(buyer), review(lamp, 5)).await.unwrap_err();
    assert_eq!(again.kind, ErrorKind::Conflict, "{again:?}");
    assert_eq!(world.view(lamp).await.rating.count, 1, "a refused review changes nothing");

    // The event went out through the outbox, keyed by the product, as its second version.
    let message = tokio::time::timeout(Duration::from_secs(20), events.next()).await.unwrap().unwrap();
    let event: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(event["type"], "catalog.review_added");
    assert_eq!(event["key"], lamp.to_string());
    assert_eq!(event["seq"], 2);
    assert_eq!(event["data"]["review_id"], added.id.to_string());
    assert_eq!(event["data"]["author_id"], buyer.user_id.to_string());
    assert_eq!(event["data"]["rating"], 4);
}

#[tokio::test]
async fn only_customers_who_received_the_product_may_review_it_and_never_its_seller() {
    let world = World::start().await;
    let (lamp, rug) = (world.product().await, world.product().await);
    let buyer = customer();
    world.deliver(buyer, &[rug]).await;

    // A delivered order of another product is not enough.
    let stranger = world.send::<_, ReviewView>(Some(buyer), review(lamp, 5)).await.unwrap_err();
    assert_eq!(stranger.kind, ErrorKind::Forbidden);
    assert!(stranger.message.contains("delivered order"), "{}", stranger.message);

    // Even with a delivered order of it, the seller may not rate their own product.
    world.deliver(world.seller, &[lamp]).await;
    let own = world.send::<_, ReviewView>(Some(world.seller), review(lamp, 5)).await.unwrap_err();
    assert_eq!(own.kind, ErrorKind::Forbidden);
    assert!(own.message.contains("own products"), "{}", own.message);

    let anonymous = world.send::<_, ReviewView>(None, review(rug, 5)).await.unwrap_err();
    assert_eq!(anonymous.kind, ErrorKind::Unauthenticated);
    assert_eq!(world.view(lamp).await.rating.count, 0);
}

#[tokio::test]
async fn bad_values_name_their_field_and_missing_products_are_not_found() {
    let world = World::start().await;
    let lamp = world.product().await;
    let buyer = customer();
    world.deliver(buyer, &[lamp]).await;

    for (rating, title, body, field) in [
        (0, "Fine", "Fine.", "rating"),
        (6, "Fine", "Fine.", "rating"),
        (5, " ", "Fine.", "title"),
        (5, "Fine", "", "body"),
    ] {
        let request = AddReview { product_id: Some(lamp), rating, title: title.into(), body: body.into() };
        let refused = world.send::<_, ReviewView>(Some(buyer), request).await.unwrap_err();
        assert_eq!((refused.kind, refused.field.as_deref()), (ErrorKind::Invalid, Some(field)));
    }

    let unknown = world.send::<_, ReviewView>(Some(buyer), review(ProductId::new_v7(), 5)).await.unwrap_err();
    assert_eq!(unknown.kind, ErrorKind::NotFound);
    let listed =
        world.send::<_, ReviewPage>(None, ListReviews { product_id: ProductId::new_v7(), cursor: None, limit: None });
    assert_eq!(listed.await.unwrap_err().kind, ErrorKind::NotFound);

    let () = world.send(Some(world.seller), DeleteProduct { product_id: lamp }).await.unwrap();
    let deleted = world.send::<_, ReviewView>(Some(buyer), review(lamp, 5)).await.unwrap_err();
    assert_eq!(deleted.kind, ErrorKind::NotFound);
}

#[tokio::test]
async fn the_rating_is_the_exact_mean_of_every_review_however_many_arrive_at_once() {
    let world = World::start().await;
    let lamp = world.product().await;
    let ratings: Vec<u8> = (0..30).map(|i| [5, 4, 4, 3, 1][i % 5]).collect();
    let buyers: Vec<Principal> = ratings.iter().map(|_| customer()).collect();
    for buyer in &buyers {
        world.deliver(*buyer, &[lamp]).await;
    }

    let reviews = buyers
        .iter()
        .zip(&ratings)
        .map(|(buyer, rating)| world.send::<_, ReviewView>(Some(*buyer), review(lamp, *rating)));
    for added in futures::future::join_all(reviews).await {
        added.unwrap();
    }

    let rating = world.view(lamp).await.rating;
    let sum: u32 = ratings.iter().map(|r| u32::from(*r)).sum();
    assert_eq!(rating.count, 30);
    assert_eq!(rating.average, Some(f64::from(sum) / 30.0));
    // Every review took its own version of the product: one event per seq, 2 to 31.
    let seqs: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM outbox WHERE type_name = 'catalog.review_added' ORDER BY position")
            .fetch_all(world.pool())
            .await
            .unwrap();
    assert_eq!(seqs, (2..=31).collect::<Vec<i64>>());
}

#[tokio::test]
async fn a_redelivered_order_records_each_product_once() {
    let world = World::start().await;
    let (lamp, rug) = (world.product().await, world.product().await);
    let buyer = customer();
    // The same event three times over (its lines naming the lamp twice),
    // published without a message id so JetStream's dedup lets every copy
    // through, as a replay after its window would; then another order of the lamp.
    let delivered = World::delivered(buyer, &[lamp, lamp, rug]);
    let jetstream = world.service.jetstream();
    for _ in 0..3 {
        jetstream.publish(delivered.subject(1), delivered.payload.clone()).await.unwrap().await.unwrap();
    }
    // Orders of different keys are handled concurrently: the second is
    // published once the copies are handled, so "first" means something.
    let handled = |through: u64| {
        let jetstream = jetstream.clone();
        async move {
            let mut consumer: async_nats::jetstream::consumer::PullConsumer =
                jetstream.get_consumer_from_stream("catalog-order-p00", "EVT_ORDER").await.unwrap();
            let info = consumer.info().await.unwrap();
            info.delivered.stream_sequence == through && info.num_pending == 0 && info.num_ack_pending == 0
        }
    };
    assert!(eventually(Duration::from_secs(20), || handled(3)).await, "the catalog never handled every copy");
    world.service.publisher().publish_all(&[World::delivered(buyer, &[lamp])]).await.unwrap();
    assert!(eventually(Duration::from_secs(20), || handled(4)).await, "the catalog never handled the second order");
    let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE consumer = $1")
        .bind(PURCHASES_CONSUMER)
        .fetch_one(world.pool())
        .await
        .unwrap();
    assert_eq!(inbox, 2, "two orders, each applied once");
    assert_eq!(world.purchases_of(buyer).await, 2, "one row per product received");
    let first: Uuid = sqlx::query_scalar("SELECT order_id FROM verified_purchases WHERE product_id = $1")
        .bind(lamp.as_uuid())
        .fetch_one(world.pool())
        .await
        .unwrap();
    let first_order: Envelope<OrderDelivered> = Envelope::from_json(&delivered.payload).unwrap();
    assert_eq!(first, *first_order.data.order_id.as_uuid(), "the first delivered order is kept");
}

#[tokio::test]
async fn reviews_come_newest_first_in_pages_that_never_overlap() {
    let world = World::start().await;
    let lamp = world.product().await;
    let mut written = Vec::new();
    for rating in [1, 2, 3, 4, 5] {
        let buyer = customer();
        world.deliver(buyer, &[lamp]).await;
        let added: ReviewView = world.send(Some(buyer), review(lamp, rating)).await.unwrap();
        written.push(added.id);
    }

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page: ReviewPage =
            world.send(None, ListReviews { product_id: lamp, cursor: cursor.clone(), limit: Some(2) }).await.unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|r| r.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    written.reverse();
    assert_eq!(seen, written, "every review once, newest first");

    let bad = world.send::<_, ReviewPage>(None, ListReviews { product_id: lamp, cursor: None, limit: Some(0) });
    assert_eq!(bad.await.unwrap_err().field.as_deref(), Some("limit"));
}
