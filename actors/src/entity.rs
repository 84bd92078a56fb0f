//! An entity: state, commands it decides on, events it applies.
//!
//! `decide` holds the rules and `apply` only mutates, both pure, so the
//! domain is tested as given(events) / when(command) / then(events) without
//! any I/O. Loading and committing go through [`EntityStore`].

use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;

use emporium_schemas::Origin;
use uuid::Uuid;

use crate::writer::InboxEntry;

/// A kind of entity (an order, a cart).
pub trait Entity: Send + Sync + 'static {
    type Id: Clone + Eq + Hash + Debug + Send + Sync + 'static;
    type State: Clone + Default + Debug + Send + Sync + 'static;
    type Command: Debug + Send + Sync + 'static;
    type Event: Clone + Debug + Send + Sync + 'static;
    /// Why a command is refused (an illegal transition, a broken rule).
    type Rejection: std::error::Error + Clone + Send + Sync + 'static;

    /// The events that `command` causes in `state`, or why it is refused. Pure.
    fn decide(state: &Self::State, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Rejection>;

    /// `event`'s effect on `state`. Pure and infallible: the event already happened.
    fn apply(state: &mut Self::State, event: &Self::Event);
}

/// State with the version it was loaded or committed at (0: never stored).
/// The version counts the entity's events: a decision that emits two events
/// moves it by two, and each event's envelope `seq` is its own version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Versioned<S> {
    pub version: u64,
    pub state: S,
}

/// Storage could not load or commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Someone else committed first: the decision was made on stale state.
    #[error("version conflict: expected {expected}, found {found}")]
    Conflict { expected: u64, found: u64 },
    /// The message carrying the decision was applied before (its inbox entry
    /// exists): nothing was written, and the decision is dropped.
    #[error("message already applied")]
    Duplicate,
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// What travels with a command into the commit: the ids that trace its flow
/// and, for a command made from an event, the inbox entry that makes its
/// redelivery a no-op.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitMeta {
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    pub inbox: Option<InboxEntry>,
}

impl CommitMeta {
    /// Where the events of this commit come from.
    pub fn origin(&self) -> Origin {
        Origin { correlation_id: self.correlation_id, causation_id: self.causation_id }
    }
}

/// A commit caused by the message `origin` names, with no inbox entry.
impl From<Origin> for CommitMeta {
    fn from(origin: Origin) -> Self {
        Self { correlation_id: origin.correlation_id, causation_id: origin.causation_id, inbox: None }
    }
}

/// Where an entity's state lives. `commit` is version-checked: it succeeds only
/// if the stored version is still `expected_version`.
pub trait EntityStore<E: Entity>: Send + Sync + 'static {
    fn load(&self, id: &E::Id) -> impl Future<Output = Result<Versioned<E::State>, StoreError>> + Send;

    /// Stores `events` and `state` (already applied) as version
    /// `expected_version + events.len()`.
    fn commit(
        &self,
        id: &E::Id,
        expected_version: u64,
        events: &[E::Event],
        state: &E::State,
        meta: &CommitMeta,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
