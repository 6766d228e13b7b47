//! Every AWS payload the Lambda host handles, as committed fixtures: each is round-tripped
//! through its aws_lambda_events type (parse, serialize, parse again, equal) and decoded by the
//! host, value for value.

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::event::kafka::KafkaEvent;
use aws_lambda_events::event::kinesis::KinesisEvent;
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt;
use remarketable_core::{ErrorCode, Position};
use remarketable_lambda::ingest::{self, StreamKind};
use remarketable_lambda::schedule::{self, Job};
use serde_json::{json, Value};

fn text(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn fixture(name: &str) -> Value {
    serde_json::from_str(&text(name)).unwrap()
}

/// Parse, serialize, parse: the typed value survives unchanged.
fn round_trip<T>(name: &str) -> T
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    let parsed: T = serde_json::from_str(&text(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let again: T = serde_json::from_str(&serde_json::to_string(&parsed).unwrap()).unwrap();
    assert_eq!(parsed, again, "{name}");
    parsed
}

const MSK_ARN: &str =
    "arn:aws:kafka:eu-west-1:123456789012:cluster/clickstream/6b7a2c1e-1f2d-4c3b-9a8e-0d1c2b3a4f5e-7";

#[test]
fn msk_batches_by_topic_and_record_partition_in_sorted_order() {
    let event: KafkaEvent = round_trip("msk.json");
    assert_eq!(event.records.len(), 2);
    let decoded = ingest::decode(&text("msk.json"), None).unwrap();
    assert_eq!(decoded.kind, StreamKind::Msk);
    let keys: Vec<(String, String)> = decoded
        .batches
        .iter()
        .map(|b| (b.source.clone(), b.partition.clone()))
        .collect();
    let source = format!("{MSK_ARN}/click-stream");
    assert_eq!(
        keys,
        [(source.clone(), "0".into()), (source.clone(), "3".into())]
    );
    let first = &decoded.batches[0];
    assert_eq!(
        first
            .events
            .iter()
            .map(|e| e.sequence.clone())
            .collect::<Vec<_>>(),
        [Position::from(15), Position::from(16)]
    );
    let body: Value = serde_json::from_slice(&first.events[0].body).unwrap();
    assert_eq!(body["device_id"], "device-1");
    assert_eq!(
        first.events[1].enqueued_at.timestamp_millis(),
        1_795_687_200_500
    );
    // Past 2^53: the offset stays exact.
    assert_eq!(
        decoded.batches[1].events[0].sequence,
        Position::from(9_007_199_254_740_993)
    );
    assert_eq!(decoded.batches[1].events[0].body, b"{not json");
    assert_eq!(
        decoded.first_items,
        [
            json!({"partition": "click-stream-0", "offset": 15}),
            json!({"partition": "click-stream-3", "offset": 9_007_199_254_740_993i64}),
        ]
    );
}

#[test]
fn self_managed_kafka_needs_its_configured_name() {
    let event: KafkaEvent = round_trip("self_managed_kafka.json");
    assert_eq!(event.event_source.as_deref(), Some("aws:SelfManagedKafka"));
    let decoded = ingest::decode(&text("self_managed_kafka.json"), Some("onprem")).unwrap();
    assert_eq!(decoded.kind, StreamKind::SelfManagedKafka);
    assert_eq!(decoded.batches.len(), 1);
    assert_eq!(decoded.batches[0].source, "onprem/clicks");
    assert_eq!(decoded.batches[0].partition, "1");
    // A tombstone (value null) arrives as an empty body, to be dead-lettered.
    assert!(decoded.batches[0].events[1].body.is_empty());

    let unnamed = ingest::decode(&text("self_managed_kafka.json"), None).unwrap_err();
    assert_eq!(unnamed.code, ErrorCode::InternalError);
    assert!(unnamed.message.contains("KAFKA_SOURCE_NAME"));
}

#[test]
fn kafka_records_without_headers_are_decoded() {
    // The crate's type alone refuses them (no serde default for `headers`) ...
    let raw = serde_json::from_str::<KafkaEvent>(&text("self_managed_kafka_no_headers.json"));
    assert!(raw.is_err());
    // ... the host fills them in.
    let decoded =
        ingest::decode(&text("self_managed_kafka_no_headers.json"), Some("onprem")).unwrap();
    let with = ingest::decode(&text("self_managed_kafka.json"), Some("onprem")).unwrap();
    assert_eq!(decoded.batches, with.batches);
}

#[test]
fn kinesis_positions_are_the_exact_sequence_numbers_per_shard() {
    let event: KinesisEvent = round_trip("kinesis.json");
    assert_eq!(event.records.len(), 2);
    let decoded = ingest::decode(&text("kinesis.json"), None).unwrap();
    assert_eq!(decoded.kind, StreamKind::Kinesis);
    assert_eq!(decoded.batches.len(), 1);
    let batch = &decoded.batches[0];
    assert_eq!(
        batch.source,
        "arn:aws:kinesis:eu-west-1:123456789012:stream/clickstream"
    );
    assert_eq!(batch.partition, "shardId-000000000006");
    let seqs: Vec<String> = batch
        .events
        .iter()
        .map(|e| e.sequence.to_string())
        .collect();
    assert_eq!(
        seqs,
        [
            "49590338271490256608559692538361571095921575989136588898",
            "49590338271490256608559692540925702759324208523137515618"
        ]
    );
    assert!(batch.events[0].sequence < batch.events[1].sequence);
    assert_eq!(batch.events[1].body, b"[1,2]");
    assert_eq!(
        batch.events[0].enqueued_at.timestamp_millis(),
        1_795_687_200_123
    );
    assert_eq!(
        decoded.first_items,
        [json!(
            "49590338271490256608559692538361571095921575989136588898"
        )]
    );
}

#[test]
fn schedules_from_scheduler_input_and_rule_events() {
    for name in ["scheduler_input.json", "eventbridge_scheduled_event.json"] {
        let value = fixture(name);
        let again: Value = serde_json::from_str(&value.to_string()).unwrap();
        assert_eq!(value, again);
    }
    let scheduler = schedule::decode(&fixture("scheduler_input.json"), Job::Rollup).unwrap();
    assert_eq!(scheduler.via, "scheduler");
    assert_eq!(
        scheduler.scheduled_time.as_deref(),
        Some("2026-11-26T10:05:00Z")
    );
    // The input names rollup: the maintenance function refuses it.
    let wrong = schedule::decode(&fixture("scheduler_input.json"), Job::Maintenance).unwrap_err();
    assert_eq!(wrong.code, ErrorCode::BadEnvelope);

    let rule = schedule::decode(
        &fixture("eventbridge_scheduled_event.json"),
        Job::Maintenance,
    )
    .unwrap();
    assert_eq!(rule.via, "rule");
    assert_eq!(rule.scheduled_time.as_deref(), Some("2026-11-26T10:05:00Z"));
    let mut other = fixture("eventbridge_scheduled_event.json");
    other["detail-type"] = json!("EC2 Instance State-change Notification");
    assert!(schedule::decode(&other, Job::Rollup).is_err());
}

/// The path and headers the router sees for an HTTP fixture, through `lambda_http`'s own
/// decoding and the host's [`remarketable_lambda::http::serve`].
async fn served(name: &str) -> Value {
    let request: lambda_http::request::LambdaRequest = serde_json::from_str(&text(name)).unwrap();
    let request: lambda_http::Request = request.into();
    let echo = Router::new().route(
        "/api/v1/tenants/1/timeseries",
        get(
            |uri: axum::http::Uri, headers: axum::http::HeaderMap| async move {
                axum::Json(json!({
                    "path": uri.path(),
                    "query": uri.query(),
                    "accept_encoding": headers.get("accept-encoding").is_some(),
                    "authorization": headers.get("authorization").map(|v| v.to_str().unwrap()),
                }))
            },
        ),
    );
    let response = remarketable_lambda::http::serve(echo, request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{name}");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn http_api_v2_and_function_urls_reach_the_routes_without_stage_or_compression() {
    let expected = json!({
        "path": "/api/v1/tenants/1/timeseries",
        "query": "range=24h&granularity=1h",
        "accept_encoding": false,
        "authorization": "Bearer rmk_read_example",
    });
    for name in [
        "apigw_v2_default_stage.json",
        "apigw_v2_named_stage.json",
        "function_url.json",
    ] {
        let typed: ApiGatewayV2httpRequest = round_trip(name);
        assert!(typed.request_context.stage.is_some(), "{name}");
        assert_eq!(served(name).await, expected, "{name}");
    }
}
