//! The AWS side of the Lambda host against `moto_server` (PyPI `moto[server]`, started here on
//! 127.0.0.1): collect publishing to Kinesis, secret ARNs resolved at cold start; and the
//! Kinesis retry of partially refused records against a stand-in that refuses on purpose.

mod support;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use remarketable_core::access::{self, KeyKind};
use remarketable_lambda::aws::Aws;
use remarketable_lambda::kinesis::{Publisher, ATTEMPTS};
use remarketable_tests::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::Function;

/// A `moto_server` of this test's own; killed when dropped.
struct Moto {
    endpoint: String,
    _child: tokio::process::Child,
}

impl Moto {
    async fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "moto_server could not be started ({e}): install it with \
                     `python3 -m pip install 'moto[server]'` (scripts/test does)"
                )
            });
        let endpoint = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Moto {
                    endpoint,
                    _child: child,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("moto_server did not listen on {endpoint}");
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_REGION", "eu-west-1".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_SESSION_TOKEN", "testing".into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
        ]
    }

    fn aws(&self) -> Aws {
        let map: HashMap<String, String> = self
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        Aws::from_map(&map).unwrap()
    }
}

/// A collect POST through HTTP API v2 (`$default` stage).
fn collect_event(body: &str, key: &str) -> Value {
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/apigw_v2_default_stage.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let mut event: Value = serde_json::from_str(&text).unwrap();
    event["rawPath"] = json!("/api/collect");
    event["rawQueryString"] = json!("");
    event["queryStringParameters"] = Value::Null;
    event["requestContext"]["http"]["method"] = json!("POST");
    event["requestContext"]["http"]["path"] = json!("/api/collect");
    let headers = event["headers"].as_object_mut().unwrap();
    headers.remove("authorization");
    headers.insert("content-type".into(), json!("application/json"));
    headers.insert("x-rmk-write-key".into(), json!(key));
    event["body"] = json!(body);
    event
}

async fn records_in(aws: &Aws, stream: &str) -> Vec<(String, String)> {
    let iterator = aws
        .call(
            "kinesis",
            "Kinesis_20131202.GetShardIterator",
            &json!({"StreamName": stream, "ShardId": "shardId-000000000000",
                    "ShardIteratorType": "TRIM_HORIZON"}),
        )
        .await
        .unwrap();
    let records = aws
        .call(
            "kinesis",
            "Kinesis_20131202.GetRecords",
            &json!({"ShardIterator": iterator["ShardIterator"]}),
        )
        .await
        .unwrap();
    records["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let data = base64::engine::general_purpose::STANDARD
                .decode(r["Data"].as_str().unwrap())
                .unwrap();
            (
                String::from_utf8(data).unwrap(),
                r["PartitionKey"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn collect_publishes_to_kinesis_with_secrets_from_secrets_manager_and_ssm() {
    let moto = Moto::start().await;
    let aws = moto.aws();
    let db = TestDb::create().await;
    aws.call(
        "kinesis",
        "Kinesis_20131202.CreateStream",
        &json!({"StreamName": "clickstream", "ShardCount": 1}),
    )
    .await
    .unwrap();
    let secret = aws
        .call(
            "secretsmanager",
            "secretsmanager.CreateSecret",
            &json!({"Name": "rmk/database-url", "SecretString": db.url()}),
        )
        .await
        .unwrap();
    let secret_arn = secret["ARN"].as_str().unwrap().to_string();
    aws.call(
        "ssm",
        "AmazonSSM.PutParameter",
        &json!({"Name": "/rmk/share-token-secret", "Type": "SecureString",
                "Value": "s".repeat(40)}),
    )
    .await
    .unwrap();
    let parameter = aws
        .call(
            "ssm",
            "AmazonSSM.GetParameter",
            &json!({"Name": "/rmk/share-token-secret"}),
        )
        .await
        .unwrap();
    let parameter_arn = parameter["Parameter"]["ARN"].as_str().unwrap().to_string();
    let key = access::create_key(&db.client().await, Some(1), KeyKind::Write, "collect")
        .await
        .unwrap()
        .key;

    let mut env = moto.env();
    env.push(("SHARE_TOKEN_SECRET", parameter_arn.clone()));
    env.push(("COLLECT_KINESIS_STREAM", "clickstream".into()));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // DATABASE_URL itself is the secret's ARN.
    let function = Function::start("http", &secret_arn, &env_refs).await;

    let events = [event(1, 1), event(1, 2), event(1, 3)];
    let body = serde_json::to_string(&events).unwrap();
    let answer = function.ok(&collect_event(&body, &key)).await;
    assert_eq!(answer["statusCode"], 202, "{answer}");
    assert_eq!(
        serde_json::from_str::<Value>(answer["body"].as_str().unwrap()).unwrap(),
        json!({"accepted": 3})
    );
    let stored = records_in(&aws, "clickstream").await;
    let texts: Vec<Value> = stored
        .iter()
        .map(|(t, _)| serde_json::from_str(t).unwrap())
        .collect();
    assert_eq!(texts, events);
    for (text, partition_key) in &stored {
        assert_eq!(
            partition_key,
            &remarketable_lambda::kinesis::partition_key(text)
        );
    }

    // Refusals are the core's, and nothing of them reaches the stream.
    let other_tenant = serde_json::to_string(&[event(2, 9)]).unwrap();
    let answer = function.ok(&collect_event(&other_tenant, &key)).await;
    assert_eq!(answer["statusCode"], 403, "{answer}");
    let answer = function
        .ok(&collect_event(&body, "rmk_write_not_a_key"))
        .await;
    assert_eq!(answer["statusCode"], 401, "{answer}");
    assert_eq!(records_in(&aws, "clickstream").await.len(), 3);

    // A stream that does not exist: 503 stream_unavailable, not a silent 202.
    let mut env = moto.env();
    env.push(("COLLECT_KINESIS_STREAM", "no-such-stream".into()));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let missing = Function::start("http", &db.url(), &env_refs).await;
    let answer = missing.ok(&collect_event(&body, &key)).await;
    assert_eq!(answer["statusCode"], 503, "{answer}");
    let error: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(error["error"]["code"], "stream_unavailable");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("3 of 3"),
        "{error}"
    );

    // Over the write key's rate: 429 with Retry-After, as on Azure (the admission is the
    // API's, shared by both hosts), and nothing of it in the stream.
    let mut env = moto.env();
    env.push(("COLLECT_KINESIS_STREAM", "clickstream".into()));
    env.push(("COLLECT_EVENTS_PER_SECOND_PER_KEY", "1".into()));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let limited = Function::start("http", &db.url(), &env_refs).await;
    let answer = limited.ok(&collect_event(&body, &key)).await;
    assert_eq!(answer["statusCode"], 202, "{answer}");
    let answer = limited.ok(&collect_event(&body, &key)).await;
    assert_eq!(answer["statusCode"], 429, "{answer}");
    let error: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(error["error"]["code"], "too_many_requests");
    let retry_after = answer["headers"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
        .map(|(_, v)| v.clone());
    assert_eq!(retry_after, Some(json!("1")), "{answer}");
    assert_eq!(records_in(&aws, "clickstream").await.len(), 6);
}

#[tokio::test]
async fn a_secret_that_cannot_be_read_stops_the_start_naming_the_setting() {
    let moto = Moto::start().await;
    let env = moto.env();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rmk/absent-AbCdEf";
    let mut function = Function::start("ingest", arn, &env_refs).await;
    let status = tokio::time::timeout(Duration::from_secs(30), function.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success());
    let (error_type, message) = function.api.init_error().expect("init error reported");
    assert_eq!(error_type, "invalid_settings");
    assert!(message.contains("DATABASE_URL"), "{message}");
    assert!(message.contains("ResourceNotFoundException"), "{message}");

    // The SSM form too.
    let arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/rmk/absent";
    let mut function = Function::start("ingest", "postgres://u@127.0.0.1:1/db", &{
        let mut e = env_refs.clone();
        e.push(("SHARE_TOKEN_SECRET", arn));
        e
    })
    .await;
    tokio::time::timeout(Duration::from_secs(30), function.child.wait())
        .await
        .unwrap()
        .unwrap();
    let (_, message) = function.api.init_error().expect("init error reported");
    assert!(message.contains("SHARE_TOKEN_SECRET"), "{message}");
}

/// A PutRecords stand-in that refuses the records whose text contains "refuse" `refusals` times.
#[derive(Clone, Default)]
struct Refusing {
    calls: Arc<Mutex<Vec<Vec<String>>>>,
    refusals: usize,
}

async fn put_records(State(s): State<Refusing>, body: axum::body::Bytes) -> Json<Value> {
    // Sent as application/x-amz-json-1.1, which axum's Json extractor does not take.
    let body: Value = serde_json::from_slice(&body).unwrap();
    let texts: Vec<String> = body["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let data = base64::engine::general_purpose::STANDARD
                .decode(r["Data"].as_str().unwrap())
                .unwrap();
            String::from_utf8(data).unwrap()
        })
        .collect();
    let mut calls = s.calls.lock().unwrap();
    let call = calls.len();
    calls.push(texts.clone());
    let results: Vec<Value> = texts
        .iter()
        .map(|t| {
            if t.contains("refuse") && call < s.refusals {
                json!({"ErrorCode": "ProvisionedThroughputExceededException",
                       "ErrorMessage": "Rate exceeded for shard"})
            } else {
                json!({"SequenceNumber": "4959", "ShardId": "shardId-000000000000"})
            }
        })
        .collect();
    let failed = results
        .iter()
        .filter(|r| r.get("ErrorCode").is_some())
        .count();
    Json(json!({"FailedRecordCount": failed, "Records": results}))
}

async fn refusing_publisher(refusals: usize) -> (Publisher, Refusing) {
    let state = Refusing {
        refusals,
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/", post(put_records))
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let map: HashMap<String, String> = [
        ("AWS_REGION", "eu-west-1".to_string()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_ENDPOINT_URL", format!("http://{addr}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    (
        Publisher::new(Aws::from_map(&map).unwrap(), "clickstream"),
        state,
    )
}

#[tokio::test]
async fn partially_refused_records_are_sent_again_then_reported() {
    let events: Vec<String> = ["a", "refuse b", "c"]
        .iter()
        .map(|s| s.to_string())
        .collect();

    let (publisher, state) = refusing_publisher(1).await;
    publisher.publish(&events).await.unwrap();
    let calls = state.calls.lock().unwrap().clone();
    assert_eq!(calls, [events.clone(), vec!["refuse b".to_string()]]);

    let (publisher, state) = refusing_publisher(usize::MAX).await;
    let e = publisher.publish(&events).await.unwrap_err();
    assert_eq!((e.failed, e.total), (1, 3));
    assert!(e.why.contains("ProvisionedThroughputExceeded"), "{e}");
    assert_eq!(state.calls.lock().unwrap().len(), ATTEMPTS);
}
