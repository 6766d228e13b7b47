//! The `http` role: API Gateway HTTP API (payload v2, `$default` or named stages) and Function
//! URLs through `lambda_http`, serving the host-agnostic API router, plus `POST /api/collect`
//! publishing to Kinesis when `COLLECT_KINESIS_STREAM` is set.
//!
//! Around the router:
//! - a named stage is removed from the front of the path (`lambda_http` puts it there; the
//!   router's routes have none);
//! - `Accept-Encoding` is dropped, so nothing is compressed (compressed bodies behind Function
//!   URLs are reported broken, and every non-text body goes base64 anyway);
//! - a response larger than Lambda's 6 MB buffered limit is replaced by a JSON 413
//!   `too_large` that says so, instead of the opaque failure Lambda would give.

use crate::kinesis::{self, Publisher};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Response, Uri};
use axum::routing::post;
use axum::Router;
use http_body_util::BodyExt;
use lambda_http::request::RequestContext;
use lambda_http::RequestExt;
use remarketable_api::collect::{self, CollectRequest};
use remarketable_api::{ApiError, ApiState};
use remarketable_core::collect::{WRITE_KEY_HEADER, WRITE_KEY_PARAM};
use remarketable_core::telemetry::{CollectOutcome, Event};
use remarketable_core::ErrorCode;
use std::sync::Arc;
use tower::ServiceExt;

/// Lambda's limit on a buffered response payload, with room for the envelope and headers.
pub const RESPONSE_LIMIT_BYTES: usize = 6 * 1024 * 1024 - 64 * 1024;

/// The router served on AWS: the API, and collect when a stream is configured. Trigger routes
/// (`/ingest`, timers) are never part of it.
pub fn app(api: Arc<ApiState>, publisher: Option<Arc<Publisher>>) -> Router {
    let mut routes = remarketable_api::routes(api.clone());
    if let Some(publisher) = publisher {
        let limit = api.settings.collect_max_body_bytes;
        routes = routes.merge(
            Router::new()
                .route("/api/collect", post(collect))
                .layer(axum::extract::DefaultBodyLimit::max(limit + 1))
                .with_state(CollectState {
                    api: api.clone(),
                    publisher,
                }),
        );
    }
    remarketable_api::finish(routes, &api.settings)
}

#[derive(Clone)]
struct CollectState {
    api: Arc<ApiState>,
    publisher: Arc<Publisher>,
}

/// `POST /api/collect`: the write key, the core's checks, then `PutRecords`; 202 only once
/// every accepted event is in the stream.
async fn collect(
    State(state): State<CollectState>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Result<Response<Body>, ApiError> {
    let key = headers
        .get(WRITE_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query_param(&uri, WRITE_KEY_PARAM));
    let header_of = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let request = CollectRequest {
        write_key: key.as_deref(),
        origin: header_of(header::ORIGIN),
        referer: header_of(header::REFERER),
        content_type: header_of(header::CONTENT_TYPE),
        body: &body,
    };
    let result = async {
        let admitted = collect::admit(&state.api, request).await?;
        if let Err(e) = state.publisher.publish(&admitted.events).await {
            collect::not_sent(&state.api, admitted);
            return Err(kinesis::refusal(e));
        }
        Ok::<usize, ApiError>(admitted.events.len())
    }
    .await;
    let outcome = match &result {
        Ok(n) => CollectOutcome::Accepted(*n),
        Err(e) => CollectOutcome::Refused {
            code: e.code,
            message: &e.message,
        },
    };
    outcome.emit();
    let accepted = result?;
    Ok(Response::builder()
        .status(202)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            serde_json::json!({ "accepted": accepted }).to_string(),
        ))
        .expect("a static response"))
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| v.to_string())
    })
}

/// The path without a named stage's prefix (`/prod/api/v1/…` → `/api/v1/…`).
pub fn strip_stage(path: &str, stage: Option<&str>) -> String {
    match stage {
        None | Some("$default") | Some("") => path.to_string(),
        Some(stage) => {
            let prefix = format!("/{stage}");
            match path.strip_prefix(&prefix) {
                Some("") => "/".to_string(),
                Some(rest) if rest.starts_with('/') => rest.to_string(),
                _ => path.to_string(),
            }
        }
    }
}

/// Serves one `lambda_http` request through `router`.
pub async fn serve(
    router: Router,
    request: lambda_http::Request,
) -> Result<Response<Body>, lambda_http::Error> {
    let stage = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.stage.clone(),
        _ => None,
    };
    let (mut parts, body) = request.into_parts();
    let path = strip_stage(parts.uri.path(), stage.as_deref());
    if path != parts.uri.path() {
        let mut uri = path;
        if let Some(q) = parts.uri.query() {
            uri.push('?');
            uri.push_str(q);
        }
        parts.uri = uri.parse()?;
    }
    parts.headers.remove(header::ACCEPT_ENCODING);
    let body = match body {
        lambda_http::Body::Empty => Body::empty(),
        lambda_http::Body::Text(t) => Body::from(t),
        lambda_http::Body::Binary(b) => Body::from(b),
        _ => Body::empty(),
    };
    let response = router.oneshot(Request::from_parts(parts, body)).await?;
    Ok(within_limit(response).await)
}

/// Whether lambda_http sends a body of this type as text (else base64, a third larger).
fn is_text(headers: &HeaderMap) -> bool {
    if headers.contains_key(header::CONTENT_ENCODING) {
        return false;
    }
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return true;
    };
    let ct = ct.to_ascii_lowercase();
    ct.starts_with("text/")
        || ct.starts_with("application/json")
        || ct.starts_with("application/javascript")
        || ct.starts_with("application/xml")
        || ct.contains("+json")
        || ct.contains("+xml")
}

/// Buffers the response (Lambda buffers it anyway) and refuses it clearly when it is over
/// [`RESPONSE_LIMIT_BYTES`] as sent.
pub async fn within_limit(response: Response<Body>) -> Response<Body> {
    let (parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return axum::response::IntoResponse::into_response(ApiError::new(
                ErrorCode::InternalError,
                "the response could not be produced; see the service log",
            ))
        }
    };
    let sent = if is_text(&parts.headers) {
        bytes.len()
    } else {
        bytes.len().div_ceil(3) * 4
    };
    if sent > RESPONSE_LIMIT_BYTES {
        tracing::warn!(
            bytes = sent,
            "response over Lambda's buffered limit refused"
        );
        return axum::response::IntoResponse::into_response(ApiError::new(
            ErrorCode::TooLarge,
            format!(
                "the response would be {sent} bytes, over the {RESPONSE_LIMIT_BYTES} bytes \
                 AWS Lambda can return; ask for less (a shorter range, a lower limit, fewer \
                 filters combined)"
            ),
        ));
    }
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_only_a_named_stage() {
        assert_eq!(strip_stage("/prod/api/v1/x", Some("prod")), "/api/v1/x");
        assert_eq!(strip_stage("/prod", Some("prod")), "/");
        assert_eq!(strip_stage("/api/v1/x", Some("$default")), "/api/v1/x");
        assert_eq!(strip_stage("/api/v1/x", None), "/api/v1/x");
        // A path that only starts with the stage's letters keeps them.
        assert_eq!(strip_stage("/production/x", Some("prod")), "/production/x");
    }

    #[tokio::test]
    async fn refuses_a_response_over_the_limit() {
        let big = Response::builder()
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Body::from(vec![0u8; RESPONSE_LIMIT_BYTES * 3 / 4 + 10]))
            .unwrap();
        let answered = within_limit(big).await;
        assert_eq!(answered.status(), 413);
        let body = answered.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "too_large");

        let fits = Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(vec![b' '; RESPONSE_LIMIT_BYTES]))
            .unwrap();
        assert_eq!(within_limit(fits).await.status(), 200);
    }
}
