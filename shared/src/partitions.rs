//! Which event times the existing partitions of `events` can hold, cached: reading the bounds
//! from the catalog takes about 20 ms with 745 hourly partitions, too much for every batch.

use crate::cache::Cached;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::GenericClient;

/// How long partition bounds are trusted. Upkeep creates partitions a day ahead, so a stale
/// view only matters for partitions dropped meanwhile, and COPY catches those (the row is then
/// dead-lettered as `no_partition` after a fresh look).
const TTL: Duration = Duration::from_secs(60);
const MISS_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Sorted, non-overlapping `[from, to)` ranges of the partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionMap(Vec<(DateTime<Utc>, DateTime<Utc>)>);

impl PartitionMap {
    pub fn new(mut bounds: Vec<(DateTime<Utc>, DateTime<Utc>)>) -> Self {
        bounds.sort();
        PartitionMap(bounds)
    }

    pub fn covers(&self, t: DateTime<Utc>) -> bool {
        // The last partition starting at or before t is the only candidate.
        let after = self.0.partition_point(|(from, _)| *from <= t);
        after > 0 && t < self.0[after - 1].1
    }
}

pub struct PartitionCache {
    map: Cached<PartitionMap>,
}

impl Default for PartitionCache {
    fn default() -> Self {
        PartitionCache {
            map: Cached::new(TTL, MISS_RELOAD_INTERVAL),
        }
    }
}

impl PartitionCache {
    /// Bounds fresh enough to judge `times`.
    pub async fn get<C: GenericClient>(
        &self,
        client: &C,
        times: impl IntoIterator<Item = DateTime<Utc>>,
    ) -> Result<Arc<PartitionMap>, tokio_postgres::Error> {
        if let Some(map) = self.map.fresh(|m| times.into_iter().all(|t| m.covers(t))) {
            return Ok(map);
        }
        self.reload(client).await
    }

    /// Bounds read now.
    pub async fn reload<C: GenericClient>(
        &self,
        client: &C,
    ) -> Result<Arc<PartitionMap>, tokio_postgres::Error> {
        let rows = client
            .query(
                "SELECT from_value, to_value FROM partition_bounds('events')",
                &[],
            )
            .await?;
        Ok(self.map.store(PartitionMap::new(
            rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn covers_half_open_ranges_with_gaps() {
        let m = PartitionMap::new(vec![
            (t("2026-11-26T11:00:00Z"), t("2026-11-26T12:00:00Z")),
            (t("2026-11-26T09:00:00Z"), t("2026-11-26T10:00:00Z")),
        ]);
        assert!(m.covers(t("2026-11-26T09:00:00Z")));
        assert!(m.covers(t("2026-11-26T09:59:59.999Z")));
        assert!(!m.covers(t("2026-11-26T10:00:00Z")));
        assert!(!m.covers(t("2026-11-26T10:30:00Z")));
        assert!(m.covers(t("2026-11-26T11:00:00Z")));
        assert!(!m.covers(t("2026-11-26T12:00:00Z")));
        assert!(!m.covers(t("2026-11-26T08:00:00Z")));
        assert!(!PartitionMap::default().covers(t("2026-11-26T08:00:00Z")));
    }
}
