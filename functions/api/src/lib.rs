//! # remarketable-api
//!
//! The HTTP API of ReMarketable as one axum [`Router`] that knows no host: served by the Azure
//! custom handler (forwarded requests), by `lambda_http` on AWS, and by `oneshot` in tests.
//!
//! | routes | module |
//! |---|---|
//! | `/api/v1/admin/…`, `/api/v1/tenants/{id}/{share-tokens,whoami}`, `/api/v1/whoami` | [`access`] |
//! | `/api/v1/tenants/{id}/{timeseries,breakdown,summary,top,ingest,campaigns}`, `…/funnels/{name}/report` | [`reports`] |
//! | `/api/v1/tenants/{id}/dashboards…` | [`dashboards`] |
//! | `/api/v1/tenants/{id}/funnels[/{name}]` | [`funnels`] |
//! | `/api/v1/admin/tenants/{id}/dead-letters/replay` | [`replay`] |
//! | `/api/v1/admin/tenants/{id}/spend` | [`spend`] |
//! | `/api/v1/admin/tenants/{id}/attribution` | [`attribution`] |
//! | `/api/v1/openapi.json` | [`openapi`] |
//! | `/api/dashboard/…` (the web pages) | [`dashboard`] |
//!
//! Trigger routes (`/ingest`, `/collect`'s envelope, timers) belong to the hosts and never
//! appear here: this router can be exposed to the internet as it is.
//!
//! This crate embeds the dashboard's bundle, built from `dashboard/` by `build.rs` (the one
//! place that runs npm; `REMARKETABLE_DASHBOARD_DIST` embeds a prebuilt bundle instead).

pub mod access;
pub mod admission;
pub mod attribution;
pub mod collect;
pub mod dashboard;
pub mod dashboards;
pub mod error;
pub mod funnels;
pub mod openapi;
pub mod replay;
pub mod reports;
pub mod spend;

pub use error::ApiError;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, Request};
use axum::Router;
use remarketable_core::{db, Settings};
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

/// What every API request may use; built once at start-up, without touching the database
/// (the pool connects on first use, so hosts answer their readiness probes at once).
pub struct ApiState {
    pub settings: Settings,
    /// Ingest's, the jobs' and the API's small requests' pool (`DB_POOL_SIZE`).
    pub pool: deadpool_postgres::Pool,
    /// The reports' own pool (`REPORT_POOL_SIZE`, statements time out).
    pub reports: deadpool_postgres::Pool,
    /// Running reports per credential and tenant.
    pub admission: admission::Admission,
    /// Verifies API keys and share tokens, with a short cache.
    pub verifier: remarketable_core::access::Verifier,
    /// collect's rate buckets and usage counts ([`collect`]).
    pub collect_gate: remarketable_core::quota::Gate,
}

impl ApiState {
    pub fn new(settings: Settings) -> Self {
        let pool = db::pool(&settings);
        let reports = db::report_pool(&settings);
        let admission = admission::Admission::new(
            settings.report_concurrency_per_credential,
            settings.report_concurrency_per_tenant,
        );
        let verifier = remarketable_core::access::Verifier::new(settings.access_cache_ttl);
        let collect_gate = remarketable_core::quota::Gate::new(settings.collect_limits);
        ApiState {
            settings,
            pool,
            reports,
            admission,
            verifier,
            collect_gate,
        }
    }
}

/// A state that holds the API's: the API's own, and a host's that serves the API beside its
/// own routes, so the connection extractors serve both.
pub trait HasApi: Send + Sync {
    fn api(&self) -> &ApiState;
}

impl HasApi for ApiState {
    fn api(&self) -> &ApiState {
        self
    }
}

/// A pooled database connection for one request; a handler that takes one as an argument gets
/// a 503 `database_unavailable` answer when none can be had.
pub struct Db(pub deadpool_postgres::Object);

impl<S: HasApi> FromRequestParts<Arc<S>> for Db {
    type Rejection = ApiError;

    async fn from_request_parts(_parts: &mut Parts, state: &Arc<S>) -> Result<Self, ApiError> {
        LazyDb(state.api().pool.clone()).get().await.map(Db)
    }
}

/// The pool, for a handler that takes its connection only after checks that need none (an
/// invocation's envelope is decoded first, so a malformed one is a 400 even when the database
/// is down); [`LazyDb::get`] answers as [`Db`] does.
pub struct LazyDb(deadpool_postgres::Pool);

impl LazyDb {
    pub async fn get(&self) -> Result<deadpool_postgres::Object, ApiError> {
        self.0.get().await.map_err(ApiError::pool)
    }
}

impl<S: HasApi> FromRequestParts<Arc<S>> for LazyDb {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        _parts: &mut Parts,
        state: &Arc<S>,
    ) -> Result<Self, std::convert::Infallible> {
        Ok(LazyDb(state.api().pool.clone()))
    }
}

/// The API's routes with their state and CORS, for a host to merge with its own routes and
/// then [`finish`].
pub fn routes(state: Arc<ApiState>) -> Router {
    let cors = cors(&state.settings.reports_cors_origins);
    // The HTTP API is reachable from the origins REPORTS_CORS_ORIGINS names (none by default);
    // the dashboard's pages are same-origin.
    let api = Router::new()
        .merge(access::routes())
        .merge(reports::routes(&state))
        .merge(openapi::routes())
        .merge(replay::routes())
        .merge(spend::routes())
        .merge(attribution::routes())
        .merge(dashboards::routes())
        .merge(funnels::routes())
        .layer(cors);
    api.merge(dashboard::routes()).with_state(state)
}

/// The API on its own, as a host with no routes of its own serves it.
pub fn router(state: Arc<ApiState>) -> Router {
    finish(routes(state.clone()), &state.settings)
}

/// What every served router ends with: JSON 404s, every error answer as JSON (the
/// framework's own rejections included: [`error::json_errors`]), panics answered as JSON
/// 500s, and one tracing span per request (method and path only: query strings may carry
/// credentials). Where `HSTS_MAX_AGE_SECONDS` is set, every answer (404s too) tells browsers
/// to keep to HTTPS for this host.
pub fn finish(app: Router, settings: &Settings) -> Router {
    let app = app.fallback(|| async { ApiError::not_found() });
    let app = match settings.hsts_max_age_seconds {
        0 => app,
        age => app.layer(SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_str(&format!("max-age={age}; includeSubDomains"))
                .expect("digits are a valid header value"),
        )),
    };
    app.layer(axum::middleware::map_response(error::json_errors))
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                    )
                })
                .on_request(())
                .on_response(())
                .on_failure(()),
        )
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
