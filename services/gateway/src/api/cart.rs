//! `/cart`: the caller's cart (one actor per cart, keyed by the user) and
//! its checkout, which answers 202 with the order it created.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use emporium_schemas::commands::cart::{AddItem, CartView, Checkout, GetCart, RemoveItem, SetQuantity};
use emporium_schemas::commands::order::OrderAccepted;
use emporium_schemas::values::{Address, PaymentMethod, ProductId, Quantity, Text};
use emporium_schemas::{Command, Principal, ReplyError};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;
use uuid::Uuid;

use super::ApiState;
use crate::extract::{AppJson, AppPath, Caller, RequestId};
use crate::problem::Problem;

/// A product to add to the cart (or more of one already there).
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewLine {
    #[schema(value_type = String, format = Uuid)]
    pub product_id: ProductId,
    #[schema(value_type = u32, minimum = 1, maximum = 99)]
    pub quantity: Quantity,
}

/// A line's new quantity.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LineQuantity {
    #[schema(value_type = u32, minimum = 1, maximum = 99)]
    pub quantity: Quantity,
}

/// Where to ship and how to pay.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CheckoutRequest {
    pub shipping_address: Address,
    /// A test token of the simulated provider, e.g. `tok_visa`.
    #[schema(value_type = String, example = "tok_visa")]
    pub payment_method: PaymentMethod,
}

/// Sends `command` to the caller's own cart (keyed by their user id).
async fn own_cart<C: Command, A: DeserializeOwned>(
    api: &ApiState,
    principal: Principal,
    request_id: &RequestId,
    command: C,
) -> Result<A, Problem> {
    let key = *principal.user_id.as_uuid();
    api.call_entity(principal, key, request_id, command).await
}

/// The caller's cart.
#[utoipa::path(get, path = "/api/v1/cart", tag = "cart", security(("bearer" = [])),
    responses(
        (status = 200, description = "The cart (empty if never used)", body = CartView),
    ))]
pub async fn cart(
    State(api): State<ApiState>,
    request_id: RequestId,
    Caller(principal): Caller,
) -> Result<axum::Json<CartView>, Problem> {
    Ok(axum::Json(own_cart(&api, principal, &request_id, GetCart {}).await?))
}

/// Add a product, priced as the catalog prices it now.
#[utoipa::path(post, path = "/api/v1/cart/items", tag = "cart", security(("bearer" = [])), request_body = NewLine,
    responses(
        (status = 200, description = "The cart with the line", body = CartView),
        (status = 409, description = "A checkout of this cart is in progress", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown product, a quantity beyond 99 or more than 50 lines", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn add_item(
    State(api): State<ApiState>,
    request_id: RequestId,
    Caller(principal): Caller,
    AppJson(line): AppJson<NewLine>,
) -> Result<axum::Json<CartView>, Problem> {
    let command = AddItem { product_id: line.product_id, quantity: line.quantity };
    Ok(axum::Json(own_cart(&api, principal, &request_id, command).await?))
}

/// Change a line's quantity.
#[utoipa::path(patch, path = "/api/v1/cart/items/{product_id}", tag = "cart", security(("bearer" = [])),
    params(("product_id" = Uuid, Path, description = "The product on the line")),
    request_body = LineQuantity,
    responses(
        (status = 200, description = "The changed cart", body = CartView),
        (status = 404, description = "No such line", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A checkout of this cart is in progress", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A quantity beyond 99", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn set_quantity(
    State(api): State<ApiState>,
    request_id: RequestId,
    Caller(principal): Caller,
    AppPath(product_id): AppPath<Uuid>,
    AppJson(body): AppJson<LineQuantity>,
) -> Result<axum::Json<CartView>, Problem> {
    let command = SetQuantity { product_id: ProductId::from_uuid(product_id), quantity: body.quantity };
    Ok(axum::Json(own_cart(&api, principal, &request_id, command).await?))
}

/// Take a line out.
#[utoipa::path(delete, path = "/api/v1/cart/items/{product_id}", tag = "cart", security(("bearer" = [])),
    params(("product_id" = Uuid, Path, description = "The product on the line")),
    responses(
        (status = 200, description = "The cart without the line", body = CartView),
        (status = 404, description = "No such line", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A checkout of this cart is in progress", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn remove_item(
    State(api): State<ApiState>,
    request_id: RequestId,
    Caller(principal): Caller,
    AppPath(product_id): AppPath<Uuid>,
) -> Result<axum::Json<CartView>, Problem> {
    let command = RemoveItem { product_id: ProductId::from_uuid(product_id) };
    Ok(axum::Json(own_cart(&api, principal, &request_id, command).await?))
}

/// The `Idempotency-Key` header, required on checkout: it names the order.
fn idempotency_key(headers: &HeaderMap) -> Result<Text, Problem> {
    let Some(value) = headers.get("idempotency-key") else {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "idempotency-key-required",
            "checkout needs an Idempotency-Key header; retry with the same key to find the same order",
        ));
    };
    value
        .to_str()
        .ok()
        .and_then(|key| Text::try_from(key.to_owned()).ok())
        .ok_or_else(|| Problem::from(ReplyError::invalid("Idempotency-Key", "must be 1 to 200 printable characters")))
}

/// Check the cart out: the order is created from it (priced by the catalog)
/// and followed at `/orders/{order_id}`. The same `Idempotency-Key` again
/// answers with the same order; with another body, 422.
#[utoipa::path(post, path = "/api/v1/cart/checkout", tag = "cart", security(("bearer" = [])),
    request_body = CheckoutRequest,
    params(("Idempotency-Key" = String, Header, description = "Names the checkout: a retry with it finds the same order")),
    responses(
        (status = 202, description = "The order exists; its checkout goes on", body = OrderAccepted),
        (status = 400, description = "No Idempotency-Key, or a malformed JSON body", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another checkout of this cart is in progress", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An empty cart, the key reused with another body, or a product no longer sold", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The order could not be confirmed created; retry with the same key", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn checkout(
    State(api): State<ApiState>,
    request_id: RequestId,
    Caller(principal): Caller,
    headers: HeaderMap,
    AppJson(body): AppJson<CheckoutRequest>,
) -> Result<impl IntoResponse, Problem> {
    let idempotency_key = idempotency_key(&headers)?;
    let command =
        Checkout { idempotency_key, shipping_address: body.shipping_address, payment_method: body.payment_method };
    let accepted: OrderAccepted = own_cart(&api, principal, &request_id, command).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(accepted)))
}
