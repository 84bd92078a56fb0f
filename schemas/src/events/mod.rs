//! Event payloads (the envelope's `data`), one module per emitting context.
//!
//! Version 1 of every event of the checkout saga. A published version is
//! frozen: fields may be added only as optional; anything else is a new major
//! version beside this one (see `schemas/README.md`).

pub mod catalog;
pub mod identity;
pub mod inventory;
pub mod order;
pub mod payment;
pub mod shipping;

use crate::registry::EventType;

/// Binds a payload type to its registered event type.
macro_rules! impl_event {
    ($ty:ty => $context:literal, $name:literal, $version:literal) => {
        impl $crate::envelope::Event for $ty {
            const TYPE: $crate::registry::EventType = $crate::event_type!($context, $name, $version);
        }
    };
}
pub(crate) use impl_event;

use crate::envelope::Event;

/// Every registered event type (the registry's source).
pub(crate) const ALL: &[EventType] = &[
    identity::UserRegistered::TYPE,
    order::OrderPlaced::TYPE,
    order::OrderConfirmed::TYPE,
    order::OrderCancelled::TYPE,
    order::OrderShipped::TYPE,
    order::OrderDelivered::TYPE,
    inventory::InventoryReserved::TYPE,
    inventory::InventoryRejected::TYPE,
    inventory::InventoryReleased::TYPE,
    inventory::StockChanged::TYPE,
    catalog::ProductCreated::TYPE,
    catalog::ProductUpdated::TYPE,
    catalog::ProductDeleted::TYPE,
    catalog::ReviewAdded::TYPE,
    payment::PaymentAuthorized::TYPE,
    payment::PaymentFailed::TYPE,
    payment::PaymentCaptured::TYPE,
    payment::PaymentCaptureFailed::TYPE,
    payment::PaymentVoided::TYPE,
    payment::PaymentRefunded::TYPE,
    shipping::ShippingCreated::TYPE,
    shipping::ShippingShipped::TYPE,
    shipping::ShippingDelivered::TYPE,
    shipping::ShippingCancelled::TYPE,
];
