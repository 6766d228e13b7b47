//! The scheduled jobs, the same for every host (Azure timers, EventBridge schedules, the CLI).
//!
//! Each takes its own connection's transactions; running one twice at once is safe (rollups
//! serialize on their watermark rows, partition upkeep on its advisory lock in SQL).

use crate::attribution;
use crate::db::{self, PartitionChange};
use crate::rollup::{self, Advance};
use serde::Serialize;
use std::collections::BTreeMap;
use tokio_postgres::Client;

/// One run of the rollups: attribution (its windows summed up), then the 5-minute, hourly and
/// daily rollups' windows in order.
#[derive(Debug, Serialize)]
pub struct RollupRun {
    pub attribution: attribution::Advance,
    #[serde(rename = "rollups")]
    pub advances: Vec<Advance>,
}

/// Advances attribution, then every rollup, window after window, each window its own
/// transaction of at most `rollup_state.max_window_events` ids (migrations V21, V23), while
/// windows come back full and [`rollup::RUN_BUDGET`] is not spent: a large import is taken in
/// bounded steps instead of one window holding the watermarks for minutes. Attribution goes
/// first: the rollups forget the event id ranges they passed, and attribution reads them to
/// bound the partitions of its window.
pub async fn rollup(client: &mut Client) -> Result<RollupRun, crate::Error> {
    let started = std::time::Instant::now();
    let mut attribution: Option<attribution::Advance> = None;
    let mut advances = Vec::new();
    loop {
        let cap = rollup::max_window(client).await?;
        let taken = attribution::advance(client).await?;
        let done = rollup::run(client).await?;
        let full = taken.window_end - taken.window_start >= cap
            || done.iter().any(|a| a.window_end - a.window_start >= cap);
        attribution = Some(match attribution {
            None => taken,
            Some(before) => before.then(taken),
        });
        advances.extend(done);
        if !full || started.elapsed() >= rollup::RUN_BUDGET {
            break;
        }
    }
    Ok(RollupRun {
        attribution: attribution.expect("the loop runs at least once"),
        advances,
    })
}

/// One maintenance run: partitions created ahead and expired, ledger rows folded, rollup rows
/// past their retention deleted.
#[derive(Debug)]
pub struct MaintenanceRun {
    pub partitions: Vec<PartitionChange>,
    pub ledger_totals_folded: i64,
    pub rollup_rows_deleted: Vec<(String, i64)>,
}

impl MaintenanceRun {
    pub fn created(&self) -> Vec<&PartitionChange> {
        self.changes("created")
    }

    pub fn dropped(&self) -> Vec<&PartitionChange> {
        self.changes("dropped")
    }

    fn changes(&self, action: &str) -> Vec<&PartitionChange> {
        self.partitions
            .iter()
            .filter(|c| c.action == action)
            .collect()
    }

    /// The figures a host returns as the run's result.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "created": self.created().len(),
            "dropped": self.dropped().len(),
            "ledger_totals_folded": self.ledger_totals_folded,
            "rollup_rows_deleted": self
                .rollup_rows_deleted
                .iter()
                .map(|(r, n)| (r.clone(), *n))
                .collect::<BTreeMap<_, _>>(),
        })
    }
}

/// Partition upkeep, ledger compaction and rollup retention, each in its own statement.
pub async fn maintenance(client: &Client) -> Result<MaintenanceRun, crate::Error> {
    let partitions = db::maintain_partitions(client).await?;
    let ledger_totals_folded = db::compact_ledger(client).await?;
    let rollup_rows_deleted = rollup::apply_retention(client).await?;
    Ok(MaintenanceRun {
        partitions,
        ledger_totals_folded,
        rollup_rows_deleted,
    })
}
