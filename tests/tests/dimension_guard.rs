//! The dimension cardinality guard (migration V28) against a real PostgreSQL: past a tenant's
//! limit of distinct values per local day, new browser, campaign and event-type values are
//! rolled up as `(other)`, counted, and reported; raw events keep their values, totals stay
//! equal to the raw events, conversions are never folded, and a report answers the same
//! before and after the rollup takes its fresh events in.

use chrono::{Duration, DurationRound, Utc};
use remarketable_core::reports::{
    self, Dimension, Filters, Granularity, Metric, Range, Ranking, RolledCache,
};
use remarketable_core::rollup;
use remarketable_tests::*;
use serde_json::{json, Value};

/// `n` events of tenant 1 at `at` plus i seconds, each with the browser, campaign (none when
/// empty) and event type `pick` gives its index.
fn events(
    at: chrono::DateTime<Utc>,
    n: usize,
    pick: impl Fn(usize) -> (String, String, &'static str),
) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let (browser, campaign, event_type) = pick(i);
            let mut e = json!({
                "tenant_id": 1,
                "event_type": event_type,
                "event_time": (at + Duration::seconds(i as i64)).to_rfc3339(),
                "device_id": i % 50,
                "session_id": i % 80,
                "browser": browser,
            });
            if !campaign.is_empty() {
                e["campaign"] = json!(campaign);
            }
            if event_type == "purchase" {
                e["revenue"] = json!("2.50");
            }
            e
        })
        .collect()
}

/// Browser `b{k}` for k = 0..10 with 10 - k events each (55 events), so the window admits the
/// most frequent first; campaigns `c0`..`c4` round robin; event types mostly page views.
fn first_day(i: usize) -> (String, String, &'static str) {
    let mut k = 0;
    let mut left = i;
    while left >= 10 - k {
        left -= 10 - k;
        k += 1;
    }
    let event_type = match i % 11 {
        0 => "purchase",
        1 => "signup",
        2 | 3 => "add_to_cart",
        4 => "wishlist_add",
        5 => "share",
        _ => "page_view",
    };
    (format!("b{k}"), format!("c{}", i % 5), event_type)
}

async fn browser_breakdown(
    cache: &RolledCache,
    client: &tokio_postgres::Client,
    range: &Range,
    filters: &Filters,
) -> Value {
    let ranking = Ranking {
        dimension: Dimension::Browser,
        order: Metric::Events,
        limit: 100,
    };
    let kept = cache
        .breakdown(client, 1, range, Granularity::Hour, filters, ranking)
        .await
        .unwrap();
    let full = reports::oracle::breakdown(client, 1, range, Granularity::Hour, filters, ranking)
        .await
        .unwrap();
    let kept = serde_json::to_value(&kept.rows).unwrap();
    assert_eq!(kept, serde_json::to_value(&full.rows).unwrap());
    kept
}

/// (value, events) of a breakdown's rows.
fn values(rows: &Value) -> Vec<(String, i64)> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["value"].as_str().unwrap().to_owned(),
                r["events"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn past_the_daily_limit_new_values_roll_up_as_other_and_totals_stay_exact() {
    let db = TestDb::create().await;
    let mut client = db.client().await;
    assert!(rollup::set_dimension_limit(&client, "browser", 3)
        .await
        .unwrap());
    assert!(rollup::set_dimension_limit(&client, "campaign", 2)
        .await
        .unwrap());
    assert!(rollup::set_dimension_limit(&client, "event_type", 2)
        .await
        .unwrap());
    assert!(!rollup::set_dimension_limit(&client, "country", 2)
        .await
        .unwrap());
    // Kathmandu (UTC+05:45): local days are not UTC days.
    client
        .batch_execute(
            "UPDATE tenants SET conversion_event_types = ARRAY['purchase', 'signup'],
                                time_zone = 'Asia/Kathmandu'
             WHERE tenant_id = 1",
        )
        .await
        .unwrap();

    // Yesterday noon UTC (17:45 in Kathmandu): one local day for tenant 1, of the same date,
    // whatever the time of the run.
    let day = Utc::now().duration_trunc(Duration::days(1)).unwrap() - Duration::days(1);
    let noon = day + Duration::hours(12);
    let first = events(noon, 55, first_day);
    ingest(&db, "0", 0, &first, 20).await;
    rollup::run(&mut client).await.unwrap();
    assert_rollups_equal_raw(&db).await;

    let kept_values = |dimension: &'static str| {
        let db = &db;
        async move {
            db.json_rows(&format!(
                "SELECT DISTINCT {dimension} AS v FROM rollup_events_1day
                 WHERE tenant_id = 1 ORDER BY 1"
            ))
            .await
            .into_iter()
            .map(|r| r["v"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
        }
    };
    // b0, b1, b2 have the most events: admitted; b3..b9 (7 + 6 + ... + 1 = 28 events) folded.
    assert_eq!(kept_values("browser").await, ["(other)", "b0", "b1", "b2"]);
    // c0..c4 have 11 events each: the first two by value are admitted.
    assert_eq!(kept_values("campaign").await, ["(other)", "c0", "c1"]);
    // page_view and add_to_cart are the most frequent non-conversions; purchase and the
    // tenant's signup conversion are never folded.
    assert_eq!(
        kept_values("event_type").await,
        ["(other)", "add_to_cart", "page_view", "purchase", "signup"]
    );
    // Raw events keep their values.
    assert_eq!(
        db.count("SELECT count(DISTINCT browser) FROM events").await,
        10
    );
    let days = db
        .json_rows(
            "SELECT dimension, admitted, folded_events FROM dimension_days
             WHERE tenant_id = 1 ORDER BY dimension",
        )
        .await;
    assert_eq!(
        days,
        [
            json!({"dimension": "browser", "admitted": 3, "folded_events": 28}),
            json!({"dimension": "campaign", "admitted": 2, "folded_events": 33}),
            json!({"dimension": "event_type", "admitted": 2, "folded_events": 10}),
        ]
    );

    // A report answers the rollups' values; the fresh part (not rolled up yet) maps its
    // values as the rollup will: an admitted one stays, a folded or new one is `(other)`.
    let cache = RolledCache::new(16 << 20);
    let range = Range::new(day, day + Duration::days(1)).unwrap();
    let none = Filters::default();
    assert_eq!(
        values(&browser_breakdown(&cache, &client, &range, &none).await),
        [
            ("(other)".to_owned(), 28),
            ("b0".to_owned(), 10),
            ("b1".to_owned(), 9),
            ("b2".to_owned(), 8)
        ]
    );
    let later = events(noon + Duration::minutes(5), 9, |i| {
        let browser = ["b1", "b9", "b10"][i % 3];
        (browser.to_owned(), "c0".to_owned(), "page_view")
    });
    ingest(&db, "0", 55, &later, 9).await;
    let fresh = browser_breakdown(&cache, &client, &range, &none).await;
    assert_eq!(
        values(&fresh),
        [
            ("(other)".to_owned(), 34),
            ("b1".to_owned(), 12),
            ("b0".to_owned(), 10),
            ("b2".to_owned(), 8)
        ]
    );
    let mut other = Filters::default();
    other.set(Dimension::Browser, "(other)").unwrap();
    let mut folded = Filters::default();
    folded.set(Dimension::Browser, "b9").unwrap();
    let fresh_other = browser_breakdown(&cache, &client, &range, &other).await;
    assert_eq!(values(&fresh_other), [("(other)".to_owned(), 34)]);
    assert!(browser_breakdown(&cache, &client, &range, &folded)
        .await
        .as_array()
        .unwrap()
        .is_empty());
    rollup::run(&mut client).await.unwrap();
    assert_rollups_equal_raw(&db).await;
    assert_eq!(
        browser_breakdown(&cache, &client, &range, &none).await,
        fresh,
        "the rollup changed what the report answered"
    );
    assert_eq!(
        browser_breakdown(&cache, &client, &range, &other).await,
        fresh_other
    );
    let summary = cache
        .summary(&client, 1, &range, Granularity::Hour, &none)
        .await
        .unwrap();
    assert_eq!(summary.current.events, 64);

    // The tenant's ingest report shows the day's guard.
    let report = reports::ingest(
        &client,
        1,
        &Range::new(day, day + Duration::days(1)).unwrap(),
        10,
        settings_for("postgres://h/db").collect_limits,
    )
    .await
    .unwrap();
    let browser = report
        .rollup_dimensions
        .iter()
        .find(|d| d.dimension == "browser")
        .unwrap();
    assert_eq!(
        (
            browser.day,
            browser.values,
            browser.max_values_per_day,
            browser.folded_events
        ),
        (day.date_naive(), 3, 3, 34)
    );

    // A flood of unique values another day: the rollup rows stay bounded by the limits.
    let flood_day = day - Duration::days(1) + Duration::hours(12);
    let flood = events(flood_day, 2_000, |i| {
        (format!("flood-{i}"), format!("spam-{i}"), "page_view")
    });
    ingest(&db, "1", 0, &flood, 500).await;
    let advances = rollup::run(&mut client).await.unwrap();
    assert_rollups_equal_raw(&db).await;
    let rows: i64 = advances.iter().map(|a| a.rows).sum();
    // 2,000 events over 34 minutes: at most 7 five-minute buckets, 2 hours and a day, each with
    // at most (3 + 1) browsers x (2 + 1) campaigns rows and 1 + 1 + 1 + 4 + 3 slices.
    assert!(
        rows <= 10 * (12 + 10),
        "{rows} rollup rows for 2,000 events"
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(DISTINCT browser) FROM rollup_events_1day
             WHERE tenant_id = 1 AND day = '{}'",
            flood_day.date_naive()
        ))
        .await,
        4
    );
}

/// With a limit of 0 every value is folded, also in a report's fresh part before any window
/// has met the day; a value sent as `(other)` takes no slot and is not counted as folded.
#[tokio::test]
async fn a_limit_of_zero_folds_fresh_events_before_any_window() {
    let db = TestDb::create().await;
    let mut client = db.client().await;
    assert!(rollup::set_dimension_limit(&client, "browser", 0)
        .await
        .unwrap());
    let day = Utc::now().duration_trunc(Duration::days(1)).unwrap() - Duration::days(1);
    let bodies = events(day + Duration::hours(12), 6, |i| {
        let browser = ["Firefox", "Chrome", "(other)"][i % 3];
        (browser.to_owned(), String::new(), "page_view")
    });
    ingest(&db, "0", 0, &bodies, 6).await;
    let cache = RolledCache::new(16 << 20);
    let range = Range::new(day, day + Duration::days(1)).unwrap();
    let none = Filters::default();
    let before = browser_breakdown(&cache, &client, &range, &none).await;
    assert_eq!(values(&before), [("(other)".to_owned(), 6)]);
    rollup::run(&mut client).await.unwrap();
    assert_rollups_equal_raw(&db).await;
    assert_eq!(
        browser_breakdown(&cache, &client, &range, &none).await,
        before
    );
    assert_eq!(
        db.json_rows(
            "SELECT dimension, admitted, folded_events FROM dimension_days \
             WHERE dimension = 'browser'"
        )
        .await,
        [json!({"dimension": "browser", "admitted": 0, "folded_events": 4})]
    );
}
