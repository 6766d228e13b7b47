//! A purpose-built custom handler for devhost's tests. It records every request it receives and
//! behaves as its environment says:
//!
//! - `TEST_HANDLER_RECORD`: file that gets one JSON line per request (`path`, `method`, `query`,
//!   `headers`, `body`), appended before the request is answered.
//! - `TEST_HANDLER_FAIL_FIRST=N`: invocation number 1..=N of each function answers 500.
//! - `TEST_HANDLER_CRASH_AT=K`: invocation number K of each function exits the process before
//!   answering (a crash mid-invocation).
//! - `TEST_HANDLER_HANG_AT=K`: invocation number K of each function never answers.
//! - `TEST_HANDLER_DELAY_MS=N`: every invocation takes N ms to answer.
//! - `TEST_HANDLER_NOT_JSON=1`: invocations answer 200 with a body that is not JSON.
//!
//! Each record also holds `inflight`: how many requests for the same path were being handled
//! at that moment, this one included (1 means no overlap).
//!
//! Counts come from the record file, so they carry over a restart. Invocations (`POST /<name>`
//! with an envelope) answer `Outputs`; when the envelope holds `Data.req` the answer sets
//! `res` (201, header `x-test: envelope`) and `outEvents` (one string per element of the
//! request body's JSON array). The process exits when its parent goes away (devhost killed with
//! SIGKILL cannot stop it). Anything else is a forwarded request and is echoed back as JSON
//! (`/boom` in the path answers 500).

use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use std::io::Write;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let port: u16 = std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .expect("FUNCTIONS_CUSTOMHANDLER_PORT");
    tokio::spawn(exit_when_orphaned());
    let app = Router::new()
        .route("/", get(|| async { "ready" }))
        // A redirect, which a host must pass on to the client rather than follow itself.
        .route(
            "/api/v1/moved",
            get(|| async {
                (
                    StatusCode::PERMANENT_REDIRECT,
                    [(axum::http::header::LOCATION, "moved/")],
                )
            }),
        )
        .fallback(handle);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    println!("test handler on {port}");
    axum::serve(listener, app).await.expect("serve");
}

/// Requests being handled, per path.
static IN_FLIGHT: std::sync::Mutex<Vec<(String, usize)>> = std::sync::Mutex::new(Vec::new());

struct InFlight {
    path: String,
    count: usize,
}

impl InFlight {
    fn enter(path: &str) -> InFlight {
        let mut all = IN_FLIGHT.lock().unwrap();
        let count = match all.iter_mut().find(|(p, _)| p == path) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                all.push((path.to_string(), 1));
                1
            }
        };
        InFlight {
            path: path.to_string(),
            count,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut all = IN_FLIGHT.lock().unwrap();
        if let Some((_, n)) = all.iter_mut().find(|(p, _)| *p == self.path) {
            *n -= 1;
        }
    }
}

async fn exit_when_orphaned() {
    let parent = std::os::unix::process::parent_id();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if std::os::unix::process::parent_id() != parent {
            std::process::exit(0);
        }
    }
}

fn env_number(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Appends the request to the record file; answers how many requests for `path` it now holds.
fn record(entry: &Value, path: &str) -> usize {
    let Ok(file) = std::env::var("TEST_HANDLER_RECORD") else {
        return 1;
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .expect("record file");
    // One write call, so a reader never sees half a line.
    f.write_all(format!("{entry}\n").as_bytes())
        .expect("record");
    f.sync_all().expect("sync record");
    std::fs::read_to_string(&file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["path"] == path)
        .count()
}

async fn handle(request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, usize::MAX).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body).into_owned();
    let path = parts.uri.path().to_string();
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                json!(v.to_str().unwrap_or_default()),
            )
        })
        .collect();
    let entry = json!({
        "path": path,
        "method": parts.method.as_str(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": text,
        "inflight": 0,
    });
    let _guard = InFlight::enter(&path);
    let mut entry = entry;
    entry["inflight"] = json!(_guard.count);
    let count = record(&entry, &path);
    if let Some(ms) = env_number("TEST_HANDLER_DELAY_MS") {
        tokio::time::sleep(std::time::Duration::from_millis(ms as u64)).await;
    }
    let envelope: Option<Value> = serde_json::from_str::<Value>(&text)
        .ok()
        .filter(|v| v.get("Data").is_some());
    let Some(envelope) = envelope else {
        return forwarded(&parts, &text);
    };
    if env_number("TEST_HANDLER_CRASH_AT") == Some(count) {
        eprintln!("crashing on purpose in invocation {count} of {path}");
        std::process::exit(3);
    }
    if env_number("TEST_HANDLER_HANG_AT") == Some(count) {
        std::future::pending::<()>().await;
    }
    if env_number("TEST_HANDLER_FAIL_FIRST").is_some_and(|n| count <= n) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failing invocation {count} on purpose"),
        )
            .into_response();
    }
    if std::env::var("TEST_HANDLER_NOT_JSON").is_ok() {
        return (StatusCode::OK, "not json").into_response();
    }
    let mut outputs = serde_json::Map::new();
    if let Some(req) = envelope["Data"].get("req") {
        let events: Vec<String> = req["Body"]
            .as_str()
            .and_then(|b| serde_json::from_str::<Vec<Value>>(b).ok())
            .unwrap_or_default()
            .iter()
            .map(Value::to_string)
            .collect();
        outputs.insert(
            "res".into(),
            json!({"statusCode": 201, "headers": {"x-test": "envelope"},
                   "body": json!({"function": path, "params": req["Params"]}).to_string()}),
        );
        outputs.insert("outEvents".into(), json!(events));
    }
    let answer = json!({"Outputs": outputs, "Logs": [format!("handled {path} #{count}")], "ReturnValue": null});
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        answer.to_string(),
    )
        .into_response()
}

fn forwarded(parts: &axum::http::request::Parts, body: &str) -> Response {
    let status = if parts.uri.path().contains("/boom") {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let echo = json!({
        "forwarded": true,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "body": body,
        "setting": std::env::var("TEST_SETTING").ok(),
    });
    (
        status,
        [
            ("content-type", "application/json"),
            ("x-test", "forwarded"),
        ],
        echo.to_string(),
    )
        .into_response()
}
