//! The time series report: each bucket's figures read in one statement, rollup rows and raw
//! events merged. (Breakdowns and summaries go through [`super::RolledCache`].)

use super::sql::{merged_cte, metrics_by, query, scope, Params};
use super::vocabulary::{Filters, Granularity, Metrics, Point, Range, ReportError, TimeSeries};
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
