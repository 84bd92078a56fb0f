//! The answers to `cmd.shipping.*`: a carrier's reports (an admin stands in
//! for its webhook) that a parcel left or arrived.

use std::sync::Arc;

use emporium_nats::Routes;
use emporium_nats::rpc::internal;
use emporium_schemas::commands::shipping::{DeliverShipment, ShipShipment, ShipmentDetails};
use emporium_schemas::events::shipping::{ShippingDelivered, ShippingShipped};
use emporium_schemas::values::{Role, ShipmentId};
use emporium_schemas::{CommandEnvelope, ErrorKind, Origin, ReplyError};

use crate::domain::{self, Move, MoveOutcome};
use crate::saga::{Shipping, announce};
use crate::store;

/// Every shipping command, bound to its answer.
pub fn routes(shipping: Arc<Shipping>) -> Routes<Shipping> {
    Routes::from_arc(shipping)
        .on(|s, c: CommandEnvelope<ShipShipment>| async move {
            let shipment = c.data.shipment_id;
            s.carrier_move(&c, shipment, Move::Ship).await
        })
        .on(|s, c: CommandEnvelope<DeliverShipment>| async move {
            let shipment = c.data.shipment_id;
            s.carrier_move(&c, shipment, Move::Deliver).await
        })
}

impl Shipping {
    /// Moves `shipment` on as the carrier reports. The row is locked for the
    /// whole decision, so two reports about one parcel are decided one after
    /// the other and only one of them announces the move.
    async fn carrier_move<C>(
        &self,
        command: &CommandEnvelope<C>,
        shipment: ShipmentId,
        action: Move,
    ) -> Result<ShipmentDetails, ReplyError> {
        let principal = command.signed_in()?;
        if principal.role != Role::Admin {
            return Err(ReplyError::new(ErrorKind::Forbidden, "only the carrier (an admin) reports on shipments"));
        }
        let mut tx = self.pool.begin().await.map_err(|e| internal(&e))?;
        let Some(current) = store::lock(&mut tx, shipment).await.map_err(|e| internal(&e))? else {
            return Err(ReplyError::new(ErrorKind::NotFound, "no such shipment"));
        };
        let status = match domain::decide_move(current.status, action) {
            Ok(MoveOutcome::Advance(status)) => status,
            // A retried report: the shipment as it is, announced nowhere.
            Ok(MoveOutcome::AlreadyDone) => return Ok(current),
            Err(refused) => return Err(ReplyError::new(ErrorKind::Conflict, refused.to_string())),
        };
        let now = self.clock.now();
        let moved = store::set_status(&mut tx, shipment, status, now).await.map_err(|e| internal(&e))?;
        let origin = Origin::from(command);
        let (order_id, shipment_id) = (moved.order_id, moved.id);
        let event = match action {
            Move::Ship => {
                let tracking_number = moved.tracking_number.clone();
                announce(&moved, origin, ShippingShipped { order_id, shipment_id, tracking_number })
            }
            Move::Deliver => announce(&moved, origin, ShippingDelivered { order_id, shipment_id }),
        }
        .map_err(|e| internal(&e))?;
        emporium_nats::outbox::append(&mut tx, &[event]).await.map_err(|e| internal(&e))?;
        tx.commit().await.map_err(|e| internal(&e))?;
        self.outbox.wake();
        tracing::info!(order.id = %order_id, shipment.id = %shipment_id, ?status, "shipment moved on");
        Ok(moved)
    }
}
