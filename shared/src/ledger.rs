//! The delivery ledger's one writer: every path that stores or dead-letters events (ingest,
//! replay, and later imports) records what it did as one row of `ingest_ledger_batches`, in the
//! transaction that did it, per tenant and hour of enqueue time.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use std::collections::BTreeMap;
use tokio_postgres::types::Type;
use tokio_postgres::Transaction;

/// The counts of one (tenant, hour) cell. Replay records negative counts where events move
/// from dead-lettered to stored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub received: i64,
    pub stored: i64,
    pub duplicates: i64,
    pub dead_lettered: i64,
}

/// Cells of one ledger entry, keyed by (tenant, hour of enqueue time).
#[derive(Debug, Default)]
pub struct Entry {
    cells: BTreeMap<(i64, DateTime<Utc>), Counts>,
}

impl Entry {
    /// The cell of `tenant` for the hour holding `enqueued_at`.
    pub fn cell(&mut self, tenant: i64, enqueued_at: DateTime<Utc>) -> &mut Counts {
        let hour = enqueued_at
            .duration_trunc(TimeDelta::hours(1))
            .unwrap_or(enqueued_at);
        self.cells.entry((tenant, hour)).or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Writes the entry as one row of `ingest_ledger_batches` (nothing when it is empty).
    pub async fn record(
        &self,
        tx: &Transaction<'_>,
        source: &str,
        partition: &str,
    ) -> Result<(), tokio_postgres::Error> {
        if self.is_empty() {
            return Ok(());
        }
        let n = self.cells.len();
        let (mut tenants, mut hours) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut received, mut stored) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut duplicates, mut dead_lettered) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for (&(tenant, hour), c) in &self.cells {
            tenants.push(tenant);
            hours.push(hour);
            received.push(c.received);
            stored.push(c.stored);
            duplicates.push(c.duplicates);
            dead_lettered.push(c.dead_lettered);
        }
        tx.query_typed(
            include_str!("../sql/insert_ledger_entry.sql"),
            &[
                (&source, Type::TEXT),
                (&partition, Type::TEXT),
                (&tenants, Type::INT8_ARRAY),
                (&hours, Type::TIMESTAMPTZ_ARRAY),
                (&received, Type::INT8_ARRAY),
                (&stored, Type::INT8_ARRAY),
                (&duplicates, Type::INT8_ARRAY),
                (&dead_lettered, Type::INT8_ARRAY),
            ],
        )
        .await?;
        Ok(())
    }
}
