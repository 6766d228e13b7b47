//! Reports cannot starve ingest, and no credential can take the reports' capacity: reports run
//! on their own pool with a statement timeout and a request deadline, and a credential or
//! tenant over its concurrency cap is refused at once with 429 and `Retry-After`. A lock on
//! `rollup_state` (every report reads the rollup watermark; ingest never touches it) makes a
//! report as slow as the test needs, on the real database.

use axum::http::StatusCode;
use axum::Router;
use remarketable_core::access::{self, KeyKind};
use remarketable_handler::{app, AppState};
use remarketable_tests::*;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A database, the handler with `extra` settings, and three read keys of tenant 1.
async fn setup(extra: &[(&str, &str)]) -> (TestDb, Router, Vec<String>) {
    let db = TestDb::create().await;
    let client = db.client().await;
    let mut keys = Vec::new();
    for label in ["a", "b", "c"] {
        keys.push(
            access::create_key(&client, Some(1), KeyKind::Read, label)
                .await
                .unwrap()
                .key,
        );
    }
    let settings = settings_with(&db.url(), extra);
    let app = app(Arc::new(AppState::new(settings)));
    (
        db,
        app,
        keys.iter().map(|k| format!("Bearer {k}")).collect(),
    )
}

/// Holds an exclusive lock on the rollup watermark until dropped (the transaction ends with
/// the connection).
async fn block_reports(db: &TestDb) -> tokio_postgres::Client {
    let client = db.client().await;
    client
        .batch_execute("BEGIN; LOCK TABLE rollup_state IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    client
}

const SUMMARY: &str = "/api/v1/tenants/1/summary?range=24h";

#[tokio::test]
async fn a_stuck_report_times_out_with_report_timeout_and_retry_after() {
    let (db, app, auth) = setup(&[("REPORT_TIMEOUT_MS", "300")]).await;
    let lock = block_reports(&db).await;
    let started = Instant::now();
    let answer = call(&app, "GET", SUMMARY, Some(&auth[0]), Value::Null).await;
    let took = started.elapsed();
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.text
    );
    assert_eq!(answer.code(), "report_timeout", "{}", answer.text);
    assert_eq!(answer.headers["retry-after"], "5");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    drop(lock);
    // Once the lock is gone the same report answers.
    let answer = call(&app, "GET", SUMMARY, Some(&auth[0]), Value::Null).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
}

#[tokio::test]
async fn a_credential_over_its_cap_is_refused_at_once_and_others_are_not() {
    let (db, app, auth) = setup(&[
        ("REPORT_TIMEOUT_MS", "3000"),
        ("REPORT_CONCURRENCY_PER_CREDENTIAL", "1"),
        ("REPORT_CONCURRENCY_PER_TENANT", "2"),
        ("REPORT_POOL_SIZE", "4"),
    ])
    .await;
    let lock = block_reports(&db).await;
    let (auth_a, auth_b, auth_c) = (&auth[0], &auth[1], &auth[2]);
    let stuck = {
        let (app, auth) = (app.clone(), auth_a.clone());
        tokio::spawn(async move { call(&app, "GET", SUMMARY, Some(&auth), Value::Null).await })
    };
    // Wait until the first report holds its place.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let refused = call(&app, "GET", SUMMARY, Some(auth_a), Value::Null).await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.text
    );
    assert_eq!(refused.code(), "too_many_requests");
    assert_eq!(refused.headers["retry-after"], "1");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refused at once"
    );
    // Another key of the tenant still has room (the tenant's cap is 2)...
    let second = {
        let (app, auth) = (app.clone(), auth_b.clone());
        tokio::spawn(async move { call(&app, "GET", SUMMARY, Some(&auth), Value::Null).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...and now the tenant is full, whatever the credential.
    let answer = call(&app, "GET", SUMMARY, Some(auth_c), Value::Null).await;
    assert_eq!(
        answer.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        answer.text
    );
    assert!(answer.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("tenant"));
    drop(lock);
    for task in [stuck, second] {
        let answer = task.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    }
    // Places are given back: the first key may report again.
    let again = call(&app, "GET", SUMMARY, Some(auth_a), Value::Null).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
}

#[tokio::test]
async fn ingest_is_served_while_every_report_connection_is_stuck() {
    let (db, app, auth) = setup(&[
        ("REPORT_TIMEOUT_MS", "5000"),
        ("REPORT_POOL_SIZE", "2"),
        ("DB_POOL_SIZE", "2"),
    ])
    .await;
    let lock = block_reports(&db).await;
    let mut stuck = Vec::new();
    for auth in auth.iter().chain(&auth[..1]) {
        let (app, auth) = (app.clone(), auth.clone());
        stuck.push(tokio::spawn(async move {
            call(&app, "GET", SUMMARY, Some(&auth), Value::Null).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let answer = call(
        &app,
        "POST",
        "/ingest",
        None,
        fresh_batch_fixture("eventhub_batch_plain.json"),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert!(took < Duration::from_secs(2), "ingest took {took:?}");
    assert!(db.count("SELECT count(*) FROM events").await > 0);
    drop(lock);
    for task in stuck {
        let answer = task.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    }
}
