//! Carts in Redis: one hash per cart, `<prefix>cart:<user id>`, with the
//! fields `version` and `state` (JSON), and a time to live that every load
//! and commit starts over, so a cart lives as long as it is used.
//!
//! A commit is a compare-and-set on `version` in one Lua script: if another
//! writer (an actor elsewhere during a hand-over) moved the cart, the commit
//! fails as a conflict and the actor reloads. Carts emit nothing, so there is
//! no outbox: the hash is all there is.

use std::time::Duration;

use emporium_actors::{CommitMeta, EntityStore, StoreError, Versioned};
use emporium_schemas::values::UserId;
use fred::clients::Client;
use fred::interfaces::LuaInterface as _;

use crate::domain::{Cart, CartEvent, CartState};

/// Reads a cart and starts its time to live over; `nil`s for a cart never
/// written (or expired). ARGV: ttl in ms.
const LOAD: &str = r"
local found = redis.call('HMGET', KEYS[1], 'version', 'state')
if found[1] then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return found
";

/// Writes a cart if its version is still the expected one. ARGV: expected
/// version, new version, state JSON, ttl in ms. Returns `{'ok'}`, or
/// `{'conflict', <version found>}`.
const COMMIT: &str = r"
local found = redis.call('HGET', KEYS[1], 'version') or '0'
if found ~= ARGV[1] then return {'conflict', found} end
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'state', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {'ok'}
";

/// How long a Redis call may take. fred queues commands while it reconnects
/// and has no deadline of its own; without one a Redis outage would hold
/// every cart actor (and its mailbox) until Redis came back.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// The carts of one deployment (its key prefix) on one Redis server.
#[derive(Clone)]
pub struct RedisStore {
    redis: Client,
    prefix: String,
    ttl_ms: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("prefix", &self.prefix).field("ttl_ms", &self.ttl_ms).finish()
    }
}

impl RedisStore {
    /// Carts under `prefix`, each kept `ttl` after its last use.
    pub fn new(redis: Client, prefix: &str, ttl: Duration) -> Self {
        Self { redis, prefix: prefix.to_owned(), ttl_ms: ttl.as_millis().max(1).to_string() }
    }

    /// The hash that holds `user`'s cart.
    pub fn key(&self, user: &UserId) -> String {
        format!("{}cart:{user}", self.prefix)
    }

    /// `user`'s cart as stored now (version 0 and empty if there is none);
    /// its time to live starts over.
    pub async fn read(&self, user: &UserId) -> Result<Versioned<CartState>, StoreError> {
        let found: Vec<Option<String>> =
            answered(self.redis.eval(LOAD, self.key(user), vec![self.ttl_ms.clone()])).await?;
        let (Some(Some(version)), Some(Some(state))) = (found.first(), found.get(1)) else {
            return Ok(Versioned::default());
        };
        let version = version.parse().map_err(|_| corrupt(user, "version"))?;
        let state = serde_json::from_str(state).map_err(|_| corrupt(user, "state"))?;
        Ok(Versioned { version, state })
    }
}

fn corrupt(user: &UserId, field: &str) -> StoreError {
    tracing::error!(cart.id = %user, field, "stored cart is not readable");
    StoreError::Unavailable(format!("the stored cart's {field} is not readable"))
}

async fn answered<T>(command: impl Future<Output = Result<T, fred::error::Error>>) -> Result<T, StoreError> {
    match tokio::time::timeout(ANSWER_WITHIN, command).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(error)) => Err(StoreError::Unavailable(format!("Redis: {error}"))),
        Err(_) => Err(StoreError::Unavailable("Redis did not answer in time".to_owned())),
    }
}

impl EntityStore<Cart> for RedisStore {
    async fn load(&self, id: &UserId) -> Result<Versioned<CartState>, StoreError> {
        self.read(id).await
    }

    async fn commit(
        &self,
        id: &UserId,
        expected_version: u64,
        events: &[CartEvent],
        state: &CartState,
        _meta: &CommitMeta,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(state).map_err(|error| StoreError::Unavailable(error.to_string()))?;
        let version = expected_version + events.len() as u64;
        let args = vec![expected_version.to_string(), version.to_string(), json, self.ttl_ms.clone()];
        let answer: Vec<String> = answered(self.redis.eval(COMMIT, self.key(id), args)).await?;
        match answer.as_slice() {
            [ok] if ok == "ok" => Ok(()),
            [conflict, found] if conflict == "conflict" => {
                let found = found.parse().map_err(|_| corrupt(id, "version"))?;
                Err(StoreError::Conflict { expected: expected_version, found })
            }
            other => Err(StoreError::Unavailable(format!("unexpected answer to a cart commit: {other:?}"))),
        }
    }
}
