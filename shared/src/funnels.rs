//! Funnels (issue 14): a tenant's named, ordered steps (an event type, optionally a URL
//! prefix), stored per tenant like dashboards. How far each session got is kept by the
//! attribution step (migration V27: the rule, the tables, the window statements); the report
//! over it is [`crate::reports::funnel`].
//!
//! Steps never change under a stored funnel: saving one under a name that exists replaces it
//! by a new funnel id, and its per-session state is built again, in the same transaction, from
//! the events attribution has passed (later ones are the next windows' work). The build reads
//! the tenant's stored events once, so a save of a large tenant's funnel takes a while.

use crate::error::{Error, ErrorCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::{GenericClient, Row};

/// Most funnels a tenant may keep, and the bounds of a funnel's steps (V27's checks).
pub const MAX_FUNNELS: i64 = 20;
pub const MIN_STEPS: usize = 2;
pub const MAX_STEPS: usize = 8;
/// Longest URL prefix of a step, in bytes.
pub const MAX_PREFIX_BYTES: usize = 512;

/// One step: an event of this type, and when given, whose `page_url` starts with the prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_prefix: Option<String>,
}

/// What a client sends to save a funnel.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub title: String,
    pub steps: Vec<Step>,
}

/// A stored funnel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Funnel {
    pub name: String,
    pub funnel_id: i64,
    pub title: String,
    pub steps: Vec<Step>,
    pub created_at: DateTime<Utc>,
}

/// A saved funnel and what building its state took.
#[derive(Debug, Clone, Serialize)]
pub struct Saved {
    #[serde(flatten)]
    pub funnel: Funnel,
    /// Whether a funnel of that name was replaced.
    pub replaced: bool,
    /// Events matching a step, and sessions reaching step 1, found in the stored events.
    pub events_matched: u64,
    pub sessions: u64,
    /// The attribution watermark the state was built to: later events are taken by the
    /// attribution windows, as for every funnel.
    pub built_to_event: i64,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::BadFunnel, message)
}

/// A funnel's name as it appears in URLs (the dashboards' rule).
pub fn parse_name(raw: &str) -> Result<String, Error> {
    crate::dashboards::parse_name(raw)
        .map_err(|_| Error::new(ErrorCode::BadFunnelName, crate::dashboards::NAME_RULE))
}

impl Definition {
    /// Parses and checks a definition sent by a client: the title as a dashboard's, 2 to 8
    /// steps of contract event types (not `ad_spend`, which never reaches `events`), prefixes
    /// of at most [`MAX_PREFIX_BYTES`] without control characters; an empty prefix is none.
    pub fn parse(value: serde_json::Value) -> Result<Definition, Error> {
        let mut d: Definition = serde_json::from_value(value)
            .map_err(|e| invalid(format!("the funnel is not valid: {e}")))?;
        d.title = crate::dashboards::parse_title(&d.title)
            .map_err(|e| Error::new(ErrorCode::BadTitle, e.to_string()))?;
        if !(MIN_STEPS..=MAX_STEPS).contains(&d.steps.len()) {
            return Err(invalid(format!(
                "a funnel has {MIN_STEPS} to {MAX_STEPS} steps"
            )));
        }
        for (i, step) in d.steps.iter_mut().enumerate() {
            let at = i + 1;
            if !crate::event::is_event_type(&step.event_type)
                || step.event_type == crate::event::AD_SPEND
            {
                return Err(invalid(format!(
                    "step {at}: {:?} is not an event type of the contract \
                     ([a-z][a-z0-9_]*, at most 64 bytes; not ad_spend)",
                    step.event_type
                )));
            }
            if let Some(p) = &step.url_prefix {
                if p.len() > MAX_PREFIX_BYTES || p.chars().any(char::is_control) {
                    return Err(invalid(format!(
                        "step {at}: a url_prefix is at most {MAX_PREFIX_BYTES} bytes without control characters"
                    )));
                }
                if p.is_empty() {
                    step.url_prefix = None;
                }
            }
        }
        Ok(d)
    }

    fn columns(&self) -> (Vec<&str>, Vec<&str>) {
        self.steps
            .iter()
            .map(|s| (s.event_type.as_str(), s.url_prefix.as_deref().unwrap_or("")))
            .unzip()
    }
}

const COLUMNS: &str = "name, funnel_id, title, step_types, step_prefixes, created_at";

fn from_row(row: &Row) -> Funnel {
    let types: Vec<String> = row.get(3);
    let prefixes: Vec<String> = row.get(4);
    Funnel {
        name: row.get(0),
        funnel_id: row.get(1),
        title: row.get(2),
        steps: types
            .into_iter()
            .zip(prefixes)
            .map(|(event_type, p)| Step {
                event_type,
                url_prefix: (!p.is_empty()).then_some(p),
            })
            .collect(),
        created_at: row.get(5),
    }
}

/// The tenant's funnels, by name.
pub async fn list<C: GenericClient>(client: &C, tenant_id: i64) -> Result<Vec<Funnel>, Error> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM funnels WHERE tenant_id = $1 ORDER BY name"),
            &[&tenant_id],
        )
        .await?;
    Ok(rows.iter().map(from_row).collect())
}

/// One funnel by name; `None` when the tenant has none of that name.
pub async fn get<C: GenericClient>(
    client: &C,
    tenant_id: i64,
    name: &str,
) -> Result<Option<Funnel>, Error> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM funnels WHERE tenant_id = $1 AND name = $2"),
            &[&tenant_id, &name],
        )
        .await?;
    Ok(row.as_ref().map(from_row))
}

/// Removes a funnel's definition and state, in the caller's transaction; whether there was one.
async fn remove<C: GenericClient>(tx: &C, tenant_id: i64, name: &str) -> Result<bool, Error> {
    let Some(id) = tx
        .query_opt(
            "DELETE FROM funnels WHERE tenant_id = $1 AND name = $2 RETURNING funnel_id",
            &[&tenant_id, &name],
        )
        .await?
        .map(|r| r.get::<_, i64>(0))
    else {
        return Ok(false);
    };
    for table in ["funnel_events", "funnel_sessions"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE tenant_id = $1 AND funnel_id = $2"),
            &[&tenant_id, &id],
        )
        .await?;
    }
    Ok(true)
}

/// Creates or replaces the tenant's funnel `name` and builds its state over the events
/// attribution has passed. The attribution watermark is held (shared) meanwhile, so no window
/// runs half before and half after the funnel exists.
pub async fn save(
    client: &mut tokio_postgres::Client,
    tenant_id: i64,
    name: &str,
    definition: &Definition,
) -> Result<Saved, Error> {
    let tx = client.transaction().await?;
    // Saves of one tenant take turns, so concurrent ones cannot all count 19 and all insert.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('remarketable.funnels', $1))",
        &[&tenant_id],
    )
    .await?;
    if !crate::tenants::exists(&tx, tenant_id).await? {
        return Err(Error::new(
            ErrorCode::UnknownTenant,
            format!("tenant {tenant_id} is not registered"),
        ));
    }
    let replaced = remove(&tx, tenant_id, name).await?;
    let count: i64 = tx
        .query_one(
            "SELECT count(*) FROM funnels WHERE tenant_id = $1",
            &[&tenant_id],
        )
        .await?
        .get(0);
    if count >= MAX_FUNNELS {
        return Err(Error::new(
            ErrorCode::TooManyFunnels,
            format!("a tenant may keep at most {MAX_FUNNELS} funnels"),
        ));
    }
    let watermark: i64 = tx
        .query_one("SELECT last_event_id FROM attribution_state FOR SHARE", &[])
        .await?
        .get(0);
    let (types, prefixes) = definition.columns();
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO funnels (tenant_id, name, title, step_types, step_prefixes)
                 VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
            ),
            &[&tenant_id, &name, &definition.title, &types, &prefixes],
        )
        .await?;
    let funnel = from_row(&row);
    let events_matched = tx
        .execute(
            "INSERT INTO funnel_events (tenant_id, funnel_id, session_id, event_time, event_id,
                                        steps)
             SELECT e.tenant_id, f.funnel_id, e.session_id, e.event_time, e.event_id, m.steps
             FROM events e
             JOIN funnels f ON f.tenant_id = e.tenant_id AND e.event_type = ANY (f.step_types)
             CROSS JOIN LATERAL (SELECT funnel_steps_of(f.step_types, f.step_prefixes,
                                                        e.event_type, e.page_url) AS steps) m
             WHERE e.tenant_id = $1 AND f.funnel_id = $2 AND e.event_id <= $3 AND m.steps <> 0",
            &[&tenant_id, &funnel.funnel_id, &watermark],
        )
        .await?;
    let sessions = tx
        .execute(
            "INSERT INTO funnel_sessions (tenant_id, funnel_id, session_id, started_at, campaign,
                                          source, medium, reached)
             SELECT r.tenant_id, r.funnel_id, r.session_id, ss.first_event_time, ss.campaign,
                    ss.source, ss.medium, r.reached
             FROM (SELECT x.tenant_id, x.funnel_id, x.session_id,
                          funnel_reach(x.steps, x.event_time ORDER BY x.event_time) AS reached
                   FROM funnel_events x
                   WHERE x.tenant_id = $1 AND x.funnel_id = $2
                   GROUP BY x.tenant_id, x.funnel_id, x.session_id) r
             JOIN session_sources ss ON ss.tenant_id = r.tenant_id AND ss.session_id = r.session_id
             WHERE r.reached > 0",
            &[&tenant_id, &funnel.funnel_id],
        )
        .await?;
    tx.commit().await?;
    Ok(Saved {
        funnel,
        replaced,
        events_matched,
        sessions,
        built_to_event: watermark,
    })
}

/// Deletes a funnel and its state; false when there was none of that name.
pub async fn delete(
    client: &mut tokio_postgres::Client,
    tenant_id: i64,
    name: &str,
) -> Result<bool, Error> {
    let tx = client.transaction().await?;
    let gone = remove(&tx, tenant_id, name).await?;
    tx.commit().await?;
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn definitions_are_checked() {
        let ok = Definition::parse(json!({"title": " Checkout ", "steps": [
            {"event_type": "page_view", "url_prefix": "https://shop.example/p/"},
            {"event_type": "add_to_cart", "url_prefix": ""},
            {"event_type": "purchase"}]}))
        .unwrap();
        assert_eq!(ok.title, "Checkout");
        assert_eq!(ok.steps[1].url_prefix, None);
        assert_eq!(
            ok.columns(),
            (
                vec!["page_view", "add_to_cart", "purchase"],
                vec!["https://shop.example/p/", "", ""]
            )
        );
        let long = "x".repeat(MAX_PREFIX_BYTES + 1);
        for (v, code, words) in [
            (
                json!({"title": "a", "steps": [{"event_type": "page_view"}]}),
                ErrorCode::BadFunnel,
                "2 to 8 steps",
            ),
            (
                json!({"title": "a", "steps": vec![json!({"event_type": "page_view"}); 9]}),
                ErrorCode::BadFunnel,
                "2 to 8 steps",
            ),
            (
                json!({"title": "a", "steps": [{"event_type": "Page"}, {"event_type": "b"}]}),
                ErrorCode::BadFunnel,
                "step 1",
            ),
            (
                json!({"title": "a", "steps": [{"event_type": "a"}, {"event_type": "ad_spend"}]}),
                ErrorCode::BadFunnel,
                "not ad_spend",
            ),
            (
                json!({"title": "a", "steps": [{"event_type": "a"},
                                               {"event_type": "b", "url_prefix": long}]}),
                ErrorCode::BadFunnel,
                "step 2: a url_prefix",
            ),
            (
                json!({"title": "a", "steps": [{"event_type": "a", "url": "/"},
                                               {"event_type": "b"}]}),
                ErrorCode::BadFunnel,
                "unknown field",
            ),
            (
                json!({"title": "", "steps": [{"event_type": "a"}, {"event_type": "b"}]}),
                ErrorCode::BadTitle,
                "title",
            ),
        ] {
            let e = Definition::parse(v.clone()).unwrap_err();
            assert_eq!(e.code, code, "{v}");
            assert!(e.message.contains(words), "{v}: {}", e.message);
        }
        assert_eq!(parse_name("checkout-1").unwrap(), "checkout-1");
        assert_eq!(
            parse_name("Checkout").unwrap_err().code,
            ErrorCode::BadFunnelName
        );
    }
}
