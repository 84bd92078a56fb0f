//! The payment service: authorizes, captures, voids and refunds each order's
//! payment with the (simulated) provider, and keeps a double-entry ledger.
//!
//! It records a payment on `order.placed`, authorizes once stock is held
//! (`inventory.reserved`; seen first, it is remembered and the placement
//! authorizes), captures on `order.confirmed` (bounded retries) and
//! compensates on `order.cancelled` (void or refund; one the provider
//! refuses for good ends `void_failed`/`refund_failed` and is counted).
//! Every outcome is published as `payment.*` through the outbox.
//!
//! Nobody is charged twice: every provider call has its own idempotency key
//! and its attempt row is committed before the call is made. Calls are made
//! by worker tasks, outside any transaction and outside the consumer's ack
//! window, with a timeout; a call whose outcome is unknown (a timeout, an
//! answer such as a 5xx that does not prove the provider did nothing, or a
//! crash between the commit and the call) is re-queried by its key by the
//! recovery loop and settled as if it had answered, or made again with the
//! same key. Only an explicit "not done" answer lets an operation be tried
//! under a new key.
//!
//! # Layout
//! - [`domain`]: what each saga event and each provider outcome means for a
//!   payment in each status; pure, tested given/when/then.
//! - [`journal`]: the ledger's accounts and entries (capture, refund), which
//!   cannot be built unbalanced; pure.
//! - [`provider`]: the provider's interface; [`simulator`]: the simulated
//!   provider with its own records and test tokens.
//! - [`store`]: payments, attempts and journal tables (sqlx).
//! - [`saga`]: the event handlers; [`calls`]: provider calls, their
//!   settlement, and recovery.
//! - [`ledger`]: balances and reconciliation with the provider's records.

pub mod calls;
pub mod domain;
pub mod journal;
pub mod ledger;
pub mod provider;
pub mod saga;
pub mod simulator;
pub mod store;

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use emporium_nats::{OutboxSignal, ServiceRuntime, SharedClock, Subscription};
use emporium_platform::settings::{SettingsError, typed};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use crate::ledger::{Mismatch, reconcile};
pub use crate::provider::Provider;
pub use crate::saga::Payments;
pub use crate::simulator::{Simulator, SimulatorConfig};

use crate::saga::{InventoryEvents, OrderEvents};

/// The service's name: its database is `emporium_payment`.
pub const SERVICE: &str = "payment";
/// The lease (in the `locks` bucket) whose holder runs recovery.
pub const RECOVERY_LEASE: &str = "recovery.payment";

const ORDER: &Subscription = &Subscription { service: SERVICE, context: "order" };
const INVENTORY: &Subscription = &Subscription { service: SERVICE, context: "inventory" };

/// The events payment consumes (a durable consumer per partition each).
pub fn subscriptions() -> Vec<Subscription> {
    vec![ORDER.clone(), INVENTORY.clone()]
}

/// Payment's own settings (`PAYMENT_*`; `.env.example` lists them).
#[derive(Debug, Clone)]
pub struct PaymentSettings {
    /// `PAYMENT_PROVIDER_TIMEOUT_MS` (default 2000): how long one provider
    /// call may take; after that its outcome is unknown and recovery asks
    /// the provider by the call's key.
    pub provider_timeout: Duration,
    /// `PAYMENT_MAX_CONCURRENT_CALLS` (default 64): provider calls in flight
    /// at once per instance; more wait their turn.
    pub max_concurrent_calls: usize,
    /// `PAYMENT_CAPTURE_ATTEMPTS` (default 5): capture calls before the
    /// capture is given up (`payment.capture_failed`).
    pub capture_attempts: u32,
    /// `PAYMENT_RETRY_BACKOFF_MS` (default 200): a failed capture, void or
    /// refund is tried again this long × its attempt number later.
    pub retry_backoff: Duration,
    /// `PAYMENT_RECOVERY_EVERY_MS` (default 500): how often the recovery
    /// loop (one leader per service) re-queries calls of unknown outcome and
    /// runs the retries that are due.
    pub recovery_every: Duration,
    /// `PAYMENT_COMMISSION_BPS` (default 1000 = 10 %): the platform's
    /// commission on each order line, in basis points, rounded down.
    pub commission_bps: u32,
    /// `PAYMENT_PROVIDER_LATENCY_MS` (default 20): the simulated provider's
    /// answer time (fixed in benchmarks).
    pub provider_latency: Duration,
    /// `PAYMENT_SIM_LATE_SETTLE_SECS` (default 60): a `tok_timeout`
    /// authorization, never answered, settles as authorized at the simulated
    /// provider this long after it arrived.
    pub sim_late_settle: Duration,
    /// `PAYMENT_SIMULATOR` (default `in-process`): where the simulated
    /// provider runs, in payment's process or in its own (`remote`).
    pub simulator: simulator::Placement,
}

impl PaymentSettings {
    pub fn from_source(source: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let millis = |name, default| typed(&source, name, default).map(Duration::from_millis);
        let capture_attempts: NonZeroU32 = typed(&source, "PAYMENT_CAPTURE_ATTEMPTS", "5")?;
        let commission_bps: u32 = typed(&source, "PAYMENT_COMMISSION_BPS", "1000")?;
        if commission_bps > journal::BPS_SCALE {
            return Err(SettingsError {
                name: "PAYMENT_COMMISSION_BPS",
                reason: format!("must be 0 to {}, got {commission_bps}", journal::BPS_SCALE),
            });
        }
        let max_concurrent_calls: NonZeroUsize = typed(&source, "PAYMENT_MAX_CONCURRENT_CALLS", "64")?;
        Ok(Self {
            provider_timeout: millis("PAYMENT_PROVIDER_TIMEOUT_MS", "2000")?,
            max_concurrent_calls: max_concurrent_calls.get(),
            capture_attempts: capture_attempts.get(),
            retry_backoff: millis("PAYMENT_RETRY_BACKOFF_MS", "200")?,
            recovery_every: millis("PAYMENT_RECOVERY_EVERY_MS", "500")?,
            commission_bps,
            provider_latency: millis("PAYMENT_PROVIDER_LATENCY_MS", "20")?,
            sim_late_settle: Duration::from_secs(typed(&source, "PAYMENT_SIM_LATE_SETTLE_SECS", "60")?),
            simulator: typed(&source, "PAYMENT_SIMULATOR", "in-process")?,
        })
    }
}

/// Why the service could not start.
pub type PaymentError = emporium_nats::ServiceError;

/// What the service runs on; the host (or a test) opens these. The provider
/// is injected so a test or benchmark can hold and inspect the simulator.
#[derive(Debug, Clone)]
pub struct Dependencies {
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub partitions: u16,
    pub clock: SharedClock,
    pub provider: Arc<dyn Provider>,
}

/// Migrates, then consumes order and inventory events, makes provider
/// calls, runs recovery and relays its outbox until `stop`; then lets the
/// calls in flight finish (each bounded by its timeout) and publishes what
/// they settled.
pub async fn run(settings: PaymentSettings, deps: Dependencies, stop: CancellationToken) -> Result<(), PaymentError> {
    store::migrate(&deps.pool).await?;
    let outbox = OutboxSignal::default();
    let (mut runtime, leases) =
        ServiceRuntime::start(SERVICE, &deps.pool, &deps.nats, deps.partitions, &deps.clock, &outbox, stop).await?;
    let payments = Payments::new(deps.pool, outbox, deps.clock, deps.provider, &settings);

    runtime.consume(ORDER, OrderEvents(payments.clone()));
    runtime.consume(INVENTORY, InventoryEvents(payments.clone()));
    let (recovery, every) = (payments.clone(), settings.recovery_every);
    runtime.spawn("recovery", move |stop| async move {
        emporium_nats::lease::while_leading(&leases, RECOVERY_LEASE, every, stop, || async {
            if let Err(error) = recovery.recover_once().await {
                tracing::warn!(%error, "payment recovery step failed");
            }
        })
        .await;
    });
    runtime.on_drain(async move { payments.drain().await });
    // Registered now, so /metrics shows them at 0 before the first failure.
    calls::capture_failed_total();
    calls::compensation_failed_total();
    tracing::info!("payment ready");
    runtime.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<PaymentSettings, SettingsError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        PaymentSettings::from_source(|name| vars.get(name).cloned())
    }

    #[test]
    fn without_variables_the_defaults_apply() {
        let settings = settings(&[]).unwrap();
        assert_eq!(settings.provider_timeout, Duration::from_secs(2));
        assert_eq!(settings.capture_attempts, 5);
        assert_eq!(settings.retry_backoff, Duration::from_millis(200));
        assert_eq!(settings.recovery_every, Duration::from_millis(500));
        assert_eq!(settings.commission_bps, 1000);
        assert_eq!(settings.provider_latency, Duration::from_millis(20));
        assert_eq!(settings.sim_late_settle, Duration::from_secs(60));
    }

    #[test]
    fn impossible_values_are_refused_by_name() {
        for (name, value) in [
            ("PAYMENT_CAPTURE_ATTEMPTS", "0"),
            ("PAYMENT_COMMISSION_BPS", "10001"),
            ("PAYMENT_MAX_CONCURRENT_CALLS", "0"),
            ("PAYMENT_PROVIDER_TIMEOUT_MS", "soon"),
        ] {
            let error = settings(&[(name, value)]).unwrap_err();
            assert_eq!(error.name, name);
        }
        assert_eq!(settings(&[("PAYMENT_COMMISSION_BPS", "250")]).unwrap().commission_bps, 250);
    }
}
