//! The answers to `cmd.identity.*`: each decodes nothing (the routes did),
//! applies the domain's rules, touches the store, and maps every failure to
//! a typed [`ReplyError`]. Internal errors are logged here, once, and never
//! detailed to the caller.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use emporium_nats::rpc::internal;
use emporium_nats::{OutboxSignal, OutgoingEvent, Routes, SharedClock};
use emporium_schemas::commands::identity::{
    AddAddress, DeleteAddress, GetKeys, GetProfile, ListAddresses, Login, Logout, Profile, Refresh, Register,
    SavedAddress, Session, UpdateProfile,
};
use emporium_schemas::events::identity::UserRegistered;
use emporium_schemas::values::{Role, Text, UserId};
use emporium_schemas::{CommandEnvelope, EntityKey, ErrorKind, Origin, ReplyError, Seq};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{DisplayName, Email, Invalid, NewPassword, RefreshDecision, registration_role};
use crate::lockout::Lockout;
use crate::password::{HashError, PasswordHasher};
use crate::store::{self, NewRefresh, NewUser, Rotation, StoreError};
use crate::tokens::{self, SigningKey};

/// Everything the answers share.
#[derive(Debug)]
pub struct Identity {
    pub pool: PgPool,
    pub hasher: PasswordHasher,
    pub key: SigningKey,
    pub lockout: Lockout,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub outbox: OutboxSignal,
    pub clock: SharedClock,
}

/// Every identity command, bound to its answer.
pub fn routes(identity: Identity) -> Routes<Identity> {
    Routes::new(identity)
        .on(|s, c: CommandEnvelope<Register>| async move { s.register(c).await })
        .on(|s, c: CommandEnvelope<Login>| async move { s.login(c.data).await })
        .on(|s, c: CommandEnvelope<Refresh>| async move { s.refresh(c.data).await })
        .on(|s, c: CommandEnvelope<Logout>| async move { s.logout(c.data).await })
        .on(|s, c: CommandEnvelope<GetProfile>| async move {
            let principal = c.signed_in()?;
            match c.data.user_id {
                Some(other) if other != principal.user_id && principal.role != Role::Admin => {
                    Err(ReplyError::new(ErrorKind::Forbidden, "only admins may read other accounts"))
                }
                Some(other) => s.profile(other).await,
                None => s.profile(principal.user_id).await,
            }
        })
        .on(|s, c: CommandEnvelope<UpdateProfile>| async move { s.update_profile(c.signed_in()?.user_id, c.data).await })
        .on(|s, c: CommandEnvelope<AddAddress>| async move { s.add_address(c.signed_in()?.user_id, c.data).await })
        .on(|s, c: CommandEnvelope<ListAddresses>| async move { s.addresses(c.signed_in()?.user_id).await })
        .on(|s, c: CommandEnvelope<DeleteAddress>| async move {
            s.delete_address(c.signed_in()?.user_id, c.data.address_id).await
        })
        .on(|s: Arc<Identity>, _: CommandEnvelope<GetKeys>| async move {
            serde_json::to_value(s.key.jwks()).map_err(|e| internal(&e))
        })
}

impl From<Invalid> for ReplyError {
    fn from(invalid: Invalid) -> Self {
        ReplyError::invalid(invalid.field, invalid.to_string())
    }
}

fn store_error(error: StoreError) -> ReplyError {
    match error {
        StoreError::EmailTaken => ReplyError::new(ErrorKind::Conflict, "an account with this email exists"),
        other => internal(&other),
    }
}

fn hash_error(error: HashError) -> ReplyError {
    match error {
        HashError::Busy => {
            ReplyError::new(ErrorKind::Overloaded, "too many sign-ins at once; retry shortly").retry_after(1)
        }
        other => internal(&other),
    }
}

fn unauthenticated(message: &str) -> ReplyError {
    ReplyError::new(ErrorKind::Unauthenticated, message)
}

/// Why an account could not be created.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CreateError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("encoding the event: {0}")]
    Encode(serde_json::Error),
}

impl From<CreateError> for ReplyError {
    fn from(error: CreateError) -> Self {
        match error {
            CreateError::Invalid(invalid) => invalid.into(),
            CreateError::Hash(error) => hash_error(error),
            CreateError::Store(error) => store_error(error),
            CreateError::Encode(error) => internal(&error),
        }
    }
}

impl Identity {
    async fn register(&self, command: CommandEnvelope<Register>) -> Result<Profile, ReplyError> {
        let email = Email::parse(&command.data.email)?;
        NewPassword::parse(command.data.password.expose(), &email)?;
        let role = registration_role(command.data.role)?;
        Ok(self.create_account(command, role).await?)
    }

    /// Creates the account with its `identity.user_registered` event. The
    /// password policy and the role rule are the caller's to check: the
    /// bootstrap admin comes from configuration, not from a stranger.
    pub(crate) async fn create_account(
        &self,
        command: CommandEnvelope<Register>,
        role: Role,
    ) -> Result<Profile, CreateError> {
        let origin = Origin::from(&command);
        let Register { email, password, name, .. } = command.data;
        let email = Email::parse(&email)?;
        let name = DisplayName::parse(&name)?;
        let password_hash = self.hasher.hash(password.expose()).await?;
        let id = UserId::new_v7();
        let text = |value: &str, field: &'static str| {
            Text::try_from(value.to_owned()).map_err(|e| Invalid { field, reason: e.to_string() })
        };
        let registered = UserRegistered {
            user_id: id,
            email: text(email.as_str(), "email")?,
            name: text(name.as_str(), "name")?,
            role,
        };
        let key = EntityKey::from(*id.as_uuid());
        let event = OutgoingEvent::caused_by(key, Seq::FIRST, origin, registered).map_err(CreateError::Encode)?;
        let user = NewUser { id, email: email.as_str(), password_hash: &password_hash, name: name.as_str(), role };
        let profile = store::create_user(&self.pool, &user, &event).await?;
        self.outbox.wake();
        tracing::info!(user.id = %id, user.role = role.as_str(), "account registered");
        Ok(profile)
    }

    async fn login(&self, login: Login) -> Result<Session, ReplyError> {
        const REFUSED: &str = "email or password is wrong";
        // A malformed email cannot have an account; it is treated like a wrong password.
        let Ok(email) = Email::parse(&login.email) else { return Err(unauthenticated(REFUSED)) };
        let ip = login.client_ip.as_str();
        if let Some(wait) = self.lockout.locked_for(&email, ip).await.map_err(|e| internal(&e))? {
            return Err(locked(wait));
        }
        let account = store::credentials(&self.pool, email.as_str()).await.map_err(store_error)?;
        let stored = account.as_ref().map(|a| a.password_hash.as_str());
        let matches = self.hasher.verify(login.password.expose(), stored).await.map_err(hash_error)?;
        match account {
            Some(account) if matches => {
                self.lockout.record_success(&email, ip).await.map_err(|e| internal(&e))?;
                self.start_session(account.id, account.role).await
            }
            _ => {
                let lock = self.lockout.record_failure(&email, ip).await.map_err(|e| internal(&e))?;
                tracing::info!(client.ip = ip, locked = lock.is_some(), "login refused");
                Err(unauthenticated(REFUSED))
            }
        }
    }

    async fn start_session(&self, user: UserId, role: Role) -> Result<Session, ReplyError> {
        let refresh_token = tokens::new_refresh_token().map_err(|e| internal(&e))?;
        let now = self.clock.now();
        let token = NewRefresh {
            hash: &tokens::refresh_token_hash(&refresh_token),
            family: Uuid::now_v7(),
            user,
            issued_at: now,
            expires_at: now + delta(self.refresh_ttl),
        };
        store::store_refresh(&self.pool, &token).await.map_err(store_error)?;
        self.session(user, role, refresh_token)
    }

    fn session(&self, user: UserId, role: Role, refresh_token: String) -> Result<Session, ReplyError> {
        let now = self.clock.now();
        let access_token = self.key.issue(user, role, now, now + delta(self.access_ttl)).map_err(|e| internal(&e))?;
        Ok(Session { access_token, refresh_token, expires_in: self.access_ttl.as_secs(), token_type: "Bearer".into() })
    }

    async fn refresh(&self, refresh: Refresh) -> Result<Session, ReplyError> {
        let successor = tokens::new_refresh_token().map_err(|e| internal(&e))?;
        let now = self.clock.now();
        let presented = tokens::refresh_token_hash(refresh.refresh_token.expose());
        let rotation = store::rotate_refresh(
            &self.pool,
            &presented,
            &tokens::refresh_token_hash(&successor),
            now,
            now + delta(self.refresh_ttl),
        )
        .await
        .map_err(store_error)?;
        match rotation {
            Rotation::Rotated { user, role } => self.session(user, role, successor),
            Rotation::Refused(RefreshDecision::ReuseDetected) => {
                Err(unauthenticated("refresh token already used; the session has been ended, sign in again"))
            }
            Rotation::Refused(RefreshDecision::Expired) => Err(unauthenticated("refresh token expired; sign in again")),
            Rotation::Refused(_) | Rotation::Unknown => {
                Err(unauthenticated("refresh token is not valid; sign in again"))
            }
        }
    }

    async fn logout(&self, logout: Logout) -> Result<(), ReplyError> {
        let presented = tokens::refresh_token_hash(logout.refresh_token.expose());
        // Logging out twice, or with an unknown token, ends nothing and is no error.
        store::revoke_session(&self.pool, &presented, self.clock.now()).await.map_err(store_error)?;
        Ok(())
    }

    async fn profile(&self, user: UserId) -> Result<Profile, ReplyError> {
        store::profile(&self.pool, user).await.map_err(store_error)?.ok_or_else(no_account)
    }

    async fn update_profile(&self, user: UserId, update: UpdateProfile) -> Result<Profile, ReplyError> {
        match update.name {
            Some(name) => {
                let name = DisplayName::parse(&name)?;
                store::rename(&self.pool, user, name.as_str()).await.map_err(store_error)?.ok_or_else(no_account)
            }
            None => self.profile(user).await,
        }
    }

    async fn add_address(&self, user: UserId, add: AddAddress) -> Result<SavedAddress, ReplyError> {
        store::add_address(&self.pool, user, &add.address, add.default).await.map_err(store_error)
    }

    async fn addresses(&self, user: UserId) -> Result<Vec<SavedAddress>, ReplyError> {
        store::addresses(&self.pool, user).await.map_err(store_error)
    }

    async fn delete_address(&self, user: UserId, address: Uuid) -> Result<(), ReplyError> {
        if store::delete_address(&self.pool, user, address).await.map_err(store_error)? {
            Ok(())
        } else {
            Err(ReplyError::new(ErrorKind::NotFound, "no such address"))
        }
    }
}

fn no_account() -> ReplyError {
    ReplyError::new(ErrorKind::NotFound, "the account no longer exists")
}

fn locked(wait: Duration) -> ReplyError {
    ReplyError::new(ErrorKind::RateLimited, "too many failed sign-ins; try again later")
        .retry_after(wait.as_secs().max(1))
}

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}
