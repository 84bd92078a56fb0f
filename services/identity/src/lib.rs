//! The identity service: accounts, credentials, sessions and addresses.
//!
//! It answers `cmd.identity.*` over NATS request/reply (queue group
//! `identity`); the gateway is its only caller. Access tokens are EdDSA JWTs
//! whose public keys it hands out as a JWK set (`identity.get_keys`);
//! refresh tokens are opaque, stored hashed, rotated on every use, and a
//! reused one ends its whole session. Failed logins are counted in Redis, so
//! the lockout holds across instances.
//!
//! # Layout
//! - [`domain`]: the rules (email, password policy, names, roles, refresh
//!   decisions, lockout policy), pure and tested given/when/then.
//! - [`password`]: Argon2id on a bounded pool of blocking threads.
//! - [`tokens`]: the signing key, access tokens, JWKS, refresh tokens.
//! - [`lockout`]: failed-login counters in Redis.
//! - [`store`]: the tables (sqlx), the account and its event in one transaction.
//! - [`handlers`]: each command's answer.

pub mod domain;
pub mod handlers;
pub mod lockout;
pub mod password;
pub mod store;
pub mod tokens;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use emporium_nats::{Leases, OutboxSignal, ServiceError, ServiceRuntime, SharedClock, SystemClock};
use emporium_platform::settings::{Environment, SettingsError, typed};
use emporium_schemas::CommandEnvelope;
use emporium_schemas::commands::identity::Register;
use emporium_schemas::values::{Role, Secret};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::domain::{DisplayName, Email, Limit, LockoutPolicy};
use crate::handlers::Identity;
use crate::lockout::Lockout;
use crate::password::{Argon2Params, PasswordHasher};
use crate::store::StoreError;
use crate::tokens::SigningKey;

/// The service's name: its database is `emporium_identity`, its queue group the same.
pub const SERVICE: &str = "identity";

/// Identity's own settings (`IDENTITY_*`; `.env.example` lists them).
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// An Ed25519 PKCS#8 PEM key given inline (containers, secret stores)…
    pub signing_key: Option<SecretString>,
    /// …or in a file. In development a missing file is generated and kept.
    pub signing_key_file: PathBuf,
    pub generate_missing_key: bool,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// The bootstrap admin, created at start when absent: the only way to an admin account.
    pub admin: Option<(String, SecretString)>,
    pub argon2: Argon2Params,
    /// Hashes computed at once, and hashes allowed to wait for a thread.
    pub hash_threads: usize,
    pub hash_queue: usize,
    pub lockout: LockoutPolicy,
    /// Requests one instance answers at once before shedding.
    pub max_in_flight: usize,
}

impl IdentitySettings {
    pub fn from_source(
        source: impl Fn(&str) -> Option<String>,
        environment: Environment,
    ) -> Result<Self, SettingsError> {
        let development = environment == Environment::Development;
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let (admin_email, admin_password) = if development {
            (
                source("IDENTITY_ADMIN_EMAIL").or(Some("admin@emporium.test".into())),
                source("IDENTITY_ADMIN_PASSWORD").or(Some("emporium-admin".into())),
            )
        } else {
            (source("IDENTITY_ADMIN_EMAIL"), source("IDENTITY_ADMIN_PASSWORD"))
        };
        let admin = match (admin_email, admin_password) {
            (Some(email), Some(password)) if !email.is_empty() => Some((email, SecretString::from(password))),
            (Some(email), None) if !email.is_empty() => {
                return Err(SettingsError {
                    name: "IDENTITY_ADMIN_PASSWORD",
                    reason: "required with IDENTITY_ADMIN_EMAIL".into(),
                });
            }
            _ => None,
        };
        Ok(Self {
            signing_key: source("IDENTITY_SIGNING_KEY").filter(|pem| !pem.is_empty()).map(SecretString::from),
            signing_key_file: typed(&source, "IDENTITY_SIGNING_KEY_FILE", ".run/keys/identity-ed25519.pem")?,
            generate_missing_key: typed(
                &source,
                "IDENTITY_GENERATE_SIGNING_KEY",
                if development { "true" } else { "false" },
            )?,
            access_ttl: Duration::from_secs(typed(&source, "IDENTITY_ACCESS_TOKEN_TTL_SECS", "900")?),
            refresh_ttl: Duration::from_secs(typed(&source, "IDENTITY_REFRESH_TOKEN_TTL_SECS", "2592000")?),
            admin,
            argon2: Argon2Params {
                memory_kib: typed(&source, "IDENTITY_ARGON2_MEMORY_KIB", "19456")?,
                iterations: typed(&source, "IDENTITY_ARGON2_ITERATIONS", "2")?,
                parallelism: typed(&source, "IDENTITY_ARGON2_PARALLELISM", "1")?,
            },
            hash_threads: typed(&source, "IDENTITY_HASH_THREADS", &cores.to_string())?,
            hash_queue: typed(&source, "IDENTITY_HASH_QUEUE", "64")?,
            lockout: LockoutPolicy {
                per_client: Limit {
                    failures: typed(&source, "IDENTITY_LOCKOUT_FAILURES", "5")?,
                    window: Duration::from_secs(typed(&source, "IDENTITY_LOCKOUT_WINDOW_SECS", "900")?),
                },
                per_account: Limit {
                    failures: typed(&source, "IDENTITY_ACCOUNT_LOCKOUT_FAILURES", "20")?,
                    window: Duration::from_secs(typed(&source, "IDENTITY_ACCOUNT_LOCKOUT_WINDOW_SECS", "3600")?),
                },
            },
            max_in_flight: typed(&source, "IDENTITY_MAX_IN_FLIGHT", "512")?,
        })
    }

    fn load_key(&self) -> Result<SigningKey, IdentityError> {
        Ok(match &self.signing_key {
            Some(pem) => SigningKey::from_pem(pem.expose_secret().as_bytes())?,
            None => SigningKey::load_or_generate(&self.signing_key_file, self.generate_missing_key)?,
        })
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Runtime(#[from] ServiceError),
    #[error(transparent)]
    Key(#[from] tokens::KeyError),
    #[error(transparent)]
    Hash(#[from] password::HashError),
    #[error("the bootstrap admin: {0}")]
    Admin(String),
}

/// What the service runs on; the host (or a test) opens these.
#[derive(Debug, Clone)]
pub struct Dependencies {
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub redis: fred::clients::Client,
    pub redis_prefix: String,
    pub partitions: u16,
}

/// Migrates, creates the bootstrap admin, then answers commands and relays
/// its outbox until `stop`; returns once in-flight requests have finished.
pub async fn run(settings: IdentitySettings, deps: Dependencies, stop: CancellationToken) -> Result<(), IdentityError> {
    store::migrate(&deps.pool).await.map_err(ServiceError::from)?;
    let key = settings.load_key()?;
    let clock: SharedClock = Arc::new(SystemClock);
    let outbox = OutboxSignal::default();
    let identity = Identity {
        pool: deps.pool.clone(),
        hasher: PasswordHasher::new(settings.argon2, settings.hash_threads, settings.hash_queue)?,
        key,
        lockout: Lockout::new(deps.redis.clone(), deps.redis_prefix.clone(), settings.lockout),
        access_ttl: settings.access_ttl,
        refresh_ttl: settings.refresh_ttl,
        outbox: outbox.clone(),
        clock: clock.clone(),
    };
    if let Some((email, password)) = &settings.admin {
        bootstrap_admin(&identity, email, password).await?;
    }
    tracing::info!(kid = identity.key.kid(), argon2 = %settings.argon2, "identity ready");

    let (mut runtime, leases) =
        ServiceRuntime::start(SERVICE, &deps.pool, &deps.nats, deps.partitions, &clock, &outbox, stop).await?;
    runtime.spawn("refresh-token pruner", |stop| prune_refresh_tokens(deps.pool, leases, stop));
    Ok(runtime.serve(handlers::routes(identity), settings.max_in_flight).await?)
}

/// Deletes refresh tokens a day after they expired, hourly, on one instance
/// (under a lease): they can only be refused, and a day keeps "expired"
/// distinguishable from "unknown" a while.
async fn prune_refresh_tokens(pool: PgPool, leases: Leases, stop: CancellationToken) {
    let every = Duration::from_secs(60 * 60);
    emporium_nats::lease::while_leading(&leases, "prune.identity.refresh_tokens", every, stop, || async {
        match store::prune_refresh(&pool, chrono::Utc::now() - chrono::TimeDelta::days(1)).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "expired refresh tokens pruned"),
            Err(error) => tracing::warn!(%error, "pruning refresh tokens failed"),
        }
    })
    .await;
}

/// Creates the configured admin unless an account with that email exists.
async fn bootstrap_admin(identity: &Identity, email: &str, password: &SecretString) -> Result<(), IdentityError> {
    let email = Email::parse(email).map_err(|e| IdentityError::Admin(e.to_string()))?;
    if store::credentials(&identity.pool, email.as_str())
        .await
        .map_err(|e| IdentityError::Admin(e.to_string()))?
        .is_some()
    {
        return Ok(());
    }
    let name = DisplayName::parse("Administrator").map_err(|e| IdentityError::Admin(e.to_string()))?;
    let register = Register {
        email: email.as_str().to_owned(),
        password: Secret::new(password.expose_secret()),
        name: name.as_str().to_owned(),
        role: Some(Role::Admin),
    };
    match identity.create_account(CommandEnvelope::new(None, None, register), Role::Admin).await {
        Ok(profile) => {
            tracing::info!(user.id = %profile.id, "bootstrap admin created");
            Ok(())
        }
        // Another instance created it meanwhile.
        Err(handlers::CreateError::Store(StoreError::EmailTaken)) => Ok(()),
        Err(error) => Err(IdentityError::Admin(error.to_string())),
    }
}
