//! The HTTP front: function routes under the route prefix, and devhost's own admin endpoints.
//!
//! - `POST /admin/hubs/{hub}/events` — produce events (JSON array or NDJSON); 202 once durable.
//! - `GET /admin/status` — hubs, consumers, functions, handler restarts.
//! - everything else — HTTP-triggered functions, forwarded or in envelope mode.

use crate::app::{
    AuthLevel, FunctionDef, Output, Trigger, FUNCTION_KEY_SETTING, MASTER_KEY_SETTING,
};
use crate::ctx::Ctx;
use crate::envelope::{self, HttpRequestInfo};
use crate::hub::Target;
use crate::invoke::{invoke, Outcome};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// Largest producer request.
pub const PRODUCE_LIMIT: usize = 16 << 20;
/// Largest function request (the host's own limit is 100 MB).
pub const FUNCTION_LIMIT: usize = 100 << 20;

/// An error answer: `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

/// The router devhost serves.
pub fn app(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/admin/status", get(status))
        .route("/admin/hubs/{hub}/events", post(produce))
        .fallback(dispatch)
        .with_state(ctx)
}

async fn status(State(ctx): State<Arc<Ctx>>) -> Json<Value> {
    Json(crate::ctx::status_json(&ctx))
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is larger than {limit} bytes"),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("cannot read the body: {e}"),
            )
        }
    })
}

async fn produce(
    State(ctx): State<Arc<Ctx>>,
    Path(hub_name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let hub = ctx.hubs.get(&hub_name).ok_or_else(|| {
        let known: Vec<&str> = ctx.hubs.keys().map(String::as_str).collect();
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_hub",
            format!("no hub {hub_name:?}; hubs: {known:?}"),
        )
    })?;
    let target = match (query.get("partitionKey"), query.get("partition")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_target",
                "give partitionKey or partition, not both",
            ))
        }
        (Some(key), None) => Target::Key(key.clone()),
        (None, Some(p)) => match p.parse::<u32>() {
            Ok(n) if (n as usize) < hub.partitions.len() => Target::Partition(n),
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_partition",
                    format!("partition must be 0..{}", hub.partitions.len()),
                ))
            }
        },
        (None, None) => Target::RoundRobin,
    };
    let bytes = read_body(body, PRODUCE_LIMIT).await?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "not_utf8", "the body is not UTF-8"))?;
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-ndjson"));
    let events = if ndjson {
        ndjson_events(text)
    } else {
        json_events(text)?
    };
    if events.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "no_events",
            "the request holds no events",
        ));
    }
    let accepted = hub.append(events, target).await.map_err(|e| {
        tracing::error!(hub = %hub_name, error = %e, "append failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "not_stored",
            "the events could not be stored durably",
        )
    })?;
    Ok((StatusCode::ACCEPTED, Json(json!({"accepted": accepted}))).into_response())
}

/// Each non-blank line is one event, exactly as written (malformed JSON included).
pub fn ndjson_events(text: &str) -> Vec<String> {
    text.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect()
}

/// A JSON array: strings are sent as they are, anything else as its compact JSON text.
pub fn json_events(text: &str) -> Result<Vec<String>, ApiError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("not valid JSON: {e}"),
        )
    })?;
    let Value::Array(items) = value else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "not_an_array",
            "send a JSON array of events, or NDJSON with Content-Type: application/x-ndjson",
        ));
    };
    Ok(items
        .into_iter()
        .map(|v| match v {
            Value::String(s) => s,
            other => other.to_string(),
        })
        .collect())
}

/// Finds the function for a request path and method.
enum RouteMatch<'a> {
    Found(&'a FunctionDef, std::collections::BTreeMap<String, String>),
    WrongMethod,
    NotFound,
}

fn find_route<'a>(ctx: &'a Ctx, path: &str, method: &Method) -> RouteMatch<'a> {
    let prefix = &ctx.app.host.route_prefix;
    let relative = if prefix.is_empty() {
        Some(path)
    } else {
        strip_prefix_ci(path, prefix)
    };
    let Some(relative) = relative else {
        return RouteMatch::NotFound;
    };
    let mut wrong_method = false;
    for function in &ctx.http_functions {
        let Trigger::Http { route, methods, .. } = &function.trigger else {
            continue;
        };
        let Some(params) = route.matches(relative) else {
            continue;
        };
        if methods.is_empty() || methods.iter().any(|m| m == method.as_str()) {
            return RouteMatch::Found(function, params);
        }
        wrong_method = true;
    }
    if wrong_method {
        RouteMatch::WrongMethod
    } else {
        RouteMatch::NotFound
    }
}

/// `/api/x` with prefix `api` -> `/x`; `None` when the path is outside the prefix.
fn strip_prefix_ci<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    let rest = path.strip_prefix('/')?;
    let head = rest.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let tail = &rest[prefix.len()..];
    (tail.is_empty() || tail.starts_with('/')).then_some(tail)
}

async fn dispatch(State(ctx): State<Arc<Ctx>>, request: Request<Body>) -> Response {
    let path = request.uri().path().to_string();
    let (function, params) = match find_route(&ctx, &path, request.method()) {
        RouteMatch::Found(f, p) => (f, p),
        RouteMatch::WrongMethod => {
            return ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
            .into_response()
        }
        RouteMatch::NotFound => {
            return ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no function serves this path",
            )
            .into_response()
        }
    };
    if let Err(e) = authorize(&ctx, function, &request) {
        return e.into_response();
    }
    let result = if function.forwarded {
        forward(&ctx, function, request).await
    } else {
        envelope_mode(&ctx, function, params, request).await
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `authLevel`: key from `x-functions-key` or `?code=`; the master key opens everything.
fn authorize(ctx: &Ctx, function: &FunctionDef, request: &Request<Body>) -> Result<(), ApiError> {
    let Trigger::Http { auth, .. } = &function.trigger else {
        return Ok(());
    };
    let allowed: Vec<&str> = match auth {
        AuthLevel::Anonymous => return Ok(()),
        AuthLevel::Function => [FUNCTION_KEY_SETTING, MASTER_KEY_SETTING].to_vec(),
        AuthLevel::Admin => [MASTER_KEY_SETTING].to_vec(),
    };
    let given = request
        .headers()
        .get("x-functions-key")
        .and_then(|v| v.to_str().ok())
        .map(String::from)
        .or_else(|| {
            query_pairs(request.uri().query())
                .into_iter()
                .find(|(k, _)| k == "code")
                .map(|(_, v)| v)
        });
    let ok = given.is_some_and(|key| {
        allowed
            .iter()
            .filter_map(|setting| ctx.app.values.get(*setting))
            .any(|expected| !expected.is_empty() && same(expected.as_bytes(), key.as_bytes()))
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid function key is required (x-functions-key header or code query parameter)",
        ))
    }
}

/// Compares keys without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    for name in HOP_BY_HOP {
        out.remove(name);
    }
    out.remove(header::CONTENT_LENGTH);
    out
}

/// Forwarding: the original request to the original path; the answer comes back as is.
async fn forward(
    ctx: &Ctx,
    function: &FunctionDef,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let body = read_body(body, FUNCTION_LIMIT).await?;
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    match ctx
        .handler
        .call(
            parts.method.clone(),
            path_and_query,
            end_to_end(&parts.headers),
            body,
        )
        .await
    {
        Ok(answer) => {
            // The handler's own 500 is its answer, not a failed invocation.
            ctx.stats.invocation(&function.name, None);
            let mut response = Response::new(Body::from(answer.body));
            *response.status_mut() = answer.status;
            *response.headers_mut() = end_to_end(&answer.headers);
            Ok(response)
        }
        Err(e) => {
            ctx.stats.invocation(&function.name, Some(e.to_string()));
            tracing::warn!(function = %function.name, error = %e, "forwarded request failed");
            Err(invocation_failed(function))
        }
    }
}

fn invocation_failed(function: &FunctionDef) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "invocation_failed",
        format!("function {} failed; see the devhost output", function.name),
    )
}

/// Envelope mode: `POST /<function>` with `Data.req`, answer from the http output.
async fn envelope_mode(
    ctx: &Ctx,
    function: &FunctionDef,
    params: std::collections::BTreeMap<String, String>,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    let Trigger::Http { name: binding, .. } = &function.trigger else {
        return Err(invocation_failed(function));
    };
    let (parts, body) = request.into_parts();
    let body = read_body(body, FUNCTION_LIMIT).await?;
    let info = request_info(ctx, &parts, params, &body);
    let envelope = envelope::http(&function.name, binding, &info);
    let result = match invoke(ctx, function, &envelope).await {
        Outcome::Done(r) => r,
        Outcome::Failed(e) | Outcome::CutOff { reason: e, .. } => {
            ctx.stats.invocation(&function.name, Some(e.clone()));
            tracing::warn!(function = %function.name, error = %e, "invocation failed");
            return Err(invocation_failed(function));
        }
        Outcome::Shutdown => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "devhost is stopping",
            ))
        }
    };
    let output_name = function.outputs.iter().find_map(|o| match o {
        Output::Http { name } => Some(name.as_str()),
        _ => None,
    });
    let value = match output_name {
        Some("$return") => result.return_value.as_ref(),
        Some(name) => result.outputs.get(name),
        None => None,
    };
    let answer = match envelope::http_output(value) {
        Ok(a) => a,
        Err(e) => {
            ctx.stats.invocation(&function.name, Some(e.clone()));
            tracing::warn!(function = %function.name, error = %e, "bad http output");
            return Err(invocation_failed(function));
        }
    };
    ctx.stats.invocation(&function.name, None);
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    for (name, value) in answer.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            header::HeaderValue::try_from(value.as_str()),
        ) {
            response.headers_mut().append(n, v);
        }
    }
    Ok(response)
}

fn request_info(
    ctx: &Ctx,
    parts: &axum::http::request::Parts,
    params: std::collections::BTreeMap<String, String>,
    body: &[u8],
) -> HttpRequestInfo {
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| ctx.addr.to_string(), String::from);
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let media = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    // Binary bodies travel as base64, like the host does for these media types.
    let binary = media.starts_with("application/octet-stream") || media.starts_with("multipart/");
    let body = if binary {
        base64::engine::general_purpose::STANDARD.encode(body)
    } else {
        String::from_utf8_lossy(body).into_owned()
    };
    HttpRequestInfo {
        url: format!("http://{host}{path_and_query}"),
        method: parts.method.as_str().to_string(),
        query: query_pairs(parts.uri.query()),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        params,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_keeps_lines_verbatim() {
        let events = ndjson_events("{\"a\":1}\r\n\n  \n{\"broken\": \n{\"b\":2}");
        assert_eq!(events, vec!["{\"a\":1}", "{\"broken\": ", "{\"b\":2}"]);
    }

    #[test]
    fn json_arrays_of_objects_and_strings() {
        let events = json_events(r#"[{"a": 1, "b": [1, 2]}, "raw text", 5]"#).unwrap();
        assert_eq!(events, vec![r#"{"a":1,"b":[1,2]}"#, "raw text", "5"]);
        assert_eq!(json_events(r#"{"a":1}"#).unwrap_err().code, "not_an_array");
        assert_eq!(json_events("[1,").unwrap_err().code, "bad_json");
    }

    #[test]
    fn prefixes() {
        assert_eq!(strip_prefix_ci("/api/collect", "api"), Some("/collect"));
        assert_eq!(strip_prefix_ci("/API", "api"), Some(""));
        assert_eq!(strip_prefix_ci("/apix/collect", "api"), None);
        assert_eq!(strip_prefix_ci("/collect", "api"), None);
    }

    #[test]
    fn key_comparison() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }
}
