//! Connections to the platform's servers, opened once per process.
//!
//! None of them blocks start-up: NATS and Redis reconnect in the background
//! and Postgres pools connect lazily, so a process comes up while a server is
//! still starting and reports it through `/readyz` instead of crashing.

use std::str::FromStr;
use std::time::Duration;

use fred::prelude::{ClientLike, Config as RedisConfig, ReconnectPolicy};
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::ops::{Check, Readiness};
use crate::settings::Settings;

/// A server could not be reached or configured.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("NATS: {0}")]
    Nats(#[from] async_nats::ConnectError),
    #[error("Redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("Postgres: {0}")]
    Postgres(#[from] sqlx::Error),
}

/// The process's NATS and Redis clients, and the way to its services' databases.
#[derive(Clone)]
pub struct Connections {
    database_url: SecretString,
    database_max_connections: u32,
    nats: async_nats::Client,
    redis: fred::clients::Client,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections").finish_non_exhaustive()
    }
}

/// How long a readiness probe may wait for one server.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl Connections {
    /// Opens NATS and Redis (`client_name` identifies this process to both).
    pub async fn open(settings: &Settings, client_name: &str) -> Result<Self, ConnectError> {
        let nats = open_nats(settings, client_name).await?;
        let mut redis_config = RedisConfig::from_url(settings.redis_url.expose_secret())?;
        redis_config.fail_fast = false;
        let redis = fred::types::Builder::from_config(redis_config)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build()?;
        // Runs the connection (and its reconnections) in the background.
        let _connection_task = redis.connect();
        Ok(Self {
            database_url: settings.database_url.clone(),
            database_max_connections: settings.database_max_connections,
            nats,
            redis,
        })
    }

    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    pub fn redis(&self) -> &fred::clients::Client {
        &self.redis
    }

    /// A lazily connecting pool on the service's own database, `emporium_<service>`.
    pub fn postgres(&self, service: &str) -> Result<PgPool, ConnectError> {
        let options = database_options(&self.database_url, &database_name(service))?;
        Ok(PgPoolOptions::new()
            .max_connections(self.database_max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options))
    }

    /// Registers probes for NATS and Redis with `readiness`.
    pub fn register_checks(&self, readiness: &Readiness) {
        readiness.register("nats", nats_check(self.nats.clone()));
        let redis = self.redis.clone();
        readiness.register(
            "redis",
            Check::new(move || {
                let redis = redis.clone();
                async move {
                    match tokio::time::timeout(PROBE_TIMEOUT, redis.ping::<String>(None)).await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(error)) => Err(error.to_string()),
                        Err(_) => Err("no answer to PING".to_owned()),
                    }
                }
            }),
        );
    }

    /// Flushes what NATS still buffers and says goodbye to Redis.
    pub async fn close(&self) {
        if let Err(error) = self.nats.flush().await {
            tracing::warn!(%error, "NATS flush at shutdown failed");
        }
        if let Err(error) = self.redis.quit().await {
            tracing::debug!(%error, "Redis quit at shutdown failed");
        }
    }
}

/// A NATS client (`client_name` identifies this process) that connects, and
/// reconnects, in the background: a process that needs only NATS opens this.
pub async fn open_nats(settings: &Settings, client_name: &str) -> Result<async_nats::Client, ConnectError> {
    Ok(async_nats::ConnectOptions::new()
        .name(client_name)
        .retry_on_initial_connect()
        .connect(settings.nats_url.as_str())
        .await?)
}

/// A readiness probe for a NATS connection: ready while connected.
pub fn nats_check(nats: async_nats::Client) -> Check {
    Check::new(move || {
        let state = nats.connection_state();
        async move {
            match state {
                async_nats::connection::State::Connected => Ok(()),
                other => Err(format!("connection {other}")),
            }
        }
    })
}

/// A readiness probe for one service's database.
pub fn postgres_check(pool: PgPool) -> Check {
    Check::new(move || {
        let pool = pool.clone();
        async move {
            let probe = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&pool);
            match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err("no answer to SELECT 1".to_owned()),
            }
        }
    })
}

/// The database a service owns.
pub fn database_name(service: &str) -> String {
    format!("emporium_{service}")
}

/// The server URL's options, pointed at `database`.
pub fn database_options(server_url: &SecretString, database: &str) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(PgConnectOptions::from_str(server_url.expose_secret())?.database(database))
}

/// One connection to `service`'s database, for a one-shot operator command.
pub async fn connect_once(server_url: &SecretString, service: &str) -> Result<PgPool, sqlx::Error> {
    let options = database_options(server_url, &database_name(service))?;
    PgPoolOptions::new().max_connections(1).connect_with(options).await
}

/// Creates `database` on the server unless it exists (idempotent, safe to race).
pub async fn ensure_database(server_url: &SecretString, database: &str) -> Result<(), sqlx::Error> {
    let mut admin = PgConnectOptions::from_str(server_url.expose_secret())?.connect().await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(database)
        .fetch_one(&mut admin)
        .await?;
    if !exists {
        // Identifiers cannot be bound: it is quoted as one, which makes it safe.
        let create = format!("CREATE DATABASE \"{}\"", database.replace('"', "\"\""));
        match sqlx::query(sqlx::AssertSqlSafe(create)).execute(&mut admin).await {
            Ok(_) => {}
            // Someone else created it in between: that is what we wanted.
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P04") => {}
            Err(error) => return Err(error),
        }
    }
    admin.close().await
}
