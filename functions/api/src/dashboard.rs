//! The web dashboard (`functions/dashboard`, forwarded HTTP): its pages and assets, bundled
//! from `dashboard/` by `build.rs` and embedded in the binary, so nothing is fetched at run time.
//!
//! | route | serves |
//! |---|---|
//! | `GET /api/dashboard/` | the dashboard (sign-in with a read key, or a share link `#share=…`); never framed |
//! | `GET /api/dashboard/embed` | the same page in embed mode, framable by `EMBED_FRAME_ANCESTORS` |
//! | `GET /api/dashboard/assets/{app.js,app.css}` | the bundle; immutable under its `?v=` version |
//!
//! Share tokens travel in the URL fragment, which browsers never send to a server, so they do
//! not end up in request logs; the page sends them as `Authorization: Share …`.

use crate::error::ApiError;
use crate::ApiState;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use tower_http::compression::CompressionLayer;

const INDEX_HTML: &str = include_str!(concat!(env!("OUT_DIR"), "/dashboard/index.html"));
const APP_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/dashboard/app.js"));
const APP_CSS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/dashboard/app.css"));

/// The page with its asset links versioned by the bundle's hash, so browsers may keep the
/// assets forever and still see a new deployment at once.
struct Bundle {
    version: String,
    index: String,
}

static BUNDLE: LazyLock<Bundle> = LazyLock::new(|| {
    let mut hash = Sha256::new();
    hash.update(APP_JS);
    hash.update(APP_CSS);
    let version: String = hash.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let index = INDEX_HTML
        .replace("assets/app.js", &format!("assets/app.js?v={version}"))
        .replace("assets/app.css", &format!("assets/app.css?v={version}"));
    Bundle { version, index }
});

/// The policy of both pages; only `frame-ancestors` differs.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; \
                   base-uri 'none'; form-action 'self'";

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/dashboard", get(|| async { redirect_to_page() }))
        .route("/api/dashboard/", get(page))
        .route("/api/dashboard/embed", get(embed))
        .route(
            "/api/dashboard/assets/{file}",
            get(asset).layer(CompressionLayer::new()),
        )
}

fn redirect_to_page() -> Response {
    // Relative, so it holds behind any host name the Functions front end answers to.
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, "dashboard/")],
    )
        .into_response()
}

fn html(frame_ancestors: &str) -> Response {
    let mut response = BUNDLE.index.clone().into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(csp) = HeaderValue::from_str(&format!("{CSP}; frame-ancestors {frame_ancestors}")) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    response
}

async fn page() -> Response {
    let mut response = html("'none'");
    response
        .headers_mut()
        .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

async fn embed(State(state): State<Arc<ApiState>>) -> Response {
    html(&state.settings.embed_frame_ancestors)
}

async fn asset(
    Path(file): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (body, content_type) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return Err(ApiError::not_found()),
    };
    let bundle = &*BUNDLE;
    let etag = format!("\"{}\"", bundle.version);
    let cache = if query.get("v") == Some(&bundle.version) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        body.into_response()
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    Ok(response)
}

/// The bundle's version, as the page's asset links carry it (for tests).
pub fn bundle_version() -> &'static str {
    &BUNDLE.version
}
