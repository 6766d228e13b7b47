//! Every answer is `{"error": {"code", "message"}}` JSON with a stable code, the framework's
//! own rejections included (bad path ids, malformed, duplicated or out-of-range query fields,
//! bodies that are not JSON or not `application/json`, methods a route does not take), and
//! control characters in filters are a 400 `bad_parameter`, never a database error.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use remarketable_core::access::{self, KeyKind};
use remarketable_handler::{app, AppState};
use remarketable_tests::*;
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

async fn setup() -> (TestDb, Router, String, String) {
    let db = TestDb::create().await;
    let client = db.client().await;
    let read = access::create_key(&client, Some(1), KeyKind::Read, "r")
        .await
        .unwrap()
        .key;
    let admin = access::create_key(&client, None, KeyKind::Admin, "a")
        .await
        .unwrap()
        .key;
    let app = app(Arc::new(AppState::new(db.settings(None))));
    (db, app, format!("Bearer {read}"), format!("Bearer {admin}"))
}

/// Sends a request with a raw body and content type; answers status, content type and JSON.
async fn send(
    app: &Router,
    method: &str,
    path: &str,
    auth: &str,
    content_type: Option<&str>,
    body: &str,
) -> (StatusCode, String, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", auth);
    if let Some(t) = content_type {
        request = request.header("content-type", t);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, content_type, value)
}

/// Method, path, authorization, content type, body; the status and code expected.
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    &'a str,
    u16,
    &'a str,
);

#[tokio::test]
async fn framework_rejections_answer_the_json_error_shape() {
    let (_db, app, read, admin) = setup().await;
    let cases: &[Case] = &[
        (
            "GET",
            "/api/v1/tenants/abc/summary",
            &read,
            None,
            "",
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/tenants/99999999999999999999/summary",
            &read,
            None,
            "",
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/tenants/1/breakdown?dimension=country&limit=1&limit=2",
            &read,
            None,
            "",
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/tenants/1/breakdown?dimension=country&limit=99999999999999999999",
            &read,
            None,
            "",
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/admin/tenants",
            &admin,
            Some("application/json"),
            "{not json",
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/admin/tenants",
            &admin,
            Some("text/plain"),
            r#"{"tenant_id": 5, "name": "x"}"#,
            415,
            "unsupported_media_type",
        ),
        (
            "DELETE",
            "/api/v1/tenants/1/summary",
            &read,
            None,
            "",
            405,
            "method_not_allowed",
        ),
    ];
    for (method, path, auth, content_type, body, status, code) in cases {
        let (got, got_type, value) = send(&app, method, path, auth, *content_type, body).await;
        assert_eq!(got.as_u16(), *status, "{method} {path}: {value}");
        assert!(
            got_type.starts_with("application/json"),
            "{method} {path}: {got_type}"
        );
        assert_eq!(
            value["error"]["code"],
            json!(code),
            "{method} {path}: {value}"
        );
        assert!(
            !value["error"]["message"].as_str().unwrap_or("").is_empty(),
            "{method} {path}: {value}"
        );
    }
}

#[tokio::test]
async fn control_characters_in_filters_are_bad_parameters() {
    let (db, app, read, _) = setup().await;
    for value in ["%00", "a%00b", "%09tab", "%7F"] {
        let path = format!("/api/v1/tenants/1/summary?range=24h&campaign={value}");
        let (status, _, body) = send(&app, "GET", &path, &read, None, "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"]["code"], "bad_parameter", "{path}: {body}");
    }
    // A plain value still answers.
    let (status, _, body) = send(
        &app,
        "GET",
        "/api/v1/tenants/1/summary?range=24h&campaign=spring",
        &read,
        None,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    drop(db);
}

#[tokio::test]
async fn malformed_credentials_are_refused_without_a_database_connection() {
    // Nothing listens on port 9: any request that takes a connection answers 503.
    let settings = settings_with(
        "postgres://postgres@127.0.0.1:9/remarketable?sslmode=disable",
        &[(
            "SHARE_TOKEN_SECRET",
            "a share-token secret of at least thirty-two bytes",
        )],
    );
    let app = app(Arc::new(AppState::new(settings)));
    for auth in [
        "Bearer not-a-key",
        "Bearer rmk_read_short",
        "Share rms_eyJ2IjoxfQ.forged",
        "Share garbage",
    ] {
        let (status, _, body) =
            send(&app, "GET", "/api/v1/tenants/1/summary", auth, None, "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{auth}: {body}");
    }
}
