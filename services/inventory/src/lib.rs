//! The inventory service: stock per product, the checkout saga's
//! reservations, and every movement.
//!
//! It learns products and their owners from `catalog.product_*`, reserves
//! an order's lines on `order.placed` (all or nothing), releases them on
//! `order.cancelled` (or, as a backstop, when an order is never confirmed),
//! and deducts them on `shipping.shipped`. Owners set on-hand stock through
//! `cmd.inventory.set_stock` (queue group `inventory`). Every change is
//! published as `inventory.*` through the outbox.
//!
//! # Layout
//! - [`domain`]: the rules (reserve all or nothing, set stock, what each saga
//!   step means in each state, the backstop), pure and tested given/when/then.
//! - [`store`]: the tables (sqlx), rows locked in product-id order.
//! - [`saga`]: the event handlers and the backstop.
//! - [`handlers`]: each command's answer.

pub mod domain;
pub mod handlers;
pub mod saga;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use emporium_nats::{OutboxSignal, ServiceRuntime, Subscription};
use emporium_platform::settings::{SettingsError, typed};
use tokio_util::sync::CancellationToken;

use crate::saga::{CatalogEvents, Inventory, OrderEvents, ShippingEvents};

/// The service's name: its database is `emporium_inventory`, its queue group the same.
pub const SERVICE: &str = "inventory";

const CATALOG: &Subscription = &Subscription { service: SERVICE, context: "catalog" };
const ORDER: &Subscription = &Subscription { service: SERVICE, context: "order" };
const SHIPPING: &Subscription = &Subscription { service: SERVICE, context: "shipping" };

/// The events inventory consumes (a durable consumer per partition each).
pub fn subscriptions() -> Vec<Subscription> {
    vec![CATALOG.clone(), ORDER.clone(), SHIPPING.clone()]
}

/// Inventory's own settings (`INVENTORY_*`; `.env.example` lists them).
#[derive(Debug, Clone)]
pub struct InventorySettings {
    /// Requests one instance answers at once before shedding.
    pub max_in_flight: usize,
    /// The backstop releases no hold sooner than this after its order was placed.
    pub backstop_floor: Duration,
    /// How often the backstop looks for expired holds.
    pub backstop_every: Duration,
}

impl InventorySettings {
    pub fn from_source(source: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        Ok(Self {
            max_in_flight: typed(&source, "INVENTORY_MAX_IN_FLIGHT", "512")?,
            backstop_floor: Duration::from_secs(typed(&source, "INVENTORY_BACKSTOP_FLOOR_SECS", "600")?),
            backstop_every: Duration::from_secs(typed(&source, "INVENTORY_BACKSTOP_EVERY_SECS", "30")?),
        })
    }
}

/// Why the service could not start.
pub type InventoryError = emporium_nats::ServiceError;

/// What the service runs on; the host (or a test) opens these.
pub type Dependencies = emporium_nats::runtime::Dependencies;

/// Migrates, then consumes catalog, order and shipping events, answers
/// commands, runs the backstop and relays its outbox until `stop`.
pub async fn run(
    settings: InventorySettings,
    deps: Dependencies,
    stop: CancellationToken,
) -> Result<(), InventoryError> {
    store::migrate(&deps.pool).await?;
    let clock = deps.clock.clone();
    let outbox = OutboxSignal::default();
    let (mut runtime, leases) =
        ServiceRuntime::start(SERVICE, &deps.pool, &deps.nats, deps.partitions, &clock, &outbox, stop).await?;
    let inventory = Arc::new(Inventory::new(deps.pool, outbox, clock, settings.backstop_floor));

    runtime.consume(CATALOG, CatalogEvents(inventory.clone()));
    runtime.consume(ORDER, OrderEvents(inventory.clone()));
    runtime.consume(SHIPPING, ShippingEvents(inventory.clone()));
    let (backstop, every) = (inventory.clone(), settings.backstop_every);
    runtime.spawn("backstop", move |stop| async move {
        emporium_nats::lease::while_leading(&leases, "backstop.inventory", every, stop, || async {
            if let Err(error) = backstop.release_expired().await {
                tracing::warn!(%error, "reservation backstop failed");
            }
        })
        .await;
    });
    tracing::info!("inventory ready");
    runtime.serve(handlers::routes(inventory), settings.max_in_flight).await
}
