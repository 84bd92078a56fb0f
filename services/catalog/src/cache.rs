//! Product details kept in process memory (cache-aside).
//!
//! The write path invalidates an entry after its commit and before it
//! replies, so an acknowledged change is never followed by a stale read from
//! this instance. Other instances hear the catalog's own events (and
//! inventory's stock changes) and invalidate theirs; a short time to live
//! bounds what a lost notification could cost.
//!
//! A read that misses loads from Postgres and then fills the entry, but only
//! if that product was not invalidated since it started: otherwise a load that began
//! before a write could put the old row back after the write's invalidation.

use std::collections::HashMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use emporium_schemas::commands::catalog::ProductView;
use emporium_schemas::values::ProductId;

#[derive(Debug)]
pub struct ProductCache {
    inner: RwLock<Inner>,
    capacity: usize,
    ttl: Duration,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<ProductId, (ProductView, Instant)>,
    /// Counts invalidations; a ticket remembers the count its read began at.
    epoch: u64,
    /// The epoch of each product's last invalidation, so a write to one
    /// product refuses only fills of that product. Bounded: when it grows
    /// past the capacity it is cleared and `floor` moves up instead, which
    /// refuses every fill that began before.
    invalidated: HashMap<ProductId, u64>,
    floor: u64,
}

/// Taken before loading a product; fills only if still current.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

impl ProductCache {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self { inner: RwLock::default(), capacity, ttl }
    }

    // A panic while holding the lock leaves maps that are still a valid cache.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached product, or a ticket to load and fill it with. Readers
    /// share the lock; an expired entry is left for the next fill to replace.
    pub fn get(&self, id: ProductId) -> Result<ProductView, Ticket> {
        let inner = self.read();
        match inner.entries.get(&id) {
            Some((product, stored)) if stored.elapsed() < self.ttl => Ok(product.clone()),
            _ => Err(Ticket(inner.epoch)),
        }
    }

    /// Stores a product loaded under `ticket`, unless it was invalidated since.
    pub fn fill(&self, ticket: Ticket, product: &ProductView) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.write();
        let invalidated_since = inner.invalidated.get(&product.id).is_some_and(|&at| at > ticket.0);
        if ticket.0 < inner.floor || invalidated_since {
            return;
        }
        if inner.entries.len() >= self.capacity {
            // Full: drop the oldest eighth at once rather than one entry per fill.
            let mut ages: Vec<(Instant, ProductId)> = inner.entries.iter().map(|(id, (_, at))| (*at, *id)).collect();
            let drop = self.capacity.div_ceil(8).min(ages.len());
            ages.select_nth_unstable(drop - 1);
            for (_, id) in &ages[..drop] {
                inner.entries.remove(id);
            }
        }
        inner.entries.insert(product.id, (product.clone(), Instant::now()));
    }

    pub fn invalidate(&self, id: ProductId) {
        let mut inner = self.write();
        inner.epoch += 1;
        let epoch = inner.epoch;
        inner.entries.remove(&id);
        if inner.invalidated.len() >= self.capacity.max(1) {
            inner.invalidated.clear();
            inner.floor = epoch;
        }
        inner.invalidated.insert(id, epoch);
    }

    pub fn len(&self) -> usize {
        self.read().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::Utc;
    use emporium_schemas::commands::catalog::Rating;
    use emporium_schemas::values::{Currency, Money, StockLevel, UserId};

    use super::*;

    fn product(name: &str) -> ProductView {
        ProductView {
            id: ProductId::new_v7(),
            seller_id: UserId::new_v7(),
            name: name.into(),
            description: String::new(),
            price: Money { amount: 100.try_into().unwrap(), currency: Currency::try_from("EUR".to_owned()).unwrap() },
            category_id: None,
            stock: StockLevel::default(),
            rating: Rating::default(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn given_a_miss_when_filled_then_the_next_read_hits() {
        let cache = ProductCache::new(10, Duration::from_secs(60));
        let lamp = product("lamp");
        let ticket = cache.get(lamp.id).unwrap_err();
        cache.fill(ticket, &lamp);
        assert_eq!(cache.get(lamp.id).unwrap(), lamp);
    }

    #[test]
    fn given_a_load_racing_a_write_when_it_fills_late_then_the_old_row_is_not_kept() {
        let cache = ProductCache::new(10, Duration::from_secs(60));
        let old = product("lamp");
        let ticket = cache.get(old.id).unwrap_err(); // a read starts loading the old row…
        cache.invalidate(old.id); // …a write commits and invalidates…
        cache.fill(ticket, &old); // …and the read's late fill is refused.
        assert!(cache.get(old.id).is_err());
    }

    #[test]
    fn given_a_write_to_another_product_when_a_load_fills_then_it_is_kept() {
        let cache = ProductCache::new(10, Duration::from_secs(60));
        let (lamp, rug) = (product("lamp"), product("rug"));
        let ticket = cache.get(lamp.id).unwrap_err();
        cache.invalidate(rug.id);
        cache.fill(ticket, &lamp);
        assert_eq!(cache.get(lamp.id).unwrap(), lamp);
    }

    #[test]
    fn given_an_expired_entry_when_read_then_it_misses() {
        let cache = ProductCache::new(10, Duration::ZERO);
        let lamp = product("lamp");
        cache.fill(cache.get(lamp.id).unwrap_err(), &lamp);
        assert!(cache.get(lamp.id).is_err());
    }

    #[test]
    fn given_a_full_cache_when_filled_then_it_stays_within_capacity() {
        let cache = ProductCache::new(8, Duration::from_secs(60));
        for i in 0..20 {
            let p = product(&format!("p{i}"));
            cache.fill(cache.get(p.id).unwrap_err(), &p);
        }
        assert!(cache.len() <= 8);
    }
}
