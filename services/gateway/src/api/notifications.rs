//! `/notifications`: the caller's own in-app notifications (what happened to
//! their orders, and for sellers their new sales), newest first with the
//! unread count, and marking one read.

use axum::extract::State;
use emporium_schemas::commands::notification::{
    ListNotifications, NotificationPage, NotificationView, ReadNotification,
};
use emporium_schemas::values::NotificationId;
use uuid::Uuid;

use super::ApiState;
use crate::extract::{AppPath, Caller, QueryParams, RequestId};
use crate::problem::Problem;

/// The caller's notifications, newest first, with how many are unread.
#[utoipa::path(get, path = "/api/v1/notifications", tag = "notifications", security(("bearer" = [])),
    params(ListNotifications),
    responses(
        (status = 200, description = "One page and the unread count; pass `next_cursor` as `cursor` for the next", body = NotificationPage),
        (status = 422, description = "A parameter breaks a rule; `field` names it", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(api): State<ApiState>,
    request_id: RequestId,
    Caller(principal): Caller,
    params: QueryParams,
) -> Result<axum::Json<NotificationPage>, Problem> {
    let query = list_from(&params)?;
    Ok(axum::Json(api.call(Some(principal), &request_id, query).await?))
}

/// Reads the query parameters one by one, so a bad one is named.
fn list_from(query: &QueryParams) -> Result<ListNotifications, Problem> {
    Ok(ListNotifications {
        unread_only: query.parsed("unread_only", "true or false")?.unwrap_or(false),
        cursor: query.cursor(),
        limit: query.limit()?,
    })
}

/// Mark one of the caller's notifications read; reading it again changes nothing.
#[utoipa::path(post, path = "/api/v1/notifications/{id}/read", tag = "notifications", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The notification")),
    responses(
        (status = 200, description = "The notification, read", body = NotificationView),
        (status = 404, description = "No such notification, or not yours", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn read(
    State(api): State<ApiState>,
    request_id: RequestId,
    Caller(principal): Caller,
    AppPath(id): AppPath<Uuid>,
) -> Result<axum::Json<NotificationView>, Problem> {
    let command = ReadNotification { notification_id: NotificationId::from_uuid(id) };
    Ok(axum::Json(api.call(Some(principal), &request_id, command).await?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn given_bad_parameters_when_read_then_each_is_named() {
        for (name, value) in [("unread_only", "maybe"), ("limit", "many"), ("limit", "-3")] {
            let problem = list_from(&QueryParams::of(&[(name, value)])).unwrap_err();
            assert_eq!(problem.field.as_deref(), Some(name), "{name}={value}");
        }
        let query = list_from(&QueryParams::of(&[("unread_only", "true"), ("limit", "5"), ("cursor", "c")])).unwrap();
        assert_eq!(query, ListNotifications { unread_only: true, cursor: Some("c".into()), limit: Some(5) });
        assert_eq!(list_from(&QueryParams::of(&[])).unwrap(), ListNotifications::default());
    }
}
