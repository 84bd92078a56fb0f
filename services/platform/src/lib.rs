//! What every Emporium service process shares.
//!
//! # Layout
//! - [`settings`]: typed settings from the environment (`.env.example` lists them).
//! - [`telemetry`]: tracing, JSON in production and readable in development.
//! - [`shutdown`]: SIGINT/SIGTERM → a cancellation token every task watches.
//! - [`counters`]: process-wide counters rendered at `/metrics`.
//! - [`connections`]: Postgres pools (one database per service), Redis, NATS.
//! - [`ops`]: `/healthz` and `/readyz`, served by every process.
//! - [`windows`]: fixed-window counters in Redis (rate limits, lockout).

pub mod connections;
pub mod counters;
pub mod ops;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod windows;

pub use connections::Connections;
pub use ops::Readiness;
pub use settings::Settings;
