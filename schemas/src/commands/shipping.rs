//! `cmd.shipping.*`: an admin standing in for a carrier.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::impl_command;
use super::order::ShipmentStatus;
use crate::values::{OrderId, ShipmentId, Text};

/// The carrier took the parcel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipShipment {
    pub shipment_id: ShipmentId,
}
impl_command!(ShipShipment => "shipping", "ship", 1, QueueGroup);

/// The carrier delivered the parcel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverShipment {
    pub shipment_id: ShipmentId,
}
impl_command!(DeliverShipment => "shipping", "deliver", 1, QueueGroup);

/// A shipment as the carrier (and its stand-in, an admin) sees it: what ship and deliver answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShipmentDetails {
    #[schema(value_type = String, format = Uuid)]
    pub id: ShipmentId,
    #[schema(value_type = String, format = Uuid)]
    pub order_id: OrderId,
    pub status: ShipmentStatus,
    #[schema(value_type = String, example = "Emporium Post")]
    pub carrier: Text,
    /// The carrier's reference for the parcel (UPU S10 form).
    #[schema(value_type = String, example = "EP000000014ZZ")]
    pub tracking_number: Text,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipped_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<DateTime<Utc>>,
}
