//! What the catalog learns from others and tells its peers: inventory's
//! stock levels become the products' read-model columns, delivered orders
//! become the verified purchases that reviews need, and every instance drops
//! cached products that changed.

use std::sync::Arc;

use emporium_actors::{Commit, CommitError, GroupCommit, InboxEntry};
use emporium_nats::{Delivery, Handled, Handler, HandlerError};
use emporium_schemas::Envelope;
use emporium_schemas::events::inventory::StockChanged;
use emporium_schemas::events::order::OrderDelivered;
use emporium_schemas::values::ProductId;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::cache::ProductCache;
use crate::store::{Purchases, StockUpdate};

/// Core NATS subject on which an instance tells the others that it changed
/// a product's read model (`<prefix>.<product id>`). Product changes of its
/// own need no notice: their events say so.
pub const READ_MODEL_CHANGED: &str = "catalog.read_model_changed";

/// Applies `inventory.stock_changed` to the product; the newest `seq` wins,
/// so duplicates, replays and stale events change nothing. Writes go through
/// the group-commit writer: the stock changes of many products share a commit.
#[derive(Debug)]
pub struct StockProjection {
    pub writer: GroupCommit,
    pub cache: Arc<ProductCache>,
    pub nats: async_nats::Client,
}

impl Handler for StockProjection {
    type Event = StockChanged;

    async fn handle(&self, event: Envelope<StockChanged>, _delivery: &Delivery) -> Result<Handled, HandlerError> {
        let product = event.data.product_id;
        let update = StockUpdate { product, level: event.data.level, seq: event.seq.get() };
        match self.writer.commit(Commit { state: Some(Box::new(update)), ..Commit::default() }).await {
            Ok(()) => {}
            // A newer level was applied already.
            Err(CommitError::Conflict) => return Ok(Handled::Skipped),
            Err(error) => return Err(HandlerError::Retry(error.to_string())),
        }
        self.cache.invalidate(product);
        // Best effort: a peer that misses it serves the old level until its cache entry expires.
        if let Err(error) = self.nats.publish(format!("{READ_MODEL_CHANGED}.{product}"), Default::default()).await {
            tracing::debug!(%error, "peers not told of a stock change");
        }
        Ok(Handled::Applied)
    }
}

/// The delivered-orders consumer's name in the inbox.
pub const PURCHASES_CONSUMER: &str = "catalog-order";

/// Learns from `order.delivered` who received which products: the verified
/// purchases a review needs. The rows and the inbox entry commit together
/// through the group-commit writer, so a redelivered event adds nothing; the
/// event is the order's last, so there is no `seq` to compare.
#[derive(Debug)]
pub struct DeliveredOrders {
    pub writer: GroupCommit,
}

impl Handler for DeliveredOrders {
    type Event = OrderDelivered;

    async fn handle(&self, event: Envelope<OrderDelivered>, _delivery: &Delivery) -> Result<Handled, HandlerError> {
        let delivered = &event.data;
        let purchases = Purchases {
            customer: delivered.customer_id,
            order: delivered.order_id,
            products: delivered.lines.as_slice().iter().map(|line| line.product_id).collect(),
            delivered_at: event.occurred_at,
        };
        let inbox = InboxEntry { consumer: Arc::from(PURCHASES_CONSUMER), event: event.id };
        let commit = Commit { inbox: Some(inbox), state: Some(Box::new(purchases)), outbox: Vec::new() };
        match self.writer.commit(commit).await {
            Ok(()) => Ok(Handled::Applied),
            Err(CommitError::Duplicate) => Ok(Handled::Skipped),
            Err(error) => Err(HandlerError::Retry(error.to_string())),
        }
    }
}

/// Drops cached products as their changes are announced: the catalog's own
/// events (published after their commit) and peers' read-model notices.
pub async fn invalidate_on_changes(
    nats: async_nats::Client,
    cache: Arc<ProductCache>,
    stop: CancellationToken,
) -> Result<(), async_nats::SubscribeError> {
    let events = nats.subscribe("evt.catalog.>").await?;
    let notices = nats.subscribe(format!("{READ_MODEL_CHANGED}.*")).await?;
    let mut changes = futures::stream::select(events, notices);
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            message = changes.next() => message,
        };
        let Some(message) = message else { return Ok(()) };
        // The product id is the subject's last token in both cases.
        if let Some(id) = message.subject.rsplit('.').next().and_then(|token| Uuid::try_parse(token).ok()) {
            cache.invalidate(ProductId::from_uuid(id));
        }
    }
}
