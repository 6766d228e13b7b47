//! The import benchmark (issue 16): the same rows loaded by `psql \copy` and by `remarketable
//! import` of the very same CSV file (the stored columns under a header row), and of a query on
//! a table holding them, into the same partitioned table, alternating in one run, with the
//! ratio, the load average before each measurement, the importer's peak RSS, and the time the
//! rollups then take to catch up over the imported range.

use crate::bench::{check_count, copy_csv, reset, timed, with_db, write_csv};
use crate::bench_db;
use crate::traffic::{Traffic, TrafficConfig};
use anyhow::{bail, Context};
use chrono::{Duration, Utc};
use remarketable_core::event::EventLimits;
use remarketable_core::{db, jobs, tenants};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct BenchImportArgs {
    /// Superuser URL of a plain PostgreSQL server, where the benchmark makes (and remakes)
    /// database `rmk_bench_import`; or of a prepared database on a Citus coordinator.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The CLI executable (`cargo build --release -p remarketable-cli`).
    #[arg(long, default_value = "target/release/remarketable")]
    remarketable: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Records per import transaction (`remarketable import --chunk-events`).
    #[arg(long, default_value_t = 10_000)]
    chunk_events: usize,
    /// Rounds of (\copy, import of the file, import of the query).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value_t = 50)]
    tenants: i64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// The 1-, 5- and 15-minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Runs `remarketable import ...` to its end; answers its peak RSS (VmHWM, sampled until it
/// exits) in KiB.
async fn import(binary: &Path, url: &str, args: &[&str]) -> anyhow::Result<u64> {
    let mut child = tokio::process::Command::new(binary)
        .arg("import")
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("start remarketable import")?;
    let pid = child.id().context("importer pid")?;
    let mut peak = 0;
    let output = loop {
        if let Ok(rss) = crate::bench::peak_rss_kib(pid) {
            peak = peak.max(rss);
        }
        tokio::select! {
            status = child.wait() => break status?,
            _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
        }
    };
    if !output.success() {
        let mut err = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            use tokio::io::AsyncReadExt;
            stderr.read_to_string(&mut err).await.ok();
        }
        bail!("remarketable import failed ({output}): {err}");
    }
    Ok(peak)
}

pub async fn run(args: BenchImportArgs) -> anyhow::Result<()> {
    if !args.remarketable.exists() {
        bail!(
            "{} does not exist: build it with `cargo build --release -p remarketable-cli`",
            args.remarketable.display()
        );
    }
    let bench_db::BenchDb {
        url,
        client,
        engine,
        ..
    } = bench_db::prepare(&args.database_url, "rmk_bench_import", false).await?;
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
    let mut traffic = Traffic::new(TrafficConfig::valid_only(args.seed, args.tenants));
    let enqueued: Vec<_> = (0..args.events)
        .map(|i| now - Duration::milliseconds((args.events - i) as i64))
        .collect();
    let bodies: Vec<String> = enqueued.iter().map(|t| traffic.next(*t).body).collect();
    let dir = std::env::temp_dir();
    let csv_path = dir.join(format!("rmk_bench_import_{}.csv", std::process::id()));
    write_csv(&csv_path, &bodies, &enqueued, &EventLimits::default())?;
    let bytes = std::fs::metadata(&csv_path)?.len();
    drop(bodies);
    let chunk = args.chunk_events.to_string();
    let query = "SELECT * FROM bench_import_source";
    eprintln!(
        "{} events: CSV {:.1} MB; import chunks of {chunk}",
        args.events,
        bytes as f64 / 1e6
    );
    println!("round  method                              rows      seconds   rows/s     vs \\copy  load average      peak RSS");
    let mut ratios = [Vec::new(), Vec::new()];
    for round in 1..=args.rounds {
        reset(&client).await?;
        let load = load_average();
        let copy = timed(|| copy_csv(&url, &csv_path)).await?;
        check_count(&client, args.events).await?;
        let copy_rate = args.events as f64 / copy;
        println!(
            "{round:<6} psql \\copy (CSV)                     {:<9} {copy:<9.3} {copy_rate:<10.0} 1.000     {load:<17} -",
            args.events
        );
        if round == 1 {
            // The query's table: the stored rows with the contract's names and a key.
            client
                .batch_execute(
                    "DROP TABLE IF EXISTS bench_import_source;
                     CREATE TABLE bench_import_source AS
                     SELECT event_id AS id, tenant_id, event_type, device_id, session_id,
                            event_time, country, browser, page_url, referrer, campaign, source,
                            medium, revenue, currency, properties FROM events;
                     ALTER TABLE bench_import_source ADD PRIMARY KEY (id);",
                )
                .await?;
            // On its own: several statements in one call are one transaction.
            client
                .batch_execute("VACUUM ANALYZE bench_import_source")
                .await?;
        }
        let file_arg = csv_path.display().to_string();
        let from = with_db(&args.database_url, "rmk_bench_import");
        let runs: [(&str, Vec<&str>); 2] = [
            (
                "remarketable import (the CSV file)  ",
                // The columns the handler adds itself are left out, as an export would.
                vec![
                    "--chunk-events",
                    &chunk,
                    "--map",
                    "received_at=",
                    "--map",
                    "stream_partition=",
                    "--map",
                    "stream_sequence=",
                    &file_arg,
                ],
            ),
            (
                "remarketable import --from-postgres ",
                vec![
                    "--chunk-events",
                    &chunk,
                    "--from-postgres",
                    &from,
                    "--query",
                    query,
                    "--key",
                    "id",
                ],
            ),
        ];
        for (i, (label, import_args)) in runs.iter().enumerate() {
            reset(&client).await?;
            let load = load_average();
            let mut rss = 0;
            let secs = timed(|| async {
                rss = import(&args.remarketable, &url, import_args).await?;
                Ok(())
            })
            .await?;
            check_count(&client, args.events).await?;
            let rate = args.events as f64 / secs;
            ratios[i].push(rate / copy_rate);
            println!(
                "{round:<6} {label} {:<9} {secs:<9.3} {rate:<10.0} {:<9.3} {load:<17} {:.1} MiB",
                args.events,
                rate / copy_rate,
                rss as f64 / 1024.0
            );
        }
    }
    // The last import's rows, rolled up from scratch: window after window until caught up.
    let mut client = client;
    client
        .batch_execute(
            "UPDATE rollup_state SET last_event_id = (SELECT coalesce(min(event_id), 1) - 1 FROM events);
             UPDATE attribution_state SET last_event_id = (SELECT coalesce(min(event_id), 1) - 1 FROM events)",
        )
        .await?;
    let load = load_average();
    let started = std::time::Instant::now();
    let last: i64 = client
        .query_one("SELECT max(event_id) FROM events", &[])
        .await?
        .get(0);
    let mut windows = 0;
    loop {
        let run = jobs::rollup(&mut client).await?;
        windows += run.advances.len();
        let behind: i64 = client
            .query_one("SELECT min(last_event_id) FROM rollup_state", &[])
            .await?
            .get(0);
        if behind >= last {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "rollups over the imported range: {} events in {secs:.1} s ({:.0} events/s, {windows} windows; load average {load})",
        args.events,
        args.events as f64 / secs
    );
    for (label, mut r) in ["file", "query"].into_iter().zip(ratios) {
        r.sort_by(|a, b| a.total_cmp(b));
        println!(
            "median ratio import ({label}) / \\copy: {:.3}",
            r[r.len() / 2]
        );
    }
    println!("engine measured: {engine}");
    client
        .batch_execute("DROP TABLE IF EXISTS bench_import_source")
        .await?;
    std::fs::remove_file(&csv_path).ok();
    Ok(())
}
