//! collect's limits (issue 15 §2) through the Azure handler, against a real PostgreSQL: rates
//! and daily quotas per write key and per tenant with 429 and `Retry-After`, per-tenant
//! overrides set by the admin API, allowed origins, and the counts in the ingest report.

use axum::http::StatusCode;
use axum::Router;
use chrono::Utc;
use remarketable_core::access::{self, KeyKind};
use remarketable_handler::{app, AppState};
use remarketable_tests::*;
use serde_json::{json, Value};
use std::sync::Arc;

fn handler(db: &TestDb, extra: &[(&str, &str)]) -> Router {
    let mut extra = extra.to_vec();
    // Overrides and keys are read on every request, not from a 10 s cache.
    extra.push(("ACCESS_CACHE_TTL_SECONDS", "0"));
    app(Arc::new(AppState::new(settings_with(&db.url(), &extra))))
}

async fn key(db: &TestDb, tenant: Option<i64>, kind: KeyKind) -> String {
    access::create_key(&db.client().await, tenant, kind, "limits")
        .await
        .unwrap()
        .key
}

/// What collect answered: the `res` output's status, headers and JSON body, and how many
/// events went to the hub.
struct Collected {
    status: u16,
    headers: Value,
    body: Value,
    sent: usize,
}

impl Collected {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// `events` page views of tenant 1 through the collect envelope, with these request headers.
async fn collect(
    app: &Router,
    write_key: &str,
    events: usize,
    headers: &[(&str, &str)],
) -> Collected {
    let body: Vec<Value> = (0..events)
        .map(|i| {
            json!({"tenant_id": 1, "event_type": "page_view", "device_id": format!("d{i}"),
                   "page_url": "https://shop.example.com/"})
        })
        .collect();
    let mut request = fixture("http_collect.json");
    let req = &mut request["Data"]["req"];
    req["Headers"]["X-Rmk-Write-Key"] = json!([write_key]);
    for (name, value) in headers {
        req["Headers"][*name] = json!([value]);
    }
    req["Body"] = json!(Value::from(body).to_string());
    let answer = call(app, "POST", "/collect", None, request).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let res = &answer.body["Outputs"]["res"];
    Collected {
        status: res["statusCode"].as_u64().unwrap() as u16,
        headers: res["headers"].clone(),
        body: serde_json::from_str(res["body"].as_str().unwrap()).unwrap(),
        sent: answer.body["Outputs"]["outEvents"]
            .as_array()
            .map_or(0, Vec::len),
    }
}

async fn ingest_report(app: &Router, read_key: &str) -> Value {
    let answer = call(
        app,
        "GET",
        "/api/v1/tenants/1/ingest?range=24h",
        Some(&format!("Bearer {read_key}")),
        Value::Null,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.body["collect"].clone()
}

#[tokio::test]
async fn a_write_key_over_its_rate_gets_429_with_retry_after_and_is_counted() {
    let db = TestDb::create().await;
    // 10 events/s per key: a bucket of 20.
    let app = handler(&db, &[("COLLECT_EVENTS_PER_SECOND_PER_KEY", "10")]);
    let write = key(&db, Some(1), KeyKind::Write).await;
    let mut accepted = 0;
    let mut refused = None;
    for _ in 0..20 {
        let c = collect(&app, &write, 2, &[]).await;
        if c.status == 202 {
            assert_eq!(c.sent, 2);
            accepted += 1;
        } else {
            refused = Some(c);
            break;
        }
    }
    let refused = refused.expect("the key's rate was never enforced");
    // 20 tokens, 2 per request, plus what trickled in meanwhile.
    assert!(
        (10..=12).contains(&accepted),
        "{accepted} requests accepted"
    );
    assert_eq!((refused.status, refused.code()), (429, "too_many_requests"));
    assert_eq!(refused.headers["Retry-After"], "1");
    assert_eq!(refused.sent, 0, "a refused request sends nothing");
    // Another write key of the tenant has its own bucket.
    let other = key(&db, Some(1), KeyKind::Write).await;
    assert_eq!(collect(&app, &other, 2, &[]).await.status, 202);

    // Past the flush interval the next accepted request writes the counts.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(collect(&app, &write, 2, &[]).await.status, 202);
    let read = key(&db, Some(1), KeyKind::Read).await;
    let usage = ingest_report(&app, &read).await;
    let day = &usage["days"][0];
    assert_eq!(day["day"], json!(Utc::now().date_naive()));
    assert_eq!(day["accepted_events"], json!(2 * (accepted + 2)));
    assert_eq!(day["accepted_requests"], json!(accepted + 2));
    assert_eq!(day["refused_rate"], json!(1));
    assert_eq!(usage["limits"]["key_events_per_second"], json!(10));
    assert_eq!(usage["keys"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn the_tenants_rate_bounds_all_its_keys() {
    let db = TestDb::create().await;
    let app = handler(&db, &[("COLLECT_EVENTS_PER_SECOND_PER_TENANT", "5")]);
    // A bucket of 10: the first key's 8 events, then the second key's 4 go into debt.
    let a = key(&db, Some(1), KeyKind::Write).await;
    let b = key(&db, Some(1), KeyKind::Write).await;
    assert_eq!(collect(&app, &a, 8, &[]).await.status, 202);
    assert_eq!(collect(&app, &b, 4, &[]).await.status, 202);
    let refused = collect(&app, &b, 1, &[]).await;
    assert_eq!((refused.status, refused.code()), (429, "too_many_requests"));
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tenant"),
        "{}",
        refused.body
    );
}

#[tokio::test]
async fn a_daily_quota_holds_across_instances_and_waits_for_the_next_utc_day() {
    let db = TestDb::create().await;
    let limits = [("COLLECT_EVENTS_PER_DAY_PER_KEY", "5")];
    let first = handler(&db, &limits);
    let write = key(&db, Some(1), KeyKind::Write).await;
    assert_eq!(collect(&first, &write, 2, &[]).await.status, 202);
    assert_eq!(collect(&first, &write, 2, &[]).await.status, 202);
    let over = collect(&first, &write, 2, &[]).await;
    assert_eq!((over.status, over.code()), (429, "quota_exceeded"));
    assert_eq!(over.sent, 0);
    let retry: i64 = over.headers["Retry-After"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = Utc::now();
    let midnight = (now.date_naive() + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    assert!(
        (retry - (midnight - now).num_seconds()).abs() <= 2,
        "Retry-After {retry} is not the time to the next UTC day"
    );
    // The one event left still fits.
    assert_eq!(collect(&first, &write, 1, &[]).await.status, 202);

    // Another instance reads the stored totals once the first has written them: past the
    // flush interval, the first's next (refused) request writes its counts.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        collect(&first, &write, 1, &[]).await.code(),
        "quota_exceeded"
    );
    let second = handler(&db, &limits);
    let c = collect(&second, &write, 1, &[]).await;
    assert_eq!((c.status, c.code()), (429, "quota_exceeded"), "{}", c.body);
    let stored: i64 = db
        .client()
        .await
        .query_one(
            "SELECT accepted_events FROM collect_usage WHERE tenant_id = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 5);
}

#[tokio::test]
async fn tenant_overrides_set_by_the_admin_replace_the_settings() {
    let db = TestDb::create().await;
    let app = handler(&db, &[]);
    let admin = format!("Bearer {}", key(&db, None, KeyKind::Admin).await);
    let path = "/api/v1/admin/tenants/1/collect-limits";
    let got = call(&app, "GET", path, Some(&admin), Value::Null).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text);
    assert_eq!(got.body["overrides"]["events_per_day"], Value::Null);
    assert_eq!(got.body["limits"]["events_per_day"], json!(100_000_000));

    let set = call(
        &app,
        "PUT",
        path,
        Some(&admin),
        json!({"events_per_day": 3, "key_events_per_second": 0}),
    )
    .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    assert_eq!(set.body["limits"]["events_per_day"], json!(3));
    assert_eq!(set.body["limits"]["key_events_per_second"], json!(0));
    assert_eq!(set.body["limits"]["events_per_second"], json!(2000));

    let write = key(&db, Some(1), KeyKind::Write).await;
    assert_eq!(collect(&app, &write, 2, &[]).await.status, 202);
    let over = collect(&app, &write, 2, &[]).await;
    assert_eq!((over.status, over.code()), (429, "quota_exceeded"));
    assert!(over.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("tenant's quota of 3"));

    // Refusals of the route itself.
    for (body, status, code) in [
        (json!({"events_per_day": -1}), 400, "bad_request"),
        (json!({"per_day": 5}), 400, "bad_request"),
        (
            json!({"events_per_second": 20_000_000}),
            400,
            "bad_parameter",
        ),
    ] {
        let a = call(&app, "PUT", path, Some(&admin), body.clone()).await;
        assert_eq!((a.status.as_u16(), a.code()), (status, code), "{body}");
    }
    let missing = call(
        &app,
        "PUT",
        "/api/v1/admin/tenants/99/collect-limits",
        Some(&admin),
        json!({}),
    )
    .await;
    assert_eq!(
        (missing.status.as_u16(), missing.code()),
        (404, "unknown_tenant")
    );
    let read = format!("Bearer {}", key(&db, Some(1), KeyKind::Read).await);
    let not_admin = call(&app, "GET", path, Some(&read), Value::Null).await;
    assert_eq!(not_admin.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_write_key_with_allowed_origins_refuses_other_pages() {
    let db = TestDb::create().await;
    let app = handler(&db, &[]);
    let admin = format!("Bearer {}", key(&db, None, KeyKind::Admin).await);
    let created = call(
        &app,
        "POST",
        "/api/v1/admin/tenants/1/keys",
        Some(&admin),
        json!({"kind": "write", "allowed_origins": ["https://Shop.Example.com"]}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(
        created.body["allowed_origins"],
        json!(["https://shop.example.com"])
    );
    let write = created.body["key"].as_str().unwrap().to_string();

    for (headers, status) in [
        (vec![("Origin", "https://shop.example.com")], 202),
        (vec![], 202),
        (vec![("Referer", "https://shop.example.com/cart")], 202),
        (vec![("Origin", "https://evil.example")], 403),
        (vec![("Origin", "null")], 403),
        (vec![("Referer", "https://evil.example/page")], 403),
    ] {
        let c = collect(&app, &write, 1, &headers).await;
        assert_eq!(c.status, status, "{headers:?}: {}", c.body);
        if status == 403 {
            assert_eq!(c.code(), "origin_not_allowed");
            assert_eq!(c.sent, 0);
        }
    }

    let listed = call(
        &app,
        "GET",
        "/api/v1/admin/tenants/1/keys",
        Some(&admin),
        Value::Null,
    )
    .await;
    assert_eq!(
        listed.body["keys"][0]["allowed_origins"],
        json!(["https://shop.example.com"]),
        "{}",
        listed.text
    );
    for body in [
        json!({"kind": "read", "allowed_origins": ["https://shop.example.com"]}),
        json!({"kind": "write", "allowed_origins": []}),
        json!({"kind": "write", "allowed_origins": ["shop.example.com"]}),
        json!({"kind": "write", "allowed_origins": ["https://shop.example.com/path"]}),
    ] {
        let a = call(
            &app,
            "POST",
            "/api/v1/admin/tenants/1/keys",
            Some(&admin),
            body.clone(),
        )
        .await;
        assert_eq!(
            (a.status.as_u16(), a.code()),
            (400, "bad_parameter"),
            "{body}"
        );
    }
}
