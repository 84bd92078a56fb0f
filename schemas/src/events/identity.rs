//! `identity.*` events: accounts.

use serde::{Deserialize, Serialize};

use super::impl_event;
use crate::values::{Role, Text, UserId};

/// An account was created. Key: the user id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub user_id: UserId,
    /// Normalized: trimmed and lower case.
    pub email: Text,
    pub name: Text,
    pub role: Role,
}
impl_event!(UserRegistered => "identity", "user_registered", 1);
