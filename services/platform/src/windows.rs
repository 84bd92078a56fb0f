//! Fixed-window counters in Redis, shared by every instance of a service:
//! the gateway's rate limits and identity's failed-login lockout both count
//! with them. A window starts at its key's first hit and lasts its length;
//! all the windows of one request are counted (or read) atomically in one
//! round trip (a Lua script). What a count means is the caller's policy.

use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::{KeysInterface as _, LuaInterface as _};

/// For each key: INCR, start its window (`ARGV[i]` ms) on the first hit;
/// returns `hits, pttl` per key.
const HIT: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('PEXPIRE', key, ARGV[i]) end
  table.insert(out, n)
  table.insert(out, redis.call('PTTL', key))
end
return out
";

/// For each key: `hits, pttl`, counting nothing.
const PEEK: &str = r"
local out = {}
for _, key in ipairs(KEYS) do
  table.insert(out, tonumber(redis.call('GET', key) or '0'))
  table.insert(out, redis.call('PTTL', key))
end
return out
";

/// One window's state: hits so far and how long until it starts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Count {
    pub hits: u64,
    pub resets_in: Duration,
}

/// The counters of one Redis server.
#[derive(Clone)]
pub struct FixedWindows {
    redis: Client,
}

impl std::fmt::Debug for FixedWindows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixedWindows").finish_non_exhaustive()
    }
}

impl FixedWindows {
    pub fn new(redis: Client) -> Self {
        Self { redis }
    }

    /// Counts one hit in each `(key, window length)`; the counts after it, in order.
    pub async fn hit(&self, windows: &[(String, Duration)]) -> Result<Vec<Count>, fred::error::Error> {
        let keys: Vec<String> = windows.iter().map(|(key, _)| key.clone()).collect();
        let lengths: Vec<i64> =
            windows.iter().map(|(_, length)| i64::try_from(length.as_millis()).unwrap_or(i64::MAX)).collect();
        let raw: Vec<i64> = answered(self.redis.eval(HIT, keys, lengths)).await?;
        Ok(counts(&raw))
    }

    /// The counts of `keys`, without counting.
    pub async fn peek(&self, keys: &[String]) -> Result<Vec<Count>, fred::error::Error> {
        let raw: Vec<i64> = answered(self.redis.eval(PEEK, keys.to_vec(), Vec::<String>::new())).await?;
        Ok(counts(&raw))
    }

    /// Starts `key`'s window over.
    pub async fn reset(&self, key: &str) -> Result<(), fred::error::Error> {
        answered(self.redis.del::<(), _>(key)).await
    }
}

/// How long a counter may take before the caller goes on without it. fred
/// queues commands while it reconnects and has no timeout of its own, so
/// without this a Redis outage would stall every request that counts.
const ANSWER_WITHIN: Duration = Duration::from_millis(250);

async fn answered<T>(
    command: impl std::future::Future<Output = Result<T, fred::error::Error>>,
) -> Result<T, fred::error::Error> {
    tokio::time::timeout(ANSWER_WITHIN, command).await.unwrap_or_else(|_| {
        Err(fred::error::Error::new(fred::error::ErrorKind::Timeout, "Redis did not answer in time"))
    })
}

fn counts(raw: &[i64]) -> Vec<Count> {
    raw.chunks(2)
        .map(|pair| Count {
            hits: pair.first().and_then(|n| u64::try_from(*n).ok()).unwrap_or(0),
            // PTTL is negative for a missing key or one without expiry.
            resets_in: Duration::from_millis(pair.get(1).and_then(|ms| u64::try_from(*ms).ok()).unwrap_or(0)),
        })
        .collect()
}
