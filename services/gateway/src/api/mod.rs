//! The public API under `/api/v1`: each handler turns an HTTP request into
//! one command to the owning service over NATS and its reply into HTTP.

pub mod auth;
pub mod cart;
pub mod catalog;
pub mod live;
pub mod me;
pub mod notifications;
pub mod orders;
pub mod reviews;
pub mod shipments;

use axum::Router;
use axum::routing::{delete, get, patch, post, put};
use emporium_nats::Caller as ServiceCaller;
use emporium_schemas::{Command, CommandEnvelope, EntityKey, Principal, Reply};
use serde::de::DeserializeOwned;

use crate::extract::RequestId;
use crate::problem::Problem;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub services: ServiceCaller,
    pub streams: live::Streams,
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
        self.send(CommandEnvelope::new(None, principal, data), request_id).await
    }

    /// Like [`call`](Self::call), for an entity's command: it reaches the
    /// owner of `key`'s partition (one cart, one order).
    pub async fn call_entity<C: Command, A: DeserializeOwned>(
        &self,
        principal: Principal,
        key: impl Into<EntityKey>,
        request_id: &RequestId,
        data: C,
    ) -> Result<A, Problem> {
        self.send(CommandEnvelope::new(Some(key.into()), Some(principal), data), request_id).await
    }

    async fn send<C: Command, A: DeserializeOwned>(
        &self,
        command: CommandEnvelope<C>,
        request_id: &RequestId,
    ) -> Result<A, Problem> {
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
        .route("/api/v1/products/{id}/reviews", get(reviews::reviews).post(reviews::add_review))
        .route("/api/v1/categories", get(catalog::categories).post(catalog::create_category))
        .route("/api/v1/cart", get(cart::cart))
        .route("/api/v1/cart/items", post(cart::add_item))
        .route("/api/v1/cart/items/{product_id}", patch(cart::set_quantity).delete(cart::remove_item))
        .route("/api/v1/cart/checkout", post(cart::checkout))
        .route("/api/v1/orders", get(orders::list))
        .route("/api/v1/orders/{id}", get(orders::order))
        .route("/api/v1/orders/{id}/cancel", post(orders::cancel))
        .route("/api/v1/orders/{id}/events", get(live::order_events))
        .route("/api/v1/seller/orders", get(orders::sales))
        .route("/api/v1/notifications", get(notifications::list))
        .route("/api/v1/notifications/{id}/read", post(notifications::read))
        .route("/api/v1/seller/products", get(catalog::seller_products))
        .route("/api/v1/shipments/{id}/ship", post(shipments::ship))
        .route("/api/v1/shipments/{id}/deliver", post(shipments::deliver))
        .with_state(state)
}
