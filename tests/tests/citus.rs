//! The same schema and ingest path on a real Citus cluster, when `CITUS_URL` names one.
//!
//! `CITUS_URL` must point at a disposable database on the coordinator of a cluster whose
//! workers are already added; the test drops and recreates the project's tables in it. Without
//! `CITUS_URL` it is reported as ignored and `scripts/test` says it was skipped (Citus is not
//! packaged for Debian, so CI runs without it).

use chrono::Utc;
use remarketable_core::access::{self, KeyKind};
use remarketable_core::config::ShareSecret;
use remarketable_core::reports::{
    self, Dimension, Filters, Granularity, Metric, Range, Ranking, RolledCache, TopList,
};
use remarketable_core::rollup::{self, Rollup};
use remarketable_core::{dashboards, import, jobs, placement, quota, replay, tenants};
use remarketable_core::{db, Ingestor};
use remarketable_loadgen::bench_db;
use remarketable_tests::{batch, drop_partition_covering, event, settings_for};
use std::str::FromStr;

/// A report without its freshness (event ids and clocks differ between the databases).
macro_rules! answer {
    ($report:expr $(,)?) => {{
        let mut v = serde_json::to_value($report).unwrap();
        v.as_object_mut().unwrap().remove("freshness");
        v
    }};
}

/// The Citus database of `CITUS_URL`, or `None` (with a message saying the test was skipped).
fn citus_url() -> Option<String> {
    let url = std::env::var("CITUS_URL").ok().filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("SKIPPED: CITUS_URL is not set; the Citus test needs a Citus coordinator");
    }
    url
}

#[tokio::test]
#[ignore = "needs a Citus cluster: scripts/test runs it when CITUS_URL is set"]
async fn schema_and_ingest_on_citus() {
    let Some(url) = citus_url() else { return };
    let config = tokio_postgres::Config::from_str(&url).expect("CITUS_URL parses");
    let mut client = db::connect(&config).await.expect("connect to CITUS_URL");
    assert!(
        db::has_citus(&client).await.unwrap(),
        "CITUS_URL points at a database without the citus extension"
    );
    client
        .batch_execute(bench_db::RESET_PROJECT)
        .await
        .expect("reset");
    migrate_with_defaults(&mut client).await;
    // events and the ledger are distributed by tenant and colocated; tenants is a reference table.
    let rows = client
        .query(
            "SELECT logicalrelid::text, partmethod::text, colocationid FROM pg_dist_partition \
             WHERE logicalrelid IN ('events'::regclass, 'ingest_ledger_hourly'::regclass, 'tenants'::regclass) \
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let kinds: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        kinds,
        vec![
            ("events".into(), "h".into()),
            ("ingest_ledger_hourly".into(), "h".into()),
            ("tenants".into(), "n".into())
        ]
    );
    let colocation: Vec<i32> = rows.iter().map(|r| r.get(2)).collect();
    assert_eq!(colocation[0], colocation[1], "ledger colocated with events");
    let distributed_partitions: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_dist_partition p JOIN partition_bounds('events') b \
             ON p.logicalrelid = b.partition_name::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        distributed_partitions >= 31,
        "partitions are distributed: {distributed_partitions}"
    );

    for id in 1..=3 {
        tenants::register(
            &client,
            &tenants::NewTenant {
                tenant_id: id,
                name: format!("shop {id}"),
                time_zone: "UTC".into(),
            },
        )
        .await
        .expect("register a tenant on Citus");
    }
    access_on_citus(&client).await;
    let settings = settings_for(&url);
    let ingestor = Ingestor::new(settings.limits, std::time::Duration::from_secs(30));
    let now = Utc::now();
    let bodies: Vec<_> = (0..300).map(|n| event(1 + n % 3, n)).collect();
    let mut bad = event(1, 999);
    bad["country"] = serde_json::json!("XX");
    let mut with_bad = bodies.clone();
    with_bad.push(bad);
    let r = ingestor
        .ingest(&mut client, &batch("0", 0, now, &with_bad), now)
        .await
        .expect("ingest on Citus");
    assert_eq!((r.stored, r.dead_lettered), (300, 1));
    let again = ingestor
        .ingest(&mut client, &batch("0", 0, now, &with_bad), now)
        .await
        .unwrap();
    assert_eq!(again.duplicates, 301);
    let count: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 300);
    let per_tenant = stored_per_tenant(&client).await;
    assert_eq!(per_tenant, vec![(1, 100), (2, 100), (3, 100)]);
    // Folding the batch entries into the distributed hourly table keeps the totals.
    let folded = db::compact_ledger(&client)
        .await
        .expect("compaction on Citus");
    assert!(folded >= 3, "{folded}");
    let per_tenant_after = stored_per_tenant(&client).await;
    assert_eq!(per_tenant_after, per_tenant);

    // A constraint refusal is narrowed on Citus too (savepoints around distributed COPY).
    client
        .batch_execute("ALTER TABLE events ADD CONSTRAINT no_poison CHECK (campaign IS DISTINCT FROM 'poison')")
        .await
        .unwrap();
    let mut poison = event(2, 1000);
    poison["campaign"] = serde_json::json!("poison");
    let r = ingestor
        .ingest(
            &mut client,
            &batch("0", 301, now, &[event(1, 1001), poison, event(3, 1002)]),
            now,
        )
        .await
        .unwrap();
    assert_eq!((r.stored, r.dead_lettered), (2, 1));
    assert_eq!(dead_letter_reason(&client, 302).await, "db_rejected");

    // A partition dropped behind the cache's back: the row is found and dead-lettered as such.
    let day_ago = now - chrono::Duration::days(1);
    drop_partition_covering(&client, day_ago).await;
    let mut late = event(3, 1003);
    late["event_time"] = serde_json::json!(day_ago.to_rfc3339());
    let r = ingestor
        .ingest(
            &mut client,
            &batch("0", 304, now, &[event(1, 1004), late]),
            now,
        )
        .await
        .unwrap();
    assert_eq!((r.stored, r.dead_lettered), (1, 1));
    assert_eq!(dead_letter_reason(&client, 305).await, "no_partition");

    rollups_on_citus(&mut client).await;
    // Events after the rollup run: reports merge them from the raw table.
    let fresh: Vec<_> = (0..30).map(|n| event(1, 1000 + n)).collect();
    ingestor
        .ingest(
            &mut client,
            &batch("0", 400, Utc::now(), &fresh),
            Utc::now(),
        )
        .await
        .expect("ingest after the rollup");
    reports_on_citus(&client).await;
    dashboards_on_citus(&mut client).await;
    replay_on_citus(&mut client).await;
    retention_on_citus(&client).await;
    reports_equal_plain_postgresql(&mut client, &url).await;
    quotas_on_citus(&client).await;
    import_on_citus(&mut client).await;
    isolation_on_citus(&client, &url).await;
}

/// `tenant isolate` (issue 16): tenant 5's rows of every colocated table move into shards of
/// their own, nothing is lost, its reports give the same answers and are still one task on one
/// worker; isolating again moves nothing; a rebalance afterwards keeps every row.
async fn isolation_on_citus(client: &tokio_postgres::Client, url: &str) {
    let counts = || async {
        let mut all = Vec::new();
        for table in [
            "events",
            "rollup_events_1hour",
            "rollup_slices_1day",
            "ingest_ledger_hourly",
        ] {
            let n: i64 = client
                .query_one(
                    &format!("SELECT count(*) FROM {table} WHERE tenant_id = 5"),
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            all.push((table, n));
        }
        all
    };
    let now = Utc::now();
    let range = Range::new(now - chrono::Duration::days(3), now).unwrap();
    let none = Filters::default();
    let before = counts().await;
    assert!(before[0].1 > 0, "tenant 5 has events: {before:?}");
    let expected = answer!(
        reports::timeseries(client, 5, &range, Granularity::Hour, &none)
            .await
            .unwrap()
    );

    let done = placement::isolate(client, 5, placement::TransferMode::BlockWrites)
        .await
        .expect("isolate on Citus");
    assert!(
        !done.already && !done.before.isolated && done.after.isolated,
        "{done:?}"
    );
    assert_ne!(done.before.shard_id, done.after.shard_id);
    assert_eq!(counts().await, before, "every row kept");
    let again = placement::isolate(client, 5, placement::TransferMode::BlockWrites)
        .await
        .unwrap();
    assert!(again.already && again.after == done.after, "{again:?}");
    assert!(matches!(
        placement::isolate(client, 999, placement::TransferMode::Auto).await,
        Err(placement::PlacementError::UnknownTenant(999))
    ));

    let (remote, commands) = notice_client(url).await;
    remote
        .batch_execute("SET citus.log_remote_commands = on")
        .await
        .unwrap();
    let got = routed(
        &remote,
        &commands,
        "timeseries of an isolated tenant",
        reports::timeseries(&remote, 5, &range, Granularity::Hour, &none),
    )
    .await;
    assert_eq!(answer!(got), expected);

    let stats = placement::stats(client).await.unwrap();
    let five = stats.tenants.iter().find(|t| t.tenant_id == 5).unwrap();
    assert_eq!(five.shard.as_ref(), Some(&done.after));
    let rolled: i64 = client
        .query_one(
            "SELECT sum(event_count)::bigint FROM rollup_events_1day WHERE tenant_id = 5",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!((five.events, five.raw_events), (rolled, rolled));

    // Unbalance the cluster: a quarter of the first worker's shard groups moved to the
    // other one (Citus' default threshold is 10 % off the mean), then rebalance.
    let moves = client
        .query(
            "SELECT s.shardid, n.nodename, n.nodeport, o.nodename, o.nodeport \
             FROM pg_dist_shard s JOIN pg_dist_placement p ON p.shardid = s.shardid \
             JOIN pg_dist_node n ON n.groupid = p.groupid \
             JOIN pg_dist_node o ON o.groupid <> n.groupid AND o.groupid > 0 \
             WHERE s.logicalrelid = 'events'::regclass \
               AND n.groupid = (SELECT min(groupid) FROM pg_dist_node WHERE groupid > 0) \
             ORDER BY s.shardid LIMIT 4",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(moves.len(), 4);
    for m in &moves {
        client
            .execute(
                "SELECT citus_move_shard_placement($1, $2, $3, $4, $5, \
                        shard_transfer_mode => 'block_writes')",
                &[
                    &m.get::<_, i64>(0),
                    &m.get::<_, String>(1),
                    &m.get::<_, i32>(2),
                    &m.get::<_, String>(3),
                    &m.get::<_, i32>(4),
                ],
            )
            .await
            .expect("move a shard group");
    }
    let job = placement::rebalance_start(client, placement::TransferMode::BlockWrites)
        .await
        .expect("rebalance on Citus")
        .expect("an unbalanced cluster has shards to move");
    {
        let started = std::time::Instant::now();
        loop {
            let status = placement::rebalance_status(client).await.unwrap().unwrap();
            assert_eq!(status.job_id, job);
            if status.finished() {
                assert_eq!(status.state, "finished", "{status:?}");
                break;
            }
            assert!(
                started.elapsed().as_secs() < 300,
                "rebalance still {status:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
    assert_eq!(counts().await, before, "every row kept by the rebalance");
}

/// Collect's quotas (V22): overrides on the tenants reference table, a write key with allowed
/// origins, usage flushed into the distributed collect_usage and read back as today's totals.
async fn quotas_on_citus(client: &tokio_postgres::Client) {
    let origins = vec!["https://shop.example".to_string()];
    let key = access::create_key_for_origins(
        client,
        Some(2),
        KeyKind::Write,
        "citus collect",
        Some(&origins),
    )
    .await
    .expect("write key with origins on Citus");
    let overrides = quota::Overrides {
        events_per_day: Some(10),
        ..quota::Overrides::default()
    };
    assert!(quota::set_overrides(client, 2, &overrides).await.unwrap());
    assert_eq!(quota::overrides(client, 2).await.unwrap(), Some(overrides));
    let defaults = quota::Limits {
        events_per_second: 0,
        events_per_day: 0,
        key_events_per_second: 0,
        key_events_per_day: 0,
    };
    let policy = quota::KeyPolicy {
        allowed_origins: Some(origins),
        overrides,
    };
    let now = Utc::now();
    let origin = Some("https://shop.example");
    let gate = quota::Gate::new(defaults);
    let admitted = gate
        .open(2, &key.key_id, &policy, origin, None, now)
        .unwrap();
    admitted.take(Some(client), 6, now).await.unwrap();
    assert!(gate.flush(client, true).await.unwrap() > 0, "usage written");
    // Another instance reads today's total from the database: 6 of 10 taken.
    let other = quota::Gate::new(defaults);
    let admitted = other
        .open(2, &key.key_id, &policy, origin, None, now)
        .unwrap();
    assert!(matches!(
        admitted.take(Some(client), 5, now).await,
        Err(quota::Refusal::Quota { limit: 10, .. })
    ));
    let today = now.date_naive();
    let usage = quota::usage(client, 2, today, today.succ_opt().unwrap(), defaults)
        .await
        .unwrap();
    assert_eq!(usage.days.len(), 1);
    assert_eq!(usage.days[0].usage.accepted_events, 6);
}

/// `remarketable import` of a file (issue 16): partitions for old history created on the
/// cluster, every event stored once, a rerun stores nothing.
async fn import_on_citus(client: &mut tokio_postgres::Client) {
    let dir = std::env::temp_dir().join(format!("rmk-citus-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("history.ndjson");
    let old = Utc::now() - chrono::Duration::days(50);
    let mut text = String::new();
    for n in 0..300 {
        let mut e = event(3, 50_000 + n);
        e["event_time"] = serde_json::json!((old + chrono::Duration::minutes(n)).to_rfc3339());
        text.push_str(&e.to_string());
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    let mut limits = settings_for("postgres://unused/db").limits;
    limits.retention = chrono::Duration::days(3660);
    let ingestor = Ingestor::new(limits.clone(), std::time::Duration::from_secs(30));
    let options = import::ImportOptions {
        chunk_events: 100,
        ..import::ImportOptions::default()
    };
    let before = stored_per_tenant(client).await;
    let first = import::import_file(client, &ingestor, &path, &options, &limits, |_| {})
        .await
        .expect("import on Citus");
    assert_eq!(first.progress.stored, 300);
    assert!(first.progress.partitions_created >= 1, "{first:?}");
    let again = import::import_file(client, &ingestor, &path, &options, &limits, |_| {})
        .await
        .unwrap();
    assert_eq!((again.progress.stored, again.progress.skipped), (0, 300));
    let count = |rows: &[(i64, i64)]| rows.iter().find(|r| r.0 == 3).map_or(0, |r| r.1);
    assert_eq!(
        count(&stored_per_tenant(client).await) - count(&before),
        300
    );
    std::fs::remove_dir_all(dir).ok();
}

/// Tenant 5's events over the last two days, with varied dimensions and purchases: the same
/// data for both engines.
fn same_events(now: chrono::DateTime<Utc>) -> Vec<serde_json::Value> {
    (0..1500)
        .map(|n: i64| {
            let mut e = event(5, n);
            e["event_time"] =
                serde_json::json!((now - chrono::Duration::minutes(2 * n)).to_rfc3339());
            e["country"] = serde_json::json!(["DE", "US", "FR", "GB", "NL"][(n % 5) as usize]);
            e["browser"] = serde_json::json!(["Chrome", "Safari", "Firefox"][(n % 3) as usize]);
            e["device_id"] = serde_json::json!(format!("device-{}", n % 211));
            if n % 9 == 0 {
                e["event_type"] = serde_json::json!("purchase");
                e["revenue"] = serde_json::json!(format!("{}.25", n % 50));
                e["currency"] = serde_json::json!("EUR");
            }
            e
        })
        .collect()
}

/// The same events through the same ingest and rollups on Citus and on plain PostgreSQL give
/// the same reports (rolled part and raw part both), and on Citus every statement of a
/// tenant's report is one task on one worker: no coordinator step, no intermediate results.
async fn reports_equal_plain_postgresql(citus: &mut tokio_postgres::Client, url: &str) {
    if std::env::var("TEST_DATABASE_URL").is_err() {
        eprintln!("SKIPPED (part): reports against plain PostgreSQL need TEST_DATABASE_URL too");
        return;
    }
    let plain_db = remarketable_tests::TestDb::create().await;
    let mut plain = plain_db.client().await;
    let settings = settings_for("postgres://localhost/unused");
    let now = Utc::now();
    let bodies = same_events(now);
    for client in [&mut *citus, &mut plain] {
        tenants::register(
            &*client,
            &tenants::NewTenant {
                tenant_id: 5,
                name: "same data".into(),
                time_zone: "Europe/Berlin".into(),
            },
        )
        .await
        .unwrap();
        let ingestor = Ingestor::new(settings.limits.clone(), std::time::Duration::ZERO);
        let r = ingestor
            .ingest(client, &batch("5", 0, now, &bodies[..1200]), now)
            .await
            .unwrap();
        assert_eq!(r.stored, 1200);
        rollup::run(client).await.unwrap();
        // Above the watermark: the raw part of every report.
        let r = ingestor
            .ingest(client, &batch("5", 1200, now, &bodies[1200..]), now)
            .await
            .unwrap();
        assert_eq!(r.stored, 300);
    }

    let (remote, commands) = notice_client(url).await;
    remote
        .batch_execute("SET citus.log_remote_commands = on")
        .await
        .unwrap();
    let none = Filters::default();
    let mut german = Filters::default();
    german.set(Dimension::Country, "DE").unwrap();
    let to = now + chrono::Duration::minutes(10);
    for g in Granularity::ALL {
        let span = if g == Granularity::FiveMinutes {
            chrono::Duration::hours(12)
        } else {
            chrono::Duration::days(3)
        };
        let range = Range::new(to - span, to).unwrap();
        for filters in [&none, &german] {
            let cache_c = RolledCache::new(1 << 20);
            let cache_p = RolledCache::new(1 << 20);
            let expected = answer!(reports::timeseries(&plain, 5, &range, g, filters)
                .await
                .unwrap());
            assert!(
                expected["points"].as_array().unwrap().len() >= 3,
                "{g:?} {filters:?}: {expected}"
            );
            let got = routed(
                &remote,
                &commands,
                "timeseries",
                reports::timeseries(&remote, 5, &range, g, filters),
            )
            .await;
            assert_eq!(answer!(got), expected, "timeseries {g:?} {filters:?}");

            let expected = answer!(cache_p
                .summary(&plain, 5, &range, g, filters)
                .await
                .unwrap());
            let got = routed(
                &remote,
                &commands,
                "summary",
                cache_c.summary(&remote, 5, &range, g, filters),
            )
            .await;
            assert_eq!(answer!(got), expected, "summary {g:?} {filters:?}");

            for dimension in [Dimension::Country, Dimension::Browser] {
                let ranking = Ranking {
                    dimension,
                    order: Metric::Events,
                    limit: 10,
                };
                let expected = answer!(cache_p
                    .breakdown(&plain, 5, &range, g, filters, ranking)
                    .await
                    .unwrap(),);
                let got = routed(
                    &remote,
                    &commands,
                    "breakdown",
                    cache_c.breakdown(&remote, 5, &range, g, filters, ranking),
                )
                .await;
                assert_eq!(answer!(got), expected, "breakdown {dimension:?} {g:?}");
            }
            let expected = answer!(
                reports::top(&plain, 5, &range, g, TopList::Pages, filters, 5)
                    .await
                    .unwrap()
            );
            let got = routed(
                &remote,
                &commands,
                "top",
                reports::top(&remote, 5, &range, g, TopList::Pages, filters, 5),
            )
            .await;
            assert_eq!(answer!(got), expected, "top {g:?} {filters:?}");
        }
    }
}

/// A connection to `url` that keeps the server's notices (what `citus.log_remote_commands`
/// reports: one notice per command sent to a worker).
async fn notice_client(
    url: &str,
) -> (
    tokio_postgres::Client,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("CITUS_URL without TLS (sslmode=disable or prefer) for the notice check");
    let notices = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = notices.clone();
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notice(n)) => sink.lock().unwrap().push(format!(
                    "{} | {}",
                    n.message(),
                    n.detail().unwrap_or_default()
                )),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    (client, notices)
}

/// Runs a report and checks what it sent to the workers: only single SELECTs, each to one
/// worker (a router task), all to the same one; no transaction blocks or intermediate results
/// (COPY) that a coordinator step would need.
async fn routed<T>(
    client: &tokio_postgres::Client,
    commands: &std::sync::Mutex<Vec<String>>,
    name: &str,
    report: impl std::future::Future<Output = Result<T, reports::ReportError>>,
) -> T {
    // A round trip after the report: its notices have arrived before this answer.
    commands.lock().unwrap().clear();
    let answer = report
        .await
        .unwrap_or_else(|e| panic!("{name} on Citus: {e}"));
    client.batch_execute("SELECT 1").await.unwrap();
    // Reads of reference tables alone (the tenant's zone, the watermark) run on the
    // coordinator's own copy: "executing the command locally". Commands to workers are
    // "issuing ...".
    let sent: Vec<String> = std::mem::take(&mut *commands.lock().unwrap())
        .into_iter()
        .filter(|c| !c.starts_with("executing the command locally: SELECT"))
        .collect();
    assert!(!sent.is_empty(), "{name}: nothing sent to a worker");
    let servers: std::collections::BTreeSet<&str> = sent
        .iter()
        .map(|c| c.rsplit_once("on server ").map(|(_, s)| s).unwrap_or(""))
        .map(|s| s.split(" connectionId").next().unwrap_or(s))
        .collect();
    assert_eq!(servers.len(), 1, "{name}: one worker, got {sent:#?}");
    for command in &sent {
        assert!(
            command.starts_with("issuing SELECT") || command.starts_with("issuing WITH"),
            "{name}: only single-task statements, got {command}"
        );
    }
    answer
}

/// `remarketable migrate` as the CLI runs it, with no layout given, on a cluster with default
/// settings: daily partitions, 30 days back and a day ahead, created a few per transaction; a
/// run that stopped half-way is completed by the next one.
async fn migrate_with_defaults(client: &mut tokio_postgres::Client) {
    let locks: String = client
        .query_one("SHOW max_locks_per_transaction", &[])
        .await
        .unwrap()
        .get(0);
    eprintln!("max_locks_per_transaction = {locks} on the coordinator");
    let preflight = db::nodes::preflight(client)
        .await
        .expect("every node has what the schema needs");
    assert!(preflight.citus);
    assert_eq!(preflight.nodes.len(), 3, "coordinator and 2 workers");
    assert!(preflight
        .nodes
        .iter()
        .all(|n| n.has("hll") && n.has("citus")));
    db::migrate(client)
        .await
        .expect("migrations apply on Citus");
    db::configure_partitions(client, &db::PartitionLayout::default())
        .await
        .unwrap();
    let interval: String = client
        .query_one(
            "SELECT partition_interval::text FROM partition_settings WHERE table_name = 'events'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(interval, "1 day", "daily partitions by default on Citus");
    let step = db::partition_changes_per_step(client).await.unwrap();
    assert_eq!(
        step, 4,
        "32 shards on 2 workers: 4 partitions per transaction"
    );
    let started = std::time::Instant::now();
    let changes = db::maintain_partitions(client)
        .await
        .expect("partitions on a default-configured Citus cluster");
    eprintln!(
        "migrate on Citus: {} partitions in {:.1} s",
        changes.len(),
        started.elapsed().as_secs_f64()
    );
    assert!((31..=33).contains(&changes.len()), "{}", changes.len());
    assert!(changes.iter().all(|c| c.action == "created"));
    // The partitions ingest needs next come first.
    let now = Utc::now();
    assert!(
        changes[0].from <= now && now < changes[0].to,
        "{:?}",
        changes[0]
    );
    // An interrupted run: the last steps never happened. The next run completes them.
    for c in changes.iter().rev().take(5) {
        client
            .batch_execute(&format!("DROP TABLE {}", c.partition))
            .await
            .unwrap();
    }
    let resumed = db::maintain_partitions(client).await.unwrap();
    assert_eq!(resumed.len(), 5);
    assert!(db::maintain_partitions(client).await.unwrap().is_empty());
    // Two days on: the two oldest expire and two are created ahead, in bounded steps.
    let later = client
        .query(
            "SELECT action, count(*) FROM maintain_partitions('events', now() + interval '2 days', 4) \
             GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let later: Vec<(String, i64)> = later.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(later, vec![("created".into(), 2), ("dropped".into(), 2)]);

    let doctor = db::nodes::doctor(client).await.unwrap().to_string();
    eprintln!("{doctor}");
    for expected in [
        "engine: Citus",
        "2 worker(s)",
        "schema: migrated to V",
        "every 1 day",
        "32 shards per partition",
        "4 partition(s) per transaction",
        "max_locks_per_transaction = ",
    ] {
        assert!(doctor.contains(expected), "{expected:?} in\n{doctor}");
    }
}

/// `doctor` on plain PostgreSQL (runs without Citus): the engine, the stand-in or extension,
/// the hourly layout.
#[tokio::test]
async fn doctor_on_plain_postgresql() {
    let db = remarketable_tests::TestDb::create().await;
    let client = db.client().await;
    let report = db::nodes::doctor(&client).await.unwrap();
    let text = report.to_string();
    assert!(text.contains("engine: plain PostgreSQL"), "{text}");
    assert!(text.contains("every 1 hour"), "{text}");
    assert!(text.contains("topn: "), "{text}");
    assert_eq!(report.nodes.len(), 1);
    assert!(report.nodes[0].has("hll"));
    assert_eq!(db::partition_changes_per_step(&client).await.unwrap(), 64);
}

/// API keys of every kind and share tokens: created (reference tables), verified, listed and
/// revoked through the coordinator; an unknown tenant is named as such.
async fn access_on_citus(client: &tokio_postgres::Client) {
    let verifier = access::Verifier::new(std::time::Duration::ZERO);
    let mut made = Vec::new();
    for (tenant, kind) in [
        (Some(1), KeyKind::Read),
        (Some(1), KeyKind::Write),
        (None, KeyKind::Admin),
    ] {
        let key = access::create_key(client, tenant, kind, "citus")
            .await
            .unwrap_or_else(|e| panic!("{kind} key on Citus: {e:?}"));
        let verified = verifier.verify_key(client, &key.key).await.unwrap();
        assert_eq!((verified.tenant_id, verified.kind), (tenant, kind));
        made.push(key);
    }
    assert!(matches!(
        access::create_key(client, Some(99), KeyKind::Read, "").await,
        Err(access::AccessError::UnknownTenant(99))
    ));
    assert_eq!(
        access::list_keys(client, Some(1), &Default::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    assert_eq!(
        access::revoke_key(client, &made[0].key_id)
            .await
            .unwrap()
            .map(|r| r.tenant_id),
        Some(Some(1))
    );
    assert!(matches!(
        verifier.verify_key(client, &made[0].key).await,
        Err(access::AccessError::Unauthorized)
    ));

    let secret = ShareSecret::new("a share token secret of at least 32 bytes").unwrap();
    let token = access::create_share_token(
        client,
        Some(&secret),
        2,
        chrono::Duration::days(7),
        Default::default(),
        "citus",
        None,
    )
    .await
    .expect("share token on Citus");
    let claims = verifier
        .verify_share(client, Some(&secret), &token.token, Utc::now())
        .await
        .unwrap();
    assert_eq!(claims.tenant_id, 2);
    assert!(matches!(
        access::create_share_token(
            client,
            Some(&secret),
            99,
            chrono::Duration::days(1),
            Default::default(),
            "",
            None
        )
        .await,
        Err(access::AccessError::UnknownTenant(99))
    ));
    assert_eq!(
        access::list_share_tokens(client, 2, &Default::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert!(access::revoke_share_token(client, Some(2), &token.token_id)
        .await
        .unwrap());
    assert!(matches!(
        verifier
            .verify_share(client, Some(&secret), &token.token, Utc::now())
            .await,
        Err(access::AccessError::ShareRevoked)
    ));
}

/// Dead letters of a tenant registered late are replayed into the distributed events table,
/// once.
async fn replay_on_citus(client: &mut tokio_postgres::Client) {
    let settings = settings_for("postgres://localhost/unused");
    let ingestor = Ingestor::new(settings.limits.clone(), std::time::Duration::ZERO);
    let now = Utc::now();
    let bodies: Vec<_> = (0..5).map(|n| event(4, 2000 + n)).collect();
    let r = ingestor
        .ingest(client, &batch("1", 0, now, &bodies), now)
        .await
        .unwrap();
    assert_eq!(r.dead_lettered, 5, "tenant 4 is not registered yet");
    tenants::register(
        &*client,
        &tenants::NewTenant {
            tenant_id: 4,
            name: "late".into(),
            time_zone: "UTC".into(),
        },
    )
    .await
    .unwrap();
    let replayed = replay::replay_dead_letters(client, 4, &settings.limits, Utc::now(), 100)
        .await
        .expect("replay on Citus");
    assert_eq!((replayed.examined, replayed.replayed), (5, 5));
    let again = replay::replay_dead_letters(client, 4, &settings.limits, Utc::now(), 100)
        .await
        .unwrap();
    assert_eq!(again.examined, 0);
    let stored: i64 = client
        .query_one("SELECT count(*) FROM events WHERE tenant_id = 4", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 5);
}

/// Rollup retention and ledger compaction, as the maintenance job runs them.
async fn retention_on_citus(client: &tokio_postgres::Client) {
    client
        .batch_execute(
            "INSERT INTO rollup_events_5min (tenant_id, bucket, event_type, country, browser, \
                                             campaign, event_count, revenue, purchases, devices, \
                                             sessions) \
             VALUES (1, now() - interval '400 days', 'page_view', '', '', '', 1, 0, 0, \
                     hll_empty(), hll_empty())",
        )
        .await
        .expect("an old rollup row");
    rollup::set_retention(client, Rollup::FiveMinutes, Some("90 days"))
        .await
        .unwrap();
    let run = jobs::maintenance(client)
        .await
        .expect("maintenance on Citus");
    let deleted: i64 = run
        .rollup_rows_deleted
        .iter()
        .filter(|(r, _)| r == Rollup::FiveMinutes.name())
        .map(|(_, n)| *n)
        .sum();
    assert_eq!(deleted, 1);
    assert!(run.ledger_totals_folded >= 1);
}

/// The reports run on Citus (one tenant's shard plus the coordinator's rollup state), count
/// what the raw events say, and the kept rolled parts answer as the full statements do.
async fn reports_on_citus(client: &tokio_postgres::Client) {
    let to = Utc::now() + chrono::Duration::minutes(10);
    let range = Range::new(to - chrono::Duration::days(2), to).unwrap();
    let raw: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE tenant_id = 1 AND event_time >= $1 AND event_time < $2",
            &[&range.from, &range.to],
        )
        .await
        .unwrap()
        .get(0);
    assert!(raw > 100, "{raw} events of tenant 1");
    let cache = RolledCache::new(1 << 20);
    let none = Filters::default();
    let by_country = Ranking {
        dimension: Dimension::Country,
        order: Metric::Events,
        limit: 10,
    };
    for g in Granularity::ALL {
        let series = reports::timeseries(client, 1, &range, g, &none)
            .await
            .unwrap_or_else(|e| panic!("timeseries {g:?} on Citus: {e}"));
        let total: i64 = series.points.iter().map(|p| p.metrics.events).sum();
        assert_eq!(total, raw, "timeseries {g:?}");
        for _ in 0..2 {
            let full = reports::oracle::summary(client, 1, &range, g, &none)
                .await
                .unwrap();
            let kept = cache.summary(client, 1, &range, g, &none).await.unwrap();
            assert_eq!(full.current.events, raw, "summary {g:?}");
            assert_eq!(kept.current, full.current, "kept summary {g:?}");
            let full = reports::oracle::breakdown(client, 1, &range, g, &none, by_country)
                .await
                .unwrap();
            let kept = cache
                .breakdown(client, 1, &range, g, &none, by_country)
                .await
                .unwrap();
            let values = |b: &reports::Breakdown| {
                b.rows
                    .iter()
                    .map(|r| (r.value.clone(), r.metrics.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(values(&kept), values(&full), "kept breakdown {g:?}");
        }
        reports::top(client, 1, &range, g, TopList::Pages, &none, 5)
            .await
            .unwrap_or_else(|e| panic!("top {g:?} on Citus: {e}"));
    }
}

/// Saved dashboards live with their tenant's events; a versioned save and a conflict work the
/// same as on PostgreSQL.
async fn dashboards_on_citus(client: &mut tokio_postgres::Client) {
    let colocated: i64 = client
        .query_one(
            "SELECT count(DISTINCT colocationid) FROM pg_dist_partition WHERE logicalrelid IN \
             ('events'::regclass, 'dashboards'::regclass)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(colocated, 1, "dashboards are colocated with events");
    let layout = dashboards::Layout::parse(serde_json::json!({"widgets": [
        {"id": "k", "kind": "kpi", "metric": "events", "width": 1, "height": 1}
    ]}))
    .unwrap();
    let first = dashboards::save(client, 2, "main", "Main", &layout, None)
        .await
        .expect("create on Citus");
    let second = dashboards::save(client, 2, "main", "Main", &layout, Some(first.version))
        .await
        .expect("save on Citus");
    assert_eq!(second.version, 2);
    let stale = dashboards::save(client, 2, "main", "Main", &layout, Some(1)).await;
    assert!(matches!(
        stale,
        Err(dashboards::DashboardError::Conflict(_))
    ));
    assert_eq!(dashboards::list(&*client, 2).await.unwrap().len(), 1);
    assert!(dashboards::list(&*client, 3).await.unwrap().is_empty());
}

/// The rollups are colocated with events, their INSERT .. SELECT is pushed down to the shards,
/// and their totals equal the raw events.
async fn rollups_on_citus(client: &mut tokio_postgres::Client) {
    let colocated: i64 = client
        .query_one(
            "SELECT count(DISTINCT colocationid) FROM pg_dist_partition WHERE logicalrelid IN \
             ('events'::regclass, 'rollup_events_5min'::regclass, 'rollup_events_1hour'::regclass, \
              'rollup_events_1day'::regclass, 'rollup_slices_5min'::regclass, \
              'rollup_slices_1hour'::regclass, 'rollup_slices_1day'::regclass)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(colocated, 1, "rollup tables are colocated with events");
    // The dimension guard's tables (V28) too, its limits a reference table.
    let guard: Vec<(String, String)> = client
        .query(
            "SELECT logicalrelid::text, partmethod::text FROM pg_dist_partition \
             WHERE logicalrelid IN ('dimension_values'::regclass, 'dimension_days'::regclass, \
                 'rollup_stage_values'::regclass, 'dimension_limits'::regclass) \
               AND (partmethod = 'n' OR colocationid = (SELECT colocationid FROM pg_dist_partition \
                                                        WHERE logicalrelid = 'events'::regclass)) \
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        guard,
        [
            ("dimension_days".into(), "h".into()),
            ("dimension_limits".into(), "n".into()),
            ("dimension_values".into(), "h".into()),
            ("rollup_stage_values".into(), "h".into())
        ]
    );

    // Every statement of a window (V12): staging the window's events and items, then each
    // rollup's rows and slices from the staging tables.
    let mut parts = vec![("stage", String::new()), ("items", String::new())];
    for r in Rollup::ALL {
        parts.push(("rows", r.name().to_string()));
        parts.push(("slices", r.name().to_string()));
    }
    for (part, rollup_name) in &parts {
        let statement: String = client
            .query_one("SELECT rollup_pass_statement($1, $2)", &[part, rollup_name])
            .await
            .unwrap()
            .get(0);
        let (types, arguments) = if rollup_name.is_empty() {
            (
                "bigint, bigint, timestamptz, timestamptz, timestamptz, timestamptz, timestamptz",
                "0, 1000000, '-infinity', 'infinity', '-infinity', '-infinity', '-infinity'",
            )
        } else {
            ("integer", "1000")
        };
        client
            .batch_execute(&format!("PREPARE window_insert ({types}) AS {statement}"))
            .await
            .unwrap();
        let plan: Vec<String> = client
            .query(
                &format!("EXPLAIN (COSTS OFF) EXECUTE window_insert({arguments})"),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(
            !plan.contains("INSERT/SELECT method"),
            "{part} {rollup_name}: not pushed down:\n{plan}"
        );
        assert!(
            plan.contains("Task Count: 32"),
            "{part} {rollup_name}: one task per shard:\n{plan}"
        );
        client
            .batch_execute("DEALLOCATE window_insert")
            .await
            .unwrap();
    }

    // No event type admitted: every page view is folded by the guard's statements on the
    // cluster (purchases never are).
    assert!(rollup::set_dimension_limit(client, "event_type", 0)
        .await
        .unwrap());
    let advances = rollup::run(client).await.expect("rollups on Citus");
    assert!(advances.iter().all(|a| a.window_end > a.window_start));
    let kept: Vec<String> = client
        .query(
            "SELECT DISTINCT event_type FROM rollup_events_1day WHERE event_type <> 'purchase'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        kept,
        [rollup::OTHER],
        "the guard folded the event types on Citus"
    );
    rollup::set_dimension_limit(client, "event_type", 1000)
        .await
        .unwrap();
    let raw = client
        .query(
            "SELECT tenant_id, count(*), coalesce(sum(revenue), 0)::text FROM events \
             GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let raw: Vec<(i64, i64, String)> = raw.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    for r in Rollup::ALL {
        let rows = client
            .query(
                &format!(
                    "SELECT tenant_id, sum(event_count)::bigint, sum(revenue)::text FROM {} \
                     GROUP BY 1 ORDER BY 1",
                    r.table()
                ),
                &[],
            )
            .await
            .unwrap();
        let rolled: Vec<(i64, i64, String)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(rolled, raw, "{r} totals equal the raw events");
    }
    let again = rollup::run(client).await.unwrap();
    assert!(again.iter().all(|a| a.rows == 0));
    let devices: i64 = client
        .query_one(
            "SELECT hll_cardinality(hll_union_agg(devices))::bigint FROM rollup_events_1day \
             WHERE tenant_id = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let exact: i64 = client
        .query_one(
            "SELECT count(DISTINCT device_id) FROM events WHERE tenant_id = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(devices, exact);
}

async fn dead_letter_reason(client: &tokio_postgres::Client, sequence: i64) -> String {
    client
        .query_one(
            "SELECT reason FROM dead_letters WHERE stream_sequence = $1::bigint",
            &[&sequence],
        )
        .await
        .unwrap()
        .get(0)
}

/// (tenant, events stored) as the ledger view counts them.
async fn stored_per_tenant(client: &tokio_postgres::Client) -> Vec<(i64, i64)> {
    client
        .query(
            "SELECT tenant_id, sum(stored)::bigint FROM ingest_ledger GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}
