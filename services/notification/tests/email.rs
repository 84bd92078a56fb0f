//! The email sender against real Postgres and a real SMTP conversation (the
//! harness's SMTP server), driven one step at a time on a manual clock:
//! sent once and marked, kept queued while the server refuses, sent once it
//! is back, and kept waiting while the recipient's address is unknown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use emporium_nats::{ManualClock, SharedClock};
use emporium_notification::domain::Draft;
use emporium_notification::mail::SmtpSink;
use emporium_notification::sender::{MailSignal, Sender, SenderConfig, Sent};
use emporium_notification::store;
use emporium_schemas::MessageId;
use emporium_schemas::commands::notification::NotificationKind;
use emporium_schemas::values::{OrderId, UserId};
use emporium_test_harness::{SmtpServer, TestDatabase};
use sqlx::PgPool;
use uuid::Uuid;

struct World {
    db: TestDatabase,
    smtp: SmtpServer,
    clock: Arc<ManualClock>,
    sender: Sender,
}

const BACKOFF: Duration = Duration::from_secs(5);

impl World {
    async fn start() -> Self {
        let db = TestDatabase::create().await.unwrap();
        store::migrate(db.pool()).await.unwrap();
        let smtp = SmtpServer::start().await.unwrap();
        let clock = Arc::new(ManualClock::at(Utc::now()));
        let shared: SharedClock = clock.clone();
        let from = "Emporium <no-reply@emporium.test>".parse().unwrap();
        let sink = SmtpSink::new("127.0.0.1", smtp.addr().port(), from, Duration::from_secs(5));
        let config = SenderConfig {
            poll: Duration::from_secs(1),
            backoff: BACKOFF,
            max_backoff: Duration::from_secs(60),
            batch: 100,
        };
        let sender = Sender::new(db.pool().clone(), shared, Arc::new(sink), config, MailSignal::default());
        Self { db, smtp, clock, sender }
    }

    fn pool(&self) -> &PgPool {
        self.db.pool()
    }

    async fn user(&self, name: &str, email: &str) -> UserId {
        let user = UserId::new_v7();
        self.learn(user, name, email).await;
        user
    }

    async fn learn(&self, user: UserId, name: &str, email: &str) {
        let mut tx = self.pool().begin().await.unwrap();
        store::upsert_user(&mut tx, user, email, name, self.clock_now()).await.unwrap();
        tx.commit().await.unwrap();
    }

    fn clock_now(&self) -> chrono::DateTime<Utc> {
        emporium_nats::Clock::now(self.clock.as_ref())
    }

    /// Queues an "order confirmed" email to `user`, as an event would.
    async fn queue(&self, user: UserId) {
        let draft = Draft {
            recipient: user,
            kind: NotificationKind::OrderConfirmed,
            title: "Order confirmed".into(),
            body: "Your order is confirmed: 1 item for EUR 25.00.".into(),
            order: Some(OrderId::new_v7()),
            email: true,
        };
        let mut tx = self.pool().begin().await.unwrap();
        assert_eq!(store::create(&mut tx, MessageId::new_v7(), &[draft], self.clock_now()).await.unwrap(), (1, 1));
        tx.commit().await.unwrap();
    }

    /// (attempts, last error, sent) of the only email.
    async fn email(&self) -> (i32, Option<String>, bool) {
        sqlx::query_as("SELECT attempts, last_error, sent_at IS NOT NULL FROM emails")
            .fetch_one(self.pool())
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn an_email_goes_through_a_real_smtp_conversation_once_and_is_marked_sent() {
    let world = World::start().await;
    let ada = world.user("Ada Lovelace", "ada@example.com").await;
    world.queue(ada).await;

    assert_eq!(world.sender.send_due().await.unwrap(), Sent { sent: 1, failed: 0 });
    let received = world.smtp.received();
    assert_eq!(received.len(), 1);
    let mail = &received[0];
    assert_eq!(
        (mail.from.as_str(), mail.to.as_slice()),
        ("no-reply@emporium.test", &["ada@example.com".to_owned()][..])
    );
    assert_eq!(mail.header("Subject").as_deref(), Some("Order confirmed"));
    let id: Uuid = sqlx::query_scalar("SELECT id FROM emails").fetch_one(world.pool()).await.unwrap();
    assert_eq!(mail.header("Message-ID"), Some(format!("<{id}@emporium.test>")));
    assert!(mail.body().starts_with("Hello Ada Lovelace,"), "{}", mail.body());
    assert!(mail.body().contains("Your order is confirmed: 1 item for EUR 25.00."), "{}", mail.body());
    assert_eq!(world.email().await, (1, None, true));

    assert_eq!(world.sender.send_due().await.unwrap(), Sent::default(), "a sent email is not sent again");
    assert_eq!(world.smtp.received().len(), 1);
}

#[tokio::test]
async fn a_refusing_smtp_server_leaves_the_email_queued_and_it_is_sent_once_the_server_is_back() {
    let world = World::start().await;
    let ada = world.user("Ada", "ada@example.com").await;
    world.queue(ada).await;
    world.smtp.fail_with("451 4.3.0 mailbox busy, try again later");

    assert_eq!(world.sender.send_due().await.unwrap(), Sent { sent: 0, failed: 1 });
    assert_eq!(world.smtp.refused(), 1);
    let (attempts, error, sent) = world.email().await;
    assert_eq!((attempts, sent), (1, false));
    assert!(error.unwrap().contains("try again later"), "the last error is kept");

    world.smtp.recover();
    assert_eq!(world.sender.send_due().await.unwrap(), Sent::default(), "not before its backoff");
    world.clock.advance(BACKOFF);
    assert_eq!(world.sender.send_due().await.unwrap(), Sent { sent: 1, failed: 0 });
    assert_eq!(world.smtp.received().len(), 1);
    assert_eq!(world.email().await.0, 2);
    assert!(world.email().await.2);

    world.clock.advance(Duration::from_secs(3600));
    assert_eq!(world.sender.send_due().await.unwrap(), Sent::default());
    assert_eq!(world.smtp.received().len(), 1, "sent exactly once");
}

#[tokio::test]
async fn failures_back_off_longer_each_time_and_the_email_is_never_dropped() {
    let world = World::start().await;
    let ada = world.user("Ada", "ada@example.com").await;
    world.queue(ada).await;
    world.smtp.fail_with("421 4.3.2 shutting down");
    for (attempt, wait) in [(1, 5), (2, 10), (3, 20), (4, 40), (5, 60), (6, 60)] {
        assert_eq!(world.sender.send_due().await.unwrap().failed, 1, "attempt {attempt}");
        world.clock.advance(Duration::from_secs(wait - 1));
        assert_eq!(world.sender.send_due().await.unwrap(), Sent::default(), "attempt {attempt} waits {wait}s");
        world.clock.advance(Duration::from_secs(1));
    }
    assert_eq!(world.email().await.0, 6);
    world.smtp.recover();
    assert_eq!(world.sender.send_due().await.unwrap().sent, 1);
    assert_eq!(world.smtp.received().len(), 1);
}

#[tokio::test]
async fn an_email_to_a_user_whose_address_is_unknown_waits_for_it() {
    let world = World::start().await;
    let stranger = UserId::new_v7();
    world.queue(stranger).await;

    assert_eq!(world.sender.send_due().await.unwrap(), Sent::default());
    assert_eq!(store::awaiting_address(world.pool()).await.unwrap(), 1);
    assert!(world.smtp.received().is_empty());

    world.learn(stranger, "Grace", "grace@example.com").await;
    assert_eq!(store::awaiting_address(world.pool()).await.unwrap(), 0);
    assert_eq!(world.sender.send_due().await.unwrap().sent, 1);
    assert_eq!(world.smtp.received()[0].to, vec!["grace@example.com".to_owned()]);
}
