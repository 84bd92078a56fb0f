//! Sample events for tests and benchmarks that need some registered event
//! and care only about its envelope (key, seq, ids).

use emporium_schemas::events::order::OrderShipped;
use emporium_schemas::values::{OrderId, ShipmentId, UserId};
use emporium_schemas::{EntityKey, Envelope, Seq};
use uuid::Uuid;

/// An `order.shipped` payload with fresh ids.
pub fn shipped_payload() -> OrderShipped {
    OrderShipped { order_id: OrderId::new_v7(), customer_id: UserId::new_v7(), shipment_id: ShipmentId::new_v7() }
}

/// An `order.shipped` event of `key` at `seq`, in a flow of its own.
///
/// # Panics
/// If `seq` is 0.
#[allow(clippy::expect_used)] // test support: a bad seq is the caller's bug
pub fn order_shipped(key: &EntityKey, seq: u64) -> Envelope<OrderShipped> {
    let seq = Seq::try_from(seq).expect("seq starts at 1");
    Envelope::new(key.clone(), seq, Uuid::now_v7(), Uuid::now_v7(), shipped_payload())
}
