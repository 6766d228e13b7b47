//! The kept rolled parts of breakdowns and summaries, and the single flight that reads each once.

use super::sql::{
    fresh_events, query, raw_value, rolled_rows, scope, NamedParams, Param, Params, Scope,
};
use super::vocabulary::{
    ranked, Breakdown, BreakdownRow, Dimension, Filters, Granularity, Metrics, Range, Ranking,
    ReportError, Summary,
};
use crate::cache::BoundedMap;
use crate::sketch::Sketch;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio_postgres::{Client, Row};

/// The rolled-up part of breakdowns and totals, kept by the rollup watermark it was read at,
/// so that a repeated report does not merge the same sketches again (a 30-day breakdown merges
/// two sketches of each value on each day: about 430 at 1 M events, most of its time).
///
/// Why a kept part is exact: the rollup rows and the watermark move in one transaction, so the
/// rows a range reads are a function of the watermark; the only other change to them is
/// retention, which deletes buckets older than the rollup keeps, and a range that reaches
/// within three days of that cutoff is never cached (checked at every read). The part is keyed
/// by everything that shapes it: tenant, time zone, granularity, aligned range, dimension,
/// filters and watermark. Every read still looks for events above the kept part's watermark
/// (the raw events not yet rolled up, or rolled up since) and merges them in, in the
/// statement that reads them: reports stay real time and count the seam once.
pub struct RolledCache {
    /// Largest total size of the kept sketches, in bytes.
    capacity: usize,
    kept: Mutex<BoundedMap<RolledKey, Arc<Rolled>>>,
    hits: AtomicU64,
    reads: AtomicU64,
    /// Parts being read now: requests that miss the same part at once (as every viewer of a
    /// dashboard does after a rollup run) wait for one read instead of each making its own.
    flights: Mutex<HashMap<RolledKey, Arc<Flight>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RolledKey {
    tenant_id: i64,
    time_zone: String,
    granularity: Granularity,
    range: (DateTime<Utc>, DateTime<Utc>),
    dimension: Option<Dimension>,
    filters: Filters,
    watermark: i64,
}

/// The rolled part of one report: its groups (dimension values; one `""` group for totals) in
/// report order (most events first, then value), as of `watermark`.
struct Rolled {
    watermark: i64,
    groups: Vec<RolledGroup>,
}

struct RolledGroup {
    value: String,
    events: i64,
    revenue: Decimal,
    purchases: i64,
    /// The merged sketches, for merging fresh events in.
    devices: Sketch,
    sessions: Sketch,
    devices_estimate: f64,
    sessions_estimate: f64,
}

impl Rolled {
    fn bytes(&self) -> usize {
        self.groups
            .iter()
            .map(|g| g.value.len() + g.devices.bytes() + g.sessions.bytes() + 64)
            .sum()
    }
}

impl RolledGroup {
    fn metrics(&self) -> Metrics {
        Metrics::new(
            Some(self.events),
            Some(self.revenue),
            Some(self.purchases),
            Some(self.devices_estimate),
            Some(self.sessions_estimate),
        )
    }
}

impl RolledCache {
    /// A cache keeping at most `capacity` bytes of sketches.
    pub fn new(capacity: usize) -> RolledCache {
        RolledCache {
            capacity,
            kept: Mutex::new(BoundedMap::new(capacity)),
            hits: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            flights: Mutex::new(HashMap::new()),
        }
    }

    /// How many rolled parts were read from the database for keeping.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// How many reads are in flight now (requests waiting for a part being read).
    pub fn in_flight(&self) -> usize {
        self.flights.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// How many reads found their rolled part kept.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    fn get(&self, key: &RolledKey) -> Option<Arc<Rolled>> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.get(key).cloned()
    }

    /// Keeps `rolled` under `key`. When full, parts read at other watermarks go first (they
    /// will not be asked for again once the rollup has moved on), then everything.
    fn put(&self, key: RolledKey, rolled: Arc<Rolled>) {
        let size = rolled.bytes();
        if size > self.capacity / 8 {
            return;
        }
        let watermark = key.watermark;
        self.kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, rolled, size, |k, _| k.watermark == watermark);
    }

    /// [`breakdown`](super::breakdown), reading the rolled part from the cache when it is there.
    pub async fn breakdown(
        &self,
        client: &Client,
        tenant_id: i64,
        range: &Range,
        granularity: Granularity,
        filters: &Filters,
        ranking: Ranking,
    ) -> Result<Breakdown, ReportError> {
        let dimension = ranking.dimension;
        let scope = scope(client, tenant_id, range, granularity).await?;
        let rows = self
            .groups(
                client,
                tenant_id,
                &scope,
                granularity,
                Some(dimension),
                filters,
            )
            .await?;
        Ok(Breakdown {
            dimension,
            granularity,
            range: scope.range,
            rows: ranked(
                rows.into_iter()
                    .map(|(value, metrics)| BreakdownRow { value, metrics })
                    .collect(),
                ranking,
            ),
            freshness: scope.freshness,
        })
    }

    /// [`summary`](super::summary), reading the rolled parts from the cache when they are there.
    pub async fn summary(
        &self,
        client: &Client,
        tenant_id: i64,
        range: &Range,
        granularity: Granularity,
        filters: &Filters,
    ) -> Result<Summary, ReportError> {
        let current = self
            .totals(client, tenant_id, range, granularity, filters)
            .await?;
        let previous_range = current.1.range.previous();
        let previous = self
            .totals(client, tenant_id, &previous_range, granularity, filters)
            .await?;
        Ok(Summary::of(granularity, current, previous))
    }

    async fn totals(
        &self,
        client: &Client,
        tenant_id: i64,
        range: &Range,
        granularity: Granularity,
        filters: &Filters,
    ) -> Result<(Metrics, Scope), ReportError> {
        let scope = scope(client, tenant_id, range, granularity).await?;
        let groups = self
            .groups(client, tenant_id, &scope, granularity, None, filters)
            .await?;
        let metrics = match groups.into_iter().next() {
            Some((_, metrics)) => metrics,
            None => Metrics::new(None, None, None, None, None),
        };
        Ok((metrics, scope))
    }

    /// The report's groups with their metrics, in report order: the rolled part (kept or read
    /// now) merged with the raw events above its watermark.
    async fn groups(
        &self,
        client: &Client,
        tenant_id: i64,
        scope: &Scope,
        g: Granularity,
        dimension: Option<Dimension>,
        filters: &Filters,
    ) -> Result<Vec<(String, Metrics)>, ReportError> {
        let key = RolledKey {
            tenant_id,
            time_zone: scope.time_zone.clone(),
            granularity: g,
            range: (scope.range.from, scope.range.to),
            dimension,
            filters: filters.clone(),
            watermark: scope.freshness.rolled_up_to_event,
        };
        let cached = if scope.cacheable {
            self.get(&key)
        } else {
            None
        };
        let rolled = match cached {
            Some(rolled) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                rolled
            }
            None if scope.cacheable => {
                self.read_once(client, tenant_id, scope, g, dimension, filters, &key)
                    .await?
            }
            None => Arc::new(read_rolled(client, tenant_id, scope, g, dimension, filters).await?),
        };
        // Events above the kept watermark that were committed when the scope was read all have
        // event times from `fresh_from` on (their ranges are recorded with them): none in the
        // range means the rolled part is the answer.
        if scope.fresh_from >= scope.range.to {
            return Ok(rolled
                .groups
                .iter()
                .map(|group| (group.value.clone(), group.metrics()))
                .collect());
        }
        merge_fresh(client, tenant_id, scope, dimension, filters, &rolled).await
    }
}

/// A request's share in a flight: leaving (done, failed or dropped) takes the flight off the
/// map, so that a dropped reader leaves nothing behind.
struct FlightSeat<'a> {
    cache: &'a RolledCache,
    key: &'a RolledKey,
    flight: Arc<Flight>,
}

/// One read of a rolled part that several requests wait for: `None` when it failed.
type Flight = tokio::sync::OnceCell<Option<Arc<Rolled>>>;

impl Drop for FlightSeat<'_> {
    fn drop(&mut self) {
        let mut flights = self.cache.flights.lock().unwrap_or_else(|e| e.into_inner());
        if flights
            .get(self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            flights.remove(self.key);
        }
    }
}

impl RolledCache {
    /// The rolled part of `key`, read once for all the requests that miss it at the same
    /// time. The first reads; the others wait and take its part. If the reader's request is
    /// dropped, the next waiter reads; if its read fails, the reader answers with its error
    /// and each waiter reads on its own, at once, rather than queueing behind a failing read.
    #[allow(clippy::too_many_arguments)] // the part's parameters, and its key
    async fn read_once(
        &self,
        client: &Client,
        tenant_id: i64,
        scope: &Scope,
        g: Granularity,
        dimension: Option<Dimension>,
        filters: &Filters,
        key: &RolledKey,
    ) -> Result<Arc<Rolled>, ReportError> {
        let seat = {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            // A read that ended between this request's miss and now has kept its part.
            if let Some(rolled) = self.get(key) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(rolled);
            }
            FlightSeat {
                cache: self,
                key,
                flight: flights.entry(key.clone()).or_default().clone(),
            }
        };
        let mut failure = None;
        let failed = &mut failure;
        let kept = seat
            .flight
            .get_or_init(move || async move {
                self.reads.fetch_add(1, Ordering::Relaxed);
                match read_rolled(client, tenant_id, scope, g, dimension, filters).await {
                    Ok(rolled) => {
                        let rolled = Arc::new(rolled);
                        // Kept by the watermark it was read at (the rollup may have moved on
                        // since the scope was read).
                        self.put(
                            RolledKey {
                                watermark: rolled.watermark,
                                ..key.clone()
                            },
                            rolled.clone(),
                        );
                        Some(rolled)
                    }
                    Err(e) => {
                        *failed = Some(e);
                        None
                    }
                }
            })
            .await
            .clone();
        drop(seat);
        match (kept, failure) {
            (Some(rolled), _) => Ok(rolled),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(Arc::new(
                read_rolled(client, tenant_id, scope, g, dimension, filters).await?,
            )),
        }
    }
}

/// Reads a report's rolled part and the watermark it is as of, in one snapshot.
async fn read_rolled(
    client: &Client,
    tenant_id: i64,
    scope: &Scope,
    g: Granularity,
    dimension: Option<Dimension>,
    filters: &Filters,
) -> Result<Rolled, ReportError> {
    let bound = g.rolled_bound();
    let rollup = g.rollup();
    let tenant = Param::Tenant.placeholder();
    let rolled = rolled_rows(g, dimension, filters);
    // Written as a join, not a subquery in the target list, which Citus cannot push down.
    let sql = format!(
        "WITH w AS (SELECT last_event_id FROM rollup_state WHERE rollup = '{rollup}'),
         g AS (SELECT r.value, sum(r.event_count)::bigint AS event_count,
                      sum(r.revenue) AS revenue, sum(r.purchases)::bigint AS purchases,
                      hll_send(hll_union_agg(r.devices)) AS devices,
                      hll_send(hll_union_agg(r.sessions)) AS sessions,
                      hll_cardinality(hll_union_agg(r.devices)) AS devices_estimate,
                      hll_cardinality(hll_union_agg(r.sessions)) AS sessions_estimate
               FROM ({rolled}) r
               WHERE r.tenant_id = {tenant} AND {bound}
               GROUP BY r.value)
         SELECT w.last_event_id, g.value, g.event_count, g.revenue, g.purchases, g.devices,
                g.sessions, g.devices_estimate, g.sessions_estimate
         FROM w LEFT JOIN g ON true
         ORDER BY g.event_count DESC, g.value COLLATE \"C\""
    );
    let rows = query(client, &sql, &Params::new(tenant_id, scope, filters)).await?;
    let watermark = rows
        .first()
        .map(|r| r.get(0))
        .unwrap_or(scope.freshness.rolled_up_to_event);
    let mut groups = Vec::with_capacity(rows.len());
    for r in &rows {
        // The row of a range without rollup rows carries only the watermark.
        let Some(value) = r.get::<_, Option<String>>(1) else {
            continue;
        };
        groups.push(RolledGroup {
            value,
            events: r.get(2),
            revenue: r.get(3),
            purchases: r.get(4),
            devices: Sketch::from_bytes(r.get(5)).map_err(ReportError::Sketch)?,
            sessions: Sketch::from_bytes(r.get(6)).map_err(ReportError::Sketch)?,
            devices_estimate: r.get(7),
            sessions_estimate: r.get(8),
        });
    }
    Ok(Rolled { watermark, groups })
}

/// Merges the raw events above `rolled.watermark` in the range into the rolled part, in report
/// order. The database aggregates the fresh events per group, sketches included (small ones:
/// minutes of events); the sketches are merged here, so that the kept sketches are neither
/// sent back nor unpacked by the database at every read.
async fn merge_fresh(
    client: &Client,
    tenant_id: i64,
    scope: &Scope,
    dimension: Option<Dimension>,
    filters: &Filters,
    rolled: &Rolled,
) -> Result<Vec<(String, Metrics)>, ReportError> {
    let raw_dim = raw_value(dimension);
    let fresh = fresh_events(Param::KeptWatermark.placeholder());
    let sql = format!(
        "SELECT {raw_dim}, count(*), coalesce(sum(e.revenue), 0),
                count(*) FILTER (WHERE e.event_type = 'purchase'),
                hll_send(hll_add_agg(hll_hash_bigint(e.device_id), 14, 5)),
                hll_send(hll_add_agg(hll_hash_bigint(e.session_id), 14, 5))
         FROM events e
         WHERE {fresh}
         GROUP BY 1"
    );
    let params = Params {
        kept_watermark: Some(rolled.watermark),
        ..Params::new(tenant_id, scope, filters)
    };
    let rows = query(client, &sql, &params).await?;
    let mut fresh: HashMap<String, &Row> = rows.iter().map(|r| (r.get(0), r)).collect();
    let merge = |kept: Option<&RolledGroup>, row: &Row| -> Result<Metrics, ReportError> {
        let sketch =
            |column: usize| Sketch::from_bytes(row.get(column)).map_err(ReportError::Sketch);
        let (devices, sessions) = (sketch(4)?, sketch(5)?);
        let (devices, sessions) = match kept {
            Some(kept) => (
                kept.devices.union(&devices).map_err(ReportError::Sketch)?,
                kept.sessions
                    .union(&sessions)
                    .map_err(ReportError::Sketch)?,
            ),
            None => (devices, sessions),
        };
        let (events, revenue, purchases): (i64, Decimal, i64) =
            (row.get(1), row.get(2), row.get(3));
        let (kept_events, kept_revenue, kept_purchases) = kept.map_or((0, Decimal::ZERO, 0), |k| {
            (k.events, k.revenue, k.purchases)
        });
        Ok(Metrics::new(
            Some(kept_events + events),
            Some(kept_revenue + revenue),
            Some(kept_purchases + purchases),
            Some(devices.estimate()),
            Some(sessions.estimate()),
        ))
    };
    let mut groups = Vec::with_capacity(rolled.groups.len() + fresh.len());
    for kept in &rolled.groups {
        let metrics = match fresh.remove(&kept.value) {
            Some(row) => merge(Some(kept), row)?,
            None => kept.metrics(),
        };
        groups.push((kept.value.clone(), metrics));
    }
    for (value, row) in fresh {
        groups.push((value, merge(None, row)?));
    }
    // Report order: most events first, then value by code point (`COLLATE "C"`).
    groups.sort_by(|(a_value, a), (b_value, b)| {
        b.events.cmp(&a.events).then_with(|| a_value.cmp(b_value))
    });
    Ok(groups)
}
