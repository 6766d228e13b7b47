//! The noisy-neighbour benchmark: ingest through the handler's `/ingest` with no report load,
//! then the same number of batches while 32 clients (each its own read key, spread over 8
//! tenants) ask 30-day breakdowns with a fresh `from` every time, so no answer or kept part
//! can be reused. Prints throughput and batch latency of both phases, their ratio, and what
//! the report clients got (answers, 429s, 503s). Target: ingest under the load at least 80 %
//! of idle, and no ingest batch failing.

use crate::bench::{with_db, HandlerProcess};
use crate::bench_reports::{generate, Latencies};
use crate::deliver::{envelope, post_ingest};
use crate::traffic::{Traffic, TrafficConfig};
use anyhow::{bail, Context};
use chrono::{Duration, Utc};
use remarketable_core::access::{self, KeyKind};
use remarketable_core::{db, jobs, tenants};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(clap::Args)]
pub struct BenchIsolationArgs {
    /// Superuser URL of the cluster; the benchmark makes (and remakes) database
    /// `rmk_bench_isolation`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The handler executable (build it with `cargo build --release -p remarketable-handler`).
    #[arg(long, default_value = "target/release/handler")]
    handler: PathBuf,
    /// Events of history (30 days, 200 tenants) rolled up before measuring: what the
    /// breakdowns read.
    #[arg(long, default_value_t = 300_000)]
    history: i64,
    /// Ingest batches per phase, of `--batch` events.
    #[arg(long, default_value_t = 40)]
    batches: usize,
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Report clients asking at once during the loaded phase.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// The handler's `REPORT_POOL_SIZE` (default: the handler's own default).
    #[arg(long)]
    report_pool_size: Option<u32>,
}

const DATABASE: &str = "rmk_bench_isolation";
const TENANTS: i64 = 8;

pub async fn run(args: BenchIsolationArgs) -> anyhow::Result<()> {
    if !args.handler.exists() {
        bail!(
            "{} does not exist: build it with `cargo build --release -p remarketable-handler`",
            args.handler.display()
        );
    }
    if args.batches < 5 || args.batch < 1 || args.clients < 1 {
        bail!("--batches must be at least 5, --batch and --clients at least 1");
    }
    let admin_config = tokio_postgres::Config::from_str(&args.database_url)
        .map_err(|_| anyhow::anyhow!("DATABASE_URL is not a PostgreSQL connection string"))?;
    let admin = db::connect(&admin_config)
        .await
        .context("connect to DATABASE_URL")?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
        .await?;
    let mut config = admin_config.clone();
    config.dbname(DATABASE);
    let mut client = db::connect(&config).await?;
    db::migrate(&mut client).await?;
    db::maintain_partitions(&client).await?;
    client.batch_execute("SELECT setseed(0.5)").await?;
    tenants::register_demo(&client, 200, &tenants::DEMO_ZONES).await?;
    eprintln!(
        "generating {} events of history over 30 days ...",
        args.history
    );
    let now = Utc::now();
    generate(
        &client,
        args.history,
        now - Duration::days(30),
        now - Duration::minutes(10),
    )
    .await?;
    eprintln!("rolling them up ...");
    // A run takes everything committed so far (the rollup bounds nothing here).
    loop {
        let run = jobs::rollup(&mut client).await?;
        if run.advances.iter().all(|a| a.window_end == a.window_start) {
            break;
        }
    }
    let mut keys = Vec::new();
    for i in 0..args.clients {
        let tenant = 1 + (i as i64 % TENANTS);
        let key = access::create_key(&client, Some(tenant), KeyKind::Read, "bench")
            .await
            .map_err(|e| anyhow::anyhow!("cannot create a read key: {e}"))?;
        keys.push((tenant, key.key));
    }

    // The handler with its default pools, timeouts and caps (unless --report-pool-size): what
    // is measured is what a deployment gets.
    remarketable_core::db::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    let mut settings = vec![("RUST_LOG", "error".to_string())];
    if let Some(n) = args.report_pool_size {
        settings.push(("REPORT_POOL_SIZE", n.to_string()));
    }
    let handler = HandlerProcess::start(
        &args.handler,
        &with_db(&args.database_url, DATABASE),
        &settings,
        false,
        &http,
    )
    .await?;
    let port = handler.port;

    // Both phases' batches, serialized before timing (partition 0, sequence numbers running on).
    let mut traffic = Traffic::new(TrafficConfig::valid_only(11, TENANTS));
    let batches: Vec<Vec<u8>> = (0..2 * args.batches)
        .map(|i| {
            let first = (i * args.batch) as i64;
            let at: Vec<_> = (0..args.batch)
                .map(|j| Utc::now() - Duration::milliseconds((args.batch - j) as i64))
                .collect();
            let bodies: Vec<String> = at.iter().map(|t| traffic.next(*t).body).collect();
            serde_json::to_vec(&envelope(0, first, &at, &bodies))
        })
        .collect::<Result<_, _>>()?;
    let (idle, loaded) = batches.split_at(args.batches);
    let ingest_url = format!("http://127.0.0.1:{port}/ingest");

    println!(
        "ingest of {} batches of {} events through /ingest, idle and while {} clients ask \
         uncacheable 30-day breakdowns ({} events of history, {TENANTS} tenants); load average \
         {}",
        args.batches,
        args.batch,
        args.clients,
        args.history,
        load_average()
    );
    let idle_figures = ingest_phase(&http, &ingest_url, idle, args.batch).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Arc<Mutex<BTreeMap<u16, Vec<f64>>>> = Arc::default();
    let mut clients = Vec::new();
    for (i, (tenant, key)) in keys.into_iter().enumerate() {
        let (http, stop, outcomes) = (http.clone(), stop.clone(), outcomes.clone());
        clients.push(tokio::spawn(async move {
            let dimensions = ["country", "browser", "campaign", "event_type"];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                // A `from` no earlier request used: nothing kept can answer it.
                let from =
                    Utc::now() - Duration::days(30) + Duration::seconds((n * 7 + i as u64) as i64);
                let url = format!(
                    "http://127.0.0.1:{port}/api/v1/tenants/{tenant}/breakdown?dimension={}\
                     &from={}&limit=10",
                    dimensions[(n as usize + i) % dimensions.len()],
                    from.format("%Y-%m-%dT%H:%M:%SZ"),
                );
                let started = Instant::now();
                let status = match http.get(&url).bearer_auth(&key).send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let _ = r.bytes().await;
                        status
                    }
                    Err(_) => 0,
                };
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                outcomes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(status)
                    .or_default()
                    .push(ms);
                if status == 429 {
                    // As a polite client does with Retry-After: 1.
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }));
    }
    // Let the report load build up before measuring.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let load_before = load_average();
    let loaded_figures = ingest_phase(&http, &ingest_url, loaded, args.batch).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await?;
    }
    let loaded_figures = loaded_figures?;

    println!("phase        batches  failed  events/s   batch p50 ms  batch p99 ms");
    for (name, f) in [("idle", &idle_figures), ("under load", &loaded_figures)] {
        println!(
            "{name:<12} {:>7}  {:>6}  {:>8.0}   {:>12.1}  {:>12.1}",
            f.batches,
            f.failed,
            f.events_per_second,
            f.latencies.p(50),
            f.latencies.p(99)
        );
    }
    let ratio = loaded_figures.events_per_second / idle_figures.events_per_second;
    println!(
        "ingest under load / idle: {ratio:.2} (target >= 0.80); p99 ratio {:.2}; load average \
         during the load {load_before}",
        loaded_figures.latencies.p(99) / idle_figures.latencies.p(99)
    );
    println!("report answers during the loaded phase:");
    println!("status  requests  p50 ms   p99 ms");
    for (status, mut ms) in std::mem::take(&mut *outcomes.lock().unwrap_or_else(|e| e.into_inner()))
    {
        ms.sort_by(f64::total_cmp);
        let l = Latencies(ms);
        println!(
            "{:>6}  {:>8}  {:>7.1}  {:>7.1}",
            if status == 0 {
                "error".to_string()
            } else {
                status.to_string()
            },
            l.0.len(),
            l.p(50),
            l.p(99)
        );
    }
    handler.stop().await;
    if loaded_figures.failed > 0 || idle_figures.failed > 0 {
        bail!("ingest batches failed: the target is that none does");
    }
    Ok(())
}

struct Phase {
    batches: usize,
    failed: usize,
    events_per_second: f64,
    latencies: Latencies,
}

/// Posts `batches` one after another (one partition delivers in order), timing each.
async fn ingest_phase(
    http: &reqwest::Client,
    url: &str,
    batches: &[Vec<u8>],
    batch: usize,
) -> anyhow::Result<Phase> {
    let started = Instant::now();
    let mut took = Vec::with_capacity(batches.len());
    let mut failed = 0;
    for body in batches {
        let t = Instant::now();
        match post_ingest(http, url, body.clone()).await {
            Ok(_) => took.push(t.elapsed().as_secs_f64() * 1000.0),
            Err(e) => {
                failed += 1;
                eprintln!("ingest batch failed: {e}");
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    took.sort_by(f64::total_cmp);
    if took.is_empty() {
        bail!("every ingest batch failed");
    }
    Ok(Phase {
        batches: batches.len(),
        failed,
        events_per_second: ((batches.len() - failed) * batch) as f64 / seconds,
        latencies: Latencies(took),
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
