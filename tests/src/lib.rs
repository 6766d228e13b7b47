//! Support for the integration tests: a fresh database per test on the real PostgreSQL that
//! `scripts/test` starts, event builders, and a TCP proxy that can take the database away.
//!
//! Tests need `TEST_DATABASE_URL` (a superuser URL of the local cluster); without it they fail
//! with a message saying how to run them, rather than passing without having run.

use chrono::{DateTime, Duration, Utc};
use remarketable_core::rollup::Rollup;
use remarketable_core::{db, Batch, IncomingEvent, Ingestor, Settings};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Tenants registered in every test database.
pub const TENANTS: [i64; 3] = [1, 2, 3];
/// Raw event retention of test databases, short so that few partitions are created.
pub const RETENTION_DAYS: i64 = 3;

pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "TEST_DATABASE_URL is not set: run the tests with scripts/test, which starts the \
             project's PostgreSQL and sets it"
        )
    })
}

/// A database of its own for one test, migrated, with partitions and [`TENANTS`] registered.
pub struct TestDb {
    pub name: String,
    pub config: tokio_postgres::Config,
}

impl TestDb {
    pub async fn create() -> TestDb {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "rmk_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            Utc::now().timestamp_subsec_micros()
        );
        let admin_config =
            tokio_postgres::Config::from_str(&admin_url()).expect("TEST_DATABASE_URL parses");
        let admin = db::connect(&admin_config)
            .await
            .expect("connect to the test cluster");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let mut config = admin_config.clone();
        config.dbname(&name);
        let db = TestDb { name, config };
        let mut client = db.client().await;
        db::migrate(&mut client).await.expect("migrations apply");
        db::configure_partitions(
            &client,
            &db::PartitionLayout {
                interval: None,
                retention: Some(format!("{RETENTION_DAYS} days")),
                lookahead: Some("1 day".into()),
            },
        )
        .await
        .expect("partition layout");
        db::maintain_partitions(&client).await.expect("partitions");
        for id in TENANTS {
            client
                .execute(
                    "INSERT INTO tenants (tenant_id, name) VALUES ($1, $2)",
                    &[&id, &format!("shop {id}")],
                )
                .await
                .expect("register tenant");
        }
        db
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        db::connect(&self.config)
            .await
            .expect("connect to test database")
    }

    pub fn url(&self) -> String {
        url_of(&self.config, None)
    }

    /// The URL of this database reached through `via` (e.g. a [`Proxy`]), for processes
    /// started by a test.
    pub fn url_via(&self, via: SocketAddr) -> String {
        url_of(&self.config, Some(via))
    }

    /// Handler settings pointing at this database (or at `via`, e.g. a [`Proxy`]).
    pub fn settings(&self, via: Option<SocketAddr>) -> Settings {
        settings_for(&url_of(&self.config, via))
    }

    /// Rows of a query as JSON (one object per row, via `to_jsonb`), for whole-row comparisons.
    pub async fn json_rows(&self, sql: &str) -> Vec<Value> {
        let client = self.client().await;
        let rows = client
            .query(&format!("SELECT to_jsonb(q) FROM ({sql}) q"), &[])
            .await
            .expect("query");
        rows.iter().map(|r| r.get(0)).collect()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let client = self.client().await;
        client.query_one(sql, &[]).await.expect("count").get(0)
    }
}

/// The URL of a connection configuration (for tools such as psql).
pub fn url_for(config: &tokio_postgres::Config) -> String {
    url_of(config, None)
}

fn url_of(config: &tokio_postgres::Config, via: Option<SocketAddr>) -> String {
    let (host, port) = match via {
        Some(addr) => (addr.ip().to_string(), addr.port()),
        None => {
            let host = match &config.get_hosts()[0] {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            };
            (host, config.get_ports().first().copied().unwrap_or(5432))
        }
    };
    let user = config.get_user().unwrap_or("postgres");
    let db = config.get_dbname().unwrap_or("postgres");
    format!("postgres://{user}@{host}:{port}/{db}?sslmode=disable")
}

/// Settings for a handler talking to `database_url`, with test-sized limits.
pub fn settings_for(database_url: &str) -> Settings {
    settings_with(database_url, &[])
}

/// [`settings_for`] with more settings.
pub fn settings_with(database_url: &str, extra: &[(&str, &str)]) -> Settings {
    let mut map: HashMap<String, String> = [
        ("DATABASE_URL", database_url.to_string()),
        ("DB_POOL_SIZE", "4".into()),
        ("DB_CONNECT_TIMEOUT_SECONDS", "2".into()),
        ("EVENT_RETENTION_DAYS", RETENTION_DAYS.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    map.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Settings::from_map(&map).expect("test settings are valid")
}

/// Sums of the ledger over every source: (received, stored, duplicates, dead_lettered).
pub async fn ledger_totals(db: &TestDb) -> (i64, i64, i64, i64) {
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT coalesce(sum(received), 0)::bigint, coalesce(sum(stored), 0)::bigint, \
             coalesce(sum(duplicates), 0)::bigint, coalesce(sum(dead_lettered), 0)::bigint \
             FROM ingest_ledger",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

/// A valid event body of `tenant`.
pub fn event(tenant: i64, n: i64) -> Value {
    json!({
        "tenant_id": tenant,
        "event_type": "page_view",
        "device_id": format!("device-{}", n % 7),
        "session_id": n / 3,
        "page_url": format!("https://shop{tenant}.example/p/{n}"),
        "country": "DE",
    })
}

/// A batch of `bodies` at consecutive sequence numbers from `first`, enqueued `at`.
pub fn batch(partition: &str, first: i64, at: DateTime<Utc>, bodies: &[Value]) -> Batch {
    batch_raw(
        partition,
        first,
        at,
        bodies.iter().map(|b| b.to_string().into_bytes()).collect(),
    )
}

pub fn batch_raw(partition: &str, first: i64, at: DateTime<Utc>, bodies: Vec<Vec<u8>>) -> Batch {
    Batch {
        source: "test-namespace/clickstream".into(),
        partition: partition.into(),
        contiguous: true,
        events: bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| IncomingEvent {
                sequence: (first + i as i64).into(),
                offset: Some(format!("{}", (first + i as i64) * 512)),
                enqueued_at: at + Duration::milliseconds(i as i64),
                body,
            })
            .collect(),
    }
}

/// Drops the partition of `events` that holds `t`, as an operator's mistake would, and
/// answers its name.
pub async fn drop_partition_covering(client: &tokio_postgres::Client, t: DateTime<Utc>) -> String {
    let name: String = client
        .query_one(
            "SELECT partition_name FROM partition_bounds('events') \
             WHERE $1 >= from_value AND $1 < to_value",
            &[&t],
        )
        .await
        .expect("a partition covers the time")
        .get(0);
    client
        .batch_execute(&format!("DROP TABLE {name}"))
        .await
        .expect("drop partition");
    name
}

/// Reads a committed fixture from `tests/fixtures`.
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

/// What a [`Proxy`] does with traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward everything.
    Up,
    /// Refuse: accepted connections are closed at once, live ones are cut.
    Down,
    /// Forward, but cut the connection that sends this byte pattern to the server (once), as a
    /// crash of the network or database at that exact moment would.
    CutOn(Vec<u8>),
}

/// A TCP proxy in front of the database that tests can switch off, to play an outage.
pub struct Proxy {
    pub addr: SocketAddr,
    mode: watch::Sender<ProxyMode>,
    cuts: Arc<Mutex<u32>>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (mode, watcher) = watch::channel(ProxyMode::Up);
        let mode_for_cut = mode.clone();
        let cuts = Arc::new(Mutex::new(0));
        let cuts_seen = cuts.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let watcher = watcher.clone();
                if *watcher.borrow() == ProxyMode::Down {
                    drop(client);
                    continue;
                }
                let mode = mode_for_cut.clone();
                let cuts = cuts_seen.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        pipe(client, server, watcher, mode, cuts).await;
                    }
                });
            }
        });
        Proxy { addr, mode, cuts }
    }

    /// A proxy in front of the test cluster.
    pub async fn for_cluster() -> Proxy {
        let config =
            tokio_postgres::Config::from_str(&admin_url()).expect("TEST_DATABASE_URL parses");
        let host = match &config.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(_) => panic!("TEST_DATABASE_URL must use TCP"),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let upstream = tokio::net::lookup_host((host.as_str(), port))
            .await
            .expect("resolve database host")
            .next()
            .expect("database host has an address");
        Proxy::start(upstream).await
    }

    pub fn set(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
    }

    /// How many connections were cut by [`ProxyMode::CutOn`].
    pub fn cuts(&self) -> u32 {
        *self.cuts.lock().expect("cuts lock")
    }
}

async fn pipe(
    mut client: TcpStream,
    mut server: TcpStream,
    mut watcher: watch::Receiver<ProxyMode>,
    mode: watch::Sender<ProxyMode>,
    cuts: Arc<Mutex<u32>>,
) {
    let mut from_client = vec![0u8; 64 * 1024];
    let mut from_server = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            n = client.read(&mut from_client) => {
                let Ok(n) = n else { return };
                if n == 0 { return; }
                let chunk = &from_client[..n];
                let cut = matches!(&*watcher.borrow(), ProxyMode::CutOn(p)
                    if chunk.windows(p.len()).any(|w| w == p.as_slice()));
                if cut {
                    *cuts.lock().expect("cuts lock") += 1;
                    mode.send_replace(ProxyMode::Up);
                    return;
                }
                if server.write_all(chunk).await.is_err() { return; }
            }
            n = server.read(&mut from_server) => {
                let Ok(n) = n else { return };
                if n == 0 { return; }
                if client.write_all(&from_server[..n]).await.is_err() { return; }
            }
            changed = watcher.changed() => {
                if changed.is_err() || *watcher.borrow() == ProxyMode::Down { return; }
            }
        }
    }
}

// Generated storefront traffic, shared by the rollup and report tests.

/// An ingestor with the test settings' limits.
pub fn ingestor() -> Ingestor {
    let settings = settings_for("postgres://unused/db");
    Ingestor::new(settings.limits, std::time::Duration::from_secs(30))
}

/// A small deterministic generator (splitmix64), so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    /// A page number from 0..n, heavily skewed towards small numbers.
    pub fn skewed(&mut self, n: u64) -> u64 {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (u.powi(3) * n as f64) as u64
    }
}

/// Storefront events of tenants 1..=3 over the last few minutes; `late_share` percent of them
/// happened up to five hours earlier.
pub fn shop_events(rng: &mut Rng, now: DateTime<Utc>, n: usize, late_share: u64) -> Vec<Value> {
    (0..n)
        .map(|_| {
            let tenant = [1, 1, 1, 1, 2, 2, 3][rng.below(7) as usize];
            let age = if rng.below(100) < late_share {
                Duration::seconds(600 + rng.below(5 * 3600) as i64)
            } else {
                Duration::milliseconds(rng.below(600_000) as i64)
            };
            let event_type = rng.pick(&[
                "page_view",
                "page_view",
                "page_view",
                "ad_click",
                "add_to_cart",
                "purchase",
            ]);
            let device = rng.below(400);
            let mut e = json!({
                "tenant_id": tenant,
                "event_type": event_type,
                "event_time": (now - age).to_rfc3339(),
                "device_id": if device % 2 == 0 { json!(device) } else { json!(format!("d-{device}")) },
                "session_id": device * 10 + rng.below(3),
                "page_url": format!("https://shop{tenant}.example/p/{}?ref={}", rng.skewed(200), rng.below(5)),
            });
            match rng.below(4) {
                0 => {}
                k => e["country"] = json!(["US", "DE", "NP"][k as usize - 1]),
            }
            if rng.below(3) > 0 {
                e["browser"] = json!(rng.pick(&["Chrome", "Safari", "Firefox"]));
            }
            if event_type == "ad_click" {
                e["campaign"] = json!(rng.pick(&["winter-sale", "brand-search"]));
            }
            if event_type == "purchase" {
                e["revenue"] = json!(format!("{}.{:02}", rng.below(300), rng.below(100)));
            }
            e
        })
        .collect()
}

/// Tenants 2 and 3 live in zones whose days are not UTC days (Kathmandu is UTC+05:45).
pub async fn set_time_zones(db: &TestDb) {
    db.client()
        .await
        .batch_execute(
            "UPDATE tenants SET time_zone = 'America/New_York' WHERE tenant_id = 2;
             UPDATE tenants SET time_zone = 'Asia/Kathmandu' WHERE tenant_id = 3;",
        )
        .await
        .unwrap();
}

/// Ingests `bodies` as consecutive batches of `size` on `partition`, from sequence `first`.
pub async fn ingest(db: &TestDb, partition: &str, first: i64, bodies: &[Value], size: usize) {
    let ingestor = ingestor();
    let mut client = db.client().await;
    for (i, chunk) in bodies.chunks(size).enumerate() {
        let b = batch(partition, first + (i * size) as i64, Utc::now(), chunk);
        ingestor.ingest(&mut client, &b, Utc::now()).await.unwrap();
    }
}

// Rollups against the raw events, shared by the rollup, report and replay tests.

/// The raw-event grouping a rollup must equal, by granularity.
pub fn raw_groups(rollup: Rollup) -> String {
    let (key, bucket, join) = match rollup {
        Rollup::FiveMinutes => (
            "bucket",
            "date_bin('5 minutes', e.event_time, TIMESTAMPTZ 'epoch')",
            "",
        ),
        Rollup::Hour => (
            "bucket",
            "date_bin('1 hour', e.event_time, TIMESTAMPTZ 'epoch')",
            "",
        ),
        Rollup::Day => (
            "day",
            "(e.event_time AT TIME ZONE t.time_zone)::date",
            "JOIN tenants t ON t.tenant_id = e.tenant_id",
        ),
    };
    format!(
        "SELECT e.tenant_id, {bucket} AS {key}, {event_type} AS event_type,
                coalesce(e.country, '') AS country, {browser} AS browser, {campaign} AS campaign,
                count(*) AS event_count, coalesce(sum(e.revenue), 0) AS revenue,
                count(*) FILTER (WHERE e.event_type = 'purchase') AS purchases
         FROM events e {join} {KEPT_JOIN} GROUP BY 1, 2, 3, 4, 5, 6",
        event_type = kept("event_type"),
        browser = kept("browser"),
        campaign = kept("campaign"),
    )
}

/// Joins `kept`'s tenant (as `kt`) to raw events `e`.
const KEPT_JOIN: &str = "JOIN tenants kt ON kt.tenant_id = e.tenant_id";

/// A raw event's value of a guarded dimension as the rollups must keep it (migration V28): its
/// own when admitted for its local day (or empty, or a conversion type), else `(other)`.
pub fn kept(dimension: &str) -> String {
    let column = format!("coalesce(e.{dimension}, '')");
    let exempt = if dimension == "event_type" {
        "OR e.event_type = 'purchase' OR e.event_type = ANY (kt.conversion_event_types)"
    } else {
        ""
    };
    format!(
        "CASE WHEN {column} = '' {exempt} OR EXISTS (
                  SELECT 1 FROM dimension_values v
                  WHERE v.tenant_id = e.tenant_id AND v.dimension = '{dimension}'
                    AND v.day = (e.event_time AT TIME ZONE kt.time_zone)::date
                    AND v.value = {column})
              THEN {column} ELSE '(other)' END"
    )
}

/// (groups in the raw events, groups where the rollup differs from them or is missing, rollup
/// rows without raw events).
pub async fn compare(db: &TestDb, rollup: Rollup) -> (i64, i64, i64) {
    let key = if rollup == Rollup::Day {
        "day"
    } else {
        "bucket"
    };
    let sql = format!(
        "WITH raw AS ({raw})
         SELECT count(raw.tenant_id),
                count(*) FILTER (WHERE raw.tenant_id IS NOT NULL AND (
                    r.tenant_id IS NULL OR raw.event_count <> r.event_count
                    OR raw.revenue <> r.revenue OR raw.purchases <> r.purchases)),
                count(*) FILTER (WHERE raw.tenant_id IS NULL)
         FROM raw FULL JOIN {table} r
           USING (tenant_id, {key}, event_type, country, browser, campaign)",
        raw = raw_groups(rollup),
        table = rollup.table(),
    );
    let row = db.client().await.query_one(&sql, &[]).await.unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// The slices (per tenant and bucket: totals and each single dimension's values) compared
/// with the raw events: (groups, differing or missing, extra).
pub async fn compare_slices(db: &TestDb, rollup: Rollup) -> (i64, i64, i64) {
    let (table, key, bucket, join) = match rollup {
        Rollup::FiveMinutes => (
            "rollup_slices_5min",
            "bucket",
            "date_bin('5 minutes', e.event_time, TIMESTAMPTZ 'epoch')",
            "",
        ),
        Rollup::Hour => (
            "rollup_slices_1hour",
            "bucket",
            "date_bin('1 hour', e.event_time, TIMESTAMPTZ 'epoch')",
            "",
        ),
        Rollup::Day => (
            "rollup_slices_1day",
            "day",
            "(e.event_time AT TIME ZONE t.time_zone)::date",
            "JOIN tenants t ON t.tenant_id = e.tenant_id",
        ),
    };
    let sql = format!(
        "WITH raw AS (
             SELECT e.tenant_id, {bucket} AS {key}, d.dimension, d.value,
                    count(*) AS event_count, coalesce(sum(e.revenue), 0) AS revenue,
                    count(*) FILTER (WHERE e.event_type = 'purchase') AS purchases,
                    count(DISTINCT e.device_id) AS devices
             FROM events e {join} {KEPT_JOIN}
             CROSS JOIN LATERAL (VALUES ('', ''), ('event_type', {event_type}),
                 ('country', coalesce(e.country, '')), ('browser', {browser}),
                 ('campaign', {campaign})) AS d (dimension, value)
             GROUP BY 1, 2, 3, 4)
         SELECT count(raw.tenant_id),
                count(*) FILTER (WHERE raw.tenant_id IS NOT NULL AND (
                    r.tenant_id IS NULL OR raw.event_count <> r.event_count
                    OR raw.revenue <> r.revenue OR raw.purchases <> r.purchases
                    OR abs(hll_cardinality(r.devices) - raw.devices) > greatest(1, raw.devices * 0.0163))),
                count(*) FILTER (WHERE raw.tenant_id IS NULL)
         FROM raw FULL JOIN {table} r USING (tenant_id, {key}, dimension, value)",
        event_type = kept("event_type"),
        browser = kept("browser"),
        campaign = kept("campaign"),
    );
    let row = db.client().await.query_one(&sql, &[]).await.unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// Every rollup row and slice equals what the raw events say, at every granularity.
pub async fn assert_rollups_equal_raw(db: &TestDb) {
    for r in Rollup::ALL {
        let (groups, differing, extra) = compare_slices(db, r).await;
        assert!(groups > 0, "{r} slices: no raw groups to compare");
        assert_eq!(
            (differing, extra),
            (0, 0),
            "{r} slices: {differing} of {groups} differ from the raw events, {extra} have none"
        );
        let (groups, differing, extra) = compare(db, r).await;
        assert!(groups > 0, "{r}: no raw groups to compare");
        assert_eq!(
            (differing, extra),
            (0, 0),
            "{r}: {differing} of {groups} groups differ from the raw events, {extra} rollup \
             rows have no raw events"
        );
    }
}

/// A handler's answer to [`call`]: status, headers, the body as text and (if it is) JSON.
pub struct Answer {
    pub status: axum::http::StatusCode,
    pub body: Value,
    pub text: String,
    pub headers: axum::http::HeaderMap,
}

impl Answer {
    /// The stable error code of an error answer.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// One request through the router (`oneshot`), with an optional Authorization header and a
/// JSON body (`Value::Null`: none).
pub async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Value,
) -> Answer {
    let mut request = axum::http::Request::builder().method(method).uri(path);
    if let Some(a) = authorization {
        request = request.header("authorization", a);
    }
    let request = request
        .header("content-type", "application/json")
        .body(if body.is_null() {
            axum::body::Body::empty()
        } else {
            axum::body::Body::from(body.to_string())
        })
        .unwrap();
    let response = tower::ServiceExt::oneshot(app.clone(), request)
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        body,
        text,
        headers,
    }
}

/// The fixture with its enqueue times moved to now, in whichever encoding the fixture uses, so
/// the events fall inside retention whenever the tests run.
pub fn fresh_batch_fixture(name: &str) -> Value {
    let mut v = fixture(name);
    let times = &mut v["Metadata"]["EnqueuedTimeUtcArray"];
    let encoded = times.is_string();
    let list: Vec<Value> = if encoded {
        serde_json::from_str(times.as_str().unwrap()).unwrap()
    } else {
        times.as_array().unwrap().clone()
    };
    let now = Utc::now();
    let fresh: Vec<Value> = (0..list.len())
        .map(|i| {
            json!((now + Duration::milliseconds(i as i64))
                .naive_utc()
                .format("%Y-%m-%dT%H:%M:%S%.3f")
                .to_string())
        })
        .collect();
    *times = if encoded {
        json!(Value::Array(fresh).to_string())
    } else {
        Value::Array(fresh)
    };
    v
}

// Credentials for the route tests.

/// A new read key of `tenant`, as its `Authorization` header value.
pub async fn read_key_header(client: &tokio_postgres::Client, tenant: i64) -> String {
    let k = remarketable_core::access::create_key(
        client,
        Some(tenant),
        remarketable_core::access::KeyKind::Read,
        "k",
    )
    .await
    .unwrap();
    format!("Bearer {}", k.key)
}

/// A new share token of `tenant` for an hour, fixed to `filters` (dimension, value), signed
/// with the settings' secret, as its `Authorization` header value.
pub async fn share_header(
    client: &tokio_postgres::Client,
    settings: &Settings,
    tenant: i64,
    filters: &[(&str, &str)],
) -> String {
    let t = remarketable_core::access::create_share_token(
        client,
        settings.share_token_secret.as_ref(),
        tenant,
        Duration::hours(1),
        remarketable_core::reports::Filters::fixed(filters.iter().copied()).unwrap(),
        "link",
        None,
    )
    .await
    .unwrap();
    format!("Share {}", t.token)
}
