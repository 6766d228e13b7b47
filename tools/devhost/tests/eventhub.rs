//! Event Hubs: the producer endpoint, batch envelopes, and checkpoints exactly as the host.

mod common;

use common::*;
use remarketable_devhost::envelope::Encoding;
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

/// The JSON inside a double-encoded value.
fn decoded(v: &Value) -> Value {
    serde_json::from_str(v.as_str().expect("double-encoded values are strings")).unwrap()
}

fn sequence_numbers(envelope: &Value) -> Vec<i64> {
    let seq = &envelope["Metadata"]["SequenceNumberArray"];
    let seq = if seq.is_string() {
        decoded(seq)
    } else {
        seq.clone()
    };
    seq.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_endpoint_accepts_json_ndjson_and_refuses_bad_requests() {
    let app = TestApp::new("produce", &[("ingest", ingest_function(None))], &[]);
    let host = app.start().await;
    let http = client();
    let events_url = url(&host, "/admin/hubs/clickstream/events");

    let r = produce(
        &host,
        "?partition=1",
        json!([{"a": 1, "b": "x"}, "raw \"text\""]),
    )
    .await;
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"accepted": 2}));

    let ndjson = "{\"n\":1}\n\n{\"broken\":\r\n  {\"n\": 3}  \n";
    let r = http
        .post(format!("{events_url}?partition=1"))
        .header("content-type", "application/x-ndjson")
        .body(ndjson)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"accepted": 3}));

    wait_until("five events delivered", WAIT, || {
        app.invocations("ingest")
            .iter()
            .map(|e| sequence_numbers(e).len())
            .sum::<usize>()
            == 5
    })
    .await;
    let bodies: Vec<String> = app
        .invocations("ingest")
        .iter()
        .flat_map(|e| decoded(&e["Data"]["events"]).as_array().unwrap().clone())
        .map(|b| b.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        bodies,
        vec![
            r#"{"a":1,"b":"x"}"#,
            "raw \"text\"",
            "{\"n\":1}",
            "{\"broken\":",
            "  {\"n\": 3}  "
        ]
    );

    // A partition key pins every event to one partition.
    let r = produce(&host, "?partitionKey=tenant-9", json!(["k1", "k2", "k3"])).await;
    assert_eq!(r.status(), 202);
    let status = host.status();
    let per_partition: Vec<i64> = status["hubs"]["clickstream"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["lastEnqueuedSequence"].as_i64().unwrap_or(-1) + 1)
        .collect();
    let pinned = remarketable_devhost::hub::partition_for_key("tenant-9", 2);
    let mut expected = vec![0, 5];
    expected[pinned] += 3;
    assert_eq!(per_partition, expected);

    for (query, body, content_type, code, status) in [
        ("", "{\"a\":1}", "application/json", "not_an_array", 400),
        ("", "[1,", "application/json", "bad_json", 400),
        ("", "[]", "application/json", "no_events", 400),
        (
            "?partition=2",
            "[1]",
            "application/json",
            "bad_partition",
            400,
        ),
        (
            "?partition=0&partitionKey=x",
            "[1]",
            "application/json",
            "bad_target",
            400,
        ),
    ] {
        let r = http
            .post(format!("{events_url}{query}"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{query} {body}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], code);
    }
    let r = http
        .post(url(&host, "/admin/hubs/nope/events"))
        .body("[1]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "unknown_hub"
    );
    let huge = format!(
        "[\"{}\"]",
        "x".repeat(remarketable_devhost::front::PRODUCE_LIMIT)
    );
    let r = http.post(&events_url).body(huge).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "too_large"
    );
    host.shutdown().await;
}

/// Compares an envelope with a fixture: same keys, same encoding (kind) of every Metadata value.
fn assert_same_shape(envelope: &Value, fixture: &Value) {
    assert_eq!(keys(envelope), keys(fixture));
    assert_eq!(keys(&envelope["Data"]), keys(&fixture["Data"]));
    assert_eq!(keys(&envelope["Metadata"]), keys(&fixture["Metadata"]));
    assert_eq!(
        kind(&envelope["Data"]["events"]),
        kind(&fixture["Data"]["events"])
    );
    for k in keys(&fixture["Metadata"]) {
        assert_eq!(
            kind(&envelope["Metadata"][&k]),
            kind(&fixture["Metadata"][&k]),
            "Metadata.{k}"
        );
    }
    assert_eq!(
        keys(&envelope["Metadata"]["sys"]),
        keys(&fixture["Metadata"]["sys"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_envelopes_match_the_fixtures_in_both_encodings() {
    for (encoding, fixture_name) in [
        (Encoding::Double, "eventhub_batch_double_encoded.json"),
        (Encoding::Plain, "eventhub_batch_plain.json"),
    ] {
        let app = TestApp::new("shape", &[("ingest", ingest_function(None))], &[]);
        let mut options = app.options();
        options.encoding = encoding;
        let host = start_with(options).await;
        produce(
            &host,
            "?partition=1",
            json!([{"tenant_id": 1}, "{\"tenant_id\": 1"]),
        )
        .await;
        wait_until("a batch", WAIT, || !app.invocations("ingest").is_empty()).await;
        let envelope = &app.invocations("ingest")[0];
        let fixture = fixture(fixture_name);
        assert_same_shape(envelope, &fixture);
        let plain = |v: &Value| {
            if encoding == Encoding::Double {
                decoded(v)
            } else {
                v.clone()
            }
        };
        let meta = &envelope["Metadata"];
        let context = plain(&meta["PartitionContext"]);
        assert_eq!(
            keys(&context),
            keys(&plain(&fixture["Metadata"]["PartitionContext"]))
        );
        assert_eq!(context["EventHubName"], "clickstream");
        assert_eq!(context["ConsumerGroup"], "$Default");
        assert_eq!(context["PartitionId"], "1");
        assert_eq!(context["FullyQualifiedNamespace"], "devhost-test.local");
        assert_eq!(
            plain(&envelope["Data"]["events"]),
            json!(["{\"tenant_id\":1}", "{\"tenant_id\": 1"])
        );
        assert_eq!(plain(&meta["SequenceNumberArray"]), json!([0, 1]));
        let offsets = plain(&meta["OffsetArray"]);
        assert_eq!(offsets[0], "0");
        assert!(offsets[1].as_str().unwrap().parse::<u64>().unwrap() > 0);
        let times = plain(&meta["EnqueuedTimeUtcArray"]);
        let t = times[0].as_str().unwrap();
        assert!(
            !t.ends_with('Z')
                && chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f").is_ok(),
            "{t}"
        );
        assert_eq!(plain(&meta["PartitionKeyArray"]), json!([null, null]));
        assert_eq!(plain(&meta["PropertiesArray"]), json!([{}, {}]));
        let system = plain(&meta["SystemPropertiesArray"]);
        assert_eq!(
            keys(&system[1]),
            keys(&plain(&fixture["Metadata"]["SystemPropertiesArray"])[0])
        );
        assert_eq!(system[1]["SequenceNumber"], 1);
        assert_eq!(meta["sys"]["MethodName"], "ingest");
        host.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_checkpoints_the_batch() {
    let app = TestApp::new("success", &[("ingest", ingest_function(None))], &[]);
    let host = app.start().await;
    produce(&host, "?partition=0", json!(["a", "b", "c"])).await;
    wait_until("checkpoint at 2", WAIT, || {
        app.checkpoint("ingest", 0)
            .is_some_and(|c| c["sequenceNumber"] == 2)
    })
    .await;
    assert_eq!(app.invocations("ingest").len(), 1);
    // The status follows the checkpoint file a moment later.
    wait_until("status shows the checkpoint", WAIT, || {
        host.status()["hubs"]["clickstream"]["partitions"][0]["consumers"]["ingest"]
            ["lastCheckpointedSequence"]
            == 2
    })
    .await;
    let status = host.status();
    let consumer = &status["hubs"]["clickstream"]["partitions"][0]["consumers"]["ingest"];
    assert_eq!(consumer["lastCheckpointedSequence"], 2);
    assert_eq!(consumer["lag"], 0);
    assert_eq!(status["functions"]["ingest"]["invocations"], 1);
    assert_eq!(status["functions"]["ingest"]["failures"], 0);
    // The next batch starts after the checkpoint.
    produce(&host, "?partition=0", json!(["d"])).await;
    wait_until("second batch", WAIT, || {
        app.invocations("ingest").len() == 2
    })
    .await;
    assert_eq!(sequence_numbers(&app.invocations("ingest")[1]), vec![3]);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_without_a_retry_policy_still_moves_the_checkpoint() {
    let app = TestApp::new(
        "fail-no-policy",
        &[("ingest", ingest_function(None))],
        &[("TEST_HANDLER_FAIL_FIRST", "1")],
    );
    let host = app.start().await;
    produce(&host, "?partition=0", json!(["a", "b"])).await;
    wait_until("checkpoint at 1", WAIT, || {
        app.checkpoint("ingest", 0)
            .is_some_and(|c| c["sequenceNumber"] == 1)
    })
    .await;
    // Not redelivered: the host moves on after a failed invocation.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.invocations("ingest").len(), 1);
    let status = host.status();
    assert_eq!(status["functions"]["ingest"]["failures"], 1);
    assert!(status["functions"]["ingest"]["lastError"]
        .as_str()
        .unwrap()
        .contains("500"));
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_with_a_retry_policy_redelivers_until_success() {
    let policy = json!({"strategy": "exponentialBackoff", "maxRetryCount": -1,
                        "minimumInterval": "00:00:00.200", "maximumInterval": "00:00:00.400"});
    let app = TestApp::new(
        "retry",
        &[("ingest", ingest_function(Some(policy)))],
        &[("TEST_HANDLER_FAIL_FIRST", "3")],
    );
    let host = app.start().await;
    produce(&host, "?partition=0", json!(["a", "b"])).await;
    wait_until("the first attempt", WAIT, || {
        !app.invocations("ingest").is_empty()
    })
    .await;
    // While retrying: no checkpoint, and the status says so.
    wait_until("retry in progress", WAIT, || {
        host.status()["hubs"]["clickstream"]["partitions"][0]["consumers"]["ingest"]["retrying"]
            .as_i64()
            >= Some(1)
    })
    .await;
    assert!(app.checkpoint("ingest", 0).is_none());
    wait_until("checkpoint after success", WAIT, || {
        app.checkpoint("ingest", 0)
            .is_some_and(|c| c["sequenceNumber"] == 1)
    })
    .await;
    let invocations = app.invocations("ingest");
    assert_eq!(invocations.len(), 4, "three failures, then the success");
    for (i, envelope) in invocations.iter().enumerate() {
        assert_eq!(
            sequence_numbers(envelope),
            vec![0, 1],
            "the same batch every time"
        );
        let retry = envelope["Metadata"].get("RetryContext");
        if i == 0 {
            assert!(retry.is_none(), "the first delivery is not a retry");
        } else {
            let retry = decoded(retry.unwrap());
            assert_eq!(retry["RetryCount"], i as i64);
            assert_eq!(retry["MaxRetryCount"], -1);
            assert!(retry["Exception"]["Message"]
                .as_str()
                .unwrap()
                .contains("500"));
        }
    }
    // The status follows the checkpoint file a moment later.
    wait_until("status shows the checkpoint", WAIT, || {
        host.status()["hubs"]["clickstream"]["partitions"][0]["consumers"]["ingest"]
            ["lastCheckpointedSequence"]
            == 1
    })
    .await;
    let status = host.status();
    assert_eq!(
        status["hubs"]["clickstream"]["partitions"][0]["consumers"]["ingest"]["retrying"],
        0
    );
    assert_eq!(status["functions"]["ingest"]["failures"], 3);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_finite_policy_moves_the_checkpoint_on() {
    let policy =
        json!({"strategy": "fixedDelay", "maxRetryCount": 2, "delayInterval": "00:00:00.100"});
    let app = TestApp::new(
        "exhausted",
        &[("ingest", ingest_function(Some(policy)))],
        &[("TEST_HANDLER_FAIL_FIRST", "10")],
    );
    let host = app.start().await;
    produce(&host, "?partition=0", json!(["a"])).await;
    wait_until("checkpoint after the last retry", WAIT, || {
        app.checkpoint("ingest", 0)
            .is_some_and(|c| c["sequenceNumber"] == 0)
    })
    .await;
    assert_eq!(
        app.invocations("ingest").len(),
        3,
        "one delivery and two retries"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_invocation_restarts_the_handler_and_redelivers() {
    let app = TestApp::new(
        "crash",
        &[("ingest", ingest_function(None))],
        &[("TEST_HANDLER_CRASH_AT", "1")],
    );
    let host = app.start().await;
    produce(&host, "?partition=0", json!(["a", "b"])).await;
    wait_until("redelivery after the restart", WAIT, || {
        app.invocations("ingest").len() == 2
    })
    .await;
    wait_until("checkpoint after success", WAIT, || {
        app.checkpoint("ingest", 0)
            .is_some_and(|c| c["sequenceNumber"] == 1)
    })
    .await;
    let invocations = app.invocations("ingest");
    assert_eq!(
        sequence_numbers(&invocations[0]),
        sequence_numbers(&invocations[1])
    );
    assert!(invocations[1]["Metadata"].get("RetryContext").is_none());
    assert_eq!(host.status()["handler"]["restarts"], 1);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_devhost_resumes_from_the_checkpoint_and_keeps_the_hub() {
    let app = TestApp::new("resume", &[("ingest", ingest_function(None))], &[]);
    let host = app.start().await;
    produce(&host, "?partition=0", json!(["a", "b"])).await;
    wait_until("checkpoint at 1", WAIT, || {
        app.checkpoint("ingest", 0)
            .is_some_and(|c| c["sequenceNumber"] == 1)
    })
    .await;
    host.shutdown().await;

    let host = app.start().await;
    // The consumer reads its checkpoint file as it starts.
    wait_until("the consumer registered", WAIT, || {
        !host.status()["hubs"]["clickstream"]["partitions"][0]["consumers"]["ingest"].is_null()
    })
    .await;
    let status = host.status();
    assert_eq!(
        status["hubs"]["clickstream"]["partitions"][0]["lastEnqueuedSequence"],
        1
    );
    assert_eq!(
        status["hubs"]["clickstream"]["partitions"][0]["consumers"]["ingest"]
            ["lastCheckpointedSequence"],
        1
    );
    produce(&host, "?partition=0", json!(["c"])).await;
    wait_until("the new event", WAIT, || {
        app.invocations("ingest").len() == 2
    })
    .await;
    assert_eq!(
        sequence_numbers(&app.invocations("ingest")[1]),
        vec![2],
        "nothing before the checkpoint again"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_invocation_leaves_no_checkpoint_and_the_batch_comes_back() {
    // The first invocation hangs; devhost is stopped while it is in flight, so nothing is
    // checkpointed, and the next devhost delivers the batch again.
    let app = TestApp::new(
        "shutdown",
        &[("ingest", ingest_function(None))],
        &[("TEST_HANDLER_HANG_AT", "1")],
    );
    let host = app.start().await;
    produce(&host, "?partition=0", json!(["a"])).await;
    wait_until("the hanging invocation", WAIT, || {
        app.invocations("ingest").len() == 1
    })
    .await;
    tokio::time::timeout(Duration::from_secs(10), host.shutdown())
        .await
        .expect("shutdown does not wait for the invocation");
    assert!(app.checkpoint("ingest", 0).is_none());

    let host = app.start().await;
    wait_until("redelivery by the next devhost", WAIT, || {
        app.invocations("ingest").len() == 2
    })
    .await;
    wait_until("checkpoint", WAIT, || {
        app.checkpoint("ingest", 0)
            .is_some_and(|c| c["sequenceNumber"] == 0)
    })
    .await;
    assert_eq!(sequence_numbers(&app.invocations("ingest")[1]), vec![0]);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_a_sigkill_of_devhost() {
    let app = TestApp::new("sigkill", &[("ingest", ingest_function(None))], &[]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(DEVHOST)
        .args([
            "--app-root",
            app.root.to_str().unwrap(),
            "--handler",
            HANDLER,
            "--port",
            &port.to_string(),
            "--partitions",
            "2",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = client();
    let events_url = format!("http://127.0.0.1:{port}/admin/hubs/clickstream/events?partition=1");
    let mut accepted = 0;
    let started = std::time::Instant::now();
    while accepted < 50 {
        assert!(
            started.elapsed() < WAIT,
            "devhost child did not accept events"
        );
        let Ok(r) = http
            .post(&events_url)
            .body(json!([format!("e{accepted}")]).to_string())
            .send()
            .await
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        assert_eq!(r.status(), 202);
        accepted += 1;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // Start the consumer over from no checkpoint to see every acknowledged event delivered
    // again by a fresh devhost.
    let _ = std::fs::remove_dir_all(app.state_dir().join("checkpoints"));
    let _ = std::fs::remove_file(app.root.join("record.jsonl"));
    let host = app.start().await;
    assert_eq!(
        host.status()["hubs"]["clickstream"]["partitions"][1]["lastEnqueuedSequence"],
        49
    );
    wait_until("all 50 delivered", WAIT, || {
        app.invocations("ingest")
            .iter()
            .map(|e| sequence_numbers(e).len())
            .sum::<usize>()
            >= 50
    })
    .await;
    let bodies: Vec<Value> = app
        .invocations("ingest")
        .iter()
        .flat_map(|e| decoded(&e["Data"]["events"]).as_array().unwrap().clone())
        .collect();
    let expected: Vec<Value> = (0..50).map(|i| json!(format!("e{i}"))).collect();
    assert_eq!(&bodies[..50], &expected[..]);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_function_has_its_own_consumer_and_checkpoint() {
    let app = TestApp::new(
        "two-readers",
        &[
            ("ingest", ingest_function(None)),
            ("mirror", ingest_function(None)),
        ],
        &[],
    );
    let host = app.start().await;
    produce(&host, "?partition=1", json!(["a", "b"])).await;
    for function in ["ingest", "mirror"] {
        wait_until("both checkpoints", WAIT, || {
            app.checkpoint(function, 1)
                .is_some_and(|c| c["sequenceNumber"] == 1)
        })
        .await;
        assert_eq!(sequence_numbers(&app.invocations(function)[0]), vec![0, 1]);
    }
    let consumers = &host.status()["hubs"]["clickstream"]["partitions"][1]["consumers"];
    assert_eq!(keys(consumers), vec!["ingest", "mirror"]);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_devhost_and_its_handler_with_exit_code_0() {
    let app = TestApp::new("sigterm", &[("ingest", ingest_function(None))], &[]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(DEVHOST)
        .args([
            "--app-root",
            app.root.to_str().unwrap(),
            "--handler",
            HANDLER,
            "--port",
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status_url = format!("http://127.0.0.1:{port}/admin/status");
    let started = std::time::Instant::now();
    loop {
        assert!(started.elapsed() < WAIT, "devhost child never became ready");
        if let Ok(r) = client().get(&status_url).send().await {
            if r.json::<Value>().await.unwrap()["handler"]["ready"] == true {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "devhost did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(exit.code(), Some(0));
    assert!(
        client().get(&status_url).send().await.is_err(),
        "no longer taking requests"
    );
}
