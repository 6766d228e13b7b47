//! `collect` under Azure: the HTTP request arrives wrapped in an invocation envelope (the
//! function has an Event Hubs output, so the host does not forward it), and the accepted events
//! leave as the `outEvents` output, one pre-serialized JSON string per array element (an array
//! of strings fans out to one hub event each; the host would write objects as indented JSON).
//!
//! The checks themselves are the core's ([`remarketable_core::collect`]); the write key is
//! verified by the API's [`remarketable_api::access::write_key_tenant`]. A refusal is still a
//! successful invocation: its HTTP answer travels in the `res` output.

use crate::envelope::{self, Envelope, InvocationResponse};
use crate::{AppState, COLLECT_OUTPUT_BINDING, COLLECT_REQUEST_BINDING, COLLECT_RESPONSE_BINDING};
use axum::extract::State;
use axum::Json;
use remarketable_api::{access, ApiError};
use remarketable_core::collect::{self, CollectLimits, WRITE_KEY_HEADER, WRITE_KEY_PARAM};
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
    let limits = CollectLimits::from_settings(state.settings());
    let key = http
        .header(WRITE_KEY_HEADER)
        .or_else(|| http.query_param(WRITE_KEY_PARAM));
    let accepted = match access::write_key_tenant(&state.api, key).await {
        Ok(tenant) => collect::accept(&http.body, http.header("content-type"), limits, tenant)
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
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
            outputs.insert(
                COLLECT_RESPONSE_BINDING.into(),
                envelope::http_response(e.status.as_u16(), &e.body()),
            );
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
