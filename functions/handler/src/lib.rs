//! The Azure Functions custom handler: one axum [`Router`] for every function of the app.
//!
//! | route | function | trigger |
//! |---|---|---|
//! | `GET /` | readiness probe of the host | never touches the database |
//! | `POST /ingest` | `ingest` | Event Hubs, `cardinality: many` |
//! | `POST /collect` | `collect` | HTTP in (envelope mode) + Event Hubs out |
//! | `POST /rollup` | `rollup` | timer |
//! | `POST /maintenance` | `maintenance` | timer |
//! | `/api/v1/admin/…`, `/api/v1/tenants/{id}/{share-tokens,whoami}` | `reports` | HTTP, forwarded ([`access`]) |
//! | `/api/v1/tenants/{id}/dashboards…` | `reports` | HTTP, forwarded ([`dashboards`]) |
//! | `GET /api/dashboard/…` | `dashboard` | HTTP, forwarded ([`dashboard`]: the web pages) |
//!
//! Invocations answer 200 with `Outputs`/`Logs` only after their work is durable; any failure
//! answers non-2xx with `{"error": {"code", "message"}}` so the host fails the invocation (and,
//! for `ingest`, its retry policy holds the checkpoint back).

pub mod access;
pub mod collect;
pub mod dashboard;
pub mod dashboards;
pub mod envelope;
pub mod error;
pub mod openapi;
pub mod replay;
pub mod reports;

use crate::envelope::InvocationResponse;
use crate::error::{ApiError, Envelope};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, Method};
use axum::routing::{get, post};
use axum::{Json, Router};
use remarketable_core::{db, rollup as rollups};
use remarketable_core::{Ingestor, Settings};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Binding names, as in `functions/*/function.json` (checked by a test).
pub const INGEST_BINDING: &str = "events";
pub const COLLECT_REQUEST_BINDING: &str = "req";
pub const COLLECT_RESPONSE_BINDING: &str = "res";
pub const COLLECT_OUTPUT_BINDING: &str = "outEvents";

/// Shared by every request; built once at start-up.
pub struct AppState {
    pub settings: Settings,
    pub pool: deadpool_postgres::Pool,
    pub ingestor: Ingestor,
    /// Verifies API keys and share tokens, with a short cache.
    pub verifier: remarketable_core::access::Verifier,
}

impl AppState {
    /// Builds the state without touching the database (the pool connects on first use).
    pub fn new(settings: Settings) -> Self {
        let pool = db::pool(&settings);
        let ingestor = Ingestor::new(settings.limits.clone(), settings.tenant_cache_ttl);
        let verifier = remarketable_core::access::Verifier::new(settings.access_cache_ttl);
        AppState {
            settings,
            pool,
            ingestor,
            verifier,
        }
    }
}

/// The one router served under Azure (`axum::serve`) and in tests (`oneshot`).
pub fn app(state: Arc<AppState>) -> Router {
    // The collect envelope carries the request body JSON-encoded once more: escaping can grow
    // it several-fold, and the exact body limit is checked after decoding.
    let collect_envelope_limit = state.settings.collect_max_body_bytes * 8 + (64 << 10);
    // The HTTP API, reachable from the origins REPORTS_CORS_ORIGINS names (none by default).
    let api = Router::new()
        .merge(access::routes())
        .merge(reports::routes())
        .merge(openapi::routes())
        .merge(replay::routes())
        .merge(dashboards::routes())
        .layer(cors(&state.settings.reports_cors_origins));
    Router::new()
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
        .merge(api)
        .merge(dashboard::routes())
        .fallback(not_found)
        .layer(CatchPanicLayer::custom(error::panic_response))
        .with_state(state)
}

/// CORS for the HTTP API: the configured origins may call it with a bearer key (no cookies
/// are involved, so credentials mode stays off).
fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .max_age(std::time::Duration::from_secs(600))
}

async fn ready() -> &'static str {
    "ready"
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

async fn ingest(
    State(state): State<Arc<AppState>>,
    Envelope(request): Envelope<envelope::EventHubInvocation>,
) -> Result<Json<InvocationResponse>, ApiError> {
    let started = Instant::now();
    let batch = envelope::event_hub_batch(request, INGEST_BINDING).map_err(ApiError::envelope)?;
    let mut client = state.pool.get().await.map_err(ApiError::pool)?;
    let report = state
        .ingestor
        .ingest(&mut client, &batch, chrono::Utc::now())
        .await
        .map_err(ApiError::ingest)?;
    let took_ms = started.elapsed().as_millis();
    tracing::info!(
        source = %report.source,
        partition = %report.partition,
        received = report.received,
        stored = report.stored,
        duplicates = report.duplicates,
        dead_lettered = report.dead_lettered,
        position = report.position,
        took_ms,
        "batch ingested"
    );
    let log = format!(
        "partition {} of {}: received {}, stored {}, duplicates {}, dead-lettered {}, position {}, {} ms",
        report.partition,
        report.source,
        report.received,
        report.stored,
        report.duplicates,
        report.dead_lettered,
        report.position,
        took_ms
    );
    Ok(Json(InvocationResponse {
        outputs: Default::default(),
        logs: vec![log],
        return_value: Some(serde_json::to_value(&report).unwrap_or_default()),
    }))
}

/// Whether the host says a timer invocation fired late (`Data.timer.IsPastDue`).
fn timer_past_due(request: &envelope::InvocationRequest) -> bool {
    envelope::get(&request.data, "timer")
        .map(envelope::unwrap_encoded)
        .and_then(|t| envelope::get(t.as_object()?, "IsPastDue")?.as_bool())
        .unwrap_or(false)
}

/// Advances the 5-minute, hourly and daily rollups in order, each in its own transaction.
async fn rollup(
    State(state): State<Arc<AppState>>,
    Envelope(request): Envelope,
) -> Result<Json<InvocationResponse>, ApiError> {
    let past_due = timer_past_due(&request);
    let mut client = state.pool.get().await.map_err(ApiError::pool)?;
    let advances = rollups::run(&mut client)
        .await
        .map_err(ApiError::database)?;
    let mut logs: Vec<String> = advances.iter().map(|a| a.to_string()).collect();
    if past_due {
        logs.push("the run was past due".into());
    }
    for a in &advances {
        tracing::info!(
            rollup = %a.rollup,
            window_start = a.window_start,
            window_end = a.window_end,
            rows = a.rows,
            milliseconds = a.milliseconds,
            past_due,
            "rollup advanced"
        );
    }
    Ok(Json(InvocationResponse {
        outputs: Default::default(),
        logs,
        return_value: Some(json!({ "rollups": advances })),
    }))
}

async fn maintenance(
    State(state): State<Arc<AppState>>,
    Envelope(request): Envelope,
) -> Result<Json<InvocationResponse>, ApiError> {
    let past_due = timer_past_due(&request);
    let client = state.pool.get().await.map_err(ApiError::pool)?;
    let changes = db::maintain_partitions(&client)
        .await
        .map_err(ApiError::database)?;
    let folded = db::compact_ledger(&client)
        .await
        .map_err(ApiError::database)?;
    let expired = rollups::apply_retention(&client)
        .await
        .map_err(ApiError::database)?;
    let created: Vec<_> = changes.iter().filter(|c| c.action == "created").collect();
    let dropped: Vec<_> = changes.iter().filter(|c| c.action == "dropped").collect();
    let mut logs = vec![format!(
        "partitions of events: {} created, {} dropped{}",
        created.len(),
        dropped.len(),
        if past_due { " (run was past due)" } else { "" }
    )];
    if let (Some(first), Some(last)) = (created.first(), created.last()) {
        logs.push(format!("created {} .. {}", first.partition, last.partition));
    }
    if let (Some(first), Some(last)) = (dropped.first(), dropped.last()) {
        logs.push(format!("dropped {} .. {}", first.partition, last.partition));
    }
    logs.push(format!("ledger: {folded} tenant-hour totals folded"));
    logs.push(format!(
        "rollup retention: {}",
        expired
            .iter()
            .map(|(rollup, rows)| format!("{rollup} {rows} rows deleted"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    tracing::info!(
        created = created.len(),
        dropped = dropped.len(),
        ledger_totals_folded = folded,
        past_due,
        "maintenance done"
    );
    Ok(Json(InvocationResponse {
        outputs: Default::default(),
        logs,
        return_value: Some(json!({
            "created": created.len(),
            "dropped": dropped.len(),
            "ledger_totals_folded": folded,
            "rollup_rows_deleted": expired.iter().map(|(r, n)| (r.clone(), *n)).collect::<std::collections::BTreeMap<_, _>>(),
        })),
    }))
}
