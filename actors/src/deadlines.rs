//! Durable deadlines: an entity's deadline is stored in its row, so it
//! survives passivation and process death. One sweeper per entity kind and
//! service leads under a lease; each tick it sends the deadline command to
//! every entity whose deadline has passed by the injected clock (spawning
//! passivated ones). The entity decides what the deadline means and clears or
//! moves it; until it does, later ticks fire it again.

use std::time::Duration;

use emporium_nats::{Leases, SharedClock};
use emporium_schemas::EntityKey;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::host::EntityHost;
use crate::postgres::Persistent;

/// Fires the due deadlines of one entity kind.
#[derive(Debug)]
pub struct DeadlineSweeper<E: Persistent>
where
    E::State: Serialize + DeserializeOwned,
{
    pool: PgPool,
    host: EntityHost<E>,
    clock: SharedClock,
    /// Most deadlines fired per tick.
    pub batch: i64,
}

impl<E: Persistent> DeadlineSweeper<E>
where
    E::State: Serialize + DeserializeOwned,
{
    pub fn new(pool: PgPool, host: EntityHost<E>, clock: SharedClock) -> Self {
        Self { pool, host, clock, batch: 500 }
    }

    /// Fires every deadline due now; returns how many entities it told.
    /// The sweeper's step, which tests drive directly.
    pub async fn tick(&self) -> Result<usize, sqlx::Error> {
        let now = self.clock.now();
        let due: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM entity_state WHERE kind = $1 AND deadline_at <= $2 ORDER BY deadline_at LIMIT $3",
        )
        .bind(E::KIND)
        .bind(now)
        .bind(self.batch)
        .fetch_all(&self.pool)
        .await?;
        let ids: Vec<E::Id> =
            due.into_iter().filter_map(|id| EntityKey::try_from(id).ok()).filter_map(|key| E::id(&key)).collect();
        let fired = ids.len();
        let outcomes =
            futures::future::join_all(ids.into_iter().map(|id| self.host.send(id, E::deadline_reached(now)))).await;
        for outcome in outcomes {
            if let Err(error) = outcome {
                // It stays due and is fired again on the next tick.
                tracing::warn!(kind = E::KIND, %error, "deadline not handled yet");
            }
        }
        Ok(fired)
    }

    /// Ticks every `every` while this process holds the sweeper's lease.
    pub async fn run(self, leases: Leases, service: &str, every: Duration, stop: CancellationToken) {
        let lease_name = format!("deadlines.{service}.{}", E::KIND);
        emporium_nats::lease::while_leading(&leases, &lease_name, every, stop, || async {
            if let Err(error) = self.tick().await {
                tracing::warn!(kind = E::KIND, %error, "deadline sweep failed");
            }
        })
        .await;
    }
}
