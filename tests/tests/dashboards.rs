//! Saved dashboards and the dashboard's pages over HTTP (`app(state)` through `oneshot`, real
//! PostgreSQL): layouts per tenant with versioned saves, what share links may do, `whoami`,
//! and the embedded page with its security headers.

use axum::http::StatusCode;
use axum::Router;
use remarketable_core::access::{self, KeyKind};
use remarketable_core::config::ShareSecret;
use remarketable_handler::{app, AppState};
use remarketable_tests::*;
use serde_json::{json, Value};
use std::sync::Arc;

const SECRET: &str = "dashboards-test-secret-0123456789-0123456789";

struct Setup {
    _db: TestDb,
    app: Router,
    /// `Bearer` headers of tenant 1's and tenant 2's read keys, and a share header of tenant 1.
    key1: String,
    key2: String,
    share1: String,
}

async fn setup(extra: &[(&str, &str)]) -> Setup {
    let db = TestDb::create().await;
    let client = db.client().await;
    let key = |tenant| {
        let client = &client;
        async move {
            let k = access::create_key(client, Some(tenant), KeyKind::Read, "t")
                .await
                .unwrap();
            format!("Bearer {}", k.key)
        }
    };
    let (key1, key2) = (key(1).await, key(2).await);
    let secret = ShareSecret::new(SECRET).unwrap();
    let share = access::create_share_token(
        &client,
        Some(&secret),
        1,
        chrono::Duration::hours(1),
        access::parse_filters([("country", "DE")]).unwrap(),
        "test",
        None,
    )
    .await
    .unwrap();
    let mut settings = settings_with(&url_for(&db.config), extra);
    settings.share_token_secret = Some(secret);
    Setup {
        app: app(Arc::new(AppState::new(settings))),
        _db: db,
        key1,
        key2,
        share1: format!("Share {}", share.token),
    }
}

fn layout(widgets: usize) -> Value {
    let kinds = [
        json!({"kind": "kpi", "metric": "events"}),
        json!({"kind": "timeseries", "metric": "unique_devices"}),
        json!({"kind": "breakdown", "metric": "revenue", "dimension": "country"}),
        json!({"kind": "top", "list": "pages"}),
        json!({"kind": "ingest"}),
    ];
    let widgets: Vec<Value> = (0..widgets)
        .map(|i| {
            let mut w = kinds[i % kinds.len()].clone();
            w["id"] = json!(format!("w{i}"));
            w["width"] = json!(1 + i % 4);
            w["height"] = json!(1 + i % 3);
            w
        })
        .collect();
    json!({ "widgets": widgets, "refresh_seconds": 10 })
}

const MAIN: &str = "/api/v1/tenants/1/dashboards/main";

#[tokio::test]
async fn layouts_are_saved_per_tenant_with_versions() {
    let s = setup(&[]).await;
    let list = call(
        &s.app,
        "GET",
        "/api/v1/tenants/1/dashboards",
        Some(&s.key1),
        Value::Null,
    )
    .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert_eq!(list.body["dashboards"], json!([]));

    let created = call(
        &s.app,
        "PUT",
        MAIN,
        Some(&s.key1),
        json!({"title": " Main ", "layout": layout(5)}),
    )
    .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text);
    assert_eq!(created.body["name"], "main");
    assert_eq!(created.body["title"], "Main");
    assert_eq!(created.body["version"], 1);
    assert_eq!(created.body["layout"], layout(5));

    // Creating again (no expected_version) does not overwrite.
    let again = call(
        &s.app,
        "PUT",
        MAIN,
        Some(&s.key1),
        json!({"title": "Other", "layout": layout(1)}),
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    assert_eq!(again.code(), "version_conflict");

    // A save from version 1 succeeds once; a second save from version 1 is a conflict.
    let saved = call(
        &s.app,
        "PUT",
        MAIN,
        Some(&s.key1),
        json!({"title": "Main", "layout": layout(3), "expected_version": 1}),
    )
    .await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.text);
    assert_eq!(saved.body["version"], 2);
    let stale = call(
        &s.app,
        "PUT",
        MAIN,
        Some(&s.key1),
        json!({"title": "Main", "layout": layout(4), "expected_version": 1}),
    )
    .await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.text);
    assert!(stale.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("version 2"));
    let missing = call(
        &s.app,
        "PUT",
        "/api/v1/tenants/1/dashboards/nope",
        Some(&s.key1),
        json!({"title": "x", "layout": layout(1), "expected_version": 1}),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.text);

    let second = call(
        &s.app,
        "PUT",
        "/api/v1/tenants/1/dashboards/q4-campaigns",
        Some(&s.key1),
        json!({"title": "Q4 campaigns", "layout": layout(2)}),
    )
    .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    let list = call(
        &s.app,
        "GET",
        "/api/v1/tenants/1/dashboards",
        Some(&s.key1),
        Value::Null,
    )
    .await;
    let names: Vec<&str> = list.body["dashboards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["main", "q4-campaigns"]);
    assert_eq!(list.body["dashboards"][0]["layout"], layout(3));
    assert_eq!(list.body["dashboards"][0]["version"], 2);

    // Tenant 2 sees none of them and cannot reach tenant 1's.
    let other = call(
        &s.app,
        "GET",
        "/api/v1/tenants/2/dashboards",
        Some(&s.key2),
        Value::Null,
    )
    .await;
    assert_eq!(other.body["dashboards"], json!([]));
    for (method, body) in [
        ("GET", Value::Null),
        (
            "PUT",
            json!({"title": "x", "layout": layout(1), "expected_version": 2}),
        ),
        ("DELETE", Value::Null),
    ] {
        let path = if method == "GET" {
            "/api/v1/tenants/1/dashboards"
        } else {
            MAIN
        };
        let a = call(&s.app, method, path, Some(&s.key2), body).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{method}: {}", a.text);
    }
    let unchanged = call(
        &s.app,
        "GET",
        "/api/v1/tenants/1/dashboards",
        Some(&s.key1),
        Value::Null,
    )
    .await;
    assert_eq!(unchanged.body["dashboards"][0]["version"], 2);

    let deleted = call(&s.app, "DELETE", MAIN, Some(&s.key1), Value::Null).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = call(&s.app, "DELETE", MAIN, Some(&s.key1), Value::Null).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn share_links_read_layouts_but_change_nothing() {
    let s = setup(&[]).await;
    let put = |auth: String, body: Value| {
        let app = s.app.clone();
        async move { call(&app, "PUT", MAIN, Some(&auth), body).await }
    };
    assert_eq!(
        put(
            s.key1.clone(),
            json!({"title": "Main", "layout": layout(2)})
        )
        .await
        .status,
        StatusCode::OK
    );
    let list = call(
        &s.app,
        "GET",
        "/api/v1/tenants/1/dashboards",
        Some(&s.share1),
        Value::Null,
    )
    .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert_eq!(list.body["dashboards"][0]["layout"], layout(2));
    let refused = put(
        s.share1.clone(),
        json!({"title": "Main", "layout": layout(1), "expected_version": 1}),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    let refused = call(&s.app, "DELETE", MAIN, Some(&s.share1), Value::Null).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    let none = call(
        &s.app,
        "GET",
        "/api/v1/tenants/1/dashboards",
        None,
        Value::Null,
    )
    .await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);

    // whoami tells the page who it is for, without knowing the tenant beforehand.
    let me = call(
        &s.app,
        "GET",
        "/api/v1/whoami",
        Some(&s.share1),
        Value::Null,
    )
    .await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    assert_eq!(me.body["tenant_id"], 1);
    assert_eq!(me.body["read_only"], true);
    assert_eq!(me.body["fixed_filters"], json!({"country": "DE"}));
    assert_eq!(me.body["time_zone"], "UTC");
    assert!(me.body["tenant_name"]
        .as_str()
        .is_some_and(|n| !n.is_empty()));
    assert!(me.body["expires_at"].is_string());
    let me = call(&s.app, "GET", "/api/v1/whoami", Some(&s.key2), Value::Null).await;
    assert_eq!(
        (me.body["tenant_id"].clone(), me.body["read_only"].clone()),
        (json!(2), json!(false))
    );
    let me = call(
        &s.app,
        "GET",
        "/api/v1/whoami",
        Some("Bearer rmk_read_0000000000000000_x"),
        Value::Null,
    )
    .await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_layouts_names_and_titles_are_refused_with_stable_codes() {
    let s = setup(&[]).await;
    let put = |path: &'static str, body: Value| {
        let app = s.app.clone();
        let key = s.key1.clone();
        async move { call(&app, "PUT", path, Some(&key), body).await }
    };
    let cases = [
        (
            MAIN,
            json!({"title": "x", "layout": {"widgets": [{"id": "a", "kind": "kpi", "width": 1, "height": 1}]}}),
            "bad_layout",
        ),
        (
            MAIN,
            json!({"title": "x", "layout": {"widgets": [{"id": "a", "kind": "ingest", "width": 9, "height": 1}]}}),
            "bad_layout",
        ),
        (
            MAIN,
            json!({"title": "x", "layout": {"widgets": [], "script": "alert(1)"}}),
            "bad_layout",
        ),
        (
            MAIN,
            json!({"title": "x", "layout": layout(31)}),
            "bad_layout",
        ),
        (MAIN, json!({"title": "", "layout": layout(1)}), "bad_title"),
        (
            MAIN,
            json!({"title": "x", "layout": layout(1), "owner": "me"}),
            "bad_request",
        ),
        (MAIN, json!({"layout": layout(1)}), "bad_request"),
        (
            "/api/v1/tenants/1/dashboards/Main",
            json!({"title": "x", "layout": layout(1)}),
            "bad_dashboard_name",
        ),
        (
            "/api/v1/tenants/1/dashboards/a%27%3B%20drop",
            json!({"title": "x", "layout": layout(1)}),
            "bad_dashboard_name",
        ),
        (
            "/api/v1/tenants/x/dashboards/main",
            json!({"title": "x", "layout": layout(1)}),
            "bad_tenant_id",
        ),
    ];
    for (path, body, code) in cases {
        let a = put(path, body.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.text);
        assert_eq!(a.code(), code, "{body}: {}", a.text);
    }
    // Nothing was stored by any of them.
    let list = call(
        &s.app,
        "GET",
        "/api/v1/tenants/1/dashboards",
        Some(&s.key1),
        Value::Null,
    )
    .await;
    assert_eq!(list.body["dashboards"], json!([]));

    // At most 50 dashboards per tenant.
    for i in 0..50 {
        let path: &'static str = format!("/api/v1/tenants/1/dashboards/d{i}").leak();
        assert_eq!(
            put(path, json!({"title": "d", "layout": layout(1)}))
                .await
                .status,
            StatusCode::OK
        );
    }
    let a = put(
        "/api/v1/tenants/1/dashboards/d50",
        json!({"title": "d", "layout": layout(1)}),
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::CONFLICT, "too_many_dashboards")
    );
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_their_security_headers() {
    let s = setup(&[("EMBED_FRAME_ANCESTORS", "https://intranet.example.com")]).await;
    let page = call(&s.app, "GET", "/api/dashboard/", None, Value::Null).await;
    assert_eq!(page.status, StatusCode::OK);
    let header = |a: &Answer, name: &str| {
        a.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert!(header(&page, "content-type").starts_with("text/html"));
    let csp = header(&page, "content-security-policy");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert_eq!(header(&page, "x-frame-options"), "DENY");
    let version = remarketable_handler::dashboard::bundle_version();
    assert!(
        page.text.contains(&format!("assets/app.js?v={version}")),
        "{}",
        page.text
    );
    assert!(page.text.contains(&format!("assets/app.css?v={version}")));

    let embed = call(&s.app, "GET", "/api/dashboard/embed", None, Value::Null).await;
    assert_eq!(embed.status, StatusCode::OK);
    let csp = header(&embed, "content-security-policy");
    assert!(
        csp.contains("frame-ancestors https://intranet.example.com"),
        "{csp}"
    );
    assert_eq!(header(&embed, "x-frame-options"), "");

    let redirect = call(&s.app, "GET", "/api/dashboard", None, Value::Null).await;
    assert_eq!(redirect.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(header(&redirect, "location"), "dashboard/");

    let js = call(
        &s.app,
        "GET",
        &format!("/api/dashboard/assets/app.js?v={version}"),
        None,
        Value::Null,
    )
    .await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(header(&js, "content-type").starts_with("text/javascript"));
    assert!(header(&js, "cache-control").contains("immutable"));
    assert!(
        js.text.len() > 1000,
        "the bundle is {} bytes",
        js.text.len()
    );
    // An old version's URL is not cached for long; a known ETag is answered with 304.
    let old = call(
        &s.app,
        "GET",
        "/api/dashboard/assets/app.css?v=0",
        None,
        Value::Null,
    )
    .await;
    assert_eq!(header(&old, "cache-control"), "no-cache");
    let etag = header(&old, "etag");
    let request = axum::http::Request::get("/api/dashboard/assets/app.css")
        .header("if-none-match", &etag)
        .body(axum::body::Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(s.app.clone(), request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    // Compressed for browsers that ask.
    let request = axum::http::Request::get("/api/dashboard/assets/app.js")
        .header("accept-encoding", "gzip")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(s.app.clone(), request)
        .await
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");

    let unknown = call(
        &s.app,
        "GET",
        "/api/dashboard/assets/../../etc/passwd",
        None,
        Value::Null,
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let unknown = call(
        &s.app,
        "GET",
        "/api/dashboard/assets/main.ts",
        None,
        Value::Null,
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_dashboard_limit_holds_under_concurrent_creations() {
    // The pool is as large as the concurrency, so the creations really overlap in the database.
    let s = setup(&[("DB_POOL_SIZE", "16")]).await;
    let mut tasks = Vec::new();
    for i in 0..70 {
        let (app, key) = (s.app.clone(), s.key1.clone());
        tasks.push(tokio::spawn(async move {
            let path = format!("/api/v1/tenants/1/dashboards/c{i}");
            let body = json!({"title": "c", "layout": layout(1)});
            let a = call(&app, "PUT", &path, Some(&key), body).await;
            (a.status, a.code().to_string())
        }));
    }
    let (mut stored, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            (StatusCode::OK, _) => stored += 1,
            (StatusCode::CONFLICT, code) if code == "too_many_dashboards" => refused += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((stored, refused), (50, 20));
    let listed = call(
        &s.app,
        "GET",
        "/api/v1/tenants/1/dashboards",
        Some(&s.key1),
        Value::Null,
    )
    .await;
    assert_eq!(
        listed.body["dashboards"].as_array().map(Vec::len),
        Some(50),
        "{}",
        listed.text
    );
}
