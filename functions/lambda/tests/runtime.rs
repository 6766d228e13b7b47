//! The real `lambda` binary, run as Lambda runs it: a local stand-in of the Runtime API
//! (devhost's `lambda_api`) hands it invocations, against the real PostgreSQL of the tests
//! (`TEST_DATABASE_URL`), with the database taken away by a proxy where a test needs an outage.

use axum::body::Body;
use axum::http::Request;
use chrono::Utc;
use http_body_util::BodyExt;
use remarketable_core::access::{self, KeyKind};
use remarketable_devhost::lambda_api::{self, msk_event, KafkaRecord, Outcome};
use remarketable_tests::*;
use serde_json::{json, Value};
use std::sync::Arc;
use support::{Function, TIMEOUT};
use tower::ServiceExt;

mod support;

const MSK_ARN: &str = "arn:aws:kafka:eu-west-1:123456789012:cluster/clickstream/uuid-1";
const STREAM_ARN: &str = "arn:aws:kinesis:eu-west-1:123456789012:stream/clickstream";

/// An MSK event: records (topic, partition, offset, value), timestamped now.
pub fn kafka_event(records: &[(&str, i64, i64, Vec<u8>)]) -> Value {
    let now = Utc::now().timestamp_millis();
    let records: Vec<KafkaRecord> = records
        .iter()
        .map(|(topic, partition, offset, value)| KafkaRecord {
            topic,
            partition: *partition,
            offset: *offset,
            timestamp_ms: now,
            value: Some(value),
        })
        .collect();
    msk_event(MSK_ARN, &records)
}

/// A Kinesis event of one shard of [`STREAM_ARN`], arrived now.
pub fn kinesis_event(shard: &str, records: &[(String, Vec<u8>)]) -> Value {
    let now = Utc::now().timestamp_millis() as f64 / 1000.0;
    lambda_api::kinesis_event(STREAM_ARN, shard, now, records)
}

fn body(tenant: i64, n: i64) -> Vec<u8> {
    event(tenant, n).to_string().into_bytes()
}

/// A Kinesis-sized sequence number (56 digits) ending in `n`.
fn seq(n: u32) -> String {
    format!("4959033827149025660855969253836157109592157598913658{n:04}")
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.count(sql).await
}

/// Events stored once each, the ledger balanced: the invariants every test ends with.
async fn assert_each_position_once(db: &TestDb) {
    assert_eq!(
        count(db, "SELECT count(*) FROM events").await,
        count(
            db,
            "SELECT count(*) FROM (SELECT DISTINCT stream_partition, stream_sequence FROM events) d"
        )
        .await
    );
    assert_eq!(
        count(db, "SELECT coalesce(sum(received), 0)::bigint FROM ingest_ledger").await,
        count(
            db,
            "SELECT coalesce(sum(stored + duplicates + dead_lettered), 0)::bigint FROM ingest_ledger"
        )
        .await
    );
}

#[tokio::test]
async fn kafka_batches_store_each_valid_event_once_and_dead_letter_the_rest() {
    let db = TestDb::create().await;
    let function = Function::start("ingest", &db.url(), &[]).await;

    // Two topics (one with a dash) and three partitions; offsets 3 and 7 are malformed.
    let mut records = Vec::new();
    for offset in 0..10 {
        let value = match offset {
            3 => b"{not json".to_vec(),
            7 => body(99, offset),
            _ => body(1 + offset % 3, offset),
        };
        records.push(("click-stream", 0, offset, value));
    }
    for offset in 100..105 {
        records.push(("click-stream", 1, offset, body(2, offset)));
        records.push(("orders", 0, offset, body(3, offset)));
    }
    let event = kafka_event(&records);
    let answer = function.ok(&event).await;
    assert_eq!(answer["batchItemFailures"], json!([]));
    let batches = answer["batches"].as_array().unwrap();
    // Sorted by (source, partition).
    let order: Vec<(String, String)> = batches
        .iter()
        .map(|b| {
            (
                b["source"].as_str().unwrap().to_string(),
                b["partition"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    assert_eq!(order.len(), 3);
    assert_eq!(count(&db, "SELECT count(*) FROM events").await, 18);
    assert_eq!(
        db.json_rows(
            "SELECT stream_partition, stream_sequence, reason FROM dead_letters ORDER BY 2"
        )
        .await,
        [
            json!({"stream_partition": "0", "stream_sequence": 3, "reason": "invalid_json"}),
            json!({"stream_partition": "0", "stream_sequence": 7, "reason": "unknown_tenant"}),
        ]
    );
    assert_eq!(
        count(
            &db,
            &format!(
                "SELECT count(*) FROM ingest_positions WHERE source = '{MSK_ARN}/click-stream'"
            )
        )
        .await,
        2
    );

    // The same event again: nothing new.
    let again = function.ok(&event).await;
    let duplicates: i64 = again["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["duplicates"].as_i64().unwrap())
        .sum();
    assert_eq!(duplicates, 20);
    assert_eq!(count(&db, "SELECT count(*) FROM events").await, 18);
    assert_eq!(count(&db, "SELECT count(*) FROM dead_letters").await, 2);

    // An overlapping batch: offsets 5..15 of partition 0, of which 10..15 are new.
    let overlap: Vec<_> = (5..15)
        .map(|o| ("click-stream", 0, o, body(1, o)))
        .collect();
    let answer = function.ok(&kafka_event(&overlap)).await;
    assert_eq!(answer["batches"][0]["stored"], 5);
    assert_eq!(answer["batches"][0]["duplicates"], 5);
    assert_eq!(count(&db, "SELECT count(*) FROM events").await, 23);
    assert_each_position_once(&db).await;
    assert_eq!(
        count(
            &db,
            "SELECT received::bigint FROM (SELECT sum(received) AS received FROM ingest_ledger) l"
        )
        .await,
        20 + 20 + 10
    );

    // The Runtime API saw the real headers on every invocation.
    assert_eq!(function.api.sent_headers().len(), 3);
    for headers in function.api.sent_headers() {
        for name in [
            "lambda-runtime-aws-request-id",
            "lambda-runtime-deadline-ms",
            "lambda-runtime-invoked-function-arn",
            "lambda-runtime-trace-id",
        ] {
            assert!(headers.contains_key(name), "{name}");
        }
    }
}

#[tokio::test]
async fn kafka_with_the_database_down_fails_typed_and_succeeds_later() {
    let db = TestDb::create().await;
    let proxy = Proxy::for_cluster().await;
    let function = Function::start("ingest", &db.url_via(proxy.addr), &[]).await;
    let records: Vec<_> = (0..20)
        .map(|o| ("click-stream", o % 2, o, body(1, o)))
        .collect();
    let event = kafka_event(&records);

    proxy.set(ProxyMode::Down);
    match function.invoke(&event).await {
        Outcome::Error {
            error_type,
            error_message,
        } => {
            assert_eq!(error_type, "database_unavailable");
            assert!(error_message.contains("retry"), "{error_message}");
        }
        other => panic!("expected a failed invocation, got {other:?}"),
    }
    assert_eq!(count(&db, "SELECT count(*) FROM events").await, 0);

    proxy.set(ProxyMode::Up);
    let answer = function.ok(&event).await;
    assert_eq!(answer["batches"][0]["stored"], 10);
    assert_eq!(answer["batches"][1]["stored"], 10);
    assert_eq!(count(&db, "SELECT count(*) FROM events").await, 20);
    assert_each_position_once(&db).await;
}

#[tokio::test]
async fn reported_batch_item_failures_name_each_unwritten_partition_from_its_first_record() {
    let db = TestDb::create().await;
    let proxy = Proxy::for_cluster().await;
    let function = Function::start(
        "ingest",
        &db.url_via(proxy.addr),
        &[("REPORT_BATCH_ITEM_FAILURES", "true")],
    )
    .await;
    let records: Vec<_> = (0..6)
        .map(|o| ("click-stream", o % 2, 40 + o, body(1, o)))
        .collect();
    proxy.set(ProxyMode::Down);
    let answer = function.ok(&kafka_event(&records)).await;
    assert_eq!(
        answer["batchItemFailures"],
        json!([
            {"itemIdentifier": {"partition": "click-stream-0", "offset": 40}},
            {"itemIdentifier": {"partition": "click-stream-1", "offset": 41}},
        ])
    );
    proxy.set(ProxyMode::Up);
    let answer = function.ok(&kafka_event(&records)).await;
    assert_eq!(answer["batchItemFailures"], json!([]));
    assert_eq!(count(&db, "SELECT count(*) FROM events").await, 6);

    // Kinesis names the failed shard's lowest sequence number.
    let kinesis = kinesis_event(
        "shardId-000000000001",
        &[(seq(5), body(1, 5)), (seq(6), body(1, 6))],
    );
    proxy.set(ProxyMode::Down);
    let answer = function.ok(&kinesis).await;
    assert_eq!(
        answer["batchItemFailures"],
        json!([{"itemIdentifier": seq(5)}])
    );
}

#[tokio::test]
async fn kinesis_sequence_numbers_beyond_bigint_are_stored_once() {
    let db = TestDb::create().await;
    let proxy = Proxy::for_cluster().await;
    let function = Function::start("ingest", &db.url_via(proxy.addr), &[]).await;
    let shard = "shardId-000000000003";
    let records: Vec<(String, Vec<u8>)> = (0..10)
        .map(|n| {
            let data = if n == 4 {
                b"[1,2,3]".to_vec()
            } else {
                body(2, n as i64)
            };
            (seq(n * 10), data)
        })
        .collect();
    let event = kinesis_event(shard, &records);

    proxy.set(ProxyMode::Down);
    match function.invoke(&event).await {
        Outcome::Error { error_type, .. } => assert_eq!(error_type, "database_unavailable"),
        other => panic!("expected a failed invocation, got {other:?}"),
    }
    proxy.set(ProxyMode::Up);

    let answer = function.ok(&event).await;
    assert_eq!(answer["batches"][0]["stored"], 9);
    assert_eq!(answer["batches"][0]["dead_lettered"], 1);
    assert_eq!(answer["batches"][0]["position"], json!(seq(90)));
    assert_eq!(
        db.json_rows(
            "SELECT stream_partition, stream_sequence::text AS s, reason FROM dead_letters"
        )
        .await,
        [json!({"stream_partition": shard, "s": seq(40), "reason": "not_an_object"})]
    );
    assert_eq!(
        db.json_rows("SELECT source, last_sequence::text AS s FROM ingest_positions")
            .await,
        [json!({"source": STREAM_ARN, "s": seq(90)})]
    );

    // Redelivery, and a batch that overlaps the stored ones.
    let again = function.ok(&event).await;
    assert_eq!(again["batches"][0]["duplicates"], 10);
    let overlap: Vec<(String, Vec<u8>)> = [85, 90, 95, 100, 1000]
        .iter()
        .map(|&n| (seq(n), body(3, n as i64)))
        .collect();
    let answer = function.ok(&kinesis_event(shard, &overlap)).await;
    assert_eq!(answer["batches"][0]["duplicates"], 2);
    assert_eq!(answer["batches"][0]["stored"], 3);
    assert_eq!(count(&db, "SELECT count(*) FROM events").await, 12);
    assert_each_position_once(&db).await;
}

#[tokio::test]
async fn a_schedule_advances_the_rollups_and_a_rule_runs_maintenance() {
    let db = TestDb::create().await;
    ingest(
        &db,
        "0",
        0,
        &shop_events(&mut Rng(9), Utc::now(), 300, 0),
        100,
    )
    .await;
    let rollup = Function::start("rollup", &db.url(), &[]).await;
    let fixture = |name: &str| -> Value {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    assert_eq!(
        count(&db, "SELECT max(last_event_id) FROM rollup_state").await,
        0
    );
    let answer = rollup.ok(&fixture("scheduler_input.json")).await;
    assert_eq!(answer["job"], "rollup");
    assert_eq!(answer["via"], "scheduler");
    let top = count(&db, "SELECT max(event_id) FROM events").await;
    assert_eq!(
        count(&db, "SELECT min(last_event_id) FROM rollup_state").await,
        top
    );
    let stored = count(&db, "SELECT count(*) FROM events").await;
    assert!(stored > 250, "{stored}");
    assert_eq!(
        count(
            &db,
            "SELECT sum(event_count)::bigint FROM rollup_events_5min"
        )
        .await,
        stored
    );

    let maintenance = Function::start("maintenance", &db.url(), &[]).await;
    let answer = maintenance
        .ok(&fixture("eventbridge_scheduled_event.json"))
        .await;
    assert_eq!(answer["job"], "maintenance");
    assert_eq!(answer["via"], "rule");
    assert!(answer["result"]["created"].is_number(), "{answer}");
    // A schedule meant for the other job is refused, typed.
    match maintenance.invoke(&fixture("scheduler_input.json")).await {
        Outcome::Error { error_type, .. } => assert_eq!(error_type, "bad_envelope"),
        other => panic!("{other:?}"),
    }
}

/// The body of the Azure handler's answer to the same GET.
async fn azure_answer(db: &TestDb, path_and_query: &str, key: &str) -> (u16, String) {
    let app = remarketable_handler::app(Arc::new(remarketable_handler::AppState::new(
        db.settings(None),
    )));
    let response = app
        .oneshot(
            Request::get(path_and_query)
                .header("authorization", format!("Bearer {key}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// An HTTP API v2 GET through the named-stage fixture.
fn http_event(path: &str, query: &str, key: &str) -> Value {
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/apigw_v2_named_stage.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let mut event: Value = serde_json::from_str(&text).unwrap();
    event["rawPath"] = json!(format!("/prod{path}"));
    event["requestContext"]["http"]["path"] = json!(format!("/prod{path}"));
    event["rawQueryString"] = json!(query);
    event["queryStringParameters"] = Value::Object(
        query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap();
                (k.to_string(), json!(v))
            })
            .collect(),
    );
    event["headers"]["authorization"] = json!(format!("Bearer {key}"));
    event
}

/// The `freshness.as_of` value (the report's transaction time) replaced, so two answers made
/// at different moments compare byte for byte everywhere else.
fn without_as_of(body: &str) -> String {
    let Some(start) = body.find("\"as_of\":\"") else {
        return body.to_string();
    };
    let value_start = start + "\"as_of\":\"".len();
    let end = value_start + body[value_start..].find('"').unwrap();
    format!("{}<as_of>{}", &body[..value_start], &body[end..])
}

#[tokio::test]
async fn http_api_v2_reports_answer_what_the_azure_route_answers() {
    let db = TestDb::create().await;
    set_time_zones(&db).await;
    ingest(
        &db,
        "0",
        0,
        &shop_events(&mut Rng(4), Utc::now(), 600, 10),
        200,
    )
    .await;
    let key = access::create_key(&db.client().await, Some(1), KeyKind::Read, "lambda")
        .await
        .unwrap()
        .key;
    let function = Function::start("http", &db.url(), &[]).await;
    let from = (Utc::now() - chrono::Duration::hours(6))
        .format("%Y-%m-%dT%H:00:00Z")
        .to_string();
    let to = (Utc::now() + chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:00:00Z")
        .to_string();
    for (path, query, exact) in [
        (
            "/api/v1/tenants/1/timeseries",
            format!("from={from}&to={to}&granularity=1h"),
            false,
        ),
        (
            "/api/v1/tenants/1/breakdown",
            format!("from={from}&to={to}&dimension=country"),
            false,
        ),
        ("/api/v1/tenants/1/whoami", String::new(), true),
        ("/api/v1/tenants/2/whoami", String::new(), true),
    ] {
        let answer = function.ok(&http_event(path, &query, &key)).await;
        let lambda_body = answer["body"].as_str().unwrap_or_default().to_string();
        assert_eq!(answer["isBase64Encoded"], false, "{answer}");
        let target = if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        };
        let (status, azure_body) = azure_answer(&db, &target, &key).await;
        assert_eq!(answer["statusCode"], status, "{path}: {lambda_body}");
        if exact {
            assert_eq!(lambda_body, azure_body, "{path}");
        } else {
            assert_eq!(status, 200, "{azure_body}");
            assert_eq!(
                without_as_of(&lambda_body),
                without_as_of(&azure_body),
                "{path}"
            );
        }
    }
    // No trigger route on the public router.
    let answer = function.ok(&http_event("/ingest", "", &key)).await;
    assert_eq!(answer["statusCode"], 404);
}

#[tokio::test]
async fn bad_settings_stop_the_start_naming_the_setting() {
    let db = TestDb::create().await;
    let mut function = Function::start("web", &db.url(), &[]).await;
    let status = tokio::time::timeout(TIMEOUT, function.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success());
    let (error_type, message) = function.api.init_error().expect("init error reported");
    assert_eq!(error_type, "invalid_settings");
    assert!(message.contains("LAMBDA_ROLE"), "{message}");

    let mut function = Function::start("ingest", &db.url(), &[("EVENT_MAX_BYTES", "12")]).await;
    tokio::time::timeout(TIMEOUT, function.child.wait())
        .await
        .unwrap()
        .unwrap();
    let (_, message) = function.api.init_error().expect("init error reported");
    assert!(message.contains("EVENT_MAX_BYTES"), "{message}");
    assert!(!message.contains("postgres://"), "{message}");
}
