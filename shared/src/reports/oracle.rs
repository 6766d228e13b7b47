//! The full-statement breakdown and summary: every figure, rolled part included, merged by the
//! database in one statement, as [`super::timeseries`] does.
//!
//! Kept only as the tests' oracle: the handler answers breakdowns and summaries through
//! [`super::RolledCache`], which must give the same figures, and the tests check that it does
//! against these. Not for new callers.

use super::sql::{merged_cte, metrics_by, query, scope, Params, Scope};
use super::vocabulary::{
    ranked, Breakdown, BreakdownRow, Filters, Granularity, Metrics, Range, Ranking, ReportError,
    Summary,
};
use tokio_postgres::Client;

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
