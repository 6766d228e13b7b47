//! The Azure Functions custom handler: the invocation routes of the app's triggers, merged
//! with the host-agnostic API router ([`remarketable_api`]).
//!
//! | route | function | trigger |
//! |---|---|---|
//! | `GET /` | readiness probe of the host | never touches the database |
//! | `POST /ingest` | `ingest` | Event Hubs, `cardinality: many` |
//! | `POST /collect` | `collect` | HTTP in (envelope mode) + Event Hubs out |
//! | `POST /rollup` | `rollup` | timer |
//! | `POST /maintenance` | `maintenance` | timer |
//! | `/api/v1/…`, `/api/dashboard/…` | `reports`, `dashboard` | HTTP, forwarded ([`remarketable_api`]) |
//!
//! Invocations answer 200 with `Outputs`/`Logs` only after their work is durable; any failure
//! answers non-2xx with `{"error": {"code", "message"}}` so the host fails the invocation (and,
//! for `ingest`, its retry policy holds the checkpoint back).

pub mod collect;
pub mod envelope;
pub mod serve;

pub use remarketable_api::{dashboard, openapi};

use crate::envelope::{Envelope, InvocationResponse};
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use remarketable_api::{ApiError, ApiState, HasApi, LazyDb};
use remarketable_core::telemetry::{self, BatchIngested, Event, MaintenanceDone, RollupsAdvanced};
use remarketable_core::{jobs, Ingestor, Settings};
use std::sync::Arc;
use std::time::Instant;

/// Binding names, as in `functions/*/function.json` (checked by a test).
pub const INGEST_BINDING: &str = "events";
pub const COLLECT_REQUEST_BINDING: &str = "req";
pub const COLLECT_RESPONSE_BINDING: &str = "res";
pub const COLLECT_OUTPUT_BINDING: &str = "outEvents";

/// Shared by every request; built once at start-up.
pub struct AppState {
    /// The HTTP API's state (settings, pool, credential verifier), shared with the triggers.
    pub api: Arc<ApiState>,
    pub ingestor: Ingestor,
}

impl HasApi for AppState {
    fn api(&self) -> &ApiState {
        &self.api
    }
}

impl AppState {
    /// Builds the state without touching the database (the pool connects on first use).
    pub fn new(settings: Settings) -> Self {
        let ingestor = Ingestor::new(settings.limits.clone(), settings.tenant_cache_ttl);
        AppState {
            api: Arc::new(ApiState::new(settings)),
            ingestor,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.api.settings
    }
}

/// The one router served under Azure (`axum::serve`) and in tests (`oneshot`).
pub fn app(state: Arc<AppState>) -> Router {
    // The collect envelope carries the request body JSON-encoded once more: escaping can grow
    // it several-fold, and the exact body limit is checked after decoding.
    let collect_envelope_limit = state.settings().collect_max_body_bytes * 8 + (64 << 10);
    let invocations = Router::new()
        .route("/", get(ready))
        .route(
            "/ingest",
            // No limit: only the host reaches this route, its batches are bounded by
            // maxEventBatchSize and the hub's event size, and a refused batch would be
            // redelivered forever. Oversized events become `too_large` dead letters instead.
            post(ingest).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/collect",
            post(collect::collect).layer(DefaultBodyLimit::max(collect_envelope_limit)),
        )
        .route("/rollup", post(rollup))
        .route("/maintenance", post(maintenance))
        .with_state(state.clone());
    remarketable_api::finish(
        invocations.merge(remarketable_api::routes(state.api.clone())),
        &state.api.settings,
    )
}

async fn ready() -> &'static str {
    "ready"
}

fn answer(logs: Vec<String>, return_value: serde_json::Value) -> Json<InvocationResponse> {
    Json(InvocationResponse {
        outputs: Default::default(),
        logs,
        return_value: Some(return_value),
    })
}

async fn ingest(
    State(state): State<Arc<AppState>>,
    db: LazyDb,
    Envelope(request): Envelope<envelope::EventHubInvocation>,
) -> Result<Json<InvocationResponse>, ApiError> {
    let started = Instant::now();
    let batch =
        envelope::event_hub_batch(request, INGEST_BINDING).map_err(envelope::bad_envelope)?;
    let mut client = db.get().await?;
    let report = state
        .ingestor
        .ingest(&mut client, &batch, chrono::Utc::now())
        .await
        .map_err(|e| ApiError::from(remarketable_core::Error::from(e)))?;
    let event = BatchIngested {
        report: &report,
        took_ms: started.elapsed().as_millis(),
    };
    event.emit();
    Ok(answer(
        telemetry::lines(&event),
        serde_json::to_value(&report).unwrap_or_default(),
    ))
}

/// Whether the host says a timer invocation fired late (`Data.timer.IsPastDue`).
fn timer_past_due(request: &envelope::InvocationRequest) -> bool {
    envelope::get(&request.data, "timer")
        .map(envelope::unwrap_encoded)
        .and_then(|t| envelope::get(t.as_object()?, "IsPastDue")?.as_bool())
        .unwrap_or(false)
}

/// Advances the 5-minute, hourly and daily rollups (one staged pass per window, in one
/// transaction with their watermarks: `jobs::rollup`).
async fn rollup(
    db: LazyDb,
    Envelope(request): Envelope,
) -> Result<Json<InvocationResponse>, ApiError> {
    let past_due = timer_past_due(&request);
    let mut client = db.get().await?;
    let run = jobs::rollup(&mut client).await?;
    let event = RollupsAdvanced {
        run: &run,
        past_due,
    };
    event.emit();
    Ok(answer(
        telemetry::lines(&event),
        serde_json::to_value(&run).unwrap_or_default(),
    ))
}

async fn maintenance(
    db: LazyDb,
    Envelope(request): Envelope,
) -> Result<Json<InvocationResponse>, ApiError> {
    let past_due = timer_past_due(&request);
    let client = db.get().await?;
    let run = jobs::maintenance(&client).await?;
    let event = MaintenanceDone {
        run: &run,
        past_due,
    };
    event.emit();
    Ok(answer(telemetry::lines(&event), run.summary()))
}
