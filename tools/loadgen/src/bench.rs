//! The ingest benchmark: the same rows loaded by `psql \copy` (CSV) and by the handler's
//! `/ingest` end to end (HTTP envelope, validation, dedup, binary COPY, ledger), into the same
//! partitioned table, alternating in one run, with the ratio and the handler's peak RSS.

use crate::bench_db;
use crate::bench_lambda;
use crate::deliver::{envelope, post_ingest};
use crate::traffic::{Traffic, TrafficConfig};
use anyhow::{bail, Context};
use chrono::{Duration, Utc};
use remarketable_core::event::{parse_event, EventLimits, ValidEvent};
use remarketable_core::{db, tenants};
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Superuser URL of a plain PostgreSQL server, where the benchmark makes (and remakes)
    /// database `rmk_bench`; or of a prepared database on a Citus coordinator, whose project
    /// tables it drops and recreates (see `bench_db`).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The handler executable (build it with `cargo build --release -p remarketable-handler`).
    #[arg(long, default_value = "target/release/handler")]
    handler: PathBuf,
    /// Also the AWS Lambda host (`cargo build --release -p remarketable-lambda`), fed MSK
    /// events of the same rows through devhost's Runtime API stand-in, one process per
    /// partition; then its cold start and peak RSS.
    #[arg(long)]
    lambda: Option<PathBuf>,
    #[arg(long, default_value_t = 300_000)]
    events: usize,
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Rounds of (\copy, then the handler with 1, 2, 4 and 8 partitions delivering at once).
    /// The machine is shared: more rounds give steadier medians.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    #[arg(long, default_value_t = 50)]
    tenants: i64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

pub(crate) const COLUMNS: &str =
    "tenant_id, event_time, event_type, device_id, session_id, country, browser, \
    page_url, referrer, campaign, source, medium, revenue, currency, properties, received_at, \
    stream_partition, stream_sequence";

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if !args.handler.exists() {
        bail!(
            "{} does not exist: build it with `cargo build --release -p remarketable-handler`",
            args.handler.display()
        );
    }
    let bench_db::BenchDb {
        url: bench_url,
        client,
        engine,
        ..
    } = bench_db::prepare(&args.database_url, "rmk_bench", false).await?;
    db::configure_partitions(
        &client,
        &db::PartitionLayout {
            retention: Some("2 days".into()),
            ..Default::default()
        },
    )
    .await?;
    db::maintain_partitions(&client).await?;
    tenants::register_demo(&client, args.tenants, &["UTC"]).await?;

    eprintln!(
        "generating {} events of {} tenants ...",
        args.events, args.tenants
    );
    let now = Utc::now();
    // Valid, timely, unique events only: the benchmark compares rows stored.
    let mut traffic = Traffic::new(TrafficConfig::valid_only(args.seed, args.tenants));
    let enqueued: Vec<_> = (0..args.events)
        .map(|i| now - Duration::milliseconds((args.events - i) as i64))
        .collect();
    let bodies: Vec<String> = enqueued.iter().map(|t| traffic.next(*t).body).collect();
    let bytes: usize = bodies.iter().map(String::len).sum();

    // The rows the handler will store, as CSV for \copy.
    let limits = EventLimits::default();
    let csv_path = std::env::temp_dir().join(format!("rmk_bench_{}.csv", std::process::id()));
    write_csv(&csv_path, &bodies, &enqueued, &limits)?;

    let url_for_handler = bench_url.clone();
    remarketable_core::db::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    let handler = HandlerProcess::start(
        &args.handler,
        &url_for_handler,
        &[
            ("DB_POOL_SIZE", "4".into()),
            ("EVENT_RETENTION_DAYS", "2".into()),
            ("RUST_LOG", "warn".into()),
        ],
        false,
        &http,
    )
    .await?;
    let (handler_pid, port) = (handler.pid, handler.port);
    let ingest_url = format!("http://127.0.0.1:{port}/ingest");

    // Envelopes are serialized before timing, as the CSV file is written before timing.
    let envelopes = |partitions: usize| -> anyhow::Result<Vec<Vec<Vec<u8>>>> {
        let mut per_partition = vec![Vec::new(); partitions];
        for (i, chunk) in bodies.chunks(args.batch).enumerate() {
            let start = i * args.batch;
            let p = i % partitions;
            let env = envelope(
                p,
                start as i64,
                &enqueued[start..start + chunk.len()],
                chunk,
            );
            per_partition[p].push(serde_json::to_vec(&env)?);
        }
        Ok(per_partition)
    };
    // One process per partition, as Lambda runs one environment per Kafka partition at most.
    let mut lambdas = Vec::new();
    let mut kafka = Vec::new();
    if let Some(binary) = &args.lambda {
        for _ in 0..4 {
            lambdas.push(bench_lambda::LambdaProcess::start(binary, &url_for_handler).await?);
        }
        kafka.push(bench_lambda::events(&bodies, &enqueued, args.batch, 1)?);
        kafka.push(bench_lambda::events(&bodies, &enqueued, args.batch, 4)?);
    }
    let one = envelopes(1)?;
    let two = envelopes(2)?;
    let four = envelopes(4)?;
    let eight = envelopes(8)?;

    eprintln!(
        "{} events, {:.1} MB of JSON, batches of {}; handler on port {port}",
        args.events,
        bytes as f64 / 1e6,
        args.batch
    );
    println!(
        "round  method                          rows      seconds   rows/s     vs \\copy   \
         CPU ms per 1000 rows: machine  handler  postgres"
    );
    let mut ratios1 = Vec::new();
    let mut ratios2 = Vec::new();
    let mut ratios4 = Vec::new();
    let mut ratios8 = Vec::new();
    // Lambda at 1 and 4 partitions: (vs \copy, vs the handler at as many partitions).
    let mut lambda_ratios: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=args.rounds {
        reset(&client).await?;
        let cpu = Cpu::now(handler_pid);
        let copy = timed(|| copy_csv(&bench_url, &csv_path)).await?;
        let (machine_ms, _, _) = cpu.per_thousand(args.events);
        check_count(&client, args.events).await?;
        let copy_rate = args.events as f64 / copy;
        println!(
            "{round:<6} psql \\copy (CSV)               {:<9} {copy:<9.3} {copy_rate:<10.0} 1.000      \
             {machine_ms:>30.2}        -         -",
            args.events
        );

        for (label, per_partition, ratios) in [
            ("handler /ingest, 1 partition ", &one, &mut ratios1),
            ("handler /ingest, 2 partitions", &two, &mut ratios2),
            ("handler /ingest, 4 partitions", &four, &mut ratios4),
            ("handler /ingest, 8 partitions", &eight, &mut ratios8),
        ] {
            reset(&client).await?;
            let cpu = Cpu::now(handler_pid);
            let secs = timed(|| deliver(&http, &ingest_url, per_partition)).await?;
            let (machine_ms, handler_ms, postgres_ms) = cpu.per_thousand(args.events);
            check_count(&client, args.events).await?;
            let rate = args.events as f64 / secs;
            ratios.push(rate / copy_rate);
            println!(
                "{round:<6} {label}   {:<9} {secs:<9.3} {rate:<10.0} {:<10.3} \
                 {machine_ms:>30.2} {handler_ms:>8.2} {postgres_ms:>9.2}",
                args.events,
                rate / copy_rate
            );
        }
        for (i, (label, partitions, handler_ratios)) in [
            ("lambda Kafka, 1 partition   ", 1, &ratios1),
            ("lambda Kafka, 4 partitions  ", 4, &ratios4),
        ]
        .into_iter()
        .enumerate()
        .filter(|_| !lambdas.is_empty())
        {
            reset(&client).await?;
            let pids: Vec<u32> = lambdas[..partitions]
                .iter()
                .map(|l| l.pid())
                .collect::<anyhow::Result<_>>()?;
            let cpu = Cpu::now(pids[0]);
            let lambda_cpu: f64 = pids.iter().filter_map(|p| process_cpu(*p)).sum();
            let secs = timed(|| bench_lambda::deliver(&lambdas[..partitions], &kafka[i])).await?;
            let (machine_ms, _, postgres_ms) = cpu.per_thousand(args.events);
            let lambda_ms = (pids.iter().filter_map(|p| process_cpu(*p)).sum::<f64>() - lambda_cpu)
                * 1e6
                / args.events as f64;
            check_count(&client, args.events).await?;
            let rate = args.events as f64 / secs;
            let vs_handler = rate / copy_rate / handler_ratios[handler_ratios.len() - 1];
            lambda_ratios[i].push((rate / copy_rate, vs_handler));
            println!(
                "{round:<6} {label}  {:<9} {secs:<9.3} {rate:<10.0} {:<10.3} \
                 {machine_ms:>30.2} {lambda_ms:>8.2} {postgres_ms:>9.2}   (vs handler {vs_handler:.3})",
                args.events,
                rate / copy_rate
            );
        }
    }
    let rss = peak_rss_kib(handler_pid)?;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!(
        "median ratio handler/\\copy: 1 partition {:.3}, 2 partitions {:.3}, 4 partitions {:.3}, \
         8 partitions {:.3}",
        median(&mut ratios1),
        median(&mut ratios2),
        median(&mut ratios4),
        median(&mut ratios8)
    );
    println!("handler peak RSS (VmHWM): {:.1} MiB", rss as f64 / 1024.0);
    if let Some(binary) = &args.lambda {
        for (label, ratios) in ["1 partition", "4 partitions"].iter().zip(lambda_ratios) {
            let mut copy: Vec<f64> = ratios.iter().map(|r| r.0).collect();
            let mut handler: Vec<f64> = ratios.iter().map(|r| r.1).collect();
            println!(
                "median ratio lambda/\\copy, {label}: {:.3}; lambda/handler (same round, same \
                 partitions): {:.3}",
                median(&mut copy),
                median(&mut handler)
            );
        }
        let mut peak = 0;
        for l in &lambdas {
            peak = peak.max(peak_rss_kib(l.pid()?)?);
        }
        println!(
            "lambda peak RSS (VmHWM, largest of {} processes): {:.1} MiB",
            lambdas.len(),
            peak as f64 / 1024.0
        );
        drop(lambdas);
        let runs = bench_lambda::cold_starts(binary, &url_for_handler, &bodies[0], 7).await?;
        let mut millis: Vec<f64> = runs.iter().map(|r| r.0.as_secs_f64() * 1e3).collect();
        let rss_max = runs.iter().map(|r| r.1).max().unwrap_or(0);
        let text: Vec<String> = millis.iter().map(|m| format!("{m:.1}")).collect();
        println!(
            "lambda cold start (spawn to the first answer, one record, first database \
             connection included), {} runs: median {:.1} ms, max {:.1} ms [{}]; peak RSS {:.1} MiB",
            runs.len(),
            median(&mut millis),
            millis.iter().cloned().fold(0.0, f64::max),
            text.join(", "),
            rss_max as f64 / 1024.0
        );
    }
    println!("engine measured: {engine}");
    handler.stop().await;
    std::fs::remove_file(&csv_path).ok();
    Ok(())
}

/// A handler process of a benchmark: the given binary on a free 127.0.0.1 port with
/// `DATABASE_URL` and further settings, answering its readiness probe; killed when dropped.
/// Its log (stdout) is shown when `show_log`, else discarded.
pub(crate) struct HandlerProcess {
    child: tokio::process::Child,
    pub pid: u32,
    pub port: u16,
}

impl HandlerProcess {
    pub async fn start(
        binary: &std::path::Path,
        database_url: &str,
        settings: &[(&str, String)],
        show_log: bool,
        http: &reqwest::Client,
    ) -> anyhow::Result<HandlerProcess> {
        let port = free_port()?;
        let child = tokio::process::Command::new(binary)
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("DATABASE_URL", database_url)
            .envs(settings.iter().map(|(k, v)| (k, v)))
            .stdout(if show_log {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let pid = child.id().context("handler pid")?;
        wait_ready(http, port).await?;
        Ok(HandlerProcess { child, pid, port })
    }

    pub async fn stop(mut self) {
        self.child.kill().await.ok();
    }
}

/// The database part of a URL replaced by `db`.
pub(crate) fn with_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let base = base.rsplit_once('/').map(|(b, _)| b).unwrap_or(base);
    format!("{base}/{db}{query}")
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) async fn wait_ready(http: &reqwest::Client, port: u16) -> anyhow::Result<()> {
    for _ in 0..100 {
        if http
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    bail!("the handler did not become ready within 5 s")
}

pub(crate) async fn timed<F, Fut>(f: F) -> anyhow::Result<f64>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    f().await?;
    Ok(started.elapsed().as_secs_f64())
}

pub(crate) async fn reset(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    client
        .batch_execute("TRUNCATE events, dead_letters, ingest_positions, ingest_ledger_hourly, ingest_ledger_batches; CHECKPOINT")
        .await?;
    Ok(())
}

pub(crate) async fn check_count(
    client: &tokio_postgres::Client,
    expected: usize,
) -> anyhow::Result<()> {
    let n: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await?
        .get(0);
    if n as usize != expected {
        bail!("expected {expected} rows in events, found {n}");
    }
    Ok(())
}

pub(crate) async fn copy_csv(url: &str, path: &std::path::Path) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("psql")
        .arg(url)
        .arg("-qX")
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .arg("-c")
        .arg(format!(
            "\\copy events ({COLUMNS}) FROM '{}' WITH (FORMAT csv, HEADER true)",
            path.display()
        ))
        .status()
        .await
        .context("run psql")?;
    if !status.success() {
        bail!("psql \\copy failed: {status}");
    }
    Ok(())
}

async fn deliver(
    http: &reqwest::Client,
    url: &str,
    per_partition: &[Vec<Vec<u8>>],
) -> anyhow::Result<()> {
    let tasks: Vec<_> = per_partition
        .iter()
        .map(|batches| {
            let http = http.clone();
            let url = url.to_string();
            let batches = batches.clone();
            tokio::spawn(async move {
                for body in batches {
                    let answer = post_ingest(&http, &url, body).await?;
                    if answer["ReturnValue"]["dead_lettered"].as_u64() != Some(0) {
                        bail!("unexpected dead letters: {}", answer["Logs"]);
                    }
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Writes the rows the handler would store, in `COLUMNS` order, after a header row.
pub(crate) fn write_csv(
    path: &std::path::Path,
    bodies: &[String],
    enqueued: &[chrono::DateTime<Utc>],
    limits: &EventLimits,
) -> anyhow::Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut w = csv::Writer::from_writer(file);
    // A header row of the column names: `\copy` skips it, `remarketable import` reads it.
    w.write_record(COLUMNS.split(',').map(str::trim))?;
    let now = Utc::now();
    for (i, (body, at)) in bodies.iter().zip(enqueued).enumerate() {
        let e: ValidEvent = parse_event(body.as_bytes(), *at, now, limits)
            .map_err(|r| anyhow::anyhow!("generated event {i} is invalid: {}", r.message))?;
        let opt = |s: &Option<String>| s.clone().unwrap_or_default();
        w.write_record([
            e.tenant_id.to_string(),
            e.event_time.to_rfc3339(),
            e.event_type.clone(),
            e.device_id.to_string(),
            e.session_id.to_string(),
            opt(&e.country),
            opt(&e.browser),
            opt(&e.page_url),
            opt(&e.referrer),
            opt(&e.campaign),
            opt(&e.source),
            opt(&e.medium),
            e.revenue.map(|r| r.to_string()).unwrap_or_default(),
            opt(&e.currency),
            e.properties
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            at.to_rfc3339(),
            "0".into(),
            i.to_string(),
        ])?;
    }
    w.into_inner()?.flush()?;
    Ok(())
}

/// CPU time used so far by the whole machine (all processes: the database, the handler, the
/// client) and by the handler alone, in seconds, from /proc (USER_HZ is 100 on Linux).
struct Cpu {
    machine: f64,
    handler: f64,
    postgres: f64,
    handler_pid: u32,
}

impl Cpu {
    fn now(handler_pid: u32) -> Cpu {
        Cpu {
            machine: machine_busy().unwrap_or(0.0),
            handler: process_cpu(handler_pid).unwrap_or(0.0),
            postgres: postgres_cpu(),
            handler_pid,
        }
    }

    /// Milliseconds of CPU per 1000 rows since `self`: (whole machine, handler, postgres).
    /// The postgres figure misses backends that exited meanwhile (psql's, for `\copy`); the
    /// handler's pooled backends stay and are counted.
    fn per_thousand(&self, rows: usize) -> (f64, f64, f64) {
        let later = Cpu::now(self.handler_pid);
        let scale = 1e6 / rows as f64;
        (
            (later.machine - self.machine) * scale,
            (later.handler - self.handler) * scale,
            (later.postgres - self.postgres) * scale,
        )
    }
}

/// Busy CPU seconds of all cores: the first line of /proc/stat less idle and iowait.
fn machine_busy() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = ticks.iter().sum();
    Some((total - ticks.get(3)? - ticks.get(4)?) / 100.0)
}

/// CPU seconds of every process named `postgres`.
fn postgres_cpu() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == "postgres")
        })
        .filter_map(process_cpu)
        .sum()
}

/// User + system CPU seconds of a process.
fn process_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    // Counting from the state field after the comm: utime and stime are the 12th and 13th
    // (fields 14 and 15 of man 5 proc).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

pub(crate) fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmHWM not found")
}
