//! `/products`, `/categories`, `/products/{id}/stock` and `/seller/products`:
//! the catalog is public to read; sellers sell, owners (and admins) change
//! and stock what they sell and list it, admins shape the category tree.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use emporium_schemas::commands::catalog::{
    CategoryView, CreateCategory, CreateProduct, DeleteProduct, GetProduct, ListCategories, ProductPage, ProductView,
    SearchProducts, SortOrder, UpdateProduct,
};
use emporium_schemas::commands::inventory::{ProductStock, SetStock};
use emporium_schemas::values::{CategoryId, ProductId, Role, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::ApiState;
use crate::extract::{AppJson, AppPath, Caller, QueryParams, RequestId};
use crate::problem::Problem;

const SELLERS: &[Role] = &[Role::Seller, Role::Admin];

/// Search and browse the products on sale.
#[utoipa::path(get, path = "/api/v1/products", tag = "catalog", params(SearchProducts),
    responses(
        (status = 200, description = "One page; pass `next_cursor` as `cursor` for the next", body = ProductPage),
        (status = 422, description = "A parameter breaks a rule; `field` names it", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn search(
    State(api): State<ApiState>,
    request_id: RequestId,
    params: QueryParams,
) -> Result<axum::Json<ProductPage>, Problem> {
    let search = search_from(&params)?;
    Ok(axum::Json(api.call(None, &request_id, search).await?))
}

/// The caller's own products on sale, with their stock, newest first (sellers
/// and admins); the filters and sorts of `/products` apply, `seller` aside.
#[utoipa::path(get, path = "/api/v1/seller/products", tag = "catalog", security(("bearer" = [])), params(SearchProducts),
    responses(
        (status = 200, description = "One page; pass `next_cursor` as `cursor` for the next", body = ProductPage),
        (status = 403, description = "Not a seller or admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A parameter breaks a rule; `field` names it", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn seller_products(
    State(api): State<ApiState>,
    request_id: RequestId,
    caller: Caller,
    params: QueryParams,
) -> Result<axum::Json<ProductPage>, Problem> {
    let principal = caller.require(SELLERS)?;
    // Always the caller's own: a `seller` parameter cannot widen it.
    let search = SearchProducts { seller: Some(principal.user_id), ..search_from(&params)? };
    Ok(axum::Json(api.call(Some(principal), &request_id, search).await?))
}

/// Reads the query parameters one by one, so a bad one is named.
fn search_from(query: &QueryParams) -> Result<SearchProducts, Problem> {
    let uuid = |name: &str| query.parsed::<Uuid>(name, "a UUID");
    Ok(SearchProducts {
        // The catalog trims the words and ignores blank ones itself.
        q: query.text("q").map(str::to_owned),
        category: uuid("category")?.map(CategoryId::from_uuid),
        min_price: query.parsed("min_price", "an integer amount in minor units")?,
        max_price: query.parsed("max_price", "an integer amount in minor units")?,
        seller: uuid("seller")?.map(UserId::from_uuid),
        in_stock: query.parsed("in_stock", "true or false")?,
        sort: query.one_of::<SortOrder>("sort", "relevance, price_asc, price_desc, newest, rating")?,
        cursor: query.cursor(),
        limit: query.limit()?,
    })
}

/// One product, with its stock and rating.
#[utoipa::path(get, path = "/api/v1/products/{id}", tag = "catalog",
    params(("id" = Uuid, Path, description = "The product")),
    responses(
        (status = 200, description = "The product", body = ProductView),
        (status = 404, description = "No such product on sale", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn product(
    State(api): State<ApiState>,
    request_id: RequestId,
    AppPath(id): AppPath<Uuid>,
) -> Result<axum::Json<ProductView>, Problem> {
    let query = GetProduct { product_id: ProductId::from_uuid(id) };
    Ok(axum::Json(api.call(None, &request_id, query).await?))
}

/// Put a product on sale (sellers and admins); the caller is its seller.
#[utoipa::path(post, path = "/api/v1/products", tag = "catalog", security(("bearer" = [])), request_body = CreateProduct,
    responses(
        (status = 201, description = "On sale, with no stock yet", body = ProductView),
        (status = 403, description = "Not a seller or admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A value breaks a rule; `field` names it", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_product(
    State(api): State<ApiState>,
    request_id: RequestId,
    caller: Caller,
    AppJson(body): AppJson<CreateProduct>,
) -> Result<impl IntoResponse, Problem> {
    let principal = caller.require(SELLERS)?;
    let product: ProductView = api.call(Some(principal), &request_id, body).await?;
    Ok((StatusCode::CREATED, axum::Json(product)))
}

/// Change a product (its seller or an admin); absent fields stay as they are.
#[utoipa::path(patch, path = "/api/v1/products/{id}", tag = "catalog", security(("bearer" = [])), request_body = UpdateProduct,
    params(("id" = Uuid, Path, description = "The product")),
    responses(
        (status = 200, description = "The changed product", body = ProductView),
        (status = 403, description = "Not the product's seller or an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product on sale", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A value breaks a rule; `field` names it", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn update_product(
    State(api): State<ApiState>,
    request_id: RequestId,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
    AppJson(mut body): AppJson<UpdateProduct>,
) -> Result<axum::Json<ProductView>, Problem> {
    let principal = caller.require(SELLERS)?;
    body.product_id = Some(ProductId::from_uuid(id));
    Ok(axum::Json(api.call(Some(principal), &request_id, body).await?))
}

/// Take a product off sale (its seller or an admin).
#[utoipa::path(delete, path = "/api/v1/products/{id}", tag = "catalog", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The product")),
    responses(
        (status = 204, description = "No longer on sale"),
        (status = 403, description = "Not the product's seller or an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product on sale", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_product(
    State(api): State<ApiState>,
    request_id: RequestId,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
) -> Result<StatusCode, Problem> {
    let principal = caller.require(SELLERS)?;
    let () = api.call(Some(principal), &request_id, DeleteProduct { product_id: ProductId::from_uuid(id) }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How many units are on hand.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct StockQuantity {
    #[schema(example = 25)]
    pub quantity: u32,
}

/// Set how many units are on hand (the product's seller or an admin);
/// never below what orders hold (409).
#[utoipa::path(put, path = "/api/v1/products/{id}/stock", tag = "catalog", security(("bearer" = [])), request_body = StockQuantity,
    params(("id" = Uuid, Path, description = "The product")),
    responses(
        (status = 200, description = "The stock now", body = ProductStock),
        (status = 403, description = "Not the product's seller or an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product on sale", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Below what orders hold", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a whole number of units", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The product is brand new; retry after `Retry-After`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn set_stock(
    State(api): State<ApiState>,
    request_id: RequestId,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
    AppJson(body): AppJson<StockQuantity>,
) -> Result<axum::Json<ProductStock>, Problem> {
    let principal = caller.require(SELLERS)?;
    let product_id = ProductId::from_uuid(id);
    let command = SetStock { product_id, on_hand: body.quantity };
    match api.call(Some(principal), &request_id, command).await {
        // Inventory learns products from the catalog's events, milliseconds
        // after their creation: a product the catalog has is worth a retry.
        Err(problem) if problem.status == StatusCode::NOT_FOUND.as_u16() => {
            let _: ProductView = api.call(None, &request_id, GetProduct { product_id }).await?;
            Err(Problem::overloaded("inventory has not learned of this product yet"))
        }
        answer => answer.map(axum::Json),
    }
}

/// The category tree, every node with its path and children.
#[utoipa::path(get, path = "/api/v1/categories", tag = "catalog",
    responses(
        (status = 200, description = "Every category, roots first", body = [CategoryView]),
    ))]
pub async fn categories(
    State(api): State<ApiState>,
    request_id: RequestId,
) -> Result<axum::Json<Vec<CategoryView>>, Problem> {
    Ok(axum::Json(api.call(None, &request_id, ListCategories {}).await?))
}

/// Add a category (admins), at the top or below `parent_id`.
#[utoipa::path(post, path = "/api/v1/categories", tag = "catalog", security(("bearer" = [])), request_body = CreateCategory,
    responses(
        (status = 201, description = "Added", body = CategoryView),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A sibling has this name", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A value breaks a rule; `field` names it", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_category(
    State(api): State<ApiState>,
    request_id: RequestId,
    caller: Caller,
    AppJson(body): AppJson<CreateCategory>,
) -> Result<impl IntoResponse, Problem> {
    let principal = caller.require(&[Role::Admin])?;
    let category: CategoryView = api.call(Some(principal), &request_id, body).await?;
    Ok((StatusCode::CREATED, axum::Json(category)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn given_bad_parameters_when_read_then_each_is_named() {
        for (name, value) in
            [("min_price", "cheap"), ("category", "books"), ("in_stock", "maybe"), ("sort", "random"), ("limit", "-1")]
        {
            let problem = search_from(&QueryParams::of(&[(name, value)])).unwrap_err();
            assert_eq!(problem.field.as_deref(), Some(name), "{name}={value}");
        }
    }

    #[test]
    fn given_good_parameters_when_read_then_they_become_the_search() {
        let search = search_from(&QueryParams::of(&[
            ("q", "lamp"),
            ("max_price", "2000"),
            ("sort", "price_desc"),
            ("in_stock", "true"),
        ]))
        .unwrap();
        assert_eq!(search.q.as_deref(), Some("lamp"));
        assert_eq!(
            (search.max_price, search.sort, search.in_stock),
            (Some(2000), Some(SortOrder::PriceDesc), Some(true))
        );
    }
}
