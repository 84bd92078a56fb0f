//! The shipping service: one shipment per confirmed order, moved on by its
//! carrier.
//!
//! It creates an order's shipment on `order.confirmed` (with a carrier and a
//! tracking number) and cancels it on `order.cancelled` while the parcel has
//! not left. The carrier's reports arrive as `cmd.shipping.ship` and
//! `cmd.shipping.deliver` (queue group `shipping`; an admin stands in for the
//! carrier's webhook). Every change is published as `shipping.*` through the
//! outbox, keyed by the order id with the shipment's version as `seq`.
//!
//! # Layout
//! - [`domain`]: the rules (the shipment's id and tracking number, what an
//!   order event does to a shipment, which move is legal when), pure and
//!   tested given/when/then.
//! - [`store`]: the tables (sqlx).
//! - [`saga`]: the order event handler.
//! - [`handlers`]: each command's answer.

pub mod domain;
pub mod handlers;
pub mod saga;
pub mod store;

use std::sync::Arc;

use emporium_nats::{OutboxSignal, ServiceRuntime, Subscription};
use emporium_platform::settings::{SettingsError, typed};
use emporium_schemas::values::Text;
use tokio_util::sync::CancellationToken;

use crate::saga::{OrderEvents, Shipping};

/// The service's name: its database is `emporium_shipping`, its queue group the same.
pub const SERVICE: &str = "shipping";

const ORDER: &Subscription = &Subscription { service: SERVICE, context: "order" };

/// The events shipping consumes (a durable consumer per partition each).
pub fn subscriptions() -> Vec<Subscription> {
    vec![ORDER.clone()]
}

/// Shipping's own settings (`SHIPPING_*`; `.env.example` lists them).
#[derive(Debug, Clone)]
pub struct ShippingSettings {
    /// Requests one instance answers at once before shedding.
    pub max_in_flight: usize,
    /// The carrier named on new shipments.
    pub carrier: Text,
}

impl ShippingSettings {
    pub fn from_source(source: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let carrier: String = typed(&source, "SHIPPING_CARRIER", "Emporium Post")?;
        Ok(Self {
            max_in_flight: typed(&source, "SHIPPING_MAX_IN_FLIGHT", "512")?,
            carrier: Text::try_from(carrier)
                .map_err(|e| SettingsError { name: "SHIPPING_CARRIER", reason: e.to_string() })?,
        })
    }
}

/// Why the service could not start.
pub type ShippingError = emporium_nats::ServiceError;

/// What the service runs on; the host (or a test) opens these.
pub type Dependencies = emporium_nats::runtime::Dependencies;

/// Migrates, then consumes order events, answers the carrier's commands and
/// relays its outbox until `stop`.
pub async fn run(settings: ShippingSettings, deps: Dependencies, stop: CancellationToken) -> Result<(), ShippingError> {
    store::migrate(&deps.pool).await?;
    let outbox = OutboxSignal::default();
    let (mut runtime, _) =
        ServiceRuntime::start(SERVICE, &deps.pool, &deps.nats, deps.partitions, &deps.clock, &outbox, stop).await?;
    let shipping = Arc::new(Shipping::new(deps.pool, outbox, deps.clock, settings.carrier));

    runtime.consume(ORDER, OrderEvents(shipping.clone()));
    tracing::info!("shipping ready");
    runtime.serve(handlers::routes(shipping), settings.max_in_flight).await
}
