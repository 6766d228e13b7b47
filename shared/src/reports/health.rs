//! Ingest health: the tenant's delivery ledger per hour, its latest dead letters, what
//! collect accepted and refused per UTC day under its limits, and the values the dimension
//! guard admitted into the rollups per local day and the events it rolled up as `(other)`.

use super::sql::{query, scope, NamedParams, Param, Params};
use super::vocabulary::{Filters, Freshness, Granularity, Range, ReportError};
use crate::dead_letters::{self, DeadLetter, PREVIEW_BYTES};
use crate::quota::{self, Limits, UsageReport};
use chrono::{DateTime, NaiveDate, Utc};
use postgres_types::{ToSql, Type};
use serde::Serialize;
use tokio_postgres::Client;

/// The bind parameters of the latest dead letters' statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecentParam {
    Tenant,
    /// How many, newest first.
    Limit,
}

impl NamedParams for RecentParam {
    const ALL: &'static [RecentParam] = &[RecentParam::Tenant, RecentParam::Limit];

    fn ty(self) -> Type {
        Type::INT8
    }
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

/// One local day and guarded dimension of the tenant (migration V28).
#[derive(Debug, Clone, Serialize)]
pub struct DimensionDay {
    pub day: NaiveDate,
    pub dimension: String,
    /// Distinct values admitted into the rollups.
    pub values: i32,
    /// The limit in force.
    pub max_values_per_day: i32,
    /// Events whose value came after the day was full, rolled up as `(other)`.
    pub folded_events: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    pub range: Range,
    pub hours: Vec<LedgerHour>,
    pub recent_dead_letters: Vec<DeadLetter>,
    /// collect's counts for the UTC days the range touches, and the limits in force.
    pub collect: UsageReport,
    /// The dimension guard per local day the range touches.
    pub rollup_dimensions: Vec<DimensionDay>,
    pub freshness: Freshness,
}

/// The tenant's ledger per hour of enqueue time in `range`, its latest dead letters, and its
/// collect usage (under `collect_limits`, the settings, with the tenant's overrides applied).
pub async fn ingest(
    client: &Client,
    tenant_id: i64,
    range: &Range,
    dead_letters: i64,
    collect_limits: Limits,
) -> Result<IngestReport, ReportError> {
    let scope = scope(client, tenant_id, range, Granularity::Hour).await?;
    // A report statement over the scope: bound as every report's (no filters apply).
    let hours = query(
        client,
        &format!(
            "SELECT hour, received, stored, duplicates, dead_lettered FROM ingest_ledger
             WHERE tenant_id = {tenant} AND hour >= {from} AND hour < {to} ORDER BY hour",
            tenant = Param::Tenant.placeholder(),
            from = Param::From.placeholder(),
            to = Param::To.placeholder(),
        ),
        &Params::new(tenant_id, &scope, &Filters::default()),
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
    let rollup_dimensions = query(
        client,
        &format!(
            "SELECT dd.day, dd.dimension, dd.admitted, l.max_values_per_day, dd.folded_events
             FROM dimension_days dd JOIN dimension_limits l ON l.dimension = dd.dimension
             WHERE dd.tenant_id = {tenant} AND dd.day >= ({from} AT TIME ZONE {tz})::date
               AND dd.day <= (({to} - interval '1 microsecond') AT TIME ZONE {tz})::date
             ORDER BY dd.day, dd.dimension",
            tenant = Param::Tenant.placeholder(),
            from = Param::From.placeholder(),
            to = Param::To.placeholder(),
            tz = Param::TimeZone.placeholder(),
        ),
        &Params::new(tenant_id, &scope, &Filters::default()),
    )
    .await?
    .iter()
    .map(|r| DimensionDay {
        day: r.get(0),
        dimension: r.get(1),
        values: r.get(2),
        max_values_per_day: r.get(3),
        folded_events: r.get(4),
    })
    .collect();
    // The payload's first bytes only, under the payload's own name.
    let columns = format!(
        "{}substring(payload FROM 1 FOR {PREVIEW_BYTES}) AS payload",
        dead_letters::COLUMNS
            .strip_suffix("payload")
            .expect("payload is the last column")
    );
    let limit = dead_letters.clamp(1, 500);
    let recent_dead_letters = client
        .query_typed(
            &format!(
                "SELECT {columns} FROM dead_letters WHERE tenant_id = {tenant}
                 ORDER BY received_at DESC, dead_letter_id DESC LIMIT {limit}",
                tenant = RecentParam::Tenant.placeholder(),
                limit = RecentParam::Limit.placeholder(),
            ),
            &RecentParam::typed(|p| {
                Some(match p {
                    RecentParam::Tenant => &tenant_id as &(dyn ToSql + Sync),
                    RecentParam::Limit => &limit,
                })
            }),
        )
        .await?
        .iter()
        .map(DeadLetter::from_row)
        .collect();
    let overrides = quota::overrides(client, tenant_id)
        .await?
        .ok_or(ReportError::UnknownTenant)?;
    let first_day = scope.range.from.date_naive();
    let last = scope.range.to - chrono::Duration::microseconds(1);
    let end_day = last.date_naive().succ_opt().unwrap_or(first_day);
    let collect = quota::usage(
        client,
        tenant_id,
        first_day,
        end_day,
        collect_limits.with(&overrides),
    )
    .await?;
    Ok(IngestReport {
        range: scope.range,
        hours,
        recent_dead_letters,
        collect,
        rollup_dimensions,
        freshness: scope.freshness,
    })
}
