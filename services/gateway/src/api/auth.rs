//! `/auth/*`: register, login, refresh, logout. Anonymous; rate-limited
//! more strictly than the rest, since each may cost a password hash.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use emporium_schemas::commands::identity::{Login, Logout, Profile, Refresh, Register, Session};

use super::ApiState;
use crate::extract::{AppJson, ClientIp, RequestId};
use crate::problem::Problem;

/// Create an account (customer by default, or seller).
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = Register,
    responses(
        (status = 201, description = "Created", body = Profile),
        (status = 409, description = "The email is taken, in any case", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A value breaks a rule (email, password policy, name, role)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn register(
    State(api): State<ApiState>,
    request_id: RequestId,
    AppJson(body): AppJson<Register>,
) -> Result<impl IntoResponse, Problem> {
    let profile: Profile = api.call(None, &request_id, body).await?;
    Ok((StatusCode::CREATED, axum::Json(profile)))
}

/// Exchange email and password for an access token and a refresh token.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = Login,
    responses(
        (status = 200, description = "Signed in", body = Session),
        (status = 401, description = "Wrong email or password", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Locked out after repeated failures, or rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many sign-ins at once", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn login(
    State(api): State<ApiState>,
    request_id: RequestId,
    ClientIp(ip): ClientIp,
    AppJson(mut body): AppJson<Login>,
) -> Result<axum::Json<Session>, Problem> {
    body.client_ip = ip;
    Ok(axum::Json(api.call(None, &request_id, body).await?))
}

/// Exchange a refresh token for a new pair. Each refresh token works once;
/// presenting a used one ends the session it belongs to.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = Refresh,
    responses(
        (status = 200, description = "A new pair", body = Session),
        (status = 401, description = "Unknown, expired, revoked or reused refresh token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn refresh(
    State(api): State<ApiState>,
    request_id: RequestId,
    AppJson(body): AppJson<Refresh>,
) -> Result<axum::Json<Session>, Problem> {
    Ok(axum::Json(api.call(None, &request_id, body).await?))
}

/// End the session a refresh token belongs to. Idempotent.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", request_body = Logout,
    responses(
        (status = 204, description = "Signed out"),
        (status = 422, description = "A field is missing", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn logout(
    State(api): State<ApiState>,
    request_id: RequestId,
    AppJson(body): AppJson<Logout>,
) -> Result<StatusCode, Problem> {
    let () = api.call(None, &request_id, body).await?;
    Ok(StatusCode::NO_CONTENT)
}
