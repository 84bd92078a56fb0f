//! The gateway's own behaviour over real HTTP: problem+json for every kind
//! of bad request, limits, shedding, request ids, security headers, CORS,
//! the OpenAPI document and the metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use emporium_system::{Stack, problem, token};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn every_kind_of_bad_request_gets_a_problem() {
    let stack = Stack::start().await;
    let register = || stack.request(Method::POST, "/api/v1/auth/register");

    problem(stack.request(Method::GET, "/api/v1/nowhere").send().await.unwrap(), 404).await;
    problem(stack.request(Method::PUT, "/api/v1/auth/login").send().await.unwrap(), 405).await;
    let malformed = register().header("content-type", "application/json").body("{\"email\": ").send().await.unwrap();
    problem(malformed, 400).await;
    let text = register().header("content-type", "text/plain").body("hello").send().await.unwrap();
    problem(text, 415).await;
    let mistyped = register().json(&json!({ "email": 7, "password": "x", "name": "y" })).send().await.unwrap();
    assert_eq!(problem(mistyped, 422).await["field"], "email");
    let huge = json!({ "email": "a@example.com", "password": "x".repeat(1024 * 1024 + 1), "name": "y" });
    problem(register().json(&huge).send().await.unwrap(), 413).await;

    let session = stack.signed_up("paths@example.com", "customer").await;
    let bad_id = stack
        .request(Method::DELETE, "/api/v1/me/addresses/not-a-uuid")
        .bearer_auth(token(&session, "access_token"))
        .send()
        .await
        .unwrap();
    problem(bad_id, 400).await;
}

#[tokio::test]
async fn text_holding_a_nul_character_is_refused_before_it_reaches_a_service() {
    // Postgres cannot store U+0000: an address holding one was once answered 500.
    let stack = Box::pin(Stack::with_catalog()).await;
    let customer = token(&stack.signed_up("nul@example.com", "customer").await, "access_token");
    let address = |city: &str| json!({ "name": "Ada Lovelace", "line1": "12 St James's Square", "city": city, "postal_code": "SW1Y 4JH", "country": "GB" });
    let nul = stack.send_as(&customer, Method::POST, "/api/v1/me/addresses", &address("Lon\u{0}don")).await;
    problem(nul, 422).await;
    // A backslash followed by `u0000` is only text.
    let text = stack.send_as(&customer, Method::POST, "/api/v1/me/addresses", &address("Lon\\u0000don")).await;
    assert_eq!(text.status(), 201);
    let search = stack.request(Method::GET, "/api/v1/products?q=lamp%00").send().await.unwrap();
    assert_eq!(problem(search, 422).await["field"], "q");
}

#[tokio::test]
async fn auth_routes_are_rate_limited_per_client_more_strictly_than_the_rest() {
    let stack = Stack::with(|_, gateway| {
        gateway.rate_limits.auth_per_ip = 3;
        gateway.rate_limits.per_user = 4;
    })
    .await;
    let session = stack.signed_up("limited@example.com", "customer").await; // two auth requests from 192.0.2.1
    let login = || stack.login_from("limited@example.com", "wrong password!", "192.0.2.1");
    assert_eq!(login().await.status(), 401, "the second is allowed");
    assert_eq!(login().await.status(), 401, "the third is allowed");
    let limited = login().await;
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    problem(limited, 429).await;
    // Another client address has its own budget.
    assert_eq!(stack.login_from("limited@example.com", "wrong password!", "192.0.2.2").await.status(), 401);

    // Per user: four requests a window, whatever the address.
    let access = token(&session, "access_token");
    for i in 0..4 {
        let response = stack
            .request(Method::GET, "/api/v1/me")
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "request {i}");
    }
    problem(stack.get_as(&access, "/api/v1/me").await, 429).await;
}

#[tokio::test]
async fn a_full_gateway_sheds_load_with_503_and_retry_after() {
    let stack = Stack::with(|_, gateway| gateway.max_in_flight = 0).await;
    let shed = stack.request(Method::GET, "/api/v1/me").send().await.unwrap();
    assert_eq!(shed.headers()["retry-after"], "1");
    problem(shed, 503).await;
    // Ops routes are not shed: the orchestrator must still see the process.
    assert_eq!(stack.request(Method::GET, "/healthz").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_full_service_sheds_load_and_a_missing_one_is_unavailable() {
    let mut stack = Stack::with(|identity, _| identity.max_in_flight = 0).await;
    let body = json!({ "email": "busy@example.com", "password": emporium_system::PASSWORD, "name": "B" });
    let shed = stack.request(Method::POST, "/api/v1/auth/register").json(&body).send().await.unwrap();
    assert!(shed.headers().contains_key("retry-after"));
    problem(shed, 503).await;

    stack.stop_identity().await;
    let gone = stack.request(Method::POST, "/api/v1/auth/register").json(&body).send().await.unwrap();
    assert!(gone.headers().contains_key("retry-after"));
    assert_eq!(problem(gone, 503).await["type"], "https://emporium.dev/problems/unavailable");
}

#[tokio::test]
async fn request_ids_are_kept_or_made_and_answers_carry_security_headers() {
    let stack = Stack::start().await;
    let given = stack.request(Method::GET, "/api/v1/me").header("x-request-id", "trace-me-123").send().await.unwrap();
    assert_eq!(given.headers()["x-request-id"], "trace-me-123");
    let made = stack.request(Method::GET, "/healthz").send().await.unwrap();
    let id = made.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
    let insane = stack.request(Method::GET, "/healthz").header("x-request-id", "a".repeat(300)).send().await.unwrap();
    assert_ne!(insane.headers()["x-request-id"].to_str().unwrap().len(), 300, "an absurd id is replaced");

    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
    ] {
        assert_eq!(made.headers()[name], value, "{name}");
    }
}

#[tokio::test]
async fn cors_answers_allowed_origins_only() {
    let stack = Stack::with(|_, gateway| gateway.cors_origins = vec!["https://shop.example".into()]).await;
    let preflight = |origin: &str| {
        stack
            .request(Method::OPTIONS, "/api/v1/me")
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("https://shop.example").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://shop.example");
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(!refused.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn the_openapi_document_covers_every_route_with_its_errors() {
    let stack = Stack::start().await;
    let doc: Value = stack.request(Method::GET, "/openapi.json").send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let expected = [
        ("post", "/api/v1/auth/register"),
        ("post", "/api/v1/auth/login"),
        ("post", "/api/v1/auth/refresh"),
        ("post", "/api/v1/auth/logout"),
        ("get", "/api/v1/me"),
        ("patch", "/api/v1/me"),
        ("get", "/api/v1/me/addresses"),
        ("post", "/api/v1/me/addresses"),
        ("delete", "/api/v1/me/addresses/{id}"),
        ("get", "/api/v1/users/{id}"),
        ("get", "/api/v1/products"),
        ("post", "/api/v1/products"),
        ("get", "/api/v1/products/{id}"),
        ("patch", "/api/v1/products/{id}"),
        ("delete", "/api/v1/products/{id}"),
        ("put", "/api/v1/products/{id}/stock"),
        ("get", "/api/v1/products/{id}/reviews"),
        ("post", "/api/v1/products/{id}/reviews"),
        ("get", "/api/v1/categories"),
        ("post", "/api/v1/categories"),
        ("get", "/api/v1/cart"),
        ("post", "/api/v1/cart/items"),
        ("patch", "/api/v1/cart/items/{product_id}"),
        ("delete", "/api/v1/cart/items/{product_id}"),
        ("post", "/api/v1/cart/checkout"),
        ("get", "/api/v1/orders"),
        ("get", "/api/v1/orders/{id}"),
        ("post", "/api/v1/orders/{id}/cancel"),
        ("get", "/api/v1/orders/{id}/events"),
        ("get", "/api/v1/seller/orders"),
        ("get", "/api/v1/notifications"),
        ("post", "/api/v1/notifications/{id}/read"),
        ("get", "/api/v1/seller/products"),
        ("post", "/api/v1/shipments/{id}/ship"),
        ("post", "/api/v1/shipments/{id}/deliver"),
    ];
    let paths = doc["paths"].as_object().unwrap();
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, expected.len(), "every route and nothing else");
    for (method, path) in expected {
        let operation = &paths[path][method];
        let responses = operation["responses"].as_object().unwrap_or_else(|| panic!("{method} {path}"));
        let problems: Vec<&String> = responses
            .iter()
            .filter(|(status, r)| status.starts_with('4') && r["content"].get("application/problem+json").is_some())
            .map(|(status, _)| status)
            .collect();
        assert!(!problems.is_empty(), "{method} {path} documents no problem responses");
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());

    let docs = stack.request(Method::GET, "/docs").send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("/openapi.json"));
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let stack = Stack::start().await;
    for _ in 0..3 {
        problem(stack.request(Method::GET, "/api/v1/me").send().await.unwrap(), 401).await;
    }
    let text = stack.request(Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
    assert!(text.contains(r#"http_requests_total{method="GET",route="/api/v1/me",status="401"} 3"#), "{text}");
    assert!(
        text.contains(
            r#"http_request_duration_seconds_bucket{method="GET",route="/api/v1/me",status="401",le="+Inf"} 3"#
        )
    );
}
