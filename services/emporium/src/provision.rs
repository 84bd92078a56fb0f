//! `emporium provision`: create on the servers what the services need. Idempotent.

use anyhow::Context;
use emporium_nats::Topology;
use emporium_platform::Settings;
use emporium_platform::connections::{connect_once, database_name, ensure_database};

use crate::host::Service;

/// Creates each service's database, and the streams, DLQ, KV buckets and durable
/// consumers of the whole system.
pub(crate) async fn run(settings: &Settings) -> anyhow::Result<()> {
    for service in Service::ALL {
        if let Some(name) = service.database() {
            let database = database_name(name);
            ensure_database(&settings.database_url, &database)
                .await
                .with_context(|| format!("creating database {database}"))?;
            let pool = connect_once(&settings.database_url, name).await?;
            service.migrate(&pool).await.with_context(|| format!("migrating {database}"))?;
            pool.close().await;
            tracing::info!(%database, "database ready");
        }
    }

    let client = crate::operator::connect_nats(settings, "emporium-provision").await?;
    let jetstream = async_nats::jetstream::new(client.clone());
    let subscriptions = Service::ALL.iter().flat_map(|service| service.subscriptions()).collect();
    let done = emporium_nats::provision(&jetstream, &Topology::new(settings.partitions, subscriptions)).await?;
    tracing::info!(streams = ?done.streams, buckets = ?done.buckets, consumers = done.consumers.len(), "provisioned");
    client.flush().await?;
    Ok(())
}
