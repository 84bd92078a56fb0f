//! The answers to `cmd.inventory.*`: setting and reading a product's stock.

use std::sync::Arc;

use emporium_nats::Routes;
use emporium_nats::rpc::internal;
use emporium_schemas::commands::inventory::{GetStock, ProductStock, SetStock};
use emporium_schemas::events::inventory::StockChangeReason;
use emporium_schemas::{CommandEnvelope, ErrorKind, Origin, ReplyError};

use crate::domain::{self, SetStockError};
use crate::saga::{Inventory, stock_changed};
use crate::store::{self, Cause, Delta, MovementReason};

/// Every inventory command, bound to its answer.
pub fn routes(inventory: Arc<Inventory>) -> Routes<Inventory> {
    Routes::from_arc(inventory).on(|s, c: CommandEnvelope<SetStock>| async move { s.set_stock(&c).await }).on(
        |s: Arc<Inventory>, c: CommandEnvelope<GetStock>| async move {
            let product_id = c.data.product_id;
            match store::stock(&s.pool, product_id).await {
                Ok(Some(stock)) => Ok(ProductStock { product_id, stock }),
                Ok(None) => Err(ReplyError::new(ErrorKind::NotFound, "no such product")),
                Err(error) => Err(internal(&error)),
            }
        },
    )
}

impl Inventory {
    async fn set_stock(&self, command: &CommandEnvelope<SetStock>) -> Result<ProductStock, ReplyError> {
        let principal = command.signed_in()?;
        let product = command.data.product_id;
        let mut tx = self.pool.begin().await.map_err(|e| internal(&e))?;
        let rows = store::lock_stock(&mut tx, [product]).await.map_err(|e| internal(&e))?;
        // Unknown (not learned from the catalog yet, or never) or delisted.
        let Some(row) = rows.get(&product).filter(|row| !row.stock.delisted) else {
            return Err(ReplyError::new(ErrorKind::NotFound, "no such product"));
        };
        let wanted =
            domain::set_on_hand(&principal, row.seller, row.stock, command.data.on_hand).map_err(|e| match e {
                SetStockError::NotOwner => ReplyError::new(ErrorKind::Forbidden, e.to_string()),
                SetStockError::BelowReserved { .. } => ReplyError::new(ErrorKind::Conflict, e.to_string()),
                SetStockError::TooMuch { .. } => ReplyError::invalid("quantity", e.to_string()),
            })?;
        if wanted == row.stock {
            return Ok(ProductStock { product_id: product, stock: wanted.level() });
        }
        let delta = i64::from(wanted.on_hand) - i64::from(row.stock.on_hand);
        let delta = Delta { product, on_hand: i32::try_from(delta).unwrap_or(0), reserved: 0 };
        let cause =
            Cause { reason: MovementReason::Set, actor: Some(principal.user_id), order: None, at: self.clock.now() };
        let changed = store::apply(&mut tx, &[delta], cause).await.map_err(|e| internal(&e))?;
        let Some((_, level, _)) = changed.first().copied() else {
            return Err(internal(&"the stock row vanished under its lock"));
        };
        let events =
            stock_changed(&changed, StockChangeReason::Set, Origin::from(command)).map_err(|e| internal(&e))?;
        emporium_nats::outbox::append(&mut tx, &events).await.map_err(|e| internal(&e))?;
        tx.commit().await.map_err(|e| internal(&e))?;
        self.outbox.wake();
        tracing::info!(product.id = %product, on_hand = level.on_hand, "stock set");
        Ok(ProductStock { product_id: product, stock: level })
    }
}
