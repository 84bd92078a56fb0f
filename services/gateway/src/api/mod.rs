//! The public API under `/api/v1`: each handler turns an HTTP request into
//! one command to the owning service over NATS and its reply into HTTP.

pub mod auth;
pub mod catalog;
pub mod me;

use axum::Router;
use axum::routing::{delete, get, post, put};
use emporium_nats::Caller as ServiceCaller;
use emporium_schemas::{Command, CommandEnvelope, Principal, Reply};
use serde::de::DeserializeOwned;

use crate::extract::RequestId;
use crate::problem::Problem;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub services: ServiceCaller,
}

impl ApiState {
    /// Sends `data` as a command from `principal` and returns its answer, or
    /// the service's refusal as a problem.
    pub async fn call<C: Command, A: DeserializeOwned>(
        &self,
        principal: Option<Principal>,
        request_id: &RequestId,
        data: C,
    ) -> Result<A, Problem> {
        let command = CommandEnvelope::new(None, principal, data);
        match self.services.call::<C, A>(&command, &request_id.0).await? {
            Reply::Ok(answer) => Ok(answer),
            Reply::Error(error) => Err(error.into()),
        }
    }
}

/// Every `/api/v1` route.
pub fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/auth/register", post(auth::register))
        .route("/api/v1/auth/login", post(auth::login))
        .route("/api/v1/auth/refresh", post(auth::refresh))
        .route("/api/v1/auth/logout", post(auth::logout))
        .route("/api/v1/me", get(me::profile).patch(me::update_profile))
        .route("/api/v1/me/addresses", get(me::addresses).post(me::add_address))
        .route("/api/v1/me/addresses/{id}", delete(me::delete_address))
        .route("/api/v1/users/{id}", get(me::user))
        .route("/api/v1/products", get(catalog::search).post(catalog::create_product))
        .route(
            "/api/v1/products/{id}",
            get(catalog::product).patch(catalog::update_product).delete(catalog::delete_product),
        )
        .route("/api/v1/products/{id}/stock", put(catalog::set_stock))
        .route("/api/v1/categories", get(catalog::categories).post(catalog::create_category))
        .with_state(state)
}
