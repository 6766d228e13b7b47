//! The campaign report (issue 14): per campaign, source and medium, the touches (impressions,
//! clicks, reach, frequency), the sessions they started, the conversions and revenue
//! attributed to them under one attribution model, and with ad spend ([`crate::spend`]) the
//! cost, CPC, CPA and ROAS.
//!
//! A day's spend counts when the day's start, in the tenant's time zone, lies in the range: at
//! hourly or 5-minute granularity a range that begins inside a day leaves that day's cost out.
//! Costs are summed as they are: a tenant reports spend (and revenue) in one currency, and the
//! report lists the currencies it summed (`spend_currencies`) so a mix shows.
//!
//! Real time like the other reports, from the attribution tables (V19) up to the attribution
//! watermark and the raw events above it, in one statement: fresh touches and session starts
//! are counted as they are; a fresh conversion, and a stored one that a fresh touch or a fresh
//! event of its session could change, is attributed in the statement by the rules of
//! `advance_attribution()` over the stored and the fresh touches. So an event counts as soon as
//! it is committed and the figures do not move when attribution takes it in.

use super::sql::{query, scope, NamedParams, Param, Params};
use super::vocabulary::{Dimension, Filters, Granularity, Range, ReportError};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use std::str::FromStr;
use tokio_postgres::Client;

/// The attribution model a campaign report counts conversions by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    LastTouch,
    FirstTouch,
    Session,
}

impl Model {
    pub const ALL: [Model; 3] = [Model::LastTouch, Model::FirstTouch, Model::Session];

    pub fn name(self) -> &'static str {
        match self {
            Model::LastTouch => "last_touch",
            Model::FirstTouch => "first_touch",
            Model::Session => "session",
        }
    }

    /// The prefix of the model's columns in `conversions`.
    fn columns(self) -> &'static str {
        match self {
            Model::LastTouch => "last",
            Model::FirstTouch => "first",
            Model::Session => "session",
        }
    }
}

impl FromStr for Model {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Model::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| "model must be last_touch, first_touch or session".into())
    }
}

/// One campaign, source and medium; all three empty is direct (conversions and sessions with
/// no campaign).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignRow {
    pub campaign: String,
    pub source: String,
    pub medium: String,
    pub impressions: i64,
    /// Touches that are not impressions: ad and email clicks, UTM page views.
    pub clicks: i64,
    /// Clicks per impression (0 without impressions).
    pub ctr: f64,
    /// Devices touched: a HyperLogLog estimate (see `distinct_counts`).
    pub reach: i64,
    /// Impressions per reached device (0 without reach).
    pub frequency: f64,
    /// Sessions whose first event carries this campaign, source and medium.
    pub sessions: i64,
    /// Conversions attributed under the report's model, and their revenue.
    pub conversions: i64,
    pub revenue: Decimal,
    /// Conversions per session (0 without sessions).
    pub conversion_rate: f64,
    /// Revenue per session (0 without sessions).
    pub revenue_per_session: Decimal,
    /// Ad spend over the range; `null` when none was reported for this row.
    pub cost: Option<Decimal>,
    /// Cost per click, per attributed conversion, and revenue per cost (return on ad spend),
    /// to four places; `null` without spend or without clicks, conversions or cost.
    pub cpc: Option<Decimal>,
    pub cpa: Option<Decimal>,
    pub roas: Option<Decimal>,
}

/// Conversions and revenue of every row, before `limit`: campaigns plus direct.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignTotals {
    pub conversions: i64,
    pub revenue: Decimal,
    pub sessions: i64,
    /// Spend of every row (`null` when none was reported in the range), and total revenue per
    /// total cost.
    pub cost: Option<Decimal>,
    pub roas: Option<Decimal>,
    /// The currencies the costs were reported in, sorted: more than one means the sums mix
    /// them.
    pub spend_currencies: Vec<String>,
}

/// How fresh a report over the attribution tables (campaigns, funnels) is.
#[derive(Debug, Clone, Serialize)]
pub struct AttributionFreshness {
    /// The database's clock when the report was read.
    pub as_of: DateTime<Utc>,
    /// The attribution watermark as the report began: events up to it were attributed by the
    /// attribution step, later ones in the report's statement.
    pub attributed_to_event: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Campaigns {
    pub model: Model,
    pub granularity: Granularity,
    /// The range, widened to whole buckets of `granularity` as the other reports do.
    pub range: Range,
    /// Ranked by revenue, then conversions, then clicks, then campaign, source and medium.
    pub rows: Vec<CampaignRow>,
    /// How many rows there were before `limit`.
    pub total_rows: usize,
    pub totals: CampaignTotals,
    pub freshness: AttributionFreshness,
}

/// The attribution watermark and the least event time above it (the fresh part reads from
/// there, so it scans only the partitions that can hold such events; see `scope`).
pub(super) async fn attribution_scope(
    client: &Client,
) -> Result<(i64, Option<DateTime<Utc>>), ReportError> {
    let row = client
        .query_one(
            "SELECT s.last_event_id,
                    (SELECT min(r.min_event_time) FROM event_id_ranges r
                     WHERE r.id_ceiling > s.last_event_id)
             FROM attribution_state s",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// Sessions' first events as the report sees them: of the stored `session_sources` rows that
/// `stored` selects (a condition on `s`), and of every session with events in the CTE `fresh`
/// (columns `session_id`, `event_time`, `campaign`, `source`, `medium`), the earlier of the
/// stored and the fresh first event, by the rule of V19's session_sources.
pub(super) fn session_firsts(stored: &str) -> String {
    let tenant = Param::Tenant.placeholder();
    format!(
        "SELECT DISTINCT ON (u.session_id) u.session_id, u.at, u.campaign, u.source, u.medium
         FROM (SELECT s.session_id, s.first_event_time AS at, s.campaign, s.source, s.medium
               FROM session_sources s
               WHERE s.tenant_id = {tenant} AND ({stored})
               UNION ALL
               SELECT f.session_id, f.event_time, f.campaign, f.source, f.medium
               FROM fresh f) u
         ORDER BY u.session_id, u.at, u.campaign = '', u.campaign COLLATE \"C\",
                  u.source COLLATE \"C\", u.medium COLLATE \"C\""
    )
}

/// The report statement. Parameters as [`Params`] (the tenant, the aligned range, the campaign
/// filter, and as `FreshFrom` the least time of the events above the attribution watermark);
/// the model picks column names.
fn statement(model: Model) -> String {
    let m = model.columns();
    let (tenant, from, to) = (
        Param::Tenant.placeholder(),
        Param::From.placeholder(),
        Param::To.placeholder(),
    );
    let (campaign, fresh_from) = (
        Param::Campaign.placeholder(),
        Param::FreshFrom.placeholder(),
    );
    // The model's pick among a conversion's candidate touches `y` (see attribution_statement
    // in V19), or its session's candidate first events.
    let pick = match model {
        Model::LastTouch | Model::FirstTouch => {
            let order = if model == Model::LastTouch {
                "DESC"
            } else {
                "ASC"
            };
            format!(
                "SELECT y.campaign, y.source, y.medium FROM (
                     SELECT x.event_time, x.is_click, x.campaign, x.source, x.medium
                     FROM touches x
                     WHERE x.tenant_id = {tenant} AND x.device_id = r.device_id
                       AND x.event_time >= r.lookback_start AND x.event_time <= r.event_time
                     UNION ALL
                     SELECT f.event_time, f.is_click, f.campaign, f.source, f.medium
                     FROM fresh_touches f
                     WHERE f.device_id = r.device_id
                       AND f.event_time >= r.lookback_start AND f.event_time <= r.event_time) y
                 ORDER BY (y.is_click OR NOT t.clicks_first) DESC, y.event_time {order},
                          y.campaign COLLATE \"C\", y.source COLLATE \"C\", y.medium COLLATE \"C\"
                 LIMIT 1"
            )
        }
        Model::Session => format!(
            "SELECT y.campaign, y.source, y.medium FROM (
                 SELECT s.first_event_time AS at, s.campaign, s.source, s.medium
                 FROM session_sources s
                 WHERE s.tenant_id = {tenant} AND s.session_id = r.session_id
                 UNION ALL
                 SELECT f.event_time, f.campaign, f.source, f.medium
                 FROM fresh f WHERE f.session_id = r.session_id) y
             ORDER BY y.at, y.campaign = '', y.campaign COLLATE \"C\", y.source COLLATE \"C\",
                      y.medium COLLATE \"C\"
             LIMIT 1"
        ),
    };
    let firsts = session_firsts(&format!(
        "(s.first_event_time >= {from} AND s.first_event_time < {to})
         OR s.session_id IN (SELECT f.session_id FROM fresh f)"
    ));
    format!(
        "WITH w AS (SELECT last_event_id AS wm FROM attribution_state),
         t AS (SELECT conversion_event_types AS kinds, attribution_lookback AS lookback,
                      attribution_clicks_first AS clicks_first, time_zone AS zone
               FROM tenants WHERE tenant_id = {tenant}),
         fresh AS MATERIALIZED (
             SELECT e.event_id, e.event_time, e.event_type, e.device_id, e.session_id,
                    coalesce(e.campaign, '') AS campaign, coalesce(e.source, '') AS source,
                    coalesce(e.medium, '') AS medium, coalesce(e.revenue, 0) AS revenue,
                    e.event_type = ANY (t.kinds) AS is_conversion
             FROM events e, w, t
             WHERE e.tenant_id = {tenant} AND e.event_id > w.wm AND e.event_time >= {fresh_from}),
         fresh_touches AS MATERIALIZED (
             SELECT f.device_id, f.event_time, f.event_type <> 'ad_impression' AS is_click,
                    f.campaign, f.source, f.medium
             FROM fresh f WHERE f.campaign <> '' AND NOT f.is_conversion),
         touch_rows AS (
             SELECT u.campaign, u.source, u.medium,
                    count(*) FILTER (WHERE NOT u.is_click) AS impressions,
                    count(*) FILTER (WHERE u.is_click) AS clicks,
                    hll_cardinality(hll_add_agg(hll_hash_bigint(u.device_id), 14, 5)) AS reach
             FROM (SELECT x.device_id, x.is_click, x.campaign, x.source, x.medium
                   FROM touches x
                   WHERE x.tenant_id = {tenant} AND x.event_time >= {from} AND x.event_time < {to}
                   UNION ALL
                   SELECT f.device_id, f.is_click, f.campaign, f.source, f.medium
                   FROM fresh_touches f WHERE f.event_time >= {from} AND f.event_time < {to}) u
             GROUP BY 1, 2, 3),
         -- Sessions starting in the range: the stored first events, and for every session with
         -- fresh events the earlier of the stored and the fresh ones.
         firsts AS ({firsts}),
         session_rows AS (
             SELECT campaign, source, medium, count(*) AS sessions FROM firsts
             WHERE at >= {from} AND at < {to} GROUP BY 1, 2, 3),
         -- Conversions to attribute here: the fresh ones, and the stored ones a fresh touch on
         -- their device or a fresh event in their session could change.
         redo AS (
             SELECT c.event_id, c.event_time, c.device_id, c.session_id, c.revenue,
                    c.lookback_start
             FROM conversions c
             WHERE c.tenant_id = {tenant} AND c.event_time >= {from} AND c.event_time < {to}
               AND (EXISTS (SELECT 1 FROM fresh_touches f
                            WHERE f.device_id = c.device_id AND f.event_time >= c.lookback_start
                              AND f.event_time <= c.event_time)
                    OR EXISTS (SELECT 1 FROM fresh f WHERE f.session_id = c.session_id))
             UNION ALL
             SELECT f.event_id, f.event_time, f.device_id, f.session_id, f.revenue,
                    f.event_time - extract(epoch FROM t.lookback) * interval '1 second'
             FROM fresh f, t
             WHERE f.is_conversion AND f.event_time >= {from} AND f.event_time < {to}),
         attributed AS (
             SELECT c.{m}_campaign AS campaign, c.{m}_source AS source, c.{m}_medium AS medium,
                    c.revenue
             FROM conversions c
             WHERE c.tenant_id = {tenant} AND c.event_time >= {from} AND c.event_time < {to}
               AND NOT EXISTS (SELECT 1 FROM redo r WHERE r.event_id = c.event_id)
             UNION ALL
             SELECT coalesce(p.campaign, ''), coalesce(p.source, ''), coalesce(p.medium, ''),
                    r.revenue
             FROM redo r CROSS JOIN t LEFT JOIN LATERAL ({pick}) p ON true),
         conversion_rows AS (
             SELECT campaign, source, medium, count(*) AS conversions, sum(revenue) AS revenue
             FROM attributed GROUP BY 1, 2, 3),
         -- The days whose start (in the tenant's zone) lies in the range; the first two bounds
         -- only narrow the key range read.
         spend_rows AS (
             SELECT a.campaign, a.source, a.medium, sum(a.cost) AS cost,
                    array_agg(DISTINCT a.currency ORDER BY a.currency) AS currencies
             FROM ad_spend a, t
             WHERE a.tenant_id = {tenant}
               AND a.day >= ({from} AT TIME ZONE t.zone)::date
               AND a.day <= ({to} AT TIME ZONE t.zone)::date
               AND a.day::timestamp AT TIME ZONE t.zone >= {from}
               AND a.day::timestamp AT TIME ZONE t.zone < {to}
             GROUP BY 1, 2, 3)
         SELECT k.campaign, k.source, k.medium,
                coalesce(tr.impressions, 0), coalesce(tr.clicks, 0), coalesce(tr.reach, 0),
                coalesce(sr.sessions, 0), coalesce(cr.conversions, 0),
                coalesce(cr.revenue, 0)::numeric(18, 4), sp.cost::numeric(18, 4),
                coalesce(sp.currencies, '{{}}')
         FROM (SELECT campaign, source, medium FROM touch_rows
               UNION SELECT campaign, source, medium FROM session_rows
               UNION SELECT campaign, source, medium FROM conversion_rows
               UNION SELECT campaign, source, medium FROM spend_rows) k
         LEFT JOIN touch_rows tr USING (campaign, source, medium)
         LEFT JOIN session_rows sr USING (campaign, source, medium)
         LEFT JOIN conversion_rows cr USING (campaign, source, medium)
         LEFT JOIN spend_rows sp USING (campaign, source, medium)
         WHERE {campaign}::text IS NULL OR k.campaign = {campaign}"
    )
}

/// `n / d` to four places (written with four, as the stored sums are); `None` without a
/// divisor.
fn per(n: Decimal, d: Decimal) -> Option<Decimal> {
    (!d.is_zero()).then(|| {
        let mut q = (n / d).round_dp(4);
        q.rescale(4);
        q
    })
}

fn ratio(n: i64, d: i64) -> f64 {
    if d > 0 {
        n as f64 / d as f64
    } else {
        0.0
    }
}

/// The campaign report of `tenant_id` over `range` under `model`, at most `limit` rows.
/// Only the `campaign` filter applies (touches and conversions carry no country or browser).
pub async fn campaigns(
    client: &Client,
    tenant_id: i64,
    range: &Range,
    granularity: Granularity,
    filters: &Filters,
    model: Model,
    limit: usize,
) -> Result<Campaigns, ReportError> {
    if let Some(d) = filters.0.keys().find(|d| **d != Dimension::Campaign) {
        return Err(ReportError::BadRequest(format!(
            "the campaign report filters by campaign only, not by {d}"
        )));
    }
    let scope = scope(client, tenant_id, range, granularity).await?;
    let (watermark, fresh_from) = attribution_scope(client).await?;
    let mut params = Params::new(tenant_id, &scope, filters);
    params.fresh_from = fresh_from.unwrap_or(scope.range.to);
    let rows = query(client, &statement(model), &params).await?;
    let mut currencies = std::collections::BTreeSet::new();
    let mut rows: Vec<CampaignRow> = rows
        .iter()
        .map(|r| {
            let cost: Option<Decimal> = r.get(9);
            currencies.extend(r.get::<_, Vec<String>>(10));
            let (impressions, clicks, reach, sessions): (i64, i64, f64, i64) =
                (r.get(3), r.get(4), r.get(5), r.get(6));
            let reach = reach.round() as i64;
            let revenue: Decimal = r.get(8);
            CampaignRow {
                campaign: r.get(0),
                source: r.get(1),
                medium: r.get(2),
                impressions,
                clicks,
                ctr: ratio(clicks, impressions),
                reach,
                frequency: ratio(impressions, reach),
                sessions,
                conversions: r.get(7),
                revenue,
                conversion_rate: ratio(r.get(7), sessions),
                revenue_per_session: if sessions > 0 {
                    (revenue / Decimal::from(sessions)).round_dp(4)
                } else {
                    Decimal::ZERO
                },
                cost,
                cpc: cost.and_then(|c| per(c, clicks.into())),
                cpa: cost.and_then(|c| per(c, r.get::<_, i64>(7).into())),
                roas: cost.and_then(|c| per(revenue, c)),
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        (b.revenue, b.conversions, b.clicks)
            .cmp(&(a.revenue, a.conversions, a.clicks))
            .then_with(|| {
                (&a.campaign, &a.source, &a.medium).cmp(&(&b.campaign, &b.source, &b.medium))
            })
    });
    let revenue: Decimal = rows.iter().map(|r| r.revenue).sum();
    let cost = rows.iter().filter_map(|r| r.cost).reduce(|a, b| a + b);
    let totals = CampaignTotals {
        conversions: rows.iter().map(|r| r.conversions).sum(),
        revenue,
        sessions: rows.iter().map(|r| r.sessions).sum(),
        cost,
        roas: cost.and_then(|c| per(revenue, c)),
        spend_currencies: currencies.into_iter().collect(),
    };
    let total_rows = rows.len();
    rows.truncate(limit);
    Ok(Campaigns {
        model,
        granularity,
        range: scope.range,
        rows,
        total_rows,
        totals,
        freshness: AttributionFreshness {
            as_of: scope.freshness.as_of,
            attributed_to_event: watermark,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_are_a_closed_set() {
        for m in Model::ALL {
            assert_eq!(m.name().parse::<Model>(), Ok(m));
        }
        assert!("linear".parse::<Model>().is_err());
        assert!(statement(Model::Session).contains("c.session_campaign"));
        assert!(statement(Model::FirstTouch).contains("y.event_time ASC"));
    }
}
