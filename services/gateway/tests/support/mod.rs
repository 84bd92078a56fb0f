//! A whole front door for one test: a private NATS server (provisioned), a
//! fresh identity database, a Redis key prefix of its own, the identity
//! service and the gateway, both real, talking over real connections.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // each test binary uses part of it

use std::time::Duration;

use emporium_gateway::{Dependencies as GatewayDeps, Gateway, GatewaySettings};
use emporium_identity::{Dependencies as IdentityDeps, IdentitySettings};
use emporium_nats::{Topology, provision};
use emporium_platform::Readiness;
use emporium_platform::settings::Environment;
use emporium_schemas::CommandEnvelope;
use emporium_schemas::commands::identity::GetKeys;
use emporium_test_harness::{TestDatabase, TestNats, TestRedis};
use reqwest::{Method, RequestBuilder, Response};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const PASSWORD: &str = "correct horse battery";

pub struct Stack {
    pub base: String,
    pub http: reqwest::Client,
    /// The PEM identity signs with, so tests can forge and expire tokens.
    pub signing_pem: String,
    identity_settings: IdentitySettings,
    identity_stop: CancellationToken,
    identity: Option<JoinHandle<Result<(), emporium_identity::IdentityError>>>,
    gateway_stop: CancellationToken,
    pub nats: TestNats,
    pub redis: TestRedis,
    pub db: TestDatabase,
}

impl Stack {
    pub async fn start() -> Self {
        Self::with(|_, _| {}).await
    }

    /// A stack whose settings `adjust` may change first.
    pub async fn with(adjust: impl FnOnce(&mut IdentitySettings, &mut GatewaySettings)) -> Self {
        let nats = TestNats::start().await.unwrap();
        provision(&async_nats::jetstream::new(nats.client().clone()), &Topology::new(1, Vec::new())).await.unwrap();
        let redis = TestRedis::connect().await.unwrap();
        let db = TestDatabase::create().await.unwrap();

        let signing_pem = emporium_identity::tokens::SigningKey::generate_pem().unwrap();
        let mut identity_settings = IdentitySettings::from_source(|_| None, Environment::Development).unwrap();
        identity_settings.signing_key = Some(SecretString::from(signing_pem.clone()));
        let mut gateway_settings = GatewaySettings::from_source(|_| None).unwrap();
        // Tests play several clients from one machine.
        gateway_settings.trust_forwarded_for = true;
        gateway_settings.jwks_refetch = Duration::ZERO;
        adjust(&mut identity_settings, &mut gateway_settings);

        let gateway_deps = GatewayDeps {
            nats: nats.client().clone(),
            redis: redis.client().clone(),
            redis_prefix: redis.prefix().to_owned(),
        };
        let gateway =
            Gateway::bind("127.0.0.1:0".parse().unwrap(), &gateway_settings, gateway_deps, Readiness::default())
                .await
                .unwrap();
        let base = format!("http://{}", gateway.local_addr().unwrap());
        let gateway_stop = CancellationToken::new();
        tokio::spawn(gateway.run_until_stopped(gateway_stop.clone()));

        let mut stack = Self {
            base,
            http: reqwest::Client::new(),
            signing_pem,
            identity_settings,
            identity_stop: CancellationToken::new(),
            identity: None,
            gateway_stop,
            nats,
            redis,
            db,
        };
        stack.start_identity().await;
        stack
    }

    /// Starts identity and waits until it answers through the gateway.
    async fn start_identity(&mut self) {
        let deps = IdentityDeps {
            pool: self.db.pool().clone(),
            nats: self.nats.client().clone(),
            redis: self.redis.client().clone(),
            redis_prefix: self.redis.prefix().to_owned(),
            partitions: 1,
        };
        self.identity_stop = CancellationToken::new();
        self.identity = Some(tokio::spawn(emporium_identity::run(
            self.identity_settings.clone(),
            deps,
            self.identity_stop.clone(),
        )));
        // Any reply, even "overloaded", means identity is subscribed.
        let caller = emporium_nats::Caller::new(self.nats.client().clone(), Duration::from_millis(500));
        let up = emporium_test_harness::eventually(Duration::from_secs(20), || {
            let caller = caller.clone();
            async move {
                let probe = CommandEnvelope::new(None, None, GetKeys {});
                caller.call::<_, Value>(&probe, "probe").await.is_ok()
            }
        })
        .await;
        assert!(up, "identity never answered");
    }

    /// Stops identity and starts it again signing with `pem` (a key rotation).
    pub async fn restart_identity_with_key(&mut self, pem: String) {
        self.identity_stop.cancel();
        if let Some(identity) = self.identity.take() {
            identity.await.unwrap().unwrap();
        }
        self.identity_settings.signing_key = Some(SecretString::from(pem.clone()));
        self.signing_pem = pem;
        self.start_identity().await;
    }

    /// Stops identity for good (the gateway stays).
    pub async fn stop_identity(&mut self) {
        self.identity_stop.cancel();
        if let Some(identity) = self.identity.take() {
            identity.await.unwrap().unwrap();
        }
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    pub async fn register(&self, email: &str, role: &str) -> Response {
        let body = json!({ "email": email, "password": PASSWORD, "name": "Test User", "role": role });
        self.request(Method::POST, "/api/v1/auth/register").json(&body).send().await.unwrap()
    }

    pub async fn login_from(&self, email: &str, password: &str, ip: &str) -> Response {
        self.request(Method::POST, "/api/v1/auth/login")
            .header("x-forwarded-for", ip)
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap()
    }

    /// Registers `email` with `role` and signs in: the session's JSON.
    pub async fn signed_up(&self, email: &str, role: &str) -> Value {
        assert_eq!(self.register(email, role).await.status(), 201);
        self.signed_in(email, PASSWORD).await
    }

    pub async fn signed_in(&self, email: &str, password: &str) -> Value {
        let response = self.login_from(email, password, "192.0.2.1").await;
        assert_eq!(response.status(), 200, "login of {email}");
        response.json().await.unwrap()
    }

    pub async fn get_as(&self, token: &str, path: &str) -> Response {
        self.request(Method::GET, path).bearer_auth(token).send().await.unwrap()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.identity_stop.cancel();
        self.gateway_stop.cancel();
    }
}

/// Asserts `response` is a problem with `status` and returns its body.
pub async fn problem(response: Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    let body: Value = response.json().await.unwrap();
    assert!(body["type"].as_str().unwrap().starts_with("https://emporium.dev/problems/"), "{body}");
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string() && body["detail"].is_string(), "{body}");
    body
}

pub fn token(session: &Value, field: &str) -> String {
    session[field].as_str().unwrap().to_owned()
}
