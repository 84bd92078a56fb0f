//! The gateway's limits: rate limits kept in Redis (so every gateway
//! instance counts together) and load shedding in-process.
//!
//! Rate limits are fixed one-minute windows per client address and per
//! user, stricter for `/auth/*` (where each request may cost an Argon2
//! hash). A request is counted in every window it belongs to in one round
//! trip (the platform's [`FixedWindows`]) and refused while any of them is
//! over its limit, until that window starts over. If Redis is unreachable the
//! request is let through: an outage of the limiter must not become an
//! outage of the shop (it is logged).
//!
//! Shedding bounds the requests in flight; the next one gets 503 with
//! `Retry-After` at once instead of waiting in an unbounded queue.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use emporium_platform::windows::FixedWindows;
use emporium_schemas::Principal;
use tokio::sync::Semaphore;

use crate::extract::ClientIp;
use crate::problem::Problem;

/// Requests allowed per window, per scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub per_ip: u64,
    pub per_user: u64,
    /// Per client address on `/auth/*`.
    pub auth_per_ip: u64,
    pub window: Duration,
}

/// Counts requests in Redis.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    windows: FixedWindows,
    prefix: String,
    limits: RateLimits,
}

impl RateLimiter {
    pub fn new(redis: fred::clients::Client, prefix: impl Into<String>, limits: RateLimits) -> Self {
        Self { windows: FixedWindows::new(redis), prefix: prefix.into(), limits }
    }

    /// `Some(wait)` when this request is over a limit.
    async fn check(
        &self,
        ip: &str,
        user: Option<&Principal>,
        auth: bool,
    ) -> Result<Option<Duration>, fred::error::Error> {
        let (prefix, window) = (&self.prefix, self.limits.window);
        let mut limited = Vec::with_capacity(2);
        if auth {
            limited.push((format!("{prefix}rl:auth:ip:{ip}"), self.limits.auth_per_ip));
        } else {
            limited.push((format!("{prefix}rl:ip:{ip}"), self.limits.per_ip));
        }
        if let Some(user) = user {
            limited.push((format!("{prefix}rl:user:{}", user.user_id), self.limits.per_user));
        }
        let windows: Vec<(String, Duration)> = limited.iter().map(|(key, _)| (key.clone(), window)).collect();
        let counts = self.windows.hit(&windows).await?;
        Ok(counts
            .iter()
            .zip(&limited)
            .filter(|(count, (_, limit))| count.hits > *limit)
            .map(|(count, _)| count.resets_in)
            .max())
    }
}

/// Middleware: 429 with `Retry-After` when the client or user is over a limit.
pub async fn rate_limit(State(limiter): State<RateLimiter>, request: Request, next: Next) -> Response {
    let ip = request.extensions().get::<ClientIp>().map_or("unknown", |ip| ip.0.as_str()).to_owned();
    let auth = request.uri().path().starts_with("/api/v1/auth/");
    let user = request.extensions().get::<Principal>().copied();
    match limiter.check(&ip, user.as_ref(), auth).await {
        Ok(None) => next.run(request).await,
        Ok(Some(wait)) => {
            Problem::rate_limited(u64::try_from(wait.as_millis().div_ceil(1000)).unwrap_or(u64::MAX)).into_response()
        }
        Err(error) => {
            tracing::warn!(%error, "rate limiter unavailable; letting the request through");
            next.run(request).await
        }
    }
}

/// Middleware: at most the semaphore's permits in flight; the rest are shed.
pub async fn shed(State(permits): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    match permits.try_acquire() {
        Ok(_permit) => next.run(request).await,
        Err(_) => Problem::overloaded("the gateway is at capacity; retry shortly").into_response(),
    }
}

/// Middleware: a request that takes longer than the deadline is answered 504
/// (and its work dropped).
pub async fn deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Problem::new(axum::http::StatusCode::GATEWAY_TIMEOUT, "timeout", "the request took too long")
            .into_response(),
    }
}
