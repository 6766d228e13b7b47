//! The staged rollup pass (migration V10): a window that fails or whose backend dies half way
//! leaves nothing applied and is applied once later; rollups advanced separately (different
//! watermarks) get a pass each and still count every event once; TopN counters merge as
//! "stored counter plus the window's exact counts, pruned to topn.number_of_counters".

use chrono::Utc;
use remarketable_core::rollup::{self, Rollup};
use remarketable_tests::*;
use serde_json::{json, Value};

/// Everything a window writes: per rollup table, its rows, events and revenue; the watermarks;
/// the staging tables' rows; the event id ranges kept.
async fn snapshot(db: &TestDb) -> Vec<Value> {
    let mut all = Vec::new();
    for table in [
        "rollup_events_5min",
        "rollup_events_1hour",
        "rollup_events_1day",
        "rollup_slices_5min",
        "rollup_slices_1hour",
        "rollup_slices_1day",
    ] {
        all.extend(
            db.json_rows(&format!(
                "SELECT '{table}' AS t, count(*) AS rows, coalesce(sum(event_count), 0) AS events,
                        coalesce(sum(revenue), 0)::text AS revenue,
                        md5(coalesce(string_agg(x, ',' ORDER BY x), '')) AS sketches
                 FROM (SELECT *, to_jsonb(r)::text AS x FROM {table} r) r"
            ))
            .await,
        );
    }
    all.extend(
        db.json_rows("SELECT rollup, last_event_id, last_rows FROM rollup_state ORDER BY position")
            .await,
    );
    all.extend(
        db.json_rows(
            "SELECT (SELECT count(*) FROM rollup_stage) AS stage,
                    (SELECT count(*) FROM rollup_stage_items) AS items,
                    (SELECT count(*) FROM event_id_ranges) AS ranges",
        )
        .await,
    );
    all
}

#[tokio::test]
async fn a_window_that_fails_or_dies_half_way_leaves_nothing_applied_and_is_applied_once_later() {
    let db = TestDb::create().await;
    set_time_zones(&db).await;
    let mut rng = Rng(21);
    ingest(
        &db,
        "0",
        0,
        &shop_events(&mut rng, Utc::now(), 600, 10),
        200,
    )
    .await;
    rollup::run(&mut db.client().await).await.unwrap();
    ingest(
        &db,
        "0",
        600,
        &shop_events(&mut rng, Utc::now(), 900, 10),
        300,
    )
    .await;
    let before = snapshot(&db).await;

    // The last table a pass writes is held by another transaction: the pass has staged the
    // window and written five tables when it gives up waiting.
    let mut holder = db.client().await;
    let hold = holder.transaction().await.unwrap();
    hold.batch_execute("LOCK TABLE rollup_slices_1day IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let mut runner = db.client().await;
    runner
        .batch_execute("SET lock_timeout = '500ms'")
        .await
        .unwrap();
    let failed = rollup::run(&mut runner).await.unwrap_err();
    assert_eq!(
        failed.code(),
        Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE),
        "{failed}"
    );
    assert_eq!(snapshot(&db).await, before, "a failed pass left something");

    // The same, but the rollup's backend is killed while it waits.
    let victim = db.client().await;
    let pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let mut victim = victim;
    let pass = tokio::spawn(async move { rollup::run(&mut victim).await.map(|_| ()) });
    let admin = db.client().await;
    let waiting = async {
        loop {
            let n: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
                    &[&pid],
                )
                .await
                .unwrap()
                .get(0);
            if n == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), waiting)
        .await
        .expect("the pass reached the held table");
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    assert!(
        pass.await.unwrap().is_err(),
        "the killed pass reported success"
    );
    assert_eq!(snapshot(&db).await, before, "a killed pass left something");
    hold.rollback().await.unwrap();

    // Released: the next run applies the window once, and a run after it finds nothing.
    let done = rollup::run(&mut db.client().await).await.unwrap();
    for a in &done {
        assert_eq!(a.window_end - a.window_start, 900, "{a}");
    }
    assert_rollups_equal_raw(&db).await;
    let again = rollup::run(&mut db.client().await).await.unwrap();
    assert!(again
        .iter()
        .all(|a| a.window_start == a.window_end && a.rows == 0));
    assert_rollups_equal_raw(&db).await;
    assert_eq!(db.count("SELECT count(*) FROM rollup_stage").await, 0);
}

#[tokio::test]
async fn rollups_advanced_apart_get_a_pass_each_and_count_every_event_once() {
    let db = TestDb::create().await;
    set_time_zones(&db).await;
    let mut rng = Rng(33);
    let mut client = db.client().await;
    ingest(
        &db,
        "0",
        0,
        &shop_events(&mut rng, Utc::now(), 400, 20),
        200,
    )
    .await;
    let day = rollup::advance(&mut client, Rollup::Day).await.unwrap();
    assert_eq!(
        (day.rollup, day.window_start, day.window_end),
        (Rollup::Day, 0, 400)
    );
    ingest(
        &db,
        "0",
        400,
        &shop_events(&mut rng, Utc::now(), 300, 20),
        100,
    )
    .await;
    let hour = rollup::advance(&mut client, Rollup::Hour).await.unwrap();
    assert_eq!((hour.window_start, hour.window_end), (0, 700));
    ingest(
        &db,
        "1",
        0,
        &shop_events(&mut rng, Utc::now(), 200, 20),
        100,
    )
    .await;

    // Three watermarks (0, 700, 400): one run advances each over its own window.
    let windows: Vec<(Rollup, i64, i64)> = rollup::run(&mut client)
        .await
        .unwrap()
        .iter()
        .map(|a| (a.rollup, a.window_start, a.window_end))
        .collect();
    assert_eq!(
        windows,
        vec![
            (Rollup::FiveMinutes, 0, 900),
            (Rollup::Hour, 700, 900),
            (Rollup::Day, 400, 900)
        ]
    );
    assert_rollups_equal_raw(&db).await;

    // Runs of all rollups and of single ones, concurrently with ingest: each event once.
    let late = shop_events(&mut rng, Utc::now(), 1200, 20);
    let writer = ingest(&db, "2", 0, &late, 100);
    let mixed = |first: usize| {
        let db = &db;
        async move {
            let mut client = db.client().await;
            for i in 0..12 {
                match (first + i) % 4 {
                    0 => drop(rollup::run(&mut client).await.unwrap()),
                    n => drop(
                        rollup::advance(&mut client, Rollup::ALL[n - 1])
                            .await
                            .unwrap(),
                    ),
                }
            }
        }
    };
    tokio::join!(writer, mixed(0), mixed(1), mixed(2));
    // The whole job: ranges are forgotten once attribution has passed them too.
    remarketable_core::jobs::rollup(&mut client).await.unwrap();
    assert_eq!(db.count("SELECT count(*) FROM events").await, 2100);
    assert_rollups_equal_raw(&db).await;
    assert_eq!(db.count("SELECT count(*) FROM event_id_ranges").await, 0);
}

/// Per tenant and hour, the top pages a totals slice must hold when counters keep `k` items:
/// the counter `stored` (a jsonb per tenant and hour; NULL for none) plus the exact counts of
/// the events above `after`, the most frequent `k` (ties by item).
fn expected_top_pages(stored: &str, after: i64, k: i64) -> String {
    format!(
        "WITH window_items AS (
             SELECT tenant_id, date_bin('1 hour', event_time, TIMESTAMPTZ 'epoch') AS bucket,
                    split_part(page_url, '?', 1) AS item, count(*) AS n
             FROM events WHERE event_id > {after} AND page_url IS NOT NULL GROUP BY 1, 2, 3),
         stored_items AS (
             SELECT s.tenant_id, s.bucket, c.key AS item, c.value::bigint AS n
             FROM ({stored}) s CROSS JOIN LATERAL jsonb_each_text(s.top_pages) c),
         summed AS (
             SELECT tenant_id, bucket, item, sum(n)::bigint AS n
             FROM (SELECT * FROM window_items UNION ALL SELECT * FROM stored_items) u
             GROUP BY 1, 2, 3),
         ranked AS (
             SELECT *, row_number() OVER (PARTITION BY tenant_id, bucket ORDER BY n DESC, item) AS r
             FROM summed)
         SELECT tenant_id, bucket::text, jsonb_object_agg(item, n) AS top_pages
         FROM ranked WHERE r <= {k} GROUP BY 1, 2 ORDER BY 1, 2"
    )
}

#[tokio::test]
async fn counters_are_the_stored_counter_plus_the_windows_exact_counts_pruned() {
    let db = TestDb::create().await;
    let mut rng = Rng(45);
    let mut client = db.client().await;
    // Five items per counter, so that most counters overflow and are pruned.
    client
        .batch_execute("SET topn.number_of_counters = 5")
        .await
        .unwrap();
    ingest(&db, "0", 0, &shop_events(&mut rng, Utc::now(), 800, 0), 400).await;
    rollup::run(&mut client).await.unwrap();
    let slices = "SELECT tenant_id, bucket::text, top_pages FROM rollup_slices_1hour
                  WHERE dimension = '' ORDER BY 1, 2";
    let first = db.json_rows(slices).await;
    let none =
        "SELECT NULL::bigint AS tenant_id, NULL::timestamptz AS bucket, NULL::jsonb AS top_pages";
    assert!(!first.is_empty());
    assert_eq!(first, db.json_rows(&expected_top_pages(none, 0, 5)).await);
    // Every counter holds five items, or all its hour's pages when it has fewer (an hour that
    // has just begun as the test runs); most hold five, so pruning is exercised.
    let distinct = db
        .json_rows(
            "SELECT tenant_id, date_bin('1 hour', event_time, TIMESTAMPTZ 'epoch')::text AS bucket,
                    least(count(DISTINCT split_part(page_url, '?', 1)), 5) AS n
             FROM events GROUP BY 1, 2 ORDER BY 1, 2",
        )
        .await;
    let held: Vec<Value> = first
        .iter()
        .map(|r| {
            json!({"tenant_id": r["tenant_id"], "bucket": r["bucket"],
                   "n": r["top_pages"].as_object().map_or(0, |o| o.len())})
        })
        .collect();
    assert_eq!(held, distinct);
    assert!(held.iter().filter(|r| r["n"] == 5).count() * 2 > held.len());

    // The next window merges into the stored (pruned) counters.
    let after = db
        .count("SELECT last_event_id FROM rollup_state WHERE rollup = '1hour'")
        .await;
    ingest(
        &db,
        "0",
        800,
        &shop_events(&mut rng, Utc::now(), 700, 0),
        350,
    )
    .await;
    rollup::run(&mut client).await.unwrap();
    let stored = format!(
        "SELECT (v->>'tenant_id')::bigint AS tenant_id, (v->>'bucket')::timestamptz AS bucket,
                v->'top_pages' AS top_pages
         FROM jsonb_array_elements('{}'::jsonb) v",
        Value::Array(first).to_string().replace('\'', "''")
    );
    let expected_now = db.json_rows(&expected_top_pages(&stored, after, 5)).await;
    assert_eq!(db.json_rows(slices).await, expected_now);
    assert_rollups_equal_raw(&db).await;
}
