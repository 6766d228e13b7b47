//! Delivering chunks of event bodies to one of two targets, with retries.
//!
//! - **ingest** (direct): an Event Hubs trigger invocation (the host's plain envelope) POSTed
//!   to a handler's `/ingest`, as the Functions host would. Each partition's sequence numbers
//!   are loadgen's; a retry resends the same envelope with the same sequence numbers, which
//!   the ingest path recognises as duplicates, so retrying is always safe here.
//! - **hub**: NDJSON (one body per line, the line's text unchanged) POSTed to devhost's
//!   producer endpoint `POST /admin/hubs/{hub}/events`, answered `202 {"accepted": n}` once
//!   durable. The hub numbers the events itself, so a resent chunk that had in fact been
//!   accepted is stored twice. Retries therefore happen on answers that say the chunk was not
//!   taken (connection refused, 503, 429) and, to lose nothing, also after no answer at all
//!   (timeout, connection cut, other 5xx), which is counted as an uncertain resend.

use chrono::{DateTime, Utc};
use remarketable_devhost::envelope::{event_hub, Encoding, PartitionInfo};
use remarketable_devhost::hub::StoredEvent;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why one attempt failed, by what it means for the chunk.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AttemptError {
    /// The target certainly did not take the chunk (refused connection, 503, 429): retry.
    #[error("not accepted: {0}")]
    NotAccepted(String),
    /// No answer: the target may or may not have taken the chunk. Retry, but a resend may
    /// duplicate it.
    #[error("no answer: {0}")]
    NoAnswer(String),
    /// The target refused the chunk for good (a 4xx, or an answer that does not add up):
    /// retrying will not help.
    #[error("refused: {0}")]
    Refused(String),
}

/// How one chunk's delivery went, over all attempts.
#[derive(Debug)]
pub struct Delivery<T> {
    pub result: Result<T, AttemptError>,
    pub attempts: u32,
    /// Attempts that ended without an answer before the last one.
    pub unanswered: u32,
}

impl<T> Delivery<T> {
    /// How many copies of the chunk the target may hold beyond the one an acknowledgement
    /// vouches for (or, unacknowledged, at all): one per attempt that went unanswered.
    pub fn possible_extra_copies(&self) -> u64 {
        let last = matches!(self.result, Err(AttemptError::NoAnswer(_)));
        u64::from(self.unanswered) + u64::from(last)
    }
}

/// How long and how often to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Give up on a chunk after retrying this long.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            give_up_after: Duration::from_secs(300),
        }
    }
}

/// Runs `attempt` until it succeeds, fails for good, the policy gives up, or `stop` is set.
pub async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    stop: &AtomicBool,
    mut attempt: F,
) -> Delivery<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AttemptError>>,
{
    let started = Instant::now();
    let mut backoff = policy.first_backoff;
    let mut attempts = 0;
    let mut unanswered = 0;
    loop {
        attempts += 1;
        let error = match attempt().await {
            Ok(v) => {
                return Delivery {
                    result: Ok(v),
                    attempts,
                    unanswered,
                }
            }
            Err(e @ AttemptError::Refused(_)) => e,
            Err(e) => {
                if started.elapsed() < policy.give_up_after && !stop.load(Ordering::Relaxed) {
                    if matches!(e, AttemptError::NoAnswer(_)) {
                        unanswered += 1;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(policy.max_backoff);
                    continue;
                }
                e
            }
        };
        // The last attempt's own outcome is in `result`; only earlier silent ones count.
        return Delivery {
            result: Err(error),
            attempts,
            unanswered,
        };
    }
}

/// Classifies a transport error: a connection that could not be made carried no request.
fn transport_error(url: &str, e: reqwest::Error) -> AttemptError {
    if e.is_connect() {
        AttemptError::NotAccepted(format!("cannot connect to {url}: {e}"))
    } else {
        AttemptError::NoAnswer(format!("POST {url}: {e}"))
    }
}

/// Classifies a non-2xx answer.
fn status_error(url: &str, status: reqwest::StatusCode, text: &str) -> AttemptError {
    let text: String = text.chars().take(300).collect();
    let message = format!("{url} answered {status}: {text}");
    match status.as_u16() {
        503 | 429 => AttemptError::NotAccepted(message),
        500..=599 => AttemptError::NoAnswer(message),
        _ => AttemptError::Refused(message),
    }
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<String, AttemptError> {
    let response = client
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .map_err(|e| transport_error(url, e))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| AttemptError::NoAnswer(format!("reading the answer of {url}: {e}")))?;
    if !status.is_success() {
        return Err(status_error(url, status, &text));
    }
    Ok(text)
}

/// The NDJSON body of a chunk: each body on its own line, unchanged.
pub fn ndjson(lines: &[String]) -> Result<Vec<u8>, AttemptError> {
    let mut body = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        if line.contains(['\n', '\r']) {
            // The generator never makes one; sending it would split an event in two.
            return Err(AttemptError::Refused(
                "an event body contains a line break and cannot be sent as NDJSON".into(),
            ));
        }
        body.extend_from_slice(line.as_bytes());
        body.push(b'\n');
    }
    Ok(body)
}

/// One attempt at posting a chunk to the hub; answers how many events it accepted.
pub async fn post_hub(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    lines: usize,
) -> Result<u64, AttemptError> {
    let text = post(client, url, "application/x-ndjson", body).await?;
    let accepted = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["accepted"].as_u64());
    match accepted {
        Some(n) if n == lines as u64 => Ok(n),
        // The chunk is in the hub, but not as sent: the truth cannot follow.
        _ => Err(AttemptError::Refused(format!(
            "{url} answered {text:?} for {lines} events; expected {{\"accepted\": {lines}}}"
        ))),
    }
}

/// One attempt at posting a trigger invocation to a handler's `/ingest`; answers the
/// handler's reply (`ReturnValue` holds the batch report).
pub async fn post_ingest(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
) -> Result<Value, AttemptError> {
    let text = post(client, url, "application/json", body).await?;
    serde_json::from_str(&text)
        .map_err(|e| AttemptError::Refused(format!("{url} answered something not JSON: {e}")))
}

/// An Event Hubs trigger invocation (the plain encoding) for one partition's batch, written by
/// devhost's encoder so that loadgen sends exactly what the Functions host stand-in sends.
/// Sequence numbers run on from `first_sequence`; offsets are made up (400 bytes an event).
pub fn envelope(
    partition: usize,
    first_sequence: i64,
    enqueued: &[DateTime<Utc>],
    bodies: &[String],
) -> Value {
    let events: Vec<Arc<StoredEvent>> = bodies
        .iter()
        .zip(enqueued)
        .zip(first_sequence..)
        .map(|((body, at), seq)| {
            Arc::new(StoredEvent {
                seq,
                offset: (seq * 400) as u64,
                enqueued: *at,
                key: None,
                body: body.clone(),
            })
        })
        .collect();
    let info = PartitionInfo {
        namespace: "loadgen.local".into(),
        hub: "clickstream".into(),
        consumer_group: "$Default".into(),
        partition: partition as u32,
    };
    event_hub("ingest", "events", &events, &info, None, Encoding::Plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelope_numbers_events_as_loadgen_always_did() {
        let at = |text: &str| DateTime::parse_from_rfc3339(text).unwrap().to_utc();
        let enqueued = [
            at("2026-11-26T10:00:01.125999Z"),
            at("2026-11-26T10:00:02Z"),
        ];
        let bodies = vec!["{\"a\":1}".to_string(), "{\"b\":2}".to_string()];
        let e = envelope(3, 41, &enqueued, &bodies);
        let meta = &e["Metadata"];
        assert_eq!(e["Data"]["events"], json!(bodies));
        assert_eq!(meta["PartitionContext"]["PartitionId"], "3");
        assert_eq!(
            meta["PartitionContext"]["FullyQualifiedNamespace"],
            "loadgen.local"
        );
        assert_eq!(meta["PartitionContext"]["EventHubName"], "clickstream");
        assert_eq!(meta["PartitionContext"]["ConsumerGroup"], "$Default");
        assert_eq!(meta["SequenceNumberArray"], json!([41, 42]));
        assert_eq!(meta["OffsetArray"], json!(["16400", "16800"]));
        // Truncated to the millisecond as loadgen always sent them; a whole second without a
        // fraction, as the fixtures write it.
        assert_eq!(
            meta["EnqueuedTimeUtcArray"],
            json!(["2026-11-26T10:00:01.125", "2026-11-26T10:00:02"])
        );
    }
}
