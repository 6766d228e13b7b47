//! The custom handler's HTTP contract with the Functions host, through `app(state)` without a
//! socket, on the committed fixtures and a real PostgreSQL.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use chrono::Utc;
use http_body_util::BodyExt;
use remarketable_handler::envelope::{EventHubInvocation, InvocationRequest};
use remarketable_handler::{app, AppState};
use remarketable_tests::*;
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

fn handler(settings: remarketable_core::Settings) -> Router {
    app(Arc::new(AppState::new(settings)))
}

async fn call(app: &Router, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(if body.is_null() {
            Body::empty()
        } else {
            Body::from(body.to_string())
        })
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

fn closed_port_settings() -> remarketable_core::Settings {
    // Port 9 (discard) on loopback: nothing listens there; connections are refused at once.
    settings_for("postgres://postgres:hunter2@127.0.0.1:9/remarketable?sslmode=disable")
}

#[tokio::test]
async fn readiness_answers_without_touching_the_database() {
    let app = handler(closed_port_settings());
    let started = std::time::Instant::now();
    let (status, body) = call(&app, "GET", "/", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!("ready"));
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
}

#[test]
fn fixtures_round_trip_through_the_envelope_types() {
    for name in [
        "eventhub_batch_plain.json",
        "eventhub_batch_double_encoded.json",
        "http_collect.json",
        "timer_maintenance.json",
    ] {
        let original = fixture(name);
        let parsed: InvocationRequest = serde_json::from_value(original.clone()).unwrap();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), original, "{name}");
    }
}

#[test]
fn both_encodings_decode_to_the_same_batch() {
    let decode = |name| {
        let request: EventHubInvocation = serde_json::from_value(fixture(name)).unwrap();
        remarketable_handler::envelope::event_hub_batch(request, "events").unwrap()
    };
    let plain = decode("eventhub_batch_plain.json");
    let double = decode("eventhub_batch_double_encoded.json");
    assert_eq!(plain, double);
    assert_eq!(
        plain.source,
        "wwi-clickstream.servicebus.windows.net/clickstream"
    );
    assert_eq!(plain.partition, "3");
    assert_eq!(plain.events.len(), 6);
    assert_eq!(plain.events[0].sequence, 1200.into());
    assert_eq!(plain.events[0].offset.as_deref(), Some("4294967296"));
    assert_eq!(
        plain.events[0].enqueued_at.to_rfc3339(),
        "2026-11-26T10:00:01.125+00:00"
    );
    assert_eq!(
        plain.events[4].body,
        b"{\"tenant_id\": 1, \"event_type\": \"page_view\""
    );
}

async fn ingest_fixture(name: &str) -> (TestDb, Value) {
    let db = TestDb::create().await;
    let app = handler(db.settings(None));
    let (status, body) = call(&app, "POST", "/ingest", fresh_batch_fixture(name)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (db, body)
}

#[tokio::test]
async fn both_encodings_ingest_identically_and_answer_only_outputs_and_logs() {
    let (plain_db, plain) = ingest_fixture("eventhub_batch_plain.json").await;
    let (double_db, double) = ingest_fixture("eventhub_batch_double_encoded.json").await;
    for body in [&plain, &double] {
        assert_eq!(body["Outputs"], json!({}));
        assert_eq!(body["Logs"].as_array().unwrap().len(), 1);
        assert!(
            body["Logs"][0]
                .as_str()
                .unwrap()
                .contains("stored 4, duplicates 0, dead-lettered 2"),
            "{body}"
        );
        let r = &body["ReturnValue"];
        assert_eq!(
            (
                r["stored"].as_i64(),
                r["dead_lettered"].as_i64(),
                r["position"].as_i64()
            ),
            (Some(4), Some(2), Some(1205))
        );
        assert_eq!(r["outcomes"][4]["status"], "dead_lettered");
        assert_eq!(r["outcomes"][4]["reason"], "invalid_json");
        assert_eq!(r["outcomes"][5]["reason"], "bad_country");
    }
    let rows = "SELECT tenant_id, event_type, device_id, session_id, country, browser, page_url, referrer, \
                campaign, source, medium, revenue, currency, properties, stream_partition, stream_sequence \
                FROM events ORDER BY stream_sequence";
    let stored = plain_db.json_rows(rows).await;
    assert_eq!(stored.len(), 4);
    assert_eq!(stored, double_db.json_rows(rows).await);
    assert_eq!(stored[2]["properties"], json!({"order_id": "o-1001"}));
    let dead =
        "SELECT stream_sequence, stream_offset, reason, convert_from(payload, 'UTF8') AS payload \
                FROM dead_letters ORDER BY 1";
    assert_eq!(
        plain_db.json_rows(dead).await,
        double_db.json_rows(dead).await
    );
}

#[tokio::test]
async fn collect_answers_202_and_outputs_each_event_as_a_json_string() {
    let db = TestDb::create().await;
    let app = handler(db.settings(None));
    // The fixture's write key is made up; put a real one of tenant 1 in its place.
    let key = remarketable_core::access::create_key(
        &db.client().await,
        Some(1),
        remarketable_core::access::KeyKind::Write,
        "storefront",
    )
    .await
    .unwrap()
    .key;
    let mut request = fixture("http_collect.json");
    let header = &mut request["Data"]["req"]["Headers"]["X-Rmk-Write-Key"];
    assert!(header[0].as_str().unwrap().starts_with("rmk_write_"));
    *header = json!([key]);
    let (status, body) = call(&app, "POST", "/collect", request.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let res = &body["Outputs"]["res"];
    assert_eq!(res["statusCode"], 202);
    assert_eq!(res["headers"]["Content-Type"], "application/json");
    assert_eq!(
        serde_json::from_str::<Value>(res["body"].as_str().unwrap()).unwrap(),
        json!({"accepted": 2})
    );
    let sent: Vec<Value> =
        serde_json::from_str(request["Data"]["req"]["Body"].as_str().unwrap()).unwrap();
    let out = body["Outputs"]["outEvents"].as_array().unwrap();
    assert_eq!(out.len(), 2);
    for (o, s) in out.iter().zip(&sent) {
        let text = o
            .as_str()
            .expect("each hub event is a pre-serialized JSON string");
        assert_eq!(&serde_json::from_str::<Value>(text).unwrap(), s);
    }

    // The same request double-encoded by the host, as NDJSON.
    let mut nd = request.clone();
    nd["Data"]["req"]["Body"] = json!(sent
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n"));
    nd["Data"]["req"]["Headers"]["Content-Type"] = json!(["application/x-ndjson"]);
    nd["Data"]["req"] = json!(nd["Data"]["req"].to_string());
    let (_, body) = call(&app, "POST", "/collect", nd).await;
    assert_eq!(body["Outputs"]["res"]["statusCode"], 202);
    assert_eq!(body["Outputs"]["outEvents"].as_array().unwrap().len(), 2);

    // A refused request: 200 to the host, the client's 400 inside, nothing sent to the hub.
    let mut bad = request;
    bad["Data"]["req"]["Body"] = json!("[{\"tenant_id\": 1}, {\"event_type\": \"x\"}]");
    let (status, body) = call(&app, "POST", "/collect", bad).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["Outputs"]["res"]["statusCode"], 400);
    let error: Value =
        serde_json::from_str(body["Outputs"]["res"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(error["error"]["code"], "missing_tenant_id");
    assert_eq!(error["error"]["message"], "event 1 has no tenant_id");
    assert!(body["Outputs"].get("outEvents").is_none());
}

#[tokio::test]
async fn errors_carry_a_stable_code_and_no_internal_detail() {
    let app = handler(closed_port_settings());
    let (status, body) = call(&app, "POST", "/ingest", json!({"Data": {}, "Metadata": {}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "bad_envelope");

    let request = Request::builder()
        .method("POST")
        .uri("/ingest")
        .body(Body::from("not json"))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let (status, body) = call(&app, "POST", "/nope", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");

    // The database is unreachable: retryable, and nothing about where it is or how to log in.
    for (path, fixture_name) in [
        ("/ingest", "eventhub_batch_plain.json"),
        ("/maintenance", "timer_maintenance.json"),
    ] {
        let (status, body) = call(&app, "POST", path, fixture(fixture_name)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(body["error"]["code"], "database_unavailable");
        let text = body.to_string();
        for secret in ["hunter2", "127.0.0.1", ":9", "postgres", "refused"] {
            assert!(!text.contains(secret), "{path} leaks {secret:?}: {text}");
        }
    }
}

#[tokio::test]
async fn a_database_outage_fails_the_invocation_and_the_redelivery_stores_the_batch_once() {
    let db = TestDb::create().await;
    let proxy = Proxy::for_cluster().await;
    let app = handler(db.settings(Some(proxy.addr)));
    let request = fresh_batch_fixture("eventhub_batch_plain.json");

    // Down before the invocation: refused connections.
    proxy.set(ProxyMode::Down);
    let (status, body) = call(&app, "POST", "/ingest", request.clone()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    // Cut in the middle of the transaction, just as the COPY starts.
    proxy.set(ProxyMode::CutOn(b"COPY events".to_vec()));
    let (status, body) = call(&app, "POST", "/ingest", request.clone()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(proxy.cuts(), 1);
    for table in [
        "events",
        "dead_letters",
        "ingest_ledger",
        "ingest_positions",
    ] {
        assert_eq!(
            db.count(&format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table} was partly written"
        );
    }

    // The host retries the same batch once the database is back: stored once.
    let (status, body) = call(&app, "POST", "/ingest", request.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ReturnValue"]["stored"], 4);
    let (status, body) = call(&app, "POST", "/ingest", request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ReturnValue"]["duplicates"], 6);
    assert_eq!(db.count("SELECT count(*) FROM events").await, 4);
    assert_eq!(db.count("SELECT count(*) FROM dead_letters").await, 2);
}

#[tokio::test]
async fn maintenance_timer_keeps_partitions_and_logs_what_it_did() {
    let db = TestDb::create().await;
    let client = db.client().await;
    let newest: chrono::DateTime<Utc> = client
        .query_one(
            "SELECT max(from_value) FROM partition_bounds('events')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    drop_partition_covering(&client, newest).await;
    let app = handler(db.settings(None));
    let (status, body) = call(
        &app,
        "POST",
        "/maintenance",
        fixture("timer_maintenance.json"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["Outputs"], json!({}));
    assert_eq!(
        body["Logs"][0],
        "partitions of events: 1 created, 0 dropped"
    );
    assert_eq!(body["Logs"][2], "ledger: 0 tenant-hour totals folded");
    assert_eq!(
        body["Logs"][3],
        "rollup retention: 5min 0 rows deleted, 1hour 0 rows deleted, 1day 0 rows deleted"
    );
    assert_eq!(
        body["ReturnValue"],
        json!({"created": 1, "dropped": 0, "ledger_totals_folded": 0,
               "rollup_rows_deleted": {"5min": 0, "1hour": 0, "1day": 0}})
    );
}

#[test]
fn function_definitions_match_the_handler() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let read = |p: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(format!("{root}/{p}")).unwrap()).unwrap()
    };
    let host = read("host.json");
    assert_eq!(
        host["customHandler"]["description"]["defaultExecutablePath"],
        "handler"
    );
    assert_eq!(host["customHandler"]["enableForwardingHttpRequest"], true);
    assert_eq!(host["extensionBundle"]["version"], "[4.*, 5.0.0)");
    let cargo = std::fs::read_to_string(format!("{root}/functions/handler/Cargo.toml")).unwrap();
    assert!(cargo.contains("[[bin]]\nname = \"handler\""));

    let ingest = read("functions/ingest/function.json");
    let trigger = &ingest["bindings"][0];
    assert_eq!(trigger["type"], "eventHubTrigger");
    assert_eq!(trigger["name"], remarketable_handler::INGEST_BINDING);
    assert_eq!(trigger["cardinality"], "many");
    assert_eq!(trigger["dataType"], "string");
    assert_eq!(trigger["eventHubName"], "%EVENTHUB_NAME%");
    assert_eq!(trigger["consumerGroup"], "%EVENTHUB_CONSUMER_GROUP%");
    assert_eq!(ingest["retry"]["strategy"], "exponentialBackoff");
    assert_eq!(ingest["retry"]["maxRetryCount"], -1);

    let collect = read("functions/collect/function.json");
    let names: Vec<&str> = collect["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            remarketable_handler::COLLECT_REQUEST_BINDING,
            remarketable_handler::COLLECT_RESPONSE_BINDING,
            remarketable_handler::COLLECT_OUTPUT_BINDING
        ]
    );
    assert_eq!(collect["bindings"][2]["type"], "eventHub");
    // collect is anonymous at the host: a tenant's write key (safe in a web page, unlike the
    // app's function key) is what the handler requires.
    assert_eq!(collect["bindings"][0]["authLevel"], "anonymous");

    let maintenance = read("functions/maintenance/function.json");
    assert_eq!(maintenance["bindings"][0]["type"], "timerTrigger");
    assert_eq!(maintenance["bindings"][0]["name"], "timer");
    let rollup = read("functions/rollup/function.json");
    assert_eq!(rollup["bindings"][0]["type"], "timerTrigger");
    assert_eq!(rollup["bindings"][0]["name"], "timer");
    assert_eq!(rollup["bindings"][0]["schedule"], "%ROLLUP_SCHEDULE%");
    // reports: forwarded as is (only an HTTP trigger and an http out binding), anonymous at the
    // host because the API checks its own per-tenant credentials.
    let reports = read("functions/reports/function.json");
    let bindings = reports["bindings"].as_array().unwrap();
    assert_eq!(bindings.len(), 2);
    assert_eq!(bindings[0]["type"], "httpTrigger");
    assert_eq!(bindings[0]["authLevel"], "anonymous");
    assert_eq!(bindings[0]["route"], "v1/{*path}");
    // Every method the API document lists reaches the handler (the host answers 405 to the
    // others), and OPTIONS for CORS preflights.
    let methods: Vec<&str> = bindings[0]["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    for op in remarketable_handler::openapi::OPERATIONS {
        assert!(methods.contains(&op.method), "{} {}", op.method, op.path);
    }
    assert!(methods.contains(&"options"));
    assert_eq!(
        bindings[1],
        json!({"type": "http", "direction": "out", "name": "res"})
    );
    // dashboard: the web pages, GET only, anonymous (the page signs in against the API).
    let dashboard = read("functions/dashboard/function.json");
    let bindings = dashboard["bindings"].as_array().unwrap();
    assert_eq!(bindings.len(), 2);
    assert_eq!(bindings[0]["authLevel"], "anonymous");
    assert_eq!(bindings[0]["route"], "dashboard/{*path}");
    assert_eq!(bindings[0]["methods"], json!(["get"]));
    assert_eq!(
        bindings[1],
        json!({"type": "http", "direction": "out", "name": "res"})
    );
    let settings = read("local.settings.json");
    assert_eq!(settings["Values"]["FUNCTIONS_WORKER_RUNTIME"], "custom");
    for schedule in ["MAINTENANCE_SCHEDULE", "ROLLUP_SCHEDULE"] {
        let fields = settings["Values"][schedule]
            .as_str()
            .unwrap()
            .split(' ')
            .count();
        assert_eq!(fields, 6, "{schedule} is a six-field NCRONTAB expression");
    }
}
