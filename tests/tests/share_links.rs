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
        None,
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

/// A link made with a read key dies with that key; the admin sees and revokes a tenant's links;
/// listings come in pages.
#[tokio::test]
async fn share_links_die_with_their_key_and_the_admin_lists_and_revokes_them() {
    let db = TestDb::create().await;
    ingest(&db, "0", 0, &[event(1, 1)], 10).await;
    let settings = settings_with(&db.url(), &[("SHARE_TOKEN_SECRET", SECRET)]);
    let client = db.client().await;
    let read = access::create_key(&client, Some(1), KeyKind::Read, "maker")
        .await
        .unwrap();
    let other = access::create_key(&client, Some(1), KeyKind::Read, "other")
        .await
        .unwrap();
    let admin = access::create_key(&client, None, KeyKind::Admin, "ops")
        .await
        .unwrap();
    let app = app(Arc::new(AppState::new(settings)));
    let (read_auth, other_auth, admin_auth) = (
        format!("Bearer {}", read.key),
        format!("Bearer {}", other.key),
        format!("Bearer {}", admin.key),
    );
    let make = |auth: String, label: &'static str| {
        let app = app.clone();
        async move {
            let r = call(
                &app,
                "POST",
                "/api/v1/tenants/1/share-tokens",
                Some(&auth),
                serde_json::json!({"expires_in_seconds": 3600, "label": label}),
            )
            .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            (
                r.body["token_id"].as_str().unwrap().to_string(),
                format!("Share {}", r.body["token"].as_str().unwrap()),
            )
        }
    };
    let mut mine = Vec::new();
    for label in ["a", "b", "c"] {
        mine.push(make(read_auth.clone(), label).await);
    }
    let theirs = make(other_auth.clone(), "d").await;
    let whoami = "/api/v1/whoami";
    for (_, link) in mine.iter().chain([&theirs]) {
        // Used once, so the verifier caches it: revocation must reach the cache too.
        let r = call(&app, "GET", whoami, Some(link), Value::Null).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }

    // Pages of two, newest first, then the rest; a bad page is a JSON 400.
    let list = "/api/v1/admin/tenants/1/share-tokens";
    let first = call(
        &app,
        "GET",
        &format!("{list}?limit=2"),
        Some(&admin_auth),
        Value::Null,
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let labels = |r: &Answer| -> Vec<String> {
        r.body["share_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["label"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(labels(&first), ["d", "c"]);
    let next = first.body["next"].as_str().unwrap().to_string();
    let second = call(
        &app,
        "GET",
        &format!("{list}?limit=2&after={next}"),
        Some(&admin_auth),
        Value::Null,
    )
    .await;
    assert_eq!(labels(&second), ["b", "a"]);
    assert_eq!(second.body["next"], Value::Null);
    for bad in [
        "?limit=0",
        "?limit=1001",
        "?limit=x",
        "?after=..%2F",
        "?page=2",
    ] {
        let r = call(
            &app,
            "GET",
            &format!("{list}{bad}"),
            Some(&admin_auth),
            Value::Null,
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
        assert!(r.body["error"]["code"].is_string(), "{bad}: {}", r.text);
    }
    // The tenant's own listing has the same pages; a read key cannot use the admin route.
    let own = call(
        &app,
        "GET",
        "/api/v1/tenants/1/share-tokens?limit=2",
        Some(&read_auth),
        Value::Null,
    )
    .await;
    assert_eq!(labels(&own), ["d", "c"]);
    let refused = call(&app, "GET", list, Some(&read_auth), Value::Null).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    let unknown = call(
        &app,
        "GET",
        "/api/v1/admin/tenants/77/share-tokens",
        Some(&admin_auth),
        Value::Null,
    )
    .await;
    assert_eq!(unknown.code(), "unknown_tenant", "{}", unknown.text);

    // Revoking the maker key kills its three links at once, not the other key's.
    let r = call(
        &app,
        "DELETE",
        &format!("/api/v1/admin/keys/{}", read.key_id),
        Some(&admin_auth),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    for (_, link) in &mine {
        let r = call(&app, "GET", whoami, Some(link), Value::Null).await;
        assert_eq!(r.code(), "share_revoked", "{}", r.text);
    }
    let r = call(&app, "GET", whoami, Some(&theirs.1), Value::Null).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let all = call(&app, "GET", list, Some(&admin_auth), Value::Null).await;
    for t in all.body["share_tokens"].as_array().unwrap() {
        let revoked = !t["revoked_at"].is_null();
        assert_eq!(revoked, t["label"] != "d", "{t}");
        let maker = if t["label"] == "d" {
            &other.key_id
        } else {
            &read.key_id
        };
        assert_eq!(t["created_by"], maker.as_str(), "{t}");
    }

    // The admin revokes the remaining link; a second time, or another tenant's id, is a 404.
    let path = format!("{list}/{}", theirs.0);
    let r = call(&app, "DELETE", &path, Some(&admin_auth), Value::Null).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = call(&app, "GET", whoami, Some(&theirs.1), Value::Null).await;
    assert_eq!(r.code(), "share_revoked", "{}", r.text);
    let elsewhere = format!("/api/v1/admin/tenants/2/share-tokens/{}", theirs.0);
    let r = call(&app, "DELETE", &elsewhere, Some(&admin_auth), Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
}

/// The admin's key listing comes in pages too.
#[tokio::test]
async fn key_listings_come_in_pages() {
    let db = TestDb::create().await;
    ingest(&db, "0", 0, &[event(1, 1)], 10).await;
    let client = db.client().await;
    let admin = access::create_key(&client, None, KeyKind::Admin, "ops")
        .await
        .unwrap();
    let mut made = Vec::new();
    for n in 0..5 {
        made.push(
            access::create_key(&client, Some(1), KeyKind::Write, &format!("w{n}"))
                .await
                .unwrap()
                .key_id,
        );
    }
    let app = app(Arc::new(AppState::new(settings_for(&db.url()))));
    let auth = format!("Bearer {}", admin.key);
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let r = call(
            &app,
            "GET",
            &format!("/api/v1/admin/tenants/1/keys?limit=2{after}"),
            Some(&auth),
            Value::Null,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let keys = r.body["keys"].as_array().unwrap();
        assert!(keys.len() <= 2);
        seen.extend(
            keys.iter()
                .map(|k| k["key_id"].as_str().unwrap().to_string()),
        );
        match r.body["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, made, "every key once, oldest first");
}
