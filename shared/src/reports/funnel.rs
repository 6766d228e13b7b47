//! The funnel report (issue 14): of the sessions that started in a range, how many reached
//! each step of a tenant's funnel ([`crate::funnels`]), in order within the session (the rule
//! of migration V27), and the conversion from each step to the next; optionally per campaign
//! or per source of the session (its first event, as the campaign report's sessions).
//!
//! Real time like the campaign report, in one statement: the per-session state kept by the
//! attribution step (`funnel_sessions`, up to the attribution watermark) for the sessions with
//! no event above the watermark, and for every session with such an event its state computed
//! again from its stored step events (`funnel_events`) and its fresh ones, with its start and
//! source from the stored and the fresh events. A session counts once, so nothing is counted
//! twice when the next window takes the fresh events in, and nothing moves.
//!
//! A session counts in the range it started in, whenever its later steps happened (a session
//! that started before `to` may reach a step after it).

use super::campaigns::{attribution_scope, session_firsts, AttributionFreshness};
use super::sql::{query, scope, NamedParams, Param, Params};
use super::vocabulary::{Dimension, Filters, Granularity, Range, ReportError};
use crate::funnels::{Funnel, Step};
use serde::Serialize;
use std::collections::BTreeMap;
use std::str::FromStr;
use tokio_postgres::Client;

/// What a funnel report breaks its sessions down by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FunnelBy {
    Campaign,
    Source,
}

impl FunnelBy {
    fn column(self) -> &'static str {
        match self {
            FunnelBy::Campaign => "s.campaign",
            FunnelBy::Source => "s.source",
        }
    }
}

impl FromStr for FunnelBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "campaign" => Ok(FunnelBy::Campaign),
            "source" => Ok(FunnelBy::Source),
            _ => Err("by must be campaign or source".into()),
        }
    }
}

/// One step's sessions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepCount {
    /// 1-based.
    pub step: usize,
    pub event_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_prefix: Option<String>,
    /// Sessions that reached this step (and every one before it, in order).
    pub sessions: i64,
    /// Sessions of this step per session of the step before (`null` for step 1, and when the
    /// step before has none).
    pub from_previous: Option<f64>,
    /// Sessions of this step per session of step 1 (`null` when step 1 has none).
    pub from_first: Option<f64>,
}

/// The steps of one campaign's or source's sessions ('' is direct, or none).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunnelGroup {
    pub key: String,
    pub steps: Vec<StepCount>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FunnelReport {
    pub funnel: Funnel,
    pub granularity: Granularity,
    /// The range, widened to whole buckets of `granularity` as the other reports do; sessions
    /// whose first event lies in it count.
    pub range: Range,
    /// Every session of the range (after the campaign filter).
    pub steps: Vec<StepCount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<FunnelBy>,
    /// With `by`: per value, ranked by sessions at step 1, then the last step, then the value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<FunnelGroup>>,
    /// How many groups there were before `limit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_groups: Option<usize>,
    pub freshness: AttributionFreshness,
}

/// The report statement: rows of (group key, step, sessions). Parameters as [`Params`] with
/// `Funnel` the funnel's id and `FreshFrom` the least time above the attribution watermark.
fn statement(by: Option<FunnelBy>) -> String {
    let (tenant, funnel, from, to) = (
        Param::Tenant.placeholder(),
        Param::Funnel.placeholder(),
        Param::From.placeholder(),
        Param::To.placeholder(),
    );
    let (campaign, fresh_from) = (
        Param::Campaign.placeholder(),
        Param::FreshFrom.placeholder(),
    );
    let key = by.map_or("''", FunnelBy::column);
    let firsts = session_firsts("s.session_id IN (SELECT f.session_id FROM fresh f)");
    format!(
        "WITH w AS (SELECT last_event_id AS wm FROM attribution_state),
         fn AS (SELECT step_types, step_prefixes FROM funnels
                WHERE tenant_id = {tenant} AND funnel_id = {funnel}),
         fresh AS MATERIALIZED (
             SELECT e.event_time, e.session_id, coalesce(e.campaign, '') AS campaign,
                    coalesce(e.source, '') AS source, coalesce(e.medium, '') AS medium,
                    funnel_steps_of(fn.step_types, fn.step_prefixes, e.event_type,
                                    e.page_url) AS steps
             FROM events e, w, fn
             WHERE e.tenant_id = {tenant} AND e.event_id > w.wm AND e.event_time >= {fresh_from}),
         -- Every session with a fresh event, its start and source over stored and fresh events.
         firsts AS MATERIALIZED ({firsts}),
         redo AS (
             SELECT fi.campaign, fi.source, r.reached
             FROM firsts fi
             CROSS JOIN LATERAL (
                 SELECT funnel_reach(y.steps, y.event_time ORDER BY y.event_time) AS reached
                 FROM (SELECT x.steps, x.event_time FROM funnel_events x
                       WHERE x.tenant_id = {tenant} AND x.funnel_id = {funnel}
                         AND x.session_id = fi.session_id
                       UNION ALL
                       SELECT f.steps, f.event_time FROM fresh f
                       WHERE f.session_id = fi.session_id AND f.steps <> 0) y) r
             WHERE fi.at >= {from} AND fi.at < {to} AND r.reached > 0),
         reached AS (
             SELECT s.campaign, s.source, s.reached FROM funnel_sessions s
             WHERE s.tenant_id = {tenant} AND s.funnel_id = {funnel}
               AND s.started_at >= {from} AND s.started_at < {to}
               AND NOT EXISTS (SELECT 1 FROM firsts fi WHERE fi.session_id = s.session_id)
             UNION ALL
             SELECT campaign, source, reached FROM redo)
         SELECT {key} AS key, k.step, count(*)
         FROM reached s CROSS JOIN LATERAL generate_series(1, s.reached::integer) k(step)
         WHERE {campaign}::text IS NULL OR s.campaign = {campaign}
         GROUP BY 1, 2"
    )
}

fn share(n: i64, d: i64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

/// Step counts with their conversions.
fn counted(steps: &[Step], sessions: &[i64]) -> Vec<StepCount> {
    steps
        .iter()
        .zip(sessions)
        .enumerate()
        .map(|(i, (step, &n))| StepCount {
            step: i + 1,
            event_type: step.event_type.clone(),
            url_prefix: step.url_prefix.clone(),
            sessions: n,
            from_previous: (i > 0).then(|| share(n, sessions[i - 1])).flatten(),
            from_first: share(n, sessions[0]),
        })
        .collect()
}

/// The funnel report of `funnel` (of `tenant_id`) over `range`; with `breakdown`, broken down by
/// `breakdown` into at most that many groups. Only the `campaign` filter applies (a session's state
/// carries no country or browser).
pub async fn funnel(
    client: &Client,
    tenant_id: i64,
    funnel: Funnel,
    (range, granularity): (&Range, Granularity),
    filters: &Filters,
    breakdown: Option<(FunnelBy, usize)>,
) -> Result<FunnelReport, ReportError> {
    let by = breakdown.map(|(by, _)| by);
    if let Some(d) = filters.0.keys().find(|d| **d != Dimension::Campaign) {
        return Err(ReportError::BadRequest(format!(
            "the funnel report filters by campaign only, not by {d}"
        )));
    }
    let scope = scope(client, tenant_id, range, granularity).await?;
    let (watermark, fresh_from) = attribution_scope(client).await?;
    let mut params = Params::new(tenant_id, &scope, filters);
    params.fresh_from = fresh_from.unwrap_or(scope.range.to);
    params.funnel = funnel.funnel_id;
    let rows = query(client, &statement(by), &params).await?;
    let n = funnel.steps.len();
    let mut groups: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in &rows {
        let step: i32 = r.get(1);
        let counts = groups.entry(r.get(0)).or_insert_with(|| vec![0; n]);
        if let Some(c) = usize::try_from(step - 1)
            .ok()
            .and_then(|i| counts.get_mut(i))
        {
            *c = r.get(2);
        }
    }
    let mut totals = vec![0i64; n];
    for counts in groups.values() {
        for (t, c) in totals.iter_mut().zip(counts) {
            *t += c;
        }
    }
    let (groups, total_groups) = match breakdown {
        None => (None, None),
        Some((_, limit)) => {
            let mut ranked: Vec<(String, Vec<i64>)> = groups.into_iter().collect();
            ranked.sort_by(|(ka, a), (kb, b)| {
                (b[0], b[n - 1])
                    .cmp(&(a[0], a[n - 1]))
                    .then_with(|| ka.cmp(kb))
            });
            let total = ranked.len();
            ranked.truncate(limit);
            let groups = ranked
                .into_iter()
                .map(|(key, counts)| FunnelGroup {
                    key,
                    steps: counted(&funnel.steps, &counts),
                })
                .collect();
            (Some(groups), Some(total))
        }
    };
    Ok(FunnelReport {
        steps: counted(&funnel.steps, &totals),
        funnel,
        granularity,
        range: scope.range,
        by,
        groups,
        total_groups,
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
    fn conversions_follow_the_steps() {
        let steps: Vec<Step> = ["page_view", "add_to_cart", "purchase"]
            .map(|t| Step {
                event_type: t.into(),
                url_prefix: None,
            })
            .to_vec();
        let c = counted(&steps, &[200, 50, 0]);
        assert_eq!(c[0].from_previous, None);
        assert_eq!(c[0].from_first, Some(1.0));
        assert_eq!(c[1].from_previous, Some(0.25));
        assert_eq!(c[2].from_previous, Some(0.0));
        let none = counted(&steps, &[0, 0, 0]);
        assert!(none
            .iter()
            .all(|s| s.from_first.is_none() && s.from_previous.is_none()));
        assert!("device".parse::<FunnelBy>().is_err());
        assert!(statement(Some(FunnelBy::Source)).contains("SELECT s.source AS key"));
        assert!(statement(None).contains("SELECT '' AS key"));
    }
}
