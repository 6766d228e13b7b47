//! The report functions: each figure read in one statement, rollup rows and raw events merged.

use super::sql::{merged_cte, metrics_by, query, scope, Params, Scope};
use super::vocabulary::{
    ranked, Breakdown, BreakdownRow, Filters, Granularity, Metrics, Point, Range, Ranking,
    ReportError, Summary, TimeSeries,
};
use tokio_postgres::Client;

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
    let rows = query(client, &sql, &Params::new(tenant_id, &scope, filters)).await?;
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

/// One dimension's values with their metrics, as `ranking` asks (see [`ranked`](super::vocabulary::ranked)).
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
    // Every value: the ranking is made on the figures shown (see [`ranked`](super::vocabulary::ranked)).
    let sql = format!(
        "WITH {} {} ORDER BY 2 DESC, value COLLATE \"C\"",
        merged_cte(granularity, Some(dimension), filters),
        metrics_by("value"),
    );
    let rows = query(client, &sql, &Params::new(tenant_id, &scope, filters)).await?;
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
    let rows = query(client, &sql, &Params::new(tenant_id, &scope, filters)).await?;
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
