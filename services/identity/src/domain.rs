//! The rules of identity, free of I/O: what makes an email, a password and a
//! name acceptable, who may register as what, what a presented refresh token
//! means, and when a run of failed logins locks an account out.

use std::time::Duration;

use chrono::{DateTime, Utc};
use emporium_schemas::values::Role;

/// A rule broken by a value the caller sent; `field` names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid { field, reason: reason.into() }
}

/// An email address, trimmed and lower-cased: `Ada@Example.com` and
/// `ada@example.com` are one account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    const MAX_LEN: usize = 254;

    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let normalized = text.trim().to_lowercase();
        let bad = |reason: &str| invalid("email", reason);
        if normalized.len() > Self::MAX_LEN {
            return Err(bad("must be at most 254 characters"));
        }
        let Some((local, domain)) = normalized.split_once('@') else { return Err(bad("must contain an @")) };
        if local.is_empty() || local.len() > 64 {
            return Err(bad("the part before @ must be 1 to 64 characters"));
        }
        if domain.contains('@') {
            return Err(bad("must contain exactly one @"));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 || labels.iter().any(|label| label.is_empty() || label.len() > 63) {
            return Err(bad("the domain must have at least two dot-separated parts"));
        }
        let allowed_local = |c: char| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c);
        let allowed_domain = |c: char| c.is_alphanumeric() || c == '-' || c == '.';
        if !local.chars().all(allowed_local) || !domain.chars().all(allowed_domain) {
            return Err(bad("contains characters an address cannot have"));
        }
        Ok(Self(normalized))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A new password that meets the policy. Existing passwords are only ever
/// compared with their hash, so this is checked at registration alone.
#[derive(Debug)]
pub struct NewPassword<'a>(&'a str);

impl<'a> NewPassword<'a> {
    pub const MIN_CHARS: usize = 10;
    pub const MAX_CHARS: usize = 128;

    /// Long enough, not absurdly long, not one of the passwords every
    /// attacker tries first, and not the email address itself.
    pub fn parse(text: &'a str, email: &Email) -> Result<Self, Invalid> {
        let chars = text.chars().count();
        let bad = |reason: String| invalid("password", reason);
        if chars < Self::MIN_CHARS {
            return Err(bad(format!("must be at least {} characters", Self::MIN_CHARS)));
        }
        if chars > Self::MAX_CHARS {
            return Err(bad(format!("must be at most {} characters", Self::MAX_CHARS)));
        }
        let lowered = text.to_lowercase();
        if COMMON_PASSWORDS.contains(&lowered.as_str()) {
            return Err(bad("is too common".to_owned()));
        }
        let local = email.as_str().split('@').next().unwrap_or_default();
        if lowered == email.as_str() || lowered == local {
            return Err(bad("must not be the email address".to_owned()));
        }
        if text.chars().all(|c| text.starts_with(c)) {
            return Err(bad("must not repeat one character".to_owned()));
        }
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

/// The ten-plus-character passwords at the top of breach lists.
const COMMON_PASSWORDS: &[&str] = &[
    "1234567890",
    "12345678910",
    "123456789a",
    "qwertyuiop",
    "password123",
    "password1234",
    "passwordpassword",
    "iloveyou123",
    "1q2w3e4r5t",
    "qwerty12345",
    "0987654321",
    "abcdefghij",
    "letmein123",
    "welcome123",
    "administrator",
];

/// A display name: 1 to 100 characters once trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let trimmed = text.trim();
        let chars = trimmed.chars().count();
        if chars == 0 || chars > 100 {
            return Err(invalid("name", "must be 1 to 100 characters"));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(invalid("name", "must not contain control characters"));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The role a registration may ask for. Admins exist only by bootstrap.
pub fn registration_role(requested: Option<Role>) -> Result<Role, Invalid> {
    match requested {
        None | Some(Role::Customer) => Ok(Role::Customer),
        Some(Role::Seller) => Ok(Role::Seller),
        Some(Role::Admin) => Err(invalid("role", "must be customer or seller")),
    }
}

/// A stored refresh token as the store found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRefresh {
    pub expires_at: DateTime<Utc>,
    /// Set when it was exchanged for a new token.
    pub used_at: Option<DateTime<Utc>>,
    /// Set when its family was revoked (logout, reuse).
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What presenting a refresh token leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshDecision {
    /// Valid: mark it used and hand out its successor in the same family.
    Rotate,
    /// Already exchanged once: someone holds a copy. End the whole family.
    ReuseDetected,
    /// Its session was ended.
    Revoked,
    Expired,
}

impl StoredRefresh {
    pub fn decide(&self, now: DateTime<Utc>) -> RefreshDecision {
        if self.revoked_at.is_some() {
            RefreshDecision::Revoked
        } else if self.used_at.is_some() {
            RefreshDecision::ReuseDetected
        } else if now >= self.expires_at {
            RefreshDecision::Expired
        } else {
            RefreshDecision::Rotate
        }
    }
}

/// When failed logins lock an account: a tight limit per account and client
/// address, and a looser one per account whatever the address, so a
/// distributed guesser is slowed too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub per_client: Limit,
    pub per_account: Limit,
}

/// At most `failures` failed logins within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub failures: u64,
    pub window: Duration,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            per_client: Limit { failures: 5, window: Duration::from_secs(15 * 60) },
            per_account: Limit { failures: 20, window: Duration::from_secs(60 * 60) },
        }
    }
}

/// Failures counted so far in each window, and how long each window still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailureCounts {
    pub per_client: u64,
    pub per_client_resets_in: Duration,
    pub per_account: u64,
    pub per_account_resets_in: Duration,
}

impl LockoutPolicy {
    /// `Some(retry after)` while either limit is reached.
    pub fn locked_for(&self, counts: &FailureCounts) -> Option<Duration> {
        let client = (counts.per_client >= self.per_client.failures).then_some(counts.per_client_resets_in);
        let account = (counts.per_account >= self.per_account.failures).then_some(counts.per_account_resets_in);
        match (client, account) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (one, other) => one.or(other),
        }
        .map(|wait| wait.max(Duration::from_secs(1)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::TimeDelta;

    use super::*;

    #[test]
    fn emails_are_normalized_so_case_never_makes_a_second_account() {
        for (given, expected) in [
            ("Ada@Example.com", "ada@example.com"),
            ("  ada@example.com ", "ada@example.com"),
            ("first.last+tag@mail.example.co.uk", "first.last+tag@mail.example.co.uk"),
        ] {
            assert_eq!(Email::parse(given).unwrap().as_str(), expected, "{given}");
        }
    }

    #[test]
    fn malformed_emails_are_refused_naming_the_field() {
        for given in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "ada@@example.com",
            "a da@example.com",
            "ada@exa_mple.com",
            "ada@.com",
        ] {
            let error = Email::parse(given).unwrap_err();
            assert_eq!(error.field, "email", "{given}");
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert!(Email::parse(&long).is_err());
    }

    #[test]
    fn the_password_policy_wants_length_and_no_obvious_choices() {
        let email = Email::parse("ada@example.com").unwrap();
        assert!(NewPassword::parse("correct horse battery", &email).is_ok());
        for (given, why) in [
            ("short", "at least"),
            ("Password123", "common"),
            ("aaaaaaaaaaaa", "repeat"),
            ("ada@example.com", "email"),
            ("ada", "at least"),
        ] {
            let error = NewPassword::parse(given, &email).unwrap_err();
            assert_eq!(error.field, "password");
            assert!(error.reason.contains(why), "{given}: {}", error.reason);
        }
        assert!(NewPassword::parse(&"x1".repeat(65), &email).unwrap_err().reason.contains("at most"));
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(DisplayName::parse("  Ada  ").unwrap().as_str(), "Ada");
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse(&"n".repeat(101)).is_err());
        assert!(DisplayName::parse("Ada\u{0}").is_err());
    }

    #[test]
    fn registration_makes_customers_or_sellers_never_admins() {
        assert_eq!(registration_role(None).unwrap(), Role::Customer);
        assert_eq!(registration_role(Some(Role::Seller)).unwrap(), Role::Seller);
        assert_eq!(registration_role(Some(Role::Admin)).unwrap_err().field, "role");
    }

    fn token(used: bool, revoked: bool, expires_in_secs: i64) -> (StoredRefresh, DateTime<Utc>) {
        let now = Utc::now();
        let stored = StoredRefresh {
            expires_at: now + TimeDelta::seconds(expires_in_secs),
            used_at: used.then_some(now),
            revoked_at: revoked.then_some(now),
        };
        (stored, now)
    }

    #[test]
    fn given_a_fresh_refresh_token_when_presented_then_it_rotates() {
        let (stored, now) = token(false, false, 60);
        assert_eq!(stored.decide(now), RefreshDecision::Rotate);
    }

    #[test]
    fn given_a_used_refresh_token_when_presented_again_then_reuse_is_detected() {
        let (stored, now) = token(true, false, 60);
        assert_eq!(stored.decide(now), RefreshDecision::ReuseDetected);
    }

    #[test]
    fn given_a_revoked_or_expired_refresh_token_when_presented_then_it_is_refused() {
        let (revoked, now) = token(true, true, 60);
        assert_eq!(revoked.decide(now), RefreshDecision::Revoked);
        let (expired, now) = token(false, false, -1);
        assert_eq!(expired.decide(now), RefreshDecision::Expired);
    }

    #[test]
    fn given_four_failures_when_checking_then_the_account_is_still_open() {
        let policy = LockoutPolicy::default();
        let counts = FailureCounts { per_client: 4, per_account: 4, ..FailureCounts::default() };
        assert_eq!(policy.locked_for(&counts), None);
    }

    #[test]
    fn given_five_failures_from_one_client_when_checking_then_it_waits_out_the_window() {
        let policy = LockoutPolicy::default();
        let counts = FailureCounts {
            per_client: 5,
            per_client_resets_in: Duration::from_secs(600),
            per_account: 5,
            per_account_resets_in: Duration::from_secs(3000),
        };
        assert_eq!(policy.locked_for(&counts), Some(Duration::from_secs(600)));
    }

    #[test]
    fn given_many_failures_from_many_clients_when_checking_then_the_account_ceiling_holds() {
        let policy = LockoutPolicy::default();
        let counts = FailureCounts {
            per_client: 1,
            per_client_resets_in: Duration::from_secs(900),
            per_account: 20,
            per_account_resets_in: Duration::from_millis(10),
        };
        assert_eq!(policy.locked_for(&counts), Some(Duration::from_secs(1)), "never less than a second");
    }
}
