//! Identity through the gateway, over real HTTP: every auth flow, refresh
//! rotation and reuse, lockout, forged, expired and alg-none tokens, roles.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{TimeDelta, Utc};
use emporium_identity::tokens::SigningKey;
use emporium_schemas::values::{Role, UserId};
use emporium_system::{PASSWORD, Stack, problem, token};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn a_customer_registers_signs_in_reads_and_renames_themself_refreshes_and_signs_out() {
    let stack = Stack::start().await;

    let registered = stack.register("  Ada@Example.COM ", "customer").await;
    assert_eq!(registered.status(), 201);
    let profile: Value = registered.json().await.unwrap();
    assert_eq!(profile["email"], "ada@example.com", "stored normalized");
    assert_eq!(profile["role"], "customer");
    let published = user_registered(&stack, profile["id"].as_str().unwrap()).await;
    assert_eq!(published["data"]["email"], "ada@example.com");

    let session = stack.signed_in("ADA@example.com", PASSWORD).await;
    assert_eq!(session["token_type"], "Bearer");
    assert_eq!(session["expires_in"], 900);
    let access = token(&session, "access_token");

    let me: Value = stack.get_as(&access, "/api/v1/me").await.json().await.unwrap();
    assert_eq!(me["id"], profile["id"]);

    let renamed = stack
        .request(Method::PATCH, "/api/v1/me")
        .bearer_auth(&access)
        .json(&json!({ "name": "Ada King" }))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), 200);
    assert_eq!(renamed.json::<Value>().await.unwrap()["name"], "Ada King");

    let refreshed = refresh(&stack, &token(&session, "refresh_token")).await;
    assert_eq!(refreshed.status(), 200);
    let next: Value = refreshed.json().await.unwrap();
    assert_ne!(next["refresh_token"], session["refresh_token"], "rotated");
    assert_eq!(stack.get_as(&token(&next, "access_token"), "/api/v1/me").await.status(), 200);

    let logout = stack
        .request(Method::POST, "/api/v1/auth/logout")
        .json(&json!({ "refresh_token": next["refresh_token"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    problem(refresh(&stack, &token(&next, "refresh_token")).await, 401).await;
}

/// The `identity.user_registered` event of `user`, once the outbox relay has published it.
async fn user_registered(stack: &Stack, user: &str) -> Value {
    let stream = async_nats::jetstream::new(stack.nats.client().clone()).get_stream("EVT_IDENTITY").await.unwrap();
    let subject = format!("evt.identity.user_registered.v1.p00.{user}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Ok(message) = stream.get_last_raw_message_by_subject(&subject).await {
            return serde_json::from_slice(&message.payload).unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "no {subject}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn refresh(stack: &Stack, refresh_token: &str) -> reqwest::Response {
    stack
        .request(Method::POST, "/api/v1/auth/refresh")
        .json(&json!({ "refresh_token": refresh_token }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_reused_refresh_token_ends_its_whole_session() {
    let stack = Stack::start().await;
    let first = stack.signed_up("reuse@example.com", "customer").await;
    let second: Value = refresh(&stack, &token(&first, "refresh_token")).await.json().await.unwrap();

    // Someone replays the first token: refused, and the family is revoked…
    let replay = problem(refresh(&stack, &token(&first, "refresh_token")).await, 401).await;
    assert!(replay["detail"].as_str().unwrap().contains("already used"), "{replay}");
    // …so the legitimate holder's current token no longer works either.
    problem(refresh(&stack, &token(&second, "refresh_token")).await, 401).await;
    // Another session of the same account is untouched.
    let other = stack.signed_in("reuse@example.com", PASSWORD).await;
    assert_eq!(refresh(&stack, &token(&other, "refresh_token")).await.status(), 200);
}

#[tokio::test]
async fn an_email_is_taken_whatever_its_case() {
    let stack = Stack::start().await;
    assert_eq!(stack.register("grace@example.com", "seller").await.status(), 201);
    let body = problem(stack.register("Grace@EXAMPLE.com", "customer").await, 409).await;
    assert!(body["detail"].as_str().unwrap().contains("exists"));
}

#[tokio::test]
async fn registration_refuses_bad_values_naming_the_field() {
    let stack = Stack::start().await;
    for (body, field) in [
        (json!({ "email": "not-an-email", "password": PASSWORD, "name": "A" }), "email"),
        (json!({ "email": "a@example.com", "password": "short", "name": "A" }), "password"),
        (json!({ "email": "a@example.com", "password": "password123", "name": "A" }), "password"),
        (json!({ "email": "a@example.com", "password": PASSWORD, "name": "   " }), "name"),
        (json!({ "email": "a@example.com", "password": PASSWORD, "name": "A", "role": "admin" }), "role"),
    ] {
        let response = stack.request(Method::POST, "/api/v1/auth/register").json(&body).send().await.unwrap();
        let problem = problem(response, 422).await;
        assert_eq!(problem["field"], field, "{body}: {problem}");
    }
    // A missing field is refused by the gateway itself, naming it too.
    let missing = stack
        .request(Method::POST, "/api/v1/auth/register")
        .json(&json!({ "email": "a@example.com", "name": "A" }))
        .send()
        .await
        .unwrap();
    let body = problem(missing, 422).await;
    assert!(body["detail"].as_str().unwrap().contains("password"), "{body}");
}

#[tokio::test]
async fn five_failed_logins_from_one_client_lock_that_client_out_of_that_account() {
    let stack = Stack::start().await;
    assert_eq!(stack.register("locked@example.com", "customer").await.status(), 201);
    for attempt in 1..=5 {
        let response = stack.login_from("locked@example.com", "wrong password!", "198.51.100.7").await;
        assert_eq!(response.status(), 401, "attempt {attempt}");
    }
    // Now even the right password is refused from that client, with a time to come back.
    let locked = stack.login_from("locked@example.com", PASSWORD, "198.51.100.7").await;
    let retry_after: u64 = locked.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    problem(locked, 429).await;
    // Another client still signs in, and other accounts are not affected.
    assert_eq!(stack.login_from("locked@example.com", PASSWORD, "203.0.113.9").await.status(), 200);
}

#[tokio::test]
async fn the_account_ceiling_holds_against_failures_from_many_clients() {
    let stack = Stack::with(|identity, _| identity.lockout.per_account.failures = 6).await;
    assert_eq!(stack.register("spread@example.com", "customer").await.status(), 201);
    for client in 1..=6 {
        let ip = format!("198.51.100.{client}");
        assert_eq!(stack.login_from("spread@example.com", "wrong password!", &ip).await.status(), 401);
    }
    problem(stack.login_from("spread@example.com", PASSWORD, "203.0.113.50").await, 429).await;
}

#[tokio::test]
async fn requests_without_a_valid_token_are_refused() {
    let stack = Stack::start().await;
    let session = stack.signed_up("tokens@example.com", "customer").await;
    let access = token(&session, "access_token");
    let me: Value = stack.get_as(&access, "/api/v1/me").await.json().await.unwrap();
    let user = UserId::try_from(me["id"].as_str().unwrap().to_owned()).unwrap();
    let key = SigningKey::from_pem(stack.signing_pem.as_bytes()).unwrap();
    let now = Utc::now();

    let anonymous = stack.request(Method::GET, "/api/v1/me").send().await.unwrap();
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    problem(anonymous, 401).await;

    let expired = key.issue(user, Role::Customer, now - TimeDelta::hours(2), now - TimeDelta::hours(1)).unwrap();
    let body = problem(stack.get_as(&expired, "/api/v1/me").await, 401).await;
    assert!(body["detail"].as_str().unwrap().contains("expired"), "{body}");

    // Same key id, other key: a forgery.
    let other = SigningKey::from_pem(SigningKey::generate_pem().unwrap().as_bytes()).unwrap();
    let forged = other.issue(user, Role::Admin, now, now + TimeDelta::minutes(5)).unwrap();
    let forged = with_kid(&forged, key.kid());
    problem(stack.get_as(&forged, "/api/v1/me").await, 401).await;

    // The genuine token's claims under `alg: none`, signature stripped.
    let claims = access.split('.').nth(1).unwrap();
    let none_header = URL_SAFE_NO_PAD.encode(json!({ "alg": "none", "typ": "JWT", "kid": key.kid() }).to_string());
    problem(stack.get_as(&format!("{none_header}.{claims}."), "/api/v1/me").await, 401).await;

    // HS256 "signed" with the public key: the classic algorithm confusion.
    let hs_header = URL_SAFE_NO_PAD.encode(json!({ "alg": "HS256", "typ": "JWT", "kid": key.kid() }).to_string());
    problem(stack.get_as(&format!("{hs_header}.{claims}.c2lnbmF0dXJl"), "/api/v1/me").await, 401).await;

    // A tampered payload under the genuine signature.
    let mut parts: Vec<String> = access.split('.').map(str::to_owned).collect();
    let mut payload: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    payload["role"] = json!("admin");
    parts[1] = URL_SAFE_NO_PAD.encode(payload.to_string());
    problem(stack.get_as(&parts.join("."), "/api/v1/me").await, 401).await;

    problem(stack.get_as("not.a.jwt", "/api/v1/me").await, 401).await;
    let basic = stack.request(Method::GET, "/api/v1/me").header("authorization", "Basic YTpi").send().await.unwrap();
    problem(basic, 401).await;
}

/// `token` with its header's `kid` replaced (the signature no longer matches).
fn with_kid(token: &str, kid: &str) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[0]).unwrap()).unwrap();
    header["kid"] = json!(kid);
    parts[0] = URL_SAFE_NO_PAD.encode(header.to_string());
    parts.join(".")
}

#[tokio::test]
async fn the_jwks_publishes_the_signing_key_and_a_new_key_is_picked_up_by_its_id() {
    let mut stack = Stack::start().await;
    let first = SigningKey::from_pem(stack.signing_pem.as_bytes()).unwrap();
    let jwks: Value = stack.request(Method::GET, "/.well-known/jwks.json").send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"][0]["kid"], first.kid());
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    assert!(jwks["keys"][0].get("d").is_none(), "no private part");

    let session = stack.signed_up("rotate@example.com", "customer").await;
    assert_eq!(stack.get_as(&token(&session, "access_token"), "/api/v1/me").await.status(), 200);

    // Identity restarts with a new key; the gateway has only the old one cached.
    stack.restart_identity_with_key(SigningKey::generate_pem().unwrap()).await;
    let session = stack.signed_in("rotate@example.com", PASSWORD).await;
    assert_eq!(stack.get_as(&token(&session, "access_token"), "/api/v1/me").await.status(), 200);
}

#[tokio::test]
async fn only_admins_read_other_accounts_and_nobody_registers_as_one() {
    let stack = Stack::start().await;
    let customer = stack.signed_up("customer@example.com", "customer").await;
    let seller = stack.signed_up("seller@example.com", "seller").await;
    let customer_me: Value = stack.get_as(&token(&customer, "access_token"), "/api/v1/me").await.json().await.unwrap();
    let path = format!("/api/v1/users/{}", customer_me["id"].as_str().unwrap());

    problem(stack.get_as(&token(&seller, "access_token"), &path).await, 403).await;
    problem(stack.get_as(&token(&customer, "access_token"), &path).await, 403).await;
    problem(stack.request(Method::GET, &path).send().await.unwrap(), 401).await;

    // The bootstrap admin, from configuration.
    let admin = stack.signed_in("admin@emporium.test", "emporium-admin").await;
    let admin_token = token(&admin, "access_token");
    let me: Value = stack.get_as(&admin_token, "/api/v1/me").await.json().await.unwrap();
    assert_eq!(me["role"], "admin");
    let read = stack.get_as(&admin_token, &path).await;
    assert_eq!(read.status(), 200);
    assert_eq!(read.json::<Value>().await.unwrap()["email"], "customer@example.com");
    let nobody = format!("/api/v1/users/{}", uuid::Uuid::now_v7());
    problem(stack.get_as(&admin_token, &nobody).await, 404).await;

    problem(stack.register("wannabe@example.com", "admin").await, 422).await;
}

#[tokio::test]
async fn addresses_keep_exactly_one_default_and_belong_to_their_owner() {
    let stack = Stack::start().await;
    let owner = token(&stack.signed_up("home@example.com", "customer").await, "access_token");
    let stranger = token(&stack.signed_up("stranger@example.com", "customer").await, "access_token");
    let add = |name: &str, default: bool| {
        let body = json!({ "name": name, "line1": "1 Main St", "city": "Springfield", "postal_code": "12345",
                           "country": "US", "default": default });
        stack.request(Method::POST, "/api/v1/me/addresses").bearer_auth(&owner).json(&body).send()
    };
    let first: Value = add("Home", false).await.unwrap().json().await.unwrap();
    assert_eq!(first["default"], true, "the first address is the default");
    let second = add("Work", true).await.unwrap();
    assert_eq!(second.status(), 201);
    let second: Value = second.json().await.unwrap();

    let list: Vec<Value> = stack.get_as(&owner, "/api/v1/me/addresses").await.json().await.unwrap();
    let defaults: Vec<&Value> = list.iter().filter(|a| a["default"] == true).collect();
    assert_eq!(defaults.len(), 1);
    assert_eq!(list[0]["id"], second["id"], "the default comes first");

    let delete = |token: &str, id: &str| {
        stack.request(Method::DELETE, &format!("/api/v1/me/addresses/{id}")).bearer_auth(token.to_owned()).send()
    };
    problem(delete(&stranger, second["id"].as_str().unwrap()).await.unwrap(), 404).await;
    assert_eq!(delete(&owner, second["id"].as_str().unwrap()).await.unwrap().status(), 204);
    let list: Vec<Value> = stack.get_as(&owner, "/api/v1/me/addresses").await.json().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["default"], true, "the remaining address became the default");

    let bad = json!({ "name": "X", "line1": "1", "city": "C", "postal_code": "1", "country": "usa" });
    let refused =
        stack.request(Method::POST, "/api/v1/me/addresses").bearer_auth(&owner).json(&bad).send().await.unwrap();
    assert_eq!(problem(refused, 422).await["field"], "country");
}
