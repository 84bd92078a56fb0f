//! `/products/{id}/reviews`: anyone reads a product's reviews, newest first;
//! a signed-in customer who received the product in a delivered order
//! reviews it once. The catalog decides who may and checks the values.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use emporium_schemas::commands::catalog::{AddReview, ListReviews, ReviewPage, ReviewView};
use emporium_schemas::values::ProductId;
use uuid::Uuid;

use super::ApiState;
use crate::extract::{AppJson, AppPath, Caller, QueryParams, RequestId};
use crate::problem::Problem;

/// A product's reviews, newest first.
#[utoipa::path(get, path = "/api/v1/products/{id}/reviews", tag = "catalog",
    params(
        ("id" = Uuid, Path, description = "The product"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("limit" = Option<u32>, Query, description = "Reviews per page, 1 to 100 (default 20)"),
    ),
    responses(
        (status = 200, description = "One page; pass `next_cursor` as `cursor` for the next", body = ReviewPage),
        (status = 404, description = "No such product on sale", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A parameter breaks a rule; `field` names it", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn reviews(
    State(api): State<ApiState>,
    request_id: RequestId,
    AppPath(id): AppPath<Uuid>,
    query: QueryParams,
) -> Result<axum::Json<ReviewPage>, Problem> {
    let list = ListReviews { product_id: ProductId::from_uuid(id), cursor: query.cursor(), limit: query.limit()? };
    Ok(axum::Json(api.call(None, &request_id, list).await?))
}

/// Review a product received in a delivered order, once; never one's own.
#[utoipa::path(post, path = "/api/v1/products/{id}/reviews", tag = "catalog", security(("bearer" = [])), request_body = AddReview,
    params(("id" = Uuid, Path, description = "The product")),
    responses(
        (status = 201, description = "Reviewed; the product's rating counts it", body = ReviewView),
        (status = 403, description = "No delivered order containing the product, or the product is the caller's own", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product on sale", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Reviewed by the caller already", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A value breaks a rule (rating 1 to 5, title and body not empty); `field` names it", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn add_review(
    State(api): State<ApiState>,
    request_id: RequestId,
    Caller(principal): Caller,
    AppPath(id): AppPath<Uuid>,
    AppJson(mut body): AppJson<AddReview>,
) -> Result<impl IntoResponse, Problem> {
    body.product_id = Some(ProductId::from_uuid(id));
    let review: ReviewView = api.call(Some(principal), &request_id, body).await?;
    Ok((StatusCode::CREATED, axum::Json(review)))
}
