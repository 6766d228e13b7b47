//! The SQL of the reports: the pieces each closed type chooses, the statement that scopes a
//! report, and the binding of the common parameters.

use super::vocabulary::{
    Dimension, Filters, Freshness, Granularity, Range, ReportError, MAX_BUCKETS,
};
use chrono::{DateTime, TimeDelta, Utc};
use postgres_types::Type;
use tokio_postgres::{Client, Row};

impl Granularity {
    /// The rollup slices table (V6): totals and single-dimension values per bucket.
    pub(super) fn slices(self) -> &'static str {
        match self {
            Granularity::FiveMinutes => "rollup_slices_5min",
            Granularity::Hour => "rollup_slices_1hour",
            Granularity::Day => "rollup_slices_1day",
        }
    }

    pub(super) fn nominal(self) -> TimeDelta {
        match self {
            Granularity::FiveMinutes => TimeDelta::minutes(5),
            Granularity::Hour => TimeDelta::hours(1),
            Granularity::Day => TimeDelta::days(1),
        }
    }

    pub(super) fn rollup(self) -> &'static str {
        match self {
            Granularity::FiveMinutes => "5min",
            Granularity::Hour => "1hour",
            Granularity::Day => "1day",
        }
    }

    /// SQL pieces: rollup table, its bucket as a timestamptz, the bound on its key, and the
    /// same bucket computed from a raw event. `$2`/`$3` are the aligned range, `$8` the zone.
    pub(super) fn sql(self) -> (&'static str, &'static str, &'static str, &'static str) {
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

/// A tenant's zone and the range aligned to whole buckets of `granularity`.
pub(super) struct Scope {
    pub(super) time_zone: String,
    pub(super) range: Range,
    /// The least event time of the events not yet rolled up (at most `range.to`).
    pub(super) fresh_from: DateTime<Utc>,
    pub(super) freshness: Freshness,
    /// Whether the rollup's retention keeps every bucket of the range for days to come, so
    /// that its rolled part changes only with the watermark (see [`super::RolledCache`]).
    pub(super) cacheable: bool,
}

pub(super) async fn scope(
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
pub(super) fn merged_cte(
    g: Granularity,
    dimension: Option<Dimension>,
    filters: &Filters,
) -> String {
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
pub(super) fn rolled_rows(
    g: Granularity,
    dimension: Option<Dimension>,
    filters: &Filters,
) -> String {
    rolled_rows_from(g, dimension, filters, true)
}

/// [`rolled_rows`], reading the slices' value rows only when `value_slices`: top lists are
/// kept on the totals rows of the slices only.
pub(super) fn rolled_rows_from(
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
pub(super) fn metrics_by(group: &str) -> String {
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

pub(super) async fn query(
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
pub(super) async fn query_with(
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
