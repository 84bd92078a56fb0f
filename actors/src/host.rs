//! [`EntityHost`]: one supervised actor per entity id.
//!
//! The host is itself an actor and the supervisor of every entity actor. It
//! spawns an entity's actor on its first message (the actor loads its state
//! lazily, so spawning never waits on storage), forwards later messages to it,
//! passivates it when it has been idle, and removes it when it fails — without
//! stopping itself or the siblings (ractor's default would stop the host).
//!
//! Passivation is a handshake, so no message is ever dropped: the host asks an
//! idle actor how many messages it has processed; only if that equals the
//! number the host forwarded (nothing waits in its mailbox) does the host
//! forget it and stop it, in the same step, so the next message spawns a new one.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use ractor::concurrency::JoinHandle;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use emporium_schemas::{ErrorKind, ReplyError};

use crate::entity::{CommitMeta, Entity, EntityStore, StoreError, Versioned};

/// How a host behaves.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// An entity idle this long is passivated (its actor stopped, its memory freed).
    pub idle_after: Duration,
    /// Most messages in flight through the host; more are refused with
    /// [`HostError::Overloaded`] instead of queueing without bound.
    pub max_in_flight: usize,
    /// How long a caller waits for an entity's answer.
    pub call_timeout: Duration,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self { idle_after: Duration::from_secs(60), max_in_flight: 10_000, call_timeout: Duration::from_secs(10) }
    }
}

/// Why a message got no decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError<R> {
    /// The entity refused the command (a rule of its domain).
    #[error("refused: {0}")]
    Rejected(R),
    /// Too much work in flight: try again later (503 + Retry-After at the gateway).
    #[error("overloaded: too many messages in flight")]
    Overloaded,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The entity's actor failed before answering; nothing was committed for this
    /// message, which is not acknowledged, so its redelivery rebuilds the entity.
    #[error("the entity failed before answering")]
    EntityFailed,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the host has stopped")]
    Stopped,
}

impl<R: std::fmt::Display> HostError<R> {
    /// The reply a command's caller gets for this failure: the entity's own
    /// refusal as a conflict (services map their rejections more finely
    /// first), a version conflict left after the retries as a conflict to
    /// retry, overload and unavailable storage as `overloaded` (503 with
    /// `Retry-After`), anything else as `internal` (logged here, once).
    pub fn reply(&self) -> ReplyError {
        match self {
            HostError::Rejected(rejection) => ReplyError::new(ErrorKind::Conflict, rejection.to_string()),
            HostError::Overloaded => {
                ReplyError::new(ErrorKind::Overloaded, "too much work in flight; retry shortly").retry_after(1)
            }
            HostError::Store(StoreError::Conflict { .. }) => {
                ReplyError::new(ErrorKind::Conflict, "it kept changing meanwhile; try again")
            }
            HostError::Store(StoreError::Unavailable(reason)) => {
                tracing::warn!(%reason, "entity storage unavailable");
                ReplyError::new(ErrorKind::Overloaded, "storage is unavailable; try again shortly").retry_after(1)
            }
            other => {
                tracing::error!(error = %other, "command failed");
                ReplyError::new(ErrorKind::Internal, "the command could not be completed")
            }
        }
    }
}

/// What a caller gets back: the events committed, or why there are none.
pub type Outcome<E> = Result<Vec<<E as Entity>::Event>, HostError<<E as Entity>::Rejection>>;

/// A typed handle to a running host. Cheap to clone.
pub struct EntityHost<E: Entity> {
    host: ActorRef<HostMsg<E>>,
    permits: Arc<Semaphore>,
    config: HostConfig,
}

impl<E: Entity> Clone for EntityHost<E> {
    fn clone(&self) -> Self {
        Self { host: self.host.clone(), permits: self.permits.clone(), config: self.config.clone() }
    }
}

impl<E: Entity> std::fmt::Debug for EntityHost<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntityHost").field("config", &self.config).finish_non_exhaustive()
    }
}

impl<E: Entity> EntityHost<E> {
    /// Starts a host whose entities load from and commit to `store`.
    pub async fn start<S: EntityStore<E>>(store: S, config: HostConfig) -> Result<Self, ractor::SpawnErr> {
        let args = (Arc::new(store), config.clone());
        let (host, _) = Actor::spawn(None, HostActor::<E, S>(PhantomData), args).await?;
        Ok(Self { host, permits: Arc::new(Semaphore::new(config.max_in_flight)), config })
    }

    /// Delivers `command` to entity `id` and waits for its decision.
    pub async fn send(&self, id: E::Id, command: E::Command) -> Outcome<E> {
        self.send_with(id, command, CommitMeta::default()).await
    }

    /// Like [`send`](Self::send), with the ids and inbox entry to commit with the decision.
    pub async fn send_with(&self, id: E::Id, command: E::Command, meta: CommitMeta) -> Outcome<E> {
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            return Err(HostError::Overloaded);
        };
        let asked =
            self.host.call(|reply| HostMsg::Deliver { id, command, meta, reply }, Some(self.config.call_timeout)).await;
        match asked {
            Ok(CallResult::Success(outcome)) => outcome,
            Ok(CallResult::Timeout) => Err(HostError::Timeout(self.config.call_timeout)),
            // The reply port was dropped: the entity actor died with the message.
            Ok(CallResult::SenderError) => Err(HostError::EntityFailed),
            Err(_) => Err(HostError::Stopped),
        }
    }

    /// How many entity actors are alive (not passivated).
    pub async fn active(&self) -> Result<usize, HostError<E::Rejection>> {
        match self.host.call(HostMsg::Active, Some(self.config.call_timeout)).await {
            Ok(CallResult::Success(count)) => Ok(count),
            _ => Err(HostError::Stopped),
        }
    }

    /// Passivates every entity idle for at least `idle_after` now, instead of
    /// waiting for the periodic sweep (tests drive the host a step at a time).
    pub fn sweep_idle(&self) {
        let _ = self.host.cast(HostMsg::Sweep);
    }

    /// Stops the host and every entity actor (after the messages already queued).
    pub async fn stop(&self) {
        let _ = self.host.stop_and_wait(None, Some(self.config.call_timeout)).await;
    }
}

enum HostMsg<E: Entity> {
    Deliver {
        id: E::Id,
        command: E::Command,
        meta: CommitMeta,
        reply: RpcReplyPort<Outcome<E>>,
    },
    Sweep,
    /// An entity's answer to `PassivateIfIdle`.
    IdleAt {
        id: E::Id,
        actor: ActorId,
        processed: u64,
    },
    Active(RpcReplyPort<usize>),
}

enum EntityMsg<E: Entity> {
    Command { command: E::Command, meta: CommitMeta, reply: RpcReplyPort<Outcome<E>> },
    PassivateIfIdle,
}

struct Slot<E: Entity> {
    actor: ActorRef<EntityMsg<E>>,
    forwarded: u64,
    last_forwarded: Instant,
}

struct HostState<E: Entity, S> {
    store: Arc<S>,
    config: HostConfig,
    entities: HashMap<E::Id, Slot<E>>,
    by_actor: HashMap<ActorId, E::Id>,
    sweeper: Option<JoinHandle<()>>,
}

struct HostActor<E, S>(PhantomData<fn() -> (E, S)>);

impl<E: Entity, S: EntityStore<E>> HostActor<E, S> {
    /// Drops the actor from both maps; returns its entity id and its slot, if it
    /// still held one (a newer actor of the same id keeps its slot).
    fn forget(state: &mut HostState<E, S>, actor: &ActorId) -> (Option<E::Id>, Option<Slot<E>>) {
        let Some(id) = state.by_actor.remove(actor) else { return (None, None) };
        let slot = match state.entities.get(&id) {
            Some(slot) if slot.actor.get_id() == *actor => state.entities.remove(&id),
            _ => None,
        };
        (Some(id), slot)
    }
}

impl<E: Entity, S: EntityStore<E>> Actor for HostActor<E, S> {
    type Msg = HostMsg<E>;
    type State = HostState<E, S>;
    type Arguments = (Arc<S>, HostConfig);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (store, config): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let every = (config.idle_after / 2).max(Duration::from_millis(10));
        let sweeper = myself.send_interval(every, || HostMsg::Sweep);
        Ok(HostState { store, config, entities: HashMap::new(), by_actor: HashMap::new(), sweeper: Some(sweeper) })
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        if let Some(sweeper) = state.sweeper.take() {
            sweeper.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            HostMsg::Deliver { id, command, meta, reply } => {
                if !state.entities.contains_key(&id) {
                    let entity = EntityActor::<E, S>(PhantomData);
                    let args = EntityArgs { id: id.clone(), store: state.store.clone(), host: myself.clone() };
                    match Actor::spawn_linked(None, entity, args, myself.get_cell()).await {
                        Ok((actor, _)) => {
                            state.by_actor.insert(actor.get_id(), id.clone());
                            state
                                .entities
                                .insert(id.clone(), Slot { actor, forwarded: 0, last_forwarded: Instant::now() });
                        }
                        Err(error) => {
                            tracing::error!(entity.id = ?id, %error, "cannot spawn entity actor");
                            let _ = reply.send(Err(HostError::EntityFailed));
                            return Ok(());
                        }
                    }
                }
                if let Some(slot) = state.entities.get_mut(&id) {
                    slot.forwarded += 1;
                    slot.last_forwarded = Instant::now();
                    if let Err(ractor::MessagingErr::SendErr(EntityMsg::Command { reply, .. })) =
                        slot.actor.send_message(EntityMsg::Command { command, meta, reply })
                    {
                        // The actor is stopping; its failure event will remove it.
                        let _ = reply.send(Err(HostError::EntityFailed));
                    }
                }
            }
            HostMsg::Sweep => {
                let idle_after = state.config.idle_after;
                for slot in state.entities.values() {
                    if slot.last_forwarded.elapsed() >= idle_after {
                        let _ = slot.actor.send_message(EntityMsg::PassivateIfIdle);
                    }
                }
            }
            HostMsg::IdleAt { id, actor, processed } => {
                let idle = state.entities.get(&id).is_some_and(|slot| {
                    slot.actor.get_id() == actor
                        && slot.forwarded == processed
                        && slot.last_forwarded.elapsed() >= state.config.idle_after
                });
                // Nothing is queued for it: forget it and stop it in one step.
                if idle && let (_, Some(slot)) = Self::forget(state, &actor) {
                    slot.actor.stop(Some("passivated".to_owned()));
                }
            }
            HostMsg::Active(reply) => {
                let _ = reply.send(state.entities.len());
            }
        }
        Ok(())
    }

    // Overrides ractor's default, which stops the supervisor when any child exits.
    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                let (id, _) = Self::forget(state, &cell.get_id());
                tracing::error!(entity.id = ?id, %error, "entity actor failed; it is rebuilt from storage on its next message");
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                Self::forget(state, &cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}

struct EntityArgs<E: Entity, S> {
    id: E::Id,
    store: Arc<S>,
    host: ActorRef<HostMsg<E>>,
}

struct EntityState<E: Entity, S> {
    id: E::Id,
    store: Arc<S>,
    host: ActorRef<HostMsg<E>>,
    /// Loaded on the first message, dropped after a version conflict.
    loaded: Option<Versioned<E::State>>,
    processed: u64,
}

struct EntityActor<E, S>(PhantomData<fn() -> (E, S)>);

impl<E: Entity, S: EntityStore<E>> EntityActor<E, S> {
    /// Decides on the current state and commits. A version conflict means
    /// another writer moved the entity: reload and decide again, a few times.
    async fn decide_and_commit(state: &mut EntityState<E, S>, command: &E::Command, meta: &CommitMeta) -> Outcome<E> {
        const ATTEMPTS: usize = 3;
        let mut attempt = 1;
        loop {
            match Self::decide_once(state, command, meta).await {
                Err(HostError::Store(StoreError::Conflict { .. })) if attempt < ATTEMPTS => attempt += 1,
                outcome => return outcome,
            }
        }
    }

    async fn decide_once(state: &mut EntityState<E, S>, command: &E::Command, meta: &CommitMeta) -> Outcome<E> {
        let current = match state.loaded.take() {
            Some(current) => current,
            None => state.store.load(&state.id).await?,
        };
        let events = match E::decide(&current.state, command) {
            Ok(events) => events,
            Err(rejection) => {
                state.loaded = Some(current);
                return Err(HostError::Rejected(rejection));
            }
        };
        if events.is_empty() {
            state.loaded = Some(current);
            return Ok(events);
        }
        let mut next = current.state.clone();
        for event in &events {
            E::apply(&mut next, event);
        }
        match state.store.commit(&state.id, current.version, &events, &next, meta).await {
            Ok(()) => {
                state.loaded = Some(Versioned { version: current.version + events.len() as u64, state: next });
                Ok(events)
            }
            // Stale: leave `loaded` empty so the next attempt reloads fresh state.
            Err(conflict @ StoreError::Conflict { .. }) => Err(conflict.into()),
            // Applied before: nothing to do, but reload in case it was by another writer.
            Err(StoreError::Duplicate) => Ok(Vec::new()),
            Err(other) => {
                state.loaded = Some(current);
                Err(other.into())
            }
        }
    }
}

impl<E: Entity, S: EntityStore<E>> Actor for EntityActor<E, S> {
    type Msg = EntityMsg<E>;
    type State = EntityState<E, S>;
    type Arguments = EntityArgs<E, S>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(EntityState { id: args.id, store: args.store, host: args.host, loaded: None, processed: 0 })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            EntityMsg::Command { command, meta, reply } => {
                let outcome = Self::decide_and_commit(state, &command, &meta).await;
                state.processed += 1;
                let _ = reply.send(outcome);
            }
            EntityMsg::PassivateIfIdle => {
                let idle = HostMsg::IdleAt { id: state.id.clone(), actor: myself.get_id(), processed: state.processed };
                let _ = state.host.cast(idle);
            }
        }
        Ok(())
    }
}
