//! `loadgen`: realistic storefront traffic with a truth file, the check of a database against
//! that truth, and the ingest benchmark.
//!
//! ```text
//! loadgen send --to ingest --url http://127.0.0.1:7072/ingest --events 20000 --truth t.json
//! loadgen send --to hub --duration 5m --rate 2000 --truth t.json
//! loadgen history --events 100000 --out history.csv --truth t.json
//! loadgen spend --tenants 20 --days 30 --out-dir spend/ --truth t.json
//! loadgen check --truth t.json --database-url postgres://...
//! loadgen lambda-faults --lambda target/debug/lambda --source kafka --truth t.json
//! loadgen bench-ingest --database-url postgres://... --handler target/release/handler
//! loadgen bench-rollup --database-url postgres://...
//! loadgen bench-reports --database-url postgres://... --handler target/release/handler
//! loadgen bench-isolation --database-url postgres://... --handler target/release/handler
//! loadgen bench-import --database-url postgres://... --remarketable target/release/remarketable
//! loadgen bench-large-event --database-url postgres://... --handler target/release/handler
//! ```
//! See `tools/loadgen/README.md` for the truth file and what the check compares.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use remarketable_core::event::EventLimits;
use remarketable_loadgen::deliver::RetryPolicy;
use remarketable_loadgen::send::{self, SendOptions, Target};
use remarketable_loadgen::traffic::{self, TrafficConfig};
use remarketable_loadgen::truth::Truth;
use remarketable_loadgen::{
    bench, bench_campaigns, bench_import, bench_isolation, bench_large_event, bench_reports,
    bench_rollup, fault_lambda, history, spend,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "ReMarketable traffic generator, truth check and ingest benchmark"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send generated events to a handler's /ingest or to devhost's hub, keeping a truth file.
    Send(SendArgs),
    /// Write past events to a CSV file for `remarketable import`, adding them to a truth file.
    History(history::HistoryArgs),
    /// Write ad spend CSV files (and corrections) for `remarketable spend import`, adding the
    /// figures they leave to a truth file.
    Spend(spend::SpendArgs),
    /// Compare a database with a truth file; exit status 1 on any difference.
    Check(CheckArgs),
    /// The fault run's Lambda variant: traffic as MSK or Kinesis events to the `lambda` binary
    /// through the Runtime API stand-in, retried as event source mappings do, with SIGKILLs
    /// in the middle of invocations; adds what it delivered to a truth file.
    LambdaFaults(fault_lambda::LambdaFaultArgs),
    /// Benchmark: the handler's /ingest end to end against `psql \copy` of the same rows.
    BenchIngest(bench::BenchArgs),
    /// Benchmark: rollup throughput next to a plain INSERT .. SELECT .. GROUP BY, and the run
    /// time of empty and one-batch windows with 24 and 720 partitions.
    BenchRollup(bench_rollup::BenchRollupArgs),
    /// Ingest idle and under a flood of uncacheable reports, with the ratio.
    BenchIsolation(bench_isolation::BenchIsolationArgs),
    /// Benchmark: p50/p95/p99 of the largest tenant's 30-day reports through the handler, at
    /// concurrency 1 and 16, next to the same answers from the raw events, at 1 M and 10 M events.
    BenchReports(bench_reports::BenchReportsArgs),
    /// Benchmark: p50/p95/p99 of the largest tenant's 30-day campaign and funnel reports at
    /// concurrency 1 and 16 next to the same figures from the raw events, and what attribution
    /// adds to the rollups' cost per 1,000 events, at 1 M and 10 M events.
    BenchCampaigns(bench_campaigns::BenchCampaignsArgs),
    /// Benchmark: `remarketable import` of an NDJSON file and of a query next to `psql \copy`
    /// of the same rows, with the ratio, load average and the importer's peak RSS.
    BenchImport(bench_import::BenchImportArgs),
    /// Check: a 10 MiB event in an ingest batch raises the handler's peak RSS by at most a few
    /// MiB beyond the batch's size (exit status 1 if not), and is dead-lettered with its first
    /// bytes and its size.
    BenchLargeEvent(bench_large_event::BenchLargeEventArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum To {
    /// A handler's /ingest, as Event Hubs trigger invocations.
    Ingest,
    /// devhost's producer endpoint, as NDJSON.
    Hub,
}

#[derive(clap::Args)]
struct SendArgs {
    #[arg(long, value_enum, default_value = "ingest")]
    to: To,
    /// The endpoint. Default: http://127.0.0.1:7072/ingest, or for the hub
    /// http://127.0.0.1:7071/admin/hubs/{hub}/events.
    #[arg(long)]
    url: Option<String>,
    /// The hub's name (hub target).
    #[arg(long, default_value = "clickstream")]
    hub: String,
    /// Total events to send (default 20000 unless --duration is given).
    #[arg(long)]
    events: Option<u64>,
    /// How long to send, e.g. 90s, 5m, 1h (with --events, whichever comes first).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Events per second (0: as fast as the target takes them).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Most events per chunk (the host's maxEventBatchSize, or one hub request).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Ingest target: hub partitions, each delivering its batches in order, all in parallel.
    #[arg(long, default_value_t = 4)]
    partitions: usize,
    /// Hub target: chunks in flight at once.
    #[arg(long, default_value_t = 2)]
    parallel: usize,
    /// Tenants 1..=N, all registered (`remarketable tenant add`).
    #[arg(long, default_value_t = 20)]
    tenants: i64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Share of late events (event time minutes to hours before enqueue).
    #[arg(long, default_value_t = 0.03)]
    late_share: f64,
    /// Most lateness of a late event, e.g. 3h (default) or 6d: with a large late share, a
    /// history of days for dashboards to show (capped an hour short of the retention).
    #[arg(long, value_parser = parse_duration)]
    late_max: Option<Duration>,
    /// Share of malformed events (dead-lettered, each kind with its reason code).
    #[arg(long, default_value_t = 0.02)]
    malformed_share: f64,
    /// Share of producer-side duplicates (the same body sent again; stored again).
    #[arg(long, default_value_t = 0.01)]
    duplicate_share: f64,
    /// The ingest path's EVENT_RETENTION_DAYS (late and outside-retention events follow it).
    #[arg(long, default_value_t = 30)]
    retention_days: i64,
    /// The truth file to add this run to (created if missing).
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Ingest target: a file remembering each partition's next sequence number, so a later
    /// run continues the stream without a gap. Without it, sequence numbers start from the
    /// clock.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Give up on a chunk after retrying this long.
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    retry_for: Duration,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct CheckArgs {
    #[arg(long)]
    truth: PathBuf,
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Send(args) => send(args).await.map(|()| ExitCode::SUCCESS),
        Command::History(args) => history::run(args).map(|()| ExitCode::SUCCESS),
        Command::Spend(args) => spend::run(args).map(|()| ExitCode::SUCCESS),
        Command::LambdaFaults(args) => fault_lambda::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Check(args) => check(args).await,
        Command::BenchIngest(args) => bench::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::BenchRollup(args) => bench_rollup::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::BenchIsolation(args) => {
            bench_isolation::run(args).await.map(|()| ExitCode::SUCCESS)
        }
        Command::BenchReports(args) => bench_reports::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::BenchCampaigns(args) => {
            bench_campaigns::run(args).await.map(|()| ExitCode::SUCCESS)
        }
        Command::BenchImport(args) => bench_import::run(args).await.map(|()| ExitCode::SUCCESS),
        // 1: the target was missed (2, as elsewhere: an error).
        Command::BenchLargeEvent(args) => bench_large_event::run(args)
            .await
            .map(|met| ExitCode::from(if met { 0 } else { 1 })),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    })
}

async fn send(args: SendArgs) -> anyhow::Result<()> {
    for (name, share) in [
        ("--late-share", args.late_share),
        ("--malformed-share", args.malformed_share),
        ("--duplicate-share", args.duplicate_share),
    ] {
        if !(0.0..=1.0).contains(&share) {
            bail!("{name} must be between 0 and 1");
        }
    }
    if args.tenants < 1 || args.retention_days < 1 {
        bail!("--tenants and --retention-days must be at least 1");
    }
    let args_to = args.to;
    let target = match args.to {
        To::Ingest => Target::Ingest {
            url: args
                .url
                .unwrap_or_else(|| "http://127.0.0.1:7072/ingest".into()),
            partitions: args.partitions,
        },
        To::Hub => Target::Hub {
            url: args
                .url
                .unwrap_or_else(|| format!("http://127.0.0.1:7071/admin/hubs/{}/events", args.hub)),
            parallel: args.parallel,
        },
    };
    let events = match (args.events, args.duration) {
        (None, None) => Some(20_000),
        (events, _) => events,
    };
    let opts = SendOptions {
        target,
        traffic: TrafficConfig {
            seed: args.seed,
            tenants: args.tenants,
            late_share: args.late_share,
            late_max: match args.late_max {
                Some(d) => chrono::Duration::from_std(d)?,
                None => traffic::LATE_MAX,
            },
            malformed_share: args.malformed_share,
            duplicate_share: args.duplicate_share,
            limits: EventLimits {
                retention: chrono::Duration::days(args.retention_days),
                ..EventLimits::default()
            },
        },
        events,
        duration: args.duration,
        rate: args.rate,
        batch: args.batch,
        truth: args.truth,
        state: args.state,
        retry: RetryPolicy {
            give_up_after: args.retry_for,
            ..RetryPolicy::default()
        },
        timeout: Duration::from_secs(60),
        progress: !args.quiet,
        clock: chrono::Utc::now,
    };
    // Ctrl-C ends the run after the round in flight, with the truth file written.
    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.store(true, Ordering::Relaxed);
        }
    });
    let s = send::run(opts, stop).await?;
    let secs = (s.elapsed_ms as f64 / 1000.0).max(0.001);
    eprintln!(
        "sent {} events in {secs:.1} s ({:.0}/s): {} acknowledged, {} malformed, {} late, \
         {} producer duplicates, {} retries, {} uncertain resends",
        s.generated,
        s.generated as f64 / secs,
        s.acknowledged,
        s.malformed,
        s.late,
        s.producer_duplicates,
        s.retries,
        s.uncertain_resends
    );
    if let To::Ingest = args_to {
        let h = s.handler;
        eprintln!(
            "the handler reported: {} stored, {} dead-lettered, {} duplicates",
            h.stored, h.dead_lettered, h.duplicates
        );
    }
    if s.disagreements > 0 {
        eprintln!(
            "warning: for {} batches the handler's counts differ from the truth's (tenants not \
             registered? EVENT_* limits other than loadgen's?); `loadgen check` shows where",
            s.disagreements
        );
    }
    if s.uncertain_resends > 0 {
        eprintln!(
            "note: {} chunks got no answer and were sent again; the hub may hold them twice \
             (recorded in the truth file as uncertain resends)",
            s.uncertain_resends
        );
    }
    if s.interrupted {
        eprintln!("interrupted: the truth file holds what the target acknowledged");
    }
    Ok(())
}

async fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let truth = Truth::load(&args.truth)?;
    let config = tokio_postgres::Config::from_str(&args.database_url)
        .map_err(|_| anyhow::anyhow!("DATABASE_URL is not a PostgreSQL connection string"))?;
    let mut client = remarketable_core::db::connect(&config)
        .await
        .context("connect to DATABASE_URL")?;
    let report = remarketable_loadgen::check::check(&mut client, &truth).await?;
    println!("{report}");
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `90`, `90s`, `5m`, `2h`, `6d`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 5m or 1h"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_or_without_a_unit() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "loadgen",
            "send",
            "--to",
            "hub",
            "--duration",
            "5m",
            "--rate",
            "2000",
        ])
        .unwrap();
        let Command::Send(args) = cli.command else {
            panic!("not send")
        };
        assert!(args.to == To::Hub && args.duration == Some(Duration::from_secs(300)));
    }
}
