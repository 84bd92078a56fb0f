//! Extractors whose rejections are problems: a body that is not JSON gets
//! 400, the wrong content type 415, one over the body limit 413, and a value
//! that breaks a type's rule 422 naming the field; a malformed path segment
//! gets 400. Also the caller's identity and request id, and query parameters
//! read one by one so that a bad one is named.
//!
//! Text holding the character U+0000 is refused (422) in bodies and query
//! parameters alike: Postgres cannot store it, and nothing in the API means
//! it, so it must not get as far as a service.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use emporium_schemas::Principal;
use emporium_schemas::values::Role;
use serde::de::DeserializeOwned;

use crate::problem::Problem;

/// Query parameters, each read on its own so a bad one gets 422 naming it.
/// An absent or blank parameter is `None`.
#[derive(Debug, Clone, Default)]
pub struct QueryParams(pub HashMap<String, String>);

impl QueryParams {
    /// The trimmed value, if given and not blank.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// The value parsed; refused as "must be `what`".
    pub fn parsed<T: std::str::FromStr>(&self, name: &str, what: &str) -> Result<Option<T>, Problem> {
        self.text(name)
            .map(|value| value.parse().map_err(|_| invalid(name, format!("must be {what}, got {value:?}"))))
            .transpose()
    }

    /// One of a snake-case enum's names; refused as "must be one of `names`".
    pub fn one_of<T: DeserializeOwned>(&self, name: &str, names: &str) -> Result<Option<T>, Problem> {
        self.text(name)
            .map(|value| {
                serde_json::from_value(serde_json::Value::String(value.to_owned()))
                    .map_err(|_| invalid(name, format!("must be one of {names}")))
            })
            .transpose()
    }

    /// `cursor`: the previous page's `next_cursor`, for the page after it.
    pub fn cursor(&self) -> Option<String> {
        self.text("cursor").map(str::to_owned)
    }

    /// `limit`: how many items a page holds at most.
    pub fn limit(&self) -> Result<Option<u32>, Problem> {
        self.parsed("limit", "a whole number from 1 to 100")
    }

    /// Parameters as a request would carry them (handlers' unit tests).
    #[cfg(test)]
    pub(crate) fn of(pairs: &[(&str, &str)]) -> Self {
        Self(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Query(params) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| Problem::from_status(rejection.status(), rejection.body_text()))?;
        if let Some((name, _)) = params.iter().find(|(k, v)| k.contains('\0') || v.contains('\0')) {
            return Err(invalid(name, NUL.to_owned()));
        }
        Ok(Self(params))
    }
}

fn invalid(field: &str, detail: String) -> Problem {
    Problem::from(emporium_schemas::ReplyError::invalid(field, detail))
}

/// `axum::Json`, rejecting with problem+json.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AppJson<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        if !is_json(request.headers()) {
            return Err(Problem::from_status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected a body with `Content-Type: application/json`",
            ));
        }
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| Problem::from_status(rejection.status(), rejection.body_text()))?;
        let axum::Json(value) = axum::Json::<T>::from_bytes(&body).map_err(|rejection| json_problem(&rejection))?;
        if holds_nul(&body) {
            return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", NUL));
        }
        Ok(Self(value))
    }
}

const NUL: &str = "text may not hold the character U+0000";

/// `application/json`, or any `application/*+json`, as axum's `Json` takes.
fn is_json(headers: &HeaderMap) -> bool {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase());
    essence.is_some_and(|e| e == "application/json" || (e.starts_with("application/") && e.ends_with("+json")))
}

/// Whether a JSON text holds U+0000, which JSON can only write as `\u0000`
/// (a raw control character is not JSON): an escape whose backslash is not
/// itself escaped, i.e. follows an even run of backslashes.
fn holds_nul(json: &[u8]) -> bool {
    json.windows(6).enumerate().any(|(at, window)| {
        window == b"\\u0000" && json[..at].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 0
    })
}

fn json_problem(rejection: &JsonRejection) -> Problem {
    let mut problem = Problem::from_status(rejection.status(), rejection.body_text());
    if let JsonRejection::JsonDataError(error) = rejection {
        // serde_path_to_error's message starts with the path: `price.amount: invalid value…`.
        let text = std::error::Error::source(error).map(ToString::to_string).unwrap_or_default();
        problem.detail = text.clone();
        problem.field = text.split_once(": ").map(|(path, _)| path.to_owned()).filter(|path| !path.contains(' '));
    }
    problem
}

/// `axum::extract::Path`, rejecting with problem+json.
#[derive(Debug, Clone, Copy)]
pub struct AppPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for AppPath<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(path_problem(&rejection)),
        }
    }
}

fn path_problem(rejection: &PathRejection) -> Problem {
    Problem::from_status(rejection.status(), rejection.body_text())
}

/// The authenticated caller (the `authenticate` middleware verified the
/// token); 401 when the request carried none.
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        parts
            .extensions
            .get::<Principal>()
            .copied()
            .map(Caller)
            .ok_or_else(|| Problem::unauthenticated("this resource needs a bearer token"))
    }
}

impl Caller {
    /// 403 unless the caller has one of `roles`.
    pub fn require(self, roles: &[Role]) -> Result<Principal, Problem> {
        if roles.contains(&self.0.role) {
            Ok(self.0)
        } else {
            Err(Problem::forbidden(format!(
                "this needs the role {}",
                roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(" or ")
            )))
        }
    }
}

/// The request's id (accepted from `x-request-id` or generated), for logs and NATS headers.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<RequestId>().cloned().unwrap_or_else(|| RequestId(String::new())))
    }
}

/// The client's address as the gateway sees it (socket, or the first
/// `X-Forwarded-For` hop when configured to trust a proxy).
#[derive(Debug, Clone)]
pub struct ClientIp(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<ClientIp>().cloned().unwrap_or_else(|| ClientIp("unknown".to_owned())))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_nul_character_is_found_only_where_an_escape_writes_one() {
        assert!(holds_nul(br#"{"city": "N\u0000"}"#));
        assert!(holds_nul(br#"{"city": "\\\u0000"}"#), "an escaped backslash, then the character");
        assert!(!holds_nul(br#"{"city": "\\u0000"}"#), "a backslash, then the text u0000");
        assert!(!holds_nul(br#"{"city": "\u0001 u0000"}"#));
    }

    #[test]
    fn json_is_application_json_or_a_json_suffix_in_any_case() {
        let with = |content_type: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, content_type.parse().unwrap());
            is_json(&headers)
        };
        assert!(
            with("application/json") && with("Application/JSON; charset=utf-8") && with("application/problem+json")
        );
        assert!(!with("text/plain") && !with("application/jsonx") && !is_json(&HeaderMap::new()));
    }
}
