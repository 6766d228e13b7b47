//! `collect`: events from trackers and servers, sent on to the hub.
//!
//! Accepts one JSON object, a JSON array of objects, or NDJSON (one object per line). A request
//! needs a tenant's write key (header `x-rmk-write-key`, or query `write_key` because
//! `navigator.sendBeacon` cannot set headers): 401 without a valid one, 403 for a key of another
//! kind. The checks are deliberately light (shape, size, a `tenant_id` equal to the key's tenant)
//! and all-or-nothing: a request with one bad element is refused whole with the element's index,
//! and nothing of it is sent. Full validation happens in `ingest`, where failures become dead
//! letters.
//!
//! Each accepted event goes to the Event Hubs output as its original JSON text, one string per
//! array element (an array of strings fans out to one hub event each; the host would otherwise
//! write objects as indented JSON).

use crate::access;
use crate::envelope::{self, InvocationResponse};
use crate::error::{ApiError, Envelope};
use crate::{AppState, COLLECT_OUTPUT_BINDING, COLLECT_REQUEST_BINDING, COLLECT_RESPONSE_BINDING};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::sync::Arc;

/// Limits of one collect request.
#[derive(Debug, Clone, Copy)]
pub struct CollectLimits {
    pub max_body_bytes: usize,
    pub max_events: usize,
    pub max_event_bytes: usize,
}

/// Header and query parameter that carry the write key.
pub const WRITE_KEY_HEADER: &str = "x-rmk-write-key";
pub const WRITE_KEY_PARAM: &str = "write_key";

/// Splits and checks a request body whose events must all be of `tenant` (the write key's);
/// answers the events' JSON texts.
pub fn accept(
    body: &str,
    content_type: Option<&str>,
    limits: CollectLimits,
    tenant: i64,
) -> Result<Vec<String>, ApiError> {
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if media.starts_with("multipart/") || media == "application/octet-stream" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/json, application/x-ndjson or text/plain",
        ));
    }
    if body.len() > limits.max_body_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "request body is larger than {} bytes",
                limits.max_body_bytes
            ),
        ));
    }
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty_body",
            "no events in the request",
        ));
    }
    let elements: Vec<Box<RawValue>> = if media == "application/x-ndjson"
        || !looks_like_single_json(trimmed)
    {
        ndjson(trimmed)?
    } else if trimmed.starts_with('[') {
        serde_json::from_str(trimmed).map_err(|e| invalid_json(format!("not a JSON array: {e}")))?
    } else {
        vec![serde_json::from_str(trimmed)
            .map_err(|e| invalid_json(format!("not valid JSON: {e}")))?]
    };
    if elements.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty_body",
            "no events in the request",
        ));
    }
    if elements.len() > limits.max_events {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_events",
            format!(
                "{} events in one request; the limit is {}",
                elements.len(),
                limits.max_events
            ),
        ));
    }
    elements
        .iter()
        .enumerate()
        .map(|(i, raw)| check_event(i, raw, limits.max_event_bytes, tenant))
        .collect()
}

/// A body is one JSON document unless it has several top-level lines (NDJSON).
fn looks_like_single_json(trimmed: &str) -> bool {
    serde_json::from_str::<&RawValue>(trimmed).is_ok()
}

fn ndjson(body: &str) -> Result<Vec<Box<RawValue>>, ApiError> {
    body.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line.trim())
                .map_err(|e| invalid_json(format!("line {} is not valid JSON: {e}", n + 1)))
        })
        .collect()
}

fn invalid_json(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", message)
}

fn check_event(
    index: usize,
    raw: &RawValue,
    max_bytes: usize,
    tenant: i64,
) -> Result<String, ApiError> {
    let text = raw.get();
    if text.len() > max_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "event_too_large",
            format!("event {index} is larger than {max_bytes} bytes"),
        ));
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| invalid_json(format!("event {index}: {e}")))?;
    let Value::Object(map) = value else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "not_an_object",
            format!("event {index} is not a JSON object"),
        ));
    };
    match map.get("tenant_id") {
        None | Some(Value::Null) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_tenant_id",
            format!("event {index} has no tenant_id"),
        )),
        Some(v) if v.as_i64() == Some(tenant) => Ok(text.to_owned()),
        Some(v) if v.as_i64().is_some_and(|id| id > 0) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_tenant",
            format!("event {index}: tenant_id is not the tenant of the write key"),
        )),
        Some(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_tenant_id",
            format!("event {index}: tenant_id must be an integer greater than 0"),
        )),
    }
}

/// `POST /collect` (envelope mode: the host wraps the HTTP request and unwraps our `res`).
pub async fn collect(
    State(state): State<Arc<AppState>>,
    Envelope(request): Envelope,
) -> Result<Json<InvocationResponse>, ApiError> {
    let http =
        envelope::http_request(&request, COLLECT_REQUEST_BINDING).map_err(ApiError::envelope)?;
    let limits = CollectLimits {
        max_body_bytes: state.settings.collect_max_body_bytes,
        max_events: state.settings.collect_max_events,
        max_event_bytes: state.settings.limits.max_event_bytes,
    };
    let key = http
        .header(WRITE_KEY_HEADER)
        .or_else(|| http.query_param(WRITE_KEY_PARAM));
    let accepted = match access::write_key_tenant(&state, key).await {
        Ok(tenant) => accept(&http.body, http.header("content-type"), limits, tenant),
        Err(e) => Err(e),
    };
    let mut outputs = serde_json::Map::new();
    let logs = match accepted {
        Ok(events) => {
            let n = events.len();
            outputs.insert(
                COLLECT_RESPONSE_BINDING.into(),
                envelope::http_response(202, &json!({"accepted": n})),
            );
            outputs.insert(COLLECT_OUTPUT_BINDING.into(), json!(events));
            vec![format!("accepted {n} events")]
        }
        Err(e) => {
            let log = format!("refused: {} ({})", e.code, e.message);
            outputs.insert(
                COLLECT_RESPONSE_BINDING.into(),
                envelope::http_response(e.status.as_u16(), &e.body()),
            );
            vec![log]
        }
    };
    Ok(Json(InvocationResponse {
        outputs,
        logs,
        return_value: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: CollectLimits = CollectLimits {
        max_body_bytes: 4096,
        max_events: 3,
        max_event_bytes: 200,
    };

    fn code(body: &str, content_type: Option<&str>) -> &'static str {
        accept(body, content_type, LIMITS, 1).unwrap_err().code
    }

    #[test]
    fn single_array_and_ndjson_forms() {
        let one = r#"{"tenant_id": 1, "event_type": "page_view"}"#;
        assert_eq!(accept(one, None, LIMITS, 1).unwrap(), vec![one.to_string()]);
        let arr = r#"[{"tenant_id":1},{"tenant_id":1,"x":2}]"#;
        assert_eq!(
            accept(arr, Some("application/json"), LIMITS, 1).unwrap(),
            vec![r#"{"tenant_id":1}"#, r#"{"tenant_id":1,"x":2}"#]
        );
        let nd = "{\"tenant_id\":1}\n\n{\"tenant_id\":1}\n";
        assert_eq!(
            accept(nd, Some("application/x-ndjson"), LIMITS, 1)
                .unwrap()
                .len(),
            2
        );
        // NDJSON is recognised without its content type too (sendBeacon sends text/plain).
        assert_eq!(
            accept(nd, Some("text/plain;charset=UTF-8"), LIMITS, 1)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn refusals_have_stable_codes() {
        assert_eq!(code("", None), "empty_body");
        assert_eq!(code("[]", None), "empty_body");
        assert_eq!(code("{nope", None), "invalid_json");
        assert_eq!(code("{\"tenant_id\":1}\nnope", None), "invalid_json");
        assert_eq!(code("[1]", None), "not_an_object");
        assert_eq!(code("{\"event_type\":\"x\"}", None), "missing_tenant_id");
        assert_eq!(code("{\"tenant_id\":\"1\"}", None), "bad_tenant_id");
        assert_eq!(code("{\"tenant_id\":0}", None), "bad_tenant_id");
        let err = accept("[{\"tenant_id\":1},{\"tenant_id\":2}]", None, LIMITS, 1).unwrap_err();
        assert_eq!(
            (err.status, err.code),
            (StatusCode::FORBIDDEN, "wrong_tenant")
        );
        assert!(err.message.starts_with("event 1:"), "{}", err.message);
        assert_eq!(
            code(
                "[{\"tenant_id\":1},{\"tenant_id\":1},{\"tenant_id\":1},{\"tenant_id\":1}]",
                None
            ),
            "too_many_events"
        );
        assert_eq!(
            code(
                &format!("{{\"tenant_id\":1,\"x\":\"{}\"}}", "a".repeat(300)),
                None
            ),
            "event_too_large"
        );
        assert_eq!(code(&" ".repeat(5000), None), "too_large");
        assert_eq!(
            code("{}", Some("application/octet-stream")),
            "unsupported_media_type"
        );
    }
}
