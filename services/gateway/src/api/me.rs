//! `/me`: the caller's own profile and addresses, for any signed-in role;
//! and `/users/{id}`, anyone's profile, for admins.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use emporium_schemas::commands::identity::{
    AddAddress, DeleteAddress, GetProfile, ListAddresses, Profile, SavedAddress, UpdateProfile,
};
use emporium_schemas::values::{Role, UserId};
use uuid::Uuid;

use super::ApiState;
use crate::extract::{AppJson, AppPath, Caller, RequestId};
use crate::problem::Problem;

/// The caller's profile.
#[utoipa::path(get, path = "/api/v1/me", tag = "me", security(("bearer" = [])),
    responses(
        (status = 200, description = "The profile", body = Profile),
    ))]
pub async fn profile(
    State(api): State<ApiState>,
    request_id: RequestId,
    Caller(principal): Caller,
) -> Result<axum::Json<Profile>, Problem> {
    Ok(axum::Json(api.call(Some(principal), &request_id, GetProfile { user_id: None }).await?))
}

/// Change the caller's name.
#[utoipa::path(patch, path = "/api/v1/me", tag = "me", security(("bearer" = [])), request_body = UpdateProfile,
    responses(
        (status = 200, description = "The changed profile", body = Profile),
        (status = 422, description = "A value breaks a rule", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn update_profile(
    State(api): State<ApiState>,
    request_id: RequestId,
    Caller(principal): Caller,
    AppJson(body): AppJson<UpdateProfile>,
) -> Result<axum::Json<Profile>, Problem> {
    Ok(axum::Json(api.call(Some(principal), &request_id, body).await?))
}

/// The caller's saved addresses, the default first.
#[utoipa::path(get, path = "/api/v1/me/addresses", tag = "me", security(("bearer" = [])),
    responses(
        (status = 200, description = "The addresses", body = [SavedAddress]),
    ))]
pub async fn addresses(
    State(api): State<ApiState>,
    request_id: RequestId,
    Caller(principal): Caller,
) -> Result<axum::Json<Vec<SavedAddress>>, Problem> {
    Ok(axum::Json(api.call(Some(principal), &request_id, ListAddresses {}).await?))
}

/// Save an address; the first one, or one sent with `default: true`, becomes the default.
#[utoipa::path(post, path = "/api/v1/me/addresses", tag = "me", security(("bearer" = [])), request_body = AddAddress,
    responses(
        (status = 201, description = "Saved", body = SavedAddress),
        (status = 422, description = "A value breaks a rule; `field` names it", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn add_address(
    State(api): State<ApiState>,
    request_id: RequestId,
    Caller(principal): Caller,
    AppJson(body): AppJson<AddAddress>,
) -> Result<impl IntoResponse, Problem> {
    let saved: SavedAddress = api.call(Some(principal), &request_id, body).await?;
    Ok((StatusCode::CREATED, axum::Json(saved)))
}

/// Forget one of the caller's addresses.
#[utoipa::path(delete, path = "/api/v1/me/addresses/{id}", tag = "me", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The address")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such address of the caller's", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_address(
    State(api): State<ApiState>,
    request_id: RequestId,
    Caller(principal): Caller,
    AppPath(address_id): AppPath<Uuid>,
) -> Result<StatusCode, Problem> {
    let () = api.call(Some(principal), &request_id, DeleteAddress { address_id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Anyone's profile, for admins (support).
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The user")),
    responses(
        (status = 200, description = "The profile", body = Profile),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn user(
    State(api): State<ApiState>,
    request_id: RequestId,
    caller: Caller,
    AppPath(user_id): AppPath<Uuid>,
) -> Result<axum::Json<Profile>, Problem> {
    let principal = caller.require(&[Role::Admin])?;
    let query = GetProfile { user_id: Some(UserId::from_uuid(user_id)) };
    Ok(axum::Json(api.call(Some(principal), &request_id, query).await?))
}
