//! The benches' entity: a counter whose every command is one event, so a
//! bench measures the machinery around `decide`, not the domain.

use serde::{Deserialize, Serialize};

pub(crate) struct Counter;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Count(u64);

#[derive(Debug, Clone)]
pub(crate) struct Incremented;

#[derive(Debug, Clone, thiserror::Error)]
#[error("never")]
pub(crate) struct Never;

impl emporium_actors::Entity for Counter {
    type Id = u32;
    type State = Count;
    type Command = ();
    type Event = Incremented;
    type Rejection = Never;

    fn decide(_: &Count, (): &()) -> Result<Vec<Incremented>, Never> {
        Ok(vec![Incremented])
    }

    fn apply(state: &mut Count, _: &Incremented) {
        state.0 += 1;
    }
}
