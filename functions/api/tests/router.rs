//! The API router served on its own, as the Lambda host and any other host serve it: the
//! trigger routes of the Azure host are not part of it.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use remarketable_api::{router, ApiState};
use remarketable_core::Settings;
use std::collections::HashMap;
use std::sync::Arc;
use tower::ServiceExt;

fn api() -> axum::Router {
    // The pool connects lazily: nothing here reaches a database.
    let settings = Settings::from_map(&HashMap::from([(
        "DATABASE_URL".to_string(),
        "postgres://nobody@127.0.0.1:9/none".to_string(),
    )]))
    .unwrap();
    router(Arc::new(ApiState::new(settings)))
}

async fn call(method: &str, path: &str) -> (StatusCode, serde_json::Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let response = api().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

#[tokio::test]
async fn trigger_routes_of_the_azure_host_are_not_served() {
    for path in ["/ingest", "/rollup", "/maintenance", "/collect"] {
        let (status, body) = call("POST", path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["error"]["code"], "not_found", "{path}: {body}");
    }
}

#[tokio::test]
async fn the_api_itself_is_served() {
    let (status, body) = call("GET", "/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["paths"].is_object(), "{body}");
    // A report without a credential is refused before any database work.
    let (status, body) = call("GET", "/api/v1/tenants/1/summary").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
}
