//! An in-memory [`EntityStore`]: version-checked like the Postgres one, for
//! measuring the host alone (`just bench`) and for the host's own tests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::entity::{CommitMeta, Entity, EntityStore, StoreError, Versioned};

/// State per id in a map; `commits` counts successful commits.
pub struct MemoryStore<E: Entity> {
    rows: Mutex<HashMap<E::Id, Versioned<E::State>>>,
    commits: AtomicU64,
}

impl<E: Entity> Default for MemoryStore<E> {
    fn default() -> Self {
        Self { rows: Mutex::new(HashMap::new()), commits: AtomicU64::new(0) }
    }
}

impl<E: Entity> std::fmt::Debug for MemoryStore<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("commits", &self.commits()).finish_non_exhaustive()
    }
}

impl<E: Entity> MemoryStore<E> {
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// The stored state of `id`, as a fresh load would see it.
    pub fn get(&self, id: &E::Id) -> Versioned<E::State> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned().unwrap_or_default()
    }

    /// Writes `id` as another writer would, bumping its version.
    pub fn overwrite(&self, id: &E::Id, state: E::State) {
        let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        let version = rows.get(id).map_or(0, |row| row.version) + 1;
        rows.insert(id.clone(), Versioned { version, state });
    }
}

impl<E: Entity> EntityStore<E> for std::sync::Arc<MemoryStore<E>> {
    async fn load(&self, id: &E::Id) -> Result<Versioned<E::State>, StoreError> {
        Ok(self.get(id))
    }

    async fn commit(
        &self,
        id: &E::Id,
        expected_version: u64,
        events: &[E::Event],
        state: &E::State,
        _meta: &CommitMeta,
    ) -> Result<(), StoreError> {
        let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        let found = rows.get(id).map_or(0, |row| row.version);
        if found != expected_version {
            return Err(StoreError::Conflict { expected: expected_version, found });
        }
        rows.insert(id.clone(), Versioned { version: found + events.len() as u64, state: state.clone() });
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
