//! Top lists: the most frequent devices or pages, from the TopN counters.

use super::sql::{
    fresh_events, query, rolled_rows_from, scope, watermark_now, NamedParams, Param, Params,
};
use super::vocabulary::{Filters, Freshness, Granularity, Range, ReportError};
use serde::Serialize;
use std::str::FromStr;
use tokio_postgres::Client;

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
    let bound = granularity.rolled_bound();
    let (column, item) = list.column();
    let rolled = rolled_rows_from(granularity, None, filters, false);
    let fresh = fresh_events(&watermark_now(granularity));
    let tenant = Param::Tenant.placeholder();
    let sql = format!(
        "WITH rolled AS (
             SELECT topn_union_agg(r.{column}) AS counter FROM ({rolled}) r
             WHERE r.tenant_id = {tenant} AND {bound}),
         fresh AS (
             SELECT topn_add_agg({item}) AS counter FROM events e
             WHERE {fresh})
         SELECT t.item, t.frequency
         FROM rolled, fresh,
              LATERAL topn(topn_union(coalesce(rolled.counter, '{{}}'::jsonb),
                                      coalesce(fresh.counter, '{{}}'::jsonb)), {}) t
         ORDER BY 2 DESC, 1",
        n.clamp(1, 100)
    );
    let rows = query(client, &sql, &Params::new(tenant_id, &scope, filters)).await?;
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
