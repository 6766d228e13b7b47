//! The large-event check (issue 15): what one huge event in an ingest batch costs the handler's
//! memory. A hub producer may send a 10 MB event; ingest dead-letters it as `too_large`, keeping
//! its first `DEAD_LETTER_MAX_PAYLOAD_BYTES` and its size. The handler's peak RSS (VmHWM) is
//! read after warm-up batches and after each batch that carries such an event; the rise beyond
//! the batch's own size (which the request must hold) is what the handler adds.

use crate::bench::{with_db, HandlerProcess};
use crate::bench_db;
use crate::deliver::{envelope, post_ingest};
use crate::traffic::{Traffic, TrafficConfig};
use anyhow::{bail, Context};
use chrono::Utc;
use remarketable_core::{db, tenants};
use serde_json::Value;
use std::path::PathBuf;

const DATABASE: &str = "rmk_bench_large_event";
const MIB: f64 = 1024.0 * 1024.0;
/// The handler's `DEAD_LETTER_MAX_PAYLOAD_BYTES`, set here so the check knows it.
const KEPT_BYTES: usize = 65_536;

#[derive(clap::Args)]
pub struct BenchLargeEventArgs {
    /// Superuser URL of a plain PostgreSQL server, where the check makes (and remakes)
    /// database `rmk_bench_large_event`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The handler executable (`cargo build --release -p remarketable-handler`).
    #[arg(long, default_value = "target/release/handler")]
    handler: PathBuf,
    /// Size of the huge event's body, in MiB.
    #[arg(long, default_value_t = 10)]
    mib: usize,
    /// Batches carrying one huge event each (after three ordinary ones).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Most the peak RSS may rise beyond the batch's size, in MiB.
    #[arg(long, default_value_t = 4.0)]
    allowed_mib: f64,
}

/// VmHWM and VmRSS of a process, in bytes.
fn memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .with_context(|| format!("{name} not found"))
    };
    Ok((field("VmHWM:")?, field("VmRSS:")?))
}

/// Answers whether the target was met (the stored rows are checked: an error if they are wrong).
pub async fn run(args: BenchLargeEventArgs) -> anyhow::Result<bool> {
    if !args.handler.exists() {
        bail!(
            "{} does not exist: build it with `cargo build --release -p remarketable-handler`",
            args.handler.display()
        );
    }
    let bench_db::BenchDb { client, .. } =
        bench_db::prepare(&args.database_url, DATABASE, false).await?;
    db::maintain_partitions(&client).await?;
    tenants::register_demo(&client, 3, &["UTC"]).await?;
    remarketable_core::db::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    let handler = HandlerProcess::start(
        &args.handler,
        &with_db(&args.database_url, DATABASE),
        &[
            ("RUST_LOG", "warn".into()),
            ("DEAD_LETTER_MAX_PAYLOAD_BYTES", KEPT_BYTES.to_string()),
        ],
        false,
        &http,
    )
    .await?;
    let url = format!("http://127.0.0.1:{}/ingest", handler.port);

    let mut traffic = Traffic::new(TrafficConfig::valid_only(5, 3));
    let mut sequence = 0i64;
    let mut batch = |huge: Option<String>| -> anyhow::Result<Vec<u8>> {
        let now = Utc::now();
        let mut bodies: Vec<String> = (0..999).map(|_| traffic.next(now).body).collect();
        bodies.extend(huge);
        let enqueued = vec![now; bodies.len()];
        let body = serde_json::to_vec(&envelope(0, sequence, &enqueued, &bodies))?;
        sequence += bodies.len() as i64;
        Ok(body)
    };
    let post = |body: Vec<u8>| {
        let (http, url) = (&http, &url);
        async move {
            let answer: Value = post_ingest(http, url, body)
                .await
                .map_err(|e| anyhow::anyhow!("ingest: {e}"))?;
            Ok::<_, anyhow::Error>(answer)
        }
    };
    for _ in 0..3 {
        post(batch(None)?).await?;
    }
    let (mut peak, rss) = memory(handler.pid)?;
    println!(
        "handler after 3 ordinary batches of 999 events: peak RSS {:.1} MiB, RSS {:.1} MiB",
        peak as f64 / MIB,
        rss as f64 / MIB
    );
    println!("round  batch MiB  peak before  peak after  rise   rise beyond the batch  RSS after");
    let huge_event = format!(
        r#"{{"tenant_id":1,"event_type":"page_view","device_id":"d","session_id":"s","properties":{{"blob":"{}"}}}}"#,
        "x".repeat(args.mib << 20)
    );
    let mut worst = f64::MIN;
    for round in 1..=args.rounds {
        let body = batch(Some(huge_event.clone()))?;
        let size = body.len() as f64;
        post(body).await?;
        let (after, rss) = memory(handler.pid)?;
        let rise = after.saturating_sub(peak) as f64;
        let beyond = (rise - size) / MIB;
        worst = worst.max(beyond);
        println!(
            "{round:<6} {:<10.1} {:<12.1} {:<11.1} {:<6.1} {:<22.1} {:.1}",
            size / MIB,
            peak as f64 / MIB,
            after as f64 / MIB,
            rise / MIB,
            beyond,
            rss as f64 / MIB
        );
        peak = after;
    }
    // What was stored and dead-lettered: every ordinary event, each huge one as `too_large`
    // with its first bytes and its full size.
    let stored: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await?
        .get(0);
    let prefix = &huge_event.as_bytes()[..KEPT_BYTES];
    let row = client
        .query_one(
            "SELECT count(*), min(payload_bytes), max(payload_bytes),
                    coalesce(bool_and(payload = $1), false)
             FROM dead_letters WHERE reason = 'too_large'",
            &[&prefix],
        )
        .await?;
    let (dead, least, most, prefixes): (i64, Option<i64>, Option<i64>, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    handler.stop().await;
    let expected_stored = 999 * (3 + args.rounds) as i64;
    if stored != expected_stored || dead != args.rounds as i64 {
        bail!("stored {stored} events (expected {expected_stored}) and {dead} too_large dead letters (expected {})", args.rounds);
    }
    if !prefixes {
        bail!("a too_large dead letter does not keep exactly the event's first {KEPT_BYTES} bytes");
    }
    if least != most || least != Some(huge_event.len() as i64) {
        bail!(
            "the dead letters' sizes are {least:?}..{most:?}, not the event's {} bytes",
            huge_event.len()
        );
    }
    println!(
        "stored {stored} ordinary events; {dead} too_large dead letters, each keeping the first \
         {KEPT_BYTES} bytes of {} and that size",
        huge_event.len()
    );
    let met = worst <= args.allowed_mib;
    println!(
        "largest rise beyond the batch: {worst:.1} MiB (target <= {:.1} MiB: {})",
        args.allowed_mib,
        if met { "met" } else { "NOT met" }
    );
    Ok(met)
}
