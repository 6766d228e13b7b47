//! The report queries against a real PostgreSQL: every figure equals what the raw events say
//! (distinct counts within their bound), at every granularity, with filters, in a tenant's
//! local days, and in real time across the seam between rolled-up and fresh events.

use chrono::{Duration, DurationRound, Utc};
use remarketable_core::reports::{
    self, Dimension, Filters, Granularity, Metric, Range, Ranking, RolledCache, TopList,
    DISTINCT_ERROR_BOUND_95,
};
use remarketable_core::rollup;
use remarketable_tests::*;
use serde_json::{json, Value};

/// Raw figures per bucket of `g` for `tenant` in `range`, as JSON rows:
/// {bucket, events, revenue, purchases, devices, sessions}.
async fn raw_series(
    db: &TestDb,
    tenant: i64,
    range: &Range,
    g: Granularity,
    filter: &str,
) -> Vec<Value> {
    let bucket = match g {
        Granularity::FiveMinutes => "date_bin('5 minutes', e.event_time, TIMESTAMPTZ 'epoch')",
        Granularity::Hour => "date_bin('1 hour', e.event_time, TIMESTAMPTZ 'epoch')",
        Granularity::Day => {
            "((e.event_time AT TIME ZONE t.time_zone)::date::timestamp AT TIME ZONE t.time_zone)"
        }
    };
    db.json_rows(&format!(
        "SELECT {bucket} AS bucket, count(*) AS events, coalesce(sum(e.revenue), 0)::numeric(18,4)::text AS revenue,
                count(*) FILTER (WHERE e.event_type = 'purchase') AS purchases,
                count(DISTINCT e.device_id) AS devices, count(DISTINCT e.session_id) AS sessions
         FROM events e JOIN tenants t USING (tenant_id)
         WHERE e.tenant_id = {tenant} AND e.event_time >= '{}' AND e.event_time < '{}' {filter}
         GROUP BY 1 ORDER BY 1",
        range.from.to_rfc3339(),
        range.to.to_rfc3339()
    ))
    .await
}

fn within_bound(estimate: i64, exact: i64) -> bool {
    (estimate - exact).abs() as f64 <= (exact as f64 * DISTINCT_ERROR_BOUND_95).max(1.0)
}

/// Compares a report's series with the raw events, bucket by bucket.
fn assert_series_equal(series: &reports::TimeSeries, raw: &[Value]) {
    assert!(!raw.is_empty(), "no raw buckets to compare");
    assert_eq!(
        series.points.len(),
        raw.len(),
        "buckets of {:?}",
        series.granularity
    );
    for (p, r) in series.points.iter().zip(raw) {
        let bucket: chrono::DateTime<Utc> = r["bucket"].as_str().unwrap().parse().unwrap();
        assert_eq!(p.bucket, bucket);
        assert_eq!(p.metrics.events, r["events"].as_i64().unwrap(), "{r}");
        assert_eq!(
            p.metrics.revenue,
            r["revenue"]
                .as_str()
                .unwrap()
                .parse::<rust_decimal::Decimal>()
                .unwrap(),
            "{r}"
        );
        assert_eq!(p.metrics.purchases, r["purchases"].as_i64().unwrap(), "{r}");
        assert!(
            within_bound(p.metrics.unique_devices, r["devices"].as_i64().unwrap()),
            "{p:?} {r}"
        );
        assert!(
            within_bound(p.metrics.unique_sessions, r["sessions"].as_i64().unwrap()),
            "{p:?} {r}"
        );
    }
}

/// Traffic of the last hours for tenants 1..3 (2 in New York, 3 in Kathmandu); half rolled
/// up, half still raw, so every report merges both parts.
/// collect's limits as the settings' defaults make them.
fn limits() -> remarketable_core::quota::Limits {
    remarketable_core::Settings::from_map(
        &[("DATABASE_URL".to_string(), "postgres://h/db".to_string())].into(),
    )
    .unwrap()
    .collect_limits
}

async fn half_rolled_up(db: &TestDb) {
    set_time_zones(db).await;
    let mut rng = Rng(21);
    let first = shop_events(&mut rng, Utc::now(), 2000, 30);
    ingest(db, "0", 0, &first, 500).await;
    rollup::run(&mut db.client().await).await.unwrap();
    let second = shop_events(&mut rng, Utc::now(), 2000, 30);
    ingest(db, "1", 0, &second, 500).await;
}

#[tokio::test]
async fn timeseries_equals_the_raw_events_at_every_granularity_with_filters() {
    let db = TestDb::create().await;
    half_rolled_up(&db).await;
    let client = db.client().await;
    let now = Utc::now();
    for tenant in [1, 2, 3] {
        for g in Granularity::ALL {
            let range = Range::new(now - Duration::hours(8), now + Duration::minutes(1)).unwrap();
            let series = reports::timeseries(&client, tenant, &range, g, &Filters::default())
                .await
                .unwrap();
            // The report widens the range to whole buckets; compare over the same range.
            assert!(series.range.from <= range.from && series.range.to >= range.to);
            let raw = raw_series(&db, tenant, &series.range, g, "").await;
            assert_series_equal(&series, &raw);

            // One filter reads the slices; two read the full dimensional rollup.
            let mut one = Filters::default();
            one.set(Dimension::Browser, "Safari").unwrap();
            let safari = reports::timeseries(&client, tenant, &range, g, &one)
                .await
                .unwrap();
            let raw = raw_series(&db, tenant, &safari.range, g, "AND e.browser = 'Safari'").await;
            assert_series_equal(&safari, &raw);

            let mut filters = Filters::default();
            filters.set(Dimension::Country, "DE").unwrap();
            filters.set(Dimension::EventType, "page_view").unwrap();
            let filtered = reports::timeseries(&client, tenant, &range, g, &filters)
                .await
                .unwrap();
            let raw = raw_series(
                &db,
                tenant,
                &filtered.range,
                g,
                "AND e.country = 'DE' AND e.event_type = 'page_view'",
            )
            .await;
            assert_series_equal(&filtered, &raw);
        }
    }
    // Events without a country are selected by the empty value.
    let mut none = Filters::default();
    none.set(Dimension::Country, "").unwrap();
    let range = Range::new(now - Duration::hours(8), now + Duration::minutes(1)).unwrap();
    let s = reports::timeseries(&client, 1, &range, Granularity::Hour, &none)
        .await
        .unwrap();
    let raw = raw_series(&db, 1, &s.range, Granularity::Hour, "AND e.country IS NULL").await;
    assert_series_equal(&s, &raw);
}

#[tokio::test]
async fn days_are_the_tenants_local_days() {
    let db = TestDb::create().await;
    set_time_zones(&db).await;
    // 20:00 UTC yesterday: 15:00 yesterday in New York, 01:45 today in Kathmandu.
    let today = Utc::now().duration_trunc(Duration::days(1)).unwrap();
    let t = today - Duration::hours(4);
    let bodies: Vec<Value> = [2, 3]
        .iter()
        .map(|tenant| {
            json!({"tenant_id": tenant, "event_type": "purchase", "device_id": 1,
                             "session_id": 1, "event_time": t.to_rfc3339(), "revenue": "5"})
        })
        .collect();
    ingest(&db, "0", 0, &bodies, 10).await;
    let client = db.client().await;
    let range = Range::new(today - Duration::days(2), today + Duration::days(1)).unwrap();
    for rolled in [false, true] {
        if rolled {
            rollup::run(&mut db.client().await).await.unwrap();
        }
        let ny = reports::timeseries(&client, 2, &range, Granularity::Day, &Filters::default())
            .await
            .unwrap();
        assert_eq!(ny.points.len(), 1);
        // Yesterday's local midnight in New York (UTC-5 in winter, UTC-4 in summer).
        let p = &ny.points[0];
        assert!(p.bucket < t && t - p.bucket < Duration::days(1), "{p:?}");
        assert_eq!(
            p.bucket.date_naive(),
            (today - Duration::days(1)).date_naive()
        );
        let kathmandu =
            reports::timeseries(&client, 3, &range, Granularity::Day, &Filters::default())
                .await
                .unwrap();
        // Today's local midnight in Kathmandu is 18:15 UTC yesterday.
        assert_eq!(kathmandu.points.len(), 1);
        assert_eq!(
            kathmandu.points[0].bucket,
            today - Duration::minutes(5 * 60 + 45)
        );
        assert_eq!(kathmandu.points[0].metrics.revenue.to_string(), "5.0000");
    }
}

#[tokio::test]
async fn a_committed_event_is_visible_at_once_and_counted_once_after_the_rollup() {
    let db = TestDb::create().await;
    half_rolled_up(&db).await;
    let client = db.client().await;
    let now = Utc::now();
    let range = Range::new(now - Duration::hours(1), now + Duration::minutes(5)).unwrap();
    let before = reports::oracle::summary(
        &client,
        1,
        &range,
        Granularity::FiveMinutes,
        &Filters::default(),
    )
    .await
    .unwrap();
    let mut e = event(1, 9999);
    e["event_type"] = json!("purchase");
    e["revenue"] = json!("12.5");
    ingest(&db, "2", 0, &[e], 10).await;
    let after = reports::oracle::summary(
        &client,
        1,
        &range,
        Granularity::FiveMinutes,
        &Filters::default(),
    )
    .await
    .unwrap();
    assert_eq!(after.current.events, before.current.events + 1);
    assert_eq!(after.current.purchases, before.current.purchases + 1);
    assert_eq!(
        after.current.revenue - before.current.revenue,
        "12.5".parse().unwrap()
    );
    let series = reports::timeseries(
        &client,
        1,
        &range,
        Granularity::FiveMinutes,
        &Filters::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        series.points.iter().map(|p| p.metrics.events).sum::<i64>(),
        after.current.events
    );

    // The rollup takes the fresh events in; the figures do not move.
    rollup::run(&mut db.client().await).await.unwrap();
    let rolled = reports::oracle::summary(
        &client,
        1,
        &range,
        Granularity::FiveMinutes,
        &Filters::default(),
    )
    .await
    .unwrap();
    assert!(rolled.freshness.rolled_up_to_event > after.freshness.rolled_up_to_event);
    assert_eq!(rolled.current, after.current);
    // The previous period is the hour before, counted from the raw events.
    let previous = raw_series(&db, 1, &rolled.previous_range, Granularity::Day, "").await;
    let previous_events: i64 = previous.iter().map(|r| r["events"].as_i64().unwrap()).sum();
    assert_eq!(rolled.previous.events, previous_events);
}

#[tokio::test]
async fn breakdown_and_top_lists_match_the_raw_events() {
    let db = TestDb::create().await;
    half_rolled_up(&db).await;
    let client = db.client().await;
    let now = Utc::now();
    let range = Range::new(now - Duration::hours(8), now + Duration::minutes(1)).unwrap();
    let by_country = Ranking {
        dimension: Dimension::Country,
        order: Metric::Events,
        limit: 10,
    };
    let b = reports::oracle::breakdown(
        &client,
        1,
        &range,
        Granularity::Hour,
        &Filters::default(),
        by_country,
    )
    .await
    .unwrap();
    let raw = db
        .json_rows(&format!(
            "SELECT coalesce(country, '') AS value, count(*) AS events,
                    count(DISTINCT device_id) AS devices
             FROM events WHERE tenant_id = 1 AND event_time >= '{}' AND event_time < '{}'
             GROUP BY 1 ORDER BY 2 DESC, 1",
            b.range.from.to_rfc3339(),
            b.range.to.to_rfc3339()
        ))
        .await;
    assert_eq!(b.rows.len(), raw.len());
    for (row, r) in b.rows.iter().zip(&raw) {
        assert_eq!(row.value, r["value"].as_str().unwrap());
        assert_eq!(row.metrics.events, r["events"].as_i64().unwrap());
        assert!(within_bound(
            row.metrics.unique_devices,
            r["devices"].as_i64().unwrap()
        ));
    }
    // Ranked by revenue: most revenue first; ties by events, then value.
    let by_revenue = reports::oracle::breakdown(
        &client,
        1,
        &range,
        Granularity::Hour,
        &Filters::default(),
        Ranking {
            dimension: Dimension::Country,
            order: Metric::Revenue,
            limit: 3,
        },
    )
    .await
    .unwrap();
    let raw = db
        .json_rows(&format!(
            "SELECT coalesce(country, '') AS value, coalesce(sum(revenue), 0)::text AS revenue
             FROM events WHERE tenant_id = 1 AND event_time >= '{}' AND event_time < '{}'
             GROUP BY 1 ORDER BY coalesce(sum(revenue), 0) DESC, count(*) DESC,
                      coalesce(country, '') COLLATE \"C\"
             LIMIT 3",
            b.range.from.to_rfc3339(),
            b.range.to.to_rfc3339()
        ))
        .await;
    let ranked: Vec<(String, String)> = by_revenue
        .rows
        .iter()
        .map(|r| (r.value.clone(), r.metrics.revenue.normalize().to_string()))
        .collect();
    let expected: Vec<(String, String)> = raw
        .iter()
        .map(|r| {
            let revenue: rust_decimal::Decimal = r["revenue"].as_str().unwrap().parse().unwrap();
            (
                r["value"].as_str().unwrap().to_string(),
                revenue.normalize().to_string(),
            )
        })
        .collect();
    assert_eq!(ranked, expected);
    assert_ne!(
        ranked.iter().map(|r| &r.0).collect::<Vec<_>>(),
        b.rows.iter().take(3).map(|r| &r.value).collect::<Vec<_>>(),
        "the data ranks countries differently by revenue and by events"
    );

    let top = reports::top(
        &client,
        1,
        &range,
        Granularity::Hour,
        TopList::Pages,
        &Filters::default(),
        5,
    )
    .await
    .unwrap();
    let exact = db
        .json_rows(&format!(
            "SELECT split_part(page_url, '?', 1) AS item, count(*) AS count FROM events
             WHERE tenant_id = 1 AND event_time >= '{}' AND event_time < '{}'
             GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5",
            top.range.from.to_rfc3339(),
            top.range.to.to_rfc3339()
        ))
        .await;
    assert!(top.estimated);
    assert_eq!(
        serde_json::to_value(&top.items).unwrap(),
        Value::Array(exact)
    );
}

#[tokio::test]
async fn the_ingest_report_is_the_tenants_ledger_and_dead_letters() {
    let db = TestDb::create().await;
    let now = Utc::now();
    let mut bad = event(1, 7);
    bad["country"] = json!("XX");
    ingest(
        &db,
        "0",
        0,
        &[event(1, 1), event(1, 2), bad, event(2, 3)],
        10,
    )
    .await;
    ingest(&db, "0", 0, &[event(1, 1)], 10).await;
    let client = db.client().await;
    let range = Range::new(now - Duration::hours(1), now + Duration::hours(1)).unwrap();
    let r = reports::ingest(&client, 1, &range, 10, limits())
        .await
        .unwrap();
    let totals = r.hours.iter().fold((0, 0, 0, 0), |t, h| {
        (
            t.0 + h.received,
            t.1 + h.stored,
            t.2 + h.duplicates,
            t.3 + h.dead_lettered,
        )
    });
    assert_eq!(totals, (4, 2, 1, 1));
    assert_eq!(r.recent_dead_letters.len(), 1);
    let d = &r.recent_dead_letters[0];
    assert_eq!(
        (d.reason.as_str(), d.incoming.sequence.clone()),
        ("bad_country", 2.into())
    );
    assert!(String::from_utf8_lossy(&d.incoming.body).contains("\"XX\""));
    // Another tenant's report does not show it.
    assert!(reports::ingest(&client, 2, &range, 10, limits())
        .await
        .unwrap()
        .recent_dead_letters
        .is_empty());
    assert!(matches!(
        reports::ingest(&client, 99, &range, 10, limits()).await,
        Err(reports::ReportError::UnknownTenant)
    ));
}

#[tokio::test]
async fn reports_read_while_events_arrive_and_rollups_commit_count_every_event_once() {
    let db = TestDb::create().await;
    set_time_zones(&db).await;
    let bodies = shop_events(&mut Rng(8), Utc::now(), 3000, 0);
    let now = Utc::now();
    let range = Range::new(now - Duration::hours(2), now + Duration::minutes(5)).unwrap();
    // Batch after batch, each followed by a rollup run: windows keep committing while the
    // reader reads.
    let writer = async {
        let mut client = db.client().await;
        for (i, chunk) in bodies.chunks(50).enumerate() {
            ingest(&db, "0", (i * 50) as i64, chunk, 50).await;
            rollup::run(&mut client).await.unwrap();
        }
    };
    let reader = async {
        let client = db.client().await;
        let count = "SELECT count(*) FROM events WHERE tenant_id = 1";
        let mut reads = 0;
        for _ in 0..40 {
            for g in Granularity::ALL {
                let before = db.count(count).await;
                let s = reports::oracle::summary(&client, 1, &range, g, &Filters::default())
                    .await
                    .unwrap();
                let after = db.count(count).await;
                assert!(
                    before <= s.current.events && s.current.events <= after,
                    "{g:?}: {} events reported, {before}..{after} stored",
                    s.current.events
                );
                reads += 1;
            }
        }
        reads
    };
    let ((), reads) = tokio::join!(writer, reader);
    assert_eq!(reads, 120);
    let total = db
        .count("SELECT count(*) FROM events WHERE tenant_id = 1")
        .await;
    let s = reports::oracle::summary(
        &db.client().await,
        1,
        &range,
        Granularity::Day,
        &Filters::default(),
    )
    .await
    .unwrap();
    assert_eq!(s.current.events, total);
}

/// The kept rolled parts of breakdowns and summaries answer exactly what the statement over the
/// rollups and the raw events answers, whatever happened since they were kept: fresh events
/// (late ones included), rollup runs with and without new events, a tenant's time zone change.
#[tokio::test]
async fn kept_rolled_parts_answer_as_the_full_statement_does() {
    let db = TestDb::create().await;
    half_rolled_up(&db).await;
    let client = db.client().await;
    let cache = RolledCache::new(64 << 20);
    let now = Utc::now();
    let range = Range::new(now - Duration::hours(8), now + Duration::minutes(5)).unwrap();
    let mut country = Filters::default();
    country.set(Dimension::Country, "US").unwrap();
    let mut two = country.clone();
    two.set(Dimension::Browser, "Chrome").unwrap();
    let mut rng = Rng(77);
    let mut sequence = 10_000;
    for step in 0..6 {
        // Every ranking once, so that both paths rank alike on ties too.
        let order = Metric::ALL[step];
        match step {
            // Fresh events, a fifth of them late, above the watermark.
            1 | 4 => {
                let bodies = shop_events(&mut rng, Utc::now(), 300, 20);
                ingest(&db, "7", sequence, &bodies, 100).await;
                sequence += 300;
            }
            // The rollup takes them in (a new watermark); then a run with nothing new keeps
            // the watermark, and the kept parts are used as they are.
            2 | 3 => {
                rollup::run(&mut db.client().await).await.unwrap();
            }
            5 => db
                .client()
                .await
                .batch_execute("UPDATE tenants SET time_zone = 'Asia/Tokyo' WHERE tenant_id = 1")
                .await
                .unwrap(),
            _ => {}
        }
        // Twice each: the second read finds the part the first one kept.
        for _ in 0..2 {
            for g in Granularity::ALL {
                for filters in [&Filters::default(), &country, &two] {
                    for d in [Dimension::Country, Dimension::Browser, Dimension::EventType] {
                        let ranking = Ranking {
                            dimension: d,
                            order,
                            limit: 100,
                        };
                        let kept = cache
                            .breakdown(&client, 1, &range, g, filters, ranking)
                            .await
                            .unwrap();
                        let full =
                            reports::oracle::breakdown(&client, 1, &range, g, filters, ranking)
                                .await
                                .unwrap();
                        assert_eq!(
                            serde_json::to_value(&kept.rows).unwrap(),
                            serde_json::to_value(&full.rows).unwrap(),
                            "step {step}, {g:?}, {d:?}, {filters:?}"
                        );
                        assert_eq!(kept.range, full.range);
                    }
                    let kept = cache.summary(&client, 1, &range, g, filters).await.unwrap();
                    let full = reports::oracle::summary(&client, 1, &range, g, filters)
                        .await
                        .unwrap();
                    assert_eq!(
                        kept.current, full.current,
                        "step {step}, {g:?}, {filters:?}"
                    );
                    assert_eq!(kept.previous, full.previous, "step {step}, {g:?}");
                    assert_eq!(kept.previous_range, full.previous_range);
                }
            }
        }
        let events = db
            .count(&format!(
                "SELECT count(*) FROM events WHERE tenant_id = 1 AND event_time >= '{}'
                   AND event_time < '{}'",
                range.from.to_rfc3339(),
                range.to.to_rfc3339()
            ))
            .await;
        let totals = cache
            .summary(
                &client,
                1,
                &range,
                Granularity::FiveMinutes,
                &Filters::default(),
            )
            .await
            .unwrap();
        assert_eq!(totals.current.events, events, "step {step}");
    }
    assert!(cache.hits() > 100, "{} hits", cache.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_missing_the_same_part_at_once_read_it_once() {
    let db = TestDb::create().await;
    half_rolled_up(&db).await;
    let now = Utc::now();
    let range = Range::new(now - Duration::hours(8), now + Duration::minutes(5)).unwrap();
    let (g, none) = (Granularity::Hour, Filters::default());
    let ranking = Ranking {
        dimension: Dimension::Country,
        order: Metric::Events,
        limit: 100,
    };
    let cache = std::sync::Arc::new(RolledCache::new(64 << 20));
    let mut rounds = 0;
    // Eight requests at once, as after a rollup run; a second round after fresh events and a
    // rollup run that moves the watermark.
    for round in 0..2 {
        if round == 1 {
            let mut rng = Rng(5);
            ingest(
                &db,
                "9",
                50_000,
                &shop_events(&mut rng, Utc::now(), 200, 20),
                100,
            )
            .await;
            rollup::run(&mut db.client().await).await.unwrap();
        }
        let full = reports::oracle::breakdown(&db.client().await, 1, &range, g, &none, ranking)
            .await
            .unwrap();
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(8));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (client, cache, start, none) = (
                db.client().await,
                cache.clone(),
                start.clone(),
                none.clone(),
            );
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                cache
                    .breakdown(&client, 1, &range, g, &none, ranking)
                    .await
                    .unwrap()
            }));
        }
        for task in tasks {
            let kept = task.await.unwrap();
            assert_eq!(
                serde_json::to_value(&kept.rows).unwrap(),
                serde_json::to_value(&full.rows).unwrap(),
                "round {round}"
            );
        }
        rounds += 1;
        assert_eq!(cache.reads(), rounds, "one read per round, round {round}");
    }
}

#[tokio::test]
async fn a_request_dropped_while_reading_leaves_no_flight_behind() {
    let db = TestDb::create().await;
    half_rolled_up(&db).await;
    let client = db.client().await;
    let now = Utc::now();
    let range = Range::new(now - Duration::hours(8), now + Duration::minutes(5)).unwrap();
    let none = Filters::default();
    let by_country = Ranking {
        dimension: Dimension::Country,
        order: Metric::Events,
        limit: 10,
    };
    // Ever longer deadlines, each on an empty cache, until one request is dropped while it is
    // reading (a read counted, nothing kept); the flight must be gone with it.
    let mut dropped_while_reading = 0;
    for step in 0..400u64 {
        let cache = RolledCache::new(64 << 20);
        let answer = tokio::time::timeout(
            std::time::Duration::from_micros(100 * step),
            cache.breakdown(&client, 1, &range, Granularity::Hour, &none, by_country),
        )
        .await;
        assert_eq!(cache.in_flight(), 0, "step {step}");
        if answer.is_err() && cache.reads() == 1 {
            dropped_while_reading += 1;
        }
        if answer.is_ok() && dropped_while_reading > 0 {
            break;
        }
    }
    assert!(
        dropped_while_reading > 0,
        "no request was dropped while reading"
    );
    // The connection still answers after the dropped requests.
    let b = RolledCache::new(64 << 20)
        .breakdown(&client, 1, &range, Granularity::Hour, &none, by_country)
        .await
        .unwrap();
    assert!(!b.rows.is_empty());
}

#[tokio::test]
async fn kept_parts_with_probabilistic_sketches_answer_as_the_full_statement_does() {
    // Every event its own device and session: groups hold thousands of distinct values, so
    // the kept sketches and the fresh ones are past the explicit threshold (1,280) and the
    // handler merges registers, not sets.
    let db = TestDb::create().await;
    let mut rng = Rng(99);
    let mut unique = |n: usize, from: i64| {
        let mut bodies = shop_events(&mut rng, Utc::now(), n, 30);
        for (i, e) in bodies.iter_mut().enumerate() {
            e["tenant_id"] = json!(1);
            e["device_id"] = json!(from + i as i64);
            e["session_id"] = json!(from + i as i64);
        }
        bodies
    };
    let (kept_part, fresh) = (unique(8000, 0), unique(4000, 1_000_000));
    ingest(&db, "0", 0, &kept_part, 1000).await;
    rollup::run(&mut db.client().await).await.unwrap();
    ingest(&db, "1", 0, &fresh, 1000).await;
    let client = db.client().await;
    let kinds: Vec<i64> = client
        .query(
            "SELECT DISTINCT get_byte(hll_send(devices), 0) & 15 FROM rollup_slices_1hour
             WHERE tenant_id = 1 UNION
             SELECT get_byte(hll_send(hll_add_agg(hll_hash_bigint(device_id), 14, 5)), 0) & 15
             FROM events WHERE event_id > (SELECT last_event_id FROM rollup_state
                                           WHERE rollup = '1hour')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| i64::from(r.get::<_, i32>(0)))
        .collect();
    assert!(
        kinds.iter().any(|&k| k >= 3),
        "sketches past the explicit threshold: {kinds:?}"
    );
    let now = Utc::now();
    let range = Range::new(now - Duration::hours(8), now + Duration::minutes(5)).unwrap();
    let cache = RolledCache::new(64 << 20);
    let none = Filters::default();
    for _ in 0..2 {
        for g in [Granularity::Hour, Granularity::Day] {
            for d in [Dimension::Country, Dimension::Browser, Dimension::EventType] {
                let ranking = Ranking {
                    dimension: d,
                    order: Metric::UniqueDevices,
                    limit: 100,
                };
                let kept = cache
                    .breakdown(&client, 1, &range, g, &none, ranking)
                    .await
                    .unwrap();
                let full = reports::oracle::breakdown(&client, 1, &range, g, &none, ranking)
                    .await
                    .unwrap();
                assert_eq!(
                    serde_json::to_value(&kept.rows).unwrap(),
                    serde_json::to_value(&full.rows).unwrap(),
                    "{g:?}, {d:?}"
                );
            }
            let kept = cache.summary(&client, 1, &range, g, &none).await.unwrap();
            let full = reports::oracle::summary(&client, 1, &range, g, &none)
                .await
                .unwrap();
            assert_eq!(kept.current, full.current, "{g:?}");
            assert_eq!(kept.current.events, 12_000, "{g:?}");
            assert!(within_bound(kept.current.unique_devices, 12_000));
        }
    }
    assert!(cache.hits() > 0);
}
