//! Errors as `application/problem+json` (RFC 9457), the only error format the
//! gateway speaks. Every failure — a service's refusal, a rejected
//! extractor, a limit, an unknown route — becomes a [`Problem`] with a stable
//! `type` clients may switch on.

use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use emporium_nats::CallError;
use emporium_schemas::{ErrorKind, ReplyError};
use serde::Serialize;
use utoipa::ToSchema;

/// Where problem types are documented.
const TYPE_BASE: &str = "https://emporium.dev/problems/";

/// A problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem; stable.
    #[serde(rename = "type")]
    #[schema(example = "https://emporium.dev/problems/invalid")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For 422: the request field that broke a rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Sent as the `Retry-After` header with 429 and 503.
    #[serde(skip)]
    pub retry_after_secs: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<String>) -> Self {
        Self {
            type_uri: format!("{TYPE_BASE}{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            retry_after_secs: None,
        }
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs.max(1));
        self
    }

    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn overloaded(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", detail).retry_after(1)
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "too many requests; slow down")
            .retry_after(retry_after_secs)
    }

    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "something went wrong on our side")
    }

    /// A problem for a status that needs no more than its name (extractor rejections).
    pub fn from_status(status: StatusCode, detail: impl Into<String>) -> Self {
        let slug = match status {
            StatusCode::BAD_REQUEST => "malformed",
            StatusCode::PAYLOAD_TOO_LARGE => "too-large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid",
            StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
            StatusCode::NOT_FOUND => "not-found",
            _ if status.is_server_error() => "internal",
            _ => "bad-request",
        };
        Self::new(status, slug, detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = match serde_json::to_vec(&self) {
            Ok(body) => body,
            Err(_) => return status.into_response(),
        };
        let mut response = (status, [(header::CONTENT_TYPE, "application/problem+json")], body).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A service's refusal, as HTTP.
impl From<ReplyError> for Problem {
    fn from(error: ReplyError) -> Self {
        let (status, slug) = match error.kind {
            ErrorKind::Invalid => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            ErrorKind::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ErrorKind::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not-found"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorKind::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate-limited"),
            ErrorKind::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let mut problem = Problem::new(status, slug, error.message);
        problem.field = error.field;
        problem.retry_after_secs = error.retry_after_secs;
        if matches!(error.kind, ErrorKind::RateLimited | ErrorKind::Overloaded) && problem.retry_after_secs.is_none() {
            problem.retry_after_secs = Some(1);
        }
        problem
    }
}

/// A service that could not be reached, as HTTP. Logged here, once.
impl From<CallError> for Problem {
    fn from(error: CallError) -> Self {
        match error {
            CallError::NoResponders(subject) => {
                tracing::warn!(%subject, "no service instance answers");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the service is not available; retry shortly",
                )
                .retry_after(1)
            }
            CallError::TimedOut(subject) => {
                tracing::warn!(%subject, "service deadline passed");
                Problem::new(StatusCode::GATEWAY_TIMEOUT, "timeout", "the service did not answer in time")
            }
            other => {
                tracing::error!(error = %other, "service call failed");
                Problem::internal()
            }
        }
    }
}

/// The fallback for paths no route matches.
pub(crate) async fn not_found(uri: Uri) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not-found", format!("no resource at {}", uri.path()))
}

/// The fallback for a known path with a method it does not have.
pub(crate) async fn method_not_allowed() -> Problem {
    Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "this resource does not support that method")
}
