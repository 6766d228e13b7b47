//! Timer triggers: envelope shape, runOnStartup, IsPastDue after downtime, no retry without a
//! policy.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

fn timer_function(schedule: &str, run_on_startup: bool) -> Value {
    json!({"bindings": [{"type": "timerTrigger", "name": "timer", "direction": "in",
        "schedule": schedule, "runOnStartup": run_on_startup, "useMonitor": true}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_on_startup_fires_with_the_fixture_shape() {
    // Once a year: only runOnStartup can fire it during the test; the schedule comes from a setting.
    let app = TestApp::new(
        "startup",
        &[(
            "maintenance",
            timer_function("%MAINTENANCE_SCHEDULE%", true),
        )],
        &[("MAINTENANCE_SCHEDULE", "0 0 0 1 1 *")],
    );
    let host = app.start().await;
    wait_until("the startup run", WAIT, || {
        app.invocations("maintenance").len() == 1
    })
    .await;
    let envelope = &app.invocations("maintenance")[0];
    let fixture = fixture("timer_maintenance.json");
    assert_eq!(keys(envelope), keys(&fixture));
    assert_eq!(keys(&envelope["Data"]), keys(&fixture["Data"]));
    assert_eq!(
        keys(&envelope["Data"]["timer"]),
        keys(&fixture["Data"]["timer"])
    );
    assert_eq!(
        keys(&envelope["Data"]["timer"]["ScheduleStatus"]),
        keys(&fixture["Data"]["timer"]["ScheduleStatus"])
    );
    assert_eq!(keys(&envelope["Metadata"]), keys(&fixture["Metadata"]));
    let timer = &envelope["Data"]["timer"];
    assert_eq!(timer["IsPastDue"], false);
    assert_eq!(timer["Schedule"]["AdjustForDST"], true);
    let next =
        chrono::DateTime::parse_from_rfc3339(timer["ScheduleStatus"]["Next"].as_str().unwrap())
            .unwrap();
    assert_eq!(next.format("%m-%d %H:%M:%S").to_string(), "01-01 00:00:00");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_missed_while_down_fires_at_start_as_past_due() {
    let app = TestApp::new(
        "past-due",
        &[("maintenance", timer_function("0 0 0 1 1 *", false))],
        &[],
    );
    // The status a previous devhost left: the next run was due an hour ago.
    let due = chrono::Utc::now() - chrono::TimeDelta::hours(1);
    let status = json!({"Last": "2025-01-01T00:00:00Z", "Next": due.to_rfc3339(), "LastUpdated": "2025-01-01T00:00:00Z"});
    std::fs::create_dir_all(app.state_dir().join("timers")).unwrap();
    std::fs::write(
        app.state_dir().join("timers/maintenance.json"),
        status.to_string(),
    )
    .unwrap();
    let host = app.start().await;
    wait_until("the past-due run", WAIT, || {
        app.invocations("maintenance").len() == 1
    })
    .await;
    let timer = &app.invocations("maintenance")[0]["Data"]["timer"];
    assert_eq!(timer["IsPastDue"], true);
    let shown =
        chrono::DateTime::parse_from_rfc3339(timer["ScheduleStatus"]["Next"].as_str().unwrap())
            .unwrap();
    assert_eq!(shown.timestamp(), due.timestamp());
    // The status moves on: Last is the missed occurrence, Next is next year.
    wait_until("status written", WAIT, || {
        std::fs::read(app.state_dir().join("timers/maintenance.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|s| {
                s["Next"]
                    .as_str()
                    .is_some_and(|n| n.contains("-01-01T00:00:00"))
            })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.invocations("maintenance").len(), 1);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frequent_schedule_fires_on_time_and_a_failed_run_is_not_retried() {
    let app = TestApp::new(
        "every-second",
        &[("tick", timer_function("* * * * * *", false))],
        &[("TEST_HANDLER_FAIL_FIRST", "1")],
    );
    let host = app.start().await;
    wait_until("three runs", WAIT, || app.invocations("tick").len() >= 3).await;
    let runs = app.invocations("tick");
    let times: Vec<i64> = runs
        .iter()
        .map(|r| {
            chrono::DateTime::parse_from_rfc3339(
                r["Data"]["timer"]["ScheduleStatus"]["Next"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap()
            .timestamp()
        })
        .collect();
    // The failed first run is not repeated: each run is a different occurrence.
    assert!(times.windows(2).all(|w| w[1] > w[0]), "{times:?}");
    assert!(runs
        .iter()
        .all(|r| r["Data"]["timer"]["IsPastDue"] == false));
    assert!(runs
        .iter()
        .all(|r| r["Metadata"].get("RetryContext").is_none()));
    let status = host.status();
    assert_eq!(status["functions"]["tick"]["failures"], 1);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_run_never_overlaps_the_next_one() {
    // Every second, but each run takes 1.5 s: the next run waits for the previous one.
    let app = TestApp::new(
        "overlap",
        &[("slow", timer_function("* * * * * *", false))],
        &[("TEST_HANDLER_DELAY_MS", "1500")],
    );
    let host = app.start().await;
    wait_until("three runs", WAIT, || app.invocations("slow").len() >= 3).await;
    let inflight: Vec<i64> = app
        .records()
        .iter()
        .filter(|r| r["path"] == "/slow")
        .map(|r| r["inflight"].as_i64().unwrap())
        .collect();
    assert!(
        inflight.iter().all(|n| *n == 1),
        "overlapping runs: {inflight:?}"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_is_retried_under_a_retry_policy() {
    let mut function = timer_function("0 0 0 1 1 *", true);
    function["retry"] =
        json!({"strategy": "fixedDelay", "maxRetryCount": 3, "delayInterval": "00:00:00.100"});
    let app = TestApp::new(
        "timer-retry",
        &[("nightly", function)],
        &[("TEST_HANDLER_FAIL_FIRST", "2")],
    );
    let host = app.start().await;
    wait_until("two failures and a success", WAIT, || {
        app.invocations("nightly").len() == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let runs = app.invocations("nightly");
    assert_eq!(runs.len(), 3, "no retry after the success");
    assert!(runs[0]["Metadata"].get("RetryContext").is_none());
    assert_eq!(runs[1]["Metadata"]["RetryContext"]["RetryCount"], 1);
    assert_eq!(runs[2]["Metadata"]["RetryContext"]["RetryCount"], 2);
    assert_eq!(runs[2]["Metadata"]["RetryContext"]["MaxRetryCount"], 3);
    host.shutdown().await;
}
