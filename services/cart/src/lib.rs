//! The cart service: one cart per customer, kept in Redis, and checkout.
//!
//! Each cart is an entity actor (`emporium_actors::EntityHost`) keyed by its
//! owner's id, so concurrent edits of one cart are serialized and none is
//! lost. Commands arrive on `cmd.cart.<op>.<partition>` (this instance serves
//! every partition); only the cart's owner may read or change it. Lines are
//! priced from the catalog (`cmd.catalog.get_product`), and checkout freezes
//! the cart, places the order (`cmd.order.place`), then empties the cart
//! once the order exists — or thaws it if the order is refused. Carts emit
//! no events and own no database.
//!
//! # Layout
//! - [`domain`]: the rules (limits per line and per cart, edits refused while
//!   frozen, the checkout's freeze, completion and thaw), pure and tested
//!   given/when/then.
//! - [`store`]: carts as Redis hashes with a time to live; commits are a
//!   compare-and-set on the version in one Lua script.
//! - [`catalog`]: product look-ups, reused for a short while.
//! - [`handlers`]: each command's answer, the order placement and the
//!   resolution of stale checkouts, as `emporium_nats::rpc` routes.

pub mod catalog;
pub mod domain;
pub mod handlers;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use emporium_actors::{EntityHost, HostConfig};
use emporium_nats::{Caller, ServeConfig, SharedClock};
use emporium_platform::settings::{SettingsError, typed};
use emporium_schemas::Partition;
use tokio_util::sync::CancellationToken;

use crate::catalog::ProductCatalog;
use crate::handlers::Carts;
use crate::store::RedisStore;

/// The service's name.
pub const SERVICE: &str = "cart";

/// How long a catalog look-up may take before the command is answered 503.
const CATALOG_DEADLINE: Duration = Duration::from_secs(2);

/// The cart's own settings (`CART_*`).
#[derive(Debug, Clone)]
pub struct CartSettings {
    /// `CART_TTL_SECS` (default 30 days): a cart not used for this long is
    /// forgotten; every read or change starts the period over.
    pub ttl: Duration,
    /// `CART_MAX_IN_FLIGHT` (default 512): commands one instance handles at
    /// once; beyond it they are answered 503 at once.
    pub max_in_flight: usize,
    /// `CART_PRODUCT_CACHE_MS` (default 5000): how long a catalog answer about
    /// a product (its existence, name and price) is reused.
    pub product_cache: Duration,
    /// `CART_FREEZE_SECS` (default 30): a checkout frozen this long without an
    /// outcome is resolved by the cart's next command (its order placed again).
    pub freeze_for: Duration,
    /// `CART_ORDER_TIMEOUT_MS` (default 3000): how long a checkout waits for
    /// the order service; without an answer the cart stays frozen and the
    /// caller is told to retry with the same idempotency key. Below the
    /// gateway's service deadline, so the cart's answer arrives first.
    pub order_timeout: Duration,
}

impl CartSettings {
    pub fn from_source(source: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        Ok(Self {
            ttl: Duration::from_secs(typed(&source, "CART_TTL_SECS", "2592000")?),
            max_in_flight: typed(&source, "CART_MAX_IN_FLIGHT", "512")?,
            product_cache: Duration::from_millis(typed(&source, "CART_PRODUCT_CACHE_MS", "5000")?),
            freeze_for: Duration::from_secs(typed(&source, "CART_FREEZE_SECS", "30")?),
            order_timeout: Duration::from_millis(typed(&source, "CART_ORDER_TIMEOUT_MS", "3000")?),
        })
    }
}

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum CartError {
    #[error("starting the cart actors: {0}")]
    Actors(#[from] ractor::SpawnErr),
    #[error("subscribing: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
}

/// What the service runs on; the host (or a test) opens these.
#[derive(Debug, Clone)]
pub struct Dependencies {
    pub nats: async_nats::Client,
    pub redis: fred::clients::Client,
    /// Prepended to every cart's key.
    pub redis_prefix: String,
    pub partitions: u16,
    /// Dates freezes and ages catalog answers.
    pub clock: SharedClock,
}

/// Answers cart commands on every partition until `stop`; returns once the
/// commands in flight have finished and the cart actors have stopped.
pub async fn run(settings: CartSettings, deps: Dependencies, stop: CancellationToken) -> Result<(), CartError> {
    let store = RedisStore::new(deps.redis.clone(), &deps.redis_prefix, settings.ttl);
    let host_config = HostConfig { max_in_flight: settings.max_in_flight, ..HostConfig::default() };
    let host = EntityHost::start(store.clone(), host_config).await?;
    let catalog_caller = Caller::new(deps.nats.clone(), CATALOG_DEADLINE);
    let carts = Arc::new(Carts {
        host: host.clone(),
        store,
        catalog: ProductCatalog::new(catalog_caller, deps.clock.clone(), settings.product_cache),
        orders: Caller::new(deps.nats.clone(), settings.order_timeout).with_partitions(deps.partitions),
        clock: deps.clock,
        freeze_for: settings.freeze_for,
    });
    tracing::info!("cart ready");
    let serve_config = ServeConfig { max_in_flight: settings.max_in_flight, ..ServeConfig::default() };
    let owned: Vec<Partition> = Partition::all(deps.partitions).collect();
    let routes = handlers::routes(carts, &owned, deps.partitions);
    // Every cart route is partition-addressed, so no subject joins the queue group.
    let served = emporium_nats::rpc::serve(deps.nats, SERVICE, routes, serve_config, stop).await;
    host.stop().await;
    Ok(served?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<CartSettings, SettingsError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        CartSettings::from_source(|name| vars.get(name).cloned())
    }

    #[test]
    fn without_variables_the_defaults_apply() {
        let settings = settings(&[]).unwrap();
        assert_eq!(settings.ttl, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(settings.max_in_flight, 512);
        assert_eq!(settings.product_cache, Duration::from_millis(5000));
        assert_eq!(settings.freeze_for, Duration::from_secs(30));
        assert_eq!(settings.order_timeout, Duration::from_millis(3000));
    }

    #[test]
    fn an_invalid_value_names_its_variable() {
        assert_eq!(settings(&[("CART_FREEZE_SECS", "soon")]).unwrap_err().name, "CART_FREEZE_SECS");
        let order_timeout = settings(&[("CART_ORDER_TIMEOUT_MS", "250")]).unwrap().order_timeout;
        assert_eq!(order_timeout, Duration::from_millis(250));
    }
}
