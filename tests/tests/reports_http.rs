//! The reports API over HTTP (`app(state)` through `oneshot`, real PostgreSQL): tenant scoping,
//! closed parameters, JSON and CSV answers, the OpenAPI document, and numbers equal to the
//! core's.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use chrono::Utc;
use http_body_util::BodyExt;
use remarketable_core::access::{self, KeyKind};
use remarketable_core::reports::{self, Filters, Granularity, Range};
use remarketable_handler::{app, AppState};
use remarketable_tests::*;
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

async fn get(
    app: &Router,
    path: &str,
    auth: Option<&str>,
    accept: Option<&str>,
) -> (StatusCode, String, String) {
    let mut request = Request::get(path);
    if let Some(key) = auth {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    if let Some(a) = accept {
        request = request.header("accept", a);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

async fn setup() -> (TestDb, Router, String, String) {
    let db = TestDb::create().await;
    set_time_zones(&db).await;
    ingest(
        &db,
        "0",
        0,
        &shop_events(&mut Rng(4), Utc::now(), 1500, 10),
        500,
    )
    .await;
    let client = db.client().await;
    let key1 = access::create_key(&client, Some(1), KeyKind::Read, "t1")
        .await
        .unwrap()
        .key;
    let key2 = access::create_key(&client, Some(2), KeyKind::Read, "t2")
        .await
        .unwrap()
        .key;
    let app = app(Arc::new(AppState::new(db.settings(None))));
    (db, app, key1, key2)
}

#[tokio::test]
async fn reports_answer_the_core_figures_in_json_and_csv() {
    let (db, app, key1, _) = setup().await;
    let (status, content_type, body) = get(
        &app,
        "/api/v1/tenants/1/timeseries?range=24h&granularity=1h",
        Some(&key1),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(content_type.starts_with("application/json"));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["granularity"], "1h");
    assert_eq!(v["distinct_counts"]["relative_error_95"], json!(0.0163));
    assert!(v["freshness"]["as_of"].is_string());
    let range = Range::new(
        v["range"]["from"].as_str().unwrap().parse().unwrap(),
        v["range"]["to"].as_str().unwrap().parse().unwrap(),
    )
    .unwrap();
    let core = reports::timeseries(
        &db.client().await,
        1,
        &range,
        Granularity::Hour,
        &Filters::default(),
    )
    .await
    .unwrap();
    let events: Vec<i64> = v["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["events"].as_i64().unwrap())
        .collect();
    assert_eq!(
        events,
        core.points
            .iter()
            .map(|p| p.metrics.events)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        events.iter().sum::<i64>(),
        db.count("SELECT count(*) FROM events WHERE tenant_id = 1")
            .await
    );

    let (status, content_type, csv) = get(
        &app,
        "/api/v1/tenants/1/breakdown?range=24h&dimension=country&format=csv",
        Some(&key1),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/csv"));
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "country,events,unique_devices,unique_sessions,revenue,purchases,conversion_rate"
    );
    let csv_events: i64 = lines
        .map(|l| l.split(',').nth(1).unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(csv_events, events.iter().sum::<i64>());

    // Ranked by another metric: by purchases, the purchase events come first (only they
    // count purchases), where by events page views lead.
    let mut firsts = Vec::new();
    for order in ["events", "purchases"] {
        let (status, _, body) = get(
            &app,
            &format!("/api/v1/tenants/1/breakdown?range=24h&dimension=event_type&order={order}"),
            Some(&key1),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let v: Value = serde_json::from_str(&body).unwrap();
        let rows = v["rows"].as_array().unwrap();
        let ranked: Vec<i64> = rows.iter().map(|r| r[order].as_i64().unwrap()).collect();
        assert!(
            ranked.windows(2).all(|w| w[0] >= w[1]),
            "{order}: {ranked:?}"
        );
        firsts.push(rows[0]["value"].as_str().unwrap().to_string());
    }
    assert_eq!(firsts, ["page_view", "purchase"]);

    let (status, _, csv) = get(
        &app,
        "/api/v1/tenants/1/summary?range=24h",
        Some(&key1),
        Some("text/csv"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(csv.starts_with("period,from,to,events,"));
    for path in [
        "/api/v1/tenants/1/top?range=24h&list=devices&n=3",
        "/api/v1/tenants/1/ingest?range=24h",
    ] {
        let (status, _, body) = get(&app, path, Some(&key1), None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
}

#[tokio::test]
async fn tenants_are_isolated_and_parameters_are_closed() {
    let (_db, app, key1, key2) = setup().await;
    // Without a credential, or with another tenant's: nothing, and no hint that tenant 1 exists.
    let (status, _, body) = get(&app, "/api/v1/tenants/1/summary", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _, body) = get(&app, "/api/v1/tenants/1/summary", Some(&key2), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _, _) = get(&app, "/api/v1/tenants/2/summary", Some(&key2), None).await;
    assert_eq!(status, StatusCode::OK);

    for (query, code) in [
        ("granularity=1w", "bad_parameter"),
        ("range=1y", "bad_parameter"),
        ("from=yesterday", "bad_parameter"),
        ("from=2026-01-01T00:00:00Z&range=24h", "bad_parameter"),
        (
            "from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            "bad_parameter",
        ),
        ("range=30d&granularity=5m", "bad_parameter"),
        ("format=xml", "bad_parameter"),
    ] {
        let (status, _, body) = get(
            &app,
            &format!("/api/v1/tenants/1/timeseries?{query}"),
            Some(&key1),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], code, "{query}");
    }
    let (status, _, body) = get(
        &app,
        "/api/v1/tenants/1/breakdown?dimension=page_url",
        Some(&key1),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // A filter value reaches SQL only as a parameter: a quote is just a value with no events.
    let (status, _, body) = get(
        &app,
        "/api/v1/tenants/1/summary?country=DE%27%20OR%20%271%27=%271",
        Some(&key1),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["current"]["events"], 0);
}

#[tokio::test]
async fn the_openapi_document_lists_served_paths_and_the_closed_values() {
    let (_db, app, _, _) = setup().await;
    let (status, _, body) = get(&app, "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 8);
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            // Served: without a credential the answer is a refusal, not the router's 404.
            let request = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(path.replace("{tenant_id}", "1"))
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path}"
            );
        }
    }
    let granularity = &paths["/api/v1/tenants/{tenant_id}/timeseries"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "granularity")
        .unwrap()["schema"]["enum"];
    assert_eq!(granularity, &json!(["5m", "1h", "1d"]));
    let model = &paths["/api/v1/tenants/{tenant_id}/campaigns"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "model")
        .unwrap()["schema"]["enum"];
    assert_eq!(model, &json!(["last_touch", "first_touch", "session"]));
}

#[tokio::test]
async fn an_admin_replays_a_tenants_dead_letters_once() {
    let (db, app, key1, _) = setup().await;
    // Tenant 7 sends before it is registered: its events are dead-lettered as unknown_tenant.
    ingest(&db, "9", 0, &[event(7, 1), event(7, 2), event(7, 3)], 10).await;
    let client = db.client().await;
    client
        .execute(
            "INSERT INTO tenants (tenant_id, name) VALUES (7, 'late shop')",
            &[],
        )
        .await
        .unwrap();
    let admin = access::create_key(&client, None, KeyKind::Admin, "ops")
        .await
        .unwrap()
        .key;
    let post = |key: String| {
        let app = app.clone();
        async move {
            let request = Request::post("/api/v1/admin/tenants/7/dead-letters/replay")
                .header("authorization", format!("Bearer {key}"))
                .header("content-type", "application/json")
                .body(Body::from(r#"{"max": 100}"#))
                .unwrap();
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&body).unwrap())
        }
    };
    let (status, body) = post(key1.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = post(admin.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["examined"].as_i64(), body["replayed"].as_i64()),
        (Some(3), Some(3))
    );
    // A bad body is our JSON error (it was axum's text/plain rejection), an empty one the
    // defaults.
    for (body, status, code) in [
        (r#"{"max": "all"}"#, StatusCode::BAD_REQUEST, "bad_request"),
        (r#"{"max": 0}"#, StatusCode::BAD_REQUEST, "bad_parameter"),
        ("[]", StatusCode::BAD_REQUEST, "bad_request"),
        ("", StatusCode::OK, ""),
    ] {
        let a = call(
            &app,
            "POST",
            "/api/v1/admin/tenants/7/dead-letters/replay",
            Some(&format!("Bearer {admin}")),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
        .await;
        assert_eq!((a.status, a.code()), (status, code), "{body}: {}", a.text);
    }
    let a = call(
        &app,
        "POST",
        "/api/v1/admin/tenants/0/dead-letters/replay",
        Some(&format!("Bearer {admin}")),
        Value::Null,
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::BAD_REQUEST, "bad_tenant_id"),
        "{}",
        a.text
    );
    let (_, again) = post(admin).await;
    assert_eq!(again["replayed"], 0);
    assert_eq!(
        db.count("SELECT count(*) FROM events WHERE tenant_id = 7")
            .await,
        3
    );
}

#[tokio::test]
async fn only_configured_origins_may_call_the_api_from_a_browser() {
    let db = TestDb::create().await;
    let settings = settings_with(
        &db.url(),
        &[("REPORTS_CORS_ORIGINS", "https://analytics.example")],
    );
    let app = app(Arc::new(AppState::new(settings)));
    let preflight = |origin: &'static str| {
        let app = app.clone();
        async move {
            let request = Request::builder()
                .method("OPTIONS")
                .uri("/api/v1/tenants/1/summary")
                .header("origin", origin)
                .header("access-control-request-method", "GET")
                .header("access-control-request-headers", "authorization")
                .body(Body::empty())
                .unwrap();
            let response = app.oneshot(request).await.unwrap();
            response
                .headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap().to_string())
        }
    };
    assert_eq!(
        preflight("https://analytics.example").await.as_deref(),
        Some("https://analytics.example")
    );
    assert_eq!(preflight("https://evil.example").await, None);
}

const REPORTS: [&str; 5] = [
    "timeseries?range=24h",
    "breakdown?range=24h&dimension=browser",
    "summary?range=24h",
    "top?range=24h&list=pages",
    "ingest?range=24h",
];

/// Status and error code of a GET with an `Authorization` header value.
async fn refusal(app: &Router, path: &str, authorization: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::get(path);
    if let Some(a) = authorization {
        request = request.header("authorization", a);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null)["error"]["code"].clone(),
    )
}

#[tokio::test]
async fn every_report_refuses_every_wrong_credential() {
    let db = TestDb::create().await;
    let secret = "a share-token secret of at least thirty-two bytes";
    let settings = settings_with(&db.url(), &[("SHARE_TOKEN_SECRET", secret)]);
    let app = app(Arc::new(AppState::new(settings.clone())));
    let client = db.client().await;
    let own = access::create_key(&client, Some(1), KeyKind::Read, "own")
        .await
        .unwrap();
    let other = access::create_key(&client, Some(2), KeyKind::Read, "other")
        .await
        .unwrap();
    let write = access::create_key(&client, Some(1), KeyKind::Write, "w")
        .await
        .unwrap();
    let revoked = access::create_key(&client, Some(1), KeyKind::Read, "old")
        .await
        .unwrap();
    access::revoke_key(&client, &revoked.key_id).await.unwrap();
    let secret = settings.share_token_secret.as_ref().unwrap();
    let share = |filters: &[(&'static str, &'static str)]| {
        let client = &client;
        let filters = access::parse_filters(filters.iter().copied()).unwrap();
        async move {
            access::create_share_token(
                client,
                Some(secret),
                1,
                chrono::Duration::hours(1),
                filters,
                "s",
                None,
            )
            .await
            .unwrap()
        }
    };
    let valid = share(&[]).await;
    let german = share(&[("country", "DE")]).await;
    let to_revoke = share(&[]).await;
    access::revoke_share_token(&client, Some(1), &to_revoke.token_id)
        .await
        .unwrap();
    let mut tampered = valid.token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });

    for report in REPORTS {
        let path = format!("/api/v1/tenants/1/{report}");
        let bearer = |k: &str| format!("Bearer {k}");
        let share = |t: &str| format!("Share {t}");
        for (case, authorization, status, code) in [
            ("no key", None, StatusCode::UNAUTHORIZED, "unauthorized"),
            (
                "another tenant's key",
                Some(bearer(&other.key)),
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                "a revoked key",
                Some(bearer(&revoked.key)),
                StatusCode::UNAUTHORIZED,
                "unauthorized",
            ),
            (
                "a write key",
                Some(bearer(&write.key)),
                StatusCode::FORBIDDEN,
                "forbidden",
            ),
            (
                "a tampered share token",
                Some(share(&tampered)),
                StatusCode::UNAUTHORIZED,
                "unauthorized",
            ),
            (
                "a revoked share token",
                Some(share(&to_revoke.token)),
                StatusCode::UNAUTHORIZED,
                "share_revoked",
            ),
        ] {
            let (got, got_code) = refusal(&app, &path, authorization.as_deref()).await;
            assert_eq!(
                (got, got_code.as_str()),
                (status, Some(code)),
                "{report}: {case}"
            );
        }
        let (ok, _) = refusal(&app, &path, Some(&share(&valid.token))).await;
        assert_eq!(ok, StatusCode::OK, "{report}: a valid share token");
        let (ok, _) = refusal(&app, &path, Some(&bearer(&own.key))).await;
        assert_eq!(ok, StatusCode::OK, "{report}: the tenant's own key");
        // A share token fixed to Germany cannot ask for France, but may repeat its own filter.
        if report != "ingest?range=24h" {
            let (got, code) = refusal(
                &app,
                &format!("{path}&country=FR"),
                Some(&share(&german.token)),
            )
            .await;
            assert_eq!(
                (got, code.as_str()),
                (StatusCode::FORBIDDEN, Some("filter_fixed")),
                "{report}"
            );
            let (got, _) = refusal(
                &app,
                &format!("{path}&country=DE"),
                Some(&share(&german.token)),
            )
            .await;
            assert_eq!(got, StatusCode::OK, "{report}");
        } else {
            // The ledger covers the whole tenant: a link limited to Germany may not read it.
            let (got, code) = refusal(&app, &path, Some(&share(&german.token))).await;
            assert_eq!(
                (got, code.as_str()),
                (StatusCode::FORBIDDEN, Some("filter_fixed")),
                "{report}"
            );
        }
    }
}

#[tokio::test]
async fn hostile_limits_and_sizes_are_refused() {
    let (_db, app, key1, _) = setup().await;
    let auth = format!("Bearer {key1}");
    let long = "x".repeat(300);
    for path in [
        "/api/v1/tenants/1/breakdown?dimension=country&limit=100000".to_string(),
        "/api/v1/tenants/1/breakdown?dimension=country&limit=-1".to_string(),
        "/api/v1/tenants/1/top?n=5000".to_string(),
        "/api/v1/tenants/1/top?list=users".to_string(),
        "/api/v1/tenants/1/ingest?dead_letters=100000".to_string(),
        "/api/v1/tenants/1/timeseries?to=2026-13-45T00:00:00Z".to_string(),
        "/api/v1/tenants/1/timeseries?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z"
            .to_string(),
        format!("/api/v1/tenants/1/summary?campaign={long}"),
        "/api/v1/tenants/1/breakdown?dimension=country%20OR%201=1".to_string(),
        "/api/v1/tenants/1/breakdown?dimension=country&order=page_url".to_string(),
        "/api/v1/tenants/1/breakdown?dimension=country&order=revenue%20DESC".to_string(),
    ] {
        let (status, code) = refusal(&app, &path, Some(&auth)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(code, "bad_parameter", "{path}");
    }
}

#[tokio::test]
async fn csv_parses_back_to_the_json_numbers() {
    let (_db, app, key1, _) = setup().await;
    for (report, key_column) in [
        ("timeseries?range=24h&granularity=5m", "bucket"),
        ("breakdown?range=24h&dimension=event_type", "value"),
    ] {
        let path = format!("/api/v1/tenants/1/{report}");
        let (_, _, json_text) = get(&app, &path, Some(&key1), None).await;
        let (_, _, csv) = get(&app, &format!("{path}&format=csv"), Some(&key1), None).await;
        let v: Value = serde_json::from_str(&json_text).unwrap();
        let rows = v
            .get("points")
            .or_else(|| v.get("rows"))
            .unwrap()
            .as_array()
            .unwrap();
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let csv_rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        assert_eq!(csv_rows.len(), rows.len(), "{report}");
        assert!(!rows.is_empty());
        for (fields, row) in csv_rows.iter().zip(rows) {
            for (name, field) in header.iter().zip(fields) {
                let json_name = if *name == header[0] { key_column } else { name };
                let expected = &row[json_name];
                match expected {
                    Value::String(s) if json_name == "bucket" => assert_eq!(
                        field.parse::<chrono::DateTime<Utc>>().unwrap(),
                        s.parse::<chrono::DateTime<Utc>>().unwrap()
                    ),
                    Value::String(s) => assert_eq!(field, s, "{report} {name}"),
                    Value::Number(n) => assert!(
                        (field.parse::<f64>().unwrap() - n.as_f64().unwrap()).abs() < 1e-6,
                        "{report} {name}: {field} vs {n}"
                    ),
                    other => panic!("{report} {name}: unexpected {other}"),
                }
            }
        }
    }
}
