//! The order's commands: place (from the cart's checkout), cancel and read
//! one order (partition-addressed, answered by the partition's owner), and
//! list orders (any instance, queue group `order`).

use std::sync::Arc;
use std::time::Duration;

use emporium_actors::{EntityHost, HostError, Persistent};
use emporium_nats::rpc::{CallError, Routes};
use emporium_nats::{Caller, SharedClock};
use emporium_schemas::commands::catalog::{GetProduct, ProductView};
use emporium_schemas::commands::order::{
    CancelOrder, GetOrder, ListOrders, OrderAccepted, OrderPage, OrderView, PlaceOrder,
};
use emporium_schemas::values::{NonEmpty, OrderId, PricedLine, ProductQuantity, merge_quantities};
use emporium_schemas::{CommandEnvelope, ErrorKind, Origin, Partition, Principal, Reply, ReplyError};
use sqlx::PgPool;

use crate::domain::{self, Order, OrderCommand, Placement, Rejection, Viewer};
use crate::entity::Orders;
use crate::store::{self, Cursor, StoreError};

/// What the handlers share.
#[derive(Debug)]
pub struct OrderService {
    pub host: EntityHost<Orders>,
    pub pool: PgPool,
    /// Asks the catalog for prices.
    pub catalog: Caller,
    pub clock: SharedClock,
    /// How long a checkout has to be confirmed.
    pub deadline: Duration,
}

/// Every order command, on the partitions this instance owns.
pub fn routes(service: Arc<OrderService>, partitions: &[Partition], partition_count: u16) -> Routes<OrderService> {
    let owned = || partitions.iter().copied();
    Routes::from_arc(service)
        .on_partitioned(owned(), partition_count, |s, c: CommandEnvelope<PlaceOrder>| async move { s.place(c).await })
        .on_partitioned(owned(), partition_count, |s, c: CommandEnvelope<CancelOrder>| async move { s.cancel(c).await })
        .on_partitioned(owned(), partition_count, |s, c: CommandEnvelope<GetOrder>| async move { s.get(c).await })
        .on(|s, c: CommandEnvelope<ListOrders>| async move { s.list(c).await })
}

fn stored(error: &StoreError) -> ReplyError {
    tracing::error!(%error, "reading orders failed");
    ReplyError::new(ErrorKind::Internal, "orders could not be read")
}

fn refused(error: &HostError<Rejection>) -> ReplyError {
    match error {
        HostError::Rejected(Rejection::NotPlaced) => not_found(),
        HostError::Rejected(rejection @ Rejection::KeyReused) => {
            ReplyError::invalid("idempotency_key", rejection.to_string())
        }
        other => other.reply(),
    }
}

fn not_found() -> ReplyError {
    ReplyError::new(ErrorKind::NotFound, "no such order")
}

impl OrderService {
    async fn place(&self, command: CommandEnvelope<PlaceOrder>) -> Result<OrderAccepted, ReplyError> {
        let principal = command.signed_in()?;
        let data = &command.data;
        if principal.user_id != data.customer_id {
            return Err(ReplyError::new(ErrorKind::Forbidden, "orders are placed by their own customer"));
        }
        if command.key.as_ref() != Some(&Orders::key(&data.order_id)) {
            return Err(ReplyError::invalid("order_id", "the command's key must be the order id"));
        }
        // A retry finds its order without asking the catalog again; a new
        // checkout's actor keeps the (empty) state it loaded for the placement.
        let items = merge_quantities(data.lines.iter().map(|line| (line.product_id, line.quantity.get())));
        let find = OrderCommand::Find { request_digest: data.request_digest.as_str().to_owned(), items };
        match self.host.send_with(data.order_id, find, Origin::from(&command).into()).await {
            Ok(_) => return Ok(OrderAccepted { order_id: data.order_id }),
            Err(HostError::Rejected(Rejection::NotPlaced)) => {}
            Err(error) => return Err(refused(&error)),
        }
        let lines = self.price(&data.lines, &command.id.to_string()).await?;
        let total = domain::sum(lines.iter()).ok_or_else(|| {
            ReplyError::invalid("lines", "an order is paid in one currency; these products mix several")
        })?;
        let at = self.clock.now();
        let deadline = chrono::Duration::from_std(self.deadline).unwrap_or(chrono::Duration::MAX);
        let placement = Placement {
            order_id: data.order_id,
            customer_id: data.customer_id,
            idempotency_key: data.idempotency_key.as_str().to_owned(),
            request_digest: data.request_digest.as_str().to_owned(),
            lines,
            total,
            shipping_address: data.shipping_address.clone(),
            payment_method: data.payment_method.clone(),
            deadline_at: at + deadline,
        };
        let place = OrderCommand::Place { placement: Box::new(placement), at };
        self.host
            .send_with(data.order_id, place, Origin::from(&command).into())
            .await
            .map_err(|error| refused(&error))?;
        Ok(OrderAccepted { order_id: data.order_id })
    }

    /// Prices each line from the catalog (never from the cart), all at once.
    async fn price(
        &self,
        lines: &NonEmpty<ProductQuantity>,
        request_id: &str,
    ) -> Result<NonEmpty<PricedLine>, ReplyError> {
        let asks = lines.iter().map(|line| async move {
            let ask = CommandEnvelope::new(None, None, GetProduct { product_id: line.product_id });
            let product = match self.catalog.call::<_, ProductView>(&ask, request_id).await {
                Ok(Reply::Ok(product)) => product,
                Ok(Reply::Error(error)) if error.kind == ErrorKind::NotFound => {
                    return Err(ReplyError::invalid("lines", format!("product {} is not for sale", line.product_id)));
                }
                Ok(Reply::Error(error)) => return Err(error),
                Err(error) => return Err(unavailable(&error)),
            };
            Ok(PricedLine {
                product_id: product.id,
                seller_id: product.seller_id,
                quantity: line.quantity,
                unit_price: product.price,
            })
        });
        let priced = futures::future::try_join_all(asks).await?;
        NonEmpty::try_from(priced).map_err(|_| ReplyError::invalid("lines", "an order needs a line"))
    }

    /// The order, if `principal` may see it (else the same 404 as for none).
    async fn visible(&self, id: OrderId, principal: &Principal) -> Result<(Order, OrderView), ReplyError> {
        let order = store::order(&self.pool, id).await.map_err(|error| stored(&error))?.ok_or_else(not_found)?;
        let view = domain::view(&order, principal).ok_or_else(not_found)?;
        Ok((order, view))
    }

    async fn cancel(&self, command: CommandEnvelope<CancelOrder>) -> Result<OrderView, ReplyError> {
        let principal = command.signed_in()?;
        let id = command.data.order_id;
        let (order, _) = self.visible(id, &principal).await?;
        if !domain::may_cancel(&order, &principal) {
            return Err(ReplyError::new(ErrorKind::Forbidden, "only the customer or an admin may cancel an order"));
        }
        let cancel = OrderCommand::Cancel { at: self.clock.now() };
        self.host.send_with(id, cancel, Origin::from(&command).into()).await.map_err(|error| refused(&error))?;
        Ok(self.visible(id, &principal).await?.1)
    }

    async fn get(&self, command: CommandEnvelope<GetOrder>) -> Result<OrderView, ReplyError> {
        let principal = command.signed_in()?;
        Ok(self.visible(command.data.order_id, &principal).await?.1)
    }

    async fn list(&self, command: CommandEnvelope<ListOrders>) -> Result<OrderPage, ReplyError> {
        let principal = command.signed_in()?;
        let limit = command.data.limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(ReplyError::invalid("limit", "must be from 1 to 100"));
        }
        let cursor = match &command.data.cursor {
            Some(text) => {
                Some(Cursor::decode(text).ok_or_else(|| ReplyError::invalid("cursor", "not a cursor we gave"))?)
            }
            None => None,
        };
        let viewer = Viewer::of(&principal, command.data.sales)
            .ok_or_else(|| ReplyError::new(ErrorKind::Forbidden, "only sellers have sales"))?;
        let mut orders = store::list(&self.pool, viewer, command.data.status, cursor, limit + 1)
            .await
            .map_err(|error| stored(&error))?;
        let next_cursor = if orders.len() > limit as usize {
            orders.truncate(limit as usize);
            orders.last().map(|order| Cursor::after(order).encode())
        } else {
            None
        };
        let items = orders.iter().filter_map(|order| domain::view(order, &principal)).collect();
        Ok(OrderPage { items, next_cursor })
    }
}

fn unavailable(error: &CallError) -> ReplyError {
    tracing::warn!(%error, "the catalog did not answer a price");
    ReplyError::new(ErrorKind::Overloaded, "the catalog is not answering; retry shortly").retry_after(1)
}
