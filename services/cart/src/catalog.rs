//! What the catalog says about a product (does it exist, its name and
//! price), asked with `cmd.catalog.get_product` before a line reaches the
//! cart's actor, and reused for a short while: a customer filling a cart asks
//! about the same products again and again.
//!
//! Only products found are kept: an unknown id may be created a moment later,
//! while a product taken off sale is at worst still added for the reuse period
//! (the order prices every line from the catalog again and refuses it then).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use emporium_nats::{Caller, SharedClock};
use emporium_schemas::commands::catalog::{GetProduct, ProductView};
use emporium_schemas::values::ProductId;
use emporium_schemas::{CommandEnvelope, ErrorKind, Principal, Reply, ReplyError};

use crate::domain::Listing;

/// Most products remembered; beyond it the expired ones go, then all.
const CAPACITY: usize = 10_000;

/// Product look-ups with a short memory.
#[derive(Debug)]
pub struct ProductCatalog {
    caller: Caller,
    clock: SharedClock,
    reuse_for: TimeDelta,
    known: Mutex<HashMap<ProductId, (Listing, DateTime<Utc>)>>,
}

impl ProductCatalog {
    /// Asks through `caller`; an answer is reused for `reuse_for` (by `clock`).
    pub fn new(caller: Caller, clock: SharedClock, reuse_for: Duration) -> Self {
        let reuse_for = TimeDelta::from_std(reuse_for).unwrap_or(TimeDelta::MAX);
        Self { caller, clock, reuse_for, known: Mutex::new(HashMap::new()) }
    }

    /// The product as the catalog lists it, `None` if the catalog has no such
    /// product; an error if the catalog could not be asked.
    pub async fn listing(&self, product_id: ProductId, asker: Principal) -> Result<Option<Listing>, ReplyError> {
        let now = self.clock.now();
        if let Some(listing) = self.remembered(product_id, now) {
            return Ok(Some(listing));
        }
        let question = CommandEnvelope::new(None, Some(asker), GetProduct { product_id });
        let answer = self.caller.call::<GetProduct, ProductView>(&question, &question.id.to_string()).await;
        match answer {
            Ok(Reply::Ok(product)) => {
                let listing = Listing { product_id: product.id, name: product.name, unit_price: product.price };
                self.remember(listing.clone(), now);
                Ok(Some(listing))
            }
            Ok(Reply::Error(refusal)) if refusal.kind == ErrorKind::NotFound => Ok(None),
            Ok(Reply::Error(refusal)) => Err(unavailable(&refusal)),
            Err(error) => Err(unavailable(&error)),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<ProductId, (Listing, DateTime<Utc>)>> {
        // A panic while holding the lock leaves a map that is still a valid memory.
        self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remembered(&self, product_id: ProductId, now: DateTime<Utc>) -> Option<Listing> {
        let entries = self.entries();
        let (listing, asked_at) = entries.get(&product_id)?;
        (now.signed_duration_since(*asked_at) < self.reuse_for).then(|| listing.clone())
    }

    fn remember(&self, listing: Listing, now: DateTime<Utc>) {
        let mut entries = self.entries();
        if entries.len() >= CAPACITY {
            entries.retain(|_, (_, asked_at)| now.signed_duration_since(*asked_at) < self.reuse_for);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(listing.product_id, (listing, now));
    }
}

fn unavailable(error: &dyn std::fmt::Display) -> ReplyError {
    tracing::warn!(%error, "catalog look-up failed");
    ReplyError::new(ErrorKind::Overloaded, "the catalog is not answering; try again shortly").retry_after(1)
}
