//! Identity's Postgres tables: users, refresh tokens, addresses. Runtime
//! queries (no compile-time database). An account and its
//! `identity.user_registered` event commit together through the outbox.

use chrono::{DateTime, Utc};
use emporium_nats::OutgoingEvent;
use emporium_schemas::commands::identity::{Profile, SavedAddress};
use emporium_schemas::values::{Address, Role, UserId, ValueError};
use sqlx::{PgPool, Row, postgres::PgRow};
use uuid::Uuid;

use crate::domain::{RefreshDecision, StoredRefresh};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("an account with this email exists")]
    EmailTaken,
    #[error("a stored value is not valid: {0}")]
    Corrupt(#[from] ValueError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Runs identity's migrations and the messaging tables' (outbox, inbox).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("./migrations").run(pool).await?;
    emporium_nats::outbox::migrate(pool).await
}

/// An account to create.
#[derive(Debug)]
pub struct NewUser<'a> {
    pub id: UserId,
    pub email: &'a str,
    pub password_hash: &'a str,
    pub name: &'a str,
    pub role: Role,
}

/// What login needs of an account.
#[derive(Debug)]
pub struct Credentials {
    pub id: UserId,
    pub role: Role,
    pub password_hash: String,
}

fn role_of(row: &PgRow) -> Result<Role, StoreError> {
    Ok(row.try_get::<String, _>("role")?.parse()?)
}

fn profile_of(row: &PgRow) -> Result<Profile, StoreError> {
    Ok(Profile {
        id: UserId::from_uuid(row.try_get("id")?),
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        role: role_of(row)?,
        created_at: row.try_get("created_at")?,
    })
}

fn is_unique_violation(error: &sqlx::Error, constraint: &str) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") && db.constraint() == Some(constraint))
}

/// Creates the account and queues its event, in one transaction.
/// `EmailTaken` when the email is in use, whatever its case.
pub async fn create_user(pool: &PgPool, user: &NewUser<'_>, event: &OutgoingEvent) -> Result<Profile, StoreError> {
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO users (id, email, password_hash, name, role) VALUES ($1, $2, $3, $4, $5)
         RETURNING id, email, name, role, created_at",
    )
    .bind(user.id.as_uuid())
    .bind(user.email)
    .bind(user.password_hash)
    .bind(user.name)
    .bind(user.role.as_str())
    .fetch_one(&mut *tx)
    .await;
    let row = match inserted {
        Ok(row) => row,
        Err(error) if is_unique_violation(&error, "users_email_key") => return Err(StoreError::EmailTaken),
        Err(error) => return Err(error.into()),
    };
    emporium_nats::outbox::append(&mut tx, std::slice::from_ref(event)).await?;
    tx.commit().await?;
    profile_of(&row)
}

pub async fn credentials(pool: &PgPool, email: &str) -> Result<Option<Credentials>, StoreError> {
    let row = sqlx::query("SELECT id, role, password_hash FROM users WHERE lower(email) = $1")
        .bind(email)
        .fetch_optional(pool)
        .await?;
    row.map(|row| {
        Ok(Credentials {
            id: UserId::from_uuid(row.try_get("id")?),
            role: role_of(&row)?,
            password_hash: row.try_get("password_hash")?,
        })
    })
    .transpose()
}

pub async fn profile(pool: &PgPool, user: UserId) -> Result<Option<Profile>, StoreError> {
    let row = sqlx::query("SELECT id, email, name, role, created_at FROM users WHERE id = $1")
        .bind(user.as_uuid())
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(profile_of).transpose()
}

pub async fn rename(pool: &PgPool, user: UserId, name: &str) -> Result<Option<Profile>, StoreError> {
    let row = sqlx::query(
        "UPDATE users SET name = $2, updated_at = now() WHERE id = $1 RETURNING id, email, name, role, created_at",
    )
    .bind(user.as_uuid())
    .bind(name)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(profile_of).transpose()
}

/// A refresh token to store.
#[derive(Debug)]
pub struct NewRefresh<'a> {
    pub hash: &'a [u8],
    pub family: Uuid,
    pub user: UserId,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

pub async fn store_refresh<'e>(executor: impl sqlx::PgExecutor<'e>, token: &NewRefresh<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, user_id, issued_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token.hash)
    .bind(token.family)
    .bind(token.user.as_uuid())
    .bind(token.issued_at)
    .bind(token.expires_at)
    .execute(executor)
    .await?;
    Ok(())
}

/// What presenting a refresh token did.
#[derive(Debug)]
pub enum Rotation {
    /// It was valid: it is now used and `successor` stands in its place.
    Rotated {
        user: UserId,
        role: Role,
    },
    /// It was refused for this reason; on reuse its family is now revoked.
    Refused(RefreshDecision),
    Unknown,
}

/// Exchanges the token hashed `presented` for `successor` (same family), as
/// one transaction. The row is locked, so of two concurrent exchanges of one
/// token exactly one rotates and the other counts as reuse.
pub async fn rotate_refresh(
    pool: &PgPool,
    presented: &[u8],
    successor: &[u8],
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<Rotation, StoreError> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query(
        "SELECT t.family_id, t.user_id, t.expires_at, t.used_at, t.revoked_at, u.role
         FROM refresh_tokens t JOIN users u ON u.id = t.user_id
         WHERE t.token_hash = $1 FOR UPDATE OF t",
    )
    .bind(presented)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else { return Ok(Rotation::Unknown) };
    let family: Uuid = row.try_get("family_id")?;
    let user = UserId::from_uuid(row.try_get("user_id")?);
    let role = role_of(&row)?;
    let stored = StoredRefresh {
        expires_at: row.try_get("expires_at")?,
        used_at: row.try_get("used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    };
    let decision = stored.decide(now);
    match decision {
        RefreshDecision::Rotate => {
            sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1")
                .bind(presented)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let next = NewRefresh { hash: successor, family, user, issued_at: now, expires_at };
            store_refresh(&mut *tx, &next).await?;
        }
        RefreshDecision::ReuseDetected => {
            revoke_family(&mut tx, family, now).await?;
            tracing::warn!(user.id = %user, family = %family, "refresh token reused; its family is revoked");
        }
        RefreshDecision::Revoked | RefreshDecision::Expired => {}
    }
    tx.commit().await?;
    Ok(match decision {
        RefreshDecision::Rotate => Rotation::Rotated { user, role },
        refused => Rotation::Refused(refused),
    })
}

async fn revoke_family(tx: &mut sqlx::PgConnection, family: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
    sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL")
        .bind(family)
        .bind(now)
        .execute(tx)
        .await?;
    Ok(())
}

/// Logout: revokes the family of the token hashed `presented`. Whether there was one.
pub async fn revoke_session(pool: &PgPool, presented: &[u8], now: DateTime<Utc>) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $2
         WHERE family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1) AND revoked_at IS NULL",
    )
    .bind(presented)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Drops refresh tokens that expired before `before`: they can only be refused anyway.
pub async fn prune_refresh(pool: &PgPool, before: DateTime<Utc>) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1").bind(before).execute(pool).await?;
    Ok(done.rows_affected())
}

fn address_of(row: &PgRow) -> Result<SavedAddress, StoreError> {
    let text = |column: &str| row.try_get::<String, _>(column);
    let line2: Option<String> = row.try_get("line2")?;
    Ok(SavedAddress {
        id: row.try_get("id")?,
        address: Address {
            name: text("name")?.try_into()?,
            line1: text("line1")?.try_into()?,
            line2: line2.map(TryInto::try_into).transpose()?,
            city: text("city")?.try_into()?,
            postal_code: text("postal_code")?.try_into()?,
            country: text("country")?.try_into()?,
        },
        default: row.try_get("is_default")?,
    })
}

const ADDRESS_COLUMNS: &str = "id, name, line1, line2, city, postal_code, country, is_default";

/// Saves an address. The first address is the default whatever was asked;
/// a new default takes the place of the old one.
pub async fn add_address(
    pool: &PgPool,
    user: UserId,
    address: &Address,
    make_default: bool,
) -> Result<SavedAddress, StoreError> {
    let mut tx = pool.begin().await?;
    // Serializes address changes per user, so "first is default" and "one default" hold under races.
    sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE").bind(user.as_uuid()).execute(&mut *tx).await?;
    let has_default: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM addresses WHERE user_id = $1 AND is_default)")
            .bind(user.as_uuid())
            .fetch_one(&mut *tx)
            .await?;
    let is_default = make_default || !has_default;
    if is_default && has_default {
        sqlx::query("UPDATE addresses SET is_default = false WHERE user_id = $1 AND is_default")
            .bind(user.as_uuid())
            .execute(&mut *tx)
            .await?;
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO addresses (id, user_id, name, line1, line2, city, postal_code, country, is_default)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {ADDRESS_COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(user.as_uuid())
    .bind(address.name.as_str())
    .bind(address.line1.as_str())
    .bind(address.line2.as_ref().map(|line| line.as_str()))
    .bind(address.city.as_str())
    .bind(address.postal_code.as_str())
    .bind(address.country.as_str())
    .bind(is_default)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    address_of(&row)
}

/// The user's addresses, the default first, then oldest first.
pub async fn addresses(pool: &PgPool, user: UserId) -> Result<Vec<SavedAddress>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ADDRESS_COLUMNS} FROM addresses WHERE user_id = $1 ORDER BY is_default DESC, created_at, id"
    )))
    .bind(user.as_uuid())
    .fetch_all(pool)
    .await?;
    rows.iter().map(address_of).collect()
}

/// Deletes one of the user's addresses; if it was the default, the oldest
/// remaining one becomes the default. Whether it existed (and was theirs).
pub async fn delete_address(pool: &PgPool, user: UserId, address: Uuid) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE").bind(user.as_uuid()).execute(&mut *tx).await?;
    let deleted: Option<bool> =
        sqlx::query_scalar("DELETE FROM addresses WHERE id = $1 AND user_id = $2 RETURNING is_default")
            .bind(address)
            .bind(user.as_uuid())
            .fetch_optional(&mut *tx)
            .await?;
    if deleted == Some(true) {
        sqlx::query(
            "UPDATE addresses SET is_default = true
             WHERE id = (SELECT id FROM addresses WHERE user_id = $1 ORDER BY created_at, id LIMIT 1)",
        )
        .bind(user.as_uuid())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(deleted.is_some())
}
