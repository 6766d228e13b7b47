//! A share link's holder sees the tenant's figures, never raw payloads or device identifiers:
//! the ingest report's dead letters and the top devices are for the tenant's keys.

use axum::http::StatusCode;
use remarketable_core::access::{self, Filters, KeyKind};
use remarketable_handler::{app, AppState};
use remarketable_tests::*;
use serde_json::Value;
use std::sync::Arc;

const SECRET: &str = "a share-token secret of at least thirty-two bytes";

#[tokio::test]
async fn share_links_see_neither_dead_letter_payloads_nor_devices() {
    let db = TestDb::create().await;
    let mut bad = event(1, 2);
    bad["country"] = "XX".into();
    ingest(&db, "0", 0, &[event(1, 1), bad, event(1, 3)], 10).await;
    let settings = settings_with(&db.url(), &[("SHARE_TOKEN_SECRET", SECRET)]);
    let client = db.client().await;
    let key = access::create_key(&client, Some(1), KeyKind::Read, "k")
        .await
        .unwrap()
        .key;
    let share = access::create_share_token(
        &client,
        settings.share_token_secret.as_ref(),
        1,
        chrono::Duration::hours(1),
        Filters::default(),
        "link",
    )
    .await
    .unwrap()
    .token;
    let app = app(Arc::new(AppState::new(settings)));
    let (key, share) = (format!("Bearer {key}"), format!("Share {share}"));

    let ingest_report = "/api/v1/tenants/1/ingest?range=24h";
    let by_key = call(&app, "GET", ingest_report, Some(&key), Value::Null).await;
    assert_eq!(by_key.status, StatusCode::OK, "{}", by_key.text);
    let letters = by_key.body["recent_dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{}", by_key.text);
    assert!(letters[0]["payload_preview"]
        .as_str()
        .unwrap()
        .contains("XX"));
    let by_link = call(&app, "GET", ingest_report, Some(&share), Value::Null).await;
    assert_eq!(by_link.status, StatusCode::OK, "{}", by_link.text);
    assert_eq!(by_link.body["recent_dead_letters"], serde_json::json!([]));
    assert!(!by_link.text.contains("XX"), "{}", by_link.text);
    // The ledger's counts are the same for both.
    assert_eq!(by_link.body["hours"], by_key.body["hours"]);

    let devices = "/api/v1/tenants/1/top?range=24h&list=devices";
    let by_key = call(&app, "GET", devices, Some(&key), Value::Null).await;
    assert_eq!(by_key.status, StatusCode::OK, "{}", by_key.text);
    let by_link = call(&app, "GET", devices, Some(&share), Value::Null).await;
    assert_eq!(by_link.status, StatusCode::FORBIDDEN, "{}", by_link.text);
    assert_eq!(by_link.code(), "not_for_share_links");
    let pages = "/api/v1/tenants/1/top?range=24h&list=pages";
    let by_link = call(&app, "GET", pages, Some(&share), Value::Null).await;
    assert_eq!(by_link.status, StatusCode::OK, "{}", by_link.text);
}
