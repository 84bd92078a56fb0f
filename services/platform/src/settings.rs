//! Typed settings, read once from the environment at start.
//!
//! Every variable has a development default so `just up` needs no
//! configuration; `.env.example` documents each one. Secrets (the database URL
//! carries a password) are `SecretString`s and never logged.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

/// Where this process runs: decides log format and the strictness of defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

impl FromStr for Environment {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "development" | "dev" => Ok(Self::Development),
            "production" | "prod" => Ok(Self::Production),
            other => Err(format!("expected development or production, got {other:?}")),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log shippers.
    Json,
    /// Compact, coloured lines for people.
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            other => Err(format!("expected json or pretty, got {other:?}")),
        }
    }
}

/// A setting that is present but not valid.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {reason}")]
pub struct SettingsError {
    pub name: &'static str,
    pub reason: String,
}

/// Everything a process needs to know about its surroundings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub environment: Environment,
    pub log_format: LogFormat,
    /// A Postgres server URL; each service uses its own database on it
    /// (`emporium_<service>`), see [`crate::connections`].
    pub database_url: SecretString,
    pub database_max_connections: u32,
    pub nats_url: String,
    pub redis_url: SecretString,
    /// Prepended to every Redis key, so deployments (and tests) can share a server.
    pub redis_prefix: String,
    /// The gateway's public HTTP address.
    pub gateway_addr: SocketAddr,
    /// This process's `/healthz` and `/readyz`.
    pub ops_addr: SocketAddr,
    /// How many partitions the key space is cut into (streams, consumers, command subjects).
    pub partitions: u16,
    /// How long in-flight work may take to drain after SIGTERM.
    pub shutdown_grace: Duration,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_source(|name| std::env::var(name).ok())
    }

    /// Reads settings from any source of variables (tests pass a map).
    pub fn from_source(source: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |name: &'static str, default: &str| source(name).unwrap_or_else(|| default.to_owned());
        let environment: Environment = typed(&source, "EMPORIUM_ENV", "development")?;
        let default_format = match environment {
            Environment::Development => "pretty",
            Environment::Production => "json",
        };
        let partitions: u16 = typed(&source, "PARTITIONS", "4")?;
        if !(1..=100).contains(&partitions) {
            return Err(SettingsError { name: "PARTITIONS", reason: format!("must be 1 to 100, got {partitions}") });
        }
        Ok(Self {
            environment,
            log_format: typed(&source, "LOG_FORMAT", default_format)?,
            database_url: get("DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/postgres").into(),
            database_max_connections: typed(&source, "DATABASE_MAX_CONNECTIONS", "10")?,
            nats_url: get("NATS_URL", "nats://127.0.0.1:4222"),
            redis_url: get("REDIS_URL", "redis://127.0.0.1:6379").into(),
            redis_prefix: get("REDIS_PREFIX", "emporium:"),
            gateway_addr: typed(&source, "GATEWAY_ADDR", "127.0.0.1:8080")?,
            ops_addr: typed(&source, "OPS_ADDR", "127.0.0.1:9080")?,
            partitions,
            shutdown_grace: Duration::from_secs(typed(&source, "SHUTDOWN_GRACE_SECS", "20")?),
        })
    }
}

/// Reads `name` from `source` (or `default`) as a `T`; services read their
/// own settings with it, so every setting fails the same way.
pub fn typed<T>(source: &impl Fn(&str) -> Option<String>, name: &'static str, default: &str) -> Result<T, SettingsError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let text = source(name).unwrap_or_else(|| default.to_owned());
    text.trim().parse().map_err(|e: T::Err| SettingsError { name, reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use secrecy::ExposeSecret;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Settings::from_source(|name| vars.get(name).cloned())
    }

    #[test]
    fn without_variables_the_defaults_describe_the_dev_stack() {
        let settings = settings(&[]).unwrap();
        assert_eq!(settings.environment, Environment::Development);
        assert_eq!(settings.log_format, LogFormat::Pretty);
        assert_eq!(settings.gateway_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.partitions, 4);
        assert!(settings.database_url.expose_secret().starts_with("postgres://"));
    }

    #[test]
    fn production_logs_json_unless_told_otherwise() {
        assert_eq!(settings(&[("EMPORIUM_ENV", "production")]).unwrap().log_format, LogFormat::Json);
        let pretty = settings(&[("EMPORIUM_ENV", "production"), ("LOG_FORMAT", "pretty")]).unwrap();
        assert_eq!(pretty.log_format, LogFormat::Pretty);
    }

    #[test]
    fn an_invalid_value_names_its_variable() {
        let error = settings(&[("GATEWAY_ADDR", "not an address")]).unwrap_err();
        assert_eq!(error.name, "GATEWAY_ADDR");
        assert_eq!(settings(&[("PARTITIONS", "0")]).unwrap_err().name, "PARTITIONS");
        assert_eq!(settings(&[("EMPORIUM_ENV", "staging")]).unwrap_err().name, "EMPORIUM_ENV");
    }

    #[test]
    fn secrets_are_not_printed_by_debug() {
        let settings = settings(&[("DATABASE_URL", "postgres://u:hunter2@db/x")]).unwrap();
        assert!(!format!("{settings:?}").contains("hunter2"));
    }
}
