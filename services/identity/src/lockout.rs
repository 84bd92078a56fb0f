//! Failed-login counters in Redis, shared by every identity instance.
//!
//! Two fixed windows per account, each starting at its first failure: one
//! per (account, client address) and one per account. [`LockoutPolicy`]
//! decides from the counts; this module only counts, atomically, in one
//! round trip each (Lua scripts).

use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::{KeysInterface as _, LuaInterface as _};

use crate::domain::{Email, FailureCounts, LockoutPolicy};

/// Counts then reads both windows: `[client, client_pttl, account, account_pttl]`.
const RECORD_FAILURE: &str = r"
local client = redis.call('INCR', KEYS[1])
if client == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local account = redis.call('INCR', KEYS[2])
if account == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return {client, redis.call('PTTL', KEYS[1]), account, redis.call('PTTL', KEYS[2])}
";

const READ_COUNTS: &str = r"
local client = tonumber(redis.call('GET', KEYS[1]) or '0')
local account = tonumber(redis.call('GET', KEYS[2]) or '0')
return {client, redis.call('PTTL', KEYS[1]), account, redis.call('PTTL', KEYS[2])}
";

/// The lockout's counters for one deployment (`prefix` keeps tests apart).
#[derive(Clone)]
pub struct Lockout {
    redis: Client,
    prefix: String,
    policy: LockoutPolicy,
}

impl std::fmt::Debug for Lockout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lockout").field("prefix", &self.prefix).field("policy", &self.policy).finish()
    }
}

impl Lockout {
    pub fn new(redis: Client, prefix: impl Into<String>, policy: LockoutPolicy) -> Self {
        Self { redis, prefix: prefix.into(), policy }
    }

    /// The per-client key, then the per-account key.
    fn keys(&self, email: &Email, client_ip: &str) -> [String; 2] {
        [
            format!("{}lockout:{}:{}", self.prefix, email.as_str(), client_ip),
            format!("{}lockout:{}", self.prefix, email.as_str()),
        ]
    }

    /// How long the account stays locked for this client, if it is.
    pub async fn locked_for(&self, email: &Email, client_ip: &str) -> Result<Option<Duration>, fred::error::Error> {
        let counts: Vec<i64> =
            self.redis.eval(READ_COUNTS, self.keys(email, client_ip).to_vec(), Vec::<String>::new()).await?;
        Ok(self.policy.locked_for(&counts_of(&counts)))
    }

    /// Counts one failed login; returns the lock it leads to, if any.
    pub async fn record_failure(&self, email: &Email, client_ip: &str) -> Result<Option<Duration>, fred::error::Error> {
        let windows = vec![millis(self.policy.per_client.window), millis(self.policy.per_account.window)];
        let counts: Vec<i64> = self.redis.eval(RECORD_FAILURE, self.keys(email, client_ip).to_vec(), windows).await?;
        Ok(self.policy.locked_for(&counts_of(&counts)))
    }

    /// A successful login clears this client's count (not the account's ceiling).
    pub async fn record_success(&self, email: &Email, client_ip: &str) -> Result<(), fred::error::Error> {
        let [client_key, _] = self.keys(email, client_ip);
        self.redis.del::<(), _>(client_key).await
    }
}

fn millis(window: Duration) -> i64 {
    i64::try_from(window.as_millis()).unwrap_or(i64::MAX)
}

fn counts_of(raw: &[i64]) -> FailureCounts {
    let at = |i: usize| raw.get(i).copied().unwrap_or(0);
    let wait = |pttl: i64| Duration::from_millis(u64::try_from(pttl).unwrap_or(0));
    FailureCounts {
        per_client: u64::try_from(at(0)).unwrap_or(0),
        per_client_resets_in: wait(at(1)),
        per_account: u64::try_from(at(2)).unwrap_or(0),
        per_account_resets_in: wait(at(3)),
    }
}
