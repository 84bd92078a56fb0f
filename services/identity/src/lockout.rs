//! Failed-login counters in Redis, shared by every identity instance.
//!
//! Two fixed windows per account, each starting at its first failure: one
//! per (account, client address) and one per account, counted with the
//! platform's [`FixedWindows`]. [`LockoutPolicy`] decides from the counts.

use std::time::Duration;

use emporium_platform::windows::{Count, FixedWindows};

use crate::domain::{Email, FailureCounts, LockoutPolicy};

/// The lockout's counters for one deployment (`prefix` keeps tests apart).
#[derive(Debug, Clone)]
pub struct Lockout {
    windows: FixedWindows,
    prefix: String,
    policy: LockoutPolicy,
}

impl Lockout {
    pub fn new(redis: fred::clients::Client, prefix: impl Into<String>, policy: LockoutPolicy) -> Self {
        Self { windows: FixedWindows::new(redis), prefix: prefix.into(), policy }
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
        let counts = self.windows.peek(&self.keys(email, client_ip)).await?;
        Ok(self.policy.locked_for(&failures(&counts)))
    }

    /// Counts one failed login; returns the lock it leads to, if any.
    pub async fn record_failure(&self, email: &Email, client_ip: &str) -> Result<Option<Duration>, fred::error::Error> {
        let [client, account] = self.keys(email, client_ip);
        let windows = [(client, self.policy.per_client.window), (account, self.policy.per_account.window)];
        let counts = self.windows.hit(&windows).await?;
        Ok(self.policy.locked_for(&failures(&counts)))
    }

    /// A successful login clears this client's count (not the account's ceiling).
    pub async fn record_success(&self, email: &Email, client_ip: &str) -> Result<(), fred::error::Error> {
        let [client, _] = self.keys(email, client_ip);
        self.windows.reset(&client).await
    }
}

fn failures(counts: &[Count]) -> FailureCounts {
    let at = |i: usize| counts.get(i).copied().unwrap_or_default();
    FailureCounts {
        per_client: at(0).hits,
        per_client_resets_in: at(0).resets_in,
        per_account: at(1).hits,
        per_account_resets_in: at(1).resets_in,
    }
}
