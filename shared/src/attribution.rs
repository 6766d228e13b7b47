//! Attribution of conversions to campaign touches (issue 14), advanced incrementally by the
//! rollup job. The work is SQL (`advance_attribution`, migration V19) so the `rollup` timer and
//! pg_cron (`CALL run_rollups()`) run the same thing; the rules are documented there and in the
//! README ("Campaigns"). A tenant's attribution settings are read and changed here
//! ([`settings`], [`set_settings`]) for the admin route and the CLI.

use serde::Serialize;
use std::fmt;
use tokio_postgres::Client;

/// What one attribution advance did.
#[derive(Debug, Clone, Serialize)]
pub struct Advance {
    /// The window of event ids read: `(window_start, window_end]`; empty when equal.
    pub window_start: i64,
    pub window_end: i64,
    /// Touches stored from the window.
    pub touches: i64,
    /// Conversions whose attribution was computed (new ones and ones a late event changed).
    pub conversions: i64,
    pub milliseconds: f64,
}

impl fmt::Display for Advance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.window_end == self.window_start {
            return write!(
                f,
                "attribution: nothing new after event {} ({:.1} ms)",
                self.window_start, self.milliseconds
            );
        }
        write!(
            f,
            "attribution: events ({}, {}]: {} touches, {} conversions attributed, {:.1} ms",
            self.window_start, self.window_end, self.touches, self.conversions, self.milliseconds
        )
    }
}

impl Advance {
    /// This window followed by the next one, as one: the span of both, their counts added.
    pub fn then(self, next: Advance) -> Advance {
        Advance {
            window_start: self.window_start,
            window_end: next.window_end,
            touches: self.touches + next.touches,
            conversions: self.conversions + next.conversions,
            milliseconds: self.milliseconds + next.milliseconds,
        }
    }
}

/// Advances attribution over at most `rollup_state.max_window_events` event ids committed
/// since its watermark, in one transaction.
pub async fn advance(client: &mut Client) -> Result<Advance, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let row = tx
        .query_one(
            "SELECT window_start, window_end, touches_added, conversions_attributed, \
             milliseconds FROM advance_attribution()",
            &[],
        )
        .await?;
    tx.commit().await?;
    Ok(Advance {
        window_start: row.try_get(0)?,
        window_end: row.try_get(1)?,
        touches: row.try_get(2)?,
        conversions: row.try_get(3)?,
        milliseconds: row.try_get(4)?,
    })
}

/// Longest lookback a tenant may set (the `tenants_attribution_lookback_check` of V19).
pub const MAX_LOOKBACK_DAYS: i64 = 366;
/// Most event types a tenant may count as conversions (the same check's bound).
pub const MAX_CONVERSION_TYPES: usize = 32;

/// A tenant's attribution settings (columns of `tenants`, see V19).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settings {
    pub tenant_id: i64,
    /// Event types that count as conversions.
    pub conversion_event_types: Vec<String>,
    /// How far before a conversion a touch may lie, in seconds.
    pub lookback_seconds: i64,
    /// Whether clicks outrank impressions.
    pub clicks_first: bool,
}

/// A change of some of the settings; a field left out (or `null`) keeps its value.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsChange {
    pub conversion_event_types: Option<Vec<String>>,
    pub lookback_seconds: Option<i64>,
    pub clicks_first: Option<bool>,
}

impl SettingsChange {
    /// Refuses what the table's checks would (with a message naming the field), and
    /// `ad_spend`, which never reaches `events`. Event types are kept in the order given,
    /// without repeats.
    pub fn checked(mut self) -> Result<SettingsChange, crate::Error> {
        let bad = |m: String| crate::Error::new(crate::ErrorCode::BadParameter, m);
        if let Some(types) = self.conversion_event_types.take() {
            if types.is_empty() || types.len() > MAX_CONVERSION_TYPES {
                return Err(bad(format!(
                    "conversion_event_types holds 1 to {MAX_CONVERSION_TYPES} event types"
                )));
            }
            let mut unique: Vec<String> = Vec::with_capacity(types.len());
            for t in types {
                if !crate::event::is_event_type(&t) || t == crate::event::AD_SPEND {
                    return Err(bad(format!(
                        "conversion_event_types: {t:?} is not an event type of the contract \
                         ([a-z][a-z0-9_]*, at most 64 bytes; not ad_spend)"
                    )));
                }
                if !unique.contains(&t) {
                    unique.push(t);
                }
            }
            self.conversion_event_types = Some(unique);
        }
        if let Some(s) = self.lookback_seconds {
            if !(1..=MAX_LOOKBACK_DAYS * 86_400).contains(&s) {
                return Err(bad(format!(
                    "lookback_seconds is 1 to {} ({MAX_LOOKBACK_DAYS} days)",
                    MAX_LOOKBACK_DAYS * 86_400
                )));
            }
        }
        Ok(self)
    }
}

const SETTINGS: &str = "tenant_id, conversion_event_types, \
     extract(epoch FROM attribution_lookback)::bigint, attribution_clicks_first";

fn settings_of(row: &tokio_postgres::Row) -> Settings {
    Settings {
        tenant_id: row.get(0),
        conversion_event_types: row.get(1),
        lookback_seconds: row.get(2),
        clicks_first: row.get(3),
    }
}

/// The tenant's settings; `None` for a tenant that is not registered.
pub async fn settings<C: tokio_postgres::GenericClient>(
    client: &C,
    tenant_id: i64,
) -> Result<Option<Settings>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            &format!("SELECT {SETTINGS} FROM tenants WHERE tenant_id = $1"),
            &[&tenant_id],
        )
        .await?;
    Ok(row.as_ref().map(settings_of))
}

/// Applies a [`SettingsChange::checked`] change and answers the settings now in force;
/// `None` for a tenant that is not registered. Conversions stored from then on are attributed
/// by them; those attributed before keep their rows (see V19).
pub async fn set_settings<C: tokio_postgres::GenericClient>(
    client: &C,
    tenant_id: i64,
    change: &SettingsChange,
) -> Result<Option<Settings>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            &format!(
                "UPDATE tenants SET
                     conversion_event_types = coalesce($2, conversion_event_types),
                     attribution_lookback = coalesce($3 * interval '1 second', attribution_lookback),
                     attribution_clicks_first = coalesce($4, attribution_clicks_first)
                 WHERE tenant_id = $1 RETURNING {SETTINGS}"
            ),
            &[
                &tenant_id,
                &change.conversion_event_types,
                &change.lookback_seconds.map(|s| s as f64),
                &change.clicks_first,
            ],
        )
        .await?;
    Ok(row.as_ref().map(settings_of))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_changes_are_checked() {
        let change = |v: serde_json::Value| {
            serde_json::from_value::<SettingsChange>(v)
                .map_err(|e| e.to_string())
                .and_then(|c| c.checked().map_err(|e| e.message))
        };
        let ok = change(
            serde_json::json!({"conversion_event_types": ["purchase", "signup", "purchase"]}),
        )
        .unwrap();
        assert_eq!(
            ok.conversion_event_types,
            Some(vec!["purchase".to_string(), "signup".to_string()])
        );
        for (v, words) in [
            (serde_json::json!({"conversion_event_types": []}), "1 to 32"),
            (
                serde_json::json!({"conversion_event_types": ["Purchase"]}),
                "not an event type",
            ),
            (
                serde_json::json!({"conversion_event_types": ["ad_spend"]}),
                "not ad_spend",
            ),
            (
                serde_json::json!({"lookback_seconds": 0}),
                "lookback_seconds is 1 to",
            ),
            (
                serde_json::json!({"lookback_seconds": 366 * 86_400 + 1}),
                "366 days",
            ),
            (serde_json::json!({"lookback": 5}), "unknown field"),
        ] {
            let e = change(v.clone()).unwrap_err();
            assert!(e.contains(words), "{v}: {e}");
        }
    }

    #[test]
    fn an_empty_window_says_so() {
        let a = Advance {
            window_start: 9,
            window_end: 9,
            touches: 0,
            conversions: 0,
            milliseconds: 0.25,
        };
        assert_eq!(
            a.to_string(),
            "attribution: nothing new after event 9 (0.2 ms)"
        );
    }
}
