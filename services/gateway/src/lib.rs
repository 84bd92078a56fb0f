//! The HTTP gateway: Emporium's one front door.
//!
//! It owns nothing durable. It authenticates requests, applies limits, and
//! reaches services only over NATS request/reply. So far it serves the ops
//! routes (`/healthz`, `/readyz`) and answers every other path with a
//! problem+json 404; the public API (`/api/v1`) arrives route by route.
//!
//! Built as zero-to-production does: [`Gateway::bind`] takes the port (0 in
//! tests), [`Gateway::run_until_stopped`] serves until the shutdown token fires
//! and in-flight requests have finished.

mod problem;

use std::net::SocketAddr;

use axum::Router;
use emporium_platform::Readiness;
use tokio_util::sync::CancellationToken;

pub use problem::Problem;

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
}

impl Gateway {
    /// Binds `addr`; the process's readiness is served at `/readyz`.
    pub async fn bind(addr: SocketAddr, readiness: Readiness) -> Result<Self, GatewayError> {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| GatewayError::Bind { addr, source })?;
        Ok(Self { listener, router: router(readiness) })
    }

    /// The bound address (the real port when bound to port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, GatewayError> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown` is cancelled, then stops accepting and lets
    /// in-flight requests finish.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), GatewayError> {
        tracing::info!(addr = %self.local_addr()?, "gateway listening");
        axum::serve(self.listener, self.router).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
        tracing::info!("gateway stopped");
        Ok(())
    }
}

fn router(readiness: Readiness) -> Router {
    emporium_platform::ops::routes(readiness).fallback(problem::not_found)
}
