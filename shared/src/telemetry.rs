//! Telemetry as typed events: one struct per thing worth knowing, with its fields. `emit()`
//! logs it once with structured fields (queryable in Application Insights or CloudWatch); its
//! `Display` is the one-line text the Azure host shows in an invocation's `Logs`.

use crate::ingest::BatchReport;
use crate::jobs::{MaintenanceRun, RollupRun};
use std::fmt;

/// An event of the service's life, logged with its fields.
pub trait Event: fmt::Display {
    fn emit(&self);
}

/// An ingest batch was committed (or found to hold nothing new).
pub struct BatchIngested<'a> {
    pub report: &'a BatchReport,
    pub took_ms: u128,
}

impl fmt::Display for BatchIngested<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.report;
        write!(
            f,
            "partition {} of {}: received {}, stored {}, duplicates {}, dead-lettered {}, position {}, {} ms",
            r.partition, r.source, r.received, r.stored, r.duplicates, r.dead_lettered, r.position, self.took_ms
        )
    }
}

impl Event for BatchIngested<'_> {
    fn emit(&self) {
        let r = self.report;
        tracing::info!(
            source = %r.source,
            partition = %r.partition,
            received = r.received,
            stored = r.stored,
            duplicates = r.duplicates,
            dead_lettered = r.dead_lettered,
            position = %r.position,
            took_ms = self.took_ms,
            "batch ingested"
        );
    }
}

/// The rollups ran (one line per rollup in `Logs`).
pub struct RollupsAdvanced<'a> {
    pub run: &'a RollupRun,
    pub past_due: bool,
}

impl fmt::Display for RollupsAdvanced<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.run.attribution)?;
        for a in &self.run.advances {
            write!(f, "\n{a}")?;
        }
        if self.past_due {
            write!(f, "\nthe run was past due")?;
        }
        Ok(())
    }
}

impl Event for RollupsAdvanced<'_> {
    fn emit(&self) {
        let t = &self.run.attribution;
        tracing::info!(
            window_start = t.window_start,
            window_end = t.window_end,
            touches = t.touches,
            conversions = t.conversions,
            milliseconds = t.milliseconds,
            past_due = self.past_due,
            "attribution advanced"
        );
        for a in &self.run.advances {
            tracing::info!(
                rollup = %a.rollup,
                window_start = a.window_start,
                window_end = a.window_end,
                rows = a.rows,
                milliseconds = a.milliseconds,
                past_due = self.past_due,
                "rollup advanced"
            );
        }
    }
}

/// Partition upkeep, ledger compaction and rollup retention ran.
pub struct MaintenanceDone<'a> {
    pub run: &'a MaintenanceRun,
    pub past_due: bool,
}

impl fmt::Display for MaintenanceDone<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let run = self.run;
        let (created, dropped) = (run.created(), run.dropped());
        write!(
            f,
            "partitions of events: {} created, {} dropped{}",
            created.len(),
            dropped.len(),
            if self.past_due {
                " (run was past due)"
            } else {
                ""
            }
        )?;
        if let (Some(first), Some(last)) = (created.first(), created.last()) {
            write!(f, "\ncreated {} .. {}", first.partition, last.partition)?;
        }
        if let (Some(first), Some(last)) = (dropped.first(), dropped.last()) {
            write!(f, "\ndropped {} .. {}", first.partition, last.partition)?;
        }
        write!(
            f,
            "\nledger: {} tenant-hour totals folded",
            run.ledger_totals_folded
        )?;
        let expired: Vec<String> = run
            .rollup_rows_deleted
            .iter()
            .map(|(rollup, rows)| format!("{rollup} {rows} rows deleted"))
            .collect();
        write!(f, "\nrollup retention: {}", expired.join(", "))
    }
}

impl Event for MaintenanceDone<'_> {
    fn emit(&self) {
        tracing::info!(
            created = self.run.created().len(),
            dropped = self.run.dropped().len(),
            ledger_totals_folded = self.run.ledger_totals_folded,
            past_due = self.past_due,
            "maintenance done"
        );
    }
}

/// `collect` accepted a request's events or refused the request.
pub enum CollectOutcome<'a> {
    Accepted(usize),
    Refused {
        code: crate::ErrorCode,
        message: &'a str,
    },
}

impl fmt::Display for CollectOutcome<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CollectOutcome::Accepted(n) => write!(f, "accepted {n} events"),
            CollectOutcome::Refused { code, message } => write!(f, "refused: {code} ({message})"),
        }
    }
}

impl Event for CollectOutcome<'_> {
    fn emit(&self) {
        match self {
            CollectOutcome::Accepted(n) => tracing::info!(accepted = n, "collect accepted"),
            CollectOutcome::Refused { code, message } => {
                tracing::info!(%code, %message, "collect refused")
            }
        }
    }
}

/// Lines of an event's text, for hosts that show one log entry per line (Azure `Logs`).
pub fn lines(event: &dyn Event) -> Vec<String> {
    event.to_string().lines().map(str::to_owned).collect()
}
