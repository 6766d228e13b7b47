//! collect's stream on AWS: Kinesis `PutRecords`.
//!
//! The Azure collect sends events without a partition key, so the hub spreads them over its
//! partitions. Kinesis needs a key: each event's is the hex SHA-256 of its text (32 digits),
//! which spreads events evenly over shards and gives a record the same key when it is sent
//! again. Records refused in a partial failure (throttling, internal errors) are sent again,
//! up to [`ATTEMPTS`] times with a growing pause; whatever is still refused is reported to the
//! client as 503 `stream_unavailable` with the count, never dropped silently.

use crate::aws::{Aws, AwsError};
use base64::Engine;
use remarketable_api::ApiError;
use remarketable_core::ErrorCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Tries per record before giving up.
pub const ATTEMPTS: usize = 4;
/// Kinesis takes at most 500 records and 5 MiB per call.
const MAX_RECORDS: usize = 500;
const MAX_CALL_BYTES: usize = 5 * 1024 * 1024 - 64 * 1024;

#[derive(Debug)]
pub struct Publisher {
    aws: Aws,
    /// `StreamARN` when the setting is an ARN, else `StreamName`.
    stream: (&'static str, String),
}

/// Events that could not be put, after every retry.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} events were not accepted by Kinesis ({why})")]
pub struct PublishError {
    pub failed: usize,
    pub total: usize,
    pub why: String,
}

/// The client's answer when publishing failed.
pub fn refusal(e: PublishError) -> ApiError {
    tracing::warn!(error = %e, "collect: events not published");
    let sent = e.total - e.failed;
    ApiError::new(
        ErrorCode::StreamUnavailable,
        format!(
            "the stream did not accept {} of {} events ({} were sent); send the request again later",
            e.failed, e.total, sent
        ),
    )
}

pub fn partition_key(event: &str) -> String {
    let digest = Sha256::digest(event.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

impl Publisher {
    pub fn new(aws: Aws, stream: &str) -> Self {
        let field = if stream.starts_with("arn:") {
            "StreamARN"
        } else {
            "StreamName"
        };
        Publisher {
            aws,
            stream: (field, stream.to_string()),
        }
    }

    /// Puts every event, in calls of at most 500 records / 5 MiB.
    pub async fn publish(&self, events: &[String]) -> Result<(), PublishError> {
        let mut start = 0;
        while start < events.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < events.len() && end - start < MAX_RECORDS {
                let size = events[end].len() * 4 / 3 + 64;
                if end > start && bytes + size > MAX_CALL_BYTES {
                    break;
                }
                bytes += size;
                end += 1;
            }
            self.put_all(&events[start..end])
                .await
                .map_err(|(failed, why)| PublishError {
                    // Everything after this call was not sent either.
                    failed: failed + (events.len() - end),
                    total: events.len(),
                    why,
                })?;
            start = end;
        }
        Ok(())
    }

    /// One call's records, the refused ones sent again. Answers how many stayed refused.
    async fn put_all(&self, events: &[String]) -> Result<(), (usize, String)> {
        let mut pending: Vec<&String> = events.iter().collect();
        let mut why = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            match self.put(&pending).await {
                Ok(refused) if refused.is_empty() => return Ok(()),
                Ok(refused) => {
                    why = refused
                        .iter()
                        .map(|(_, code)| code.as_str())
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    pending = refused.into_iter().map(|(i, _)| pending[i]).collect();
                }
                Err(e) if e.is_transient() => why = e.to_string(),
                Err(e) => return Err((pending.len(), e.to_string())),
            }
        }
        Err((pending.len(), why))
    }

    /// One `PutRecords`; answers the indexes (into `events`) of refused records and their codes.
    async fn put(&self, events: &[&String]) -> Result<Vec<(usize, String)>, AwsError> {
        let records: Vec<Value> = events
            .iter()
            .map(|e| {
                json!({
                    "Data": base64::engine::general_purpose::STANDARD.encode(e.as_bytes()),
                    "PartitionKey": partition_key(e),
                })
            })
            .collect();
        let mut body = json!({ "Records": records });
        body[self.stream.0] = Value::String(self.stream.1.clone());
        let answer = self
            .aws
            .call("kinesis", "Kinesis_20131202.PutRecords", &body)
            .await?;
        let results = answer
            .get("Records")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if results.len() != events.len() {
            return Err(AwsError::Service {
                target: "Kinesis_20131202.PutRecords",
                status: 200,
                kind: "UnexpectedAnswer".into(),
                message: format!("{} results for {} records", results.len(), events.len()),
            });
        }
        Ok(results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                r.get("ErrorCode")
                    .and_then(Value::as_str)
                    .map(|code| (i, code.to_string()))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_spread() {
        let a = partition_key(r#"{"tenant_id":1}"#);
        assert_eq!(a, partition_key(r#"{"tenant_id":1}"#));
        assert_eq!(a.len(), 32);
        assert_ne!(a, partition_key(r#"{"tenant_id":2}"#));
    }
}
