//! The start-up and shutdown every event-driven service shares.
//!
//! A service migrates its database and builds its state, then
//! [`ServiceRuntime::start`]s, which starts its outbox relay and hands back its
//! [`Leases`]. It says what it consumes ([`consume`](ServiceRuntime::consume))
//! and what else runs ([`spawn`](ServiceRuntime::spawn)), then answers requests
//! until `stop` ([`serve`](ServiceRuntime::serve); a service without requests
//! [`wait`](ServiceRuntime::wait)s instead).
//!
//! Shutdown goes in the one order that leaves nothing behind: the request
//! loop and the consumers stop taking work and finish what they hold, the
//! service's tasks stop, then the work it registered with
//! [`on_drain`](ServiceRuntime::on_drain) finishes (a group-commit writer,
//! provider calls in flight), and only then does the relay stop, after one
//! last publish pass. What the drain commits puts its events in the outbox,
//! so they are published now rather than at the next start (by this process
//! if it leads the relay; a follower forwards its wakes to the leader until
//! then).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use emporium_schemas::Partition;
use sqlx::PgPool;
use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::SharedClock;
use crate::consumer::{ConsumerLoop, Handler, LoopConfig};
use crate::lease::{LeaseError, Leases};
use crate::outbox::{OutboxRelay, OutboxSignal};
use crate::rpc::{Routes, ServeConfig};
use crate::topology::{Subscription, event_stream};

/// What any event-driven service can fail with at start. Services that can
/// fail in more ways wrap it in their own error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("migrating the service's database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Leases(#[from] LeaseError),
    #[error("subscribing: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
}

/// What an event-driven service runs on: its database, NATS, how many
/// partitions the streams have, and the clock. The host (or a test) opens
/// these; a service that needs nothing more takes them as its `Dependencies`.
#[derive(Debug, Clone)]
pub struct Dependencies {
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub partitions: u16,
    pub clock: SharedClock,
}

type Drain = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One service's relay, consumers and tasks, from start to an orderly stop.
pub struct ServiceRuntime {
    service: &'static str,
    nats: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    partitions: u16,
    /// Cancelled with the caller's `stop`, or when serving fails: the request
    /// loop, the consumers and the tasks stop on it.
    working: CancellationToken,
    tasks: JoinSet<()>,
    names: HashMap<Id, String>,
    drains: Vec<Drain>,
    /// Aborted if the runtime is dropped without shutting down (a start
    /// that failed after it).
    relay: AbortOnDropHandle<()>,
    /// Not a child of `working`: the relay outlives the drain.
    relay_stop: CancellationToken,
}

impl fmt::Debug for ServiceRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceRuntime")
            .field("service", &self.service)
            .field("tasks", &self.names.values().collect::<Vec<_>>())
            .field("drains", &self.drains.len())
            .finish_non_exhaustive()
    }
}

impl ServiceRuntime {
    /// Starts `service`'s outbox relay (woken by `outbox`) and returns the
    /// runtime with the service's leases, for whatever else it runs under
    /// one (sweepers, senders). Everything stops once `stop` is cancelled.
    pub async fn start(
        service: &'static str,
        pool: &PgPool,
        nats: &async_nats::Client,
        partitions: u16,
        clock: &SharedClock,
        outbox: &OutboxSignal,
        stop: CancellationToken,
    ) -> Result<(Self, Leases), ServiceError> {
        let jetstream = async_nats::jetstream::new(nats.clone());
        let (leases, relay) = OutboxRelay::for_service(
            service,
            pool.clone(),
            jetstream.clone(),
            partitions,
            clock.clone(),
            outbox.clone(),
        )
        .await?;
        let relay_stop = CancellationToken::new();
        let relay = AbortOnDropHandle::new(tokio::spawn(relay.run(relay_stop.clone())));
        let runtime = Self {
            service,
            nats: nats.clone(),
            jetstream,
            partitions,
            working: stop.child_token(),
            tasks: JoinSet::new(),
            names: HashMap::new(),
            drains: Vec::new(),
            relay,
            relay_stop,
        };
        Ok((runtime, leases))
    }

    /// Runs a consumer loop on each partition's durable consumer of
    /// `subscription` (they must exist: `emporium provision`), all sharing `handler`.
    pub fn consume<H: Handler>(&mut self, subscription: &Subscription, handler: H) {
        let handler = Arc::new(handler);
        for partition in Partition::all(self.partitions) {
            let durable = subscription.durable_name(partition);
            let consumer_loop = ConsumerLoop::new(
                self.jetstream.clone(),
                event_stream(subscription.context),
                durable.clone(),
                handler.clone(),
                LoopConfig::default(),
            );
            self.spawn(durable, |stop| consumer_loop.run(stop));
        }
    }

    /// Runs one of the service's own tasks (a sweeper, a sender): `task` is
    /// given the token that tells it to stop, and is awaited at shutdown
    /// before the relay's last pass.
    pub fn spawn<F, Fut>(&mut self, name: impl Into<String>, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handle = self.tasks.spawn(task(self.working.child_token()));
        self.names.insert(handle.id(), name.into());
    }

    /// Work to finish during shutdown once the consumers and tasks have
    /// stopped and before the relay's last pass: whatever may still commit
    /// events (a group-commit writer, calls in flight). Runs in the order given.
    pub fn on_drain(&mut self, drain: impl Future<Output = ()> + Send + 'static) {
        self.drains.push(Box::pin(drain));
    }

    /// Answers `routes` in the service's queue group, at most `max_in_flight`
    /// at once, until `stop`; then shuts down (see the module docs). Fails
    /// only when it cannot subscribe, after shutting down all the same.
    pub async fn serve<S: Send + Sync + 'static>(
        self,
        routes: Routes<S>,
        max_in_flight: usize,
    ) -> Result<(), ServiceError> {
        let config = ServeConfig { max_in_flight, ..ServeConfig::default() };
        let served = crate::rpc::serve(self.nats.clone(), self.service, routes, config, self.working.clone()).await;
        self.shut_down().await;
        Ok(served?)
    }

    /// For a service that answers no requests: waits for `stop`, then shuts down.
    pub async fn wait(self) {
        self.working.cancelled().await;
        self.shut_down().await;
    }

    async fn shut_down(mut self) {
        self.working.cancel();
        while let Some(finished) = self.tasks.join_next_with_id().await {
            if let Err(error) = finished {
                let task = self.names.get(&error.id()).map_or("?", String::as_str);
                tracing::error!(service = self.service, task, %error, "a service task failed");
            }
        }
        for drain in self.drains.drain(..) {
            drain.await;
        }
        // The relay publishes what is left, then stops.
        self.relay_stop.cancel();
        if let Err(error) = self.relay.await {
            tracing::error!(service = self.service, %error, "the outbox relay failed");
        }
    }
}
