//! `remarketable import` against a real PostgreSQL: files through the ingest path (every valid
//! row stored once with every field, malformed rows dead-lettered with their reasons, the ledger
//! adding up), an import SIGKILLed three times and rerun storing each event once, and history
//! older than the live retention: partitions created for it, kept by maintenance until rolled
//! up, rolled up in bounded windows, exactly.

use chrono::{DateTime, Duration, DurationRound, Utc};
use remarketable_core::event::{hash_id, EventLimits};
use remarketable_core::import::{self, ColumnMap, ImportOptions, ImportSummary};
use remarketable_core::rollup;
use remarketable_core::{jobs, Ingestor, Reason};
use remarketable_tests::*;
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// The limits an import uses: the test settings' limits reaching ten years back.
fn import_limits() -> EventLimits {
    let mut limits = settings_for("postgres://unused/db").limits;
    limits.retention = Duration::days(3660);
    limits
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rmk-import-{name}-{}-{}",
        std::process::id(),
        Utc::now().timestamp_micros()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_file(path: &Path, text: &str) {
    let file = std::fs::File::create(path).unwrap();
    if path.extension().is_some_and(|e| e == "gz") {
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        gz.finish().unwrap();
    } else {
        let mut file = file;
        file.write_all(text.as_bytes()).unwrap();
    }
}

async fn import(
    db: &TestDb,
    path: &Path,
    options: &ImportOptions,
) -> Result<ImportSummary, import::ImportError> {
    let limits = import_limits();
    let ingestor = Ingestor::new(limits.clone(), std::time::Duration::from_secs(30));
    let mut client = db.client().await;
    import::import_file(&mut client, &ingestor, path, options, &limits, |_| {}).await
}

fn at(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[tokio::test]
async fn csv_and_ndjson_files_store_every_valid_row_once_with_every_field() {
    let db = TestDb::create().await;
    let dir = temp_dir("formats");
    let old = (Utc::now() - Duration::days(45))
        .duration_trunc(Duration::seconds(1))
        .unwrap();

    // CSV, gzipped, with its own column names mapped to the contract and a column left out.
    let csv = format!(
        "shop,kind,visitor,visit,when,country,browser,page_url,referrer,campaign,source,medium,revenue,currency,properties,order_id,internal\n\
         1,purchase,dev-9,77,{t},fr,Firefox,https://shop.example/checkout?step=3,https://mail.example/,black-friday,newsletter,email,129.95,EUR,\"{{\"\"sku\"\":\"\"A-1\"\",\"\"qty\"\":2}}\",o-1001,secret\n\
         2,page_view,5,6,{t},,,,,,,,,,,,\n\
         99,page_view,5,6,{t},,,,,,,,,,,,\n\
         1,page_view,5,6,{t},XX,,,,,,,,,,,\n\
         1,Page View,5,6,{t},,,,,,,,,,,,\n\
         1,page_view,,6,{t},,,,,,,,,,,,\n\
         1,page_view,5,6,yesterday,,,,,,,,,,,,\n\
         1,page_view,5,6,{t},,,,,,,,,,not json,,\n\
         1,page_view,5,6,{t},,,,,,,,,,,,,extra\n\
         3,page_view,\"quoted, with comma\",6,{t},de,,,,,,,,,,,\n",
        t = at(old)
    );
    let csv_path = dir.join("history.csv.gz");
    write_file(&csv_path, &csv);
    let options = ImportOptions {
        columns: ColumnMap::parse(&[
            "shop=tenant_id",
            "kind=event_type",
            "visitor=device_id",
            "visit=session_id",
            "when=event_time",
            "internal=",
        ])
        .unwrap(),
        chunk_events: 4,
    };
    let summary = import(&db, &csv_path, &options).await.unwrap();
    assert_eq!(summary.progress.stored, 3, "{summary:?}");
    assert_eq!(summary.progress.dead_lettered, 7, "{summary:?}");
    assert_eq!(summary.progress.chunks, 3);
    assert!(summary.progress.partitions_created >= 1, "{summary:?}");
    let reasons: Vec<(Reason, u64)> = summary.dead_letters.clone().into_iter().collect();
    assert_eq!(
        reasons,
        vec![
            (Reason::UnknownTenant, 1),
            (Reason::NotAnObject, 1),
            (Reason::MissingDeviceId, 1),
            (Reason::BadEventType, 1),
            (Reason::BadEventTime, 1),
            (Reason::BadCountry, 1),
            (Reason::BadProperties, 1),
        ]
        .into_iter()
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect::<Vec<_>>()
    );

    // Every field of the full row, as ingest stores it.
    let stored = db
        .json_rows(&format!(
            "SELECT tenant_id, event_time, event_type, device_id, session_id, country, browser, \
             page_url, referrer, campaign, source, medium, revenue::text, currency, properties, \
             stream_partition FROM events WHERE device_id = {}",
            hash_id("dev-9")
        ))
        .await;
    assert_eq!(stored.len(), 1);
    let row = &stored[0];
    assert_eq!(row["tenant_id"], 1);
    assert_eq!(
        row["event_time"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        old
    );
    assert_eq!(row["event_type"], "purchase");
    assert_eq!(row["session_id"], 77);
    assert_eq!(row["country"], "FR");
    assert_eq!(row["browser"], "Firefox");
    assert_eq!(row["page_url"], "https://shop.example/checkout?step=3");
    assert_eq!(row["referrer"], "https://mail.example/");
    assert_eq!(row["campaign"], "black-friday");
    assert_eq!(row["source"], "newsletter");
    assert_eq!(row["medium"], "email");
    assert_eq!(row["revenue"], "129.9500");
    assert_eq!(row["currency"], "EUR");
    assert_eq!(
        row["properties"],
        json!({"sku": "A-1", "qty": 2, "order_id": "o-1001"})
    );
    assert_eq!(row["stream_partition"], import::PARTITION);
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM events WHERE device_id = {}",
            hash_id("quoted, with comma")
        ))
        .await,
        1
    );

    // NDJSON: blank lines are no events, a broken line is a dead letter.
    let recent = Utc::now() - Duration::hours(1);
    let mut lines = String::new();
    for n in 0..50 {
        let mut e = event(1 + n % 3, n);
        e["event_time"] = json!(at(recent - Duration::minutes(n)));
        lines.push_str(&e.to_string());
        lines.push('\n');
        if n == 10 {
            lines.push_str("\n   \n{\"tenant_id\": 1,\n");
        }
    }
    let nd_path = dir.join("events.ndjson");
    write_file(&nd_path, &lines);
    let summary = import(&db, &nd_path, &ImportOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (summary.progress.stored, summary.progress.dead_lettered),
        (50, 1)
    );
    assert_eq!(
        summary.dead_letters.into_iter().collect::<Vec<_>>(),
        vec![(Reason::InvalidJson, 1)]
    );

    // Run again: nothing new, every record skipped as already imported.
    for (path, opts) in [(&csv_path, &options), (&nd_path, &ImportOptions::default())] {
        let again = import(&db, path, opts).await.unwrap();
        assert_eq!(
            (again.progress.stored, again.progress.dead_lettered),
            (0, 0)
        );
        assert!(again.duplicates > 0);
    }
    assert_eq!(db.count("SELECT count(*) FROM events").await, 53);
    assert_eq!(db.count("SELECT count(*) FROM dead_letters").await, 8);
    // The ledger adds up: received = stored + duplicates + dead-lettered, and matches the tables.
    let (received, stored, duplicates, dead) = ledger_totals(&db).await;
    assert_eq!((received, stored, duplicates, dead), (61, 53, 0, 8));
    std::fs::remove_dir_all(dir).ok();
}

/// The `remarketable` binary of this build (built here if needed).
fn cli_binary() -> PathBuf {
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
        .args([
            "build",
            "-q",
            "-p",
            "remarketable-cli",
            "--bin",
            "remarketable",
        ])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo build of the CLI failed");
    // target/<profile>/deps/<this test> -> target/<profile>/remarketable
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("remarketable")
}

#[tokio::test]
async fn an_import_killed_three_times_and_rerun_stores_each_event_once() {
    let db = TestDb::create().await;
    let dir = temp_dir("kill");
    let path = dir.join("history.ndjson.gz");
    let start = Utc::now() - Duration::days(20);
    let total = 40_000i64;
    let mut text = String::new();
    for n in 0..total {
        let mut e = event(1 + n % 3, n);
        e["event_time"] = json!(at(start + Duration::seconds(n * 30)));
        e["n"] = json!(n);
        text.push_str(&e.to_string());
        text.push('\n');
    }
    write_file(&path, &text);
    let binary = cli_binary();
    let run = || {
        std::process::Command::new(&binary)
            .args(["import", "--chunk-events", "1000"])
            .arg(&path)
            .env("DATABASE_URL", db.url())
            .env("EVENT_RETENTION_DAYS", RETENTION_DAYS.to_string())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the CLI starts")
    };
    let mut kills = Vec::new();
    // Killed after its 3rd, 5th and 7th chunk (of the rest): each run does some work first.
    for after_chunks in [3, 5, 7] {
        let mut child = run();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        for line in stderr.lines() {
            let line = line.unwrap();
            if line.contains(&format!(": chunk {after_chunks},")) {
                break;
            }
        }
        // SIGKILL: no chance to finish a transaction or clean up.
        child.kill().unwrap();
        child.wait().unwrap();
        kills.push(db.count("SELECT count(*) FROM events").await);
    }
    assert!(
        kills.windows(2).all(|w| w[0] < w[1]) && kills[2] < total,
        "each killed run stored more, none finished: {kills:?}"
    );
    let out = std::process::Command::new(&binary)
        .args(["import", "--chunk-events", "1000"])
        .arg(&path)
        .env("DATABASE_URL", db.url())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("skipped as already imported"), "{report}");
    let row = db
        .client()
        .await
        .query_one(
            "SELECT count(*), count(DISTINCT (properties->>'n')::bigint), \
             min((properties->>'n')::bigint), max((properties->>'n')::bigint) FROM events",
            &[],
        )
        .await
        .unwrap();
    let (count, distinct, lo, hi): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(
        (count, distinct, lo, hi),
        (total, total, 0, total - 1),
        "{kills:?}"
    );
    let (received, stored, duplicates, dead) = ledger_totals(&db).await;
    assert_eq!((received, stored, duplicates, dead), (total, total, 0, 0));
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn imported_history_is_kept_until_rolled_up_in_bounded_windows_and_counted_exactly() {
    let db = TestDb::create().await;
    set_time_zones(&db).await;
    let dir = temp_dir("history");
    let path = dir.join("old.ndjson");
    // Two days of history 60 days back: far beyond the test databases' 3-day raw retention,
    // within the 5-minute rollup's 90 days.
    let start = (Utc::now() - Duration::days(60))
        .duration_trunc(Duration::hours(1))
        .unwrap();
    let mut rng = Rng(7);
    let total = 6_000;
    let mut text = String::new();
    for n in 0..total {
        let mut e = event(1 + (rng.below(3) as i64), n);
        e["event_time"] = json!(at(start + Duration::seconds(rng.below(2 * 86_400) as i64)));
        if n % 5 == 0 {
            e["event_type"] = json!("purchase");
            e["revenue"] = json!(format!("{}.25", n % 40));
        }
        e["country"] = json!(["DE", "FR", "US"][n as usize % 3]);
        text.push_str(&e.to_string());
        text.push('\n');
    }
    write_file(&path, &text);
    let partitions_before = db
        .count("SELECT count(*) FROM partition_bounds('events')")
        .await;
    let summary = import(
        &db,
        &path,
        &ImportOptions {
            chunk_events: 500,
            ..ImportOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(summary.progress.stored, total as u64);
    // Hourly partitions (the test layout): two days of history, maybe one more at an edge.
    let created = summary.progress.partitions_created as i64;
    assert!((48..=49).contains(&created), "{created} partitions created");
    assert_eq!(
        db.count("SELECT count(*) FROM partition_bounds('events')")
            .await,
        partitions_before + created
    );

    // Maintenance before the rollups: the imported partitions are past the retention, but
    // their events are not rolled up yet, so nothing is dropped.
    let client = db.client().await;
    let run = jobs::maintenance(&client).await.unwrap();
    assert!(
        run.dropped().is_empty(),
        "dropped before rolled up: {:?}",
        run.dropped()
    );
    assert_eq!(db.count("SELECT count(*) FROM events").await, total);

    // Bounded windows: at most 1,000 ids each, run after run until caught up.
    let mut client = db.client().await;
    rollup::set_max_window(&client, 1_000).await.unwrap();
    let one = rollup::run(&mut client).await.unwrap();
    assert!(
        one.iter().all(|a| a.window_end - a.window_start == 1_000),
        "{one:?}"
    );
    let advances = jobs::rollup(&mut client).await.unwrap().advances;
    assert!(advances
        .iter()
        .all(|a| a.window_end - a.window_start <= 1_000));
    assert!(advances.len() >= 3 * 5, "{} windows", advances.len());
    let last_id = db.count("SELECT max(event_id) FROM events").await;
    for s in rollup::states(&client).await.unwrap() {
        assert!(
            s.last_event_id >= last_id,
            "{} stopped at {}",
            s.rollup,
            s.last_event_id
        );
    }
    // Every imported event in every rollup, exactly (the raw events are all still there).
    assert_rollups_equal_raw(&db).await;
    let per_day = "SELECT coalesce(sum(event_count), 0)::bigint FROM rollup_events_1day";
    assert_eq!(db.count(per_day).await, total);
    let raw_days: Vec<Value> = db
        .json_rows(
            "SELECT e.tenant_id, (e.event_time AT TIME ZONE t.time_zone)::date AS day, \
             count(*) AS n, coalesce(sum(e.revenue), 0) AS revenue FROM events e \
             JOIN tenants t USING (tenant_id) GROUP BY 1, 2 ORDER BY 1, 2",
        )
        .await;

    // Rolled up: now maintenance drops the expired imported partitions, and the daily rollup
    // (kept for ever) still counts every imported event, as the raw events said.
    let run = jobs::maintenance(&client).await.unwrap();
    assert_eq!(run.dropped().len() as i64, created, "{:?}", run.dropped());
    assert_eq!(db.count("SELECT count(*) FROM events").await, 0);
    assert_eq!(db.count(per_day).await, total);
    let rolled_days: Vec<Value> = db
        .json_rows(
            "SELECT tenant_id, day, sum(event_count) AS n, sum(revenue) AS revenue \
             FROM rollup_events_1day GROUP BY 1, 2 ORDER BY 1, 2",
        )
        .await;
    assert_eq!(rolled_days, raw_days);
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn maintenance_drops_no_partition_while_an_import_runs() {
    let db = TestDb::create().await;
    let client = db.client().await;
    // An expired, empty partition, as an import creates before writing into it.
    let old = Utc::now() - Duration::days(30);
    let made = remarketable_core::db::create_partitions_for(&client, &[old])
        .await
        .unwrap();
    assert_eq!(made.len(), 1);
    let importer = db.client().await;
    importer
        .batch_execute("SELECT pg_advisory_lock_shared(hashtext('import:events'))")
        .await
        .unwrap();
    assert!(jobs::maintenance(&client)
        .await
        .unwrap()
        .dropped()
        .is_empty());
    drop(importer);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let run = jobs::maintenance(&client).await.unwrap();
    assert_eq!(
        run.dropped()
            .iter()
            .map(|c| c.partition.clone())
            .collect::<Vec<_>>(),
        made.iter().map(|c| c.partition.clone()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_query_is_imported_by_key_range_and_a_killed_run_continues_after_its_last_key() {
    let db = TestDb::create().await;
    let client = db.client().await;
    // The customer's table: its own names, NULLs, some rows the contract refuses, ids with gaps.
    client
        .batch_execute(
            "CREATE TABLE legacy_clicks (id bigint PRIMARY KEY, shop int, kind text,
                 visitor text, visit bigint, ts timestamptz, country text, revenue numeric);
             INSERT INTO legacy_clicks
             SELECT g * 3, CASE WHEN g % 97 = 0 THEN 99 ELSE 1 + g % 3 END,
                    CASE WHEN g % 89 = 0 THEN 'Not A Type' WHEN g % 10 = 0 THEN 'purchase'
                         ELSE 'page_view' END,
                    'visitor-' || (g % 300), g / 4,
                    now() - interval '100 days' + g * interval '1 minute',
                    CASE WHEN g % 2 = 0 THEN 'de' END,
                    CASE WHEN g % 10 = 0 THEN g % 50 + 0.5 END
             FROM generate_series(0, 11999) g;",
        )
        .await
        .unwrap();
    let query = "SELECT id, shop AS tenant_id, kind AS event_type, visitor AS device_id, \
                 visit AS session_id, ts AS event_time, country, revenue FROM legacy_clicks";
    let binary = cli_binary();
    let command = || {
        let mut c = std::process::Command::new(&binary);
        c.args(["import", "--chunk-events", "1000", "--from-postgres"])
            .arg(db.url())
            .args(["--query", query, "--key", "id"])
            .env("DATABASE_URL", db.url());
        c
    };
    let mut child = command()
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines() {
        if line.unwrap().contains(": chunk 4,") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let after_kill = db.count("SELECT count(*) FROM events").await;
    let out = command().output().unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("continued after position"), "{report}");

    // Each valid row once, every field as the query named it.
    let expected = db
        .count("SELECT count(*) FROM legacy_clicks WHERE shop <> 99 AND kind <> 'Not A Type'")
        .await;
    // At least the 4 chunks it reported (less their dead letters), not all of it.
    assert!(after_kill >= 3_800 && after_kill < expected, "{after_kill}");
    let differing = db
        .count(
            "SELECT count(*) FROM legacy_clicks l
             FULL JOIN events e ON e.stream_sequence = l.id
             WHERE (l.shop <> 99 AND l.kind <> 'Not A Type') AND (e.event_id IS NULL
                OR e.tenant_id <> l.shop OR e.event_type <> l.kind OR e.session_id <> l.visit
                OR e.event_time <> l.ts OR e.country IS DISTINCT FROM upper(l.country)
                OR e.revenue IS DISTINCT FROM l.revenue OR e.properties <> jsonb_build_object('id', l.id))
                OR (e.event_id IS NOT NULL AND l.id IS NULL)",
        )
        .await;
    assert_eq!(differing, 0);
    assert_eq!(db.count("SELECT count(*) FROM events").await, expected);
    let dead: Vec<Value> = db
        .json_rows("SELECT reason, count(*) AS n FROM dead_letters GROUP BY 1 ORDER BY 1")
        .await;
    let refused_types = db
        .count("SELECT count(*) FROM legacy_clicks WHERE kind = 'Not A Type'")
        .await;
    // Validation comes first: a row that is both is refused for its type.
    let unknown = db
        .count("SELECT count(*) FROM legacy_clicks WHERE shop = 99 AND kind <> 'Not A Type'")
        .await;
    assert_eq!(
        dead,
        vec![
            json!({"reason": "bad_event_type", "n": refused_types}),
            json!({"reason": "unknown_tenant", "n": unknown}),
        ]
    );
    let device = hash_id("visitor-7");
    assert!(
        db.count(&format!(
            "SELECT count(*) FROM events WHERE device_id = {device}"
        ))
        .await
            > 0
    );
    let (received, stored, duplicates, dead_lettered) = ledger_totals(&db).await;
    assert_eq!(
        (received, stored, duplicates, dead_lettered),
        (12_000, expected, 0, 12_000 - expected)
    );
}

/// The cut-over rule (README, Moving in, Cut-over): the same `--from-postgres` command, its
/// query bounded to rows settled for a margin, run while the old system still takes writes and
/// again once producers write to the stream and the margin has passed, imports every row of
/// the old table once; the stream brings everything after the switch once; nothing is counted
/// twice. (The margin is a clock table here, so the test need not wait ten minutes.)
#[tokio::test]
async fn a_cut_over_counts_the_old_table_and_the_stream_once_each() {
    let db = TestDb::create().await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE shop_events (id bigserial PRIMARY KEY, shop int, kind text,
                 visitor text, visit bigint, ts timestamptz, created_at timestamptz, url text);
             CREATE TABLE cutover_clock (settled_before timestamptz);
             INSERT INTO cutover_clock VALUES (now() - interval '10 minutes');
             INSERT INTO shop_events (shop, kind, visitor, visit, ts, created_at, url)
             SELECT 1 + g % 3, 'page_view', 'v' || g % 50, g / 5,
                    now() - interval '20 days' + g * interval '5 minutes',
                    now() - (2000 - g) * interval '1 second', 'https://old.example/' || g
             FROM generate_series(0, 1999) g;",
        )
        .await
        .unwrap();
    let query = "SELECT id, shop AS tenant_id, kind AS event_type, visitor AS device_id, \
                 visit AS session_id, ts AS event_time, url AS page_url FROM shop_events \
                 WHERE created_at < (SELECT settled_before FROM cutover_clock)";
    let binary = cli_binary();
    let import = || {
        let out = std::process::Command::new(&binary)
            .args(["import", "--chunk-events", "250", "--from-postgres"])
            .arg(db.url())
            .args(["--query", query, "--key", "id"])
            .env("DATABASE_URL", db.url())
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{report}");
        report
    };
    let old_rows = "SELECT count(*) FROM events WHERE page_url LIKE 'https://old.example/%'";
    // Before the switch: the settled part of the old table, while it still takes writes.
    import();
    let settled = db
        .count(
            "SELECT count(*) FROM shop_events \
             WHERE created_at < (SELECT settled_before FROM cutover_clock)",
        )
        .await;
    assert!(settled > 1000 && settled < 2000, "{settled}");
    assert_eq!(db.count(old_rows).await, settled);
    client
        .batch_execute(
            "INSERT INTO shop_events (shop, kind, visitor, visit, ts, created_at, url)
             SELECT 1 + g % 3, 'page_view', 'v' || g % 50, g / 5, now() - interval '1 minute',
                    now(), 'https://old.example/' || g
             FROM generate_series(2000, 2499) g;",
        )
        .await
        .unwrap();

    // The switch: producers send to the stream from now on.
    let stream: Vec<Value> = (0..700)
        .map(|n| {
            let mut e = event(1 + n % 3, n);
            e["page_url"] = json!(format!("https://new.example/{n}"));
            e
        })
        .collect();
    ingest(&db, "0", 0, &stream, 100).await;

    // The margin has passed: every row of the old table is settled; the same command again.
    client
        .batch_execute("UPDATE cutover_clock SET settled_before = now() + interval '1 second'")
        .await
        .unwrap();
    let report = import();
    assert!(report.contains("continued after position"), "{report}");
    assert_eq!(db.count(old_rows).await, 2500, "every old row once");
    assert_eq!(
        db.count("SELECT count(DISTINCT page_url) FROM events")
            .await,
        db.count("SELECT count(*) FROM events").await,
        "nothing twice"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM events WHERE page_url LIKE 'https://new.example/%'")
            .await,
        700
    );
    // A third run finds nothing new.
    import();
    assert_eq!(db.count("SELECT count(*) FROM events").await, 3200);
    let (received, stored, duplicates, dead) = ledger_totals(&db).await;
    assert_eq!((received, stored, duplicates, dead), (3200, 3200, 0, 0));
}

/// The database goes away under a running import (a proxy in front of it refuses and cuts
/// every connection, as a stopped server does), and the importer is SIGKILLed while it is
/// gone; the next run loses its connection exactly as it sends a chunk's COMMIT (the chunk may
/// or may not have committed); a third run completes the file: every event stored once.
/// Multi-threaded: the test blocks on the importer's output while the proxy forwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_that_loses_its_database_and_is_killed_is_completed_once() {
    let db = TestDb::create().await;
    let dir = temp_dir("outage");
    let path = dir.join("history.ndjson");
    let start = Utc::now() - Duration::days(10);
    let total = 20_000i64;
    let mut text = String::new();
    for n in 0..total {
        let mut e = event(1 + n % 3, n);
        e["event_time"] = json!(at(start + Duration::seconds(n * 20)));
        e["n"] = json!(n);
        text.push_str(&e.to_string());
        text.push('\n');
    }
    write_file(&path, &text);
    let binary = cli_binary();
    let proxy = Proxy::for_cluster().await;
    let run = || {
        std::process::Command::new(&binary)
            .args(["import", "--chunk-events", "1000"])
            .arg(&path)
            .env("DATABASE_URL", db.url_via(proxy.addr))
            .env("EVENT_RETENTION_DAYS", RETENTION_DAYS.to_string())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the CLI starts")
    };

    // 1. The database stops after the 3rd chunk; the importer is killed while it is down.
    let mut child = run();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines() {
        if line.unwrap().contains(": chunk 3,") {
            break;
        }
    }
    proxy.set(ProxyMode::Down);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let after_outage = db.count("SELECT count(*) FROM events").await;
    assert!(
        after_outage >= 3_000 && after_outage < total,
        "{after_outage}"
    );

    // 2. Back up; this run's connection is cut as it sends its first COMMIT.
    proxy.set(ProxyMode::CutOn(b"COMMIT".to_vec()));
    let out = run().wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the cut run fails: {report}");
    assert_eq!(proxy.cuts(), 1, "{report}");
    assert!(report.contains("error"), "{report}");

    // 3. The same command completes the file.
    proxy.set(ProxyMode::Up);
    let out = run().wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("skipped as already imported"), "{report}");
    let row = db
        .client()
        .await
        .query_one(
            "SELECT count(*), count(DISTINCT (properties->>'n')::bigint) FROM events",
            &[],
        )
        .await
        .unwrap();
    let (stored, distinct): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!((stored, distinct), (total, total), "every event once");
    let (received, stored, duplicates, dead) = ledger_totals(&db).await;
    assert_eq!(stored, total);
    assert_eq!(dead, 0);
    assert_eq!(received, stored + duplicates);
    std::fs::remove_dir_all(dir).ok();
}
