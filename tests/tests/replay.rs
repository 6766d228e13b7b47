//! Dead-letter replay against a real PostgreSQL: after a fix (the tenant registered, limits
//! raised) a tenant's dead letters that now pass are stored once, with every field as sent,
//! and marked replayed; the others stay pending; the ledger moves each replayed event from
//! dead-lettered to stored and stays consistent through compaction; rollups count replayed
//! events exactly once.

use chrono::{DateTime, Duration, DurationRound, Utc};
use remarketable_core::event::{hash_id, EventLimits};
use remarketable_core::replay::{
    replay_dead_letters, replay_dead_letters_after, ReplayReport, DEFAULT_MAX,
};
use remarketable_core::rollup;
use remarketable_core::{db as core_db, Ingestor, Reason};
use remarketable_loadgen::check::check;
use remarketable_loadgen::traffic::{Traffic, TrafficConfig};
use remarketable_loadgen::truth::{Tally, Truth};
use remarketable_tests::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A tenant that is not registered when its events arrive.
const LATE_TENANT: i64 = 42;

fn limits() -> EventLimits {
    settings_for("postgres://unused/db").limits
}

fn ingestor() -> Ingestor {
    Ingestor::new(limits(), std::time::Duration::from_secs(30))
}

async fn register(db: &TestDb, tenant: i64) {
    db.client()
        .await
        .execute(
            "INSERT INTO tenants (tenant_id, name) VALUES ($1, 'registered late')",
            &[&tenant],
        )
        .await
        .expect("register tenant");
}

async fn replay(db: &TestDb, tenant: i64, limits: &EventLimits, max: usize) -> ReplayReport {
    let mut client = db.client().await;
    replay_dead_letters(&mut client, tenant, limits, Utc::now(), max)
        .await
        .expect("replay runs")
}

fn failing(pairs: &[(Reason, usize)]) -> BTreeMap<Reason, usize> {
    pairs.iter().copied().collect()
}

/// Everything a replay may change, for "nothing changed" comparisons.
async fn state(db: &TestDb) -> Vec<Value> {
    let mut out = Vec::new();
    for sql in [
        "SELECT tenant_id, event_id, event_time, stream_partition, stream_sequence FROM events \
         ORDER BY event_id",
        "SELECT dead_letter_id, reason, message, replay_status, replayed_at FROM dead_letters \
         ORDER BY dead_letter_id",
        "SELECT * FROM ingest_ledger ORDER BY tenant_id, hour",
        "SELECT count(*) AS ledger_entries FROM ingest_ledger_batches",
        "SELECT * FROM event_id_ranges ORDER BY range_id",
    ] {
        out.extend(db.json_rows(sql).await);
    }
    out
}

/// The ledger is truthful: every (tenant, hour) adds up, nothing is negative, `stored` equals
/// the rows of `events` per tenant and hour of enqueue time, and `dead_lettered` the dead
/// letters not replayed. Checked as it is, then after `compact_ingest_ledger()` (whose hourly
/// table CHECKs the identity row by row), which must not change what the view reads.
async fn assert_ledger_consistent(db: &TestDb) {
    async fn figures(db: &TestDb) -> Vec<Value> {
        let bad_rows = db
            .count(
                "SELECT count(*) FROM ingest_ledger \
                 WHERE received <> stored + duplicates + dead_lettered \
                    OR received < 0 OR stored < 0 OR duplicates < 0 OR dead_lettered < 0",
            )
            .await;
        assert_eq!(
            bad_rows, 0,
            "ledger rows that do not add up or are negative"
        );
        let stored_differs = db
            .count(
                "SELECT count(*) FROM
                   (SELECT tenant_id, hour, stored FROM ingest_ledger WHERE stored <> 0) l
                   FULL JOIN (SELECT tenant_id,
                                     date_bin('1 hour', received_at, TIMESTAMPTZ 'epoch') AS hour,
                                     count(*) AS events
                              FROM events GROUP BY 1, 2) e USING (tenant_id, hour)
                 WHERE coalesce(l.stored, 0) <> coalesce(e.events, 0)",
            )
            .await;
        assert_eq!(stored_differs, 0, "ledger stored <> events per tenant-hour");
        let dead = db
            .json_rows(
                "SELECT (SELECT coalesce(sum(dead_lettered), 0)::bigint FROM ingest_ledger) AS ledger,
                        (SELECT count(*) FROM dead_letters WHERE replay_status <> 'replayed') AS rows",
            )
            .await;
        assert_eq!(
            dead[0]["ledger"], dead[0]["rows"],
            "ledger dead_lettered: {dead:?}"
        );
        db.json_rows("SELECT * FROM ingest_ledger ORDER BY tenant_id, hour")
            .await
    }
    let before = figures(db).await;
    core_db::compact_ledger(&db.client().await)
        .await
        .expect("compaction keeps the hourly CHECK");
    assert_eq!(
        db.count("SELECT count(*) FROM ingest_ledger_batches").await,
        0
    );
    assert_eq!(figures(db).await, before, "compaction changed the ledger");
}

/// The ledger per tenant: (tenant, received, stored, dead_lettered).
async fn ledger_by_tenant(db: &TestDb) -> Vec<(i64, i64, i64, i64)> {
    db.client()
        .await
        .query(
            "SELECT tenant_id, sum(received)::bigint, sum(stored)::bigint, \
             sum(dead_lettered)::bigint FROM ingest_ledger GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test]
async fn a_tenant_registered_since_gets_its_events_stored_once_as_sent() {
    let db = TestDb::create().await;
    let now = Utc::now();
    let event_time = (now - Duration::minutes(3))
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let full = json!({
        "tenant_id": LATE_TENANT, "event_type": "purchase", "device_id": "dev-9", "session_id": 77,
        "event_time": event_time, "country": "fr", "browser": "Firefox",
        "page_url": "https://shop.example/checkout?step=3", "referrer": "https://mail.example/",
        "campaign": "black-friday", "source": "newsletter", "medium": "email",
        "revenue": "129.95", "currency": "EUR", "properties": {"sku": "A-1", "qty": 2},
        "order_id": "o-1001"
    });
    let mut long_browser = event(LATE_TENANT, 50);
    long_browser["browser"] = json!("b".repeat(300));
    let mut bad_country = event(LATE_TENANT, 51);
    bad_country["country"] = json!("XX");
    let mut other_tenant_bad = event(1, 52);
    other_tenant_bad["country"] = json!("XX");
    let mut bodies = vec![full.clone()];
    bodies.extend((0..4).map(|n| event(LATE_TENANT, n)));
    bodies.extend([
        long_browser,
        bad_country,
        other_tenant_bad,
        json!({"event_type": "page_view", "device_id": 1, "session_id": 1}),
        event(2, 60),
    ]);
    let batch = batch("7", 1000, now, &bodies);
    let mut client = db.client().await;
    let report = ingestor().ingest(&mut client, &batch, now).await.unwrap();
    assert_eq!((report.stored, report.dead_lettered), (1, 9));
    assert_ledger_consistent(&db).await;
    assert_eq!(
        ledger_by_tenant(&db).await,
        // Tenant 42 is not registered: its seven and the one without a tenant under 0.
        vec![(0, 8, 0, 8), (1, 1, 0, 1), (2, 1, 1, 0)]
    );

    // Not registered yet: nothing passes, nothing changes.
    let before = state(&db).await;
    let r = replay(&db, LATE_TENANT, &limits(), DEFAULT_MAX).await;
    assert_eq!((r.examined, r.replayed, r.more), (7, 0, false), "{r:?}");
    assert_eq!(
        r.still_failing,
        failing(&[
            (Reason::UnknownTenant, 5),
            (Reason::BadCountry, 1),
            (Reason::FieldTooLong, 1)
        ])
    );
    assert_eq!(
        state(&db).await,
        before,
        "a replay that stores nothing changes nothing"
    );

    register(&db, LATE_TENANT).await;
    let replayed_at = Utc::now();
    let mut client = db.client().await;
    let r = replay_dead_letters(
        &mut client,
        LATE_TENANT,
        &limits(),
        replayed_at,
        DEFAULT_MAX,
    )
    .await
    .unwrap();
    assert_eq!(
        (r.tenant_id, r.examined, r.replayed, r.more),
        (LATE_TENANT, 7, 5, false)
    );
    assert_eq!(
        r.still_failing,
        failing(&[(Reason::BadCountry, 1), (Reason::FieldTooLong, 1)])
    );
    assert_eq!(
        serde_json::to_value(&r).unwrap()["still_failing"],
        json!({"bad_country": 1, "field_too_long": 1})
    );

    // Every field as sent, and where it sat in the stream.
    let stored = db
        .json_rows(&format!(
            "SELECT tenant_id, event_type, device_id, session_id, \
             to_char(event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS event_time, \
             country, browser, page_url, referrer, campaign, source, medium, revenue::text AS revenue, \
             currency, properties, stream_partition, stream_sequence, received_at = '{}'::timestamptz AS at \
             FROM events WHERE tenant_id = {LATE_TENANT} AND stream_sequence = 1000",
            micros(now).to_rfc3339()
        ))
        .await;
    assert_eq!(
        stored,
        vec![json!({
            "tenant_id": LATE_TENANT, "event_type": "purchase", "device_id": hash_id("dev-9"),
            "session_id": 77, "event_time": event_time, "country": "FR", "browser": "Firefox",
            "page_url": "https://shop.example/checkout?step=3", "referrer": "https://mail.example/",
            "campaign": "black-friday", "source": "newsletter", "medium": "email",
            "revenue": "129.9500", "currency": "EUR",
            "properties": {"sku": "A-1", "qty": 2, "order_id": "o-1001"},
            "stream_partition": "7", "stream_sequence": 1000, "at": true
        })]
    );
    // Without event_time: the enqueue time, as ingest would have stored them.
    let plain = db
        .json_rows(&format!(
            "SELECT stream_sequence, device_id, session_id, page_url, country, \
             event_time = received_at AS defaulted FROM events \
             WHERE tenant_id = {LATE_TENANT} AND stream_sequence > 1000 ORDER BY stream_sequence"
        ))
        .await;
    let expected: Vec<Value> = (0..4)
        .map(|n: i64| {
            json!({
                "stream_sequence": 1001 + n, "device_id": hash_id(&format!("device-{}", n % 7)),
                "session_id": n / 3, "page_url": format!("https://shop{LATE_TENANT}.example/p/{n}"),
                "country": "DE", "defaulted": true
            })
        })
        .collect();
    assert_eq!(plain, expected);
    let enqueued: Vec<Value> = db
        .json_rows(&format!(
            "SELECT e.received_at = d.enqueued_at AS same FROM events e JOIN dead_letters d \
             ON d.stream_partition = e.stream_partition AND d.stream_sequence = e.stream_sequence \
             WHERE e.tenant_id = {LATE_TENANT}"
        ))
        .await;
    assert_eq!(enqueued, vec![json!({"same": true}); 5]);

    // Replayed ones are marked with the time; the rest keep their reason and stay pending.
    let letters = db
        .client()
        .await
        .query(
            "SELECT stream_sequence::bigint, reason, replay_status, replayed_at FROM dead_letters \
             ORDER BY stream_sequence",
            &[],
        )
        .await
        .unwrap();
    let letters: Vec<(i64, String, String, Option<DateTime<Utc>>)> = letters
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let at = Some(micros(replayed_at));
    let replayed = |seq: i64| {
        (
            seq,
            "unknown_tenant".to_string(),
            "replayed".to_string(),
            at,
        )
    };
    let pending = |seq: i64, reason: &str| (seq, reason.to_string(), "pending".to_string(), None);
    assert_eq!(
        letters,
        vec![
            replayed(1000),
            replayed(1001),
            replayed(1002),
            replayed(1003),
            replayed(1004),
            pending(1005, "field_too_long"),
            pending(1006, "bad_country"),
            pending(1007, "bad_country"),
            pending(1008, "missing_tenant_id"),
        ]
    );
    assert_eq!(
        ledger_by_tenant(&db).await,
        vec![
            (0, 3, 0, 3),
            (1, 1, 0, 1),
            (2, 1, 1, 0),
            (LATE_TENANT, 5, 5, 0)
        ]
    );
    assert_ledger_consistent(&db).await;

    // Replaying again changes nothing.
    let before = state(&db).await;
    let r = replay(&db, LATE_TENANT, &limits(), DEFAULT_MAX).await;
    assert_eq!((r.examined, r.replayed), (2, 0));
    assert_eq!(state(&db).await, before);

    // A raised limit lets the long browser through; it was counted under tenant 0 (the tenant
    // was registered after it was dead-lettered) and moves to its tenant.
    let raised = EventLimits {
        max_text_bytes: 512,
        ..limits()
    };
    let r = replay(&db, LATE_TENANT, &raised, DEFAULT_MAX).await;
    assert_eq!((r.examined, r.replayed), (2, 1));
    assert_eq!(r.still_failing, failing(&[(Reason::BadCountry, 1)]));
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM events WHERE tenant_id = {LATE_TENANT} \
             AND length(browser) = 300"
        ))
        .await,
        1
    );
    assert_eq!(
        ledger_by_tenant(&db).await,
        vec![
            (0, 2, 0, 2),
            (1, 1, 0, 1),
            (2, 1, 1, 0),
            (LATE_TENANT, 6, 6, 0)
        ]
    );
    assert_ledger_consistent(&db).await;

    // The registered tenant's own dead letter, valid under raised limits? No: a bad country
    // stays bad. Its replay changes nothing either, and a tenant without any changes nothing.
    let before = state(&db).await;
    let r = replay(&db, 1, &raised, DEFAULT_MAX).await;
    assert_eq!((r.examined, r.replayed), (1, 0));
    let r = replay(&db, 3, &raised, DEFAULT_MAX).await;
    assert_eq!(
        (r.examined, r.replayed, r.more, r.resume_after),
        (0, 0, false, None)
    );
    assert_eq!(state(&db).await, before);
    assert_eq!(db.count("SELECT count(*) FROM events").await, 7);
}

/// A time as PostgreSQL keeps it (microseconds).
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::microseconds(1)).unwrap()
}

#[tokio::test]
async fn concurrent_replays_store_each_event_once() {
    let db = TestDb::create().await;
    let now = Utc::now();
    let mut client = db.client().await;
    for (partition, first) in [("0", 0), ("1", 0), ("0", 200)] {
        let bodies: Vec<Value> = (first..first + 200)
            .map(|n| event(LATE_TENANT, n))
            .collect();
        let report = ingestor()
            .ingest(&mut client, &batch(partition, first, now, &bodies), now)
            .await
            .unwrap();
        assert_eq!(report.dead_lettered, 200);
    }
    register(&db, LATE_TENANT).await;

    let limits = limits();
    let (a, b, c, d) = tokio::join!(
        replay(&db, LATE_TENANT, &limits, DEFAULT_MAX),
        replay(&db, LATE_TENANT, &limits, DEFAULT_MAX),
        replay(&db, LATE_TENANT, &limits, DEFAULT_MAX),
        replay(&db, LATE_TENANT, &limits, DEFAULT_MAX),
    );
    let reports = [a, b, c, d];
    let replayed: usize = reports.iter().map(|r| r.replayed).sum();
    assert_eq!(replayed, 600, "{reports:?}");
    assert!(
        reports.iter().all(|r| r.replayed == 0 || r.replayed == 600),
        "replays of one tenant serialize: {reports:?}"
    );
    assert_eq!(db.count("SELECT count(*) FROM events").await, 600);
    assert_eq!(
        db.count("SELECT count(DISTINCT (stream_partition, stream_sequence)) FROM events")
            .await,
        600
    );
    assert_eq!(
        db.count("SELECT count(*) FROM dead_letters WHERE replay_status = 'replayed'")
            .await,
        600
    );
    assert_ledger_consistent(&db).await;
    assert_eq!(
        ledger_by_tenant(&db).await,
        vec![(0, 0, 0, 0), (LATE_TENANT, 600, 600, 0)]
    );
}

#[tokio::test]
async fn a_bounded_replay_goes_oldest_first_and_resumes_past_what_still_fails() {
    let db = TestDb::create().await;
    let now = Utc::now();
    let bodies: Vec<Value> = (0..25)
        .map(|n| {
            let mut e = event(LATE_TENANT, n);
            if n < 10 {
                e["country"] = json!("XX");
            }
            e
        })
        .collect();
    let mut client = db.client().await;
    ingestor()
        .ingest(&mut client, &batch("0", 0, now, &bodies), now)
        .await
        .unwrap();
    register(&db, LATE_TENANT).await;

    let first = replay(&db, LATE_TENANT, &limits(), 10).await;
    assert_eq!((first.examined, first.replayed, first.more), (10, 0, true));
    assert_eq!(first.still_failing, failing(&[(Reason::BadCountry, 10)]));
    // From the start again: the same ten.
    assert_eq!(replay(&db, LATE_TENANT, &limits(), 10).await, first);

    let mut client = db.client().await;
    let mut after = first.resume_after;
    let mut replayed = Vec::new();
    loop {
        let r =
            replay_dead_letters_after(&mut client, LATE_TENANT, after, &limits(), Utc::now(), 10)
                .await
                .unwrap();
        replayed.push((r.examined, r.replayed, r.more));
        if !r.more {
            break;
        }
        after = r.resume_after;
    }
    assert_eq!(replayed, vec![(10, 10, true), (5, 5, false)]);
    assert_eq!(
        db.count("SELECT count(*) FROM events WHERE stream_sequence BETWEEN 10 AND 24")
            .await,
        15
    );
    assert_ledger_consistent(&db).await;
}

#[tokio::test]
async fn rows_the_database_refuses_and_times_without_a_partition_stay_pending() {
    let db = TestDb::create().await;
    let client = db.client().await;
    client
        .batch_execute(
            "ALTER TABLE events ADD CONSTRAINT no_poison CHECK (campaign IS DISTINCT FROM 'poison')",
        )
        .await
        .unwrap();
    let now = Utc::now();
    let orphan_time = now - Duration::hours(30);
    let bodies: Vec<Value> = (0..10)
        .map(|n| {
            let mut e = event(LATE_TENANT, n);
            if n == 3 || n == 7 {
                e["campaign"] = json!("poison");
            }
            if n == 5 {
                e["event_time"] = json!(orphan_time.to_rfc3339());
            }
            e
        })
        .collect();
    let mut client = db.client().await;
    ingestor()
        .ingest(&mut client, &batch("0", 0, now, &bodies), now)
        .await
        .unwrap();
    register(&db, LATE_TENANT).await;
    drop_partition_covering(&client, orphan_time).await;

    let r = replay(&db, LATE_TENANT, &limits(), DEFAULT_MAX).await;
    assert_eq!((r.examined, r.replayed), (10, 7));
    assert_eq!(
        r.still_failing,
        failing(&[(Reason::DbRejected, 2), (Reason::NoPartition, 1)])
    );
    let pending = db
        .json_rows(
            "SELECT stream_sequence, reason FROM dead_letters WHERE replay_status = 'pending' \
             ORDER BY 1",
        )
        .await;
    assert_eq!(
        pending,
        vec![
            json!({"stream_sequence": 3, "reason": "unknown_tenant"}),
            json!({"stream_sequence": 5, "reason": "unknown_tenant"}),
            json!({"stream_sequence": 7, "reason": "unknown_tenant"}),
        ]
    );
    assert_eq!(db.count("SELECT count(*) FROM events").await, 7);
    assert_ledger_consistent(&db).await;
    assert_eq!(
        ledger_by_tenant(&db).await,
        vec![(0, 3, 0, 3), (LATE_TENANT, 7, 7, 0)]
    );

    // Once the rule is lifted, the refused ones go through.
    client
        .batch_execute("ALTER TABLE events DROP CONSTRAINT no_poison")
        .await
        .unwrap();
    let r = replay(&db, LATE_TENANT, &limits(), DEFAULT_MAX).await;
    assert_eq!((r.examined, r.replayed), (3, 2));
    assert_eq!(r.still_failing, failing(&[(Reason::NoPartition, 1)]));
    assert_ledger_consistent(&db).await;
}

#[tokio::test]
async fn rollups_count_replayed_events_exactly_once() {
    let db = TestDb::create().await;
    let now = Utc::now();
    let late_time = (now - Duration::hours(20)).to_rfc3339();
    let bodies: Vec<Value> = (0..60)
        .map(|n| {
            let tenant = if n % 3 == 0 { 1 } else { LATE_TENANT };
            let mut e = event(tenant, n);
            if n % 2 == 0 {
                // Late events: an old partition, far from the other events' window.
                e["event_time"] = json!(late_time);
                e["event_type"] = json!("purchase");
                e["revenue"] = json!("10.5");
            }
            e
        })
        .collect();
    let mut client = db.client().await;
    ingestor()
        .ingest(&mut client, &batch("0", 0, now, &bodies), now)
        .await
        .unwrap();
    rollup::run(&mut client).await.unwrap();
    register(&db, LATE_TENANT).await;
    let r = replay(&db, LATE_TENANT, &limits(), DEFAULT_MAX).await;
    assert_eq!(r.replayed, 40);

    // The replay recorded its ids and times: the window reads only their partitions.
    let advances = rollup::run(&mut client).await.unwrap();
    for a in &advances {
        assert!(a.window_end > a.window_start, "{a:?}");
        let (lo, hi) = (a.min_event_time.unwrap(), a.max_event_time.unwrap());
        assert!(
            lo <= now - Duration::hours(20) && hi >= now - Duration::hours(1),
            "{a:?}"
        );
    }
    // Again: nothing more.
    for a in rollup::run(&mut client).await.unwrap() {
        assert_eq!(a.window_end, a.window_start);
    }
    assert_rollups_equal_raw(&db).await;
    assert_eq!(
        db.count(&format!(
            "SELECT sum(event_count)::bigint FROM rollup_events_1hour WHERE tenant_id = {LATE_TENANT}"
        ))
        .await,
        40
    );
}

#[tokio::test]
async fn loadgen_check_keeps_the_ledger_identity_after_replays() {
    let db = TestDb::create().await;
    let limits = limits();
    let ingestor = Ingestor::new(limits.clone(), std::time::Duration::from_secs(30));
    let mut traffic = Traffic::new(TrafficConfig {
        seed: 7,
        tenants: TENANTS.len() as i64,
        late_share: 0.05,
        late_max: remarketable_loadgen::traffic::LATE_MAX,
        malformed_share: 0.2,
        duplicate_share: 0.02,
        limits: limits.clone(),
    });
    let mut tally = Tally::default();
    let mut client = db.client().await;
    for round in 0..6 {
        let enqueued = Utc::now();
        let bodies = (0..400)
            .map(|_| {
                let g = traffic.next(enqueued);
                tally.add(&g);
                g.body.into_bytes()
            })
            .collect();
        ingestor
            .ingest(
                &mut client,
                &batch_raw("0", round * 400, enqueued, bodies),
                Utc::now(),
            )
            .await
            .unwrap();
    }
    let truth = Truth {
        expected: tally,
        ..Truth::default()
    };
    let report = check(&mut client, &truth).await.unwrap();
    assert!(report.is_ok(), "{report}");

    // The fix: unknown tenants registered, text limits raised; every tenant replayed.
    let unknown: Vec<i64> = client
        .query(
            "SELECT DISTINCT tenant_id FROM dead_letters WHERE reason = 'unknown_tenant'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!unknown.is_empty());
    for tenant in &unknown {
        register(&db, *tenant).await;
    }
    let raised = EventLimits {
        max_text_bytes: 1 << 20,
        max_url_bytes: 1 << 20,
        ..limits
    };
    let mut replayed = 0;
    for tenant in TENANTS.iter().chain(&unknown) {
        replayed += replay(&db, *tenant, &raised, DEFAULT_MAX).await.replayed;
    }
    assert!(replayed > unknown.len(), "replayed {replayed}");

    // The truth knows nothing of the replay: the stored and dead-lettered figures now differ
    // from it, but the ledger's own identities hold.
    let report = check(&mut client, &truth).await.unwrap();
    assert!(!report.is_ok());
    let ledger: Vec<_> = report
        .differences
        .iter()
        .filter(|d| d.what.starts_with("ledger"))
        .collect();
    assert!(ledger.is_empty(), "{ledger:?}\n{report}");
    assert_ledger_consistent(&db).await;
}
