//! The notification service against real Postgres, a private NATS server and
//! the harness's SMTP server, driven only by events on its subjects and
//! commands over request/reply: who hears what, newest first with the unread
//! count, reading, other people's notifications, payment and shipping events
//! parked until their order is known (not dead-lettered), emails sent, and
//! replays that add nothing even after the inbox forgot them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use emporium_nats::{OutgoingEvent, SystemClock};
use emporium_notification::NotificationSettings;
use emporium_schemas::commands::notification::{
    ListNotifications, NotificationKind, NotificationPage, NotificationView, ReadNotification,
};
use emporium_schemas::events::identity::UserRegistered;
use emporium_schemas::events::order::{CancelReason, OrderCancelled, OrderConfirmed, OrderPlaced, OrderStatus};
use emporium_schemas::events::payment::PaymentCaptured;
use emporium_schemas::events::shipping::{ShippingCreated, ShippingDelivered, ShippingShipped};
use emporium_schemas::values::{
    Money, NotificationId, OrderId, PaymentId, PaymentMethod, PricedLine, ProductId, Role, ShipmentId, UserId,
};
use emporium_schemas::{CommandEnvelope, ErrorKind, Principal, Reply};
use emporium_test_harness::events::event;
use emporium_test_harness::values::{address, euros, text};
use emporium_test_harness::{SmtpServer, TestService, eventually};
use sqlx::PgPool;
use uuid::Uuid;

const PARTITIONS: u16 = 2;

struct World {
    service: TestService,
    smtp: SmtpServer,
}

/// An order of `lines` (seller, quantity, cents) by `customer`.
struct Order {
    id: OrderId,
    customer: UserId,
    lines: Vec<PricedLine>,
}

impl Order {
    fn new(customer: UserId, lines: &[(UserId, u32, i64)]) -> Self {
        let lines = lines
            .iter()
            .map(|(seller, quantity, cents)| PricedLine {
                product_id: ProductId::new_v7(),
                seller_id: *seller,
                quantity: (*quantity).try_into().unwrap(),
                unit_price: euros(*cents),
            })
            .collect();
        Self { id: OrderId::new_v7(), customer, lines }
    }

    fn key(&self) -> Uuid {
        *self.id.as_uuid()
    }

    fn total(&self) -> Money {
        euros(self.lines.iter().map(|l| l.unit_price.amount.get() * i64::from(l.quantity.get())).sum())
    }

    fn placed(&self) -> OutgoingEvent {
        let placed = OrderPlaced {
            order_id: self.id,
            customer_id: self.customer,
            lines: self.lines.clone().try_into().unwrap(),
            total: self.total(),
            shipping_address: address(),
            payment_method: PaymentMethod::try_from("tok_visa".to_owned()).unwrap(),
            deadline_at: Utc::now() + chrono::TimeDelta::seconds(30),
        };
        event(self.key(), 1, placed)
    }

    fn confirmed(&self) -> OutgoingEvent {
        let confirmed = OrderConfirmed {
            order_id: self.id,
            customer_id: self.customer,
            lines: self.lines.clone().try_into().unwrap(),
            total: self.total(),
            shipping_address: address(),
        };
        event(self.key(), 3, confirmed)
    }

    fn captured(&self) -> OutgoingEvent {
        let captured = PaymentCaptured {
            order_id: self.id,
            payment_id: PaymentId::new_v7(),
            amount: self.total(),
            provider_ref: text("sim_1"),
        };
        event(self.key(), 2, captured)
    }

    fn shipped(&self) -> OutgoingEvent {
        let shipped =
            ShippingShipped { order_id: self.id, shipment_id: ShipmentId::new_v7(), tracking_number: text("PX9") };
        event(self.key(), 2, shipped)
    }
}

impl World {
    async fn start() -> Self {
        let service = TestService::prepare(
            PARTITIONS,
            emporium_notification::subscriptions(),
            emporium_notification::store::migrate,
        )
        .await
        .unwrap();
        let smtp = SmtpServer::start().await.unwrap();
        let url = smtp.url();
        let settings = NotificationSettings::from_source(|name| match name {
            "NOTIFICATION_EMAIL" => Some(url.clone()),
            "NOTIFICATION_EMAIL_POLL_MS" => Some("50".to_owned()),
            _ => None,
        })
        .unwrap();
        let deps = service.dependencies(Arc::new(SystemClock));
        service.spawn(|stop| emporium_notification::run(settings, deps, stop));
        service.until_answering("notification", ListNotifications::default()).await.unwrap();
        Self { service, smtp }
    }

    fn pool(&self) -> &PgPool {
        self.service.pool()
    }

    async fn publish(&self, events: &[OutgoingEvent]) {
        self.service.publisher().publish_all(events).await.unwrap();
    }

    /// A user identity told notification of.
    async fn user(&self, name: &str, role: Role) -> UserId {
        let user = UserId::new_v7();
        let email = format!("{}@example.com", name.to_lowercase());
        let registered = UserRegistered { user_id: user, email: text(&email), name: text(name), role };
        self.publish(&[event(*user.as_uuid(), 1, registered)]).await;
        user
    }

    async fn call<C: emporium_schemas::Command, A: serde::de::DeserializeOwned>(
        &self,
        user: Option<UserId>,
        data: C,
    ) -> Reply<A> {
        let principal = user.map(|user_id| Principal { user_id, role: Role::Customer });
        self.service.caller().call(&CommandEnvelope::new(None, principal, data), "test").await.unwrap()
    }

    async fn list(&self, user: Option<UserId>, query: ListNotifications) -> Reply<NotificationPage> {
        self.call(user, query).await
    }

    async fn page(&self, user: UserId, query: ListNotifications) -> NotificationPage {
        match self.list(Some(user), query).await {
            Reply::Ok(page) => page,
            Reply::Error(error) => panic!("listing: {error:?}"),
        }
    }

    /// `user`'s notifications once there are `count`, newest first.
    async fn notifications(&self, user: UserId, count: usize) -> Vec<NotificationView> {
        let arrived = eventually(Duration::from_secs(30), || async {
            self.page(user, ListNotifications::default()).await.items.len() >= count
        })
        .await;
        let page = self.page(user, ListNotifications::default()).await;
        assert!(arrived, "{count} notifications never arrived: {page:#?}");
        page.items
    }

    async fn read(&self, user: UserId, id: NotificationId) -> Reply<NotificationView> {
        self.call(Some(user), ReadNotification { notification_id: id }).await
    }

    /// How many rows `rows` names: a table, with a condition if wanted.
    async fn count(&self, rows: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {rows}")))
            .fetch_one(self.pool())
            .await
            .unwrap()
    }

    /// Waits until `n` emails reached the SMTP server.
    async fn mails(&self, n: usize) -> Vec<emporium_test_harness::smtp::ReceivedMail> {
        let arrived = eventually(Duration::from_secs(30), || async { self.smtp.received().len() >= n }).await;
        assert!(arrived, "{n} emails never arrived: {:#?}", self.smtp.received());
        self.smtp.received()
    }

    /// Publishes `event` again as a replay after JetStream's duplicate
    /// window looks: the same bytes under a new `Nats-Msg-Id`. Returns its
    /// stream sequence.
    async fn replay(&self, event: &OutgoingEvent) -> u64 {
        self.publish_as(event, &format!("replay-{}", Uuid::now_v7())).await
    }

    /// Publishes `event` and waits until notification's consumer has acked
    /// it: applied or parked, not left to the loop's retries.
    async fn deliver(&self, event: &OutgoingEvent) {
        let sequence = self.publish_as(event, &event.message_id()).await;
        self.consumed(event, sequence).await;
    }

    /// Publishes `event`'s bytes under `message_id`; returns its stream sequence.
    async fn publish_as(&self, event: &OutgoingEvent, message_id: &str) -> u64 {
        let ack = self.service.publish_as(event, message_id).await.unwrap();
        assert!(!ack.duplicate);
        ack.sequence
    }

    /// Waits until notification's consumer of `event`'s stream has acked
    /// everything up to `sequence`.
    async fn consumed(&self, event: &OutgoingEvent, sequence: u64) {
        self.service.until_consumed(emporium_notification::SERVICE, event, sequence).await.unwrap();
    }
}

fn kinds(items: &[NotificationView]) -> Vec<NotificationKind> {
    items.iter().map(|n| n.kind).collect()
}

#[tokio::test]
async fn an_order_tells_its_customer_each_step_newest_first_and_each_seller_of_their_lines() {
    let world = World::start().await;
    let ada = world.user("Ada", Role::Customer).await;
    let (lamps, books) = (world.user("Lamps", Role::Seller).await, world.user("Books", Role::Seller).await);
    let order = Order::new(ada, &[(lamps, 2, 2_500), (books, 1, 1_200), (lamps, 1, 900)]);
    world.publish(&[order.placed(), order.confirmed()]).await;
    world.notifications(ada, 1).await;
    world.publish(&[order.captured()]).await;
    world.notifications(ada, 2).await;
    let shipment = ShipmentId::new_v7();
    let created = ShippingCreated {
        order_id: order.id,
        shipment_id: shipment,
        carrier: text("Parcelly"),
        tracking_number: text("PX1"),
    };
    world.publish(&[event(order.key(), 1, created)]).await;
    world.notifications(ada, 3).await;
    let shipped = ShippingShipped { order_id: order.id, shipment_id: shipment, tracking_number: text("PX1") };
    world.publish(&[event(order.key(), 2, shipped)]).await;
    world.notifications(ada, 4).await;
    world.publish(&[event(order.key(), 3, ShippingDelivered { order_id: order.id, shipment_id: shipment })]).await;

    let items = world.notifications(ada, 5).await;
    use NotificationKind as K;
    assert_eq!(
        kinds(&items),
        vec![K::OrderDelivered, K::OrderShipped, K::ShipmentCreated, K::PaymentCaptured, K::OrderConfirmed]
    );
    assert!(items.iter().all(|n| n.order_id == Some(order.id) && n.read_at.is_none()));
    assert!(items.windows(2).all(|pair| pair[0].created_at >= pair[1].created_at));
    assert_eq!(world.page(ada, ListNotifications::default()).await.unread, 5);

    let to_lamps = world.notifications(lamps, 1).await;
    assert_eq!(kinds(&to_lamps), vec![K::NewOrder]);
    let body = &to_lamps[0].body;
    assert!(
        body.contains(&order.lines[0].product_id.to_string()) && body.contains(&order.lines[2].product_id.to_string())
    );
    assert!(!body.contains(&order.lines[1].product_id.to_string()), "only the seller's own lines: {body}");
    assert_eq!(kinds(&world.notifications(books, 1).await), vec![K::NewOrder]);

    // Emailed: the confirmation, the two sellers' new orders, shipped, delivered.
    let mails = world.mails(5).await;
    let mut subjects: Vec<(String, String)> =
        mails.iter().map(|m| (m.to[0].clone(), m.header("Subject").unwrap())).collect();
    subjects.sort();
    assert_eq!(
        subjects,
        vec![
            ("ada@example.com".to_owned(), "Order confirmed".to_owned()),
            ("ada@example.com".to_owned(), "Order delivered".to_owned()),
            ("ada@example.com".to_owned(), "Order shipped".to_owned()),
            ("books@example.com".to_owned(), "New order for your products".to_owned()),
            ("lamps@example.com".to_owned(), "New order for your products".to_owned()),
        ]
    );
    // The sender marks a row sent once the server has taken it: a moment after it arrived.
    let all_marked =
        eventually(Duration::from_secs(20), || async { world.count("emails WHERE sent_at IS NOT NULL").await == 5 })
            .await;
    assert!(all_marked, "the five emails were never all marked sent");
}

#[tokio::test]
async fn reading_lowers_the_unread_count_and_only_the_recipient_may_read() {
    let world = World::start().await;
    let ada = world.user("Ada", Role::Customer).await;
    let orders: Vec<Order> = (0..3).map(|_| Order::new(ada, &[(UserId::new_v7(), 1, 500)])).collect();
    for order in &orders {
        world.publish(&[order.placed(), order.confirmed()]).await;
    }
    let items = world.notifications(ada, 3).await;

    let read = match world.read(ada, items[1].id).await {
        Reply::Ok(read) => read,
        Reply::Error(error) => panic!("{error:?}"),
    };
    assert!(read.read_at.is_some());
    let Reply::Ok(again) = world.read(ada, items[1].id).await else { panic!("reading twice") };
    assert_eq!(again.read_at, read.read_at, "reading twice changes nothing");
    assert_eq!(world.page(ada, ListNotifications::default()).await.unread, 2);
    let unread = world.page(ada, ListNotifications { unread_only: true, ..Default::default() }).await;
    assert_eq!(unread.items.iter().map(|n| n.id).collect::<Vec<_>>(), vec![items[0].id, items[2].id]);

    let mallory = UserId::new_v7();
    let Reply::Error(error) = world.read(mallory, items[0].id).await else { panic!("read someone else's") };
    assert_eq!(error.kind, ErrorKind::NotFound);
    assert!(world.page(mallory, ListNotifications::default()).await.items.is_empty());
    let Reply::Error(error) =
        world.call::<_, NotificationView>(None, ReadNotification { notification_id: items[0].id }).await
    else {
        panic!("read without a principal")
    };
    assert_eq!(error.kind, ErrorKind::Unauthenticated);
    assert_eq!(world.page(ada, ListNotifications::default()).await.unread, 2);
}

#[tokio::test]
async fn pages_follow_the_cursor_newest_first_and_bad_queries_name_their_field() {
    let world = World::start().await;
    let ada = world.user("Ada", Role::Customer).await;
    for _ in 0..5 {
        let order = Order::new(ada, &[(UserId::new_v7(), 1, 500)]);
        world.publish(&[order.placed(), order.confirmed()]).await;
    }
    let all = world.notifications(ada, 5).await;
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page =
            world.page(ada, ListNotifications { cursor: cursor.clone(), limit: Some(2), ..Default::default() }).await;
        assert_eq!(page.unread, 5);
        seen.extend(page.items.iter().map(|n| n.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, all.iter().map(|n| n.id).collect::<Vec<_>>());

    for (query, field) in [
        (ListNotifications { limit: Some(0), ..Default::default() }, "limit"),
        (ListNotifications { limit: Some(101), ..Default::default() }, "limit"),
        (ListNotifications { cursor: Some("yesterday".into()), ..Default::default() }, "cursor"),
    ] {
        let Reply::Error(error) = world.list(Some(ada), query).await else { panic!("{field} accepted") };
        assert_eq!((error.kind, error.field.as_deref()), (ErrorKind::Invalid, Some(field)));
    }
}

fn parked_total() -> &'static emporium_platform::counters::Counter {
    emporium_platform::counters::counter("notification_events_parked_total", "events parked")
}

#[tokio::test]
async fn a_payment_event_of_an_order_not_known_yet_is_parked_and_acked_and_told_once_the_order_is_placed() {
    let world = World::start().await;
    let ada = world.user("Ada", Role::Customer).await;
    let order = Order::new(ada, &[(UserId::new_v7(), 1, 500)]);
    let parked_before = parked_total().get();
    world.deliver(&order.captured()).await;
    assert_eq!((world.count("parked_events").await, world.count("notifications").await), (1, 0));
    assert!(parked_total().get() > parked_before, "notification_events_parked_total was not counted");

    world.publish(&[order.placed()]).await;
    let items = world.notifications(ada, 1).await;
    assert_eq!(kinds(&items), vec![NotificationKind::PaymentCaptured]);
    assert_eq!(world.count("parked_events").await, 0);
}

#[tokio::test]
async fn events_before_their_order_are_parked_not_dead_lettered_and_told_once_in_the_order_they_happened() {
    let world = World::start().await;
    let ada = world.user("Ada", Role::Customer).await;
    let order = Order::new(ada, &[(UserId::new_v7(), 1, 500)]);
    // The capture happened first but arrives after the shipment.
    let (captured, shipped) = (order.captured(), order.shipped());
    world.deliver(&shipped).await;
    world.deliver(&captured).await;
    assert_eq!((world.count("parked_events").await, world.count("notifications").await), (2, 0));

    // Redelivered while the inbox remembers them, and replayed after it forgot: still parked once.
    for parked in [&captured, &shipped] {
        let sequence = world.replay(parked).await;
        world.consumed(parked, sequence).await;
    }
    sqlx::query("DELETE FROM inbox").execute(world.pool()).await.unwrap();
    for parked in [&captured, &shipped] {
        let sequence = world.replay(parked).await;
        world.consumed(parked, sequence).await;
    }
    assert_eq!((world.count("parked_events").await, world.count("notifications").await), (2, 0));

    let placed = order.placed();
    world.publish(std::slice::from_ref(&placed)).await;
    let items = world.notifications(ada, 2).await;
    use NotificationKind as K;
    assert_eq!(kinds(&items), vec![K::OrderShipped, K::PaymentCaptured], "newest first, in the order they happened");
    assert!(items.iter().all(|n| n.order_id == Some(order.id)));
    assert_eq!(world.count("parked_events").await, 0);
    let mails = world.mails(1).await;
    assert_eq!(mails[0].header("Subject").as_deref(), Some("Order shipped"));

    // Once told, neither their replays nor the order's add anything.
    sqlx::query("DELETE FROM inbox").execute(world.pool()).await.unwrap();
    for event in [&captured, &shipped, &placed] {
        let sequence = world.replay(event).await;
        world.consumed(event, sequence).await;
    }
    let counts = (world.count("notifications").await, world.count("emails").await);
    assert_eq!((counts, world.count("parked_events").await), ((2, 1), 0));

    let dead = emporium_nats::dlq::list(world.service.jetstream(), 100).await.unwrap();
    assert!(dead.is_empty(), "dead-lettered: {dead:?}");
}

#[tokio::test]
async fn payments_arriving_beside_their_order_placed_are_each_told_exactly_once() {
    let world = World::start().await;
    let ada = world.user("Ada", Role::Customer).await;
    let orders: Vec<Order> = (0..20).map(|_| Order::new(ada, &[(UserId::new_v7(), 1, 500)])).collect();
    // Two streams, two consumers: each capture parks or is told while its
    // order.placed commits beside it; neither may miss the other.
    let (placed, captured): (Vec<_>, Vec<_>) = orders.iter().map(|order| (order.placed(), order.captured())).unzip();
    tokio::join!(world.publish(&placed), world.publish(&captured));

    let items = world.notifications(ada, orders.len()).await;
    assert!(items.iter().all(|n| n.kind == NotificationKind::PaymentCaptured));
    assert_eq!(world.count("notifications").await, 20);
    assert_eq!(world.count("parked_events").await, 0);
}

#[tokio::test]
async fn a_cancellation_tells_the_customer_why_and_an_unknown_address_keeps_the_email_waiting() {
    let world = World::start().await;
    // Identity has not told notification of this customer (yet).
    let grace = UserId::new_v7();
    let order = Order::new(grace, &[(UserId::new_v7(), 1, 500)]);
    let cancelled = OrderCancelled {
        order_id: order.id,
        customer_id: grace,
        reason: CancelReason::PaymentDeclined,
        previous_status: OrderStatus::Reserved,
    };
    world.publish(&[order.placed(), event(order.key(), 2, cancelled)]).await;
    let items = world.notifications(grace, 1).await;
    assert_eq!(kinds(&items), vec![NotificationKind::OrderCancelled]);
    assert!(items[0].body.contains("because the payment was declined"), "{}", items[0].body);
    assert_eq!(emporium_notification::store::awaiting_address(world.pool()).await.unwrap(), 1);
    assert!(world.smtp.received().is_empty());

    let registered =
        UserRegistered { user_id: grace, email: text("grace@example.com"), name: text("Grace"), role: Role::Customer };
    world.publish(&[event(*grace.as_uuid(), 1, registered)]).await;
    let mails = world.mails(1).await;
    assert_eq!(mails[0].to, vec!["grace@example.com".to_owned()]);
    assert_eq!(mails[0].header("Subject").as_deref(), Some("Order cancelled"));
}

#[tokio::test]
async fn replayed_events_add_no_notification_and_no_email_even_once_the_inbox_forgot_them() {
    let world = World::start().await;
    let ada = world.user("Ada", Role::Customer).await;
    let seller = world.user("Lamps", Role::Seller).await;
    let order = Order::new(ada, &[(seller, 1, 2_500)]);
    let (placed, confirmed) = (order.placed(), order.confirmed());
    world.publish(&[placed.clone(), confirmed.clone()]).await;
    world.notifications(ada, 1).await;
    world.notifications(seller, 1).await;
    world.mails(2).await;
    let (notifications, emails) = (world.count("notifications").await, world.count("emails").await);

    // A replay within the inbox's memory.
    let sequence = world.replay(&confirmed).await;
    world.consumed(&confirmed, sequence).await;
    // And one after the inbox was pruned: only the (event, recipient) key stands.
    sqlx::query("DELETE FROM inbox").execute(world.pool()).await.unwrap();
    world.replay(&placed).await;
    let sequence = world.replay(&confirmed).await;
    world.consumed(&confirmed, sequence).await;

    assert_eq!((world.count("notifications").await, world.count("emails").await), (notifications, emails));
    assert_eq!(world.page(ada, ListNotifications::default()).await.items.len(), 1);
    assert_eq!(world.page(seller, ListNotifications::default()).await.items.len(), 1);
    // The sender has nothing more to send (it marks a row sent a moment after the server took it).
    let all_sent =
        eventually(Duration::from_secs(20), || async { world.count("emails WHERE sent_at IS NULL").await == 0 }).await;
    assert!(all_sent, "an email was left unsent");
    assert_eq!(world.smtp.received().len(), 2);
}
