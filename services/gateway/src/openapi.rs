//! The OpenAPI 3.1 document, generated from the handlers' annotations and the
//! payload types, served at `/openapi.json`; and `/docs`, an interactive
//! page (Scalar, loaded from a CDN) that reads it.

use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::{auth, cart, catalog, live, me, notifications, orders, reviews, shipments};
use crate::problem::Problem;

#[derive(OpenApi)]
#[openapi(
    info(title = "Emporium", description = "The public HTTP API of Emporium. Errors are application/problem+json (RFC 9457)."),
    paths(
        auth::register, auth::login, auth::refresh, auth::logout,
        me::profile, me::update_profile, me::addresses, me::add_address, me::delete_address, me::user,
        catalog::search, catalog::product, catalog::create_product, catalog::update_product, catalog::delete_product,
        catalog::set_stock, catalog::categories, catalog::create_category, catalog::seller_products,
        reviews::reviews, reviews::add_review,
        cart::cart, cart::add_item, cart::set_quantity, cart::remove_item, cart::checkout,
        orders::list, orders::order, orders::cancel, orders::sales, live::order_events,
        shipments::ship, shipments::deliver,
        notifications::list, notifications::read,
    ),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Accounts and sessions"),
        (name = "me", description = "The caller's own profile and addresses"),
        (name = "catalog", description = "Products, categories, search, stock and reviews"),
        (name = "cart", description = "The caller's cart and its checkout"),
        (name = "orders", description = "Orders: status, payment, shipment, timeline; cancellation"),
        (name = "shipping", description = "A carrier's reports on shipments (an admin stands in for its webhook)"),
        (name = "notifications", description = "The caller's own notifications: their orders' progress, a seller's new orders"),
        (name = "admin", description = "For admins"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// The document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: std::sync::LazyLock<utoipa::openapi::OpenApi> = std::sync::LazyLock::new(ApiDoc::openapi);
    &DOCUMENT
}

/// `GET /openapi.json`.
pub async fn openapi_json() -> Response {
    axum::Json(document()).into_response()
}

const DOCS: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Emporium API</title><meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body>
<script id="api-reference" data-url="/openapi.json"></script>
<script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference@1"></script>
</body>
</html>
"#;

/// `GET /docs`: its scripts come from the CDN, so it has its own content policy.
pub async fn docs() -> Response {
    let mut response = Html(DOCS).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src https://cdn.jsdelivr.net; style-src 'unsafe-inline' https://cdn.jsdelivr.net; \
             font-src https://cdn.jsdelivr.net data:; img-src data: https:; connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    response
}
