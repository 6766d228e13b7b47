//! The SQL of the reports: the pieces each closed type chooses, the statement that scopes a
//! report, and the parameters every report statement binds ([`Param`], [`Params`]).
//!
//! Statement text is assembled from `&'static str` pieces chosen by closed types and from
//! [`Param::placeholder`]s; every value a caller chose reaches the database as a bind
//! parameter.

use super::vocabulary::{
    Dimension, Filters, Freshness, Granularity, Metrics, Range, ReportError, Summary, MAX_BUCKETS,
};
use chrono::{DateTime, TimeDelta, Utc};
use postgres_types::{ToSql, Type};
use tokio_postgres::{Client, Row};

/// A closed set of named bind parameters of some statements: a parameter's position (`$n`) is
/// its place in [`ALL`](Self::ALL) and its type is [`ty`](Self::ty), both defined by the set
/// only. Statement text names a parameter by [`placeholder`](Self::placeholder) and binds the
/// values with [`typed`](Self::typed), so position and value cannot drift apart.
pub(super) trait NamedParams: Copy + Eq + 'static {
    /// Every parameter, in position order.
    const ALL: &'static [Self];

    fn ty(self) -> Type;

    /// `$n` for the statement text.
    fn placeholder(self) -> &'static str {
        const PLACEHOLDERS: [&str; 11] = [
            "$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10", "$11",
        ];
        let index = Self::ALL
            .iter()
            .position(|p| *p == self)
            .expect("a parameter is in its set");
        PLACEHOLDERS[index]
    }

    /// The values (`value` of each parameter; `None` for an optional one not given) with their
    /// types, in position order, up to the first parameter not given (only trailing ones may
    /// be optional; a statement naming one not given fails at the database, which says how
    /// many it wanted).
    fn typed<'v>(
        value: impl Fn(Self) -> Option<&'v (dyn ToSql + Sync)>,
    ) -> Vec<(&'v (dyn ToSql + Sync), Type)> {
        Self::ALL
            .iter()
            .map_while(|&p| Some((value(p)?, p.ty())))
            .collect()
    }
}

/// The bind parameters of the report statements; their values come from the fields of
/// [`Params`] of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Param {
    Tenant,
    /// The range, aligned to whole buckets.
    From,
    To,
    /// The filters, NULL for any value.
    EventType,
    Country,
    Browser,
    Campaign,
    /// The tenant's time zone, for local days.
    TimeZone,
    /// The least event time of the events not yet rolled up.
    FreshFrom,
    /// The funnel a funnel report reads (0 for the other reports).
    Funnel,
    /// The watermark of a kept rolled part: the raw events above it are merged in.
    KeptWatermark,
}

impl NamedParams for Param {
    const ALL: &'static [Param] = &[
        Param::Tenant,
        Param::From,
        Param::To,
        Param::EventType,
        Param::Country,
        Param::Browser,
        Param::Campaign,
        Param::TimeZone,
        Param::FreshFrom,
        Param::Funnel,
        Param::KeptWatermark,
    ];

    fn ty(self) -> Type {
        match self {
            Param::Tenant | Param::Funnel | Param::KeptWatermark => Type::INT8,
            Param::From | Param::To | Param::FreshFrom => Type::TIMESTAMPTZ,
            Param::EventType
            | Param::Country
            | Param::Browser
            | Param::Campaign
            | Param::TimeZone => Type::TEXT,
        }
    }
}

impl Param {
    /// The parameter carrying a dimension's filter value.
    pub(super) fn filter(d: Dimension) -> Param {
        match d {
            Dimension::EventType => Param::EventType,
            Dimension::Country => Param::Country,
            Dimension::Browser => Param::Browser,
            Dimension::Campaign => Param::Campaign,
        }
    }
}

/// The values of the [`Param`]s of one report statement, by name.
pub(super) struct Params<'a> {
    pub(super) tenant: i64,
    pub(super) from: DateTime<Utc>,
    pub(super) to: DateTime<Utc>,
    pub(super) event_type: Option<&'a str>,
    pub(super) country: Option<&'a str>,
    pub(super) browser: Option<&'a str>,
    pub(super) campaign: Option<&'a str>,
    pub(super) time_zone: &'a str,
    pub(super) fresh_from: DateTime<Utc>,
    pub(super) funnel: i64,
    /// Bound only by the statements that merge raw events into a kept part.
    pub(super) kept_watermark: Option<i64>,
}

impl<'a> Params<'a> {
    /// The parameters of a report of `tenant` over `scope`, filtered by `filters`.
    pub(super) fn new(tenant: i64, scope: &'a Scope, filters: &'a Filters) -> Self {
        Params {
            tenant,
            from: scope.range.from,
            to: scope.range.to,
            event_type: filters.value(Dimension::EventType),
            country: filters.value(Dimension::Country),
            browser: filters.value(Dimension::Browser),
            campaign: filters.value(Dimension::Campaign),
            time_zone: &scope.time_zone,
            fresh_from: scope.fresh_from,
            funnel: 0,
            kept_watermark: None,
        }
    }

    /// The value of `p`; `None` for an optional parameter not given.
    fn value(&self, p: Param) -> Option<&(dyn ToSql + Sync)> {
        Some(match p {
            Param::Tenant => &self.tenant,
            Param::From => &self.from,
            Param::To => &self.to,
            Param::EventType => &self.event_type,
            Param::Country => &self.country,
            Param::Browser => &self.browser,
            Param::Campaign => &self.campaign,
            Param::TimeZone => &self.time_zone,
            Param::FreshFrom => &self.fresh_from,
            Param::Funnel => &self.funnel,
            Param::KeptWatermark => self.kept_watermark.as_ref()?,
        })
    }

    /// The values with their types, in position order ([`NamedParams::typed`]; only the
    /// kept watermark is optional).
    fn typed(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        Param::typed(|p| self.value(p))
    }
}

/// Runs a report statement with its parameters.
pub(super) async fn query(
    client: &Client,
    sql: &str,
    params: &Params<'_>,
) -> Result<Vec<Row>, ReportError> {
    Ok(client.query_typed(sql, &params.typed()).await?)
}

impl Granularity {
    /// The rollup slices table (V6): totals and single-dimension values per bucket.
    pub(super) fn slices(self) -> &'static str {
        match self {
            Granularity::FiveMinutes => "rollup_slices_5min",
            Granularity::Hour => "rollup_slices_1hour",
            Granularity::Day => "rollup_slices_1day",
        }
    }

    /// The full dimensional rollup table.
    fn events_table(self) -> &'static str {
        match self {
            Granularity::FiveMinutes => "rollup_events_5min",
            Granularity::Hour => "rollup_events_1hour",
            Granularity::Day => "rollup_events_1day",
        }
    }

    pub(super) fn nominal(self) -> TimeDelta {
        match self {
            Granularity::FiveMinutes => TimeDelta::minutes(5),
            Granularity::Hour => TimeDelta::hours(1),
            Granularity::Day => TimeDelta::days(1),
        }
    }

    /// The rollup's name in `rollup_state`.
    pub(super) fn rollup(self) -> &'static str {
        match self {
            Granularity::FiveMinutes => "5min",
            Granularity::Hour => "1hour",
            Granularity::Day => "1day",
        }
    }

    /// A rollup row `r`'s bucket as a timestamptz (a local day starts at the zone's midnight).
    fn rolled_bucket(self) -> String {
        match self {
            Granularity::FiveMinutes | Granularity::Hour => "r.bucket".to_string(),
            Granularity::Day => format!(
                "(r.day::timestamp AT TIME ZONE {})",
                Param::TimeZone.placeholder()
            ),
        }
    }

    /// The bound of a rollup row `r`'s key to the aligned range.
    pub(super) fn rolled_bound(self) -> String {
        let (from, to) = (Param::From.placeholder(), Param::To.placeholder());
        match self {
            Granularity::FiveMinutes | Granularity::Hour => {
                format!("r.bucket >= {from} AND r.bucket < {to}")
            }
            Granularity::Day => {
                let zone = Param::TimeZone.placeholder();
                format!(
                    "r.day >= ({from} AT TIME ZONE {zone})::date \
                     AND r.day < ({to} AT TIME ZONE {zone})::date"
                )
            }
        }
    }

    /// The bucket of a raw event `e`, as [`Granularity::rolled_bucket`] gives it for rollup rows.
    fn raw_bucket(self) -> String {
        match self {
            Granularity::FiveMinutes => {
                "date_bin('5 minutes', e.event_time, TIMESTAMPTZ 'epoch')".to_string()
            }
            Granularity::Hour => {
                "date_bin('1 hour', e.event_time, TIMESTAMPTZ 'epoch')".to_string()
            }
            Granularity::Day => {
                let zone = Param::TimeZone.placeholder();
                format!("((e.event_time AT TIME ZONE {zone})::date::timestamp AT TIME ZONE {zone})")
            }
        }
    }
}

/// A tenant's zone/// A tenant's zone and the range aligned to whole buckets of `granularity`.
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

impl Summary {
    /// A summary from the totals (with their scopes) of a range and of the one before it.
    pub(super) fn of(
        granularity: Granularity,
        current: (Metrics, Scope),
        previous: (Metrics, Scope),
    ) -> Self {
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

/// The bind parameters of the statement that scopes a report ([`scope`]): a set of its own,
/// as its values (the granularity's name, interval and rollup) are not a report's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScopeParam {
    Tenant,
    /// The range asked for, not yet aligned.
    From,
    To,
    /// [`Granularity::name`].
    Granularity,
    /// The granularity's bucket width, as interval text.
    Interval,
    /// [`Granularity::rollup`]: the rollup whose watermark and retention apply.
    Rollup,
}

impl NamedParams for ScopeParam {
    const ALL: &'static [ScopeParam] = &[
        ScopeParam::Tenant,
        ScopeParam::From,
        ScopeParam::To,
        ScopeParam::Granularity,
        ScopeParam::Interval,
        ScopeParam::Rollup,
    ];

    fn ty(self) -> Type {
        match self {
            ScopeParam::Tenant => Type::INT8,
            ScopeParam::From | ScopeParam::To => Type::TIMESTAMPTZ,
            ScopeParam::Granularity | ScopeParam::Interval | ScopeParam::Rollup => Type::TEXT,
        }
    }
}

pub(super) async fn scope(
    client: &Client,
    tenant_id: i64,
    range: &Range,
    granularity: Granularity,
) -> Result<Scope, ReportError> {
    use ScopeParam as P;
    let (name, interval, rollup) = (
        granularity.name(),
        interval_text(granularity),
        granularity.rollup(),
    );
    let params = P::typed(|p| {
        Some(match p {
            P::Tenant => &tenant_id,
            P::From => &range.from,
            P::To => &range.to,
            P::Granularity => &name,
            P::Interval => &interval,
            P::Rollup => &rollup,
        })
    });
    // 5-minute and hourly buckets are UTC; days are the tenant's local days.
    let sql = format!(
        "SELECT t.time_zone,
                CASE {granularity} WHEN '1d' THEN
                    date_trunc('day', {from} AT TIME ZONE t.time_zone) AT TIME ZONE t.time_zone
                ELSE date_bin({interval}::interval, {from}, TIMESTAMPTZ 'epoch') END,
                CASE {granularity} WHEN '1d' THEN
                    (date_trunc('day', ({to} - interval '1 microsecond') AT TIME ZONE t.time_zone)
                     + interval '1 day') AT TIME ZONE t.time_zone
                ELSE date_bin({interval}::interval, {to} - interval '1 microsecond', TIMESTAMPTZ 'epoch')
                     + {interval}::interval END,
                now(),
                (SELECT last_event_id FROM rollup_state WHERE rollup = {rollup}),
                (SELECT min(r.min_event_time) FROM event_id_ranges r
                 WHERE r.id_ceiling > (SELECT last_event_id FROM rollup_state
                                       WHERE rollup = {rollup})),
                (SELECT s.retention IS NULL
                        OR {from} >= now() - s.retention + interval '3 days'
                 FROM rollup_state s WHERE s.rollup = {rollup})
         FROM tenants t WHERE t.tenant_id = {tenant}",
        tenant = P::Tenant.placeholder(),
        from = P::From.placeholder(),
        to = P::To.placeholder(),
        granularity = P::Granularity.placeholder(),
        interval = P::Interval.placeholder(),
        rollup = P::Rollup.placeholder(),
    );
    let row = client
        .query_typed(&sql, &params)
        .await?
        .into_iter()
        .next()
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

/// The condition on raw events `e` of a report not yet in its rolled part: the tenant's, above
/// `watermark` (a SQL expression), in the aligned range from the fresh events' least time, and
/// matching the filters. Events always have an event type; other dimensions may be missing,
/// which the filter value `""` selects.
pub(super) fn fresh_events(watermark: &str) -> String {
    let filters = Dimension::ALL.map(|d| {
        let p = Param::filter(d).placeholder();
        format!(
            "({p}::text IS NULL OR {column} = {p})",
            column = raw_column(d)
        )
    });
    format!(
        "e.tenant_id = {tenant} AND e.event_id > {watermark}
           AND e.event_time >= {from} AND e.event_time < {to} AND e.event_time >= {fresh_from}
           AND {filters}",
        tenant = Param::Tenant.placeholder(),
        from = Param::From.placeholder(),
        to = Param::To.placeholder(),
        fresh_from = Param::FreshFrom.placeholder(),
        filters = filters.join("\n           AND "),
    )
}

/// The watermark of `g`'s rollup as read inside a statement, so that it and the rollup rows
/// come from the same snapshot.
pub(super) fn watermark_now(g: Granularity) -> String {
    format!(
        "(SELECT last_event_id FROM rollup_state WHERE rollup = '{}')",
        g.rollup()
    )
}

/// A raw event's value of `dimension` as a report groups it (`''` when it has none, or when
/// the report is not by dimension).
pub(super) fn raw_value(dimension: Option<Dimension>) -> String {
    match dimension {
        Some(d) => raw_column(d),
        None => "''".to_string(),
    }
}

/// A raw event's value of `d` as the rollups will keep it under the dimension guard (V28):
/// `'(other)'` when the event's local day is full for `d` (a day no window has met yet has
/// admitted none) and the value was not admitted, so that a report's fresh part groups and
/// filters as its rolled part does. A day with free slots shows every new value; the next
/// window admits the most frequent of them as long as slots last. Country is not guarded (its
/// values are the ISO list); conversions and purchases are never folded.
pub(super) fn raw_column(d: Dimension) -> String {
    let column = match d {
        Dimension::EventType => "e.event_type".to_string(),
        _ => format!("coalesce(e.{}, '')", d.name()),
    };
    if d == Dimension::Country {
        return column;
    }
    let (tenant, tz, name) = (
        Param::Tenant.placeholder(),
        Param::TimeZone.placeholder(),
        d.name(),
    );
    let exempt = if d == Dimension::EventType {
        format!(
            " AND e.event_type <> 'purchase' AND NOT e.event_type = ANY (
                 (SELECT conversion_event_types FROM tenants WHERE tenant_id = {tenant})::text[])"
        )
    } else {
        String::new()
    };
    format!(
        "CASE WHEN {column} <> ''{exempt}
               AND (SELECT max_values_per_day FROM dimension_limits WHERE dimension = '{name}')
                   <= coalesce((SELECT dd.admitted FROM dimension_days dd
                                WHERE dd.tenant_id = {tenant} AND dd.dimension = '{name}'
                                  AND dd.day = (e.event_time AT TIME ZONE {tz})::date), 0)
               AND NOT EXISTS (SELECT 1 FROM dimension_values v
                               WHERE v.tenant_id = {tenant} AND v.dimension = '{name}'
                                 AND v.day = (e.event_time AT TIME ZONE {tz})::date
                                 AND v.value = {column})
              THEN '(other)' ELSE {column} END"
    )
}

/// The merged rows of one granularity as a CTE named `merged`: (bucket, dimension value,
/// event_count, revenue, purchases, devices, sessions, devices_estimate, sessions_estimate),
/// rollup part plus raw part. The estimates are a slice row's own distinct counts (V8), NULL
/// for other rows.
pub(super) fn merged_cte(
    g: Granularity,
    dimension: Option<Dimension>,
    filters: &Filters,
) -> String {
    let (bucket, bound, raw_bucket) = (g.rolled_bucket(), g.rolled_bound(), g.raw_bucket());
    let raw_dim = raw_value(dimension);
    let rolled = rolled_rows(g, dimension, filters);
    let fresh = fresh_events(&watermark_now(g));
    let tenant = Param::Tenant.placeholder();
    format!(
        "merged AS (
            SELECT {bucket} AS bucket, r.value, r.event_count, r.revenue,
                   r.purchases, r.devices, r.sessions, r.devices_estimate, r.sessions_estimate
            FROM ({rolled}) r
            WHERE r.tenant_id = {tenant} AND {bound}
            UNION ALL
            SELECT {raw_bucket}, {raw_dim}, count(*), coalesce(sum(e.revenue), 0),
                   count(*) FILTER (WHERE e.event_type = 'purchase'),
                   hll_add_agg(hll_hash_bigint(e.device_id), 14, 5),
                   hll_add_agg(hll_hash_bigint(e.session_id), 14, 5), NULL, NULL
            FROM events e
            WHERE {fresh}
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
    let table = g.events_table();
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
            Param::filter(d).placeholder()
        ),
        _ => {
            let value = match dimension {
                Some(d) => d.name(),
                None => "''",
            };
            // The rollups store a missing dimension as '' (see the raw side's coalesce).
            let filters = Dimension::ALL
                .map(|d| {
                    let p = Param::filter(d).placeholder();
                    format!("({p}::text IS NULL OR {} = {p})", d.name())
                })
                .join("\n                   AND ");
            format!(
                "SELECT tenant_id, {key}, {value} AS value, event_count, revenue, purchases,
                        devices, sessions, NULL::float8 AS devices_estimate,
                        NULL::float8 AS sessions_estimate, top_devices, top_pages
                 FROM {table}
                 WHERE {filters}"
            )
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered_in_order<P: NamedParams + std::fmt::Debug>() {
        for (i, p) in P::ALL.iter().enumerate() {
            assert_eq!(p.placeholder(), format!("${}", i + 1), "{p:?}");
        }
    }

    #[test]
    fn parameters_are_numbered_in_order() {
        numbered_in_order::<Param>();
        numbered_in_order::<ScopeParam>();
    }

    #[test]
    fn values_are_bound_in_position_order_up_to_the_first_not_given() {
        let (tenant, zone) = (7_i64, "UTC");
        let typed = Param::typed(|p| match p {
            Param::Tenant => Some(&tenant as &(dyn ToSql + Sync)),
            Param::From => Some(&zone),
            _ => None,
        });
        let types: Vec<Type> = typed.into_iter().map(|(_, t)| t).collect();
        assert_eq!(types, [Type::INT8, Type::TIMESTAMPTZ]);
    }
}
