//! Real servers for tests, isolated per test.
//!
//! - [`TestDatabase`]: a fresh Postgres database, dropped after the test.
//! - [`TestRedis`]: a Redis client and a key prefix no other test uses.
//! - [`NatsServer`]: a private `nats-server -js` with its own store directory,
//!   which a test may stop and restart; [`TestNats`] hands one out (or, where no
//!   `nats-server` binary exists, the shared server with unique names).
//!
//! - [`TestService`]: one event-driven service under test, on a private NATS
//!   server provisioned for it and a fresh database migrated for it.
//!
//! - [`PostgresServer`], [`RedisServer`]: private servers as child processes,
//!   for runs that kill and restart them (`just chaos`) or measure them alone
//!   (`just bench`).
//!
//! - [`events`]: events for tests, and sample ones for tests that only care
//!   about envelopes; [`values`]: sample values (text, euros, an address).
//! - [`smtp`]: a tiny SMTP server that records the mail it is handed.
//!
//! Server URLs come from `DATABASE_URL`, `REDIS_URL`, `NATS_URL`; when one is
//! unset and a Docker engine is reachable, a container is started for the test
//! (testcontainers). Tracing output is shown only with `TEST_LOG=1`.

mod containers;
pub mod events;
mod nats;
mod postgres;
mod redis;
mod servers;
mod service;
pub mod smtp;
pub mod values;

pub use nats::{NatsServer, TestNats};
pub use postgres::TestDatabase;
pub use redis::TestRedis;
pub use servers::{PostgresServer, RedisServer, free_port, stop_gracefully};
pub use service::TestService;
pub use smtp::SmtpServer;

/// A server a test needs could not be had.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{variable} is not set and no Docker engine is reachable: run `just up` (or export {variable})")]
    NoServer { variable: &'static str },
    #[error("container: {0}")]
    Container(#[from] testcontainers::TestcontainersError),
    #[error("Postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("migrating: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("Redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("NATS: {0}")]
    Nats(String),
    #[error("{name} server: {reason}")]
    Server { name: &'static str, reason: String },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl HarnessError {
    fn nats(error: impl std::fmt::Display) -> Self {
        Self::Nats(error.to_string())
    }
}

/// Shows tracing output when `TEST_LOG` is set; otherwise tests stay quiet.
pub fn init_tracing() {
    if std::env::var_os("TEST_LOG").is_some() {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("debug"));
        // Err means another test in this process already installed it.
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
}

/// A name unique to this test: for databases, key prefixes, streams and buckets.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Polls `condition` until it holds or `timeout` passes; tests wait with this,
/// never with a bare sleep.
pub async fn eventually<F, Fut>(timeout: std::time::Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
