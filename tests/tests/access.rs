//! Access control through the real router and a real PostgreSQL: API keys, admin keys, share
//! tokens and the write keys of `collect`.

use axum::http::StatusCode;
use axum::Router;
use chrono::{Duration, Utc};
use remarketable_core::access::{self, KeyKind, ShareClaims};
use remarketable_core::config::ShareSecret;
use remarketable_handler::{app, AppState};
use remarketable_tests::*;
use serde_json::{json, Value};
use std::sync::Arc;

const SECRET_A: &str = "share-secret-A-0123456789-0123456789-abcdef";
const SECRET_B: &str = "share-secret-B-0123456789-0123456789-abcdef";

fn handler(db: &TestDb, secret: Option<&str>, cache_seconds: u64) -> Router {
    let mut settings = db.settings(None);
    settings.share_token_secret = secret.map(|s| ShareSecret::new(s).unwrap());
    settings.access_cache_ttl = std::time::Duration::from_secs(cache_seconds);
    app(Arc::new(AppState::new(settings)))
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

async fn key(db: &TestDb, tenant: Option<i64>, kind: KeyKind) -> access::NewKey {
    access::create_key(&db.client().await, tenant, kind, "test")
        .await
        .unwrap()
}

#[tokio::test]
async fn admin_keys_register_tenants_and_make_keys_shown_once_and_stored_hashed() {
    let db = TestDb::create().await;
    let app = handler(&db, None, 10);
    let admin = bearer(&key(&db, None, KeyKind::Admin).await.key);
    let admin = Some(admin.as_str());

    let tenant = json!({"tenant_id": 10, "name": "Shop 10", "time_zone": "Europe/Berlin"});
    let a = call(&app, "POST", "/api/v1/admin/tenants", admin, tenant.clone()).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(a.body["time_zone"], "Europe/Berlin");
    assert_eq!(
        db.count(
            "SELECT count(*) FROM tenants WHERE tenant_id = 10 AND time_zone = 'Europe/Berlin'"
        )
        .await,
        1
    );
    let a = call(&app, "POST", "/api/v1/admin/tenants", admin, tenant).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::CONFLICT, "tenant_exists")
    );
    for (body, code) in [
        (
            json!({"tenant_id": 11, "name": "x", "time_zone": "Mars/Olympus"}),
            "bad_time_zone",
        ),
        // A NUL is refused before the database, which cannot store it (was a 500).
        (
            json!({"tenant_id": 11, "name": "x", "time_zone": "Europe/Berlin\u{0}"}),
            "bad_time_zone",
        ),
        (json!({"tenant_id": 0, "name": "x"}), "bad_tenant_id"),
        (json!({"tenant_id": 11, "name": " "}), "bad_name"),
        (
            json!({"tenant_id": 11, "name": "x", "sql": "1"}),
            "bad_request",
        ),
        (json!({"tenant_id": "11", "name": "x"}), "bad_request"),
        // A body is a JSON object (serde alone would read this array as the struct's fields).
        (json!([11, "x"]), "bad_request"),
        (json!({"tenant_id": 11.5, "name": "x"}), "bad_request"),
    ] {
        let a = call(&app, "POST", "/api/v1/admin/tenants", admin, body.clone()).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::BAD_REQUEST, code),
            "{body}"
        );
    }

    // JSON has one number type: 11.0 is the integer 11 (as the document's `integer` says).
    let a = call(
        &app,
        "POST",
        "/api/v1/admin/tenants",
        admin,
        json!({"tenant_id": 11.0, "name": "Shop 11"}),
    )
    .await;
    assert_eq!(
        (a.status, &a.body["tenant_id"]),
        (StatusCode::CREATED, &json!(11)),
        "{}",
        a.text
    );

    // A read key (the default kind), shown once, never cached by anyone.
    let a = call(
        &app,
        "POST",
        "/api/v1/admin/tenants/10/keys",
        admin,
        json!({"label": "dashboard"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(a.headers["cache-control"], "no-store");
    let read_key = a.body["key"].as_str().unwrap().to_string();
    let key_id = a.body["key_id"].as_str().unwrap().to_string();
    assert!(read_key.starts_with(&format!("rmk_read_{key_id}_")));
    // The secret may itself contain '_' (base64url).
    let secret = read_key[format!("rmk_read_{key_id}_").len()..].to_string();
    assert!(secret.len() >= 43, "32 random bytes, base64url");
    let a = call(
        &app,
        "POST",
        "/api/v1/admin/tenants/10/keys",
        admin,
        json!({"kind": "write", "label": "storefront"}),
    )
    .await;
    assert!(a.body["key"].as_str().unwrap().starts_with("rmk_write_"));

    // Listed without secrets; stored only as the SHA-256 of the key text.
    let a = call(
        &app,
        "GET",
        "/api/v1/admin/tenants/10/keys",
        admin,
        Value::Null,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let keys = a.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["key_id"], key_id.as_str());
    assert_eq!(keys[0]["kind"], "read");
    assert_eq!(keys[0]["label"], "dashboard");
    assert!(keys[0].get("key").is_none());
    assert!(!a.text.contains(&secret));
    let client = db.client().await;
    let stored = client
        .query_one(
            "SELECT secret_hash = sha256(convert_to($2, 'UTF8')), to_jsonb(k)::text \
             FROM api_keys k WHERE key_id = $1",
            &[&key_id, &read_key],
        )
        .await
        .unwrap();
    assert!(
        stored.get::<_, bool>(0),
        "the hash is SHA-256 of the key text"
    );
    let row: String = stored.get(1);
    assert!(!row.contains(&secret), "{row}");
    // Nowhere else in the database either.
    let everywhere: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT to_jsonb(t)::text AS r FROM tenants t \
             UNION ALL SELECT to_jsonb(s)::text FROM share_tokens s \
             UNION ALL SELECT to_jsonb(k)::text FROM api_keys k) x WHERE r LIKE '%' || $1 || '%'",
            &[&secret],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(everywhere, 0);

    // The key works, and its use is recorded.
    let rk = bearer(&read_key);
    let a = call(
        &app,
        "GET",
        "/api/v1/tenants/10/whoami",
        Some(&rk),
        Value::Null,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(
        a.body,
        json!({"tenant_id": 10, "tenant_name": "Shop 10", "time_zone": "Europe/Berlin",
               "read_only": false, "fixed_filters": {}, "expires_at": null,
               "via": {"type": "api_key", "key_id": key_id}})
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM api_keys WHERE key_id = '{key_id}' AND last_used_at IS NOT NULL"
        ))
        .await,
        1
    );

    // Bad requests for keys.
    for (path, body, status, code) in [
        (
            "/api/v1/admin/tenants/99/keys",
            json!({}),
            StatusCode::NOT_FOUND,
            "unknown_tenant",
        ),
        (
            "/api/v1/admin/tenants/10/keys",
            json!({"kind": "owner"}),
            StatusCode::BAD_REQUEST,
            "bad_kind",
        ),
        (
            "/api/v1/admin/tenants/10/keys",
            json!({"kind": "admin"}),
            StatusCode::BAD_REQUEST,
            "bad_kind",
        ),
        (
            "/api/v1/admin/tenants/ten/keys",
            json!({}),
            StatusCode::BAD_REQUEST,
            "bad_tenant_id",
        ),
        (
            "/api/v1/admin/tenants/10/keys",
            json!({"label": "x".repeat(201)}),
            StatusCode::BAD_REQUEST,
            "bad_label",
        ),
    ] {
        let a = call(&app, "POST", path, admin, body).await;
        assert_eq!((a.status, a.code()), (status, code), "{path}");
    }

    // Revoked: refused at once on this instance.
    let a = call(
        &app,
        "DELETE",
        &format!("/api/v1/admin/keys/{key_id}"),
        admin,
        Value::Null,
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = call(
        &app,
        "GET",
        "/api/v1/tenants/10/whoami",
        Some(&rk),
        Value::Null,
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    assert!(!a.text.contains(&secret));
    let a = call(
        &app,
        "DELETE",
        "/api/v1/admin/keys/00000000000000ff",
        admin,
        Value::Null,
    )
    .await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "not_found"));
    let a = call(
        &app,
        "DELETE",
        "/api/v1/admin/keys/not-an-id",
        admin,
        Value::Null,
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::BAD_REQUEST, "bad_key_id")
    );
}

#[tokio::test]
async fn a_key_revoked_elsewhere_is_refused_once_the_cache_expires() {
    let db = TestDb::create().await;
    let read = key(&db, Some(1), KeyKind::Read).await;
    let rk = bearer(&read.key);
    let uncached = handler(&db, None, 0);
    let cached = handler(&db, None, 300);
    for app in [&uncached, &cached] {
        let a = call(
            app,
            "GET",
            "/api/v1/tenants/1/whoami",
            Some(&rk),
            Value::Null,
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
    }
    // As `remarketable key revoke` does, on another process.
    access::revoke_key(&db.client().await, &read.key_id)
        .await
        .unwrap();
    let a = call(
        &uncached,
        "GET",
        "/api/v1/tenants/1/whoami",
        Some(&rk),
        Value::Null,
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    // Within its TTL the other instance still trusts what it verified (documented).
    let a = call(
        &cached,
        "GET",
        "/api/v1/tenants/1/whoami",
        Some(&rk),
        Value::Null,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    // A key with a right id and a wrong secret is refused even while the id is cached.
    let forged = format!("{}A", &read.key[..read.key.len() - 1]);
    let forged = if forged == read.key {
        format!("{}B", &read.key[..read.key.len() - 1])
    } else {
        forged
    };
    let a = call(
        &cached,
        "GET",
        "/api/v1/tenants/1/whoami",
        Some(&bearer(&forged)),
        Value::Null,
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
}

#[tokio::test]
async fn credentials_of_the_wrong_kind_or_tenant_are_refused() {
    let db = TestDb::create().await;
    let app = handler(&db, Some(SECRET_A), 10);
    let read1 = bearer(&key(&db, Some(1), KeyKind::Read).await.key);
    let read2 = bearer(&key(&db, Some(2), KeyKind::Read).await.key);
    let write1 = key(&db, Some(1), KeyKind::Write).await.key;
    let admin = bearer(&key(&db, None, KeyKind::Admin).await.key);
    let share1 = call(
        &app,
        "POST",
        "/api/v1/tenants/1/share-tokens",
        Some(&read1),
        json!({"expires_in_seconds": 3600}),
    )
    .await;
    assert_eq!(share1.status, StatusCode::CREATED, "{}", share1.text);
    let share1 = format!("Share {}", share1.body["token"].as_str().unwrap());
    let share2 = call(
        &app,
        "POST",
        "/api/v1/tenants/2/share-tokens",
        Some(&read2),
        json!({"expires_in_seconds": 3600}),
    )
    .await;
    let token2_id = share2.body["token_id"].as_str().unwrap().to_string();

    // Admin endpoints refuse tenant keys and share tokens.
    let new_tenant = json!({"tenant_id": 20, "name": "x"});
    for (credential, status, code) in [
        (read1.as_str(), StatusCode::FORBIDDEN, "forbidden"),
        (&bearer(&write1), StatusCode::FORBIDDEN, "forbidden"),
        (&share1, StatusCode::FORBIDDEN, "forbidden"),
        (
            "Bearer rmk_admin_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        ("Bearer nonsense", StatusCode::UNAUTHORIZED, "unauthorized"),
        (
            "Basic YWRtaW46YWRtaW4=",
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
    ] {
        for (method, path, body) in [
            ("POST", "/api/v1/admin/tenants", new_tenant.clone()),
            ("POST", "/api/v1/admin/tenants/1/keys", json!({})),
            ("GET", "/api/v1/admin/tenants/1/keys", Value::Null),
            ("DELETE", "/api/v1/admin/keys/0123456789abcdef", Value::Null),
        ] {
            let a = call(&app, method, path, Some(credential), body).await;
            assert_eq!(
                (a.status, a.code()),
                (status, code),
                "{method} {path} with {credential}"
            );
            let secret = credential.split_once(' ').unwrap().1;
            assert!(
                !a.text.contains(secret),
                "echoes the credential: {}",
                a.text
            );
        }
    }
    let a = call(
        &app,
        "POST",
        "/api/v1/admin/tenants",
        None,
        new_tenant.clone(),
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let a = call(
        &app,
        "POST",
        "/api/v1/admin/tenants",
        Some(&admin),
        new_tenant,
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED);

    // Tenant endpoints refuse admin and write keys.
    for credential in [&admin, &bearer(&write1)] {
        let a = call(
            &app,
            "GET",
            "/api/v1/tenants/1/whoami",
            Some(credential),
            Value::Null,
        )
        .await;
        assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "forbidden"));
    }

    // Tenant 1's credentials cannot reach tenant 2: answered as if it did not exist.
    for credential in [&read1, &share1] {
        for (method, path) in [
            ("GET", "/api/v1/tenants/2/whoami".to_string()),
            ("GET", "/api/v1/tenants/2/share-tokens".to_string()),
            (
                "DELETE",
                format!("/api/v1/tenants/2/share-tokens/{token2_id}"),
            ),
            ("GET", "/api/v1/tenants/99/whoami".to_string()),
        ] {
            let a = call(&app, method, &path, Some(credential), Value::Null).await;
            assert_eq!(
                (a.status, a.code()),
                (StatusCode::NOT_FOUND, "not_found"),
                "{method} {path}"
            );
        }
    }
    // Tenant 2's token was not revoked by tenant 1's attempt, and tenant 1 cannot revoke it by
    // naming it under its own path either.
    let a = call(
        &app,
        "DELETE",
        &format!("/api/v1/tenants/1/share-tokens/{token2_id}"),
        Some(&read1),
        Value::Null,
    )
    .await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "not_found"));
    assert_eq!(
        db.count("SELECT count(*) FROM share_tokens WHERE revoked_at IS NOT NULL")
            .await,
        0
    );
}

/// A token signed with `secret`, stored as created `ago` and expiring at `expires_at`.
async fn stored_token(
    db: &TestDb,
    secret: &str,
    tenant: i64,
    created_ago: Duration,
    expires_at: chrono::DateTime<Utc>,
) -> String {
    let token_id = format!("{:016x}", rand_id());
    let expires_at = chrono::DateTime::from_timestamp(expires_at.timestamp(), 0).unwrap();
    db.client()
        .await
        .execute(
            "INSERT INTO share_tokens (token_id, tenant_id, expires_at, created_at) \
             VALUES ($1, $2, $3, now() - $4::text::interval)",
            &[
                &token_id,
                &tenant,
                &expires_at,
                &format!("{} seconds", created_ago.num_seconds()),
            ],
        )
        .await
        .unwrap();
    access::seal_share_token(
        &ShareSecret::new(secret).unwrap(),
        &ShareClaims {
            token_id,
            tenant_id: tenant,
            expires_at,
            filters: Default::default(),
        },
    )
}

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::Instant::now())
}

#[tokio::test]
async fn share_tokens_are_signed_expiring_revocable_and_read_only() {
    let db = TestDb::create().await;
    let app = handler(&db, Some(SECRET_A), 10);
    let read = bearer(&key(&db, Some(1), KeyKind::Read).await.key);

    let a = call(
        &app,
        "POST",
        "/api/v1/tenants/1/share-tokens",
        Some(&read),
        json!({"expires_in_seconds": 7 * 86400, "filters": {"country": "DE", "campaign": "bf-26"}, "label": "board"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(a.headers["cache-control"], "no-store");
    let token = a.body["token"].as_str().unwrap().to_string();
    let token_id = a.body["token_id"].as_str().unwrap().to_string();
    let expires_at = a.body["expires_at"].clone();
    let expiry: chrono::DateTime<Utc> = serde_json::from_value(expires_at.clone()).unwrap();
    assert!(
        (expiry - Utc::now() - Duration::days(7))
            .num_seconds()
            .abs()
            < 5
    );
    let filters = json!({"campaign": "bf-26", "country": "DE"});
    assert_eq!(a.body["filters"], filters);

    // Valid, from the header or the query (iframes); fixed filters reach TenantAccess.
    let expected = json!({"tenant_id": 1, "tenant_name": "shop 1", "time_zone": "UTC",
        "read_only": true, "fixed_filters": filters,
        "expires_at": expires_at, "via": {"type": "share_token", "token_id": token_id, "expires_at": expires_at}});
    let share = format!("Share {token}");
    let a = call(
        &app,
        "GET",
        "/api/v1/tenants/1/whoami",
        Some(&share),
        Value::Null,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.body, expected);
    let a = call(
        &app,
        "GET",
        &format!("/api/v1/tenants/1/whoami?share={token}"),
        None,
        Value::Null,
    )
    .await;
    assert_eq!(a.body, expected);
    let a = call(
        &app,
        "GET",
        &format!("/api/v1/tenants/1/whoami?share={token}"),
        Some(&read),
        Value::Null,
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::BAD_REQUEST, "ambiguous_credentials")
    );

    // Read-only: a share token cannot make, list or revoke share tokens.
    for (method, path) in [
        ("POST", "/api/v1/tenants/1/share-tokens".to_string()),
        ("GET", "/api/v1/tenants/1/share-tokens".to_string()),
        (
            "DELETE",
            format!("/api/v1/tenants/1/share-tokens/{token_id}"),
        ),
    ] {
        let a = call(
            &app,
            method,
            &path,
            Some(&share),
            json!({"expires_in_seconds": 3600}),
        )
        .await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{method} {path}"
        );
    }

    // Tampered: a changed signature, or a payload for another tenant under the old signature.
    let (payload, signature) = token.strip_prefix("rms_").unwrap().split_once('.').unwrap();
    let flipped = if signature.starts_with('A') { 'B' } else { 'A' };
    let bad_signature = format!("Share rms_{payload}.{flipped}{}", &signature[1..]);
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&b64.decode(payload).unwrap()).unwrap();
    claims["ten"] = json!(2);
    claims["f"] = json!({});
    let other_tenant = format!("Share rms_{}.{signature}", b64.encode(claims.to_string()));
    let other_secret = app_with_other_secret(&db);
    for (app, credential, path) in [
        (&app, bad_signature.as_str(), "/api/v1/tenants/1/whoami"),
        (&app, other_tenant.as_str(), "/api/v1/tenants/2/whoami"),
        (&app, "Share rms_garbage", "/api/v1/tenants/1/whoami"),
        (&other_secret, share.as_str(), "/api/v1/tenants/1/whoami"),
    ] {
        let a = call(app, "GET", path, Some(credential), Value::Null).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{credential}"
        );
        assert!(!a.text.contains(payload));
    }

    // Expired.
    let expired = stored_token(
        &db,
        SECRET_A,
        1,
        Duration::hours(2),
        Utc::now() - Duration::hours(1),
    )
    .await;
    let a = call(
        &app,
        "GET",
        "/api/v1/tenants/1/whoami",
        Some(&format!("Share {expired}")),
        Value::Null,
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::UNAUTHORIZED, "share_expired")
    );
    // Signed correctly but never stored (e.g. made with the secret for another database).
    let unknown = access::seal_share_token(
        &ShareSecret::new(SECRET_A).unwrap(),
        &ShareClaims {
            token_id: "00000000000000aa".into(),
            tenant_id: 1,
            expires_at: chrono::DateTime::from_timestamp(Utc::now().timestamp() + 3600, 0).unwrap(),
            filters: Default::default(),
        },
    );
    let a = call(
        &app,
        "GET",
        "/api/v1/tenants/1/whoami",
        Some(&format!("Share {unknown}")),
        Value::Null,
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );

    // Listed (without the token), then revoked.
    let a = call(
        &app,
        "GET",
        "/api/v1/tenants/1/share-tokens",
        Some(&read),
        Value::Null,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let listed = &a.body["share_tokens"];
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["token_id"] == token_id.as_str()
            && t["label"] == "board"
            && t["filters"] == filters
            && t["revoked_at"].is_null()));
    assert!(!a.text.contains(signature));
    let a = call(
        &app,
        "DELETE",
        &format!("/api/v1/tenants/1/share-tokens/{token_id}"),
        Some(&read),
        Value::Null,
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = call(
        &app,
        "GET",
        "/api/v1/tenants/1/whoami",
        Some(&share),
        Value::Null,
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::UNAUTHORIZED, "share_revoked")
    );
    let a = call(
        &app,
        "DELETE",
        "/api/v1/tenants/1/share-tokens/00000000000000bb",
        Some(&read),
        Value::Null,
    )
    .await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "not_found"));

    // Closed inputs.
    for (body, code) in [
        (json!({"expires_in_seconds": 91 * 86400}), "bad_expiry"),
        (json!({"expires_in_seconds": 10}), "bad_expiry"),
        (
            json!({"expires_in_seconds": 3600, "filters": {"tenant_id": "2"}}),
            "bad_filter",
        ),
        (
            json!({"expires_in_seconds": 3600, "filters": {"country": "germany"}}),
            "bad_filter",
        ),
        (json!({"filters": {}}), "bad_request"),
    ] {
        let a = call(
            &app,
            "POST",
            "/api/v1/tenants/1/share-tokens",
            Some(&read),
            body.clone(),
        )
        .await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::BAD_REQUEST, code),
            "{body}"
        );
    }
    let a = call(
        &app,
        "DELETE",
        "/api/v1/tenants/1/share-tokens/xyz",
        Some(&read),
        Value::Null,
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::BAD_REQUEST, "bad_token_id")
    );

    // Without SHARE_TOKEN_SECRET share tokens are refused, made or presented.
    let disabled = handler(&db, None, 10);
    let a = call(
        &disabled,
        "POST",
        "/api/v1/tenants/1/share-tokens",
        Some(&read),
        json!({"expires_in_seconds": 3600}),
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::FORBIDDEN, "share_tokens_disabled")
    );
    let fresh = stored_token(
        &db,
        SECRET_A,
        1,
        Duration::zero(),
        Utc::now() + Duration::hours(1),
    )
    .await;
    let a = call(
        &disabled,
        "GET",
        "/api/v1/tenants/1/whoami",
        Some(&format!("Share {fresh}")),
        Value::Null,
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::FORBIDDEN, "share_tokens_disabled")
    );
    let a = call(
        &app,
        "GET",
        "/api/v1/tenants/1/whoami",
        Some(&format!("Share {fresh}")),
        Value::Null,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
}

fn app_with_other_secret(db: &TestDb) -> Router {
    handler(db, Some(SECRET_B), 10)
}

/// The `collect` fixture with its body replaced and the write key set (or removed).
fn collect_request(events: &[Value], header_key: Option<&str>) -> Value {
    let mut request = fixture("http_collect.json");
    let req = &mut request["Data"]["req"];
    req["Body"] = json!(Value::Array(events.to_vec()).to_string());
    let headers = req["Headers"].as_object_mut().unwrap();
    headers.remove("Content-Length");
    match header_key {
        Some(k) => {
            headers.insert("X-Rmk-Write-Key".into(), json!([k]));
        }
        None => {
            headers.remove("X-Rmk-Write-Key");
        }
    }
    request
}

/// The client's status and error code, and how many events went to the hub.
async fn collect(app: &Router, request: Value) -> (u64, String, usize, String) {
    let a = call(app, "POST", "/collect", None, request).await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "the invocation itself succeeds: {}",
        a.text
    );
    let res = &a.body["Outputs"]["res"];
    let body: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    let sent = a.body["Outputs"]
        .get("outEvents")
        .map(|o| o.as_array().unwrap().len())
        .unwrap_or(0);
    (
        res["statusCode"].as_u64().unwrap(),
        body["error"]["code"].as_str().unwrap_or("").to_string(),
        sent,
        a.text,
    )
}

#[tokio::test]
async fn collect_needs_a_write_key_of_the_events_tenant() {
    let db = TestDb::create().await;
    let app = handler(&db, None, 10);
    let write1 = key(&db, Some(1), KeyKind::Write).await;
    let write2 = key(&db, Some(2), KeyKind::Write).await.key;
    let read1 = key(&db, Some(1), KeyKind::Read).await.key;
    let events = [event(1, 1), event(1, 2)];

    let (status, code, sent, text) = collect(&app, collect_request(&events, None)).await;
    assert_eq!((status, code.as_str(), sent), (401, "unauthorized", 0));
    assert!(!text.contains("rmk_"));

    let (status, code, sent, _) = collect(&app, collect_request(&events, Some(&read1))).await;
    assert_eq!((status, code.as_str(), sent), (403, "forbidden", 0));

    let (status, code, sent, text) = collect(&app, collect_request(&events, Some(&write2))).await;
    assert_eq!((status, code.as_str(), sent), (403, "wrong_tenant", 0));
    assert!(text.contains("event 0"), "{text}");
    assert!(!text.contains(&write2));

    let mixed = [event(1, 1), event(2, 2), event(1, 3)];
    let (status, code, sent, text) =
        collect(&app, collect_request(&mixed, Some(&write1.key))).await;
    assert_eq!((status, code.as_str(), sent), (403, "wrong_tenant", 0));
    assert!(text.contains("event 1"), "{text}");

    let (status, _, sent, text) = collect(&app, collect_request(&events, Some(&write1.key))).await;
    assert_eq!((status, sent), (202, 2), "{text}");
    assert!(!text.contains(&write1.key));

    // navigator.sendBeacon cannot set headers: the key may come in the query, which the host
    // hands over as Query (or only inside Url).
    let mut beacon = collect_request(&events, None);
    beacon["Data"]["req"]["Query"] = json!({"write_key": write1.key});
    let (status, _, sent, _) = collect(&app, beacon).await;
    assert_eq!((status, sent), (202, 2));
    let mut beacon = collect_request(&events, None);
    beacon["Data"]["req"]["Url"] = json!(format!(
        "https://wwi-remarketable.azurewebsites.net/api/collect?write_key={}",
        write1.key
    ));
    let (status, _, sent, _) = collect(&app, beacon).await;
    assert_eq!((status, sent), (202, 2));

    // Revoked on this instance: refused at once.
    let admin = bearer(&key(&db, None, KeyKind::Admin).await.key);
    let a = call(
        &app,
        "DELETE",
        &format!("/api/v1/admin/keys/{}", write1.key_id),
        Some(&admin),
        Value::Null,
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let (status, code, sent, _) = collect(&app, collect_request(&events, Some(&write1.key))).await;
    assert_eq!((status, code.as_str(), sent), (401, "unauthorized", 0));
}

#[tokio::test]
async fn collect_without_a_database_answers_503_and_sends_nothing() {
    let settings =
        settings_for("postgres://postgres:hunter2@127.0.0.1:9/remarketable?sslmode=disable");
    let app = app(Arc::new(AppState::new(settings)));
    let request = collect_request(
        &[event(1, 1)],
        Some("rmk_write_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    );
    let (status, code, sent, text) = collect(&app, request).await;
    assert_eq!(
        (status, code.as_str(), sent),
        (503, "database_unavailable", 0)
    );
    assert!(!text.contains("hunter2"));
}
