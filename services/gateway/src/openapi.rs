//! The OpenAPI 3.1 document, generated from the handlers' annotations and the
//! payload types, served at `/openapi.json`; and `/docs`, an interactive
//! page (Scalar, loaded from a CDN) that reads it.
//!
//! Handlers document the answers they give themselves. The answers of the
//! layers and extractors every request passes through (a bad token, a rate
//! limit, shedding, the deadline, a malformed body or path) are added to each
//! operation they can reach by [`LayerResponses`], so no operation forgets one.

use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
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
    // SortOrder is named by a query parameter, which utoipa does not collect.
    components(schemas(Problem, emporium_schemas::commands::catalog::SortOrder)),
    modifiers(&BearerAuth, &LayerResponses),
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

/// Adds to every operation the answers of the layers it passes through,
/// unless its handler documents that status itself (more precisely).
struct LayerResponses;

impl Modify for LayerResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                add_layer_responses(operation);
            }
        }
    }
}

fn add_layer_responses(operation: &mut Operation) {
    let has = |place: ParameterIn| operation.parameters.iter().flatten().any(|p| p.parameter_in == place);
    let (in_path, in_query, body) = (has(ParameterIn::Path), has(ParameterIn::Query), operation.request_body.is_some());
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let mut answers = vec![
        (
            "401",
            if secured { "No or bad token" } else { "A bearer token was sent and is not valid (none is needed)" },
            false,
        ),
        ("429", "Rate limited; retry after `Retry-After` seconds", true),
        ("503", "Overloaded, or a service is unavailable; retry after `Retry-After` seconds", true),
        ("504", "The request or a service took too long", false),
    ];
    if in_path || in_query || body {
        answers.push(("400", "A malformed path segment, query string or JSON body", false));
    }
    if in_path {
        answers.push(("404", "No such resource", false));
    }
    if in_query || body {
        answers.push(("422", "A value breaks a rule; `field` names it", false));
    }
    let too_large = format!("A body over {} MiB", crate::BODY_LIMIT / (1024 * 1024));
    if body {
        answers.push(("413", too_large.as_str(), false));
        answers.push(("415", "A body that is not `application/json`", false));
    }
    for (status, description, retry_after) in answers {
        let response = operation.responses.responses.entry(status.to_owned()).or_insert_with(|| problem(description));
        // Also on a handler's own 429 or 503: every one carries the header.
        if let (true, RefOr::T(response)) = (retry_after, response) {
            response.headers.entry("Retry-After".to_owned()).or_insert_with(retry_after_header);
        }
    }
}

fn problem(description: &str) -> RefOr<utoipa::openapi::Response> {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
    RefOr::T(ResponseBuilder::new().description(description).content("application/problem+json", content).build())
}

fn retry_after_header() -> utoipa::openapi::header::Header {
    let seconds =
        ObjectBuilder::new().schema_type(Type::Integer).format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)));
    HeaderBuilder::new().schema(seconds).description(Some("Seconds to wait before retrying")).build()
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::Value;

    use super::*;

    fn operations() -> Vec<(String, String, Value)> {
        let doc = serde_json::to_value(document()).unwrap();
        let mut all = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                all.push((method.clone(), path.clone(), operation.clone()));
            }
        }
        all
    }

    #[test]
    fn every_operation_declares_each_parameter_of_its_path() {
        for (method, path, operation) in operations() {
            let declared: Vec<&str> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            let in_template: Vec<&str> =
                path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
            assert_eq!(declared, in_template, "{method} {path}");
        }
    }

    #[test]
    fn every_operation_documents_what_the_layers_in_front_of_it_answer() {
        for (method, path, operation) in operations() {
            let responses = operation["responses"].as_object().unwrap();
            let mut expected = vec!["401", "429", "503", "504"];
            if operation.get("requestBody").is_some() {
                expected.extend(["400", "413", "415", "422"]);
            }
            if path.contains('{') {
                expected.extend(["400", "404"]);
            }
            for status in expected {
                let response = responses.get(status).unwrap_or_else(|| panic!("{method} {path}: no {status}"));
                assert!(response["content"].get("application/problem+json").is_some(), "{method} {path} {status}");
            }
            for status in ["429", "503"] {
                assert!(responses[status]["headers"].get("Retry-After").is_some(), "{method} {path} {status}");
            }
        }
    }

    #[test]
    fn every_schema_the_document_names_is_in_it() {
        let text = serde_json::to_string(document()).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        for name in text.split("\"#/components/schemas/").skip(1).filter_map(|rest| rest.split('"').next()) {
            assert!(doc["components"]["schemas"].get(name).is_some(), "{name} is named but not defined");
        }
    }
}
