//! Product details kept in process memory (cache-aside).
//!
//! The write path invalidates an entry after its commit and before it
//! replies, so an acknowledged change is never followed by a stale read from
//! this instance. Other instances hear the catalog's own events (and
//! inventory's stock changes) and invalidate theirs; a short time to live
//! bounds what a lost notification could cost.
//!
//! A read that misses loads from Postgres and then fills the entry, but only
//! if nothing was invalidated since it started: otherwise a load that began
//! before a write could put the old row back after the write's invalidation.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use emporium_schemas::commands::catalog::ProductView;
use emporium_schemas::values::ProductId;

#[derive(Debug)]
pub struct ProductCache {
    inner: Mutex<Inner>,
    capacity: usize,
    ttl: Duration,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<ProductId, (ProductView, Instant)>,
    /// Bumped by every invalidation; a fill must see the value its read started with.
    epoch: u64,
}

/// Taken before loading a product; fills only if still current.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

impl ProductCache {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self { inner: Mutex::default(), capacity, ttl }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves a map that is still a valid cache.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached product, or a ticket to load and fill it with.
    pub fn get(&self, id: ProductId) -> Result<ProductView, Ticket> {
        let mut inner = self.lock();
        match inner.entries.get(&id) {
            Some((product, stored)) if stored.elapsed() < self.ttl => Ok(product.clone()),
            Some(_) => {
                inner.entries.remove(&id);
                Err(Ticket(inner.epoch))
            }
            None => Err(Ticket(inner.epoch)),
        }
    }

    /// Stores a product loaded under `ticket`, unless anything was invalidated since.
    pub fn fill(&self, ticket: Ticket, product: &ProductView) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        if inner.epoch != ticket.0 {
            return;
        }
        if inner.entries.len() >= self.capacity {
            // Full: drop the oldest eighth at once rather than one entry per fill.
            let mut ages: Vec<(Instant, ProductId)> = inner.entries.iter().map(|(id, (_, at))| (*at, *id)).collect();
            ages.sort_unstable();
            for (_, id) in ages.into_iter().take(self.capacity.div_ceil(8)) {
                inner.entries.remove(&id);
            }
        }
        inner.entries.insert(product.id, (product.clone(), Instant::now()));
    }

    pub fn invalidate(&self, id: ProductId) {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.entries.remove(&id);
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
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
