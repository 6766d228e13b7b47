//! Invocation envelopes in the shapes the Functions host sends (see `tests/fixtures/`), and the
//! handler's `{"Outputs", "Logs", "ReturnValue"}` answer.

use crate::hub::StoredEvent;
use chrono::{DateTime, DurationRound, SecondsFormat, TimeDelta, Utc};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

/// Strings for arrays and objects in Metadata, as the host sends them by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Double,
    Plain,
}

impl Encoding {
    /// Applies the encoding to a structured value (strings are left alone).
    fn wrap(self, value: Value) -> Value {
        match self {
            Encoding::Double => Value::String(value.to_string()),
            Encoding::Plain => value,
        }
    }
}

/// `Metadata.sys`.
pub fn sys(method: &str) -> Value {
    json!({
        "MethodName": method,
        "UtcNow": Utc::now().to_rfc3339_opts(SecondsFormat::AutoSi, true),
        "RandGuid": rand_guid(),
    })
}

/// A random version-4 GUID from the standard library's per-instance random hash keys.
fn rand_guid() -> String {
    let mut hi = std::collections::hash_map::RandomState::new().build_hasher();
    hi.write_u64(1);
    let mut lo = std::collections::hash_map::RandomState::new().build_hasher();
    lo.write_u64(2);
    let a = hi.finish();
    let b = lo.finish();
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x4000; // version 4
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000; // RFC 4122 variant
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// Which partition a batch came from.
#[derive(Debug, Clone)]
pub struct PartitionInfo {
    pub namespace: String,
    pub hub: String,
    pub consumer_group: String,
    pub partition: u32,
}

/// `Metadata.RetryContext` of a redelivered batch or rerun.
#[derive(Debug, Clone)]
pub struct RetryInfo {
    pub retry_count: i64,
    pub max_retry_count: i64,
    pub error: String,
}

/// An enqueued time as the hub keeps it: to the millisecond. Every caller gets the same
/// precision, whatever clock its times came from.
fn enqueued_millis(t: &DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::milliseconds(1)).unwrap_or(*t)
}

/// Enqueued times without the `Z`, as the host writes them: a whole second has no fraction
/// (`10:00:03`, see the fixtures), otherwise milliseconds.
fn enqueued_text(t: &DateTime<Utc>) -> String {
    enqueued_millis(t)
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S%.f")
        .to_string()
}

/// The `POST /<function>` body for an Event Hubs batch (`cardinality: many`).
pub fn event_hub(
    function: &str,
    binding: &str,
    events: &[Arc<StoredEvent>],
    partition: &PartitionInfo,
    retry: Option<&RetryInfo>,
    encoding: Encoding,
) -> Value {
    let bodies: Vec<&str> = events.iter().map(|e| e.body.as_str()).collect();
    let system: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "x-opt-sequence-number": e.seq,
                "x-opt-offset": e.offset.to_string(),
                "x-opt-enqueued-time": enqueued_millis(&e.enqueued).to_rfc3339_opts(SecondsFormat::AutoSi, true),
                "SequenceNumber": e.seq,
                "Offset": e.offset.to_string(),
                "PartitionKey": e.key,
                "EnqueuedTimeUtc": enqueued_text(&e.enqueued),
            })
        })
        .collect();
    let mut metadata = Map::new();
    metadata.insert(
        "PartitionContext".into(),
        encoding.wrap(json!({
            "FullyQualifiedNamespace": partition.namespace,
            "EventHubName": partition.hub,
            "ConsumerGroup": partition.consumer_group,
            "PartitionId": partition.partition.to_string(),
            "IsCheckpointingAfterInvocation": true,
        })),
    );
    let column = |f: &dyn Fn(&StoredEvent) -> Value| -> Value {
        encoding.wrap(Value::Array(events.iter().map(|e| f(e)).collect()))
    };
    metadata.insert("SequenceNumberArray".into(), column(&|e| json!(e.seq)));
    metadata.insert(
        "OffsetArray".into(),
        column(&|e| json!(e.offset.to_string())),
    );
    metadata.insert(
        "EnqueuedTimeUtcArray".into(),
        column(&|e| json!(enqueued_text(&e.enqueued))),
    );
    metadata.insert("PartitionKeyArray".into(), column(&|e| json!(e.key)));
    metadata.insert("PropertiesArray".into(), column(&|_| json!({})));
    metadata.insert(
        "SystemPropertiesArray".into(),
        encoding.wrap(Value::Array(system)),
    );
    if let Some(r) = retry {
        metadata.insert("RetryContext".into(), encoding.wrap(retry_context(r)));
    }
    metadata.insert("sys".into(), sys(function));
    json!({
        "Data": { binding: encoding.wrap(json!(bodies)) },
        "Metadata": metadata,
    })
}

fn retry_context(r: &RetryInfo) -> Value {
    json!({
        "RetryCount": r.retry_count,
        "MaxRetryCount": r.max_retry_count,
        "Exception": { "Source": "devhost", "Message": r.error },
    })
}

/// Timer status as stored between runs and shown in `ScheduleStatus`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleStatus {
    pub last: DateTime<Utc>,
    pub next: DateTime<Utc>,
    pub last_updated: DateTime<Utc>,
}

/// The `POST /<function>` body for a timer run.
pub fn timer(
    function: &str,
    binding: &str,
    status: &ScheduleStatus,
    past_due: bool,
    retry: Option<&RetryInfo>,
) -> Value {
    let text = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, false);
    let mut metadata = Map::new();
    if let Some(r) = retry {
        metadata.insert("RetryContext".into(), retry_context(r));
    }
    metadata.insert("sys".into(), sys(function));
    json!({
        "Data": { binding: {
            "Schedule": { "AdjustForDST": true },
            "ScheduleStatus": {
                "Last": text(&status.last),
                "Next": text(&status.next),
                "LastUpdated": text(&status.last_updated),
            },
            "IsPastDue": past_due,
        }},
        "Metadata": metadata,
    })
}

/// An HTTP request as the envelope needs it.
#[derive(Debug, Clone, Default)]
pub struct HttpRequestInfo {
    pub url: String,
    pub method: String,
    pub query: Vec<(String, String)>,
    /// Header names as received (lower case from hyper), values in order.
    pub headers: Vec<(String, String)>,
    pub params: BTreeMap<String, String>,
    pub body: String,
}

/// The `POST /<function>` body for an HTTP trigger in envelope mode.
pub fn http(function: &str, binding: &str, req: &HttpRequestInfo) -> Value {
    let mut query = Map::new();
    for (k, v) in &req.query {
        query.insert(k.clone(), Value::String(v.clone()));
    }
    let mut headers: Map<String, Value> = Map::new();
    let mut first_values = Map::new();
    for (name, value) in &req.headers {
        let name = title_case(name);
        match headers.entry(name.clone()).or_insert_with(|| json!([])) {
            Value::Array(values) => values.push(Value::String(value.clone())),
            _ => unreachable!("header entries are arrays"),
        }
        first_values
            .entry(name)
            .or_insert_with(|| Value::String(value.clone()));
    }
    json!({
        "Data": { binding: {
            "Url": req.url,
            "Method": req.method,
            "Query": query,
            "Headers": headers,
            "Params": req.params,
            "Identities": [],
            "Body": req.body,
        }},
        "Metadata": {
            "Query": query,
            "Headers": first_values,
            "sys": sys(function),
        },
    })
}

/// `content-type` -> `Content-Type`, the form the host shows.
fn title_case(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(c) => {
                    c.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
                }
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// A successful handler answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InvocationResult {
    pub outputs: Map<String, Value>,
    pub logs: Vec<String>,
    pub return_value: Option<Value>,
}

/// Applies the host's rule: non-2xx, or a body that is not a JSON object, fails the invocation.
pub fn parse_response(status: u16, body: &[u8]) -> Result<InvocationResult, String> {
    if !(200..300).contains(&status) {
        let snippet = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        return Err(format!("handler answered {status}: {snippet}"));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| format!("handler answered {status} with a body that is not JSON: {e}"))?;
    let Value::Object(mut map) = value else {
        return Err(format!(
            "handler answered {status} with JSON that is not an object"
        ));
    };
    let outputs = match map.remove("Outputs") {
        Some(Value::Object(o)) => o,
        _ => Map::new(),
    };
    let logs = match map.remove("Logs") {
        Some(Value::Array(lines)) => lines
            .into_iter()
            .map(|l| match l {
                Value::String(s) => s,
                other => other.to_string(),
            })
            .collect(),
        _ => Vec::new(),
    };
    let return_value = map.remove("ReturnValue").filter(|v| !v.is_null());
    Ok(InvocationResult {
        outputs,
        logs,
        return_value,
    })
}

/// The events an Event Hubs output value stands for: one per array element; strings as they
/// are, anything else as indented JSON (what the host does with objects).
pub fn output_events(value: &Value) -> Vec<String> {
    let one = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    };
    match value {
        Value::Null => Vec::new(),
        Value::Array(items) => items.iter().map(one).collect(),
        other => vec![one(other)],
    }
}

/// The HTTP response in `Outputs.res` (an object, or a string holding one).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpOutput {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub fn http_output(value: Option<&Value>) -> Result<HttpOutput, String> {
    let parsed;
    let value = match value {
        None | Some(Value::Null) => {
            return Ok(HttpOutput {
                status: 204,
                headers: Vec::new(),
                body: Vec::new(),
            })
        }
        Some(Value::String(s)) => {
            parsed = serde_json::from_str::<Value>(s)
                .map_err(|_| "the http output is a string, not a response object".to_string())?;
            &parsed
        }
        Some(v) => v,
    };
    let object = value
        .as_object()
        .ok_or("the http output is not an object")?;
    let field = |name: &str| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    };
    let status = match field("statusCode") {
        None | Some(Value::Null) => 200,
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(_) => 0,
    };
    if !(100..=599).contains(&status) {
        return Err(format!(
            "the http output has an invalid statusCode {:?}",
            field("statusCode")
        ));
    }
    let headers = match field("headers") {
        Some(Value::Object(h)) => h
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), text)
            })
            .collect(),
        _ => Vec::new(),
    };
    let body = match field("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(other) => other.to_string().into_bytes(),
    };
    Ok(HttpOutput {
        status: status as u16,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_look_like_guids_and_differ() {
        let a = rand_guid();
        let b = rand_guid();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn handler_answers() {
        let ok = parse_response(
            200,
            br#"{"Outputs":{"res":{"statusCode":201}},"Logs":["a"],"ReturnValue":null}"#,
        )
        .unwrap();
        assert_eq!(ok.logs, vec!["a"]);
        assert!(ok.return_value.is_none());
        assert!(ok.outputs.contains_key("res"));
        assert!(parse_response(500, b"{}").unwrap_err().contains("500"));
        assert!(parse_response(200, b"ready")
            .unwrap_err()
            .contains("not JSON"));
        assert!(parse_response(200, b"[1]").is_err());
    }

    #[test]
    fn output_values() {
        assert_eq!(
            output_events(&json!(["{\"a\":1}", "x"])),
            vec!["{\"a\":1}", "x"]
        );
        assert_eq!(output_events(&json!([{"a": 1}])), vec!["{\n  \"a\": 1\n}"]);
        assert_eq!(output_events(&json!("one")), vec!["one"]);
        assert!(output_events(&Value::Null).is_empty());
        let res = http_output(Some(
            &json!({"statusCode": "202", "headers": {"x": "y"}, "body": "ok"}),
        ))
        .unwrap();
        assert_eq!((res.status, res.body.as_slice()), (202, b"ok".as_slice()));
        assert_eq!(res.headers, vec![("x".to_string(), "y".to_string())]);
        assert_eq!(http_output(None).unwrap().status, 204);
        assert!(http_output(Some(&json!({"statusCode": 99}))).is_err());
    }

    #[test]
    fn header_names_are_title_cased() {
        assert_eq!(title_case("content-type"), "Content-Type");
        assert_eq!(title_case("x-forwarded-for"), "X-Forwarded-For");
    }
}
