//! Entities stored in Postgres: one JSONB row per entity with its version and
//! its durable deadline, committed through the group-commit writer together
//! with the decision's outbox events and inbox entry.

use chrono::{DateTime, Utc};
use emporium_nats::OutgoingEvent;
use emporium_schemas::{EntityKey, Seq};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::PgPool;

use crate::entity::{CommitMeta, Entity, EntityStore, StoreError, Versioned};
use crate::writer::{Commit, CommitError, EntityRow, GroupCommit};

/// An entity whose state lives in Postgres and whose events are published.
pub trait Persistent: Entity
where
    Self::State: Serialize + DeserializeOwned,
{
    /// The entity kind's name in `entity_state.kind` (`order`, `cart`).
    const KIND: &'static str;

    /// The entity's key: its row id and its events' subject key.
    fn key(id: &Self::Id) -> EntityKey;

    /// The id a key names (the sweeper reads ids back from rows).
    fn id(key: &EntityKey) -> Option<Self::Id>;

    /// `event` as published, with envelope `seq` and the flow's ids; `None`
    /// for an event the entity keeps to itself (it changes its state and
    /// version, and nothing outside needs to hear of it).
    fn outgoing(
        key: &EntityKey,
        seq: Seq,
        event: &Self::Event,
        meta: &CommitMeta,
    ) -> Result<Option<OutgoingEvent>, serde_json::Error>;

    /// When the entity's deadline falls, if it has one.
    fn deadline(_state: &Self::State) -> Option<DateTime<Utc>> {
        None
    }

    /// The command the sweeper sends once the deadline has passed, at `now`.
    fn deadline_reached(now: DateTime<Utc>) -> Self::Command;
}

/// Creates the `entity_state` table (its own migration history, like the outbox's).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name("_emporium_actors_migrations");
    migrator.run(pool).await
}

/// Loads from `entity_state`, commits through a [`GroupCommit`] writer.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    writer: GroupCommit,
}

impl PgStore {
    pub fn new(pool: PgPool, writer: GroupCommit) -> Self {
        Self { pool, writer }
    }
}

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

impl<E> EntityStore<E> for PgStore
where
    E: Persistent,
    E::State: Serialize + DeserializeOwned,
{
    async fn load(&self, id: &E::Id) -> Result<Versioned<E::State>, StoreError> {
        let key = E::key(id);
        let row: Option<(i64, serde_json::Value)> =
            sqlx::query_as("SELECT version, state FROM entity_state WHERE kind = $1 AND id = $2")
                .bind(E::KIND)
                .bind(key.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(match row {
            Some((version, state)) => Versioned {
                version: u64::try_from(version).unwrap_or(0),
                state: serde_json::from_value(state).map_err(unavailable)?,
            },
            None => Versioned::default(),
        })
    }

    async fn commit(
        &self,
        id: &E::Id,
        expected_version: u64,
        events: &[E::Event],
        state: &E::State,
        meta: &CommitMeta,
    ) -> Result<(), StoreError> {
        let key = E::key(id);
        let mut outbox = Vec::with_capacity(events.len());
        for (n, event) in (1u64..).zip(events) {
            let seq = Seq::try_from(expected_version + n).map_err(unavailable)?;
            outbox.extend(E::outgoing(&key, seq, event, meta).map_err(unavailable)?);
        }
        let row = EntityRow {
            kind: E::KIND,
            id: key.to_string(),
            expected: i64::try_from(expected_version).map_err(unavailable)?,
            version: i64::try_from(expected_version + events.len() as u64).map_err(unavailable)?,
            state: serde_json::to_value(state).map_err(unavailable)?,
            deadline: E::deadline(state),
        };
        let commit = Commit { inbox: meta.inbox.clone(), state: Some(Box::new(row)), outbox };
        match self.writer.commit(commit).await {
            Ok(()) => Ok(()),
            Err(CommitError::Conflict) => Err(StoreError::Conflict { expected: expected_version, found: 0 }),
            Err(CommitError::Duplicate) => Err(StoreError::Duplicate),
            Err(error) => Err(unavailable(error)),
        }
    }
}
