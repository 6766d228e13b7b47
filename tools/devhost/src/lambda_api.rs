//! A local stand-in of the AWS Lambda Runtime API (2018-06-01), to run the real `lambda`
//! binary as Lambda runs it: the binary, started with `AWS_LAMBDA_RUNTIME_API=127.0.0.1:<port>`,
//! loops on `GET /2018-06-01/runtime/invocation/next` and answers each invocation by
//! `POST .../invocation/{id}/response` or `.../invocation/{id}/error`; a function that cannot
//! start posts `.../runtime/init/error`.
//!
//! `next` sends the payload with the headers Lambda sends (`Lambda-Runtime-Aws-Request-Id`,
//! `-Deadline-Ms`, `-Invoked-Function-Arn`, `-Trace-Id`). [`LambdaApi::invoke`] queues one
//! invocation and waits for its answer, as a synchronous `Invoke` would.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Mutex as AsyncMutex};

/// The function ARN sent with every invocation.
pub const FUNCTION_ARN: &str = "arn:aws:lambda:eu-west-1:123456789012:function:rmk-local";

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The function's response body.
    Response(Bytes),
    /// The function reported an error: `errorType` and `errorMessage` of its error object.
    Error {
        error_type: String,
        error_message: String,
    },
}

/// Why [`LambdaApi::invoke`] gave no outcome.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("the function did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the stand-in stopped")]
    Stopped,
}

struct Pending {
    id: String,
    payload: Bytes,
    deadline: Duration,
}

struct Shared {
    queue: AsyncMutex<mpsc::UnboundedReceiver<Pending>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    init_error: Mutex<Option<(String, String)>>,
    headers_seen: Mutex<Vec<HeaderMap>>,
}

/// A running stand-in on 127.0.0.1.
pub struct LambdaApi {
    pub addr: SocketAddr,
    sender: mpsc::UnboundedSender<Pending>,
    shared: Arc<Shared>,
    counter: AtomicU64,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for LambdaApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl LambdaApi {
    pub async fn start() -> std::io::Result<LambdaApi> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (sender, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            queue: AsyncMutex::new(receiver),
            waiting: Mutex::new(HashMap::new()),
            init_error: Mutex::new(None),
            headers_seen: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(LambdaApi {
            addr,
            sender,
            shared,
            counter: AtomicU64::new(0),
            server,
        })
    }

    /// `AWS_LAMBDA_RUNTIME_API` for the function.
    pub fn runtime_api(&self) -> String {
        self.addr.to_string()
    }

    /// Queues one invocation and waits (at most `timeout`) for the function's answer.
    pub async fn invoke(
        &self,
        payload: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Outcome, InvokeError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("8476a536-e9f4-11e8-9739-{n:012x}");
        let (tx, rx) = oneshot::channel();
        self.shared
            .waiting
            .lock()
            .expect("waiting lock")
            .insert(id.clone(), tx);
        self.sender
            .send(Pending {
                id,
                payload: payload.into(),
                deadline: timeout,
            })
            .map_err(|_| InvokeError::Stopped)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(_)) => Err(InvokeError::Stopped),
            Err(_) => Err(InvokeError::Timeout(timeout)),
        }
    }

    /// The init error the function reported, if any: (`errorType`, `errorMessage`).
    pub fn init_error(&self) -> Option<(String, String)> {
        self.shared.init_error.lock().expect("init lock").clone()
    }

    /// The headers of every `next` answer sent so far.
    pub fn sent_headers(&self) -> Vec<HeaderMap> {
        self.shared
            .headers_seen
            .lock()
            .expect("headers lock")
            .clone()
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    let pending = { shared.queue.lock().await.recv().await };
    let Some(pending) = pending else {
        return StatusCode::GONE.into_response();
    };
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        + pending.deadline;
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        headers.insert(
            name,
            HeaderValue::from_str(&value).expect("header values are ASCII"),
        );
    };
    put("lambda-runtime-aws-request-id", pending.id.clone());
    put(
        "lambda-runtime-deadline-ms",
        deadline.as_millis().to_string(),
    );
    put("lambda-runtime-invoked-function-arn", FUNCTION_ARN.into());
    put(
        "lambda-runtime-trace-id",
        format!(
            "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=0;Lineage=1:{}",
            &pending.id[pending.id.len() - 8..]
        ),
    );
    put("content-type", "application/json".into());
    shared
        .headers_seen
        .lock()
        .expect("headers lock")
        .push(headers.clone());
    (StatusCode::OK, headers, pending.payload).into_response()
}

fn finish(shared: &Shared, id: &str, outcome: Outcome) -> StatusCode {
    match shared.waiting.lock().expect("waiting lock").remove(id) {
        Some(tx) => {
            let _ = tx.send(outcome);
            StatusCode::ACCEPTED
        }
        // As Lambda: an unknown or already answered request id.
        None => StatusCode::BAD_REQUEST,
    }
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    finish(&shared, &id, Outcome::Response(body))
}

/// The error object's `errorType` and `errorMessage`; the `Lambda-Runtime-Function-Error-Type`
/// header when the body has no type.
fn error_object(headers: &HeaderMap, body: &[u8]) -> (String, String) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let text = |k: &str| v.get(k).and_then(|t| t.as_str()).map(str::to_string);
    let error_type = text("errorType")
        .or_else(|| {
            headers
                .get("lambda-runtime-function-error-type")
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    (error_type, text("errorMessage").unwrap_or_default())
}

async fn error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let (error_type, error_message) = error_object(&headers, &body);
    finish(
        &shared,
        &id,
        Outcome::Error {
            error_type,
            error_message,
        },
    )
}

async fn init_error(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    *shared.init_error.lock().expect("init lock") = Some(error_object(&headers, &body));
    StatusCode::ACCEPTED
}

/// One Kafka record as an event source mapping delivers it.
#[derive(Debug, Clone)]
pub struct KafkaRecord<'a> {
    pub topic: &'a str,
    pub partition: i64,
    pub offset: i64,
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// `None` for a tombstone.
    pub value: Option<&'a [u8]>,
}

/// An MSK (`aws:kafka`) event as Lambda's Kafka poller sends it: records grouped under
/// `"<topic>-<partition>"`, values base64, headers as arrays of signed bytes.
pub fn msk_event(cluster_arn: &str, records: &[KafkaRecord<'_>]) -> serde_json::Value {
    use base64::Engine;
    let mut map = serde_json::Map::new();
    for r in records {
        let list = map
            .entry(format!("{}-{}", r.topic, r.partition))
            .or_insert_with(|| serde_json::json!([]));
        if let serde_json::Value::Array(list) = list {
            list.push(serde_json::json!({
                "topic": r.topic, "partition": r.partition, "offset": r.offset,
                "timestamp": r.timestamp_ms, "timestampType": "CREATE_TIME", "key": null,
                "value": r.value.map(|v| base64::engine::general_purpose::STANDARD.encode(v)),
                "headers": [{"source": [119, 101, 98]}],
            }));
        }
    }
    serde_json::json!({
        "eventSource": "aws:kafka",
        "eventSourceArn": cluster_arn,
        "bootstrapServers": "b-1.local:9098",
        "records": map,
    })
}

/// A Kinesis event of one shard of `stream_arn`: (sequence number, data), arrived at
/// `arrival_s` (seconds since the epoch).
pub fn kinesis_event(
    stream_arn: &str,
    shard: &str,
    arrival_s: f64,
    records: &[(String, Vec<u8>)],
) -> serde_json::Value {
    use base64::Engine;
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|(seq, data)| {
            serde_json::json!({
                "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "k",
                            "sequenceNumber": seq,
                            "data": base64::engine::general_purpose::STANDARD.encode(data),
                            "approximateArrivalTimestamp": arrival_s},
                "eventSource": "aws:kinesis", "eventVersion": "1.0",
                "eventID": format!("{shard}:{seq}"), "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/rmk-local",
                "awsRegion": "eu-west-1", "eventSourceARN": stream_arn,
            })
        })
        .collect();
    serde_json::json!({ "Records": records })
}
