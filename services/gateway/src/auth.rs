//! Bearer tokens: verified here against identity's public keys (its JWKS),
//! which the gateway caches and fetches again when a token names a key it
//! does not know, at most once per `refetch_interval` so forged key ids
//! cannot turn into a flood of fetches.
//!
//! A verified token is remembered until it expires, so a client's next
//! requests with it skip the signature check (the costliest step of a read).
//!
//! Only EdDSA is accepted; `none`, HMAC and every other algorithm are
//! refused before any key is looked at, as are tokens that are expired, not
//! yet valid, or issued by or for someone else.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use emporium_nats::Caller as ServiceCaller;
use emporium_schemas::commands::identity::{AccessClaims, GetKeys};
use emporium_schemas::{CommandEnvelope, Principal, Reply};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::sync::{Mutex, RwLock};

use crate::problem::Problem;

/// The verified public keys, by key id.
#[derive(Debug)]
pub struct KeySet {
    identity: ServiceCaller,
    keys: RwLock<Keys>,
    /// Serializes fetches, so a burst of unknown key ids costs one fetch.
    fetching: Mutex<Option<Instant>>,
    refetch_interval: Duration,
    validation: Validation,
    /// Tokens already verified: the principal and the token's `exp`.
    verified: std::sync::RwLock<HashMap<String, (Principal, i64)>>,
}

/// Verified tokens remembered at most; when full the memory starts over.
const VERIFIED_CAPACITY: usize = 100_000;

#[derive(Default)]
struct Keys {
    by_id: HashMap<String, DecodingKey>,
    /// As identity published it, for `/.well-known/jwks.json`.
    published: Option<JwkSet>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("ids", &self.by_id.keys().collect::<Vec<_>>()).finish()
    }
}

impl KeySet {
    pub fn new(identity: ServiceCaller, refetch_interval: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[AccessClaims::ISSUER]);
        validation.set_audience(&[AccessClaims::AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Self {
            identity,
            keys: RwLock::default(),
            fetching: Mutex::new(None),
            refetch_interval,
            validation,
            verified: std::sync::RwLock::default(),
        }
    }

    /// The JWK set as identity publishes it, fetched if not yet known.
    pub async fn published(&self) -> Result<JwkSet, Problem> {
        if let Some(set) = self.keys.read().await.published.clone() {
            return Ok(set);
        }
        self.refetch(true).await?;
        self.keys.read().await.published.clone().ok_or_else(Problem::internal)
    }

    /// Fetches the keys unless another fetch happened within the interval
    /// (`force` ignores the interval, for the first fetch).
    async fn refetch(&self, force: bool) -> Result<(), Problem> {
        let mut last = self.fetching.lock().await;
        if !force && last.is_some_and(|at| at.elapsed() < self.refetch_interval) {
            return Ok(());
        }
        let command = CommandEnvelope::new(None, None, GetKeys {});
        let set: JwkSet = match self.identity.call::<_, JwkSet>(&command, "jwks").await? {
            Reply::Ok(set) => set,
            Reply::Error(error) => return Err(error.into()),
        };
        let mut by_id = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk)) else {
                tracing::warn!("skipping a published key without an id or of an unusable kind");
                continue;
            };
            by_id.insert(kid, key);
        }
        tracing::info!(keys = by_id.len(), "fetched identity's public keys");
        *self.keys.write().await = Keys { by_id, published: Some(set) };
        *last = Some(Instant::now());
        Ok(())
    }

    /// The principal a bearer token stands for, or why it is refused.
    pub async fn verify(&self, token: &str) -> Result<Principal, Problem> {
        let now = chrono::Utc::now().timestamp();
        if let Ok(verified) = self.verified.read()
            && let Some((principal, exp)) = verified.get(token)
            && *exp > now
        {
            return Ok(*principal);
        }
        let (principal, exp) = self.verify_signed(token).await?;
        if let Ok(mut verified) = self.verified.write() {
            if verified.len() >= VERIFIED_CAPACITY {
                verified.clear();
            }
            verified.insert(token.to_owned(), (principal, exp));
        }
        Ok(principal)
    }

    /// The full check: header, key, signature, claims.
    async fn verify_signed(&self, token: &str) -> Result<(Principal, i64), Problem> {
        let refused = |why: &str| Problem::unauthenticated(format!("the bearer token is not valid: {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|_| refused("malformed"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(refused("algorithm not accepted"));
        }
        let kid = header.kid.ok_or_else(|| refused("no key id"))?;
        if !self.keys.read().await.by_id.contains_key(&kid) {
            let first = self.keys.read().await.published.is_none();
            self.refetch(first).await?;
        }
        let keys = self.keys.read().await;
        let key = keys.by_id.get(&kid).ok_or_else(|| refused("unknown key"))?;
        let claims = jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation)
            .map_err(|error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => refused("expired"),
                jsonwebtoken::errors::ErrorKind::InvalidSignature => refused("bad signature"),
                _ => refused("claims rejected"),
            })?
            .claims;
        Ok((Principal { user_id: claims.sub, role: claims.role }, claims.exp))
    }
}

/// Middleware: a request with `Authorization: Bearer …` gets its
/// [`Principal`] verified and attached, or is refused with 401. A request
/// without one passes on anonymous; routes that need a caller say so.
pub async fn authenticate(State(keys): State<Arc<KeySet>>, mut request: Request, next: Next) -> Response {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else { return next.run(request).await };
    let token = match value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
    {
        Some(token) => token.trim().to_owned(),
        None => return Problem::unauthenticated("expected Authorization: Bearer <token>").into_response(),
    };
    match keys.verify(&token).await {
        Ok(principal) => {
            tracing::Span::current().record("user.id", tracing::field::display(principal.user_id));
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(problem) => problem.into_response(),
    }
}
