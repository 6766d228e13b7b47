//! `collect` under Azure: the HTTP request arrives wrapped in an invocation envelope (the
//! function has an Event Hubs output, so the host does not forward it), and the accepted events
//! leave as the `outEvents` output, one pre-serialized JSON string per array element (an array
//! of strings fans out to one hub event each; the host would write objects as indented JSON).
//!
//! Admission (write key, origins, rates, the core's checks, quotas) is the API's
//! [`remarketable_api::collect::admit`], as on every host. A refusal is still a successful
//! invocation: its HTTP answer (with `Retry-After` where it has one) travels in the `res` output.

use crate::envelope::{self, Envelope, InvocationResponse};
use crate::{AppState, COLLECT_OUTPUT_BINDING, COLLECT_REQUEST_BINDING, COLLECT_RESPONSE_BINDING};
use axum::extract::State;
use axum::Json;
use remarketable_api::collect::{self, CollectRequest};
use remarketable_api::ApiError;
use remarketable_core::collect::{WRITE_KEY_HEADER, WRITE_KEY_PARAM};
use remarketable_core::telemetry::{self, CollectOutcome, Event};
use serde_json::json;
use std::sync::Arc;

/// `POST /collect` (envelope mode: the host wraps the HTTP request and unwraps our `res`).
pub async fn collect(
    State(state): State<Arc<AppState>>,
    Envelope(request): Envelope,
) -> Result<Json<InvocationResponse>, ApiError> {
    let http = envelope::http_request(&request, COLLECT_REQUEST_BINDING)
        .map_err(envelope::bad_envelope)?;
    let request = CollectRequest {
        write_key: http
            .header(WRITE_KEY_HEADER)
            .or_else(|| http.query_param(WRITE_KEY_PARAM)),
        origin: http.header("origin"),
        referer: http.header("referer"),
        content_type: http.header("content-type"),
        body: &http.body,
    };
    // Once admitted, the events leave with this invocation's output: the host writes them to
    // the hub, or fails the invocation (and answers the client 500) without a way to tell us.
    let accepted = collect::admit(&state.api, request)
        .await
        .map(|admitted| admitted.events);
    let mut outputs = serde_json::Map::new();
    let outcome = match &accepted {
        Ok(events) => {
            outputs.insert(
                COLLECT_RESPONSE_BINDING.into(),
                envelope::http_response(202, &json!({"accepted": events.len()})),
            );
            outputs.insert(COLLECT_OUTPUT_BINDING.into(), json!(events));
            CollectOutcome::Accepted(events.len())
        }
        Err(e) => {
            outputs.insert(COLLECT_RESPONSE_BINDING.into(), envelope::http_error(e));
            CollectOutcome::Refused {
                code: e.code,
                message: &e.message,
            }
        }
    };
    outcome.emit();
    Ok(Json(InvocationResponse {
        outputs,
        logs: telemetry::lines(&outcome),
        return_value: None,
    }))
}
