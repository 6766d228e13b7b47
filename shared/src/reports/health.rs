//! Ingest health: the tenant's delivery ledger per hour and its latest dead letters.

use super::sql::scope;
use super::vocabulary::{Freshness, Granularity, Range, ReportError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Client;

/// One hour of the tenant's delivery ledger.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerHour {
    pub hour: DateTime<Utc>,
    pub received: i64,
    pub stored: i64,
    pub duplicates: i64,
    pub dead_lettered: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub dead_letter_id: i64,
    pub reason: String,
    pub message: String,
    pub stream_partition: String,
    pub stream_sequence: crate::Position,
    pub enqueued_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub replay_status: String,
    /// The start of the raw payload as text (invalid UTF-8 replaced), at most 512 bytes.
    pub payload_preview: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    pub range: Range,
    pub hours: Vec<LedgerHour>,
    pub recent_dead_letters: Vec<DeadLetter>,
    pub freshness: Freshness,
}

/// The tenant's ledger per hour of enqueue time in `range`, and its latest dead letters.
pub async fn ingest(
    client: &Client,
    tenant_id: i64,
    range: &Range,
    dead_letters: i64,
) -> Result<IngestReport, ReportError> {
    let scope = scope(client, tenant_id, range, Granularity::Hour).await?;
    let hours = client
        .query(
            "SELECT hour, received, stored, duplicates, dead_lettered FROM ingest_ledger
             WHERE tenant_id = $1 AND hour >= $2 AND hour < $3 ORDER BY hour",
            &[&tenant_id, &scope.range.from, &scope.range.to],
        )
        .await?
        .iter()
        .map(|r| LedgerHour {
            hour: r.get(0),
            received: r.get(1),
            stored: r.get(2),
            duplicates: r.get(3),
            dead_lettered: r.get(4),
        })
        .collect();
    let recent_dead_letters = client
        .query(
            "SELECT dead_letter_id, reason, message, stream_partition, stream_sequence,
                    enqueued_at, received_at, replay_status, substring(payload FROM 1 FOR 512)
             FROM dead_letters WHERE tenant_id = $1
             ORDER BY received_at DESC, dead_letter_id DESC LIMIT $2",
            &[&tenant_id, &dead_letters.clamp(1, 500)],
        )
        .await?
        .iter()
        .map(|r| DeadLetter {
            dead_letter_id: r.get(0),
            reason: r.get(1),
            message: r.get(2),
            stream_partition: r.get(3),
            stream_sequence: r.get(4),
            enqueued_at: r.get(5),
            received_at: r.get(6),
            replay_status: r.get(7),
            payload_preview: String::from_utf8_lossy(r.get::<_, &[u8]>(8)).into_owned(),
        })
        .collect();
    Ok(IngestReport {
        range: scope.range,
        hours,
        recent_dead_letters,
        freshness: scope.freshness,
    })
}
