//! `loadgen check` against a real PostgreSQL: generated traffic (malformed events, late
//! events and producer duplicates included) ingested through the core's `Ingestor` matches
//! the generator's truth exactly, and one corrupted row shows as exactly its difference.

use chrono::{DateTime, Utc};
use remarketable_core::Ingestor;
use remarketable_loadgen::check::{check, CheckReport, Difference};
use remarketable_loadgen::traffic::{Traffic, TrafficConfig};
use remarketable_loadgen::truth::{Tally, Truth};
use remarketable_tests::*;

const EVENTS: usize = 6_000;
const BATCH: usize = 500;

/// Ingests `EVENTS` generated events over two partitions and answers their truth.
async fn ingest_traffic(db: &TestDb) -> Truth {
    let limits = settings_for("postgres://unused/db").limits;
    let ingestor = Ingestor::new(limits.clone(), std::time::Duration::from_secs(30));
    let mut traffic = Traffic::new(TrafficConfig {
        seed: 99,
        tenants: TENANTS.len() as i64,
        late_share: 0.05,
        late_max: remarketable_loadgen::traffic::LATE_MAX,
        malformed_share: 0.05,
        duplicate_share: 0.02,
        limits,
    });
    let mut tally = Tally::default();
    let mut client = db.client().await;
    for round in 0..EVENTS / BATCH {
        let enqueued = Utc::now();
        let mut bodies = Vec::with_capacity(BATCH);
        for _ in 0..BATCH {
            let g = traffic.next(enqueued);
            tally.add(&g);
            bodies.push(g.body.into_bytes());
        }
        let partition = (round % 2).to_string();
        let first = (round / 2 * BATCH) as i64;
        let batch = batch_raw(&partition, first, enqueued, bodies);
        let report = ingestor
            .ingest(&mut client, &batch, Utc::now())
            .await
            .expect("batch ingested");
        assert_eq!(report.received, BATCH);
    }
    assert!(tally.producer_duplicates > 50 && tally.dead_lettered_total() > 150);
    Truth {
        expected: tally,
        ..Truth::default()
    }
}

async fn run_check(db: &TestDb, truth: &Truth) -> CheckReport {
    let mut client = db.client().await;
    check(&mut client, truth).await.expect("check runs")
}

#[tokio::test]
async fn ingested_traffic_matches_its_truth() {
    let db = TestDb::create().await;
    let truth = ingest_traffic(&db).await;
    let report = run_check(&db, &truth).await;
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.events as u64, truth.expected.stored_total());
    assert_eq!(
        report.dead_letters as u64,
        truth.expected.dead_lettered_total()
    );
    assert_eq!(report.tenants, TENANTS.len());
    assert!(report.tenant_hours > TENANTS.len(), "late events add hours");
    assert!(report.to_string().starts_with("check: OK"), "{report}");
}

#[tokio::test]
async fn a_deleted_event_is_exactly_one_cell_and_the_totals() {
    let db = TestDb::create().await;
    let truth = ingest_traffic(&db).await;
    let client = db.client().await;
    // A page view whose device and session have other events in the same hour, so that only
    // the event counts change.
    let row = client
        .query_one(
            "SELECT e.tenant_id, e.event_id, e.event_time, \
                    date_bin('1 hour', e.event_time, TIMESTAMPTZ 'epoch') AS hour \
             FROM events e \
             WHERE e.event_type = 'page_view' AND EXISTS ( \
                 SELECT 1 FROM events o \
                 WHERE o.tenant_id = e.tenant_id AND o.event_id <> e.event_id \
                   AND o.device_id = e.device_id AND o.session_id = e.session_id \
                   AND date_bin('1 hour', o.event_time, TIMESTAMPTZ 'epoch') \
                       = date_bin('1 hour', e.event_time, TIMESTAMPTZ 'epoch')) \
             ORDER BY e.event_id LIMIT 1",
            &[],
        )
        .await
        .expect("such an event exists");
    let (tenant, event_id, event_time, hour): (i64, i64, DateTime<Utc>, DateTime<Utc>) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let deleted = client
        .execute(
            "DELETE FROM events WHERE tenant_id = $1 AND event_id = $2 AND event_time = $3",
            &[&tenant, &event_id, &event_time],
        )
        .await
        .unwrap();
    assert_eq!(deleted, 1);

    let report = run_check(&db, &truth).await;
    let cell = truth.expected.stored[&tenant][&hour].events;
    let total = truth.expected.stored_total();
    let difference = |what: &str, tenant, hour, expected: u64, actual: u64| Difference {
        what: what.into(),
        tenant,
        hour,
        expected: expected.to_string(),
        actual: actual.to_string(),
    };
    assert_eq!(
        report.differences,
        vec![
            difference("events", Some(tenant), Some(hour), cell, cell - 1),
            // The ledger counted the row when it was stored.
            difference(
                "ledger stored = rows of events",
                None,
                None,
                total - 1,
                total
            ),
            difference("events stored (total)", None, None, total, total - 1),
        ],
        "{report}"
    );
    assert!(report
        .to_string()
        .contains("check: FAILED: 3 difference(s)"));
}

#[tokio::test]
async fn a_dead_letter_under_another_reason_shows_both_reasons() {
    let db = TestDb::create().await;
    let truth = ingest_traffic(&db).await;
    let client = db.client().await;
    let row = client
        .query_one(
            "UPDATE dead_letters SET reason = 'bad_country' WHERE dead_letter_id = \
             (SELECT min(dead_letter_id) FROM dead_letters WHERE reason = 'invalid_json') \
             RETURNING tenant_id",
            &[],
        )
        .await
        .expect("an invalid_json dead letter exists");
    assert_eq!(row.get::<_, Option<i64>>(0), None);
    let report = run_check(&db, &truth).await;
    let what: Vec<(&str, Option<i64>)> = report
        .differences
        .iter()
        .map(|d| (d.what.as_str(), d.tenant))
        .collect();
    assert_eq!(
        what,
        vec![
            ("dead letters bad_country", None),
            ("dead letters invalid_json", None)
        ],
        "{report}"
    );
}
