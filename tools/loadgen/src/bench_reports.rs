//! The reports benchmark: latency of the largest tenant's 30-day `timeseries`, `breakdown` and
//! `summary` through the handler's HTTP API (rollups merged with the fresh raw events), at
//! concurrency 1 and 16, next to the same answers computed from the raw `events` table, with
//! the ratios — first with 1 M events, then with the full count, to show that report latency
//! does not grow with the data.
//!
//! Events are generated inside the database over the last 30 days (tenant 1 the largest, then a
//! long tail), recorded in `event_id_ranges` as every writer does, and rolled up by
//! `rollup::run` in windows of `--chunk` events.

use crate::bench::HandlerProcess;
use crate::bench_db;
use anyhow::bail;
use remarketable_core::access::{self, KeyKind};
use remarketable_core::{db, rollup, tenants};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args)]
pub struct BenchReportsArgs {
    /// Superuser URL of a plain PostgreSQL server, where the benchmark makes (and remakes) the
    /// database `--database`; or of a prepared database on a Citus coordinator, whose project
    /// tables it drops and recreates (see `bench_db`; `--database` is then not used).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The handler executable (`cargo build --release -p remarketable-handler`).
    #[arg(long, default_value = "target/release/handler")]
    handler: PathBuf,
    #[command(flatten)]
    load: ReportLoad,
    /// Events in all (measured first at 1 M, then at this count).
    #[arg(long, default_value_t = 10_000_000)]
    events: i64,
    /// Events generated and rolled up per step.
    #[arg(long, default_value_t = 250_000)]
    chunk: i64,
    /// Keep an existing database (migrated to the current schema) and generate only the
    /// events it lacks, instead of making it again: for measuring a changed handler against
    /// the same data.
    #[arg(long)]
    reuse: bool,
    /// The benchmark's database.
    #[arg(long, default_value = "rmk_bench_reports")]
    database: String,
    /// Events of the last five minutes left above the rollup watermark before measuring (a
    /// fifth of them tenant 1's), as a live system always has: every report then merges raw
    /// events into the rollups.
    #[arg(long, default_value_t = 2_000)]
    fresh: i64,
}

/// How hard a report benchmark asks (`bench-reports`, `bench-campaigns`).
#[derive(clap::Args)]
pub struct ReportLoad {
    /// Requests per report at concurrency 1 (16 tasks send as many each at concurrency 16).
    #[arg(long, default_value_t = 40)]
    pub requests: usize,
    /// Raw-table queries per report and task (default: requests / 8, at least 3). The raw
    /// answers are slow (the reports benchmark's take about 33 s at 10 M events): 1 keeps a
    /// 10 M run under an hour.
    #[arg(long)]
    pub raw_requests: Option<usize>,
    /// Unmeasured requests per report before measuring (at concurrency 16), so that the
    /// handler's connections are open and the figures are those of a running service.
    #[arg(long, default_value_t = 32)]
    pub warmup: usize,
    /// The handler's report connections (`REPORT_POOL_SIZE`; `DB_POOL_SIZE` gets the same).
    #[arg(long, default_value_t = 16)]
    pub pool_size: usize,
}

impl ReportLoad {
    /// Refuses a run that cannot measure: no handler executable, fewer than 1 M `events`, or
    /// an empty `chunk` or request count.
    pub fn check(&self, handler: &std::path::Path, events: i64, chunk: i64) -> anyhow::Result<()> {
        if !handler.exists() {
            bail!(
                "{} does not exist: build it with `cargo build --release -p remarketable-handler`",
                handler.display()
            );
        }
        if events < 1_000_000 || chunk < 1 || self.requests < 1 || self.raw_requests == Some(0) {
            bail!(
                "--events must be at least 1000000, --chunk, --requests and --raw-requests at \
                 least 1"
            );
        }
        Ok(())
    }

    /// A read key of tenant 1 and the handler started on `url` with this load's pools, the
    /// report caps out of the way (one key asks at concurrency 16: the reports are measured,
    /// not the per-credential cap) and `extra` settings.
    pub(crate) async fn start_handler(
        &self,
        client: &tokio_postgres::Client,
        handler: &std::path::Path,
        url: &str,
        extra: &[(&str, String)],
        http: &reqwest::Client,
    ) -> anyhow::Result<(String, HandlerProcess)> {
        let key = access::create_key(client, Some(1), KeyKind::Read, "bench")
            .await
            .map_err(|e| anyhow::anyhow!("cannot create a read key: {e}"))?
            .key;
        let mut settings = vec![
            ("DB_POOL_SIZE", self.pool_size.to_string()),
            ("REPORT_POOL_SIZE", self.pool_size.to_string()),
            ("REPORT_CONCURRENCY_PER_CREDENTIAL", "64".into()),
            ("REPORT_CONCURRENCY_PER_TENANT", "64".into()),
            ("RUST_LOG", "warn".into()),
        ];
        settings.extend(extra.iter().cloned());
        let process = HandlerProcess::start(handler, url, &settings, true, http).await?;
        Ok((key, process))
    }

    /// Raw queries per task.
    pub fn raw_requests(&self) -> usize {
        self.raw_requests.unwrap_or((self.requests / 8).max(3))
    }
}

/// Events of 200 tenants between $2 and $3: tenant 1 takes a fifth, the rest a long tail.
/// $1: how many.
const GENERATE: &str = "
INSERT INTO events (tenant_id, event_time, event_type, device_id, session_id, country, browser,
                    page_url, campaign, revenue, received_at, stream_partition, stream_sequence)
SELECT tenant, $2::timestamptz + random() * ($3::timestamptz - $2::timestamptz), kind,
       tenant * 1000000 + floor(random() * 200000)::bigint, floor(random() * 1e9)::bigint,
       (ARRAY['US','US','US','DE','DE','GB','FR','NL','CA','JP'])[1 + (random() * 9)::int],
       (ARRAY['Chrome','Chrome','Chrome','Safari','Safari','Edge','Firefox'])[1 + (random() * 6)::int],
       'https://shop' || tenant || '.example/p/' || floor(power(random(), 3) * 500)::int,
       CASE WHEN kind IN ('ad_click', 'ad_impression') THEN
            (ARRAY['winter-sale','brand-search','retarget-cart'])[1 + (random() * 2)::int] END,
       CASE WHEN kind = 'purchase' THEN round((random() * 300)::numeric, 2) END,
       now(), 'bench', g
FROM (SELECT g,
             CASE WHEN random() < 0.2 THEN 1 ELSE 2 + floor(power(random(), 3) * 199)::bigint END
                 AS tenant,
             (ARRAY['page_view','page_view','page_view','page_view','ad_impression','ad_click',
                    'add_to_cart','purchase'])[1 + (random() * 7)::int] AS kind
      FROM generate_series(1, $1::bigint) g) s";

/// The same answers from the raw events: $1 tenant, $2 from, $3 to, $4 zone.
const RAW: [(&str, &str); 3] = [
    (
        "timeseries",
        "SELECT (event_time AT TIME ZONE $4)::date, count(*), count(DISTINCT device_id),
                count(DISTINCT session_id), sum(revenue), count(*) FILTER (WHERE event_type = 'purchase')
         FROM events WHERE tenant_id = $1 AND event_time >= $2 AND event_time < $3 GROUP BY 1 ORDER BY 1",
    ),
    (
        "breakdown",
        "SELECT coalesce(country, ''), count(*), count(DISTINCT device_id),
                count(DISTINCT session_id), sum(revenue), count(*) FILTER (WHERE event_type = 'purchase')
         FROM events WHERE tenant_id = $1 AND event_time >= $2 AND event_time < $3 AND $4 <> ''
         GROUP BY 1 ORDER BY 2 DESC LIMIT 10",
    ),
    (
        "summary",
        "SELECT count(*), count(DISTINCT device_id), count(DISTINCT session_id), sum(revenue),
                count(*) FILTER (WHERE event_type = 'purchase')
         FROM events WHERE tenant_id = $1 AND $4 <> ''
           AND ((event_time >= $2 AND event_time < $3)
                OR (event_time >= $2 - ($3 - $2) AND event_time < $2))",
    ),
];

const REPORTS: [&str; 3] = [
    "timeseries?range=30d",
    "breakdown?range=30d&dimension=country",
    "summary?range=30d",
];

pub async fn run(args: BenchReportsArgs) -> anyhow::Result<()> {
    args.load.check(&args.handler, args.events, args.chunk)?;
    let bench_db::BenchDb {
        url: bench_url,
        config,
        mut client,
        engine,
        kept: reuse,
        ..
    } = bench_db::prepare(&args.database_url, &args.database, args.reuse).await?;
    db::maintain_partitions(&client).await?;
    if !reuse {
        client.batch_execute("SELECT setseed(0.5)").await?;
        tenants::register_demo(&client, 200, &tenants::DEMO_ZONES).await?;
    }
    remarketable_core::db::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    let (key, handler) = args
        .load
        .start_handler(&client, &args.handler, &bench_url, &[], &http)
        .await?;
    let port = handler.port;

    println!(
        "reports of the largest tenant (1) over 30 days, through the handler's HTTP API, \
         {} requests per report at concurrency 1 and 16 x {} at 16; raw = the same answer from \
         `events`",
        args.load.requests, args.load.requests
    );
    // Events arrive in time order, as they do: each phase (up to 1 M, then up to the full
    // count) spreads its chunks over the 30 days in order, so each rollup window reads the
    // partitions of its own days.
    let start = chrono::Utc::now() - chrono::Duration::days(30);
    let span = chrono::Duration::days(30) - chrono::Duration::minutes(2);
    // Reusing: the events generated before, without the fresh ones left above the watermark.
    let mut generated: i64 = if reuse {
        client
            .query_one(
                "SELECT count(*) FROM events
                 WHERE event_id <= (SELECT min(last_event_id) FROM rollup_state)",
                &[],
            )
            .await?
            .get(0)
    } else {
        0
    };
    if reuse {
        println!("reusing {} with {generated} events", args.database);
    }
    let mut targets = vec![1_000_000, args.events];
    targets.dedup();
    for target in targets {
        // A reused database past the 1 M phase is measured at its full count only. (Its
        // count may pass `--events` a little: retention drops the oldest events and the
        // fresh ones rolled up since are counted.)
        if generated > target && target < args.events {
            continue;
        }
        let phase_start = generated;
        let chunks = ((target - phase_start) as f64 / args.chunk as f64)
            .ceil()
            .max(1.0);
        let at = |k: f64| {
            start
                + chrono::Duration::milliseconds(
                    (span.num_milliseconds() as f64 * k / chunks) as i64,
                )
        };
        while generated < target {
            let n = args.chunk.min(target - generated);
            let started = Instant::now();
            let k = ((generated - phase_start) / args.chunk) as f64;
            let (from, to) = (at(k), at(k + 1.0));
            generate(&client, n, from, to).await?;
            let generated_s = started.elapsed().as_secs_f64();
            let started = Instant::now();
            rollup::run(&mut client).await?;
            generated += n;
            eprintln!(
                "{generated} events: generated {n} in {generated_s:.1} s, rolled up in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        let above = unrolled(&client).await?;
        if above < args.fresh {
            let now = chrono::Utc::now();
            generate(
                &client,
                args.fresh - above,
                now - chrono::Duration::minutes(5),
                now,
            )
            .await?;
        }
        let tenant_events: i64 = client
            .query_one("SELECT count(*) FROM events WHERE tenant_id = 1", &[])
            .await?
            .get(0);
        client.batch_execute("ANALYZE events").await?;
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "\n{generated} events ({tenant_events} of tenant 1), {} of them above the rollup \
             watermark; load average {}:",
            unrolled(&client).await?,
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
        println!("{REPORT_HEADER}");
        let run = ReportRun {
            http: &http,
            config: &config,
            key: &key,
            warmup: args.load.warmup,
            requests: args.load.requests,
            raw_requests: args.load.raw_requests(),
        };
        for (report, (name, raw_sql)) in REPORTS.iter().zip(RAW) {
            let url = format!("http://127.0.0.1:{port}/api/v1/tenants/1/{report}");
            run.measure(name, url, raw_sql, raw_params).await?;
        }
    }
    handler.stop().await;
    println!("engine measured: {engine}");
    Ok(())
}

/// The header of the rows [`ReportRun::measure`] prints.
pub(crate) const REPORT_HEADER: &str =
    "report      conc  p50 ms   p95 ms   p99 ms   raw p50 ms  raw p99 ms  p50 ratio  p99 ratio";

/// Bind values of a raw statement, made when it is sent.
pub(crate) type RawParams = fn() -> Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>>;

/// How a benchmark measures a report: through the handler with a read key, and as the same
/// answer from the raw events on a connection of its own per query.
pub(crate) struct ReportRun<'a> {
    pub(crate) http: &'a reqwest::Client,
    pub(crate) config: &'a tokio_postgres::Config,
    pub(crate) key: &'a str,
    /// Unmeasured requests before measuring, at concurrency 16.
    pub(crate) warmup: usize,
    /// Requests per task.
    pub(crate) requests: usize,
    /// Raw queries per task.
    pub(crate) raw_requests: usize,
}

impl ReportRun<'_> {
    /// Measures the report at `url` and `raw_sql` at concurrency 1 and 16, printing a row of
    /// [`REPORT_HEADER`] for each; a request answered other than 2xx ends the benchmark.
    pub(crate) async fn measure(
        &self,
        name: &str,
        url: String,
        raw_sql: &'static str,
        raw_params: RawParams,
    ) -> anyhow::Result<()> {
        let call = {
            let (http, key) = (self.http.clone(), self.key.to_string());
            move || {
                let (http, url, key) = (http.clone(), url.clone(), key.clone());
                async move {
                    let response = http.get(&url).bearer_auth(&key).send().await?;
                    if !response.status().is_success() {
                        bail!("{url} answered {}", response.status());
                    }
                    response.bytes().await?;
                    Ok(())
                }
            }
        };
        if self.warmup > 0 {
            latencies(16, self.warmup.div_ceil(16), call.clone()).await?;
        }
        for concurrency in [1usize, 16] {
            let api = latencies(concurrency, self.requests, call.clone()).await?;
            let raw = latencies(concurrency, self.raw_requests, {
                let config = self.config.clone();
                move || {
                    let config = config.clone();
                    async move {
                        let c = db::connect(&config).await?;
                        let params = raw_params();
                        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                            .iter()
                            .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
                            .collect();
                        c.query(raw_sql, &refs).await?;
                        Ok(())
                    }
                }
            })
            .await?;
            println!(
                "{name:<10}  {concurrency:>4}  {:>6.1}  {:>7.1}  {:>7.1}  {:>10.1}  {:>10.1}  {:>9.0}  {:>9.0}",
                api.p(50),
                api.p(95),
                api.p(99),
                raw.p(50),
                raw.p(99),
                raw.p(50) / api.p(50),
                raw.p(99) / api.p(99)
            );
        }
        Ok(())
    }
}

/// $1 tenant 1, $2/$3 the last 30 days, $4 the tenant's zone (UTC for tenant 1... see tenants).
fn raw_params() -> Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> {
    let to = chrono::Utc::now();
    let from = to - chrono::Duration::days(30);
    vec![
        Box::new(1i64),
        Box::new(from),
        Box::new(to),
        Box::new("Europe/Berlin".to_string()),
    ]
}

/// Events above the lowest rollup watermark: stored, not rolled up yet.
async fn unrolled(client: &tokio_postgres::Client) -> anyhow::Result<i64> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM events
             WHERE event_id > (SELECT min(last_event_id) FROM rollup_state)",
            &[],
        )
        .await?
        .get(0))
}

/// Inserts `n` events timed between `from` and `to` and records their id range.
pub(crate) async fn generate(
    client: &tokio_postgres::Client,
    n: i64,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    generate_with(client, GENERATE, n, from, to).await
}

/// Inserts `n` events by `statement` ($1 how many, $2 and $3 the least and greatest time) and
/// records their id range, as every writer of `events` does.
pub(crate) async fn generate_with(
    client: &tokio_postgres::Client,
    statement: &str,
    n: i64,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    let floor: i64 = client
        .query_one(
            "SELECT coalesce(pg_sequence_last_value('events_event_id_seq'), 0)",
            &[],
        )
        .await?
        .get(0);
    client.execute(statement, &[&n, &from, &to]).await?;
    client
        .execute(
            "INSERT INTO event_id_ranges (id_floor, id_ceiling, min_event_time, max_event_time)
             VALUES ($1, (SELECT last_value FROM events_event_id_seq), $2, $3)",
            &[&floor, &from, &to],
        )
        .await?;
    Ok(())
}

/// Milliseconds of each request, sorted.
pub(crate) struct Latencies(pub(crate) Vec<f64>);

impl Latencies {
    pub(crate) fn p(&self, percentile: usize) -> f64 {
        let i = (self.0.len() * percentile).div_ceil(100).saturating_sub(1);
        self.0[i.min(self.0.len() - 1)]
    }
}

/// Runs `requests` requests in each of `concurrency` tasks.
pub(crate) async fn latencies<F, Fut>(
    concurrency: usize,
    requests: usize,
    call: F,
) -> anyhow::Result<Latencies>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let call = Arc::new(call);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut took = Vec::with_capacity(requests);
            for _ in 0..requests {
                let started = Instant::now();
                call().await?;
                took.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(took)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort_by(f64::total_cmp);
    Ok(Latencies(all))
}
