//! Extractors whose rejections are problems: a body that is not JSON gets
//! 400, the wrong content type 415, one over the body limit 413, and a value
//! that breaks a type's rule 422 naming the field; a malformed path segment
//! gets 400. Also the caller's identity and request id, and query parameters
//! read one by one so that a bad one is named.

use std::collections::HashMap;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
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

    /// Parameters as a request would carry them (handlers' unit tests).
    #[cfg(test)]
    pub(crate) fn of(pairs: &[(&str, &str)]) -> Self {
        Self(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match axum::extract::Query::<HashMap<String, String>>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(params)) => Ok(Self(params)),
            Err(rejection) => Err(Problem::from_status(rejection.status(), rejection.body_text())),
        }
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
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_problem(&rejection)),
        }
    }
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
