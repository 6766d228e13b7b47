//! A value loaded from the database and trusted for a while, for lookups on the hot path
//! (registered tenants, partition bounds) that must not cost a query per event.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A cached value is reloaded when older than `ttl`, or when it cannot answer a lookup and is
/// older than `miss_interval` (so something created a moment ago is found quickly, yet a flood
/// of lookups that can never succeed costs at most one load per `miss_interval`).
pub struct Cached<T> {
    ttl: Duration,
    miss_interval: Duration,
    slot: Mutex<Option<(Arc<T>, Instant)>>,
}

impl<T> Cached<T> {
    pub fn new(ttl: Duration, miss_interval: Duration) -> Self {
        Cached {
            ttl,
            miss_interval,
            slot: Mutex::new(None),
        }
    }

    /// The cached value if it may be used: fresh, and either `answers` it or too recently
    /// loaded to be worth loading again.
    pub fn fresh(&self, answers: impl FnOnce(&T) -> bool) -> Option<Arc<T>> {
        let (value, loaded_at) = self
            .slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        let age = loaded_at.elapsed();
        (age < self.ttl && (age < self.miss_interval || answers(&value))).then_some(value)
    }

    /// Replaces the cached value with a newly loaded one.
    pub fn store(&self, value: T) -> Arc<T> {
        let value = Arc::new(value);
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((value.clone(), Instant::now()));
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_cache_is_never_fresh() {
        let c: Cached<u32> = Cached::new(Duration::from_secs(60), Duration::ZERO);
        assert!(c.fresh(|_| true).is_none());
    }

    #[test]
    fn a_miss_reloads_only_after_the_miss_interval() {
        let c = Cached::new(Duration::from_secs(60), Duration::from_secs(60));
        c.store(1u32);
        // Recently loaded: used even though it cannot answer.
        assert_eq!(c.fresh(|v| *v == 2).as_deref(), Some(&1));
        let c = Cached::new(Duration::from_secs(60), Duration::ZERO);
        c.store(1u32);
        assert!(c.fresh(|v| *v == 2).is_none());
        assert_eq!(c.fresh(|v| *v == 1).as_deref(), Some(&1));
    }

    #[test]
    fn expired_values_are_reloaded() {
        let c = Cached::new(Duration::ZERO, Duration::ZERO);
        c.store(1u32);
        assert!(c.fresh(|_| true).is_none());
    }
}
