//! The gateway's limits: rate limits kept in Redis (so every gateway
//! instance counts together) and load shedding in-process.
//!
//! Rate limits are fixed one-minute windows per client address and per
//! user, stricter for `/auth/*` (where each request may cost an Argon2
//! hash). One Lua call counts a request in every window it belongs to and
//! says whether any is over, and for how long. If Redis is unreachable the
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
use emporium_schemas::Principal;
use fred::clients::Client;
use fred::interfaces::LuaInterface as _;
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

/// For each key `i`: INCR, set the window's expiry on the first hit, and
/// compare with `ARGV[i+1]`. Returns the longest wait of any key over its
/// limit in ms, or 0.
const COUNT: &str = r"
local wait = 0
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('PEXPIRE', key, ARGV[1]) end
  if n > tonumber(ARGV[i + 1]) then
    local ttl = redis.call('PTTL', key)
    if ttl > wait then wait = ttl end
  end
end
return wait
";

/// Counts requests in Redis.
#[derive(Clone)]
pub struct RateLimiter {
    redis: Client,
    prefix: String,
    limits: RateLimits,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").field("prefix", &self.prefix).field("limits", &self.limits).finish()
    }
}

impl RateLimiter {
    pub fn new(redis: Client, prefix: impl Into<String>, limits: RateLimits) -> Self {
        Self { redis, prefix: prefix.into(), limits }
    }

    /// `Some(wait)` when this request is over a limit.
    async fn check(
        &self,
        ip: &str,
        user: Option<&Principal>,
        auth: bool,
    ) -> Result<Option<Duration>, fred::error::Error> {
        let mut keys = Vec::with_capacity(2);
        let window_ms = i64::try_from(self.limits.window.as_millis()).unwrap_or(i64::MAX);
        let mut args = vec![window_ms];
        let as_arg = |limit: u64| i64::try_from(limit).unwrap_or(i64::MAX);
        if auth {
            keys.push(format!("{}rl:auth:ip:{ip}", self.prefix));
            args.push(as_arg(self.limits.auth_per_ip));
        } else {
            keys.push(format!("{}rl:ip:{ip}", self.prefix));
            args.push(as_arg(self.limits.per_ip));
        }
        if let Some(user) = user {
            keys.push(format!("{}rl:user:{}", self.prefix, user.user_id));
            args.push(as_arg(self.limits.per_user));
        }
        let wait_ms: i64 = self.redis.eval(COUNT, keys, args).await?;
        Ok((wait_ms > 0).then(|| Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0))))
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
