//! The notification service: in-app notifications per user, and email.
//!
//! It learns whom to write to from `identity.user_registered`, remembers each
//! order's customer from `order.placed`, and turns order, payment and
//! shipping events into notifications ([`domain::decide`] says who hears
//! what). Users read theirs through `cmd.notification.list` and
//! `cmd.notification.read` (queue group `notification`). It emits no events.
//!
//! - **Exactly one notification per event and recipient.** Each event is
//!   applied through the inbox in the transaction that creates its
//!   notifications, and a notification's (event id, recipient) is unique,
//!   so redeliveries and replays (even after the inbox is pruned) add nothing.
//! - **Sellers are told at `order.confirmed`, not `order.placed`:** a placed
//!   order may still be refused for stock or payment; confirmed means the
//!   stock is held and the payment authorized. Each distinct seller of the
//!   order's lines gets one "new order" naming only their lines.
//! - **Payment and shipping events carry only the order id.** Their customer
//!   is the one remembered from the order's events. One that arrives before
//!   its order is known is parked (`parked_events`, in its inbox transaction,
//!   then acked; counted by `notification_events_parked_total`) and told,
//!   oldest first, in the transaction that learns the customer — never
//!   retried into the dead-letter queue for that race.
//! - **Email is queued in the same transaction** as its notification
//!   (`emails`), for the kinds the domain's one table names, and sent at
//!   least once by [`sender::Sender`] (one leader) through a [`mail::Sink`]:
//!   SMTP, one file per email, or the log (`NOTIFICATION_EMAIL`). Failures
//!   back off with attempts counted and the last error kept; nothing is
//!   dropped. An email to a user whose address is not known yet **waits in
//!   the queue** until `identity.user_registered` brings it
//!   ([`store::awaiting_address`] counts them).
//!
//! # Layout
//! - [`domain`]: who hears what, the words, the email table, the backoff;
//!   pure and tested given/when/then.
//! - [`store`]: the tables (sqlx): users, orders, parked events,
//!   notifications, the email queue.
//! - [`events`]: the event handlers.
//! - [`handlers`]: each command's answer.
//! - [`mail`]: the sinks; [`sender`]: the email sender.

pub mod domain;
pub mod events;
pub mod handlers;
pub mod mail;
pub mod sender;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use emporium_nats::{OutboxSignal, ServiceRuntime, Subscription};
use emporium_platform::settings::{SettingsError, typed};
use lettre::message::Mailbox;
use tokio_util::sync::CancellationToken;

use crate::events::{IdentityEvents, Notifier, OrderEvents, PaymentEvents, ShippingEvents};
use crate::mail::SinkSetting;
use crate::sender::{MailSignal, Sender, SenderConfig};

/// The service's name: its database is `emporium_notification`, its queue group the same.
pub const SERVICE: &str = "notification";

const IDENTITY: &Subscription = &Subscription { service: SERVICE, context: "identity" };
const ORDER: &Subscription = &Subscription { service: SERVICE, context: "order" };
const PAYMENT: &Subscription = &Subscription { service: SERVICE, context: "payment" };
const SHIPPING: &Subscription = &Subscription { service: SERVICE, context: "shipping" };

/// The events notification consumes (a durable consumer per partition each).
pub fn subscriptions() -> Vec<Subscription> {
    vec![IDENTITY.clone(), ORDER.clone(), PAYMENT.clone(), SHIPPING.clone()]
}

/// Notification's own settings (`NOTIFICATION_*`; `.env.example` lists them).
#[derive(Debug, Clone)]
pub struct NotificationSettings {
    /// Requests one instance answers at once before shedding.
    pub max_in_flight: usize,
    /// Where emails go: `log`, `file:<dir>` or `smtp://host:port`.
    pub email: SinkSetting,
    /// The emails' sender.
    pub email_from: Mailbox,
    pub sender: SenderConfig,
    /// How long one SMTP conversation may take.
    pub smtp_timeout: Duration,
}

impl NotificationSettings {
    pub fn from_source(source: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        Ok(Self {
            max_in_flight: typed(&source, "NOTIFICATION_MAX_IN_FLIGHT", "512")?,
            email: typed(&source, "NOTIFICATION_EMAIL", "log")?,
            email_from: typed(&source, "NOTIFICATION_EMAIL_FROM", "Emporium <no-reply@emporium.test>")?,
            sender: SenderConfig {
                poll: Duration::from_millis(typed(&source, "NOTIFICATION_EMAIL_POLL_MS", "1000")?),
                backoff: Duration::from_millis(typed(&source, "NOTIFICATION_EMAIL_BACKOFF_MS", "5000")?),
                max_backoff: Duration::from_secs(typed(&source, "NOTIFICATION_EMAIL_MAX_BACKOFF_SECS", "3600")?),
                batch: typed(&source, "NOTIFICATION_EMAIL_BATCH", "100")?,
            },
            smtp_timeout: Duration::from_millis(typed(&source, "NOTIFICATION_SMTP_TIMEOUT_MS", "10000")?),
        })
    }
}

/// Why the service could not start.
pub type NotificationError = emporium_nats::ServiceError;

/// What the service runs on; the host (or a test) opens these.
pub type Dependencies = emporium_nats::runtime::Dependencies;

/// Migrates, then consumes identity, order, payment and shipping events,
/// answers commands and sends emails until `stop`.
pub async fn run(
    settings: NotificationSettings,
    deps: Dependencies,
    stop: CancellationToken,
) -> Result<(), NotificationError> {
    store::migrate(&deps.pool).await?;
    // Notification emits no events: nothing wakes its relay, which leads the
    // inbox's pruning after the replay window; its leases serve the email sender.
    let quiet = OutboxSignal::default();
    let (mut runtime, leases) =
        ServiceRuntime::start(SERVICE, &deps.pool, &deps.nats, deps.partitions, &deps.clock, &quiet, stop).await?;
    let mail = MailSignal::default();
    let notifier = Arc::new(Notifier::new(deps.pool.clone(), deps.clock.clone(), mail.clone()));
    let sink = settings.email.open(settings.email_from.clone(), settings.smtp_timeout);
    let sender = Sender::new(deps.pool, deps.clock, sink, settings.sender, mail);

    runtime.consume(IDENTITY, IdentityEvents(notifier.clone()));
    runtime.consume(ORDER, OrderEvents(notifier.clone()));
    runtime.consume(PAYMENT, PaymentEvents(notifier.clone()));
    runtime.consume(SHIPPING, ShippingEvents(notifier.clone()));
    runtime.spawn("email sender", |stop| sender.run(leases, stop));
    tracing::info!(email = ?settings.email, "notification ready");
    runtime.serve(handlers::routes(notifier), settings.max_in_flight).await
}
