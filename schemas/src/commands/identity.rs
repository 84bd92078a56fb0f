//! `cmd.identity.*`: accounts, sessions and addresses, answered by any
//! identity instance in the `identity` queue group.
//!
//! Credentials arrive as plain strings: the identity service owns the rules
//! for emails and passwords, so it validates them and names the offending
//! field. The answers are defined here too, since the gateway hands them to
//! clients as they are.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::impl_command;
use crate::values::{Address, CountryCode, Role, Secret, Text, UserId};

/// Create an account. `role` is `customer` (the default) or `seller`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Register {
    #[schema(example = "ada@example.com")]
    pub email: String,
    #[schema(value_type = String, format = Password, min_length = 10, max_length = 128)]
    pub password: Secret,
    #[schema(example = "Ada Lovelace")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}
impl_command!(Register => "identity", "register", 1, QueueGroup);

/// Exchange credentials for a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Login {
    pub email: String,
    #[schema(value_type = String, format = Password)]
    pub password: Secret,
    /// Filled in by the gateway: the lockout counts failures per account and client.
    #[serde(default)]
    #[schema(ignore)]
    pub client_ip: String,
}
impl_command!(Login => "identity", "login", 1, QueueGroup);

/// Rotate a refresh token: the old one stops working, a new pair comes back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Refresh {
    #[schema(value_type = String)]
    pub refresh_token: Secret,
}
impl_command!(Refresh => "identity", "refresh", 1, QueueGroup);

/// End a session: its refresh token family is revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Logout {
    #[schema(value_type = String)]
    pub refresh_token: Secret,
}
impl_command!(Logout => "identity", "logout", 1, QueueGroup);

/// A profile: the caller's own, or (admins only) anyone's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetProfile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
}
impl_command!(GetProfile => "identity", "get_profile", 1, QueueGroup);

/// Change the caller's profile; absent fields stay as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UpdateProfile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
impl_command!(UpdateProfile => "identity", "update_profile", 1, QueueGroup);

/// Save an address; `default` makes it the one checkout proposes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(from = "AddAddressFields")]
pub struct AddAddress {
    #[serde(flatten)]
    pub address: Address,
    #[serde(default)]
    pub default: bool,
}

/// [`AddAddress`] as it is read: its fields spelled out, because serde
/// cannot say which field was wrong through `#[serde(flatten)]`, and
/// clients are told exactly that (422 naming the field).
#[derive(Deserialize)]
struct AddAddressFields {
    name: Text,
    line1: Text,
    #[serde(default)]
    line2: Option<Text>,
    city: Text,
    postal_code: Text,
    country: CountryCode,
    #[serde(default)]
    default: bool,
}

impl From<AddAddressFields> for AddAddress {
    fn from(fields: AddAddressFields) -> Self {
        let AddAddressFields { name, line1, line2, city, postal_code, country, default } = fields;
        Self { address: Address { name, line1, line2, city, postal_code, country }, default }
    }
}
impl_command!(AddAddress => "identity", "add_address", 1, QueueGroup);

/// The caller's saved addresses, the default first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListAddresses {}
impl_command!(ListAddresses => "identity", "list_addresses", 1, QueueGroup);

/// Forget one of the caller's addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteAddress {
    pub address_id: Uuid,
}
impl_command!(DeleteAddress => "identity", "delete_address", 1, QueueGroup);

/// The public keys access tokens are verified with (a JWK set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetKeys {}
impl_command!(GetKeys => "identity", "get_keys", 1, QueueGroup);

/// What login and refresh answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Session {
    /// A JWT (EdDSA) to send as `Authorization: Bearer …`.
    pub access_token: String,
    /// Opaque; exchange it at `/auth/refresh` once. Using it twice ends the session.
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    #[schema(example = "Bearer")]
    pub token_type: String,
}

/// An account as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Profile {
    #[schema(value_type = String, format = Uuid)]
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// A saved address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SavedAddress {
    pub id: Uuid,
    #[serde(flatten)]
    pub address: Address,
    pub default: bool,
}

/// The claims of an access token: the contract between identity, which
/// signs it, and the gateway, which verifies it against identity's JWKS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: UserId,
    pub role: Role,
    /// Unique per token, for logs and revocation lists.
    pub jti: Uuid,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
}

impl AccessClaims {
    /// Who access tokens are issued by and for; the gateway checks both.
    pub const ISSUER: &'static str = "emporium-identity";
    pub const AUDIENCE: &'static str = "emporium-api";
}
