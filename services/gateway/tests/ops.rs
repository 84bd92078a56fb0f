//! The gateway's ops routes, over real HTTP, with real NATS and Redis behind readiness.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use emporium_gateway::{Dependencies, Gateway, GatewaySettings};
use emporium_platform::ops::Check;
use emporium_platform::{Connections, Readiness, Settings};
use emporium_test_harness::{TestNats, TestRedis};
use tokio_util::sync::CancellationToken;

struct TestGateway {
    base: String,
    readiness: Readiness,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<Result<(), emporium_gateway::GatewayError>>,
    _nats: TestNats,
    _redis: TestRedis,
}

async fn spawn_gateway() -> TestGateway {
    let nats = TestNats::start().await.unwrap();
    let redis = TestRedis::connect().await.unwrap();
    let (nats_url, redis_url) = (nats.url().to_owned(), redis.url().to_owned());
    let settings = Settings::from_source(|name| match name {
        "NATS_URL" => Some(nats_url.clone()),
        "REDIS_URL" => Some(redis_url.clone()),
        _ => None,
    })
    .unwrap();
    let readiness = Readiness::default();
    let connections = Connections::open(&settings, "gateway-test").await.unwrap();
    connections.register_checks(&readiness);
    let deps = Dependencies {
        nats: connections.nats().clone(),
        redis: connections.redis().clone(),
        redis_prefix: settings.redis_prefix.clone(),
        partitions: settings.partitions,
    };
    let gateway_settings = GatewaySettings::from_source(|_| None).unwrap();
    let gateway =
        Gateway::bind("127.0.0.1:0".parse().unwrap(), &gateway_settings, deps, readiness.clone()).await.unwrap();
    let base = format!("http://{}", gateway.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(gateway.run_until_stopped(shutdown.clone()));
    TestGateway { base, readiness, shutdown, server, _nats: nats, _redis: redis }
}

async fn get(url: &str) -> (u16, String, serde_json::Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, content_type, response.json().await.unwrap())
}

#[tokio::test]
async fn healthz_answers_while_the_process_runs() {
    let gateway = spawn_gateway().await;
    let (status, _, body) = get(&format!("{}/healthz", gateway.base)).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn readyz_reports_each_dependency_and_fails_when_one_is_down() {
    let gateway = spawn_gateway().await;
    let ready = emporium_test_harness::eventually(std::time::Duration::from_secs(10), || async {
        get(&format!("{}/readyz", gateway.base)).await.0 == 200
    })
    .await;
    assert!(ready, "gateway never became ready with NATS and Redis up");
    let (_, _, body) = get(&format!("{}/readyz", gateway.base)).await;
    assert_eq!(body["checks"]["nats"], "ok");
    assert_eq!(body["checks"]["redis"], "ok");

    gateway.readiness.register("postgres", Check::new(|| async { Err("connection refused".to_owned()) }));
    let (status, _, body) = get(&format!("{}/readyz", gateway.base)).await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["postgres"], "connection refused");
}

#[tokio::test]
async fn readyz_turns_unavailable_when_draining_begins() {
    let gateway = spawn_gateway().await;
    gateway.readiness.start_draining();
    let (status, _, body) = get(&format!("{}/readyz", gateway.base)).await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "draining");
}

#[tokio::test]
async fn unknown_paths_get_a_problem_json_404() {
    let gateway = spawn_gateway().await;
    let (status, content_type, body) = get(&format!("{}/no/such/thing", gateway.base)).await;
    assert_eq!(status, 404);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(body["status"], 404);
    assert_eq!(body["type"], "https://emporium.dev/problems/not-found");
    assert!(body["detail"].as_str().unwrap().contains("/no/such/thing"));
}

#[tokio::test]
async fn shutdown_stops_the_server_cleanly() {
    let gateway = spawn_gateway().await;
    gateway.shutdown.cancel();
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), gateway.server).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "gateway did not stop cleanly: {stopped:?}");
}
