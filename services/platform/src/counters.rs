//! Process-wide counters for `/metrics` (Prometheus text): services count
//! what an operator must see (a capture that gave up, stale events skipped)
//! without each carrying its own registry.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// A monotonically increasing count, registered once under its name.
#[derive(Debug)]
pub struct Counter {
    name: &'static str,
    help: &'static str,
    value: AtomicU64,
}

impl Counter {
    pub fn increment(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

fn registry() -> &'static Mutex<BTreeMap<&'static str, &'static Counter>> {
    static REGISTRY: OnceLock<Mutex<BTreeMap<&'static str, &'static Counter>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// The counter called `name` (`<service>_<what>_total`), registered on first use.
/// Counters live as long as the process (a handful, leaked once each).
pub fn counter(name: &'static str, help: &'static str) -> &'static Counter {
    let mut counters = registry().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    counters.entry(name).or_insert_with(|| Box::leak(Box::new(Counter { name, help, value: AtomicU64::new(0) })))
}

/// Every counter in the Prometheus text format.
pub fn render() -> String {
    let counters = registry().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut text = String::new();
    for counter in counters.values() {
        let _ = writeln!(text, "# HELP {} {}", counter.name, counter.help);
        let _ = writeln!(text, "# TYPE {} counter", counter.name);
        let _ = writeln!(text, "{} {}", counter.name, counter.get());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_is_registered_once_and_rendered() {
        let first = counter("test_things_total", "things seen");
        let again = counter("test_things_total", "things seen");
        first.add(2);
        again.increment();
        assert_eq!(first.get(), 3);
        assert!(render().contains("test_things_total 3"));
    }
}
