//! A stored dead letter: an event ingest refused, kept with its payload so it can be inspected
//! (the ingest health report) and delivered again (replay).

use crate::ingest::IncomingEvent;
use chrono::{DateTime, Utc};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use tokio_postgres::Row;

/// The columns [`DeadLetter::from_row`] reads, for a select list. A listing may select a prefix
/// of the payload under the same name (see [`PREVIEW_BYTES`]).
/// `payload` stays last.
pub const COLUMNS: &str = "dead_letter_id, stream_partition, stream_sequence, stream_offset, \
                           enqueued_at, received_at, reason, message, replay_status, \
                           payload_bytes, payload";

/// How much of the payload a listing shows.
pub const PREVIEW_BYTES: i32 = 512;

#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub id: i64,
    pub partition: String,
    /// When it was dead-lettered.
    pub received_at: DateTime<Utc>,
    /// Its reason code at ingest, and the message given then.
    pub reason: String,
    pub message: String,
    /// `pending`, `replayed` or `discarded`.
    pub replay_status: String,
    /// The size the payload had when ingest kept only its first bytes (a `too_large` event).
    pub truncated_from: Option<i64>,
    /// The event as it was delivered: position, enqueue time and payload.
    pub incoming: IncomingEvent,
}

impl DeadLetter {
    /// Reads a row selected with [`COLUMNS`].
    pub fn from_row(row: &Row) -> Self {
        DeadLetter {
            id: row.get("dead_letter_id"),
            partition: row.get("stream_partition"),
            received_at: row.get("received_at"),
            reason: row.get("reason"),
            message: row.get("message"),
            replay_status: row.get("replay_status"),
            truncated_from: row.get("payload_bytes"),
            incoming: IncomingEvent {
                sequence: row.get("stream_sequence"),
                offset: row.get("stream_offset"),
                enqueued_at: row.get("enqueued_at"),
                body: row.get("payload"),
            },
        }
    }
}

/// The JSON of a listing: the payload as text (invalid UTF-8 replaced), never the offset.
impl Serialize for DeadLetter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("DeadLetter", 10)?;
        s.serialize_field("dead_letter_id", &self.id)?;
        s.serialize_field("reason", &self.reason)?;
        s.serialize_field("message", &self.message)?;
        s.serialize_field("stream_partition", &self.partition)?;
        s.serialize_field("stream_sequence", &self.incoming.sequence)?;
        s.serialize_field("enqueued_at", &self.incoming.enqueued_at)?;
        s.serialize_field("received_at", &self.received_at)?;
        s.serialize_field("replay_status", &self.replay_status)?;
        s.serialize_field("payload_truncated_from", &self.truncated_from)?;
        s.serialize_field(
            "payload_preview",
            &String::from_utf8_lossy(&self.incoming.body),
        )?;
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(sql: &str) -> String {
        sql.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn replay_selects_the_dead_letter_columns() {
        let sql = words(include_str!("../sql/replay_pending.sql"));
        assert!(
            sql.contains(&format!("SELECT {} FROM dead_letters", words(COLUMNS))),
            "{sql}"
        );
    }
}
