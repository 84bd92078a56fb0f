//! A fresh Postgres database per test.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use testcontainers::{ContainerAsync, GenericImage};

use crate::{HarnessError, containers, init_tracing, unique_name};

/// A database created for one test and dropped when the test ends.
pub struct TestDatabase {
    pool: PgPool,
    name: String,
    server_url: String,
    _container: Option<ContainerAsync<GenericImage>>,
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDatabase").field("name", &self.name).finish_non_exhaustive()
    }
}

impl TestDatabase {
    /// Creates an empty database on the server of `DATABASE_URL` (or a container).
    pub async fn create() -> Result<Self, HarnessError> {
        init_tracing();
        let (server_url, container) = containers::url_or_container("DATABASE_URL", containers::postgres).await?;
        let name = unique_name("test");
        let mut admin = PgConnectOptions::from_str(&server_url)?.connect().await?;
        // The name is ours (letters, digits, '_'), so formatting it in is safe.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut admin).await?;
        admin.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(PgConnectOptions::from_str(&server_url)?.database(&name))
            .await?;
        Ok(Self { pool, name, server_url, _container: container })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL of this test's database, for code that opens its own connections.
    pub fn url(&self) -> String {
        replace_database(&self.server_url, &self.name)
    }

    /// The server's URL (to create further databases, as provisioning does).
    pub fn server_url(&self) -> &str {
        &self.server_url
    }
}

/// `postgres://u:p@h:5432/db?x` with `db` replaced.
fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Dropping needs async I/O and Drop is sync, and the test's runtime may be
        // shutting down: do it on a thread of its own with a small runtime. The
        // pool is not closed first: that waits for connections that tasks on the
        // (now blocked) test runtime hold; FORCE ends them instead.
        let server_url = self.server_url.clone();
        let name = self.name.clone();
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            runtime.block_on(async move {
                let Ok(options) = PgConnectOptions::from_str(&server_url) else { return };
                if let Ok(mut admin) = options.connect().await {
                    let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    if let Err(error) = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut admin).await {
                        tracing::warn!(%error, database = %name, "test database left behind");
                    }
                }
            });
        });
        let _ = dropper.join();
    }
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn the_database_of_a_url_is_replaced_and_the_rest_kept() {
        assert_eq!(replace_database("postgres://u:p@h:5432/postgres", "t1"), "postgres://u:p@h:5432/t1");
        assert_eq!(replace_database("postgres://h:5432", "t1"), "postgres://h:5432/t1");
        assert_eq!(replace_database("postgres://h/db?sslmode=disable", "t1"), "postgres://h/t1?sslmode=disable");
    }
}
