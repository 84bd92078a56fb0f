//! `shipping.*` events: a confirmed order's shipment.

use serde::{Deserialize, Serialize};

use super::impl_event;
use crate::values::{OrderId, ShipmentId, Text};

/// A shipment was created for a confirmed order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShippingCreated {
    pub order_id: OrderId,
    pub shipment_id: ShipmentId,
    pub carrier: Text,
    pub tracking_number: Text,
}
impl_event!(ShippingCreated => "shipping", "created", 1);

/// The carrier took the parcel: the order is shipped and its reservation becomes a deduction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShippingShipped {
    pub order_id: OrderId,
    pub shipment_id: ShipmentId,
    pub tracking_number: Text,
}
impl_event!(ShippingShipped => "shipping", "shipped", 1);

/// The carrier delivered the parcel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShippingDelivered {
    pub order_id: OrderId,
    pub shipment_id: ShipmentId,
}
impl_event!(ShippingDelivered => "shipping", "delivered", 1);

/// The order was cancelled before shipment; so was its shipment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShippingCancelled {
    pub order_id: OrderId,
    pub shipment_id: ShipmentId,
}
impl_event!(ShippingCancelled => "shipping", "cancelled", 1);
