//! `/orders`: what the caller bought (everything, for admins); one order's
//! status, payment, shipment and timeline; cancelling before shipment; and
//! `/seller/orders`, what a seller sold (their lines only).

use axum::extract::State;
use emporium_schemas::Principal;
use emporium_schemas::commands::order::{CancelOrder, GetOrder, ListOrders, OrderPage, OrderView};
use emporium_schemas::events::order::OrderStatus;
use emporium_schemas::values::{OrderId, Role};
use uuid::Uuid;

use super::ApiState;
use crate::extract::{AppPath, Caller, QueryParams, RequestId};
use crate::problem::Problem;

/// The orders the caller may see, newest first.
#[utoipa::path(get, path = "/api/v1/orders", tag = "orders", security(("bearer" = [])), params(ListOrders),
    responses(
        (status = 200, description = "One page; pass `next_cursor` as `cursor` for the next", body = OrderPage),
        (status = 422, description = "A parameter breaks a rule; `field` names it", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(api): State<ApiState>,
    request_id: RequestId,
    Caller(principal): Caller,
    params: QueryParams,
) -> Result<axum::Json<OrderPage>, Problem> {
    let query = list_from(&params)?;
    Ok(axum::Json(api.call(Some(principal), &request_id, query).await?))
}

/// The seller's sales: orders holding their products, their lines only, newest first.
#[utoipa::path(get, path = "/api/v1/seller/orders", tag = "orders", security(("bearer" = [])), params(ListOrders),
    responses(
        (status = 200, description = "One page; pass `next_cursor` as `cursor` for the next", body = OrderPage),
        (status = 403, description = "Not a seller", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A parameter breaks a rule; `field` names it", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn sales(
    State(api): State<ApiState>,
    request_id: RequestId,
    caller: Caller,
    params: QueryParams,
) -> Result<axum::Json<OrderPage>, Problem> {
    let principal = caller.require(&[Role::Seller, Role::Admin])?;
    let query = ListOrders { sales: true, ..list_from(&params)? };
    Ok(axum::Json(api.call(Some(principal), &request_id, query).await?))
}

/// Reads the query parameters one by one, so a bad one is named.
fn list_from(query: &QueryParams) -> Result<ListOrders, Problem> {
    Ok(ListOrders {
        sales: false,
        status: query.one_of::<OrderStatus>("status", "pending, reserved, confirmed, shipped, delivered, cancelled")?,
        cursor: query.cursor(),
        limit: query.limit()?,
    })
}

/// One order as the caller may see it (404 if it is not theirs to see).
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The order")),
    responses(
        (status = 200, description = "The order", body = OrderView),
        (status = 404, description = "No such order, or not yours", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn order(
    State(api): State<ApiState>,
    request_id: RequestId,
    Caller(principal): Caller,
    AppPath(id): AppPath<Uuid>,
) -> Result<axum::Json<OrderView>, Problem> {
    Ok(axum::Json(read(&api, principal, OrderId::from_uuid(id), &request_id).await?))
}

/// Reads `order` from its actor, as `principal` may see it (also for its live stream).
pub(super) async fn read(
    api: &ApiState,
    principal: Principal,
    order: OrderId,
    request_id: &RequestId,
) -> Result<OrderView, Problem> {
    api.call_entity(principal, *order.as_uuid(), request_id, GetOrder { order_id: order }).await
}

/// Cancel an order before it ships (its customer, or an admin): stock is
/// released and the payment voided or refunded.
#[utoipa::path(post, path = "/api/v1/orders/{id}/cancel", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The order")),
    responses(
        (status = 200, description = "The cancelled order", body = OrderView),
        (status = 403, description = "Not the order's customer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or not yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already shipped", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn cancel(
    State(api): State<ApiState>,
    request_id: RequestId,
    Caller(principal): Caller,
    AppPath(id): AppPath<Uuid>,
) -> Result<axum::Json<OrderView>, Problem> {
    let command = CancelOrder { order_id: OrderId::from_uuid(id) };
    Ok(axum::Json(api.call_entity(principal, id, &request_id, command).await?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn given_bad_parameters_when_read_then_each_is_named() {
        for (name, value) in [("status", "lost"), ("limit", "many"), ("limit", "-3")] {
            let problem = list_from(&QueryParams::of(&[(name, value)])).unwrap_err();
            assert_eq!(problem.field.as_deref(), Some(name), "{name}={value}");
        }
        let query = list_from(&QueryParams::of(&[("status", "confirmed"), ("limit", "5")])).unwrap();
        assert_eq!((query.status, query.limit), (Some(OrderStatus::Confirmed), Some(5)));
    }
}
