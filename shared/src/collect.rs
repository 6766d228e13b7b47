//! collect's checks: what the `collect` function of every host (the Azure envelope route, the
//! Lambda HTTP route) accepts from trackers and servers before sending events on to the stream.
//!
//! Accepts one JSON object, a JSON array of objects, or NDJSON (one object per line). The
//! checks are deliberately light (shape, size, a `tenant_id` equal to the write key's tenant)
//! and all-or-nothing: a request with one bad element is refused whole with the element's
//! index, and nothing of it is sent. Full validation happens in ingest, where failures become
//! dead letters.

use crate::error::{Error, ErrorCode};
use crate::event::AD_SPEND;
use crate::json;
use serde_json::value::RawValue;
use serde_json::Value;

/// Limits of one collect request.
#[derive(Debug, Clone, Copy)]
pub struct CollectLimits {
    pub max_body_bytes: usize,
    pub max_events: usize,
    pub max_event_bytes: usize,
}

impl CollectLimits {
    pub fn from_settings(settings: &crate::Settings) -> Self {
        CollectLimits {
            max_body_bytes: settings.collect_max_body_bytes,
            max_events: settings.collect_max_events,
            max_event_bytes: settings.limits.max_event_bytes,
        }
    }
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
) -> Result<Vec<String>, Error> {
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if media.starts_with("multipart/") || media == "application/octet-stream" {
        return Err(Error::new(
            ErrorCode::UnsupportedMediaType,
            "send application/json, application/x-ndjson or text/plain",
        ));
    }
    if body.len() > limits.max_body_bytes {
        return Err(Error::new(
            ErrorCode::TooLarge,
            format!(
                "request body is larger than {} bytes",
                limits.max_body_bytes
            ),
        ));
    }
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return Err(Error::new(ErrorCode::EmptyBody, "no events in the request"));
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
        return Err(Error::new(ErrorCode::EmptyBody, "no events in the request"));
    }
    if elements.len() > limits.max_events {
        return Err(Error::new(
            ErrorCode::TooManyEvents,
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

fn ndjson(body: &str) -> Result<Vec<Box<RawValue>>, Error> {
    body.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line.trim())
                .map_err(|e| invalid_json(format!("line {} is not valid JSON: {e}", n + 1)))
        })
        .collect()
}

fn invalid_json(message: String) -> Error {
    Error::new(ErrorCode::InvalidJson, message)
}

fn check_event(
    index: usize,
    raw: &RawValue,
    max_bytes: usize,
    tenant: i64,
) -> Result<String, Error> {
    let text = raw.get();
    if text.len() > max_bytes {
        return Err(Error::new(
            ErrorCode::EventTooLarge,
            format!("event {index} is larger than {max_bytes} bytes"),
        ));
    }
    let value: Value = json::from_str(text).map_err(|e| {
        if json::is_duplicate_key(&e) {
            Error::new(
                ErrorCode::DuplicateField,
                format!("event {index}: an object repeats a key: {e}"),
            )
        } else {
            invalid_json(format!("event {index}: {e}"))
        }
    })?;
    let Value::Object(map) = value else {
        return Err(Error::new(
            ErrorCode::NotAnObject,
            format!("event {index} is not a JSON object"),
        ));
    };
    if map.get("event_type").and_then(Value::as_str) == Some(AD_SPEND) {
        // Write keys sit in web pages: anyone could rewrite a tenant's costs with one.
        return Err(Error::new(
            ErrorCode::SpendNotCollected,
            format!(
                "event {index}: ad_spend is not taken with a write key; send it through the \
                 stream or the admin spend upload"
            ),
        ));
    }
    match map.get("tenant_id") {
        None | Some(Value::Null) => Err(Error::new(
            ErrorCode::MissingTenantId,
            format!("event {index} has no tenant_id"),
        )),
        Some(v) if v.as_i64() == Some(tenant) => Ok(text.to_owned()),
        Some(v) if v.as_i64().is_some_and(|id| id > 0) => Err(Error::new(
            ErrorCode::WrongTenant,
            format!("event {index}: tenant_id is not the tenant of the write key"),
        )),
        Some(_) => Err(Error::new(
            ErrorCode::BadTenantId,
            format!("event {index}: tenant_id must be an integer greater than 0"),
        )),
    }
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
        accept(body, content_type, LIMITS, 1)
            .unwrap_err()
            .code
            .as_str()
    }

    #[test]
    fn spend_is_not_taken_with_a_write_key() {
        let body = r#"[{"tenant_id":1},{"tenant_id":1,"event_type":"ad_spend","cost":1}]"#;
        let e = accept(body, None, LIMITS, 1).unwrap_err();
        assert_eq!(e.code, ErrorCode::SpendNotCollected);
        assert!(e.message.starts_with("event 1:"), "{}", e.message);
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
        assert_eq!(
            code("{\"tenant_id\":1,\"tenant_id\":1}", None),
            "duplicate_field"
        );
        assert_eq!(
            code("{\"tenant_id\":1,\"p\":{\"a\":1,\"a\":2}}", None),
            "duplicate_field"
        );
        assert_eq!(code("{\"event_type\":\"x\"}", None), "missing_tenant_id");
        assert_eq!(code("{\"tenant_id\":\"1\"}", None), "bad_tenant_id");
        assert_eq!(code("{\"tenant_id\":0}", None), "bad_tenant_id");
        let err = accept("[{\"tenant_id\":1},{\"tenant_id\":2}]", None, LIMITS, 1).unwrap_err();
        assert_eq!(err.code, ErrorCode::WrongTenant);
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
