//! The ingest core against a real PostgreSQL: every delivered event ends in exactly one of
//! `events` or `dead_letters`, once, and the ledger counts it.

use chrono::{Duration, Utc};
use remarketable_core::event::hash_id;
use remarketable_core::{Ingestor, Outcome, Position, Reason};
use remarketable_tests::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// (sequence, reason, tenant, payload, replay status)
type DeadLetterRow = (i64, String, Option<i64>, Vec<u8>, String);

fn ingestor() -> Ingestor {
    let settings = settings_for("postgres://unused/db");
    Ingestor::new(settings.limits, std::time::Duration::from_secs(30))
}

fn reasons(report: &remarketable_core::BatchReport) -> Vec<Option<Reason>> {
    report
        .outcomes
        .iter()
        .map(|o| match &o.outcome {
            Outcome::DeadLettered { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn valid_events_are_stored_as_sent_and_malformed_ones_dead_lettered() {
    let db = TestDb::create().await;
    let now = Utc::now();
    let event_time = (now - Duration::minutes(3))
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let full = json!({
        "tenant_id": 1, "event_type": "purchase", "device_id": "dev-9", "session_id": 77,
        "event_time": event_time, "country": "fr", "browser": "Firefox",
        "page_url": "https://shop.example/checkout?step=3", "referrer": "https://mail.example/",
        "campaign": "black-friday", "source": "newsletter", "medium": "email",
        "revenue": "129.95", "currency": "EUR", "properties": {"sku": "A-1", "qty": 2},
        "order_id": "o-1001"
    });
    let bodies: Vec<Vec<u8>> = vec![
        full.to_string().into_bytes(),
        event(2, 5).to_string().into_bytes(),
        b"{\"tenant_id\": 1, \"event_type\":".to_vec(),
        json!({"event_type": "page_view", "device_id": 1, "session_id": 1}).to_string().into_bytes(),
        event(99, 1).to_string().into_bytes(),
        json!({"tenant_id": 1, "event_type": "page_view", "device_id": 1, "session_id": 1, "country": "XX"})
            .to_string()
            .into_bytes(),
        json!({"tenant_id": 2, "event_type": "page_view", "device_id": 1, "session_id": 1,
               "event_time": (now + Duration::hours(2)).to_rfc3339()})
        .to_string()
        .into_bytes(),
        json!({"tenant_id": 3, "event_type": "page_view", "device_id": 1, "session_id": 1,
               "event_time": (now - Duration::days(RETENTION_DAYS + 1)).to_rfc3339()})
        .to_string()
        .into_bytes(),
        b"\xff\xfe not even utf-8".to_vec(),
    ];
    let batch = batch_raw("0", 100, now, bodies.clone());
    let mut client = db.client().await;
    let report = ingestor().ingest(&mut client, &batch, now).await.unwrap();

    assert_eq!(
        reasons(&report),
        vec![
            None,
            None,
            Some(Reason::InvalidJson),
            Some(Reason::MissingTenantId),
            Some(Reason::UnknownTenant),
            Some(Reason::BadCountry),
            Some(Reason::FutureEventTime),
            Some(Reason::OutsideRetention),
            Some(Reason::InvalidJson),
        ]
    );
    assert_eq!(
        (
            report.received,
            report.stored,
            report.dead_lettered,
            report.duplicates
        ),
        (9, 2, 7, 0)
    );
    assert_eq!(report.position, 108.into());

    // Every field of the full event, as sent (string ids hashed, codes upper-cased).
    let stored = db
        .json_rows(
            "SELECT tenant_id, event_type, device_id, session_id, \
             to_char(event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS event_time, \
             country, browser, page_url, referrer, campaign, source, medium, revenue::text AS revenue, \
             currency, properties, stream_partition, stream_sequence \
             FROM events WHERE tenant_id = 1",
        )
        .await;
    assert_eq!(
        stored,
        vec![json!({
            "tenant_id": 1, "event_type": "purchase", "device_id": hash_id("dev-9"), "session_id": 77,
            "event_time": event_time, "country": "FR", "browser": "Firefox",
            "page_url": "https://shop.example/checkout?step=3", "referrer": "https://mail.example/",
            "campaign": "black-friday", "source": "newsletter", "medium": "email",
            "revenue": "129.9500", "currency": "EUR",
            "properties": {"sku": "A-1", "qty": 2, "order_id": "o-1001"},
            "stream_partition": "0", "stream_sequence": 100
        })]
    );
    let defaulted = db
        .json_rows("SELECT event_time = received_at AS same FROM events WHERE tenant_id = 2")
        .await;
    assert_eq!(
        defaulted,
        vec![json!({"same": true})],
        "event_time defaults to enqueue time"
    );

    // Each reject with its reason, its tenant when known, and its payload byte for byte.
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT stream_sequence::bigint, reason, tenant_id, payload, replay_status FROM dead_letters \
             ORDER BY stream_sequence",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<DeadLetterRow> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let expected: Vec<DeadLetterRow> = [
        (102, "invalid_json", None),
        (103, "missing_tenant_id", None),
        (104, "unknown_tenant", Some(99)),
        (105, "bad_country", Some(1)),
        (106, "future_event_time", Some(2)),
        (107, "outside_retention", Some(3)),
        (108, "invalid_json", None),
    ]
    .into_iter()
    .map(|(seq, reason, tenant)| {
        (
            seq,
            reason.to_string(),
            tenant,
            bodies[(seq - 100) as usize].clone(),
            "pending".to_string(),
        )
    })
    .collect();
    assert_eq!(got, expected);

    // The ledger adds up, per tenant (unknown and unreadable tenants under 0).
    assert_eq!(ledger_totals(&db).await, (9, 2, 0, 7));
    let per_tenant = db
        .json_rows(
            "SELECT tenant_id, sum(received)::int AS received, sum(stored)::int AS stored, \
             sum(dead_lettered)::int AS dead FROM ingest_ledger GROUP BY 1 ORDER BY 1",
        )
        .await;
    assert_eq!(
        per_tenant,
        vec![
            json!({"tenant_id": 0, "received": 4, "stored": 0, "dead": 4}),
            json!({"tenant_id": 1, "received": 2, "stored": 1, "dead": 1}),
            json!({"tenant_id": 2, "received": 2, "stored": 1, "dead": 1}),
            json!({"tenant_id": 3, "received": 1, "stored": 0, "dead": 1}),
        ]
    );
}

#[tokio::test]
async fn redelivered_and_overlapping_batches_store_each_event_once() {
    let db = TestDb::create().await;
    let now = Utc::now();
    let ingestor = ingestor();
    let mut client = db.client().await;
    let bodies: Vec<Value> = (0..20).map(|n| event(1, n)).collect();

    let first = batch("7", 0, now, &bodies[..10]);
    let r = ingestor.ingest(&mut client, &first, now).await.unwrap();
    assert_eq!((r.stored, r.duplicates, r.position), (10, 0, 9.into()));

    let again = ingestor.ingest(&mut client, &first, now).await.unwrap();
    assert_eq!(
        (again.stored, again.duplicates, again.position),
        (0, 10, 9.into())
    );
    assert!(again
        .outcomes
        .iter()
        .all(|o| o.outcome == Outcome::Duplicate));

    let overlapping = batch("7", 5, now, &bodies[5..15]);
    let r = ingestor
        .ingest(&mut client, &overlapping, now)
        .await
        .unwrap();
    assert_eq!((r.stored, r.duplicates, r.position), (5, 5, 14.into()));

    // Another partition of the same hub has its own position.
    let other = batch("8", 0, now, &bodies[..3]);
    let r = ingestor.ingest(&mut client, &other, now).await.unwrap();
    assert_eq!((r.stored, r.duplicates), (3, 0));

    // A batch repeating a sequence number inside itself stores it once.
    let mut repeated = batch("9", 0, now, &bodies[..2]);
    repeated.events.push(repeated.events[1].clone());
    let r = ingestor.ingest(&mut client, &repeated, now).await.unwrap();
    assert_eq!((r.stored, r.duplicates), (2, 1));

    assert_eq!(
        db.count("SELECT count(*) FROM events WHERE stream_partition = '7'")
            .await,
        15
    );
    assert_eq!(
        db.count("SELECT count(*) FROM (SELECT DISTINCT stream_partition, stream_sequence FROM events) d").await,
        db.count("SELECT count(*) FROM events").await
    );
    assert_eq!(ledger_totals(&db).await, (36, 20, 16, 0));
    assert_eq!(
        db.count("SELECT last_sequence::bigint FROM ingest_positions WHERE stream_partition = '7'")
            .await,
        14
    );
}

#[tokio::test]
async fn concurrent_deliveries_of_one_partition_store_each_event_once() {
    let db = TestDb::create().await;
    let now = Utc::now();
    let ingestor = std::sync::Arc::new(ingestor());
    let bodies: Vec<Value> = (0..400).map(|n| event(1 + n % 3, n)).collect();
    // Eight deliveries at once, as during a rebalance: every consumer starts at the checkpoint
    // (here 0) and reads as far as it got: the same batch twice, longer and shorter ones.
    let ranges = [
        (0, 200),
        (0, 200),
        (0, 300),
        (0, 400),
        (0, 50),
        (0, 400),
        (0, 1),
        (0, 399),
    ];
    let mut tasks = Vec::new();
    for (from, to) in ranges {
        let b = batch("0", from as i64, now, &bodies[from..to]);
        let ingestor = ingestor.clone();
        let mut client = db.client().await;
        tasks.push(tokio::spawn(async move {
            ingestor.ingest(&mut client, &b, now).await.unwrap()
        }));
    }
    let mut stored = 0;
    let mut received = 0;
    for t in tasks {
        let r = t.await.unwrap();
        stored += r.stored;
        received += r.received;
        assert_eq!(r.stored + r.duplicates, r.received);
    }
    assert_eq!(stored, 400);
    assert_eq!(db.count("SELECT count(*) FROM events").await, 400);
    assert_eq!(
        db.count("SELECT count(DISTINCT stream_sequence) FROM events")
            .await,
        400
    );
    let totals = ledger_totals(&db).await;
    assert_eq!(totals, (received as i64, 400, received as i64 - 400, 0));
}

#[tokio::test]
async fn a_row_the_database_refuses_is_dead_lettered_and_the_rest_stored() {
    let db = TestDb::create().await;
    let client = db.client().await;
    // Rules the validator does not know: only the database can refuse these rows. A check
    // constraint (SQLSTATE 23514), and an index whose entries cannot exceed a page third
    // (54000, program limit exceeded).
    client
        .batch_execute(
            "ALTER TABLE events ADD CONSTRAINT no_poison CHECK (campaign IS DISTINCT FROM 'poison');
             CREATE INDEX events_note_idx ON events ((properties->>'note'));",
        )
        .await
        .unwrap();
    let now = Utc::now();
    // 8,000 pseudo-random letters: too little repetition to compress under the index limit.
    let mut x: u32 = 12345;
    let note: String = (0..8000)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            char::from(b'a' + ((x >> 16) % 26) as u8)
        })
        .collect();
    let bodies: Vec<Value> = (0..10)
        .map(|n| {
            let mut e = event(1, n);
            if n == 3 || n == 7 {
                e["campaign"] = json!("poison");
            }
            if n == 5 {
                e["properties"] = json!({ "note": note });
            }
            e
        })
        .collect();
    let mut client = db.client().await;
    let report = ingestor()
        .ingest(&mut client, &batch("0", 0, now, &bodies), now)
        .await
        .unwrap();
    assert_eq!((report.stored, report.dead_lettered), (7, 3));
    for o in &report.outcomes {
        match &o.outcome {
            Outcome::DeadLettered { reason, message } => {
                assert_eq!(*reason, Reason::DbRejected);
                let code = if o.sequence == 5.into() {
                    "54000"
                } else {
                    "23514"
                };
                assert!([3, 5, 7].map(Position::from).contains(&o.sequence), "{o:?}");
                assert!(message.starts_with(code), "{message}");
            }
            other => assert_eq!(*other, Outcome::Stored),
        }
    }
    assert_eq!(db.count("SELECT count(*) FROM events").await, 7);
    assert_eq!(
        db.count(
            "SELECT count(*) FROM dead_letters WHERE reason = 'db_rejected' AND tenant_id = 1"
        )
        .await,
        3
    );
    assert_eq!(ledger_totals(&db).await, (10, 7, 0, 3));
}

/// A batch large enough to be written by several COPY commands: a row refused in a later one
/// is dead-lettered, and every other row of every COPY is stored once.
#[tokio::test]
async fn a_refused_row_in_a_later_copy_of_a_large_batch_is_narrowed_down() {
    let db = TestDb::create().await;
    let client = db.client().await;
    client
        .batch_execute(
            "ALTER TABLE events ADD CONSTRAINT no_poison CHECK (campaign IS DISTINCT FROM 'poison')",
        )
        .await
        .unwrap();
    let now = Utc::now();
    let poisoned = [1_200, 1_733];
    let bodies: Vec<Value> = (0..2_000)
        .map(|n| {
            let mut e = event(1 + n % 3, n);
            e["page_url"] = json!(format!("https://shop.example/products/{n}?ref=bench"));
            if poisoned.contains(&n) {
                e["campaign"] = json!("poison");
            }
            e
        })
        .collect();
    let mut client = db.client().await;
    let report = ingestor()
        .ingest(&mut client, &batch("0", 0, now, &bodies), now)
        .await
        .unwrap();
    assert_eq!((report.stored, report.dead_lettered), (1_998, 2));
    for o in &report.outcomes {
        if o.sequence.as_i64().is_some_and(|s| poisoned.contains(&s)) {
            assert!(
                matches!(&o.outcome, Outcome::DeadLettered { reason, .. } if *reason == Reason::DbRejected),
                "{o:?}"
            );
        } else {
            assert_eq!(o.outcome, Outcome::Stored, "{o:?}");
        }
    }
    assert_eq!(
        db.count("SELECT count(DISTINCT stream_sequence) FROM events")
            .await,
        1_998
    );
    assert_eq!(db.count("SELECT count(*) FROM events").await, 1_998);
    assert_eq!(ledger_totals(&db).await, (2_000, 1_998, 0, 2));
    // The same batch again: nothing more is written.
    let again = ingestor()
        .ingest(&mut client, &batch("0", 0, now, &bodies), now)
        .await
        .unwrap();
    assert_eq!(again.duplicates, 2_000);
    assert_eq!(db.count("SELECT count(*) FROM events").await, 1_998);
}

#[tokio::test]
async fn events_without_a_partition_are_dead_lettered_without_aborting_the_batch() {
    let db = TestDb::create().await;
    let now = Utc::now();
    let ingestor = ingestor();
    let mut client = db.client().await;
    // Loads the partition bounds into the ingestor's cache.
    let warm = ingestor
        .ingest(&mut client, &batch("0", 0, now, &[event(1, 0)]), now)
        .await
        .unwrap();
    assert_eq!(warm.stored, 1);

    // Drop the partition holding the hour a day ago, behind the cache's back.
    let day_ago = now - Duration::days(1);
    drop_partition_covering(&client, day_ago).await;

    let mut in_hole = event(2, 1);
    in_hole["event_time"] = json!(day_ago.to_rfc3339());
    let bodies = vec![event(1, 1), in_hole.clone(), event(3, 2)];
    // The cached bounds still cover the hole: COPY fails on that row, and narrowing finds it.
    let r = ingestor
        .ingest(&mut client, &batch("0", 1, now, &bodies), now)
        .await
        .unwrap();
    assert_eq!(reasons(&r), vec![None, Some(Reason::NoPartition), None]);

    // Now the cache knows: the event is refused before COPY.
    let r = ingestor
        .ingest(
            &mut client,
            &batch("0", 4, now, &[in_hole, event(1, 9)]),
            now,
        )
        .await
        .unwrap();
    assert_eq!(reasons(&r), vec![Some(Reason::NoPartition), None]);

    assert_eq!(db.count("SELECT count(*) FROM events").await, 4);
    assert_eq!(
        db.count("SELECT count(*) FROM dead_letters WHERE reason = 'no_partition'")
            .await,
        2
    );
    assert_eq!(ledger_totals(&db).await, (6, 4, 0, 2));
}

#[tokio::test]
async fn a_tenant_registered_after_its_first_events_is_accepted_soon() {
    let db = TestDb::create().await;
    let now = Utc::now();
    let ingestor = ingestor();
    let mut client = db.client().await;
    let r = ingestor
        .ingest(&mut client, &batch("0", 0, now, &[event(50, 0)]), now)
        .await
        .unwrap();
    assert_eq!(reasons(&r), vec![Some(Reason::UnknownTenant)]);
    client
        .execute(
            "INSERT INTO tenants (tenant_id, name) VALUES (50, 'new shop')",
            &[],
        )
        .await
        .unwrap();
    // A miss reloads the tenant set at most every 2 s.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = ingestor
        .ingest(&mut client, &batch("0", 1, now, &[event(50, 1)]), now)
        .await
        .unwrap();
    assert_eq!(reasons(&r), vec![None]);
}

const LEDGER_ROWS: &str = "SELECT tenant_id, received, stored, duplicates, dead_lettered \
                           FROM ingest_ledger ORDER BY tenant_id, hour";

#[tokio::test]
async fn ledger_compaction_keeps_every_total_while_batches_keep_coming() {
    let db = TestDb::create().await;
    let now = Utc::now();
    let ingestor = std::sync::Arc::new(ingestor());
    let mut client = db.client().await;
    for (i, first) in [0i64, 100, 150].into_iter().enumerate() {
        let mut bodies: Vec<Value> = (first..first + 100).map(|n| event(1 + n % 3, n)).collect();
        bodies.push(
            json!({"tenant_id": 2, "event_type": "Bad Type", "device_id": 1, "session_id": 1}),
        );
        ingestor
            .ingest(
                &mut client,
                &batch(&i.to_string(), first, now, &bodies),
                now,
            )
            .await
            .unwrap();
    }
    let before = db.json_rows(LEDGER_ROWS).await;
    assert_eq!(
        db.count("SELECT count(*) FROM ingest_ledger_batches").await,
        3
    );

    // Compaction while more batches commit: nothing counted twice, nothing lost.
    let writer = {
        let ingestor = ingestor.clone();
        let mut client = db.client().await;
        tokio::spawn(async move {
            for round in 0..20i64 {
                let bodies: Vec<Value> = (0..50).map(|n| event(1, n)).collect();
                ingestor
                    .ingest(&mut client, &batch("9", round * 50, now, &bodies), now)
                    .await
                    .unwrap();
            }
        })
    };
    let mut folded = 0;
    for _ in 0..5 {
        folded += remarketable_core::db::compact_ledger(&client)
            .await
            .unwrap();
    }
    writer.await.unwrap();
    assert!(folded > 0);
    remarketable_core::db::compact_ledger(&client)
        .await
        .unwrap();
    assert_eq!(
        db.count("SELECT count(*) FROM ingest_ledger_batches").await,
        0
    );

    let after = db.json_rows(LEDGER_ROWS).await;
    let tenant1_received = |rows: &[Value]| -> i64 {
        rows.iter()
            .filter(|r| r["tenant_id"] == 1)
            .map(|r| r["received"].as_i64().unwrap())
            .sum()
    };
    assert_eq!(tenant1_received(&after), tenant1_received(&before) + 1000);
    for (b, a) in before.iter().zip(&after) {
        if b["tenant_id"] != 1 {
            assert_eq!(a, b, "tenants other than 1 are unchanged by compaction");
        }
    }
    assert_eq!(ledger_totals(&db).await, (1303, 1300, 0, 3));
}

#[tokio::test]
async fn partition_upkeep_creates_ahead_drops_expired_and_is_idempotent() {
    let db = TestDb::create().await;
    let client = db.client().await;
    let bounds =
        |rows: Vec<tokio_postgres::Row>| -> BTreeMap<chrono::DateTime<Utc>, chrono::DateTime<Utc>> {
            rows.iter().map(|r| (r.get(0), r.get(1))).collect()
        };
    let before = bounds(
        client
            .query(
                "SELECT from_value, to_value FROM partition_bounds('events')",
                &[],
            )
            .await
            .unwrap(),
    );
    let now = Utc::now();
    // Hourly, contiguous, from the retention horizon to at least a day ahead.
    assert!(*before.keys().next().unwrap() <= now - Duration::days(RETENTION_DAYS));
    assert!(*before.values().last().unwrap() >= now + Duration::days(1));
    for (from, to) in &before {
        assert_eq!(*to - *from, Duration::hours(1));
        assert!(
            *to == *before.values().last().unwrap() || before.contains_key(to),
            "gap after {to}"
        );
    }
    // Running again changes nothing.
    let again = client
        .query("SELECT * FROM maintain_partitions('events')", &[])
        .await
        .unwrap();
    assert!(again.is_empty());

    // Two days later: the oldest 48 partitions expire and 48 are created ahead.
    let later = now + Duration::days(2);
    let changes = client
        .query(
            "SELECT action, count(*) FROM maintain_partitions('events', $1) GROUP BY 1 ORDER BY 1",
            &[&later],
        )
        .await
        .unwrap();
    let changes: Vec<(String, i64)> = changes.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        changes,
        vec![("created".to_string(), 48), ("dropped".to_string(), 48)]
    );
    let after = bounds(
        client
            .query(
                "SELECT from_value, to_value FROM partition_bounds('events')",
                &[],
            )
            .await
            .unwrap(),
    );
    assert!(
        *after.keys().next().unwrap()
            >= later - Duration::days(RETENTION_DAYS) - Duration::hours(1)
    );
    assert_eq!(after.len(), before.len());
}

#[tokio::test]
async fn a_too_large_event_keeps_its_first_bytes_and_its_size() {
    let db = TestDb::create().await;
    let settings = settings_with(
        "postgres://unused/db",
        &[("DEAD_LETTER_MAX_PAYLOAD_BYTES", "4096")],
    );
    let ingestor = Ingestor::new(settings.limits, std::time::Duration::from_secs(30));
    let now = Utc::now();
    let mut huge = event(1, 1);
    huge["properties"] = json!({"blob": "x".repeat(10 << 20)});
    let huge = huge.to_string().into_bytes();
    let bodies = vec![event(1, 0).to_string().into_bytes(), huge.clone()];
    let mut client = db.client().await;
    let report = ingestor
        .ingest(&mut client, &batch_raw("0", 0, now, bodies), now)
        .await
        .unwrap();
    assert_eq!((report.stored, report.dead_lettered), (1, 1));
    let row = client
        .query_one(
            "SELECT reason, payload, payload_bytes FROM dead_letters WHERE stream_sequence = 1",
            &[],
        )
        .await
        .unwrap();
    let (reason, payload, size): (String, Vec<u8>, Option<i64>) =
        (row.get(0), row.get(1), row.get(2));
    assert_eq!(reason, "too_large");
    assert_eq!(payload, huge[..4096], "the first bytes, as sent");
    assert_eq!(size, Some(huge.len() as i64));
    // Dead letters that fit keep their payload whole, without a size.
    let mut bad = event(1, 2);
    bad["country"] = json!("XX");
    ingestor
        .ingest(&mut client, &batch("0", 2, now, &[bad.clone()]), now)
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT payload, payload_bytes FROM dead_letters WHERE stream_sequence = 2",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Vec<u8>>(0), bad.to_string().into_bytes());
    assert_eq!(row.get::<_, Option<i64>>(1), None);
}
