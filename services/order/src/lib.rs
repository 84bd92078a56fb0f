//! The order service: one actor per order, the checkout saga's state.
//!
//! `cmd.order.place` (from the cart's checkout) prices the lines from the
//! catalog and places the order; inventory, payment and shipping events move
//! it along DESIGN.md's transition table; a durable deadline cancels a
//! checkout that is not confirmed in time. Orders commit through the actors'
//! group-commit writer, their public events through the outbox in the same
//! transaction.
//!
//! # Layout
//! - [`domain`]: the transition table, pure, tested given/when/then; who sees what.
//! - [`entity`]: the order as an actor-runtime entity: its row, events and deadline.
//! - [`saga`]: inventory, payment and shipping events as facts for the actors.
//! - [`handlers`]: place, cancel, get and list.
//! - [`store`]: reading orders back for views and listings.

pub mod domain;
pub mod entity;
pub mod handlers;
pub mod saga;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use emporium_actors::deadlines::DeadlineSweeper;
use emporium_actors::events::ToEntities;
use emporium_actors::{EntityHost, GroupCommit, HostConfig, PgStore, WriterConfig};
use emporium_nats::{Caller, OutboxSignal, ServiceError, ServiceRuntime, Subscription};
use emporium_platform::settings::{SettingsError, typed};
use emporium_schemas::Partition;
use tokio_util::sync::CancellationToken;

use crate::entity::Orders;
use crate::handlers::OrderService;
use crate::saga::{Facts, InventoryEvent, PaymentEvent, ShippingEvent};

/// The service's name: its database is `emporium_order`, its queue group the same.
pub const SERVICE: &str = "order";

const INVENTORY: &Subscription = &Subscription { service: SERVICE, context: "inventory" };
const PAYMENT: &Subscription = &Subscription { service: SERVICE, context: "payment" };
const SHIPPING: &Subscription = &Subscription { service: SERVICE, context: "shipping" };

/// The events the order consumes (a durable consumer per partition each).
pub fn subscriptions() -> Vec<Subscription> {
    vec![INVENTORY.clone(), PAYMENT.clone(), SHIPPING.clone()]
}

/// The order's own settings (`ORDER_*`; `.env.example` lists them).
#[derive(Debug, Clone)]
pub struct OrderSettings {
    /// A checkout not confirmed this long after it was placed is cancelled.
    pub checkout_deadline: Duration,
    /// How often the deadline sweeper looks for due orders.
    pub sweep_every: Duration,
    /// Commands and events in flight through the order actors at once.
    pub max_in_flight: usize,
    /// An order actor idle this long is passivated.
    pub idle_after: Duration,
    /// How long pricing waits for the catalog.
    pub catalog_timeout: Duration,
}

impl OrderSettings {
    pub fn from_source(source: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        Ok(Self {
            checkout_deadline: Duration::from_secs(typed(&source, "ORDER_CHECKOUT_DEADLINE_SECS", "30")?),
            sweep_every: Duration::from_millis(typed(&source, "ORDER_SWEEP_EVERY_MS", "500")?),
            max_in_flight: typed(&source, "ORDER_MAX_IN_FLIGHT", "4096")?,
            idle_after: Duration::from_secs(typed(&source, "ORDER_IDLE_SECS", "60")?),
            catalog_timeout: Duration::from_millis(typed(&source, "ORDER_CATALOG_TIMEOUT_MS", "2000")?),
        })
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error(transparent)]
    Runtime(#[from] ServiceError),
    #[error("starting the order actors: {0}")]
    Spawn(#[from] ractor::SpawnErr),
}

/// What the service runs on; the host (or a test) opens these.
pub type Dependencies = emporium_nats::runtime::Dependencies;

/// Migrates, then hosts the order actors: answers commands, consumes the
/// saga's events, fires deadlines and relays the outbox until `stop`.
pub async fn run(settings: OrderSettings, deps: Dependencies, stop: CancellationToken) -> Result<(), OrderError> {
    store::migrate(&deps.pool).await.map_err(ServiceError::from)?;
    let clock = deps.clock.clone();
    let outbox = OutboxSignal::default();
    let (mut runtime, leases) =
        ServiceRuntime::start(SERVICE, &deps.pool, &deps.nats, deps.partitions, &clock, &outbox, stop).await?;
    let (writer, writer_task) = GroupCommit::start(deps.pool.clone(), outbox, WriterConfig::default());
    let host_config =
        HostConfig { idle_after: settings.idle_after, max_in_flight: settings.max_in_flight, ..HostConfig::default() };
    let host = EntityHost::<Orders>::start(PgStore::new(deps.pool.clone(), writer), host_config).await?;

    let consumer = |source: &Subscription| format!("{SERVICE}.{}", source.context);
    let inventory = Facts::<InventoryEvent>::new(clock.clone());
    runtime.consume(INVENTORY, ToEntities::new(host.clone(), inventory, consumer(INVENTORY)));
    let payment = Facts::<PaymentEvent>::new(clock.clone());
    runtime.consume(PAYMENT, ToEntities::new(host.clone(), payment, consumer(PAYMENT)));
    let shipping = Facts::<ShippingEvent>::new(clock.clone());
    runtime.consume(SHIPPING, ToEntities::new(host.clone(), shipping, consumer(SHIPPING)));
    let sweeper = DeadlineSweeper::new(deps.pool.clone(), host.clone(), clock.clone());
    let every = settings.sweep_every;
    runtime.spawn("deadline sweeper", move |stop| async move { sweeper.run(leases, SERVICE, every, stop).await });
    let stopping = host.clone();
    runtime.on_drain(async move {
        stopping.stop().await;
        drop(stopping);
        // The writer commits what is queued once its last handle is gone.
        if tokio::time::timeout(Duration::from_secs(5), writer_task).await.is_err() {
            tracing::warn!("the order writer did not finish within 5 s");
        }
    });
    tracing::info!("order ready");

    let service = Arc::new(OrderService {
        host,
        pool: deps.pool,
        catalog: Caller::new(deps.nats, settings.catalog_timeout),
        clock,
        deadline: settings.checkout_deadline,
    });
    let owned: Vec<Partition> = Partition::all(deps.partitions).collect();
    let routes = handlers::routes(service, &owned, deps.partitions);
    Ok(runtime.serve(routes, settings.max_in_flight).await?)
}
