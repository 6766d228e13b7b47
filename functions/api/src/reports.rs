//! The tenant reports API (`reports` function, forwarded HTTP), over
//! [`remarketable_core::reports`].
//!
//! | route | answers |
//! |---|---|
//! | `GET /api/v1/tenants/{tenant_id}/timeseries` | metrics per bucket |
//! | `GET /api/v1/tenants/{tenant_id}/breakdown?dimension=country` | one dimension's top values (`order=` a metric) |
//! | `GET /api/v1/tenants/{tenant_id}/summary` | KPI totals with the previous period |
//! | `GET /api/v1/tenants/{tenant_id}/top?list=pages` | top pages or devices (TopN estimates) |
//! | `GET /api/v1/tenants/{tenant_id}/ingest` | the delivery ledger per hour and recent dead letters |
//! | `GET /api/v1/tenants/{tenant_id}/campaigns?model=last_touch` | touches, sessions and attributed conversions per campaign, source and medium |
//! | `GET /api/v1/tenants/{tenant_id}/funnels/{name}/report?by=campaign` | sessions reaching each step of a funnel, in order, and the conversion between steps |
//!
//! Common parameters: `from`/`to` (RFC 3339) or `range` (`1h`, `24h`, `7d`, `30d`; default
//! `24h`, ending now), `granularity` (`5m`, `1h`, `1d`; default from the range length),
//! filters `event_type`, `country`, `browser`, `campaign` (`""` = events without it), and
//! `format=csv` (or `Accept: text/csv`) for Excel and Power BI. Credentials: a tenant read key
//! or a share token (whose fixed filters always apply). Every answer says how fresh it is
//! (`freshness.as_of`) and carries the error bound of its distinct counts.
//!
//! Breakdowns and summaries keep the rolled-up part of what they read, per rollup watermark
//! ([`RolledCache`]), and merge the raw events above that watermark into it at every request.

use crate::access::TenantAccess;
use crate::admission::{self, Report};
use crate::error::ApiError;
use crate::ApiState;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, TimeDelta, Utc};
use remarketable_core::funnels;
use remarketable_core::reports::{
    self, Dimension, Filters, FunnelBy, Granularity, Metric, Metrics, Model, Range, Ranking,
    ReportError, RolledCache, TopList, DISTINCT_ERROR_BOUND_95,
};
use remarketable_core::ErrorCode;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Bytes of rolled-up sketches the breakdowns and summaries keep ([`RolledCache`]).
const ROLLED_CACHE_BYTES: usize = 64 << 20;

pub fn routes(state: &Arc<ApiState>) -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/tenants/{tenant_id}/timeseries", get(timeseries))
        .route("/api/v1/tenants/{tenant_id}/breakdown", get(breakdown))
        .route("/api/v1/tenants/{tenant_id}/summary", get(summary))
        .route("/api/v1/tenants/{tenant_id}/top", get(top))
        .route("/api/v1/tenants/{tenant_id}/ingest", get(ingest))
        .route("/api/v1/tenants/{tenant_id}/campaigns", get(campaigns))
        .route(
            "/api/v1/tenants/{tenant_id}/funnels/{name}/report",
            get(funnel),
        )
        .layer(Extension(Arc::new(RolledCache::new(ROLLED_CACHE_BYTES))))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            admission::deadline,
        ))
}

/// Query parameters, as sent; parsed into closed types by [`Request::parse`].
#[derive(Debug, Default, Deserialize)]
pub struct ReportQuery {
    from: Option<String>,
    to: Option<String>,
    range: Option<String>,
    granularity: Option<String>,
    event_type: Option<String>,
    country: Option<String>,
    browser: Option<String>,
    campaign: Option<String>,
    format: Option<String>,
    dimension: Option<String>,
    order: Option<String>,
    limit: Option<i64>,
    list: Option<String>,
    n: Option<i32>,
    dead_letters: Option<i64>,
    model: Option<String>,
    by: Option<String>,
}

/// A parsed report request.
struct Request {
    range: Range,
    granularity: Granularity,
    filters: Filters,
    csv: bool,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadParameter, message)
}

fn parse_time(name: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            bad(format!(
                "{name} must be an RFC 3339 time, e.g. 2026-11-26T00:00:00Z"
            ))
        })
}

impl ReportQuery {
    fn parse(&self, access: &TenantAccess, headers: &HeaderMap) -> Result<Request, ApiError> {
        let now = Utc::now();
        let to = match &self.to {
            Some(t) => parse_time("to", t)?,
            None => now,
        };
        let from = match (&self.from, self.range.as_deref()) {
            (Some(_), Some(_)) => return Err(bad("give either from/to or range, not both")),
            (Some(f), None) => parse_time("from", f)?,
            (None, preset) => {
                let span = match preset.unwrap_or("24h") {
                    "1h" => TimeDelta::hours(1),
                    "24h" => TimeDelta::hours(24),
                    "7d" => TimeDelta::days(7),
                    "30d" => TimeDelta::days(30),
                    _ => return Err(bad("range must be 1h, 24h, 7d or 30d")),
                };
                to - span
            }
        };
        let range = Range::new(from, to).map_err(bad)?;
        let granularity = match &self.granularity {
            Some(g) => g.parse().map_err(bad)?,
            None => Granularity::for_range(&range),
        };
        let mut filters = access.fixed_filters.clone();
        for (dimension, value) in [
            (Dimension::EventType, &self.event_type),
            (Dimension::Country, &self.country),
            (Dimension::Browser, &self.browser),
            (Dimension::Campaign, &self.campaign),
        ] {
            if let Some(value) = value {
                filters.set(dimension, value)?;
            }
        }
        let csv = match self.format.as_deref() {
            Some("csv") => true,
            Some("json") => false,
            Some(_) => return Err(bad("format must be json or csv")),
            None => headers
                .get(header::ACCEPT)
                .and_then(|a| a.to_str().ok())
                .is_some_and(|a| a.contains("text/csv")),
        };
        Ok(Request {
            range,
            granularity,
            filters,
            csv,
        })
    }
}

fn report_error(e: ReportError) -> ApiError {
    match e {
        // The credential names an existing tenant; only a deleted one gets here.
        ReportError::UnknownTenant => ApiError::not_found(),
        ReportError::BadRequest(message) => bad(message),
        ReportError::Database(e) => ApiError::database(e),
        ReportError::Sketch(e) => {
            tracing::error!(error = %e, "a sketch from the database does not parse");
            ApiError::new(
                ErrorCode::InternalError,
                "internal error; see the handler log",
            )
        }
    }
}

/// The JSON of a report, with the error bound of its distinct counts.
fn json_answer(report: &impl serde::Serialize) -> Response {
    let mut value = serde_json::to_value(report).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert(
            "distinct_counts".into(),
            json!({"method": "hyperloglog", "relative_error_95": DISTINCT_ERROR_BOUND_95}),
        );
    }
    let mut response = axum::Json(value).into_response();
    no_store(&mut response);
    response
}

fn no_store(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// A CSV answer: a header line and one line per row, fields quoted when they need it.
fn csv_answer(name: &str, header_line: &[&str], rows: Vec<Vec<String>>) -> Response {
    let mut out = String::new();
    let mut push = |fields: &mut dyn Iterator<Item = &str>| {
        let line: Vec<String> = fields.map(csv_field).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    };
    push(&mut header_line.iter().copied());
    for row in &rows {
        push(&mut row.iter().map(String::as_str));
    }
    let mut response = out.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}.csv\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    no_store(&mut response);
    response
}

fn csv_field(s: &str) -> String {
    // A leading =, +, - or @ would make a spreadsheet evaluate the field as a formula; a
    // leading TAB or CR hides such a character from a check that looks at the first one only.
    let s = if s.starts_with(['\t', '\r'])
        || (s.starts_with(['=', '+', '-', '@']) && s.parse::<f64>().is_err())
    {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

const METRIC_COLUMNS: [&str; 6] = [
    "events",
    "unique_devices",
    "unique_sessions",
    "revenue",
    "purchases",
    "conversion_rate",
];

fn metric_fields(m: &Metrics) -> Vec<String> {
    vec![
        m.events.to_string(),
        m.unique_devices.to_string(),
        m.unique_sessions.to_string(),
        m.revenue.to_string(),
        m.purchases.to_string(),
        format!("{:.6}", m.conversion_rate),
    ]
}

fn with_metrics<'a>(first: &[&'a str]) -> Vec<&'a str> {
    first.iter().copied().chain(METRIC_COLUMNS).collect()
}

async fn timeseries(
    Report { access, client, .. }: Report,
    Path(tenant_id): Path<i64>,
    Query(q): Query<ReportQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    access.require_tenant(tenant_id)?;
    let r = q.parse(&access, &headers)?;
    let series = reports::timeseries(&client, tenant_id, &r.range, r.granularity, &r.filters)
        .await
        .map_err(report_error)?;
    if r.csv {
        let rows = series
            .points
            .iter()
            .map(|p| {
                let mut row = vec![p.bucket.to_rfc3339()];
                row.extend(metric_fields(&p.metrics));
                row
            })
            .collect();
        return Ok(csv_answer("timeseries", &with_metrics(&["bucket"]), rows));
    }
    Ok(json_answer(&series))
}

async fn breakdown(
    Extension(cache): Extension<Arc<RolledCache>>,
    Report { access, client, .. }: Report,
    Path(tenant_id): Path<i64>,
    Query(q): Query<ReportQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    access.require_tenant(tenant_id)?;
    let r = q.parse(&access, &headers)?;
    let dimension: Dimension = q
        .dimension
        .as_deref()
        .ok_or_else(|| bad("dimension is required"))?
        .parse()
        .map_err(bad)?;
    let order: Metric = match q.order.as_deref() {
        Some(name) => name.parse().map_err(|e| bad(format!("order: {e}")))?,
        None => Metric::Events,
    };
    let limit = q.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(bad("limit must be between 1 and 100"));
    }
    let ranking = Ranking {
        dimension,
        order,
        limit,
    };
    let b = cache
        .breakdown(
            &client,
            tenant_id,
            &r.range,
            r.granularity,
            &r.filters,
            ranking,
        )
        .await
        .map_err(report_error)?;
    if r.csv {
        let rows = b
            .rows
            .iter()
            .map(|row| {
                let mut fields = vec![row.value.clone()];
                fields.extend(metric_fields(&row.metrics));
                fields
            })
            .collect();
        return Ok(csv_answer(
            "breakdown",
            &with_metrics(&[dimension.name()]),
            rows,
        ));
    }
    Ok(json_answer(&b))
}

async fn summary(
    Extension(cache): Extension<Arc<RolledCache>>,
    Report { access, client, .. }: Report,
    Path(tenant_id): Path<i64>,
    Query(q): Query<ReportQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    access.require_tenant(tenant_id)?;
    let r = q.parse(&access, &headers)?;
    let s = cache
        .summary(&client, tenant_id, &r.range, r.granularity, &r.filters)
        .await
        .map_err(report_error)?;
    if r.csv {
        let row = |period: &str, range: &Range, m: &Metrics| {
            let mut fields = vec![
                period.to_string(),
                range.from.to_rfc3339(),
                range.to.to_rfc3339(),
            ];
            fields.extend(metric_fields(m));
            fields
        };
        let rows = vec![
            row("current", &s.range, &s.current),
            row("previous", &s.previous_range, &s.previous),
        ];
        return Ok(csv_answer(
            "summary",
            &with_metrics(&["period", "from", "to"]),
            rows,
        ));
    }
    Ok(json_answer(&s))
}

async fn top(
    Report { access, client, .. }: Report,
    Path(tenant_id): Path<i64>,
    Query(q): Query<ReportQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    access.require_tenant(tenant_id)?;
    let r = q.parse(&access, &headers)?;
    let list: TopList = q.list.as_deref().unwrap_or("pages").parse().map_err(bad)?;
    if list == TopList::Devices && access.read_only {
        return Err(ApiError::new(
            ErrorCode::NotForShareLinks,
            "device identifiers are for the tenant's keys, not for share links",
        ));
    }
    let n = q.n.unwrap_or(10);
    if !(1..=100).contains(&n) {
        return Err(bad("n must be between 1 and 100"));
    }
    let t = reports::top(
        &client,
        tenant_id,
        &r.range,
        r.granularity,
        list,
        &r.filters,
        n,
    )
    .await
    .map_err(report_error)?;
    if r.csv {
        let rows = t
            .items
            .iter()
            .map(|i| vec![i.item.clone(), i.count.to_string()])
            .collect();
        return Ok(csv_answer("top", &["item", "estimated_count"], rows));
    }
    Ok(json_answer(&t))
}

async fn ingest(
    State(state): State<Arc<ApiState>>,
    Report { access, client, .. }: Report,
    Path(tenant_id): Path<i64>,
    Query(q): Query<ReportQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    access.require_tenant(tenant_id)?;
    // The ledger and dead letters are per tenant, not per country or campaign: a share link
    // limited to some filters must not see the whole tenant's deliveries.
    if !access.fixed_filters.is_empty() {
        return Err(ApiError::new(ErrorCode::FilterFixed,
            "this share link is limited to fixed filters; the delivery ledger covers the whole tenant",
        ));
    }
    let r = q.parse(&access, &headers)?;
    let dead_letters = q.dead_letters.unwrap_or(50);
    if !(1..=500).contains(&dead_letters) {
        return Err(bad("dead_letters must be between 1 and 500"));
    }
    let mut report = reports::ingest(
        &client,
        tenant_id,
        &r.range,
        dead_letters,
        state.settings.collect_limits,
    )
    .await
    .map_err(report_error)?;
    // Dead letters carry raw payloads (device identifiers, whatever a producer sent): for the
    // tenant's keys only. A share link sees the ledger's counts.
    if access.read_only {
        report.recent_dead_letters.clear();
    }
    if r.csv {
        let rows = report
            .hours
            .iter()
            .map(|h| {
                vec![
                    h.hour.to_rfc3339(),
                    h.received.to_string(),
                    h.stored.to_string(),
                    h.duplicates.to_string(),
                    h.dead_lettered.to_string(),
                ]
            })
            .collect();
        return Ok(csv_answer(
            "ingest",
            &["hour", "received", "stored", "duplicates", "dead_lettered"],
            rows,
        ));
    }
    Ok(json_answer(&report))
}

/// The campaign report's columns, in CSV order.
const CAMPAIGN_COLUMNS: [&str; 17] = [
    "campaign",
    "source",
    "medium",
    "impressions",
    "clicks",
    "ctr",
    "reach",
    "frequency",
    "sessions",
    "conversions",
    "revenue",
    "conversion_rate",
    "revenue_per_session",
    "cost",
    "cpc",
    "cpa",
    "roas",
];

/// Touches, conversions and funnel states carry no country, browser or single event type: a
/// share link fixed to one of those must not see every campaign of the tenant.
fn campaign_filters_only(access: &TenantAccess, report: &str) -> Result<(), ApiError> {
    match access
        .fixed_filters
        .0
        .keys()
        .find(|d| **d != Dimension::Campaign)
    {
        Some(d) => Err(ApiError::new(
            ErrorCode::FilterFixed,
            format!(
                "this share link is limited to a {d} filter; the {report} report filters by campaign only"
            ),
        )),
        None => Ok(()),
    }
}

fn report_limit(q: &ReportQuery, default: i64) -> Result<usize, ApiError> {
    let limit = q.limit.unwrap_or(default);
    if !(1..=1000).contains(&limit) {
        return Err(bad("limit must be between 1 and 1000"));
    }
    Ok(limit as usize)
}

async fn campaigns(
    Report { access, client, .. }: Report,
    Path(tenant_id): Path<i64>,
    Query(q): Query<ReportQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    access.require_tenant(tenant_id)?;
    campaign_filters_only(&access, "campaign")?;
    let r = q.parse(&access, &headers)?;
    let model: Model = match q.model.as_deref() {
        Some(name) => name.parse().map_err(bad)?,
        None => Model::LastTouch,
    };
    let limit = report_limit(&q, 100)?;
    let c = reports::campaigns(
        &client,
        tenant_id,
        &r.range,
        r.granularity,
        &r.filters,
        model,
        limit,
    )
    .await
    .map_err(report_error)?;
    if r.csv {
        let rows = c
            .rows
            .iter()
            .map(|row| {
                vec![
                    row.campaign.clone(),
                    row.source.clone(),
                    row.medium.clone(),
                    row.impressions.to_string(),
                    row.clicks.to_string(),
                    format!("{:.6}", row.ctr),
                    row.reach.to_string(),
                    format!("{:.6}", row.frequency),
                    row.sessions.to_string(),
                    row.conversions.to_string(),
                    row.revenue.to_string(),
                    format!("{:.6}", row.conversion_rate),
                    row.revenue_per_session.to_string(),
                    // Empty without spend.
                    optional(row.cost),
                    optional(row.cpc),
                    optional(row.cpa),
                    optional(row.roas),
                ]
            })
            .collect();
        return Ok(csv_answer("campaigns", &CAMPAIGN_COLUMNS, rows));
    }
    Ok(json_answer(&c))
}

/// `GET /api/v1/tenants/{tenant_id}/funnels/{name}/report`: CSV has one line per group (or
/// one for all sessions without `by`) and step.
async fn funnel(
    Report { access, client, .. }: Report,
    Path((tenant_id, name)): Path<(i64, String)>,
    Query(q): Query<ReportQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    access.require_tenant(tenant_id)?;
    campaign_filters_only(&access, "funnel")?;
    let r = q.parse(&access, &headers)?;
    let by: Option<FunnelBy> = q.by.as_deref().map(str::parse).transpose().map_err(bad)?;
    let limit = report_limit(&q, 100)?;
    let name = funnels::parse_name(&name)?;
    let Some(definition) = funnels::get(&**client, tenant_id, &name).await? else {
        return Err(ApiError::new(ErrorCode::NotFound, "no such funnel"));
    };
    let f = reports::funnel(
        &client,
        tenant_id,
        definition,
        (&r.range, r.granularity),
        &r.filters,
        by.map(|by| (by, limit)),
    )
    .await
    .map_err(report_error)?;
    if r.csv {
        let all = [reports::FunnelGroup {
            key: String::new(),
            steps: f.steps.clone(),
        }];
        let rows = f
            .groups
            .as_deref()
            .unwrap_or(&all)
            .iter()
            .flat_map(|g| {
                g.steps.iter().map(|s| {
                    vec![
                        g.key.clone(),
                        s.step.to_string(),
                        s.event_type.clone(),
                        s.url_prefix.clone().unwrap_or_default(),
                        s.sessions.to_string(),
                        s.from_previous
                            .map(|v| format!("{v:.6}"))
                            .unwrap_or_default(),
                        s.from_first.map(|v| format!("{v:.6}")).unwrap_or_default(),
                    ]
                })
            })
            .collect();
        let key = match by {
            Some(FunnelBy::Campaign) => "campaign",
            Some(FunnelBy::Source) => "source",
            None => "group",
        };
        return Ok(csv_answer(
            "funnel",
            &[
                key,
                "step",
                "event_type",
                "url_prefix",
                "sessions",
                "from_previous",
                "from_first",
            ],
            rows,
        ));
    }
    Ok(json_answer(&f))
}

fn optional(value: Option<impl std::fmt::Display>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("-12.5"), "-12.5");
        assert_eq!(csv_field("@cmd"), "'@cmd");
        assert_eq!(csv_field("\t=1+2"), "'\t=1+2");
        assert_eq!(csv_field("\r=1+2"), "\"'\r=1+2\"");
    }
}
