//! `/shipments/{id}/ship` and `/deliver`: a carrier's reports that a parcel
//! left or arrived. An admin stands in for the carrier's webhook; a report
//! repeated (the webhook retries) answers the shipment as it is.

use axum::extract::State;
use emporium_schemas::commands::shipping::{DeliverShipment, ShipShipment, ShipmentDetails};
use emporium_schemas::values::{Role, ShipmentId};
use uuid::Uuid;

use super::ApiState;
use crate::extract::{AppPath, Caller, RequestId};
use crate::problem::Problem;

/// Who reports for the carrier: an admin stands in for its webhook.
const CARRIER: &[Role] = &[Role::Admin];

/// The carrier took the parcel: the order becomes shipped and its stock leaves the warehouse.
#[utoipa::path(post, path = "/api/v1/shipments/{id}/ship", tag = "shipping", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The shipment")),
    responses(
        (status = 200, description = "The shipment, shipped (also when it was already)", body = ShipmentDetails),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such shipment", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Cancelled or delivered already", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn ship(
    State(api): State<ApiState>,
    request_id: RequestId,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
) -> Result<axum::Json<ShipmentDetails>, Problem> {
    let principal = caller.require(CARRIER)?;
    let command = ShipShipment { shipment_id: ShipmentId::from_uuid(id) };
    Ok(axum::Json(api.call(Some(principal), &request_id, command).await?))
}

/// The carrier delivered the parcel: the order becomes delivered.
#[utoipa::path(post, path = "/api/v1/shipments/{id}/deliver", tag = "shipping", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The shipment")),
    responses(
        (status = 200, description = "The shipment, delivered (also when it was already)", body = ShipmentDetails),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such shipment", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not shipped yet, or cancelled", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn deliver(
    State(api): State<ApiState>,
    request_id: RequestId,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
) -> Result<axum::Json<ShipmentDetails>, Problem> {
    let principal = caller.require(CARRIER)?;
    let command = DeliverShipment { shipment_id: ShipmentId::from_uuid(id) };
    Ok(axum::Json(api.call(Some(principal), &request_id, command).await?))
}
