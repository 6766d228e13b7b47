//! In-memory caches: [`Cached`], a value loaded from the database and trusted for a while, for
//! lookups on the hot path (registered tenants, partition bounds) that must not cost a query
//! per event; and [`BoundedMap`], a keyed cache with a size budget (verified credentials, the
//! reports' kept parts).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
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

/// A map that never holds more than `capacity` units of weight (entries, bytes: the owner
/// says what one entry weighs). When an insert would overflow it, the entries still worth
/// keeping (the owner's `keep`) stay and the rest go; if that is not enough, everything goes.
/// Crude but O(1) between overflows, and bounded: no entry can make it grow past its budget.
pub struct BoundedMap<K, V> {
    capacity: usize,
    weight: usize,
    entries: HashMap<K, (V, usize)>,
}

impl<K: Eq + Hash, V> BoundedMap<K, V> {
    pub fn new(capacity: usize) -> Self {
        BoundedMap {
            capacity,
            weight: 0,
            entries: HashMap::new(),
        }
    }

    pub fn get<Q: Eq + Hash + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.entries.get(key).map(|(v, _)| v)
    }

    /// Keeps `value` under `key`, unless it alone weighs more than the whole budget.
    pub fn insert(&mut self, key: K, value: V, weight: usize, keep: impl Fn(&K, &V) -> bool) {
        if weight > self.capacity {
            return;
        }
        self.remove(&key);
        if self.weight + weight > self.capacity {
            self.entries.retain(|k, (v, _)| keep(k, v));
            self.weight = self.entries.values().map(|(_, w)| w).sum();
            if self.weight + weight > self.capacity {
                self.entries.clear();
                self.weight = 0;
            }
        }
        self.weight += weight;
        self.entries.insert(key, (value, weight));
    }

    pub fn remove<Q: Eq + Hash + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let (value, weight) = self.entries.remove(key)?;
        self.weight -= weight;
        Some(value)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The total weight held.
    pub fn weight(&self) -> usize {
        self.weight
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

    #[test]
    fn a_bounded_map_keeps_what_is_worth_keeping_when_full() {
        let mut m = BoundedMap::new(10);
        m.insert("a", 1, 4, |_, _| true);
        m.insert("b", 2, 4, |_, _| true);
        assert_eq!(m.weight(), 8);
        // Overflow: only even values are worth keeping, so "a" goes.
        m.insert("c", 3, 4, |_, v| v % 2 == 0);
        assert_eq!(
            (m.get(&"a"), m.get(&"b"), m.get(&"c")),
            (None, Some(&2), Some(&3))
        );
        assert_eq!(m.weight(), 8);
        // Nothing worth keeping: everything goes.
        m.insert("d", 4, 4, |_, _| false);
        assert_eq!((m.len(), m.weight()), (1, 4));
        // Replacing an entry frees its old weight first.
        m.insert("d", 5, 9, |_, _| false);
        assert_eq!((m.get(&"d"), m.weight()), (Some(&5), 9));
        // Heavier than the budget: not kept, nothing evicted.
        m.insert("e", 6, 11, |_, _| false);
        assert_eq!((m.get(&"e"), m.len()), (None, 1));
        assert_eq!(m.remove(&"d"), Some(5));
        assert!(m.is_empty() && m.weight() == 0);
    }
}
