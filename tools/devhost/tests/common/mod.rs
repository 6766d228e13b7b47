//! Shared test scaffolding: a throw-away app root driven by the test handler.
#![allow(dead_code)] // each test file uses a different part of it

use remarketable_devhost::envelope::Encoding;
use remarketable_devhost::{Devhost, Options};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const HANDLER: &str = env!("CARGO_BIN_EXE_devhost-test-handler");
pub const DEVHOST: &str = env!("CARGO_BIN_EXE_devhost");
pub const FUNCTION_KEY: &str = "test-function-key";
pub const MASTER_KEY: &str = "test-master-key";

/// A temporary app root: host.json, local.settings.json and functions/*/function.json.
pub struct TestApp {
    pub root: PathBuf,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl TestApp {
    /// `values` are extra local settings (e.g. TEST_HANDLER_FAIL_FIRST).
    pub fn new(name: &str, functions: &[(&str, Value)], values: &[(&str, &str)]) -> TestApp {
        let root = std::env::temp_dir().join(format!(
            "devhost-test-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("functions/handler")).unwrap();
        let host = json!({
            "version": "2.0",
            "customHandler": {
                "description": {"defaultExecutablePath": "handler", "workingDirectory": "", "arguments": []},
                "enableForwardingHttpRequest": true
            },
            "extensions": {
                "http": {"routePrefix": "api"},
                "eventHubs": {"maxEventBatchSize": 10, "minEventBatchSize": 1, "maxWaitTime": "00:00:01",
                              "initialOffsetOptions": {"type": "fromStart"}}
            },
            "functionTimeout": "00:00:30"
        });
        write(&root.join("host.json"), &host);
        let mut settings = serde_json::Map::new();
        settings.insert("FUNCTIONS_WORKER_RUNTIME".into(), json!("custom"));
        settings.insert(
            "EventHubConnection".into(),
            json!("Endpoint=sb://devhost-test.local/;SharedAccessKeyName=dev;SharedAccessKey=x"),
        );
        settings.insert("EVENTHUB_NAME".into(), json!("clickstream"));
        settings.insert("EVENTHUB_CONSUMER_GROUP".into(), json!("$Default"));
        settings.insert("DEVHOST_FUNCTION_KEY".into(), json!(FUNCTION_KEY));
        settings.insert("DEVHOST_MASTER_KEY".into(), json!(MASTER_KEY));
        settings.insert("TEST_SETTING".into(), json!("from-local-settings"));
        settings.insert(
            "TEST_HANDLER_RECORD".into(),
            json!(root.join("record.jsonl").to_string_lossy()),
        );
        for (k, v) in values {
            settings.insert(k.to_string(), json!(v));
        }
        write(
            &root.join("local.settings.json"),
            &json!({"IsEncrypted": false, "Values": settings}),
        );
        // A folder without function.json is not a function; `handler` is skipped even with one.
        write(
            &root.join("functions/handler/function.json"),
            &json!({"bindings": []}),
        );
        std::fs::create_dir_all(root.join("functions/notes")).unwrap();
        for (name, function) in functions {
            std::fs::create_dir_all(root.join("functions").join(name)).unwrap();
            write(
                &root.join("functions").join(name).join("function.json"),
                function,
            );
        }
        TestApp { root }
    }

    pub fn options(&self) -> Options {
        let mut options = Options::new(&self.root);
        options.handler = Some(PathBuf::from(HANDLER));
        options.port = 0;
        options.partitions = 2;
        options.encoding = Encoding::Double;
        options.summary_every = None;
        options
    }

    pub async fn start(&self) -> Devhost {
        start_with(self.options()).await
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root.join(".local/devhost")
    }

    /// Requests the handler received, in order.
    pub fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(self.root.join("record.jsonl"))
            .unwrap_or_default()
            .lines()
            // A line the handler is still writing is not a record yet.
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Parsed envelopes the handler received at `POST /<function>`.
    pub fn invocations(&self, function: &str) -> Vec<Value> {
        let path = format!("/{function}");
        self.records()
            .into_iter()
            .filter(|r| r["path"] == path.as_str())
            .map(|r| serde_json::from_str(r["body"].as_str().unwrap()).unwrap())
            .collect()
    }

    pub fn checkpoint(&self, function: &str, partition: u32) -> Option<Value> {
        let path = self.state_dir().join(format!(
            "checkpoints/clickstream/$Default/{function}/{partition}.json"
        ));
        std::fs::read(path)
            .ok()
            .map(|b| serde_json::from_slice(&b).unwrap())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

pub async fn start_with(options: Options) -> Devhost {
    let host = Devhost::start(options).await.expect("devhost starts");
    assert!(
        tokio::time::timeout(Duration::from_secs(20), host.handler_ready())
            .await
            .expect("handler ready in time")
    );
    host
}

fn write(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
}

pub fn client() -> reqwest::Client {
    remarketable_devhost::http_client_builder()
        .no_proxy()
        .build()
        .unwrap()
}

pub fn url(host: &Devhost, path: &str) -> String {
    format!("http://{}{path}", host.addr())
}

/// Polls `check` every 50 ms until it holds, failing after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An ingest-like function: eventHubTrigger on the `clickstream` hub, optional retry policy.
pub fn ingest_function(retry: Option<Value>) -> Value {
    let mut f = json!({"bindings": [{
        "type": "eventHubTrigger", "name": "events", "direction": "in",
        "eventHubName": "%EVENTHUB_NAME%", "connection": "EventHubConnection",
        "consumerGroup": "%EVENTHUB_CONSUMER_GROUP%", "cardinality": "many", "dataType": "string"
    }]});
    if let Some(r) = retry {
        f["retry"] = r;
    }
    f
}

/// A collect-like function: HTTP in (function key) + http out + Event Hubs out.
pub fn collect_function() -> Value {
    json!({"bindings": [
        {"type": "httpTrigger", "name": "req", "direction": "in", "authLevel": "function", "methods": ["post"], "route": "collect"},
        {"type": "http", "name": "res", "direction": "out"},
        {"type": "eventHub", "name": "outEvents", "direction": "out", "eventHubName": "%EVENTHUB_NAME%", "connection": "EventHubConnection"}
    ]})
}

/// Posts events to a hub through the producer endpoint.
pub async fn produce(host: &Devhost, query: &str, body: Value) -> reqwest::Response {
    client()
        .post(url(host, &format!("/admin/hubs/clickstream/events{query}")))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// The repository fixture `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Keys of an object, sorted.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
    k.sort();
    k
}

/// Same JSON kind (string vs array vs object vs number...).
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
