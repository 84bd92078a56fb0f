//! `emporium provision`: create on the servers what the services need. Idempotent.

use anyhow::Context;
use emporium_platform::connections::{database_name, ensure_database};
use emporium_platform::{Connections, Settings};

use crate::host::Service;

/// Creates each hosted service's database and checks NATS and Redis answer.
pub(crate) async fn run(settings: &Settings) -> anyhow::Result<()> {
    let connections = Connections::open(settings, "emporium-provision").await?;
    for service in Service::ALL {
        if let Some(service) = service.database() {
            let database = database_name(service);
            ensure_database(&settings.database_url, &database)
                .await
                .with_context(|| format!("creating database {database}"))?;
            tracing::info!(%database, "database ready");
        }
    }
    connections.nats().flush().await.context("NATS does not answer")?;
    connections.close().await;
    tracing::info!("provisioned");
    Ok(())
}
