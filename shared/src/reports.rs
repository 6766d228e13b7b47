//! Tenant reports over the rollups, in real time.
//!
//! Every figure merges two parts read in one statement, so in one snapshot: the rollup rows
//! (events up to the rollup's watermark) and the raw events above that watermark, aggregated
//! the same way. A committed event is therefore visible at once, and the seam counts nothing
//! twice: the watermark and the rollup rows move in the same transaction.
//!
//! Everything a caller chooses is a closed type ([`Granularity`], [`Dimension`], [`Filters`] of
//! bounded strings, [`Range`] of bounded length); values reach SQL only as bind parameters, and
//! the SQL text is assembled from `&'static str` pieces chosen by those enums.

use crate::sketch::Sketch;
use chrono::{DateTime, TimeDelta, Utc};
use postgres_types::Type;
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio_postgres::{Client, Row};

/// log2m of every sketch (V4): the 95 % relative error bound of a distinct count is
/// 2 × 1.04 / sqrt(2^14).
pub const DISTINCT_ERROR_BOUND_95: f64 = 0.0163;

/// Longest report range, and most buckets one time series may hold.
pub const MAX_RANGE_DAYS: i64 = 400;
pub const MAX_BUCKETS: i64 = 2_000;
/// Longest filter value (the event contract's text limit).
pub const MAX_FILTER_BYTES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Granularity {
    #[serde(rename = "5m")]
    FiveMinutes,
    #[serde(rename = "1h")]
    Hour,
    #[serde(rename = "1d")]
    Day,
}

impl Granularity {
    pub const ALL: [Granularity; 3] = [
        Granularity::FiveMinutes,
        Granularity::Hour,
        Granularity::Day,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Granularity::FiveMinutes => "5m",
            Granularity::Hour => "1h",
            Granularity::Day => "1d",
        }
    }

    /// The finest granularity that keeps a range within [`MAX_BUCKETS`] and readable: up to a
    /// day in 5-minute buckets, up to two weeks in hours, days beyond.
    pub fn for_range(range: &Range) -> Granularity {
        let span = range.to - range.from;
        if span <= TimeDelta::days(1) {
            Granularity::FiveMinutes
        } else if span <= TimeDelta::days(14) {
            Granularity::Hour
        } else {
            Granularity::Day
        }
    }

    /// The rollup slices table (V6): totals and single-dimension values per bucket.
    fn slices(self) -> &'static str {
        match self {
            Granularity::FiveMinutes => "rollup_slices_5min",
            Granularity::Hour => "rollup_slices_1hour",
            Granularity::Day => "rollup_slices_1day",
        }
    }

    fn nominal(self) -> TimeDelta {
        match self {
            Granularity::FiveMinutes => TimeDelta::minutes(5),
            Granularity::Hour => TimeDelta::hours(1),
            Granularity::Day => TimeDelta::days(1),
        }
    }

    fn rollup(self) -> &'static str {
        match self {
            Granularity::FiveMinutes => "5min",
            Granularity::Hour => "1hour",
            Granularity::Day => "1day",
        }
    }

    /// SQL pieces: rollup table, its bucket as a timestamptz, the bound on its key, and the
    /// same bucket computed from a raw event. `$2`/`$3` are the aligned range, `$8` the zone.
    fn sql(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Granularity::FiveMinutes => (
                "rollup_events_5min",
                "r.bucket",
                "r.bucket >= $2 AND r.bucket < $3",
                "date_bin('5 minutes', e.event_time, TIMESTAMPTZ 'epoch')",
            ),
            Granularity::Hour => (
                "rollup_events_1hour",
                "r.bucket",
                "r.bucket >= $2 AND r.bucket < $3",
                "date_bin('1 hour', e.event_time, TIMESTAMPTZ 'epoch')",
            ),
            Granularity::Day => (
                "rollup_events_1day",
                "(r.day::timestamp AT TIME ZONE $8)",
                "r.day >= ($2 AT TIME ZONE $8)::date AND r.day < ($3 AT TIME ZONE $8)::date",
                "((e.event_time AT TIME ZONE $8)::date::timestamp AT TIME ZONE $8)",
            ),
        }
    }
}

impl FromStr for Granularity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Granularity::ALL
            .into_iter()
            .find(|g| g.name() == s)
            .ok_or_else(|| "granularity must be 5m, 1h or 1d".to_string())
    }
}

/// The dimensions analysts slice by.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    EventType,
    Country,
    Browser,
    Campaign,
}

impl Dimension {
    pub const ALL: [Dimension; 4] = [
        Dimension::EventType,
        Dimension::Country,
        Dimension::Browser,
        Dimension::Campaign,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dimension::EventType => "event_type",
            Dimension::Country => "country",
            Dimension::Browser => "browser",
            Dimension::Campaign => "campaign",
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dimension {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Dimension::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| "dimension must be event_type, country, browser or campaign".into())
    }
}

/// Equality filters, one optional value per dimension; `""` selects events without the
/// dimension.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Filters(pub BTreeMap<Dimension, String>);

impl Filters {
    /// Adds a filter, refusing over-long values and a second, different value for a dimension
    /// (e.g. a request contradicting a share token's fixed filter).
    pub fn set(&mut self, dimension: Dimension, value: &str) -> Result<(), String> {
        if value.len() > MAX_FILTER_BYTES {
            return Err(format!(
                "filter {dimension} is longer than {MAX_FILTER_BYTES} bytes"
            ));
        }
        match self.0.get(&dimension) {
            Some(existing) if existing != value => Err(format!(
                "filter {dimension} is fixed to {existing:?} for this credential"
            )),
            _ => {
                self.0.insert(dimension, value.to_string());
                Ok(())
            }
        }
    }

    fn value(&self, d: Dimension) -> Option<&str> {
        self.0.get(&d).map(String::as_str)
    }
}

/// A half-open time range `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Range {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Range {
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Range, String> {
        if to <= from {
            return Err("the range must end after it starts".into());
        }
        if to - from > TimeDelta::days(MAX_RANGE_DAYS) {
            return Err(format!("the range may span at most {MAX_RANGE_DAYS} days"));
        }
        Ok(Range { from, to })
    }

    /// The range of the same length just before this one.
    pub fn previous(&self) -> Range {
        let span = self.to - self.from;
        Range {
            from: self.from - span,
            to: self.from,
        }
    }
}

/// One of the metrics of [`Metrics`]: what a dashboard widget plots, and what a breakdown
/// may be ranked by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Events,
    UniqueDevices,
    UniqueSessions,
    Revenue,
    Purchases,
    ConversionRate,
}

impl Metric {
    pub const ALL: [Metric; 6] = [
        Metric::Events,
        Metric::UniqueDevices,
        Metric::UniqueSessions,
        Metric::Revenue,
        Metric::Purchases,
        Metric::ConversionRate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Events => "events",
            Metric::UniqueDevices => "unique_devices",
            Metric::UniqueSessions => "unique_sessions",
            Metric::Revenue => "revenue",
            Metric::Purchases => "purchases",
            Metric::ConversionRate => "conversion_rate",
        }
    }

    /// `a` against `b` by this metric.
    fn compare(self, a: &Metrics, b: &Metrics) -> std::cmp::Ordering {
        match self {
            Metric::Events => a.events.cmp(&b.events),
            Metric::UniqueDevices => a.unique_devices.cmp(&b.unique_devices),
            Metric::UniqueSessions => a.unique_sessions.cmp(&b.unique_sessions),
            Metric::Revenue => a.revenue.cmp(&b.revenue),
            Metric::Purchases => a.purchases.cmp(&b.purchases),
            Metric::ConversionRate => a.conversion_rate.total_cmp(&b.conversion_rate),
        }
    }
}

impl FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown metric (one of: {})",
                    Metric::ALL.map(Metric::name).join(", ")
                )
            })
    }
}

/// What a breakdown lists: one dimension's values, ranked by a metric, at most `limit`
/// (clamped to 1–100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ranking {
    pub dimension: Dimension,
    pub order: Metric,
    pub limit: i64,
}

/// A breakdown's rows ranked by `order`, most first, then by events and value as they came
/// (most events first, values by code point), cut to `limit`. Both the full statement and the
/// kept path rank here, on the figures the answer shows, so they agree on every tie.
fn ranked(mut rows: Vec<BreakdownRow>, ranking: Ranking) -> Vec<BreakdownRow> {
    let order = ranking.order;
    if order != Metric::Events {
        rows.sort_by(|a, b| order.compare(&b.metrics, &a.metrics));
    }
    rows.truncate(ranking.limit.clamp(1, 100) as usize);
    rows
}

/// The metrics of one bucket or total.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub events: i64,
    /// HyperLogLog estimates; see [`DISTINCT_ERROR_BOUND_95`].
    pub unique_devices: i64,
    pub unique_sessions: i64,
    pub revenue: Decimal,
    pub purchases: i64,
    /// Purchases per unique session (0 when there were no sessions).
    pub conversion_rate: f64,
}

impl Metrics {
    fn from_row(row: &Row, first: usize) -> Metrics {
        Metrics::new(
            row.get(first),
            row.get(first + 1),
            row.get(first + 2),
            row.get(first + 3),
            row.get(first + 4),
        )
    }

    /// From the sums and estimates of a group (NULL, when no rows: zero).
    fn new(
        events: Option<i64>,
        revenue: Option<Decimal>,
        purchases: Option<i64>,
        devices: Option<f64>,
        sessions: Option<f64>,
    ) -> Metrics {
        let unique_sessions = sessions.unwrap_or(0.0).round() as i64;
        let purchases = purchases.unwrap_or(0);
        Metrics {
            events: events.unwrap_or(0),
            unique_devices: devices.unwrap_or(0.0).round() as i64,
            unique_sessions,
            revenue: revenue.unwrap_or_default().round_dp(4),
            purchases,
            conversion_rate: if unique_sessions > 0 {
                purchases as f64 / unique_sessions as f64
            } else {
                0.0
            },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub bucket: DateTime<Utc>,
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// How fresh a report is.
#[derive(Debug, Clone, Serialize)]
pub struct Freshness {
    /// The database's clock when the report was read: every event committed before it counts.
    pub as_of: DateTime<Utc>,
    /// The rollup's watermark as the report began: events up to it come from the rollup, later
    /// ones from the raw events (the report reads the watermark again in its own snapshot).
    pub rolled_up_to_event: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimeSeries {
    pub granularity: Granularity,
    /// The range, widened to whole buckets (local days for `1d`).
    pub range: Range,
    pub points: Vec<Point>,
    pub freshness: Freshness,
}

#[derive(Debug, Clone, Serialize)]
pub struct BreakdownRow {
    pub value: String,
    #[serde(flatten)]
    pub metrics: Metrics,
}

#[derive(Debug, Clone, Serialize)]
pub struct Breakdown {
    pub dimension: Dimension,
    pub granularity: Granularity,
    pub range: Range,
    pub rows: Vec<BreakdownRow>,
    pub freshness: Freshness,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub granularity: Granularity,
    pub range: Range,
    pub current: Metrics,
    pub previous_range: Range,
    pub previous: Metrics,
    pub freshness: Freshness,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopList {
    Devices,
    Pages,
}

impl TopList {
    fn column(self) -> (&'static str, &'static str) {
        match self {
            TopList::Devices => ("top_devices", "e.device_id::text"),
            TopList::Pages => (
                "top_pages",
                "CASE WHEN octet_length(left(split_part(e.page_url, '?', 1), 255)) <= 255 \
                 THEN left(split_part(e.page_url, '?', 1), 255) \
                 ELSE left(split_part(e.page_url, '?', 1), 63) END",
            ),
        }
    }
}

impl FromStr for TopList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "devices" => Ok(TopList::Devices),
            "pages" => Ok(TopList::Pages),
            _ => Err("list must be devices or pages".into()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TopItem {
    pub item: String,
    /// A TopN estimate.
    pub count: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Top {
    pub list: TopList,
    pub granularity: Granularity,
    pub range: Range,
    pub items: Vec<TopItem>,
    /// Always true: TopN counters are estimates after merges.
    pub estimated: bool,
    pub freshness: Freshness,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("unknown tenant")]
    UnknownTenant,
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
    /// A sketch the database returned did not parse (an `hll` of another storage version).
    #[error("sketch: {0}")]
    Sketch(String),
}

/// A tenant's zone and the range aligned to whole buckets of `granularity`.
struct Scope {
    time_zone: String,
    range: Range,
    /// The least event time of the events not yet rolled up (at most `range.to`).
    fresh_from: DateTime<Utc>,
    freshness: Freshness,
    /// Whether the rollup's retention keeps every bucket of the range for days to come, so
    /// that its rolled part changes only with the watermark (see [`RolledCache`]).
    cacheable: bool,
}

async fn scope(
    client: &Client,
    tenant_id: i64,
    range: &Range,
    granularity: Granularity,
) -> Result<Scope, ReportError> {
    // 5-minute and hourly buckets are UTC; days are the tenant's local days.
    let row = client
        .query_opt(
            "SELECT t.time_zone,
                    CASE $4::text WHEN '1d' THEN
                        date_trunc('day', $2::timestamptz AT TIME ZONE t.time_zone) AT TIME ZONE t.time_zone
                    ELSE date_bin($5::text::interval, $2::timestamptz, TIMESTAMPTZ 'epoch') END,
                    CASE $4::text WHEN '1d' THEN
                        (date_trunc('day', ($3::timestamptz - interval '1 microsecond') AT TIME ZONE t.time_zone)
                         + interval '1 day') AT TIME ZONE t.time_zone
                    ELSE date_bin($5::text::interval, $3::timestamptz - interval '1 microsecond', TIMESTAMPTZ 'epoch')
                         + $5::text::interval END,
                    now(),
                    (SELECT last_event_id FROM rollup_state WHERE rollup = $6::text),
                    (SELECT min(r.min_event_time) FROM event_id_ranges r
                     WHERE r.id_ceiling > (SELECT last_event_id FROM rollup_state
                                           WHERE rollup = $6::text)),
                    (SELECT s.retention IS NULL
                            OR $2::timestamptz >= now() - s.retention + interval '3 days'
                     FROM rollup_state s WHERE s.rollup = $6::text)
             FROM tenants t WHERE t.tenant_id = $1",
            &[
                &tenant_id,
                &range.from,
                &range.to,
                &granularity.name(),
                &interval_text(granularity),
                &granularity.rollup(),
            ],
        )
        .await?
        .ok_or(ReportError::UnknownTenant)?;
    let aligned = Range {
        from: row.get(1),
        to: row.get(2),
    };
    let buckets = (aligned.to - aligned.from).num_seconds() / granularity.nominal().num_seconds();
    if buckets > MAX_BUCKETS {
        return Err(ReportError::BadRequest(format!(
            "{buckets} buckets of {} exceed the limit of {MAX_BUCKETS}: choose a coarser \
             granularity or a shorter range",
            granularity.name()
        )));
    }
    // Events above the watermark are only as old as the oldest range recorded above it: the
    // raw part reads from there, so that it plans and scans only the partitions that hold
    // them. A range is committed with its events, so every event committed before `as_of` is
    // covered; a batch committing after it may be counted at the next read.
    let fresh_from: Option<DateTime<Utc>> = row.get(5);
    let cacheable: Option<bool> = row.get(6);
    Ok(Scope {
        cacheable: cacheable.unwrap_or(false),
        time_zone: row.get(0),
        fresh_from: fresh_from.unwrap_or(aligned.to).max(aligned.from),
        range: aligned,
        freshness: Freshness {
            as_of: row.get(3),
            rolled_up_to_event: row.get(4),
        },
    })
}

fn interval_text(g: Granularity) -> &'static str {
    match g {
        Granularity::FiveMinutes => "5 minutes",
        Granularity::Hour => "1 hour",
        Granularity::Day => "1 day",
    }
}

/// The merged rows of one granularity as a CTE named `merged`: (bucket, dimension value,
/// event_count, revenue, purchases, devices, sessions, devices_estimate, sessions_estimate),
/// rollup part plus raw part. The estimates are a slice row's own distinct counts (V8), NULL
/// for other rows.
/// Parameters: $1 tenant, $2 $3 aligned range, $4..$7 filters (event_type, country, browser,
/// campaign; NULL = any), $8 time zone, $9 the least time of the fresh events. The rollup's
/// watermark is read inside the statement,
/// so that it and the rollup rows come from the same snapshot.
fn merged_cte(g: Granularity, dimension: Option<Dimension>, filters: &Filters) -> String {
    let (_, bucket, bound, raw_bucket) = g.sql();
    let rollup = g.rollup();
    let raw_dim = match dimension {
        Some(d) => format!("coalesce(e.{}, '')", d.name()),
        None => "''".to_string(),
    };
    let rolled = rolled_rows(g, dimension, filters);
    format!(
        "merged AS (
            SELECT {bucket} AS bucket, r.value, r.event_count, r.revenue,
                   r.purchases, r.devices, r.sessions, r.devices_estimate, r.sessions_estimate
            FROM ({rolled}) r
            WHERE r.tenant_id = $1 AND {bound}
            UNION ALL
            SELECT {raw_bucket}, {raw_dim}, count(*), coalesce(sum(e.revenue), 0),
                   count(*) FILTER (WHERE e.event_type = 'purchase'),
                   hll_add_agg(hll_hash_bigint(e.device_id), 14, 5),
                   hll_add_agg(hll_hash_bigint(e.session_id), 14, 5), NULL, NULL
            FROM events e
            WHERE e.tenant_id = $1
              AND e.event_id > (SELECT last_event_id FROM rollup_state WHERE rollup = '{rollup}')
              AND e.event_time >= $2 AND e.event_time < $3 AND e.event_time >= $9
              AND ($4::text IS NULL OR e.event_type = $4)
              AND ($5::text IS NULL OR coalesce(e.country, '') = $5)
              AND ($6::text IS NULL OR coalesce(e.browser, '') = $6)
              AND ($7::text IS NULL OR coalesce(e.campaign, '') = $7)
            GROUP BY 1, 2
        )"
    )
}

/// The rollup rows a report reads, with its dimension's value as `value`. A tenant's totals, one
/// breakdown without filters, or one filter read the slices (one row per bucket and value);
/// other combinations read the full dimensional rollup.
fn rolled_rows(g: Granularity, dimension: Option<Dimension>, filters: &Filters) -> String {
    rolled_rows_from(g, dimension, filters, true)
}

/// [`rolled_rows`], reading the slices' value rows only when `value_slices`: top lists are
/// kept on the totals rows of the slices only.
fn rolled_rows_from(
    g: Granularity,
    dimension: Option<Dimension>,
    filters: &Filters,
    value_slices: bool,
) -> String {
    let (table, _, _, _) = g.sql();
    let key = if g == Granularity::Day {
        "day"
    } else {
        "bucket"
    };
    let slices = g.slices();
    let single = if filters.0.len() == 1 && value_slices {
        filters.0.keys().next().copied()
    } else {
        None
    };
    match (dimension, filters.0.is_empty(), single) {
        (None, true, _) => format!(
            "SELECT tenant_id, {key}, '' AS value, event_count, revenue, purchases, devices,
                    sessions, devices_estimate, sessions_estimate, top_devices, top_pages
             FROM {slices} WHERE dimension = ''"
        ),
        (Some(d), true, _) if value_slices => format!(
            "SELECT tenant_id, {key}, value, event_count, revenue, purchases, devices, sessions,
                    devices_estimate, sessions_estimate, top_devices, top_pages
             FROM {slices} WHERE dimension = '{}'",
            d.name()
        ),
        (None, false, Some(d)) => format!(
            "SELECT tenant_id, {key}, '' AS value, event_count, revenue, purchases, devices,
                    sessions, devices_estimate, sessions_estimate, top_devices, top_pages
             FROM {slices} WHERE dimension = '{}' AND value = {}",
            d.name(),
            filter_param(d)
        ),
        _ => {
            let value = match dimension {
                Some(d) => d.name(),
                None => "''",
            };
            format!(
                "SELECT tenant_id, {key}, {value} AS value, event_count, revenue, purchases,
                        devices, sessions, NULL::float8 AS devices_estimate,
                        NULL::float8 AS sessions_estimate, top_devices, top_pages
                 FROM {table}
                 WHERE ($4::text IS NULL OR event_type = $4)
                   AND ($5::text IS NULL OR country = $5)
                   AND ($6::text IS NULL OR browser = $6)
                   AND ($7::text IS NULL OR campaign = $7)"
            )
        }
    }
}

/// The bind parameter carrying a dimension's filter value.
fn filter_param(d: Dimension) -> &'static str {
    match d {
        Dimension::EventType => "$4",
        Dimension::Country => "$5",
        Dimension::Browser => "$6",
        Dimension::Campaign => "$7",
    }
}

/// The metrics of `merged` per `group` (a column list, or `""` for one total row), preceded by
/// the group's columns. A group of one slice row reads that row's estimates; merging its
/// sketches would give the same figures (a union of one sketch is that sketch) at the cost of
/// unpacking them. Other groups merge their sketches.
fn metrics_by(group: &str) -> String {
    let (columns, group_by) = if group.is_empty() {
        (String::new(), String::new())
    } else {
        (format!("{group}, "), format!(" GROUP BY {group}"))
    };
    format!(
        "SELECT {columns}sum(event_count)::bigint, sum(revenue), sum(purchases)::bigint,
                coalesce(hll_cardinality(hll_union_agg(devices) FILTER (WHERE NOT single)),
                         min(devices_estimate)),
                coalesce(hll_cardinality(hll_union_agg(sessions) FILTER (WHERE NOT single)),
                         min(sessions_estimate))
         FROM (SELECT m.*, m.devices_estimate IS NOT NULL AND m.sessions_estimate IS NOT NULL
                           AND count(*) OVER {window} = 1 AS single
               FROM merged m) m{group_by}",
        window = if group.is_empty() {
            "()".to_string()
        } else {
            format!("(PARTITION BY {group})")
        },
    )
}

const PARAM_TYPES: [Type; 9] = [
    Type::INT8,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TIMESTAMPTZ,
];

async fn query(
    client: &Client,
    sql: &str,
    tenant_id: i64,
    scope: &Scope,
    filters: &Filters,
) -> Result<Vec<Row>, ReportError> {
    query_with(client, sql, tenant_id, scope, filters, &[]).await
}

/// The values of the nine common parameters of a report statement ($1..$9).
struct Binds<'a> {
    tenant_id: i64,
    scope: &'a Scope,
    event_type: Option<&'a str>,
    country: Option<&'a str>,
    browser: Option<&'a str>,
    campaign: Option<&'a str>,
}

impl<'a> Binds<'a> {
    fn new(tenant_id: i64, scope: &'a Scope, filters: &'a Filters) -> Self {
        Binds {
            tenant_id,
            scope,
            event_type: filters.value(Dimension::EventType),
            country: filters.value(Dimension::Country),
            browser: filters.value(Dimension::Browser),
            campaign: filters.value(Dimension::Campaign),
        }
    }

    fn values(&self) -> [&(dyn postgres_types::ToSql + Sync); 9] {
        [
            &self.tenant_id,
            &self.scope.range.from,
            &self.scope.range.to,
            &self.event_type,
            &self.country,
            &self.browser,
            &self.campaign,
            &self.scope.time_zone,
            &self.scope.fresh_from,
        ]
    }
}

/// [`query`] with more parameters after the nine common ones (`$10`, ...).
async fn query_with(
    client: &Client,
    sql: &str,
    tenant_id: i64,
    scope: &Scope,
    filters: &Filters,
    extra: &[(&(dyn postgres_types::ToSql + Sync), Type)],
) -> Result<Vec<Row>, ReportError> {
    let binds = Binds::new(tenant_id, scope, filters);
    let typed: Vec<(&(dyn postgres_types::ToSql + Sync), Type)> = binds
        .values()
        .into_iter()
        .zip(PARAM_TYPES.iter().cloned())
        .chain(extra.iter().cloned())
        .collect();
    Ok(client.query_typed(sql, &typed).await?)
}

/// Metrics per bucket over `range`.
pub async fn timeseries(
    client: &Client,
    tenant_id: i64,
    range: &Range,
    granularity: Granularity,
    filters: &Filters,
) -> Result<TimeSeries, ReportError> {
    let scope = scope(client, tenant_id, range, granularity).await?;
    let sql = format!(
        "WITH {} {} ORDER BY bucket",
        merged_cte(granularity, None, filters),
        metrics_by("bucket")
    );
    let rows = query(client, &sql, tenant_id, &scope, filters).await?;
    Ok(TimeSeries {
        granularity,
        range: scope.range,
        points: rows
            .iter()
            .map(|r| Point {
                bucket: r.get(0),
                metrics: Metrics::from_row(r, 1),
            })
            .collect(),
        freshness: scope.freshness,
    })
}

/// One dimension's values with their metrics, as `ranking` asks (see [`ranked`]).
pub async fn breakdown(
    client: &Client,
    tenant_id: i64,
    range: &Range,
    granularity: Granularity,
    filters: &Filters,
    ranking: Ranking,
) -> Result<Breakdown, ReportError> {
    let dimension = ranking.dimension;
    let scope = scope(client, tenant_id, range, granularity).await?;
    // Every value: the ranking is made on the figures shown (see [`ranked`]).
    let sql = format!(
        "WITH {} {} ORDER BY 2 DESC, value COLLATE \"C\"",
        merged_cte(granularity, Some(dimension), filters),
        metrics_by("value"),
    );
    let rows = query(client, &sql, tenant_id, &scope, filters).await?;
    Ok(Breakdown {
        dimension,
        granularity,
        range: scope.range,
        rows: ranked(
            rows.iter()
                .map(|r| BreakdownRow {
                    value: r.get(0),
                    metrics: Metrics::from_row(r, 1),
                })
                .collect(),
            ranking,
        ),
        freshness: scope.freshness,
    })
}

async fn totals(
    client: &Client,
    tenant_id: i64,
    range: &Range,
    granularity: Granularity,
    filters: &Filters,
) -> Result<(Metrics, Scope), ReportError> {
    let scope = scope(client, tenant_id, range, granularity).await?;
    let sql = format!(
        "WITH {} {}",
        merged_cte(granularity, None, filters),
        metrics_by("")
    );
    let rows = query(client, &sql, tenant_id, &scope, filters).await?;
    Ok((Metrics::from_row(&rows[0], 0), scope))
}

/// KPI totals of a range and of the range of the same length before it.
pub async fn summary(
    client: &Client,
    tenant_id: i64,
    range: &Range,
    granularity: Granularity,
    filters: &Filters,
) -> Result<Summary, ReportError> {
    let current = totals(client, tenant_id, range, granularity, filters).await?;
    let previous_range = current.1.range.previous();
    let previous = totals(client, tenant_id, &previous_range, granularity, filters).await?;
    Ok(Summary::of(granularity, current, previous))
}

impl Summary {
    /// A summary from the totals (with their scopes) of a range and of the one before it.
    fn of(granularity: Granularity, current: (Metrics, Scope), previous: (Metrics, Scope)) -> Self {
        let ((current, scope), (previous, previous_scope)) = (current, previous);
        Summary {
            granularity,
            range: scope.range,
            current,
            previous_range: previous_scope.range,
            previous,
            freshness: scope.freshness,
        }
    }
}

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
    state: Mutex<CacheState>,
    hits: AtomicU64,
    reads: AtomicU64,
    /// Parts being read now: requests that miss the same part at once (as every viewer of a
    /// dashboard does after a rollup run) wait for one read instead of each making its own.
    flights: Mutex<HashMap<RolledKey, Arc<Flight>>>,
}

#[derive(Default)]
struct CacheState {
    entries: HashMap<RolledKey, Arc<Rolled>>,
    bytes: usize,
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
            state: Mutex::new(CacheState::default()),
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
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.entries.get(key).cloned()
    }

    /// Keeps `rolled` under `key`. When full, parts read at other watermarks go first (they
    /// will not be asked for again once the rollup has moved on), then everything.
    fn put(&self, key: RolledKey, rolled: Arc<Rolled>) {
        let size = rolled.bytes();
        if size > self.capacity / 8 {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.bytes + size > self.capacity {
            state.entries.retain(|k, _| k.watermark == key.watermark);
            if state.bytes + size > self.capacity {
                state.entries.clear();
            }
            state.bytes = state.entries.values().map(|r| r.bytes()).sum();
        }
        if let Some(old) = state.entries.insert(key, rolled) {
            state.bytes -= old.bytes();
        }
        state.bytes += size;
    }

    /// [`breakdown`], reading the rolled part from the cache when it is there.
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

    /// [`summary`], reading the rolled parts from the cache when they are there.
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
    let (_, _, bound, _) = g.sql();
    let rollup = g.rollup();
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
               WHERE r.tenant_id = $1 AND {bound}
               GROUP BY r.value)
         SELECT w.last_event_id, g.value, g.event_count, g.revenue, g.purchases, g.devices,
                g.sessions, g.devices_estimate, g.sessions_estimate
         FROM w LEFT JOIN g ON true
         ORDER BY g.event_count DESC, g.value COLLATE \"C\""
    );
    let rows = query(client, &sql, tenant_id, scope, filters).await?;
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
    let raw_dim = match dimension {
        Some(d) => format!("coalesce(e.{}, '')", d.name()),
        None => "''".to_string(),
    };
    let sql = format!(
        "SELECT {raw_dim}, count(*), coalesce(sum(e.revenue), 0),
                count(*) FILTER (WHERE e.event_type = 'purchase'),
                hll_send(hll_add_agg(hll_hash_bigint(e.device_id), 14, 5)),
                hll_send(hll_add_agg(hll_hash_bigint(e.session_id), 14, 5))
         FROM events e
         WHERE e.tenant_id = $1 AND e.event_id > $10
           AND e.event_time >= $2 AND e.event_time < $3 AND e.event_time >= $9
           AND ($4::text IS NULL OR e.event_type = $4)
           AND ($5::text IS NULL OR coalesce(e.country, '') = $5)
           AND ($6::text IS NULL OR coalesce(e.browser, '') = $6)
           AND ($7::text IS NULL OR coalesce(e.campaign, '') = $7)
         GROUP BY 1"
    );
    let extra: [(&(dyn postgres_types::ToSql + Sync), Type); 1] = [(&rolled.watermark, Type::INT8)];
    let rows = query_with(client, &sql, tenant_id, scope, filters, &extra).await?;
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

/// The most frequent devices or pages (TopN estimates).
pub async fn top(
    client: &Client,
    tenant_id: i64,
    range: &Range,
    granularity: Granularity,
    list: TopList,
    filters: &Filters,
    n: i32,
) -> Result<Top, ReportError> {
    let scope = scope(client, tenant_id, range, granularity).await?;
    let (_, _, bound, _) = granularity.sql();
    let rollup = granularity.rollup();
    let (column, item) = list.column();
    let rolled = rolled_rows_from(granularity, None, filters, false);
    let sql = format!(
        "WITH rolled AS (
             SELECT topn_union_agg(r.{column}) AS counter FROM ({rolled}) r
             WHERE r.tenant_id = $1 AND {bound}),
         fresh AS (
             SELECT topn_add_agg({item}) AS counter FROM events e
             WHERE e.tenant_id = $1
               AND e.event_id > (SELECT last_event_id FROM rollup_state WHERE rollup = '{rollup}')
               AND e.event_time >= $2 AND e.event_time < $3 AND e.event_time >= $9
               AND ($4::text IS NULL OR e.event_type = $4)
               AND ($5::text IS NULL OR coalesce(e.country, '') = $5)
               AND ($6::text IS NULL OR coalesce(e.browser, '') = $6)
               AND ($7::text IS NULL OR coalesce(e.campaign, '') = $7))
         SELECT t.item, t.frequency
         FROM rolled, fresh,
              LATERAL topn(topn_union(coalesce(rolled.counter, '{{}}'::jsonb),
                                      coalesce(fresh.counter, '{{}}'::jsonb)), {}) t
         ORDER BY 2 DESC, 1",
        n.clamp(1, 100)
    );
    let rows = query(client, &sql, tenant_id, &scope, filters).await?;
    Ok(Top {
        list,
        granularity,
        range: scope.range,
        items: rows
            .iter()
            .map(|r| TopItem {
                item: r.get(0),
                count: r.get(1),
            })
            .collect(),
        estimated: true,
        freshness: scope.freshness,
    })
}

/// One hour of the tenant's delivery ledger.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerHour {
    pub hour: DateTime<Utc>,
    pub received: i64,
    pub stored: i64,
    pub duplicates: i64,
    pub dead_lettered: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub dead_letter_id: i64,
    pub reason: String,
    pub message: String,
    pub stream_partition: String,
    pub stream_sequence: i64,
    pub enqueued_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub replay_status: String,
    /// The start of the raw payload as text (invalid UTF-8 replaced), at most 512 bytes.
    pub payload_preview: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    pub range: Range,
    pub hours: Vec<LedgerHour>,
    pub recent_dead_letters: Vec<DeadLetter>,
    pub freshness: Freshness,
}

/// The tenant's ledger per hour of enqueue time in `range`, and its latest dead letters.
pub async fn ingest(
    client: &Client,
    tenant_id: i64,
    range: &Range,
    dead_letters: i64,
) -> Result<IngestReport, ReportError> {
    let scope = scope(client, tenant_id, range, Granularity::Hour).await?;
    let hours = client
        .query(
            "SELECT hour, received, stored, duplicates, dead_lettered FROM ingest_ledger
             WHERE tenant_id = $1 AND hour >= $2 AND hour < $3 ORDER BY hour",
            &[&tenant_id, &scope.range.from, &scope.range.to],
        )
        .await?
        .iter()
        .map(|r| LedgerHour {
            hour: r.get(0),
            received: r.get(1),
            stored: r.get(2),
            duplicates: r.get(3),
            dead_lettered: r.get(4),
        })
        .collect();
    let recent_dead_letters = client
        .query(
            "SELECT dead_letter_id, reason, message, stream_partition, stream_sequence,
                    enqueued_at, received_at, replay_status, substring(payload FROM 1 FOR 512)
             FROM dead_letters WHERE tenant_id = $1
             ORDER BY received_at DESC, dead_letter_id DESC LIMIT $2",
            &[&tenant_id, &dead_letters.clamp(1, 500)],
        )
        .await?
        .iter()
        .map(|r| DeadLetter {
            dead_letter_id: r.get(0),
            reason: r.get(1),
            message: r.get(2),
            stream_partition: r.get(3),
            stream_sequence: r.get(4),
            enqueued_at: r.get(5),
            received_at: r.get(6),
            replay_status: r.get(7),
            payload_preview: String::from_utf8_lossy(r.get::<_, &[u8]>(8)).into_owned(),
        })
        .collect();
    Ok(IngestReport {
        range: scope.range,
        hours,
        recent_dead_letters,
        freshness: scope.freshness,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn granularity_follows_the_range_length() {
        let r = |h: i64| {
            Range::new(
                at("2026-01-01T00:00:00Z"),
                at("2026-01-01T00:00:00Z") + TimeDelta::hours(h),
            )
            .unwrap()
        };
        assert_eq!(Granularity::for_range(&r(1)), Granularity::FiveMinutes);
        assert_eq!(Granularity::for_range(&r(24)), Granularity::FiveMinutes);
        assert_eq!(Granularity::for_range(&r(25)), Granularity::Hour);
        assert_eq!(Granularity::for_range(&r(14 * 24)), Granularity::Hour);
        assert_eq!(Granularity::for_range(&r(15 * 24)), Granularity::Day);
    }

    #[test]
    fn closed_types_refuse_what_they_do_not_know() {
        assert_eq!("1h".parse::<Granularity>(), Ok(Granularity::Hour));
        assert!("1w".parse::<Granularity>().is_err());
        assert_eq!("country".parse::<Dimension>(), Ok(Dimension::Country));
        assert!("country; DROP TABLE events".parse::<Dimension>().is_err());
        assert!("revenue".parse::<TopList>().is_err());
        let t = at("2026-01-01T00:00:00Z");
        assert!(Range::new(t, t).is_err());
        assert!(Range::new(t, t + TimeDelta::days(MAX_RANGE_DAYS + 1)).is_err());
        assert_eq!(
            Range::new(t, t + TimeDelta::hours(2)).unwrap().previous(),
            Range::new(t - TimeDelta::hours(2), t).unwrap()
        );
    }

    #[test]
    fn fixed_filters_cannot_be_overridden() {
        let mut f = Filters::default();
        f.set(Dimension::Country, "DE").unwrap();
        f.set(Dimension::Country, "DE").unwrap();
        assert!(f
            .set(Dimension::Country, "FR")
            .unwrap_err()
            .contains("fixed"));
        assert!(f.set(Dimension::Browser, &"x".repeat(300)).is_err());
    }
}
