//! `loadgen history`: a CSV file of past storefront events for `remarketable import`, added to
//! a truth file as a run of its own, so one `loadgen check` covers an import and the live
//! traffic sent next to it (`scripts/import-live-run`).

use crate::bench::write_csv;
use crate::traffic::{Expected, Traffic, TrafficConfig};
use crate::truth::{Run, Truth};
use anyhow::{bail, Context};
use chrono::{Duration, Utc};
use remarketable_core::event::EventLimits;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct HistoryArgs {
    /// Events to write (valid ones only: an export of stored events).
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Tenants 1..=N.
    #[arg(long, default_value_t = 20)]
    tenants: i64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// The oldest event, this many days before now.
    #[arg(long, default_value_t = 20)]
    from_days: i64,
    /// The newest event, this many days before now (less than --from-days).
    #[arg(long, default_value_t = 1)]
    to_days: i64,
    /// The CSV file to write (the stored columns under a header row).
    #[arg(long)]
    out: PathBuf,
    /// The truth file to add these events to (created if missing).
    #[arg(long)]
    truth: PathBuf,
}

pub fn run(args: HistoryArgs) -> anyhow::Result<()> {
    if args.events == 0 || args.tenants < 1 {
        bail!("--events and --tenants must be at least 1");
    }
    let limits = EventLimits::default();
    let retention_days = limits.retention.num_days();
    if !(0 < args.to_days && args.to_days < args.from_days && args.from_days < retention_days) {
        bail!(
            "need 0 < --to-days < --from-days < {retention_days} (the ingest path's retention: \
             older history is imported too, but its raw rows are then dropped after their rollups, \
             and the truth counts raw rows)"
        );
    }
    let mut truth = Truth::load(&args.truth)?;
    let now = Utc::now();
    let oldest = now - Duration::days(args.from_days);
    let span = Duration::days(args.from_days - args.to_days).num_milliseconds();
    let step = span / args.events as i64;
    if step == 0 {
        bail!("more events than milliseconds between --from-days and --to-days");
    }
    let enqueued: Vec<_> = (0..args.events as i64)
        .map(|i| oldest + Duration::milliseconds(i * step))
        .collect();
    let mut traffic = Traffic::new(TrafficConfig::valid_only(args.seed, args.tenants));
    let mut bodies = Vec::with_capacity(args.events);
    for at in &enqueued {
        let g = traffic.next(*at);
        if !matches!(g.expected, Expected::Stored(_)) {
            bail!(
                "the generator made an event that would not be stored: {}",
                g.body
            );
        }
        truth.expected.add(&g);
        bodies.push(g.body);
    }
    write_csv(&args.out, &bodies, &enqueued, &limits)
        .with_context(|| format!("write {}", args.out.display()))?;
    let n = args.events as u64;
    truth.runs.push(Run {
        started_at: now,
        updated_at: Utc::now(),
        seed: args.seed,
        target: "file".into(),
        url: args.out.display().to_string(),
        generated: n,
        acknowledged: n,
        late: 0,
        malformed: 0,
        producer_duplicates: 0,
        uncertain_resends: 0,
        finished: true,
    });
    truth.save(&args.truth)?;
    eprintln!(
        "{n} events of tenants 1..={} from {} to {} in {} ({:.1} MB), added to {}",
        args.tenants,
        oldest.format("%F"),
        enqueued.last().expect("at least one").format("%F"),
        args.out.display(),
        std::fs::metadata(&args.out)?.len() as f64 / 1e6,
        args.truth.display()
    );
    Ok(())
}
