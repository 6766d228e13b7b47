//! Saved dashboards: several named layouts per tenant, edited in the web dashboard.
//!
//! A layout arrives as JSON from the browser and is parsed into closed types (widget kinds,
//! metrics, dimensions, top lists, bounded sizes) before it is stored, so a stored layout is
//! always one the dashboard can draw. Saves carry the version they started from: a save over a
//! newer version is refused as a conflict instead of silently overwriting someone's work.

use crate::error::ErrorCode;
/// What a widget plots.
pub use crate::reports::Metric;
use crate::reports::{Dimension, Model, TopList};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use tokio_postgres::{GenericClient, Row};

/// Most dashboards a tenant may keep, and most widgets on one.
pub const MAX_DASHBOARDS: i64 = 50;
pub const MAX_WIDGETS: usize = 30;
/// The grid is four columns wide; a widget spans 1–4 of them and 1–3 row units.
pub const GRID_COLUMNS: u8 = 4;
pub const MAX_HEIGHT: u8 = 3;
/// Longest title of a dashboard or widget, in characters.
pub const MAX_TITLE_CHARS: usize = 80;
/// Bounds of a layout's own refresh interval, in seconds.
pub const REFRESH_SECONDS: std::ops::RangeInclusive<u32> = 2..=3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WidgetKind {
    /// One metric's total with its change against the previous period.
    Kpi,
    Timeseries,
    /// One dimension's top values by one metric.
    Breakdown,
    /// Top pages or devices.
    Top,
    /// The delivery ledger and recent dead letters.
    Ingest,
    /// The campaign report as a table under one attribution model.
    Campaigns,
    /// One funnel's steps as bars with their drop-off.
    Funnel,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Widget {
    pub id: String,
    pub kind: WidgetKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<Metric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimension: Option<Dimension>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<TopList>,
    /// The attribution model a campaigns widget opens with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Model>,
    /// The name of the funnel a funnel widget draws ([`crate::funnels`]); it need not exist
    /// yet (the widget says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funnel: Option<String>,
    pub width: u8,
    pub height: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    pub widgets: Vec<Widget>,
    /// The dashboard's own refresh interval; the viewer's choice wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_seconds: Option<u32>,
}

/// A stored dashboard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dashboard {
    pub name: String,
    pub title: String,
    pub layout: Layout,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// Bad input, with a stable code (`bad_dashboard_name`, `bad_title`, `bad_layout`).
    #[error("{message}")]
    Invalid { code: ErrorCode, message: String },
    #[error("{0}")]
    Conflict(String),
    #[error("no such dashboard")]
    NotFound,
    #[error("a tenant may keep at most {MAX_DASHBOARDS} dashboards")]
    TooMany,
    #[error("database error")]
    Database(#[from] tokio_postgres::Error),
}

fn invalid(code: ErrorCode, message: impl Into<String>) -> DashboardError {
    DashboardError::Invalid {
        code,
        message: message.into(),
    }
}

/// The rule of a dashboard's (and a funnel's) name, as an error message says it.
pub const NAME_RULE: &str =
    "a name is 1 to 40 characters of a-z, 0-9 and '-', not starting with '-'";

/// A dashboard's name as it appears in URLs: `^[a-z0-9][a-z0-9-]{0,39}$`.
pub fn parse_name(raw: &str) -> Result<String, DashboardError> {
    let ok = (1..=40).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !raw.starts_with('-');
    if ok {
        Ok(raw.to_string())
    } else {
        Err(invalid(ErrorCode::BadDashboardName, NAME_RULE))
    }
}

/// A title of 1 to [`MAX_TITLE_CHARS`] characters, trimmed.
pub fn parse_title(raw: &str) -> Result<String, DashboardError> {
    let title = raw.trim();
    let chars = title.chars().count();
    if chars == 0 || chars > MAX_TITLE_CHARS || title.chars().any(char::is_control) {
        return Err(invalid(
            ErrorCode::BadTitle,
            format!("a title is 1 to {MAX_TITLE_CHARS} characters without control characters"),
        ));
    }
    Ok(title.to_string())
}

impl Layout {
    /// Parses and checks a layout sent by a client.
    pub fn parse(value: serde_json::Value) -> Result<Layout, DashboardError> {
        let layout: Layout = serde_json::from_value(value).map_err(|e| {
            invalid(
                ErrorCode::BadLayout,
                format!("the layout is not valid: {e}"),
            )
        })?;
        layout.check()?;
        Ok(layout)
    }

    fn check(&self) -> Result<(), DashboardError> {
        let bad = |message: String| Err(invalid(ErrorCode::BadLayout, message));
        if self.widgets.len() > MAX_WIDGETS {
            return bad(format!("a dashboard holds at most {MAX_WIDGETS} widgets"));
        }
        if let Some(r) = self.refresh_seconds {
            if !REFRESH_SECONDS.contains(&r) {
                return bad(format!(
                    "refresh_seconds must be between {} and {}",
                    REFRESH_SECONDS.start(),
                    REFRESH_SECONDS.end()
                ));
            }
        }
        let mut ids = HashSet::new();
        for (i, w) in self.widgets.iter().enumerate() {
            let at = format!("widget {} ({:?})", i + 1, w.id);
            let id_ok = (1..=32).contains(&w.id.len())
                && w.id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !id_ok {
                return bad(format!(
                    "{at}: an id is 1 to 32 characters of A-Z, a-z, 0-9, '_' and '-'"
                ));
            }
            if !ids.insert(w.id.as_str()) {
                return bad(format!("{at}: the id is used twice"));
            }
            if !(1..=GRID_COLUMNS).contains(&w.width) {
                return bad(format!("{at}: width must be 1 to {GRID_COLUMNS} columns"));
            }
            if !(1..=MAX_HEIGHT).contains(&w.height) {
                return bad(format!("{at}: height must be 1 to {MAX_HEIGHT} rows"));
            }
            if let Some(title) = &w.title {
                if title.chars().count() > MAX_TITLE_CHARS || title.chars().any(char::is_control) {
                    return bad(format!(
                        "{at}: a title is at most {MAX_TITLE_CHARS} characters without control characters"
                    ));
                }
            }
            // Each kind takes exactly the fields it draws with.
            let (metric, dimension, list, model, funnel) = match w.kind {
                WidgetKind::Kpi | WidgetKind::Timeseries => (true, false, false, false, false),
                WidgetKind::Breakdown => (true, true, false, false, false),
                WidgetKind::Top => (false, false, true, false, false),
                WidgetKind::Ingest => (false, false, false, false, false),
                WidgetKind::Campaigns => (false, false, false, true, false),
                WidgetKind::Funnel => (false, false, false, false, true),
            };
            if let Some(name) = &w.funnel {
                if parse_name(name).is_err() {
                    return bad(format!("{at}: funnel: {NAME_RULE}"));
                }
            }
            for (field, wanted, present) in [
                ("metric", metric, w.metric.is_some()),
                ("dimension", dimension, w.dimension.is_some()),
                ("list", list, w.list.is_some()),
                ("model", model, w.model.is_some()),
                ("funnel", funnel, w.funnel.is_some()),
            ] {
                if wanted && !present {
                    return bad(format!("{at}: a {:?} widget needs a {field}", w.kind));
                }
                if !wanted && present {
                    return bad(format!("{at}: a {:?} widget takes no {field}", w.kind));
                }
            }
        }
        Ok(())
    }
}

const COLUMNS: &str = "name, title, layout, version, updated_at";

fn from_row(row: &Row) -> Result<Dashboard, DashboardError> {
    let layout: serde_json::Value = row.get(2);
    // Stored layouts were checked on the way in; one that no longer parses (a future version's,
    // say) is reported rather than guessed at.
    let layout: Layout = serde_json::from_value(layout).map_err(|e| {
        invalid(
            ErrorCode::BadLayout,
            format!("the stored layout cannot be read: {e}"),
        )
    })?;
    Ok(Dashboard {
        name: row.get(0),
        title: row.get(1),
        layout,
        version: row.get(3),
        updated_at: row.get(4),
    })
}

/// The tenant's dashboards, by name.
pub async fn list<C: GenericClient>(
    client: &C,
    tenant_id: i64,
) -> Result<Vec<Dashboard>, DashboardError> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM dashboards WHERE tenant_id = $1 ORDER BY name"),
            &[&tenant_id],
        )
        .await?;
    rows.iter().map(from_row).collect()
}

/// Creates (`expected_version` absent) or replaces (the version the editor started from) a
/// dashboard, answering the stored dashboard with its new version.
pub async fn save(
    client: &mut tokio_postgres::Client,
    tenant_id: i64,
    name: &str,
    title: &str,
    layout: &Layout,
    expected_version: Option<i64>,
) -> Result<Dashboard, DashboardError> {
    let layout_json = serde_json::to_value(layout).unwrap_or_default();
    let tx = client.transaction().await?;
    let saved = match expected_version {
        None => {
            // Creations of one tenant take turns, so concurrent ones cannot all count 49 and
            // all insert (the limit held only for one request at a time).
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('remarketable.dashboards', $1))",
                &[&tenant_id],
            )
            .await?;
            let count: i64 = tx
                .query_one(
                    "SELECT count(*) FROM dashboards WHERE tenant_id = $1",
                    &[&tenant_id],
                )
                .await?
                .get(0);
            if count >= MAX_DASHBOARDS {
                return Err(DashboardError::TooMany);
            }
            tx.query_opt(
                &format!(
                    "INSERT INTO dashboards (tenant_id, name, title, layout) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (tenant_id, name) DO NOTHING RETURNING {COLUMNS}"
                ),
                &[&tenant_id, &name, &title, &layout_json],
            )
            .await?
        }
        Some(version) => {
            tx.query_opt(
                &format!(
                    "UPDATE dashboards SET title = $3, layout = $4, version = version + 1, updated_at = now()
                     WHERE tenant_id = $1 AND name = $2 AND version = $5 RETURNING {COLUMNS}"
                ),
                &[&tenant_id, &name, &title, &layout_json, &version],
            )
            .await?
        }
    };
    let Some(row) = saved else {
        let current = tx
            .query_opt(
                "SELECT version FROM dashboards WHERE tenant_id = $1 AND name = $2",
                &[&tenant_id, &name],
            )
            .await?
            .map(|r| r.get::<_, i64>(0));
        return Err(match (current, expected_version) {
            (Some(v), None) => DashboardError::Conflict(format!(
                "a dashboard named {name:?} exists (version {v}); load it and save with expected_version"
            )),
            (Some(v), Some(_)) => DashboardError::Conflict(format!(
                "the dashboard was saved meanwhile (now version {v}); load it again and redo the change"
            )),
            (None, _) => DashboardError::NotFound,
        });
    };
    let dashboard = from_row(&row)?;
    tx.commit().await?;
    Ok(dashboard)
}

/// Deletes a dashboard; false when there was none of that name.
pub async fn delete<C: GenericClient>(
    client: &C,
    tenant_id: i64,
    name: &str,
) -> Result<bool, DashboardError> {
    let n = client
        .execute(
            "DELETE FROM dashboards WHERE tenant_id = $1 AND name = $2",
            &[&tenant_id, &name],
        )
        .await?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn widget(extra: serde_json::Value) -> serde_json::Value {
        let mut w = json!({"id": "w1", "width": 2, "height": 1});
        for (k, v) in extra.as_object().unwrap() {
            w[k] = v.clone();
        }
        w
    }

    fn parse(widgets: Vec<serde_json::Value>) -> Result<Layout, DashboardError> {
        Layout::parse(json!({ "widgets": widgets }))
    }

    fn code(r: Result<Layout, DashboardError>) -> String {
        match r {
            Err(DashboardError::Invalid { code, message }) => format!("{code}: {message}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn every_kind_with_its_fields_round_trips() {
        let layout = parse(vec![
            widget(json!({"id": "a", "kind": "kpi", "metric": "revenue"})),
            widget(json!({"id": "b", "kind": "timeseries", "metric": "unique_devices"})),
            widget(
                json!({"id": "c", "kind": "breakdown", "metric": "events", "dimension": "country"}),
            ),
            widget(json!({"id": "d", "kind": "top", "list": "pages", "title": "Pages"})),
            widget(json!({"id": "e", "kind": "ingest", "width": 4, "height": 3})),
            widget(json!({"id": "f", "kind": "campaigns", "model": "first_touch"})),
            widget(json!({"id": "g", "kind": "funnel", "funnel": "checkout"})),
        ])
        .unwrap();
        assert_eq!(layout.widgets.len(), 7);
        assert_eq!(layout.widgets[6].funnel.as_deref(), Some("checkout"));
        assert_eq!(layout.widgets[2].dimension, Some(Dimension::Country));
        assert_eq!(layout.widgets[5].model, Some(Model::FirstTouch));
        let again = Layout::parse(serde_json::to_value(&layout).unwrap()).unwrap();
        assert_eq!(again, layout);
    }

    #[test]
    fn refuses_what_the_dashboard_could_not_draw() {
        let cases = [
            (json!({"kind": "kpi"}), "needs a metric"),
            (
                json!({"kind": "breakdown", "metric": "events"}),
                "needs a dimension",
            ),
            (json!({"kind": "top"}), "needs a list"),
            (json!({"kind": "campaigns"}), "needs a model"),
            (json!({"kind": "funnel"}), "needs a funnel"),
            (
                json!({"kind": "funnel", "funnel": "Check Out"}),
                "funnel: a name is",
            ),
            (
                json!({"kind": "top", "list": "pages", "funnel": "checkout"}),
                "takes no funnel",
            ),
            (
                json!({"kind": "campaigns", "model": "linear"}),
                "unknown variant",
            ),
            (
                json!({"kind": "kpi", "metric": "events", "model": "session"}),
                "takes no model",
            ),
            (
                json!({"kind": "ingest", "metric": "events"}),
                "takes no metric",
            ),
            (
                json!({"kind": "kpi", "metric": "events", "list": "pages"}),
                "takes no list",
            ),
            (json!({"kind": "kpi", "metric": "bogus"}), "unknown variant"),
            (
                json!({"kind": "chart", "metric": "events"}),
                "unknown variant",
            ),
            (json!({"kind": "ingest", "width": 5}), "width"),
            (json!({"kind": "ingest", "width": 0}), "width"),
            (json!({"kind": "ingest", "height": 4}), "height"),
            (json!({"kind": "ingest", "id": "a b"}), "an id is"),
            (json!({"kind": "ingest", "id": ""}), "an id is"),
            (json!({"kind": "ingest", "script": "x"}), "unknown field"),
            (json!({"kind": "ingest", "title": "x".repeat(81)}), "title"),
            (json!({"kind": "ingest", "width": -1}), "invalid value"),
        ];
        for (w, expected) in cases {
            let message = code(parse(vec![widget(w.clone())]));
            assert!(
                message.starts_with("bad_layout: ") && message.contains(expected),
                "{w}: {message}"
            );
        }
        let twice = vec![
            widget(json!({"kind": "ingest"})),
            widget(json!({"kind": "ingest"})),
        ];
        assert!(code(parse(twice)).contains("used twice"));
        let many = (0..=MAX_WIDGETS)
            .map(|i| widget(json!({"id": format!("w{i}"), "kind": "ingest"})))
            .collect();
        assert!(code(parse(many)).contains("at most 30 widgets"));
        for refresh in [json!(1), json!(3601), json!("10")] {
            let r = Layout::parse(json!({"widgets": [], "refresh_seconds": refresh}));
            assert!(code(r).starts_with("bad_layout"));
        }
        assert!(
            code(Layout::parse(json!({"widgets": [], "theme": "dark"}))).contains("unknown field")
        );
        assert!(code(Layout::parse(json!([]))).starts_with("bad_layout"));
    }

    #[test]
    fn names_and_titles() {
        for ok in ["main", "a", "q4-campaigns", "0", &"x".repeat(40)] {
            assert_eq!(parse_name(ok).unwrap(), ok);
        }
        for bad in ["", "-a", "Main", "a_b", "a b", "é", &"x".repeat(41), "../x"] {
            assert!(parse_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_title("  Q4 ").unwrap(), "Q4");
        for bad in ["", "   ", "a\nb", &"é".repeat(81)] {
            assert!(parse_title(bad).is_err(), "{bad:?}");
        }
        assert!(parse_title(&"é".repeat(80)).is_ok());
    }
}
