//! The HTTP gateway: Emporium's one front door.
//!
//! It owns nothing durable. It verifies bearer tokens against identity's
//! public keys, applies limits, and reaches services only over NATS
//! request/reply with a deadline; their refusals become problem+json.
//!
//! Built as zero-to-production does: [`Gateway::bind`] takes the port (0 in
//! tests), [`Gateway::run_until_stopped`] serves until the shutdown token fires
//! and in-flight requests have finished.
//!
//! # Layout
//! - [`api`]: the `/api/v1` handlers, one command each.
//! - [`auth`]: the JWKS cache, token verification, the `authenticate` middleware.
//! - [`limits`]: Redis rate limits, load shedding, the request deadline.
//! - [`observe`]: request ids, client address, logs, security headers, `/metrics`.
//! - [`extract`]: extractors that reject with problems; the caller and its role check.
//! - [`problem`]: the error format.
//! - [`openapi`]: `/openapi.json` and `/docs`.
//!
//! A request passes, outermost first: observe → CORS → shed → deadline →
//! authenticate → rate limit → body limit → handler.

pub mod api;
pub mod auth;
pub mod extract;
pub mod limits;
pub mod observe;
pub mod openapi;
mod problem;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use emporium_nats::Caller as ServiceCaller;
use emporium_platform::Readiness;
use emporium_platform::settings::{SettingsError, typed};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use problem::Problem;

use crate::api::ApiState;
use crate::api::live::Streams;
use crate::auth::KeySet;
use crate::limits::{RateLimiter, RateLimits};
use crate::observe::{Metrics, Observe, ObserveConfig};

/// The largest request body accepted; larger gets 413.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The gateway's own settings (`GATEWAY_*`; `.env.example` lists them).
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Longest a request may take, end to end.
    pub request_timeout: Duration,
    /// Longest a service may take to answer a command (below the request timeout).
    pub service_deadline: Duration,
    /// Requests in flight before new ones are shed with 503.
    pub max_in_flight: usize,
    pub rate_limits: RateLimits,
    /// Origins allowed by CORS; `*` for any, empty for none.
    pub cors_origins: Vec<String>,
    pub trust_forwarded_for: bool,
    /// Least time between two JWKS fetches prompted by unknown key ids.
    pub jwks_refetch: Duration,
    /// Live order-status streams (SSE) open at once before new ones get 503.
    pub max_streams: usize,
    /// How often an idle stream sends a keep-alive comment, so proxies keep it open.
    pub stream_keep_alive: Duration,
    /// A stream still open after this long is ended; the client reconnects and
    /// gets the current state first, as on any connect.
    pub stream_max_age: Duration,
}

impl GatewaySettings {
    pub fn from_source(source: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let cors: String = typed(&source, "GATEWAY_CORS_ORIGINS", "http://localhost:3000,http://127.0.0.1:3000")?;
        Ok(Self {
            request_timeout: Duration::from_millis(typed(&source, "GATEWAY_REQUEST_TIMEOUT_MS", "10000")?),
            service_deadline: Duration::from_millis(typed(&source, "GATEWAY_SERVICE_DEADLINE_MS", "5000")?),
            max_in_flight: typed(&source, "GATEWAY_MAX_IN_FLIGHT", "2048")?,
            rate_limits: RateLimits {
                per_ip: typed(&source, "GATEWAY_RATE_LIMIT_PER_IP", "1200")?,
                per_user: typed(&source, "GATEWAY_RATE_LIMIT_PER_USER", "600")?,
                auth_per_ip: typed(&source, "GATEWAY_RATE_LIMIT_AUTH_PER_IP", "30")?,
                window: Duration::from_secs(typed(&source, "GATEWAY_RATE_LIMIT_WINDOW_SECS", "60")?),
            },
            cors_origins: cors.split(',').map(str::trim).filter(|o| !o.is_empty()).map(str::to_owned).collect(),
            trust_forwarded_for: typed(&source, "GATEWAY_TRUST_FORWARDED_FOR", "false")?,
            jwks_refetch: Duration::from_secs(typed(&source, "GATEWAY_JWKS_REFETCH_SECS", "10")?),
            max_streams: typed(&source, "GATEWAY_MAX_STREAMS", "10000")?,
            stream_keep_alive: Duration::from_secs(typed(&source, "GATEWAY_STREAM_KEEP_ALIVE_SECS", "15")?),
            stream_max_age: Duration::from_secs(typed(&source, "GATEWAY_STREAM_MAX_AGE_SECS", "3600")?),
        })
    }
}

/// What the gateway talks to.
#[derive(Debug, Clone)]
pub struct Dependencies {
    pub nats: async_nats::Client,
    pub redis: fred::clients::Client,
    pub redis_prefix: String,
    /// The deployment's partition count: carts and orders are addressed by it.
    pub partitions: u16,
}

/// The gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// A bound, not yet serving, gateway.
#[derive(Debug)]
pub struct Gateway {
    listener: tokio::net::TcpListener,
    router: Router,
    /// Ends the live streams at shutdown: a graceful shutdown waits for open
    /// connections, and a stream would otherwise hold it open for its whole age.
    streams_stop: CancellationToken,
}

impl Gateway {
    /// Binds `addr`; the process's readiness is served at `/readyz`.
    pub async fn bind(
        addr: SocketAddr,
        settings: &GatewaySettings,
        deps: Dependencies,
        readiness: Readiness,
    ) -> Result<Self, GatewayError> {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| GatewayError::Bind { addr, source })?;
        let streams_stop = CancellationToken::new();
        Ok(Self { listener, router: router(settings, deps, readiness, streams_stop.clone()), streams_stop })
    }

    /// The bound address (the real port when bound to port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, GatewayError> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown` is cancelled, then stops accepting and lets
    /// in-flight requests finish.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), GatewayError> {
        tracing::info!(addr = %self.local_addr()?, "gateway listening");
        let app = self.router.into_make_service_with_connect_info::<SocketAddr>();
        let streams_stop = self.streams_stop;
        let stopping = async move {
            shutdown.cancelled().await;
            streams_stop.cancel();
        };
        axum::serve(self.listener, app).with_graceful_shutdown(stopping).await?;
        tracing::info!("gateway stopped");
        Ok(())
    }
}

fn router(
    settings: &GatewaySettings,
    deps: Dependencies,
    readiness: Readiness,
    streams_stop: CancellationToken,
) -> Router {
    let services = ServiceCaller::new(deps.nats.clone(), settings.service_deadline).with_partitions(deps.partitions);
    let streams = Streams {
        nats: deps.nats,
        open: Arc::new(Semaphore::new(settings.max_streams)),
        keep_alive: settings.stream_keep_alive,
        max_age: settings.stream_max_age,
        stop: streams_stop,
    };
    let keys = Arc::new(KeySet::new(services.clone(), settings.jwks_refetch));
    let limiter = RateLimiter::new(deps.redis, deps.redis_prefix, settings.rate_limits);
    let observe = Observe {
        metrics: Arc::new(Metrics::default()),
        config: ObserveConfig { trust_forwarded_for: settings.trust_forwarded_for },
    };

    let public_api = api::routes(ApiState { services, streams })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(from_fn_with_state(limiter, limits::rate_limit))
        .layer(from_fn_with_state(keys.clone(), auth::authenticate))
        .layer(from_fn_with_state(settings.request_timeout, limits::deadline))
        .layer(from_fn_with_state(Arc::new(Semaphore::new(settings.max_in_flight)), limits::shed));

    let root = Router::new()
        .route("/metrics", get(observe::metrics).with_state(observe.clone()))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(openapi::docs))
        .route("/.well-known/jwks.json", get(jwks).with_state(keys));

    emporium_platform::ops::routes(readiness)
        .merge(root)
        .merge(public_api)
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(cors(&settings.cors_origins))
        .layer(from_fn_with_state(observe, observe::observe))
}

/// `GET /.well-known/jwks.json`: identity's public keys, from the cache.
async fn jwks(State(keys): State<Arc<KeySet>>) -> Response {
    match keys.published().await {
        Ok(set) => {
            let mut response = axum::Json(set).into_response();
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
            response
        }
        Err(problem) => problem.into_response(),
    }
}

fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            observe::REQUEST_ID,
        ])
        .expose_headers([observe::REQUEST_ID, header::RETRY_AFTER])
        .max_age(Duration::from_secs(600))
}
