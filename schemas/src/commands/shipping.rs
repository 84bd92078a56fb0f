//! `cmd.shipping.*`: an admin standing in for a carrier.

use serde::{Deserialize, Serialize};

use super::impl_command;
use crate::values::ShipmentId;

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
