//! The custom handler invocation envelope of the Azure Functions host, decoded defensively.
//!
//! The host may send array and string values JSON-encoded a second time (a JSON string that
//! contains the JSON text); every accessor here accepts both the plain and the double-encoded
//! form. ARCHITECTURE.md ("Host contracts") says what the host sends; `tests/fixtures/` holds
//! every envelope this module decodes.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use chrono::{DateTime, NaiveDateTime, Utc};
use remarketable_api::ApiError;
use remarketable_core::{Batch, ErrorCode, IncomingEvent};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /<FunctionName>` body.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct InvocationRequest {
    #[serde(rename = "Data", default)]
    pub data: Map<String, Value>,
    #[serde(rename = "Metadata", default)]
    pub metadata: Map<String, Value>,
}

/// The answer to an invocation. PascalCase field names are the host's.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct InvocationResponse {
    #[serde(rename = "Outputs")]
    pub outputs: Map<String, Value>,
    #[serde(rename = "Logs")]
    pub logs: Vec<String>,
    #[serde(
        rename = "ReturnValue",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub return_value: Option<Value>,
}

/// A host envelope that cannot be understood. The host (not a producer) sent it, so this is a
/// contract problem worth failing loudly for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EnvelopeError(pub String);

fn bad(msg: impl Into<String>) -> EnvelopeError {
    EnvelopeError(msg.into())
}

/// A value that may arrive as JSON text inside a string: decoded once if it is a string that
/// holds a JSON array or object.
pub fn unwrap_encoded(value: &Value) -> Value {
    decoded(value.clone())
}

/// [`unwrap_encoded`] for an owned value, without copying it.
fn decoded(value: Value) -> Value {
    if let Value::String(s) = &value {
        let t = s.trim_start();
        if t.starts_with('[') || t.starts_with('{') {
            if let Ok(inner) = serde_json::from_str::<Value>(s) {
                return inner;
            }
        }
    }
    value
}

/// Looks a key up exactly, then ignoring ASCII case (hosts have differed on casing).
pub fn get<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// Removes a key, matched exactly or else ignoring ASCII case.
fn take(map: &mut Map<String, Value>, key: &str) -> Option<Value> {
    if let Some(v) = map.remove(key) {
        return Some(v);
    }
    let found = map.keys().find(|k| k.eq_ignore_ascii_case(key))?.clone();
    map.remove(&found)
}

fn array(map: &mut Map<String, Value>, key: &str) -> Result<Vec<Value>, EnvelopeError> {
    match take(map, key).map(decoded) {
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(bad(format!("{key} is not an array"))),
        None => Err(bad(format!("{key} is missing"))),
    }
}

/// One event body as sent. With `dataType: string` each element is the body text; an element
/// that is itself a JSON-encoded string of an object is decoded once; anything else is taken as
/// its JSON text so it still reaches a dead letter rather than failing the batch.
fn body_of(element: Value) -> Vec<u8> {
    match element {
        Value::String(s) => {
            if s.starts_with('"') {
                if let Ok(inner) = serde_json::from_str::<String>(&s) {
                    if inner.trim_start().starts_with('{') {
                        return inner.into_bytes();
                    }
                }
            }
            s.into_bytes()
        }
        other => other.to_string().into_bytes(),
    }
}

fn sequence_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn offset_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Enqueued times come as `2026-11-26T10:00:00.123` without an offset (UTC), or with one.
pub fn parse_utc(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = s.parse::<NaiveDateTime>() {
        return Some(t.and_utc());
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(s, "%m/%d/%Y %H:%M:%S")
        .ok()
        .map(|t| t.and_utc())
}

fn enqueued_of(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::String(s) => parse_utc(s).or_else(|| {
            // A double-encoded string: "\"2026-...\"".
            serde_json::from_str::<String>(s)
                .ok()
                .and_then(|s| parse_utc(&s))
        }),
        _ => None,
    }
}

fn text_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An Event Hubs trigger invocation (`cardinality: many`), read straight from the request body.
/// Only the metadata the ingest needs is decoded; the rest (`SystemPropertiesArray`,
/// `PropertiesArray`, one object per event) is skipped without being built.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct EventHubInvocation {
    #[serde(rename = "Data", alias = "data", default)]
    pub data: Map<String, Value>,
    #[serde(rename = "Metadata", alias = "metadata", default)]
    pub metadata: EventHubMetadata,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct EventHubMetadata {
    #[serde(rename = "PartitionContext", alias = "partitionContext")]
    pub partition_context: Option<Value>,
    #[serde(rename = "SequenceNumberArray", alias = "sequenceNumberArray")]
    pub sequence_numbers: Option<Value>,
    #[serde(rename = "OffsetArray", alias = "offsetArray")]
    pub offsets: Option<Value>,
    #[serde(rename = "EnqueuedTimeUtcArray", alias = "enqueuedTimeUtcArray")]
    pub enqueued_times: Option<Value>,
}

fn array_of(value: Option<Value>, key: &str) -> Result<Vec<Value>, EnvelopeError> {
    match value.map(decoded) {
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(bad(format!("{key} is not an array"))),
        None => Err(bad(format!("{key} is missing"))),
    }
}

/// Decodes an Event Hubs trigger invocation into a [`Batch`].
///
/// The position source is `<FullyQualifiedNamespace>/<EventHubName>`: consumer groups are left
/// out on purpose, so two consumer groups writing to one database still store each event once.
pub fn event_hub_batch(
    mut invocation: EventHubInvocation,
    binding: &str,
) -> Result<Batch, EnvelopeError> {
    let bodies = array(&mut invocation.data, binding)?;
    let meta = invocation.metadata;
    let context = match meta.partition_context.map(decoded) {
        Some(Value::Object(m)) => m,
        _ => return Err(bad("PartitionContext is missing")),
    };
    let partition = text_of(get(&context, "PartitionId"))
        .ok_or_else(|| bad("PartitionContext.PartitionId is missing"))?;
    let namespace = text_of(get(&context, "FullyQualifiedNamespace")).unwrap_or_default();
    let hub = text_of(get(&context, "EventHubName"))
        .ok_or_else(|| bad("PartitionContext.EventHubName is missing"))?;
    let source = if namespace.is_empty() {
        hub
    } else {
        format!("{namespace}/{hub}")
    };

    let sequences = array_of(meta.sequence_numbers, "SequenceNumberArray")?;
    let enqueued = array_of(meta.enqueued_times, "EnqueuedTimeUtcArray")?;
    // Offsets are informational (kept with dead letters); absent is tolerated.
    let offsets = array_of(meta.offsets, "OffsetArray").unwrap_or_default();
    if sequences.len() != bodies.len() || enqueued.len() != bodies.len() {
        return Err(bad(format!(
            "{} events but {} sequence numbers and {} enqueued times",
            bodies.len(),
            sequences.len(),
            enqueued.len()
        )));
    }
    let events = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            Ok(IncomingEvent {
                sequence: sequence_of(&sequences[i])
                    .ok_or_else(|| bad(format!("SequenceNumberArray[{i}] is not an integer")))?
                    .into(),
                offset: offsets.get(i).and_then(offset_of),
                enqueued_at: enqueued_of(&enqueued[i])
                    .ok_or_else(|| bad(format!("EnqueuedTimeUtcArray[{i}] is not a time")))?,
                body: body_of(body),
            })
        })
        .collect::<Result<Vec<_>, EnvelopeError>>()?;
    Ok(Batch {
        source,
        partition,
        events,
        contiguous: true,
    })
}

/// The HTTP request of an HTTP trigger in envelope mode (`Data.<binding>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequestData {
    pub method: String,
    pub url: String,
    /// Lower-cased header names.
    pub headers: Vec<(String, String)>,
    /// Query parameters (`Query`, or else parsed from `Url`), as sent.
    pub query: Vec<(String, String)>,
    pub body: String,
}

impl HttpRequestData {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter, matched exactly.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Query parameters of a URL, split on `&` and `=`. Values are not percent-decoded: the
/// parameters this handler reads (keys and tokens) are URL-safe as they are.
fn query_of_url(url: &str) -> Vec<(String, String)> {
    let Some((_, query)) = url.split_once('?') else {
        return Vec::new();
    };
    let query = query.split('#').next().unwrap_or_default();
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Decodes `Data.<binding>` of an HTTP trigger. `Body` is the raw text; a host that parsed a
/// JSON body hands it over as a value, which is serialized back.
pub fn http_request(
    request: &InvocationRequest,
    binding: &str,
) -> Result<HttpRequestData, EnvelopeError> {
    let req = match get(&request.data, binding).map(unwrap_encoded) {
        Some(Value::Object(m)) => m,
        _ => return Err(bad(format!("Data.{binding} is missing"))),
    };
    let mut headers = Vec::new();
    if let Some(Value::Object(h)) = get(&req, "Headers").map(unwrap_encoded) {
        for (name, values) in h {
            let value = match values {
                Value::Array(vs) => vs
                    .iter()
                    .filter_map(|v| text_of(Some(v)))
                    .collect::<Vec<_>>()
                    .join(","),
                other => text_of(Some(&other)).unwrap_or_default(),
            };
            headers.push((name.to_ascii_lowercase(), value));
        }
    }
    let url = text_of(get(&req, "Url")).unwrap_or_default();
    let query = match get(&req, "Query").map(unwrap_encoded) {
        Some(Value::Object(q)) if !q.is_empty() => q
            .into_iter()
            .filter_map(|(k, v)| {
                let v = match v {
                    Value::Array(vs) => text_of(vs.first()),
                    other => text_of(Some(&other)),
                }?;
                Some((k, v))
            })
            .collect(),
        _ => query_of_url(&url),
    };
    let body = match get(&req, "Body") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    Ok(HttpRequestData {
        method: text_of(get(&req, "Method")).unwrap_or_default(),
        url,
        headers,
        query,
        body,
    })
}

/// The `Outputs.<res>` value of an HTTP output binding.
pub fn http_response(status: u16, body: &Value) -> Value {
    serde_json::json!({
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": body.to_string(),
    })
}

/// An error answer of an HTTP output binding, with its `Retry-After` where it has one.
pub fn http_error(e: &ApiError) -> Value {
    let mut response = http_response(e.status.as_u16(), &e.body());
    if let Some(seconds) = e.retry_after_seconds() {
        response["headers"]["Retry-After"] = Value::from(seconds.to_string());
    }
    response
}

/// The host sent an envelope we cannot decode: the invocation fails with 400 `bad_envelope`.
pub fn bad_envelope(e: EnvelopeError) -> ApiError {
    tracing::error!(error = %e, "invocation envelope not understood");
    ApiError::new(ErrorCode::BadEnvelope, e.0)
}

/// Extracts an invocation envelope (an [`InvocationRequest`] unless a trigger has its own
/// type), answering bad bodies with the API's error shape instead of axum's plain-text
/// rejections.
pub struct Envelope<T = InvocationRequest>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Envelope<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::TooLarge, "invocation body is too large")
            } else {
                ApiError::new(ErrorCode::BadEnvelope, "invocation body could not be read")
            }
        })?;
        serde_json::from_slice(&bytes).map(Envelope).map_err(|e| {
            bad_envelope(EnvelopeError(format!(
                "invocation body is not a JSON envelope: {e}"
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unwrap_encoded_decodes_once() {
        assert_eq!(unwrap_encoded(&json!("[1,2]")), json!([1, 2]));
        assert_eq!(unwrap_encoded(&json!([1, 2])), json!([1, 2]));
        assert_eq!(unwrap_encoded(&json!("plain")), json!("plain"));
        assert_eq!(unwrap_encoded(&json!("[not json")), json!("[not json"));
    }

    #[test]
    fn enqueued_time_without_offset_is_utc() {
        let t = parse_utc("2026-11-26T10:00:00.123").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-26T10:00:00.123+00:00");
        assert_eq!(
            parse_utc("2026-11-26T11:00:00+01:00").unwrap().to_rfc3339(),
            "2026-11-26T10:00:00+00:00"
        );
        assert!(parse_utc("soon").is_none());
    }

    #[test]
    fn body_of_keeps_text_and_decodes_encoded_objects() {
        assert_eq!(body_of(json!("{\"a\":1}")), b"{\"a\":1}");
        assert_eq!(body_of(json!("\"{\\\"a\\\":1}\"")), b"{\"a\":1}");
        assert_eq!(body_of(json!("\"just text\"")), b"\"just text\"");
        assert_eq!(body_of(json!({"a": 1})), b"{\"a\":1}");
    }

    #[test]
    fn query_comes_from_query_or_else_the_url() {
        let request = |req: Value| InvocationRequest {
            data: json!({"req": req}).as_object().unwrap().clone(),
            metadata: Default::default(),
        };
        let from_query = http_request(
            &request(json!({"Url": "https://h/api/collect?x=1", "Query": {"write_key": "k"}})),
            "req",
        )
        .unwrap();
        assert_eq!(from_query.query_param("write_key"), Some("k"));
        assert_eq!(from_query.query_param("x"), None);
        let from_url = http_request(
            &request(json!({"Url": "https://h/api/collect?a=&write_key=rmk_w_1#f", "Query": {}})),
            "req",
        )
        .unwrap();
        assert_eq!(from_url.query_param("write_key"), Some("rmk_w_1"));
        assert_eq!(from_url.query_param("a"), Some(""));
    }

    #[test]
    fn mismatched_metadata_is_refused() {
        let req: EventHubInvocation = serde_json::from_value(json!({
            "Data": {"events": ["{}", "{}"]},
            "Metadata": {
                "PartitionContext": {"EventHubName": "h", "PartitionId": "0"},
                "SequenceNumberArray": [1],
                "EnqueuedTimeUtcArray": ["2026-11-26T10:00:00", "2026-11-26T10:00:00"],
            }
        }))
        .unwrap();
        let err = event_hub_batch(req, "events").unwrap_err();
        assert!(err.0.contains("2 events but 1 sequence numbers"), "{err}");
    }
}
