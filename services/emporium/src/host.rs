//! Hosting services in one process: shared connections, one ops server, and a
//! graceful shutdown that drains every service within the grace period.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use emporium_payment::simulator::Placement;
use emporium_payment::simulator::remote::RemoteSimulator;
use emporium_platform::{Connections, Readiness, Settings, ops, shutdown};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A service this binary can host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Gateway,
    Identity,
    Catalog,
    Inventory,
    Order,
    Payment,
    Shipping,
    Notification,
    Cart,
}

impl Service {
    pub(crate) const ALL: &'static [Service] = &[
        Service::Identity,
        Service::Catalog,
        Service::Inventory,
        Service::Order,
        Service::Payment,
        Service::Shipping,
        Service::Notification,
        Service::Cart,
        Service::Gateway,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Service::Gateway => "gateway",
            Service::Identity => emporium_identity::SERVICE,
            Service::Catalog => emporium_catalog::SERVICE,
            Service::Inventory => emporium_inventory::SERVICE,
            Service::Order => emporium_order::SERVICE,
            Service::Payment => emporium_payment::SERVICE,
            Service::Shipping => emporium_shipping::SERVICE,
            Service::Notification => emporium_notification::SERVICE,
            Service::Cart => emporium_cart::SERVICE,
        }
    }

    /// The service's own Postgres database, if it keeps one.
    pub(crate) fn database(self) -> Option<&'static str> {
        match self {
            // The gateway owns nothing durable; carts live in Redis.
            Service::Gateway | Service::Cart => None,
            Service::Identity
            | Service::Catalog
            | Service::Inventory
            | Service::Order
            | Service::Payment
            | Service::Shipping
            | Service::Notification => Some(self.name()),
        }
    }

    /// Creates or updates the service's tables (idempotent).
    pub(crate) async fn migrate(self, pool: &sqlx::PgPool) -> anyhow::Result<()> {
        match self {
            Service::Gateway | Service::Cart => {}
            Service::Identity => emporium_identity::store::migrate(pool).await?,
            Service::Catalog => emporium_catalog::store::migrate(pool).await?,
            Service::Inventory => emporium_inventory::store::migrate(pool).await?,
            Service::Order => emporium_order::store::migrate(pool).await?,
            Service::Payment => emporium_payment::store::migrate(pool).await?,
            Service::Shipping => emporium_shipping::store::migrate(pool).await?,
            Service::Notification => emporium_notification::store::migrate(pool).await?,
        }
        Ok(())
    }

    /// The contexts whose events the service consumes (a durable consumer per partition each).
    pub(crate) fn subscriptions(self) -> Vec<emporium_nats::Subscription> {
        match self {
            // None of these consumes events.
            Service::Gateway | Service::Identity | Service::Cart => Vec::new(),
            Service::Catalog => emporium_catalog::subscriptions(),
            Service::Inventory => emporium_inventory::subscriptions(),
            Service::Order => emporium_order::subscriptions(),
            Service::Payment => emporium_payment::subscriptions(),
            Service::Shipping => emporium_shipping::subscriptions(),
            Service::Notification => emporium_notification::subscriptions(),
        }
    }

    /// Runs the service until `stop` is cancelled and its in-flight work is done.
    async fn run(
        self,
        settings: Settings,
        connections: Connections,
        readiness: Readiness,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let env = |name: &str| std::env::var(name).ok();
        // What a service that needs nothing more than the runtime's share runs on.
        let runtime_dependencies = || -> anyhow::Result<emporium_nats::runtime::Dependencies> {
            Ok(emporium_nats::runtime::Dependencies {
                pool: open_database(&connections, &readiness, self.name())?,
                nats: connections.nats().clone(),
                partitions: settings.partitions,
                clock: Arc::new(emporium_nats::SystemClock),
            })
        };
        match self {
            Service::Gateway => {
                let gateway_settings = emporium_gateway::GatewaySettings::from_source(env)?;
                let deps = emporium_gateway::Dependencies {
                    nats: connections.nats().clone(),
                    redis: connections.redis().clone(),
                    redis_prefix: settings.redis_prefix.clone(),
                    partitions: settings.partitions,
                };
                let gateway =
                    emporium_gateway::Gateway::bind(settings.gateway_addr, &gateway_settings, deps, readiness).await?;
                gateway.run_until_stopped(stop).await?;
            }
            Service::Identity => {
                let identity_settings = emporium_identity::IdentitySettings::from_source(env, settings.environment)?;
                let pool = open_database(&connections, &readiness, emporium_identity::SERVICE)?;
                let deps = emporium_identity::Dependencies {
                    pool,
                    nats: connections.nats().clone(),
                    redis: connections.redis().clone(),
                    redis_prefix: settings.redis_prefix.clone(),
                    partitions: settings.partitions,
                };
                emporium_identity::run(identity_settings, deps, stop).await?;
            }
            Service::Catalog => {
                let catalog_settings = emporium_catalog::CatalogSettings::from_source(env)?;
                emporium_catalog::run(catalog_settings, runtime_dependencies()?, stop).await?;
            }
            Service::Inventory => {
                let inventory_settings = emporium_inventory::InventorySettings::from_source(env)?;
                emporium_inventory::run(inventory_settings, runtime_dependencies()?, stop).await?;
            }
            Service::Order => {
                let order_settings = emporium_order::OrderSettings::from_source(env)?;
                emporium_order::run(order_settings, runtime_dependencies()?, stop).await?;
            }
            Service::Payment => {
                let payment_settings = emporium_payment::PaymentSettings::from_source(env)?;
                let pool = open_database(&connections, &readiness, emporium_payment::SERVICE)?;
                let clock: emporium_nats::SharedClock = Arc::new(emporium_nats::SystemClock);
                // The simulated provider, the only one there is until a real one is wired in: here,
                // or in its own process (`emporium provider`) so that its records outlive this one.
                let provider: Arc<dyn emporium_payment::Provider> = match payment_settings.simulator {
                    Placement::InProcess => {
                        Arc::new(emporium_payment::Simulator::new((&payment_settings).into(), clock.clone()))
                    }
                    Placement::Remote => {
                        Arc::new(RemoteSimulator::new(connections.nats().clone(), payment_settings.provider_timeout))
                    }
                };
                let deps = emporium_payment::Dependencies {
                    pool,
                    nats: connections.nats().clone(),
                    partitions: settings.partitions,
                    clock,
                    provider,
                };
                emporium_payment::run(payment_settings, deps, stop).await?;
            }
            Service::Shipping => {
                let shipping_settings = emporium_shipping::ShippingSettings::from_source(env)?;
                emporium_shipping::run(shipping_settings, runtime_dependencies()?, stop).await?;
            }
            Service::Notification => {
                let notification_settings = emporium_notification::NotificationSettings::from_source(env)?;
                emporium_notification::run(notification_settings, runtime_dependencies()?, stop).await?;
            }
            Service::Cart => {
                let cart_settings = emporium_cart::CartSettings::from_source(env)?;
                let deps = emporium_cart::Dependencies {
                    nats: connections.nats().clone(),
                    redis: connections.redis().clone(),
                    redis_prefix: settings.redis_prefix.clone(),
                    partitions: settings.partitions,
                    clock: Arc::new(emporium_nats::SystemClock),
                };
                emporium_cart::run(cart_settings, deps, stop).await?;
            }
        }
        Ok(())
    }
}

/// A pool on `service`'s own database, its readiness probed as `postgres.<service>`.
fn open_database(connections: &Connections, readiness: &Readiness, service: &str) -> anyhow::Result<sqlx::PgPool> {
    let pool = connections.postgres(service)?;
    readiness.register(format!("postgres.{service}"), emporium_platform::connections::postgres_check(pool.clone()));
    Ok(pool)
}

/// Runs `services` until SIGINT/SIGTERM or until one of them fails.
pub(crate) async fn run(settings: Settings, services: &[Service]) -> anyhow::Result<()> {
    let names: Vec<&str> = services.iter().map(|s| s.name()).collect();
    tracing::info!(services = ?names, "starting");

    let signalled = CancellationToken::new();
    shutdown::cancel_on_signal(signalled.clone());

    let readiness = Readiness::default();
    let connections =
        Connections::open(&settings, &format!("emporium-{}", names.join("-"))).await.context("opening connections")?;
    connections.register_checks(&readiness);

    // The ops server outlives the services so `/readyz` can say "draining" meanwhile.
    let ops_stop = CancellationToken::new();
    let (ops_addr, ops_server) = ops::serve(settings.ops_addr, readiness.clone(), ops_stop.clone())
        .await
        .with_context(|| format!("binding the ops address {}", settings.ops_addr))?;
    tracing::info!(addr = %ops_addr, "ops routes listening (/healthz, /readyz)");

    let services_stop = CancellationToken::new();
    let mut running = JoinSet::new();
    for service in services {
        let (settings, connections, readiness, stop) =
            (settings.clone(), connections.clone(), readiness.clone(), services_stop.clone());
        let service = *service;
        running.spawn(async move { (service, service.run(settings, connections, readiness, stop).await) });
    }

    let mut failed = false;
    tokio::select! {
        () = signalled.cancelled() => {}
        Some(finished) = running.join_next() => {
            failed = true;
            report(finished);
        }
    }

    readiness.start_draining();
    services_stop.cancel();
    failed |= drain(&mut running, settings.shutdown_grace).await;
    connections.close().await;
    ops_stop.cancel();
    let _ = ops_server.await;
    tracing::info!("stopped");
    if failed { anyhow::bail!("a service failed; see the log above") } else { Ok(()) }
}

/// Waits for every service to finish, at most `grace`; the rest are aborted.
/// Returns whether any service failed or had to be aborted.
async fn drain(running: &mut JoinSet<(Service, anyhow::Result<()>)>, grace: Duration) -> bool {
    let mut failed = false;
    let all_done = async {
        while let Some(finished) = running.join_next().await {
            failed |= report(finished);
        }
    };
    if tokio::time::timeout(grace, all_done).await.is_err() {
        tracing::error!(grace_secs = grace.as_secs(), "services still busy after the grace period; aborting them");
        running.abort_all();
        return true;
    }
    failed
}

/// Logs how a service ended; returns whether it failed.
fn report(finished: Result<(Service, anyhow::Result<()>), tokio::task::JoinError>) -> bool {
    match finished {
        Ok((service, Ok(()))) => {
            tracing::info!(service = service.name(), "service stopped");
            false
        }
        Ok((service, Err(error))) => {
            tracing::error!(service = service.name(), error = format!("{error:#}"), "service failed");
            true
        }
        Err(error) => {
            tracing::error!(%error, "service task panicked");
            true
        }
    }
}
