//! Command payloads (the command envelope's `data`) sent over NATS request/reply.
//!
//! Entity commands (one cart, one order) are partition-addressed, so exactly
//! one actor in the whole system handles an entity; the rest go to a queue group.

pub mod cart;
pub mod catalog;
pub mod identity;
pub mod inventory;
pub mod notification;
pub mod order;
pub mod shipping;

use crate::envelope::Command;
use crate::registry::CommandType;

/// Binds a payload type to its registered command type.
macro_rules! impl_command {
    ($ty:ty => $context:literal, $op:literal, $version:literal, $addressing:ident) => {
        impl $crate::envelope::Command for $ty {
            const TYPE: $crate::registry::CommandType = $crate::command_type!($context, $op, $version, $addressing);
        }
    };
}
pub(crate) use impl_command;

/// Every registered command type (the registry's source).
pub(crate) const ALL: &[CommandType] = &[
    cart::GetCart::TYPE,
    cart::AddItem::TYPE,
    cart::SetQuantity::TYPE,
    cart::RemoveItem::TYPE,
    cart::Checkout::TYPE,
    order::PlaceOrder::TYPE,
    order::CancelOrder::TYPE,
    order::GetOrder::TYPE,
    order::ListOrders::TYPE,
    inventory::SetStock::TYPE,
    inventory::GetStock::TYPE,
    catalog::CreateProduct::TYPE,
    catalog::UpdateProduct::TYPE,
    catalog::DeleteProduct::TYPE,
    catalog::GetProduct::TYPE,
    catalog::SearchProducts::TYPE,
    catalog::ListCategories::TYPE,
    catalog::CreateCategory::TYPE,
    catalog::AddReview::TYPE,
    catalog::ListReviews::TYPE,
    shipping::ShipShipment::TYPE,
    shipping::DeliverShipment::TYPE,
    notification::ListNotifications::TYPE,
    notification::ReadNotification::TYPE,
    identity::Register::TYPE,
    identity::Login::TYPE,
    identity::Refresh::TYPE,
    identity::Logout::TYPE,
    identity::GetProfile::TYPE,
    identity::UpdateProfile::TYPE,
    identity::AddAddress::TYPE,
    identity::ListAddresses::TYPE,
    identity::DeleteAddress::TYPE,
    identity::GetKeys::TYPE,
];
