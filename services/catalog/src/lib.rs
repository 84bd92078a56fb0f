//! The catalog service: products, categories, search and reviews.
//!
//! It answers `cmd.catalog.*` over NATS request/reply (queue group
//! `catalog`), publishes `catalog.product_*` and `catalog.review_added`
//! through its outbox, keeps each product's stock as inventory last reported
//! it (a read model fed by `inventory.stock_changed`) and its rating as its
//! reviews add up, and learns from `order.delivered` who may review what.
//! Product details are cached in process.
//!
//! # Layout
//! - [`domain`]: the rules (names, prices, who may change or review what,
//!   reviews, searches and their cursors), pure and tested given/when/then.
//! - [`store`]: the tables (sqlx); a change and its event in one transaction.
//! - [`search`]: the one query behind search and browse.
//! - [`cache`]: product details in memory, invalidated before a write replies.
//! - [`projection`]: stock levels from inventory, verified purchases from
//!   delivered orders; cache invalidation across instances.
//! - [`handlers`]: each command's answer.
//! - [`seed`]: sample products for development and benchmarks.

pub mod cache;
pub mod domain;
pub mod handlers;
pub mod projection;
pub mod search;
pub mod seed;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use emporium_actors::{GroupCommit, WriterConfig};
use emporium_nats::{OutboxSignal, ServiceRuntime, Subscription};
use emporium_platform::settings::{SettingsError, typed};
use tokio_util::sync::CancellationToken;

use crate::cache::ProductCache;
use crate::handlers::Catalog;
use crate::projection::{DeliveredOrders, StockProjection};

/// The service's name: its database is `emporium_catalog`, its queue group the same.
pub const SERVICE: &str = "catalog";

/// Stock levels from inventory.
const STOCK: &Subscription = &Subscription { service: SERVICE, context: "inventory" };
/// Delivered orders: who may review which products.
const ORDERS: &Subscription = &Subscription { service: SERVICE, context: "order" };

/// The events the catalog consumes (a durable consumer per partition each).
pub fn subscriptions() -> Vec<Subscription> {
    vec![STOCK.clone(), ORDERS.clone()]
}

/// The catalog's own settings (`CATALOG_*`; `.env.example` lists them).
#[derive(Debug, Clone)]
pub struct CatalogSettings {
    /// Requests one instance answers at once before shedding.
    pub max_in_flight: usize,
    /// Product details kept in memory; 0 turns the cache off.
    pub cache_capacity: usize,
    /// How long a cached product may be served without a fresh read.
    pub cache_ttl: Duration,
}

impl CatalogSettings {
    pub fn from_source(source: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        Ok(Self {
            max_in_flight: typed(&source, "CATALOG_MAX_IN_FLIGHT", "512")?,
            cache_capacity: typed(&source, "CATALOG_CACHE_CAPACITY", "50000")?,
            cache_ttl: Duration::from_secs(typed(&source, "CATALOG_CACHE_TTL_SECS", "60")?),
        })
    }
}

/// Why the service could not start.
pub type CatalogError = emporium_nats::ServiceError;

/// What the service runs on; the host (or a test) opens these.
pub type Dependencies = emporium_nats::runtime::Dependencies;

/// Migrates, then answers commands, relays its outbox and follows stock
/// levels and deliveries until `stop`; returns once in-flight work has finished.
pub async fn run(settings: CatalogSettings, deps: Dependencies, stop: CancellationToken) -> Result<(), CatalogError> {
    store::migrate(&deps.pool).await?;
    let clock = deps.clock.clone();
    let outbox = OutboxSignal::default();
    let cache = Arc::new(ProductCache::new(settings.cache_capacity, settings.cache_ttl));
    let (mut runtime, _) =
        ServiceRuntime::start(SERVICE, &deps.pool, &deps.nats, deps.partitions, &clock, &outbox, stop).await?;
    let (writer, writer_task) = GroupCommit::start(deps.pool.clone(), outbox.clone(), WriterConfig::default());

    runtime.consume(STOCK, StockProjection { writer: writer.clone(), cache: cache.clone(), nats: deps.nats.clone() });
    runtime.consume(ORDERS, DeliveredOrders { writer });
    let (nats, invalidated) = (deps.nats.clone(), cache.clone());
    runtime.spawn("cache invalidation", |stop| async move {
        if let Err(error) = projection::invalidate_on_changes(nats, invalidated, stop).await {
            tracing::error!(%error, "cache invalidation stopped");
        }
    });
    // The writer commits what is queued once the projections, its only
    // users, have stopped; those commits' events are then relayed.
    runtime.on_drain(async move {
        if let Err(error) = writer_task.await {
            tracing::error!(%error, "the group-commit writer failed");
        }
    });
    tracing::info!("catalog ready");

    let catalog = Catalog { pool: deps.pool, cache, outbox, clock };
    runtime.serve(handlers::routes(catalog), settings.max_in_flight).await
}
