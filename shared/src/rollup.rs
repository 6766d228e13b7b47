//! Incremental rollups of `events` into `rollup_events_5min`, `rollup_events_1hour` and
//! `rollup_events_1day` (migration V4).
//!
//! The work itself is SQL (`advance_rollups`, migration V10), so that the `rollup` timer function
//! and pg_cron (`CALL run_rollups()`) run exactly the same thing. A run reads the event_id
//! window committed since the watermarks once into staging tables, fills every rollup and its
//! slices from them, and moves the watermarks, all in one transaction: a run that fails (or a
//! crash) changes nothing, and a second run finds an empty window.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;
use tokio_postgres::Client;

/// The rollups, in the order a run advances them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Rollup {
    /// `rollup_events_5min`: UTC 5-minute buckets.
    #[serde(rename = "5min")]
    FiveMinutes,
    /// `rollup_events_1hour`: UTC hours.
    #[serde(rename = "1hour")]
    Hour,
    /// `rollup_events_1day`: the tenant's local calendar days.
    #[serde(rename = "1day")]
    Day,
}

impl Rollup {
    pub const ALL: [Rollup; 3] = [Rollup::FiveMinutes, Rollup::Hour, Rollup::Day];

    /// The name in `rollup_state`.
    pub fn name(self) -> &'static str {
        match self {
            Rollup::FiveMinutes => "5min",
            Rollup::Hour => "1hour",
            Rollup::Day => "1day",
        }
    }

    pub fn table(self) -> &'static str {
        match self {
            Rollup::FiveMinutes => "rollup_events_5min",
            Rollup::Hour => "rollup_events_1hour",
            Rollup::Day => "rollup_events_1day",
        }
    }
}

impl fmt::Display for Rollup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Rollup {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Rollup::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| format!("unknown rollup {s:?}: expected 5min, 1hour or 1day"))
    }
}

/// Read from the database by name; an unknown name is a conversion error.
impl<'a> tokio_postgres::types::FromSql<'a> for Rollup {
    fn from_sql(
        ty: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let name = <&str as tokio_postgres::types::FromSql>::from_sql(ty, raw)?;
        Ok(name.parse::<Rollup>()?)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <&str as tokio_postgres::types::FromSql>::accepts(ty)
    }
}

/// What one rollup's advance did.
#[derive(Debug, Clone, Serialize)]
pub struct Advance {
    pub rollup: Rollup,
    /// The window of event ids aggregated: `(window_start, window_end]`; empty when equal.
    pub window_start: i64,
    pub window_end: i64,
    /// The event times the window's ranges span (the partitions it read); `None` when the
    /// window was empty or no range was recorded for it.
    pub min_event_time: Option<DateTime<Utc>>,
    pub max_event_time: Option<DateTime<Utc>>,
    /// Rollup rows inserted or updated.
    pub rows: i64,
    pub milliseconds: f64,
}

impl fmt::Display for Advance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.window_end == self.window_start {
            return write!(
                f,
                "rollup {}: nothing new after event {} ({:.1} ms)",
                self.rollup, self.window_start, self.milliseconds
            );
        }
        write!(
            f,
            "rollup {}: events ({}, {}]",
            self.rollup, self.window_start, self.window_end
        )?;
        if let (Some(lo), Some(hi)) = (self.min_event_time, self.max_event_time) {
            write!(
                f,
                " timed {} .. {}",
                lo.format("%FT%TZ"),
                hi.format("%FT%TZ")
            )?;
        }
        write!(
            f,
            ": {} rows upserted, {:.1} ms",
            self.rows, self.milliseconds
        )
    }
}

const ADVANCE: &str = "SELECT rollup, window_start, window_end, min_event_time, max_event_time, \
                       rows_upserted, milliseconds FROM advance_rollups($1)";

fn advances(rows: &[tokio_postgres::Row]) -> Result<Vec<Advance>, tokio_postgres::Error> {
    rows.iter()
        .map(|row| {
            Ok(Advance {
                rollup: row.try_get(0)?,
                window_start: row.try_get(1)?,
                window_end: row.try_get(2)?,
                min_event_time: row.try_get(3)?,
                max_event_time: row.try_get(4)?,
                rows: row.try_get(5)?,
                milliseconds: row.try_get(6)?,
            })
        })
        .collect()
}

/// Advances one rollup in its own transaction (the others keep their watermarks).
pub async fn advance(
    client: &mut Client,
    rollup: Rollup,
) -> Result<Advance, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let rows = tx.query(ADVANCE, &[&Some(vec![rollup.name()])]).await?;
    tx.commit().await?;
    let mut done = advances(&rows)?;
    Ok(done.remove(0))
}

/// Advances every rollup over one shared pass of one window (bounded by
/// `rollup_state.max_window_events`), then forgets the event id ranges
/// all of them have passed: one statement, one transaction, one round trip.
pub async fn run(client: &mut Client) -> Result<Vec<Advance>, tokio_postgres::Error> {
    let rows = client.query(ADVANCE, &[&None::<Vec<&str>>]).await?;
    advances(&rows)
}

/// How long one run of the rollup job keeps taking windows (`jobs::rollup`): under the rollup
/// timer's minute.
pub const RUN_BUDGET: std::time::Duration = std::time::Duration::from_secs(50);

/// The most event ids one window takes (the least over the rollups).
pub async fn max_window(client: &Client) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT min(max_window_events) FROM rollup_state", &[])
        .await?
        .get(0))
}

/// Sets the most event ids one rollup window takes (every rollup; at least 1).
pub async fn set_max_window(client: &Client, events: i64) -> Result<(), tokio_postgres::Error> {
    client
        .execute("UPDATE rollup_state SET max_window_events = $1", &[&events])
        .await?;
    Ok(())
}

/// The dimensions the cardinality guard bounds (migration V28): per tenant and local day, at
/// most a limit of distinct values each reach the rollups; later new values are rolled up as
/// [`OTHER`]. Country is bounded by the ISO list and not guarded.
pub const GUARDED_DIMENSIONS: [&str; 3] = ["event_type", "browser", "campaign"];

/// The value the rollups keep for the values of a full day.
pub const OTHER: &str = "(other)";

/// Each guarded dimension's limit of distinct values per tenant and local day.
pub async fn dimension_limits(
    client: &Client,
) -> Result<Vec<(String, i32)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT dimension, max_values_per_day FROM dimension_limits ORDER BY dimension",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Sets a guarded dimension's limit of distinct values per tenant and local day (new values
/// are admitted from the next window on; events already rolled up as `(other)` stay there).
/// Answers whether `dimension` is guarded.
pub async fn set_dimension_limit(
    client: &Client,
    dimension: &str,
    max_values_per_day: i32,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .execute(
            "UPDATE dimension_limits SET max_values_per_day = $2 WHERE dimension = $1",
            &[&dimension, &max_values_per_day],
        )
        .await?
        == 1)
}

/// Deletes rollup rows older than each rollup's retention; answers the rows deleted per rollup.
pub async fn apply_retention(client: &Client) -> Result<Vec<(String, i64)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT rollup, rows_deleted FROM apply_rollup_retention()",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Sets how long a rollup keeps its rows (PostgreSQL interval syntax, e.g. `90 days`); `None`
/// keeps them for ever.
pub async fn set_retention(
    client: &Client,
    rollup: Rollup,
    retention: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE rollup_state SET retention = $2::text::interval WHERE rollup = $1",
            &[&rollup.name(), &retention],
        )
        .await?;
    Ok(())
}

/// Each rollup's watermark, retention and last run, for `remarketable rollup status`.
#[derive(Debug, Clone, Serialize)]
pub struct State {
    pub rollup: String,
    pub last_event_id: i64,
    pub retention: Option<String>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_rows: Option<i64>,
}

pub async fn states(client: &Client) -> Result<Vec<State>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT rollup, last_event_id, retention::text, last_run_at, last_rows \
             FROM rollup_state ORDER BY position",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| State {
            rollup: r.get(0),
            last_event_id: r.get(1),
            retention: r.get(2),
            last_run_at: r.get(3),
            last_rows: r.get(4),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for r in Rollup::ALL {
            assert_eq!(r.name().parse::<Rollup>(), Ok(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.name());
        }
        assert!("1week".parse::<Rollup>().unwrap_err().contains("1week"));
    }

    #[test]
    fn an_empty_window_says_so() {
        let a = Advance {
            rollup: Rollup::Hour,
            window_start: 7,
            window_end: 7,
            min_event_time: None,
            max_event_time: None,
            rows: 0,
            milliseconds: 0.3,
        };
        assert_eq!(
            a.to_string(),
            "rollup 1hour: nothing new after event 7 (0.3 ms)"
        );
    }
}
