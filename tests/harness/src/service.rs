//! One event-driven service under test: a private NATS server provisioned for
//! what it consumes, a fresh database migrated for it, and the service itself
//! running until the test ends.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::publish::PublishAck;
use emporium_nats::runtime::Dependencies;
use emporium_nats::topology::event_stream;
use emporium_nats::{Caller, OutgoingEvent, Publisher, SharedClock, Subscription, Topology, provision};
use emporium_schemas::{Command, CommandEnvelope, Partition};
use sqlx::PgPool;
use sqlx::migrate::MigrateError;
use tokio_util::sync::CancellationToken;

use crate::{HarnessError, TestDatabase, TestNats, eventually};

/// How long a test waits for the service to start or to take an event.
const PATIENCE: Duration = Duration::from_secs(30);

/// What a service runs on in a test, and the service once
/// [spawned](TestService::spawn); dropping it stops the service.
#[derive(Debug)]
pub struct TestService {
    stop: CancellationToken,
    nats: TestNats,
    db: TestDatabase,
    jetstream: async_nats::jetstream::Context,
    publisher: Publisher,
    partitions: u16,
}

impl TestService {
    /// A private NATS server with the streams and consumers of `subscriptions`
    /// over `partitions`, and a fresh database that `migrate` prepares here,
    /// before the service starts, so the test's own queries never race it.
    pub async fn prepare(
        partitions: u16,
        subscriptions: Vec<Subscription>,
        migrate: impl AsyncFnOnce(&PgPool) -> Result<(), MigrateError>,
    ) -> Result<Self, HarnessError> {
        let nats = TestNats::start().await?;
        let jetstream = async_nats::jetstream::new(nats.client().clone());
        provision(&jetstream, &Topology::new(partitions, subscriptions)).await.map_err(HarnessError::nats)?;
        let db = TestDatabase::create().await?;
        migrate(db.pool()).await?;
        let publisher = Publisher::new(jetstream.clone(), partitions);
        Ok(Self { stop: CancellationToken::new(), nats, db, jetstream, publisher, partitions })
    }

    /// What a service that needs nothing more runs on, with `clock` for its time.
    pub fn dependencies(&self, clock: SharedClock) -> Dependencies {
        Dependencies {
            pool: self.db.pool().clone(),
            nats: self.nats.client().clone(),
            partitions: self.partitions,
            clock,
        }
    }

    /// Runs the service `run` starts (given the token that stops it) until
    /// this is dropped.
    pub fn spawn<F>(&self, run: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output: Send> + Send + 'static,
    {
        tokio::spawn(run(self.stop.clone()));
    }

    /// Waits until `who` answers `probe`. Any answer, a refusal such as "sign
    /// in first" too, means the service is subscribed.
    pub async fn until_answering<C: Command>(&self, who: &'static str, probe: C) -> Result<(), HarnessError> {
        let caller = Caller::new(self.nats.client().clone(), Duration::from_millis(500));
        let probe = CommandEnvelope::new(None, None, probe);
        let up =
            eventually(PATIENCE, || async { caller.call::<_, serde_json::Value>(&probe, "probe").await.is_ok() }).await;
        if up { Ok(()) } else { Err(HarnessError::Server { name: who, reason: "never answered".to_owned() }) }
    }

    /// Publishes `event`'s bytes under `message_id` (JetStream keeps a second
    /// copy of an event only under another id); the ack tells its stream
    /// sequence and whether it was a duplicate.
    pub async fn publish_as(&self, event: &OutgoingEvent, message_id: &str) -> Result<PublishAck, HarnessError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id);
        self.jetstream
            .publish_with_headers(event.subject(self.partitions), headers, event.payload.clone())
            .await
            .map_err(HarnessError::nats)?
            .await
            .map_err(HarnessError::nats)
    }

    /// Waits until `service`'s consumer of `event`'s stream and partition has
    /// acked stream sequence `sequence` and everything before it.
    pub async fn until_consumed(
        &self,
        service: &'static str,
        event: &OutgoingEvent,
        sequence: u64,
    ) -> Result<(), HarnessError> {
        let context = event.event_type.context;
        let durable = Subscription { service, context }.durable_name(Partition::of(&event.key, self.partitions));
        let stream = self.jetstream.get_stream(event_stream(context)).await.map_err(HarnessError::nats)?;
        let acked = eventually(PATIENCE, || async {
            stream.consumer_info(&durable).await.is_ok_and(|info| info.ack_floor.stream_sequence >= sequence)
        })
        .await;
        if acked {
            Ok(())
        } else {
            Err(HarnessError::Nats(format!("{durable} never acked stream sequence {sequence}")))
        }
    }

    pub fn nats(&self) -> &TestNats {
        &self.nats
    }

    pub fn jetstream(&self) -> &async_nats::jetstream::Context {
        &self.jetstream
    }

    /// Publishes events onto the provisioned streams.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// Sends commands as the gateway would, waiting up to 5 s for each answer.
    pub fn caller(&self) -> Caller {
        Caller::new(self.nats.client().clone(), Duration::from_secs(5)).with_partitions(self.partitions)
    }

    pub fn pool(&self) -> &PgPool {
        self.db.pool()
    }
}

impl Drop for TestService {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
