//! The `ingest` role: Kafka (MSK `aws:kafka`, self-managed `aws:SelfManagedKafka`) and Kinesis
//! events, decoded into the core's [`Batch`]es (one per stream partition) and written by the
//! same [`Ingestor`] as the Azure `/ingest`.
//!
//! - Kafka: source = the MSK cluster ARN (or `KAFKA_SOURCE_NAME` for a self-managed cluster)
//!   and the topic; partition = `record.partition` (never parsed out of the `"<topic>-<p>"` map
//!   key: topics may contain `-`); position = the offset.
//! - Kinesis: source = the stream ARN; partition = the shard id (from `eventID`,
//!   `shardId-…:<sequence>`); position = the sequence number, compared exactly as a number.
//!
//! Partitions are written one after another in sorted (source, partition) order, each in its
//! own transaction, so concurrent invocations lock position rows in the same order and cannot
//! deadlock. Bad records become dead letters inside the core; only infrastructure failures
//! fail the invocation (or, with `REPORT_BATCH_ITEM_FAILURES`, are reported per partition from
//! its first record, so the event source retries exactly those).

use aws_lambda_events::event::kafka::KafkaEvent;
use aws_lambda_events::event::kinesis::KinesisEvent;
use base64::Engine;
use remarketable_core::{Batch, BatchReport, Error, ErrorCode, IncomingEvent, Position};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A stream event decoded into batches, with what a partial-failure answer names them by.
#[derive(Debug)]
pub struct Decoded {
    pub kind: StreamKind,
    /// Sorted by (source, partition).
    pub batches: Vec<Batch>,
    /// Per batch: the item identifier of its first record.
    pub first_items: Vec<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    Msk,
    SelfManagedKafka,
    Kinesis,
}

fn bad(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::BadEnvelope, message)
}

/// The top-level fields that tell the event kinds apart; everything else is skipped unbuilt.
#[derive(serde::Deserialize)]
struct Probe {
    #[serde(rename = "eventSource")]
    event_source: Option<String>,
    #[serde(rename = "Records")]
    records: Option<serde::de::IgnoredAny>,
}

/// Decodes an `ingest` invocation payload (its JSON text, parsed straight into the
/// aws_lambda_events types: no intermediate JSON tree for a batch of thousands of records).
pub fn decode(payload: &str, kafka_source_name: Option<&str>) -> Result<Decoded, Error> {
    let probe: Probe =
        serde_json::from_str(payload).map_err(|e| bad(format!("not a JSON object: {e}")))?;
    match probe.event_source.as_deref() {
        Some("aws:kafka") | Some("aws:SelfManagedKafka") => {
            decode_kafka(payload, kafka_source_name)
        }
        Some(other) => Err(bad(format!("unsupported eventSource {other:?}"))),
        None if probe.records.is_some() => decode_kinesis(payload),
        None => Err(bad(
            "not a Kafka or Kinesis event (no eventSource and no Records)",
        )),
    }
}

fn decode_kafka(payload: &str, self_managed_name: Option<&str>) -> Result<Decoded, Error> {
    let event = match serde_json::from_str::<KafkaEvent>(payload) {
        Ok(event) => event,
        Err(_) => kafka_without_headers(payload)?,
    };
    kafka_batches(event, self_managed_name)
}

/// aws_lambda_events has no default for `headers`, and records without it are valid payloads:
/// those are read through a JSON tree with empty headers filled in.
fn kafka_without_headers(payload: &str) -> Result<KafkaEvent, Error> {
    let mut payload: Value =
        serde_json::from_str(payload).map_err(|e| bad(format!("Kafka event: {e}")))?;
    if let Some(Value::Object(records)) = payload.get_mut("records") {
        for list in records.values_mut() {
            if let Value::Array(list) = list {
                for record in list {
                    if let Value::Object(r) = record {
                        r.entry("headers").or_insert_with(|| json!([]));
                    }
                }
            }
        }
    }
    serde_json::from_value(payload).map_err(|e| bad(format!("Kafka event: {e}")))
}

fn kafka_batches(event: KafkaEvent, self_managed_name: Option<&str>) -> Result<Decoded, Error> {
    let (kind, cluster) = match event.event_source.as_deref() {
        Some("aws:kafka") => (
            StreamKind::Msk,
            event
                .event_source_arn
                .clone()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| bad("MSK event without eventSourceArn"))?,
        ),
        _ => (
            StreamKind::SelfManagedKafka,
            self_managed_name
                .map(str::to_string)
                // A configuration problem: failing (and being retried) is right until it is set.
                .ok_or_else(|| {
                    Error::new(
                        ErrorCode::InternalError,
                        "a self-managed Kafka event arrived, but KAFKA_SOURCE_NAME is not set",
                    )
                })?,
        ),
    };
    // (source, partition) -> (the map key, records)
    let mut groups: BTreeMap<(String, String), (String, Vec<IncomingEvent>)> = BTreeMap::new();
    for (key, records) in event.records {
        for record in records {
            let topic = record
                .topic
                .clone()
                .ok_or_else(|| bad(format!("a record of {key} has no topic")))?;
            let source = format!("{cluster}/{topic}");
            let body = match record.value.as_deref() {
                // A tombstone: no body, which ingest dead-letters as invalid JSON.
                None => Vec::new(),
                Some(text) => base64::engine::general_purpose::STANDARD
                    .decode(text)
                    // Not base64 (Lambda always encodes): keep the text for the dead letter.
                    .unwrap_or_else(|_| text.as_bytes().to_vec()),
            };
            let entry = groups
                .entry((source, record.partition.to_string()))
                .or_insert_with(|| (key.clone(), Vec::new()));
            entry.1.push(IncomingEvent {
                sequence: Position::from(record.offset),
                offset: None,
                enqueued_at: record.timestamp.0,
                body,
            });
        }
    }
    let mut batches = Vec::with_capacity(groups.len());
    let mut first_items = Vec::with_capacity(groups.len());
    for ((source, partition), (key, mut events)) in groups {
        // Lambda delivers a partition in offset order; sorted anyway, so the first is the lowest.
        events.sort_by(|a, b| a.sequence.cmp(&b.sequence));
        first_items.push(json!({"partition": key, "offset": events[0].sequence}));
        batches.push(Batch {
            source,
            partition,
            events,
            // Compaction and transaction markers leave holes in offsets.
            contiguous: false,
        });
    }
    Ok(Decoded {
        kind,
        batches,
        first_items,
    })
}

fn decode_kinesis(payload: &str) -> Result<Decoded, Error> {
    let event: KinesisEvent =
        serde_json::from_str(payload).map_err(|e| bad(format!("Kinesis event: {e}")))?;
    let mut groups: BTreeMap<(String, String), Vec<IncomingEvent>> = BTreeMap::new();
    for (i, record) in event.records.into_iter().enumerate() {
        let source = record
            .event_source_arn
            .clone()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| bad(format!("Records[{i}] has no eventSourceARN")))?;
        let shard = record
            .event_id
            .as_deref()
            .and_then(|id| id.split_once(':'))
            .map(|(shard, _)| shard.to_string())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad(format!("Records[{i}].eventID is not <shardId>:<sequence>")))?;
        let sequence: Position = record.kinesis.sequence_number.parse().map_err(|_| {
            bad(format!(
                "Records[{i}].kinesis.sequenceNumber is not a decimal number"
            ))
        })?;
        groups
            .entry((source, shard))
            .or_default()
            .push(IncomingEvent {
                sequence,
                offset: None,
                enqueued_at: record.kinesis.approximate_arrival_timestamp.0,
                body: record.kinesis.data.0,
            });
    }
    let mut batches = Vec::with_capacity(groups.len());
    let mut first_items = Vec::with_capacity(groups.len());
    for ((source, partition), mut events) in groups {
        events.sort_by(|a, b| a.sequence.cmp(&b.sequence));
        // Kinesis names an item by its sequence number, as a string.
        first_items.push(Value::String(events[0].sequence.to_string()));
        batches.push(Batch {
            source,
            partition,
            events,
            contiguous: false,
        });
    }
    Ok(Decoded {
        kind: StreamKind::Kinesis,
        batches,
        first_items,
    })
}

/// The answer of an ingest invocation: the batch reports, and (always present, empty when
/// everything was written) the partial-failure list Lambda reads when the mapping has
/// `ReportBatchItemFailures`.
#[derive(Debug, Serialize)]
pub struct IngestAnswer {
    #[serde(rename = "batchItemFailures")]
    pub batch_item_failures: Vec<ItemFailure>,
    pub batches: Vec<BatchSummary>,
}

#[derive(Debug, Serialize)]
pub struct ItemFailure {
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: Value,
}

/// One partition's result, without the per-event outcomes (the answer must stay small).
#[derive(Debug, Serialize)]
pub struct BatchSummary {
    pub source: String,
    pub partition: String,
    pub received: usize,
    pub stored: usize,
    pub duplicates: usize,
    pub dead_lettered: usize,
    pub position: Position,
}

impl From<&BatchReport> for BatchSummary {
    fn from(r: &BatchReport) -> Self {
        BatchSummary {
            source: r.source.clone(),
            partition: r.partition.clone(),
            received: r.received,
            stored: r.stored,
            duplicates: r.duplicates,
            dead_lettered: r.dead_lettered,
            position: r.position.clone(),
        }
    }
}
