//! `/healthz`, `/readyz` and the process's counters at `/metrics`, served by
//! every process on its ops address (the probes also by the gateway on its public one).
//!
//! `/healthz` answers 200 while the process runs. `/readyz` answers 200 only when
//! every registered probe passes and the process is not draining, so a load
//! balancer stops sending work the moment shutdown begins.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::future::{BoxFuture, join_all};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// A readiness probe: `Ok` when what it watches can do its work.
#[derive(Clone)]
pub struct Check(Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>);

impl Check {
    pub fn new<F, Fut>(probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self(Arc::new(move || Box::pin(probe())))
    }
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Check")
    }
}

/// The process's readiness: named probes plus a draining flag.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    checks: Arc<RwLock<BTreeMap<String, Check>>>,
    draining: Arc<AtomicBool>,
}

/// The outcome of running every probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub ready: bool,
    pub draining: bool,
    /// Probe name → `None` when it passed, else why it failed.
    pub failures: BTreeMap<String, Option<String>>,
}

impl Readiness {
    /// Adds (or replaces) the probe called `name`.
    pub fn register(&self, name: impl Into<String>, check: Check) {
        let mut checks = self.checks.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        checks.insert(name.into(), check);
    }

    /// From now on `/readyz` answers 503: shutdown has begun.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Runs every probe concurrently.
    pub async fn report(&self) -> Report {
        let checks: Vec<(String, Check)> = {
            let checks = self.checks.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            checks.iter().map(|(name, check)| (name.clone(), check.clone())).collect()
        };
        let outcomes = join_all(checks.iter().map(|(_, check)| (check.0)())).await;
        let failures: BTreeMap<String, Option<String>> =
            checks.into_iter().zip(outcomes).map(|((name, _), outcome)| (name, outcome.err())).collect();
        let draining = self.draining.load(Ordering::SeqCst);
        let ready = !draining && failures.values().all(Option::is_none);
        Report { ready, draining, failures }
    }
}

/// The two probe routes, for merging into any router.
pub fn routes(readiness: Readiness) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(readiness)
}

async fn counters() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::counters::render()).into_response()
}

async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    let report = readiness.report().await;
    let checks: serde_json::Map<String, serde_json::Value> = report
        .failures
        .iter()
        .map(|(name, failure)| (name.clone(), json!(failure.as_deref().unwrap_or("ok"))))
        .collect();
    let (status, word) = match (report.ready, report.draining) {
        (true, _) => (StatusCode::OK, "ready"),
        (false, true) => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
        (false, false) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
    };
    (status, Json(json!({ "status": word, "checks": checks }))).into_response()
}

/// Serves the ops routes on `addr` until `shutdown` is cancelled.
/// Returns the bound address (port 0 picks a free one) and the server task.
pub async fn serve(
    addr: SocketAddr,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = routes(readiness).route("/metrics", get(counters));
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
    Ok((bound, tokio::spawn(async move { server.await })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_only_when_every_probe_passes_and_not_draining() {
        let readiness = Readiness::default();
        assert!(readiness.report().await.ready, "no probes: ready");

        readiness.register("good", Check::new(|| async { Ok(()) }));
        assert!(readiness.report().await.ready);

        readiness.register("bad", Check::new(|| async { Err("down".to_owned()) }));
        let report = readiness.report().await;
        assert!(!report.ready);
        assert_eq!(report.failures["bad"].as_deref(), Some("down"));
        assert_eq!(report.failures["good"], None);

        readiness.register("bad", Check::new(|| async { Ok(()) }));
        assert!(readiness.report().await.ready);
        readiness.start_draining();
        let report = readiness.report().await;
        assert!(!report.ready && report.draining);
    }
}
