//! What a report caller chooses (closed types, bounded values) and what it gets back.

use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use tokio_postgres::Row;

use crate::error::{Error, ErrorCode};

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
/// dimension. The same type is a report's query filters and a share token's fixed filters
/// (which must name a value: see [`Filters::fixed`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Filters(pub BTreeMap<Dimension, String>);

impl Filters {
    /// Adds a report's filter, refusing over-long values (`bad_parameter`) and a second, different value
    /// for a dimension (`filter_fixed`: e.g. a request contradicting a share token's filter).
    pub fn set(&mut self, dimension: Dimension, value: &str) -> Result<(), Error> {
        if value.len() > MAX_FILTER_BYTES {
            return Err(Error::new(
                ErrorCode::BadParameter,
                format!("filter {dimension} is longer than {MAX_FILTER_BYTES} bytes"),
            ));
        }
        // PostgreSQL cannot take a NUL in text at all (the event contract refuses it), and no
        // analyst means a value with other control characters: refused as a bad parameter
        // rather than sent to the database.
        if value.chars().any(char::is_control) {
            return Err(Error::new(
                ErrorCode::BadParameter,
                format!("filter {dimension} contains a control character"),
            ));
        }
        match self.0.get(&dimension) {
            Some(existing) if existing != value => Err(Error::new(
                ErrorCode::FilterFixed,
                format!("filter {dimension} is fixed to {existing:?} for this credential"),
            )),
            _ => {
                self.0.insert(dimension, value.to_string());
                Ok(())
            }
        }
    }

    /// Filters a credential fixes (`{"country": "DE"}` or `country=DE` pairs): each dimension
    /// once, each naming a real value (country an ISO 3166-1 alpha-2 code, event_type a
    /// lowercase token, others 1 to [`MAX_FILTER_BYTES`] bytes of text). Refusals are
    /// `bad_filter`.
    pub fn fixed<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Filters, Error> {
        let bad = |message: String| Error::new(ErrorCode::BadFilter, message);
        let mut filters = Filters::default();
        for (name, value) in pairs {
            let dimension = name.parse::<Dimension>().map_err(|_| {
                bad("filter dimensions are event_type, country, browser and campaign".into())
            })?;
            let ok = match dimension {
                Dimension::Country => {
                    value.len() == 2 && value.bytes().all(|b| b.is_ascii_uppercase())
                }
                Dimension::EventType => {
                    !value.is_empty()
                        && value.len() <= 64
                        && value
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                }
                Dimension::Browser | Dimension::Campaign => {
                    !value.trim().is_empty()
                        && value.len() <= MAX_FILTER_BYTES
                        && !value.chars().any(char::is_control)
                }
            };
            if !ok {
                return Err(bad(format!(
                    "invalid value for filter {dimension}: country is an ISO 3166-1 alpha-2 code \
                     (DE), event_type a lowercase token, others 1 to {MAX_FILTER_BYTES} bytes of text"
                )));
            }
            if filters.0.insert(dimension, value.to_string()).is_some() {
                return Err(bad(format!("filter {dimension} is given twice")));
            }
        }
        Ok(filters)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The filters as plain name/value pairs, for the JSON surface.
    pub fn names(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(d, v)| (d.name().to_string(), v.clone()))
            .collect()
    }

    pub(super) fn value(&self, d: Dimension) -> Option<&str> {
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
pub(super) fn ranked(mut rows: Vec<BreakdownRow>, ranking: Ranking) -> Vec<BreakdownRow> {
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
    pub(super) fn from_row(row: &Row, first: usize) -> Metrics {
        Metrics::new(
            row.get(first),
            row.get(first + 1),
            row.get(first + 2),
            row.get(first + 3),
            row.get(first + 4),
        )
    }

    /// From the sums and estimates of a group (NULL, when no rows: zero).
    pub(super) fn new(
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
