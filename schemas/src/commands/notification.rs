//! `cmd.notification.*`: the signed-in user's in-app notifications (queue group `notification`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::impl_command;
use crate::values::{NotificationId, OrderId};

/// The principal's own notifications, newest first, one page at a time,
/// with how many are unread.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListNotifications {
    /// Only those not read yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unread_only: bool,
    /// `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// 1 to 100; 20 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}
impl_command!(ListNotifications => "notification", "list", 1, QueueGroup);

/// Mark one of the principal's notifications read (reading it twice changes nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadNotification {
    pub notification_id: NotificationId,
}
impl_command!(ReadNotification => "notification", "read", 1, QueueGroup);

/// What a notification tells of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// To the customer: the order is confirmed (stock held, payment authorized).
    OrderConfirmed,
    /// To a seller: a confirmed order holds their products.
    NewOrder,
    /// To the customer, with the reason.
    OrderCancelled,
    PaymentCaptured,
    PaymentRefunded,
    /// An authorization released without charging.
    PaymentVoided,
    /// A shipment exists, with its carrier and tracking number.
    ShipmentCreated,
    OrderShipped,
    /// Delivered; the customer may now review its products.
    OrderDelivered,
}

/// One notification as its recipient sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NotificationView {
    #[schema(value_type = String, format = Uuid)]
    pub id: NotificationId,
    pub kind: NotificationKind,
    pub title: String,
    pub body: String,
    /// The order it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub order_id: Option<OrderId>,
    pub created_at: DateTime<Utc>,
    /// When the recipient marked it read; absent while unread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<DateTime<Utc>>,
}

/// One page of notifications, and how many of the recipient's are unread in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NotificationPage {
    pub items: Vec<NotificationView>,
    pub unread: u64,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}
