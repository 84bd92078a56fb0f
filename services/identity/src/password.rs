//! Argon2id password hashing on a bounded pool of blocking threads.
//!
//! One hash costs tens of milliseconds of CPU by design. Run on the async
//! workers, a flood of logins would stall every other request; run on an
//! unbounded blocking pool, it would queue without limit. So at most
//! `threads` hashes run at once (on tokio's blocking threads) and at most
//! `queue` wait for a turn; beyond that the caller is told [`HashError::Busy`]
//! and the client gets 503 with `Retry-After`.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::Semaphore;

/// The cost of one hash. The defaults are OWASP's Argon2id recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 }
    }
}

impl std::fmt::Display for Argon2Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Argon2id m={} KiB, t={}, p={}", self.memory_kib, self.iterations, self.parallelism)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("too many password checks waiting")]
    Busy,
    #[error("argon2: {0}")]
    Argon2(String),
    #[error("random source failed")]
    Random,
    #[error("hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Hashes and verifies passwords, a bounded number at a time.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    argon2: Arc<Argon2<'static>>,
    running: Arc<Semaphore>,
    waiting: Arc<Semaphore>,
    random: SystemRandom,
    /// Verified against when the account does not exist, so an unknown email
    /// takes as long as a wrong password and reveals nothing.
    decoy: Arc<String>,
}

impl PasswordHasher {
    pub fn new(params: Argon2Params, threads: usize, queue: usize) -> Result<Self, HashError> {
        let params = Params::new(params.memory_kib, params.iterations, params.parallelism, None)
            .map_err(|e| HashError::Argon2(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let random = SystemRandom::new();
        let decoy = hash_with(&argon2, &random, "not a password anyone has")?;
        Ok(Self {
            argon2: Arc::new(argon2),
            running: Arc::new(Semaphore::new(threads.max(1))),
            waiting: Arc::new(Semaphore::new(threads.max(1) + queue)),
            random,
            decoy: Arc::new(decoy),
        })
    }

    /// A PHC string (`$argon2id$v=19$m=…`) for storage.
    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let (argon2, random, password) = (self.argon2.clone(), self.random.clone(), password.to_owned());
        self.on_pool(move || hash_with(&argon2, &random, &password)).await
    }

    /// Whether `password` matches `stored`; with `None` (no such account) it
    /// does the same work and answers false.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool, HashError> {
        let known = stored.is_some();
        let stored = stored.map_or_else(|| self.decoy.as_str().to_owned(), str::to_owned);
        let (argon2, password) = (self.argon2.clone(), password.to_owned());
        let matches = self
            .on_pool(move || {
                let parsed = PasswordHash::new(&stored).map_err(|e| HashError::Argon2(e.to_string()))?;
                Ok(argon2.verify_password(password.as_bytes(), &parsed).is_ok())
            })
            .await?;
        Ok(known && matches)
    }

    async fn on_pool<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let _in_line = self.waiting.clone().try_acquire_owned().map_err(|_| HashError::Busy)?;
        let _running = self.running.acquire().await.map_err(|_| HashError::Busy)?;
        tokio::task::spawn_blocking(work).await?
    }
}

fn hash_with(argon2: &Argon2<'_>, random: &SystemRandom, password: &str) -> Result<String, HashError> {
    let mut salt = [0_u8; 16];
    random.fill(&mut salt).map_err(|_| HashError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError::Argon2(e.to_string()))?;
    let hash = argon2.hash_password(password.as_bytes(), &salt).map_err(|e| HashError::Argon2(e.to_string()))?;
    Ok(hash.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn cheap() -> Argon2Params {
        Argon2Params { memory_kib: 64, iterations: 1, parallelism: 1 }
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        let hasher = PasswordHasher::new(cheap(), 2, 8).unwrap();
        let stored = hasher.hash("correct horse battery").await.unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{stored}");
        assert!(hasher.verify("correct horse battery", Some(&stored)).await.unwrap());
        assert!(!hasher.verify("wrong horse battery", Some(&stored)).await.unwrap());
        assert!(!hasher.verify("correct horse battery", None).await.unwrap(), "no account, no match");
    }

    #[tokio::test]
    async fn beyond_its_queue_the_pool_says_busy_instead_of_waiting() {
        let hasher = PasswordHasher::new(Argon2Params { memory_kib: 8 * 1024, ..cheap() }, 1, 0).unwrap();
        let stored = hasher.hash("correct horse battery").await.unwrap();
        let (first, second) = tokio::join!(
            hasher.verify("correct horse battery", Some(&stored)),
            hasher.verify("correct horse battery", Some(&stored))
        );
        let outcomes = [first, second];
        assert!(outcomes.iter().any(|o| matches!(o, Ok(true))), "{outcomes:?}");
        assert!(outcomes.iter().any(|o| matches!(o, Err(HashError::Busy))), "{outcomes:?}");
    }
}
