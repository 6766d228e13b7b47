//! `loadgen`: realistic storefront traffic for a running handler, and the ingest benchmark.
//!
//! ```text
//! loadgen send --url http://127.0.0.1:7072/ingest [--events 20000] [--partitions 4] [--rate 2000]
//! loadgen bench-ingest --database-url postgres://... --handler target/release/handler
//! ```
//! `send` plays the Event Hubs trigger: it posts batches in the host's envelope to `/ingest`
//! (until devhost exists, it is how traffic reaches a local handler).

mod bench;
mod traffic;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "ReMarketable traffic generator and ingest benchmark"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send generated events to a handler's /ingest as Event Hubs batches.
    Send(SendArgs),
    /// Benchmark: the handler's /ingest end to end against `psql \copy` of the same rows.
    BenchIngest(bench::BenchArgs),
}

#[derive(clap::Args)]
struct SendArgs {
    /// The handler's ingest endpoint.
    #[arg(long, default_value = "http://127.0.0.1:7072/ingest")]
    url: String,
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Events per batch (the host's maxEventBatchSize).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Hub partitions, each delivering its batches in order, all in parallel.
    #[arg(long, default_value_t = 4)]
    partitions: usize,
    /// Events per second across partitions (0: as fast as the handler takes them).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Number of tenants (1..=N); register them first (`remarketable tenant add`).
    #[arg(long, default_value_t = 20)]
    tenants: i64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// A file remembering each partition's next sequence number, so that a later run
    /// continues the stream without a gap. Without it, sequence numbers start from the clock.
    #[arg(long)]
    state: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::Send(args) => send(args).await,
        Command::BenchIngest(args) => bench::run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// An Event Hubs trigger invocation (the plain encoding) for one partition's batch.
pub fn envelope(
    partition: usize,
    first_sequence: i64,
    enqueued: &[DateTime<Utc>],
    bodies: &[String],
) -> Value {
    let sequences: Vec<i64> = (0..bodies.len() as i64)
        .map(|i| first_sequence + i)
        .collect();
    json!({
        "Data": {"events": bodies},
        "Metadata": {
            "PartitionContext": {
                "FullyQualifiedNamespace": "loadgen.local",
                "EventHubName": "clickstream",
                "ConsumerGroup": "$Default",
                "PartitionId": partition.to_string(),
            },
            "SequenceNumberArray": sequences,
            "OffsetArray": sequences.iter().map(|s| (s * 400).to_string()).collect::<Vec<_>>(),
            "EnqueuedTimeUtcArray": enqueued
                .iter()
                .map(|t| t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.3f").to_string())
                .collect::<Vec<_>>(),
        }
    })
}

/// Posts one invocation; the handler answers 200 only once the batch is durable.
pub async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> anyhow::Result<Value> {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        bail!("{url} answered {status}: {text}");
    }
    Ok(serde_json::from_str(&text)?)
}

async fn send(args: SendArgs) -> anyhow::Result<()> {
    if args.batch == 0 || args.partitions == 0 {
        bail!("--batch and --partitions must be at least 1");
    }
    let mut next = next_sequences(args.state.as_deref(), args.partitions)?;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut traffic = traffic::Traffic::new(args.seed, args.tenants);
    let (events, batch) = (args.events, args.batch);
    let mut sent = 0usize;
    let mut stored = 0u64;
    let mut dead = 0u64;
    let mut last_report = Instant::now();
    while sent < events {
        let mut tasks = Vec::new();
        for (partition, next) in next.iter_mut().enumerate() {
            let n = batch.min(events - sent);
            if n == 0 {
                break;
            }
            let now = Utc::now();
            let enqueued = vec![now; n];
            let bodies: Vec<String> = (0..n).map(|_| traffic.event(now).to_string()).collect();
            let body = serde_json::to_vec(&envelope(partition, *next, &enqueued, &bodies))?;
            *next += n as i64;
            let client = client.clone();
            let url = args.url.clone();
            tasks.push(tokio::spawn(async move { post(&client, &url, body).await }));
            sent += n;
        }
        for t in tasks {
            let answer = t.await??;
            stored += answer["ReturnValue"]["stored"].as_u64().unwrap_or(0);
            dead += answer["ReturnValue"]["dead_lettered"].as_u64().unwrap_or(0);
        }
        if let Some(path) = &args.state {
            // Written after the handler acknowledged the round, like a checkpoint.
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(&next)?)?;
            std::fs::rename(&tmp, path)?;
        }
        if args.rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / args.rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        if last_report.elapsed() >= Duration::from_secs(1) || sent == events {
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "sent {sent}/{events} events ({:.0}/s): stored {stored}, dead-lettered {dead}",
                sent as f64 / secs
            );
            last_report = Instant::now();
        }
    }
    Ok(())
}

/// Each partition's next sequence number: from the state file when there is one, otherwise
/// from the clock (so runs without state still move forward).
fn next_sequences(state: Option<&std::path::Path>, partitions: usize) -> anyhow::Result<Vec<i64>> {
    let mut next: Vec<i64> = match state {
        Some(path) if path.exists() => serde_json::from_slice(&std::fs::read(path)?)
            .with_context(|| format!("{} is not a loadgen state file", path.display()))?,
        _ => Vec::new(),
    };
    let fresh = Utc::now().timestamp_millis() * 1000;
    next.resize(partitions.max(next.len()), fresh);
    next.truncate(partitions);
    Ok(next)
}
