//! HTTP triggers: routing, methods, keys, forwarding vs envelope, outputs.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

fn functions() -> Vec<(&'static str, Value)> {
    vec![
        ("collect", collect_function()),
        (
            "reports",
            json!({"bindings": [
                {"type": "httpTrigger", "name": "req", "direction": "in", "authLevel": "anonymous", "route": "v1/{*rest}"},
                {"type": "http", "name": "res", "direction": "out"}]}),
        ),
        (
            "tenant",
            json!({"bindings": [
                {"type": "httpTrigger", "name": "req", "direction": "in", "authLevel": "anonymous", "methods": ["get"], "route": "tenants/{id:int}/{view}"},
                {"type": "http", "name": "res", "direction": "out"},
                {"type": "eventHub", "name": "audit", "direction": "out", "eventHubName": "audit", "connection": "EventHubConnection"}]}),
        ),
        (
            "admin",
            json!({"bindings": [
                {"type": "httpTrigger", "name": "req", "direction": "in", "authLevel": "admin", "route": "ops/{task}"},
                {"type": "http", "name": "res", "direction": "out"}]}),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_methods_and_keys() {
    let app = TestApp::new("routes", &functions(), &[]);
    let host = app.start().await;
    let http = client();

    // Route prefix and catch-all; forwarded with path, query and body intact.
    let r = http
        .post(url(&host, "/api/v1/tenants/7/report?from=2026-11-01"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-test"], "forwarded");
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["path"], "/api/v1/tenants/7/report");
    assert_eq!(echo["query"], "from=2026-11-01");
    assert_eq!(echo["body"], "hello");
    assert_eq!(echo["method"], "POST");
    assert_eq!(
        echo["setting"], "from-local-settings",
        "Values reach the handler as environment"
    );
    // A redirect of the handler reaches the client as it is, not followed by the host.
    let no_follow = remarketable_devhost::http_client_builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_follow
        .get(url(&host, "/api/v1/moved"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "moved/");
    // Outside the prefix, or no route: 404.
    assert_eq!(
        http.get(url(&host, "/v1/x")).send().await.unwrap().status(),
        404
    );
    assert_eq!(
        http.get(url(&host, "/api/nothing"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // Constraint {id:int}: a non-number does not match.
    assert_eq!(
        http.get(url(&host, "/api/tenants/abc/summary"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // methods: ["get"] refuses POST; ["post"] refuses GET.
    assert_eq!(
        http.post(url(&host, "/api/tenants/7/summary"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    assert_eq!(
        http.get(url(&host, "/api/collect"))
            .header("x-functions-key", FUNCTION_KEY)
            .send()
            .await
            .unwrap()
            .status(),
        405
    );

    // Function keys: header, query, master key; missing or wrong -> 401 without calling the handler.
    let before = app.records().len();
    for (request, expected) in [
        (http.post(url(&host, "/api/collect")).body("[]"), 401),
        (
            http.post(url(&host, "/api/collect"))
                .header("x-functions-key", "wrong")
                .body("[]"),
            401,
        ),
        (
            http.post(url(&host, "/api/collect?code=wrong")).body("[]"),
            401,
        ),
        (
            http.post(url(&host, "/api/ops/purge"))
                .header("x-functions-key", FUNCTION_KEY),
            401,
        ),
    ] {
        assert_eq!(request.send().await.unwrap().status(), expected);
    }
    assert_eq!(
        app.records().len(),
        before,
        "refused requests never reach the handler"
    );
    for request in [
        http.post(url(&host, "/api/collect"))
            .header("x-functions-key", FUNCTION_KEY)
            .body("[]"),
        http.post(url(&host, &format!("/api/collect?code={FUNCTION_KEY}")))
            .body("[]"),
        http.post(url(&host, "/api/collect"))
            .header("x-functions-key", MASTER_KEY)
            .body("[]"),
    ] {
        assert_eq!(request.send().await.unwrap().status(), 201);
    }
    let r = http
        .post(url(&host, "/api/ops/purge"))
        .header("x-functions-key", MASTER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_mode_matches_the_fixture_and_applies_event_hub_outputs() {
    let app = TestApp::new("envelope", &functions(), &[]);
    let host = app.start().await;
    let http = client();
    let body = r#"[{"tenant_id": 1, "event_type": "page_view"}, {"tenant_id": 2}]"#;
    let r = http
        .post(url(&host, "/api/collect?source=web"))
        .header("x-functions-key", FUNCTION_KEY)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "statusCode of Outputs.res");
    assert_eq!(r.headers()["x-test"], "envelope");
    assert_eq!(r.json::<Value>().await.unwrap()["function"], "/collect");

    let envelope = &app.invocations("collect")[0];
    let fixture = fixture("http_collect.json");
    assert_eq!(keys(envelope), keys(&fixture));
    assert_eq!(keys(&envelope["Data"]), keys(&fixture["Data"]));
    assert_eq!(
        keys(&envelope["Data"]["req"]),
        keys(&fixture["Data"]["req"])
    );
    assert_eq!(keys(&envelope["Metadata"]), keys(&fixture["Metadata"]));
    assert_eq!(
        keys(&envelope["Metadata"]["sys"]),
        keys(&fixture["Metadata"]["sys"])
    );
    for k in keys(&fixture["Data"]["req"]) {
        assert_eq!(
            kind(&envelope["Data"]["req"][&k]),
            kind(&fixture["Data"]["req"][&k]),
            "Data.req.{k}"
        );
    }
    let req = &envelope["Data"]["req"];
    assert_eq!(req["Method"], "POST");
    assert_eq!(req["Body"], body);
    assert_eq!(req["Query"], json!({"source": "web"}));
    assert_eq!(req["Headers"]["Content-Type"], json!(["application/json"]));
    assert!(req["Url"]
        .as_str()
        .unwrap()
        .ends_with("/api/collect?source=web"));
    assert_eq!(
        envelope["Metadata"]["Headers"]["Content-Type"],
        "application/json"
    );
    assert_eq!(envelope["Metadata"]["sys"]["MethodName"], "collect");

    // Outputs.outEvents: one hub event per element, round robin over the partitions.
    let status = host.status();
    let partitions = status["hubs"]["clickstream"]["partitions"]
        .as_array()
        .unwrap();
    let stored: i64 = partitions
        .iter()
        .map(|p| p["lastEnqueuedSequence"].as_i64().map_or(0, |s| s + 1))
        .sum();
    assert_eq!(stored, 2);
    assert!(
        partitions.iter().all(|p| p["lastEnqueuedSequence"] == 0),
        "round robin: one per partition"
    );
    let hub_dir = app.state_dir().join("hubs/clickstream");
    let logs: String = ["0.log", "1.log"]
        .iter()
        .map(|f| std::fs::read_to_string(hub_dir.join(f)).unwrap())
        .collect();
    assert!(
        logs.contains(r#""body":"{\"event_type\":\"page_view\",\"tenant_id\":1}""#),
        "{logs}"
    );

    // Route parameters reach Params; the tenant function has an output binding so it is not forwarded.
    let r = http
        .get(url(&host, "/api/tenants/42/summary"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.json::<Value>().await.unwrap()["params"],
        json!({"id": "42", "view": "summary"})
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_failures_in_envelope_mode_are_500_and_counted_but_forwarded_500_is_an_answer() {
    let app = TestApp::new(
        "http-fail",
        &functions(),
        &[("TEST_HANDLER_FAIL_FIRST", "1")],
    );
    let host = app.start().await;
    let http = client();
    let send = || {
        http.post(url(&host, "/api/collect"))
            .header("x-functions-key", FUNCTION_KEY)
            .body("[1]")
            .send()
    };
    let r = send().await.unwrap();
    assert_eq!(r.status(), 500);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("on purpose"),
        "handler error text is not leaked: {text}"
    );
    assert_eq!(send().await.unwrap().status(), 201);
    // A failed invocation writes no outputs: only the second request's event is in the hub.
    let status = host.status();
    let stored: i64 = status["hubs"]["clickstream"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["lastEnqueuedSequence"].as_i64().map_or(0, |s| s + 1))
        .sum();
    assert_eq!(stored, 1);
    let r = http.get(url(&host, "/api/v1/boom")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(r.json::<Value>().await.unwrap()["forwarded"], true);
    let status = host.status();
    assert_eq!(status["functions"]["collect"]["failures"], 1);
    assert_eq!(status["functions"]["collect"]["invocations"], 2);
    assert_eq!(status["functions"]["reports"]["failures"], 0);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_that_is_not_json_fails_the_invocation() {
    let app = TestApp::new("not-json", &functions(), &[("TEST_HANDLER_NOT_JSON", "1")]);
    let host = app.start().await;
    let r = client()
        .post(url(&host, "/api/collect"))
        .header("x-functions-key", FUNCTION_KEY)
        .body("[1]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert!(host.status()["functions"]["collect"]["lastError"]
        .as_str()
        .unwrap()
        .contains("not JSON"));
    host.shutdown().await;
}

#[tokio::test]
async fn a_missing_function_key_setting_stops_the_start() {
    let app = TestApp::new("no-key", &functions(), &[]);
    // Rewrite local.settings.json without the keys.
    let path = app.root.join("local.settings.json");
    let mut settings: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    settings["Values"]
        .as_object_mut()
        .unwrap()
        .remove("DEVHOST_FUNCTION_KEY");
    settings["Values"]
        .as_object_mut()
        .unwrap()
        .remove("DEVHOST_MASTER_KEY");
    std::fs::write(&path, settings.to_string()).unwrap();
    let error = match remarketable_devhost::Devhost::start(app.options()).await {
        Ok(host) => {
            host.shutdown().await;
            panic!("devhost started without keys");
        }
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("collect (authLevel Function) needs DEVHOST_FUNCTION_KEY"),
        "{error}"
    );
    assert!(
        error.contains("admin (authLevel Admin) needs DEVHOST_MASTER_KEY"),
        "{error}"
    );
    assert!(!error.contains(FUNCTION_KEY), "key values are never shown");
    // The key may come from outside local.settings.json instead.
    let mut options = app.options();
    options
        .extra_settings
        .insert("DEVHOST_FUNCTION_KEY".into(), "k".into());
    options
        .extra_settings
        .insert("DEVHOST_MASTER_KEY".into(), "m".into());
    let host = tokio::time::timeout(Duration::from_secs(20), start_with(options))
        .await
        .unwrap();
    host.shutdown().await;
}

#[tokio::test]
async fn a_missing_handler_executable_stops_the_start() {
    let app = TestApp::new("no-handler", &functions(), &[]);
    let mut options = app.options();
    options.handler = None; // host.json says `handler`, which the app root does not hold
    let error = match remarketable_devhost::Devhost::start(options).await {
        Ok(host) => {
            host.shutdown().await;
            panic!("devhost started without a handler");
        }
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("handler executable") && error.contains("--handler"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_crash_during_an_http_invocation_is_a_500_and_the_handler_comes_back() {
    let app = TestApp::new(
        "http-crash",
        &functions(),
        &[("TEST_HANDLER_CRASH_AT", "1")],
    );
    let host = app.start().await;
    let http = client();
    let send = || {
        http.post(url(&host, "/api/collect"))
            .header("x-functions-key", FUNCTION_KEY)
            .body("[1]")
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 500);
    wait_until("the handler restarted", Duration::from_secs(15), || {
        let status = host.status();
        status["handler"]["restarts"] == 1 && status["handler"]["ready"] == true
    })
    .await;
    assert_eq!(send().await.unwrap().status(), 201);
    let status = host.status();
    assert_eq!(status["handler"]["restarts"], 1);
    assert_eq!(status["functions"]["collect"]["failures"], 1);
    host.shutdown().await;
}
