//! `send` against in-test servers: devhost's hub producer endpoint and a handler's `/ingest`,
//! each answering from a script (accept, 503, accept but answer too late, refuse) and
//! recording what it got.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use remarketable_core::event::{parse_event, EventLimits};
use remarketable_core::Reason;
use remarketable_loadgen::deliver::RetryPolicy;
use remarketable_loadgen::malformed::UNKNOWN_TENANT_BASE;
use remarketable_loadgen::send::{self, SendOptions, Summary, Target};
use remarketable_loadgen::traffic::{
    Expected, Generated, StoredEvent, Touch, Traffic, TrafficConfig, AD_CAMPAIGNS, EMAIL_CAMPAIGNS,
};
use remarketable_loadgen::truth::{Tally, Truth};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the server does with the next request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Accept,
    Unavailable,
    /// Takes the events, then answers only after the client gave up waiting.
    AcceptTooLate,
    Refuse,
}

#[derive(Default)]
struct Recorded {
    script: VecDeque<Answer>,
    requests: usize,
    /// Hub: accepted lines in order. Ingest: accepted envelopes.
    lines: Vec<String>,
    envelopes: Vec<Value>,
    content_types: Vec<String>,
    hubs: Vec<String>,
}

type Shared = Arc<Mutex<Recorded>>;

fn next_answer(state: &Shared, headers: &HeaderMap) -> Answer {
    let mut r = state.lock().unwrap();
    r.requests += 1;
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    r.content_types.push(ct);
    r.script.pop_front().unwrap_or(Answer::Accept)
}

async fn hub_events(
    Path(hub): Path<String>,
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = next_answer(&state, &headers);
    let text = String::from_utf8(body.to_vec()).expect("NDJSON is UTF-8");
    assert!(text.ends_with('\n'), "every line ends with a newline");
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let n = lines.len();
    match answer {
        Answer::Unavailable => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Answer::Refuse => return (StatusCode::BAD_REQUEST, "no").into_response(),
        Answer::Accept | Answer::AcceptTooLate => {
            let mut r = state.lock().unwrap();
            r.lines.extend(lines);
            r.hubs.push(hub);
        }
    }
    if matches!(answer, Answer::AcceptTooLate) {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    (StatusCode::ACCEPTED, Json(json!({ "accepted": n }))).into_response()
}

async fn ingest(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let answer = next_answer(&state, &headers);
    let envelope: Value = serde_json::from_slice(&body).expect("the envelope is JSON");
    match answer {
        Answer::Unavailable => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Answer::Refuse => StatusCode::BAD_REQUEST.into_response(),
        Answer::Accept | Answer::AcceptTooLate => {
            // Count as the ingest path would, by the validator (no duplicates: a 503 stored
            // nothing).
            let bodies: Vec<String> = envelope["Data"]["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_str().unwrap().to_string())
                .collect();
            let tally = tally_of_lines(&bodies);
            state.lock().unwrap().envelopes.push(envelope);
            Json(json!({"ReturnValue": {
                "received": bodies.len(),
                "stored": tally.stored_total(),
                "duplicates": 0,
                "dead_lettered": tally.dead_lettered_total(),
            }}))
            .into_response()
        }
    }
}

async fn serve(script: &[Answer]) -> (String, Shared) {
    let state: Shared = Arc::new(Mutex::new(Recorded {
        script: script.iter().copied().collect(),
        ..Recorded::default()
    }));
    let app = Router::new()
        .route("/admin/hubs/{hub}/events", post(hub_events))
        .route("/ingest", post(ingest))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), state)
}

fn options(target: Target, events: u64, batch: usize, truth: &std::path::Path) -> SendOptions {
    SendOptions {
        target,
        traffic: TrafficConfig {
            seed: 17,
            tenants: 8,
            late_share: 0.05,
            late_max: remarketable_loadgen::traffic::LATE_MAX,
            malformed_share: 0.05,
            duplicate_share: 0.02,
            limits: EventLimits::default(),
        },
        events: Some(events),
        duration: None,
        rate: 0,
        batch,
        truth: Some(truth.to_path_buf()),
        state: None,
        retry: RetryPolicy {
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            give_up_after: Duration::from_secs(20),
        },
        timeout: Duration::from_millis(500),
        progress: false,
        clock: fixed_now,
    }
}

/// The enqueue time of every generated event, so that the bodies can be made again.
fn fixed_now() -> DateTime<Utc> {
    "2026-11-26T12:34:56.789Z".parse().unwrap()
}

/// The first `n` events `options` generates.
fn generated(n: usize) -> Vec<Generated> {
    let dir = std::env::temp_dir();
    let config = options(
        Target::Hub {
            url: String::new(),
            parallel: 1,
        },
        0,
        1,
        &dir,
    )
    .traffic;
    let mut traffic = Traffic::new(config);
    (0..n).map(|_| traffic.next(fixed_now())).collect()
}

fn bodies(generated: &[Generated]) -> Vec<String> {
    generated.iter().map(|g| g.body.clone()).collect()
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

async fn run(opts: SendOptions) -> anyhow::Result<Summary> {
    send::run(opts, Arc::new(AtomicBool::new(false))).await
}

/// What the database will hold for these lines, worked out by the validator alone. (Which
/// lines are producer duplicates cannot be told from the text: that count is left at 0.)
fn tally_of_lines(lines: &[String]) -> Tally {
    let now = fixed_now();
    let mut tally = Tally::default();
    for line in lines {
        let expected = match parse_event(line.as_bytes(), now, now, &EventLimits::default()) {
            Ok(e) if e.tenant_id >= UNKNOWN_TENANT_BASE => Expected::DeadLettered {
                reason: Reason::UnknownTenant,
                tenant_id: Some(e.tenant_id),
            },
            Ok(e) => Expected::Stored(StoredEvent {
                tenant_id: e.tenant_id,
                event_time: e.event_time,
                device_id: e.device_id,
                session_id: e.session_id,
                purchase: e.event_type == "purchase",
                revenue: e.revenue,
                // The generator's campaigns, found again by the values the validator read.
                touch: AD_CAMPAIGNS
                    .iter()
                    .chain(&EMAIL_CAMPAIGNS)
                    .find(|c| {
                        (Some(c.0), Some(c.1), Some(c.2))
                            == (
                                e.campaign.as_deref(),
                                e.source.as_deref(),
                                e.medium.as_deref(),
                            )
                    })
                    .map(|c| Touch {
                        campaign: *c,
                        click: e.event_type != "ad_impression",
                    }),
            }),
            Err(r) => Expected::DeadLettered {
                reason: r.reason,
                tenant_id: r.tenant_id,
            },
        };
        tally.add(&Generated {
            body: line.clone(),
            expected,
            malformed: None,
            late: false,
            producer_duplicate: false,
        });
    }
    tally
}

/// Asserts two tallies are equal, naming the first difference (the whole tally is too big to
/// print).
fn assert_same(got: &Tally, want: &Tally) {
    assert_eq!(got.delivered, want.delivered, "delivered");
    // What attribution reads, in any order.
    let sorted = |t: &Tally| {
        let c = &t.campaigns;
        let mut touches: Vec<_> = c
            .touches
            .iter()
            .flat_map(|(k, v)| v.iter().map(move |x| (*k, x.clone())))
            .collect();
        let mut purchases: Vec<_> = c
            .purchases
            .iter()
            .flat_map(|(k, v)| v.iter().map(move |x| (*k, x.clone())))
            .collect();
        touches.sort();
        purchases.sort();
        (touches, purchases, c.sessions.clone())
    };
    assert_eq!(
        sorted(got),
        sorted(want),
        "touches, purchases and session starts"
    );
    assert!(
        !want.campaigns.touches.is_empty(),
        "the traffic has touches"
    );
    assert_eq!(got.dead_letters, want.dead_letters, "dead letters");
    let keys = |t: &Tally| -> Vec<(i64, chrono::DateTime<Utc>)> {
        t.stored
            .iter()
            .flat_map(|(tenant, h)| h.keys().map(move |hour| (*tenant, *hour)))
            .collect()
    };
    assert_eq!(keys(got), keys(want), "tenant-hours");
    for (tenant, hour) in keys(got) {
        let (g, w) = (&got.stored[&tenant][&hour], &want.stored[&tenant][&hour]);
        assert_eq!(
            (g.events, g.purchases, g.revenue),
            (w.events, w.purchases, w.revenue),
            "tenant {tenant} hour {hour}"
        );
        assert_eq!(
            g.devices, w.devices,
            "devices of tenant {tenant} hour {hour}"
        );
        assert_eq!(
            g.sessions, w.sessions,
            "sessions of tenant {tenant} hour {hour}"
        );
    }
    // The rest exactly; the lists of touches and purchases in one order (compared above).
    let ordered = |t: &Tally| {
        let mut t = t.clone();
        t.campaigns.touches.values_mut().for_each(|v| v.sort());
        t.campaigns.purchases.values_mut().for_each(|v| v.sort());
        t
    };
    let mut got = ordered(got);
    got.producer_duplicates = want.producer_duplicates;
    assert!(got == ordered(want));
}

#[tokio::test]
async fn hub_mode_sends_ndjson_lines_and_retries_on_503() {
    let (base, state) = serve(&[Answer::Unavailable, Answer::Accept, Answer::Unavailable]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truth.json");
    let url = format!("{base}/admin/hubs/clickstream/events");
    let target = Target::Hub { url, parallel: 2 };
    let summary = run(options(target, 3_000, 400, &path)).await.unwrap();

    assert_eq!((summary.generated, summary.acknowledged), (3_000, 3_000));
    assert_eq!(summary.retries, 2, "each 503 was retried once");
    assert_eq!(summary.uncertain_resends, 0, "a 503 means not accepted");
    let r = state.lock().unwrap();
    assert_eq!(r.requests, 8 + 2);
    assert!(r.content_types.iter().all(|c| c == "application/x-ndjson"));
    assert!(r.hubs.iter().all(|h| h == "clickstream"));
    // Every generated body arrived once, as one line with its text unchanged (chunks in
    // flight together may arrive in either order).
    let made = generated(3_000);
    assert_eq!(sorted(r.lines.clone()), sorted(bodies(&made)));
    // The truth is what the validator makes of the lines.
    let truth = Truth::load(&path).unwrap();
    assert_same(&tally_of_lines(&r.lines), &truth.expected);
    let duplicates = made.iter().filter(|g| g.producer_duplicate).count() as u64;
    assert_eq!(truth.expected.producer_duplicates, duplicates);
    assert!(duplicates > 20);
    assert!(truth.expected.dead_lettered_total() > 100);
    let run = &truth.runs[0];
    assert!(run.finished);
    assert_eq!((run.target.as_str(), run.acknowledged), ("hub", 3_000));
    assert_eq!(run.producer_duplicates, truth.expected.producer_duplicates);
}

#[tokio::test]
async fn a_chunk_answered_too_late_is_resent_and_recorded_as_uncertain() {
    let (base, state) = serve(&[Answer::Accept, Answer::AcceptTooLate]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truth.json");
    let url = format!("{base}/admin/hubs/clickstream/events");
    let summary = run(options(Target::Hub { url, parallel: 1 }, 1_500, 500, &path))
        .await
        .unwrap();
    assert_eq!(summary.uncertain_resends, 1);

    let truth = Truth::load(&path).unwrap();
    let [u] = &truth.uncertain_resends[..] else {
        panic!("one uncertain resend: {:?}", truth.uncertain_resends)
    };
    assert_eq!((u.events, u.extra_copies, u.acknowledged), (500, 1, true));
    // The hub holds the second chunk twice: exactly the truth's upper bound.
    let lines = state.lock().unwrap().lines.clone();
    let made = bodies(&generated(1_500));
    let twice: Vec<String> = [&made[..1_000], &made[500..]].concat();
    assert_eq!(lines, twice, "chunk two, then chunk two again, in order");
    assert_eq!(truth.expected.delivered, 1_500);
    let mut got = tally_of_lines(&lines);
    let mut upper = truth.upper_bound();
    // Resent lines look like producer duplicates to the line reader; compare the rest.
    got.producer_duplicates = 0;
    upper.producer_duplicates = 0;
    assert_same(&got, &upper);
}

#[tokio::test]
async fn a_refused_chunk_stops_the_run_with_the_acknowledged_ones_in_the_truth() {
    let (base, state) = serve(&[Answer::Accept, Answer::Refuse]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truth.json");
    let url = format!("{base}/admin/hubs/clickstream/events");
    let error = run(options(Target::Hub { url, parallel: 1 }, 2_000, 500, &path))
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("400"), "{error:#}");
    let truth = Truth::load(&path).unwrap();
    assert_eq!(truth.expected.delivered, 500);
    assert_same(
        &tally_of_lines(&state.lock().unwrap().lines),
        &truth.expected,
    );
    assert!(!truth.runs[0].finished);
    assert_eq!(truth.runs[0].acknowledged, 500);
    assert!(truth.uncertain_resends.is_empty());
}

#[tokio::test]
async fn ingest_mode_resends_the_same_sequences_and_continues_across_runs() {
    let (base, state) = serve(&[Answer::Unavailable]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truth.json");
    let state_file = dir.path().join("sequences.json");
    let target = Target::Ingest {
        url: format!("{base}/ingest"),
        partitions: 2,
    };
    for _ in 0..2 {
        let mut opts = options(target.clone(), 1_200, 300, &path);
        opts.state = Some(state_file.clone());
        let summary = run(opts).await.unwrap();
        // The handler's replies agree with the truth, batch by batch.
        assert_eq!(summary.disagreements, 0);
        assert!(summary.handler.stored > 1_000 && summary.handler.dead_lettered > 20);
        assert_eq!(
            summary.handler.stored + summary.handler.dead_lettered,
            1_200
        );
    }
    let r = state.lock().unwrap();
    assert_eq!(r.requests, 8 + 1, "the 503 was retried");
    assert!(r.content_types.iter().all(|c| c == "application/json"));
    // Per partition, sequence numbers run on without a gap or repeat, across both runs.
    for partition in ["0", "1"] {
        let sequences: Vec<i64> = r
            .envelopes
            .iter()
            .filter(|e| e["Metadata"]["PartitionContext"]["PartitionId"] == partition)
            .flat_map(|e| {
                e["Metadata"]["SequenceNumberArray"]
                    .as_array()
                    .unwrap()
                    .clone()
            })
            .map(|s| s.as_i64().unwrap())
            .collect();
        assert_eq!(sequences.len(), 1_200);
        assert!(
            sequences.windows(2).all(|w| w[1] == w[0] + 1),
            "{partition}"
        );
    }
    let lines: Vec<String> = r
        .envelopes
        .iter()
        .flat_map(|e| e["Data"]["events"].as_array().unwrap().clone())
        .map(|b| b.as_str().unwrap().to_string())
        .collect();
    let truth = Truth::load(&path).unwrap();
    assert_eq!(truth.runs.len(), 2, "the second run added to the first");
    assert_eq!(truth.expected.delivered, 2_400);
    // The same seed twice: the second run's events repeat the first run's ids, so the truth
    // is what the validator makes of all lines together.
    assert_same(&tally_of_lines(&lines), &truth.expected);
}

#[tokio::test]
async fn ctrl_c_during_retries_ends_the_run_with_the_acknowledged_chunks() {
    let mut script = vec![Answer::Accept];
    script.extend([Answer::Unavailable; 1_000]);
    let (base, state) = serve(&script).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truth.json");
    let url = format!("{base}/admin/hubs/clickstream/events");
    let stop = Arc::new(AtomicBool::new(false));
    let ctrl_c = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        ctrl_c.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let opts = options(Target::Hub { url, parallel: 1 }, 5_000, 500, &path);
    let summary = send::run(opts, stop).await.unwrap();
    assert!(summary.interrupted);
    assert_eq!((summary.generated, summary.acknowledged), (1_000, 500));
    assert!(
        state.lock().unwrap().requests > 2,
        "the 503s were retried until Ctrl-C"
    );
    let truth = Truth::load(&path).unwrap();
    assert_eq!(truth.expected.delivered, 500);
    assert!(
        truth.uncertain_resends.is_empty(),
        "503s are certain refusals"
    );
    let run = &truth.runs[0];
    assert!(!run.finished);
    assert_eq!((run.generated, run.acknowledged), (1_000, 500));
}
