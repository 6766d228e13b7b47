//! `loadgen spend`: CSV files of ad spend for `remarketable spend import`, one per tenant, for
//! the paid campaigns the traffic generator sends ads of, one row per campaign and day; and a
//! corrections file per tenant that changes some of those figures, as ad platforms restate
//! costs. The figures the uploads must leave (the corrections' where given) go to the truth
//! file, which `loadgen check` compares with `ad_spend`.

use crate::traffic::AD_CAMPAIGNS;
use crate::truth::Truth;
use anyhow::{bail, Context};
use chrono::{Duration, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rust_decimal::Decimal;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct SpendArgs {
    /// Tenants 1..=N.
    #[arg(long, default_value_t = 20)]
    tenants: i64,
    /// Days of spend, ending today (UTC).
    #[arg(long, default_value_t = 30)]
    days: i64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Where to write spend-<tenant>.csv and spend-<tenant>-corrections.csv.
    #[arg(long)]
    out_dir: PathBuf,
    /// The truth file to record the expected figures in (created if missing).
    #[arg(long)]
    truth: PathBuf,
}

/// A cost between 5.00 and 800.00, in cents.
fn cost(rng: &mut StdRng) -> Decimal {
    Decimal::new(rng.random_range(500..=80_000), 2)
}

fn write(path: &Path, rows: &[String]) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?,
    );
    writeln!(f, "date,campaign,source,medium,cost,currency")?;
    for row in rows {
        writeln!(f, "{row}")?;
    }
    f.flush()?;
    Ok(())
}

pub fn run(args: SpendArgs) -> anyhow::Result<()> {
    if args.tenants < 1 || !(1..=365).contains(&args.days) {
        bail!("--tenants must be at least 1 and --days between 1 and 365");
    }
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("create {}", args.out_dir.display()))?;
    let mut truth = Truth::load(&args.truth)?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let today = Utc::now().date_naive();
    let (mut rows, mut corrected) = (0, 0);
    for tenant in 1..=args.tenants {
        let expected = truth.spend.entry(tenant).or_default();
        let (mut first, mut corrections) = (Vec::new(), Vec::new());
        for back in 0..args.days {
            let day = today - Duration::days(back);
            for (campaign, source, medium) in AD_CAMPAIGNS {
                let c = cost(&mut rng);
                let row = |c: Decimal| format!("{day},{campaign},{source},{medium},{c},EUR");
                first.push(row(c));
                let key = format!("{day}|{campaign}|{source}|{medium}");
                // One figure in ten is restated later.
                let last = if rng.random_range(0..10) == 0 {
                    let restated = cost(&mut rng);
                    corrections.push(row(restated));
                    restated
                } else {
                    c
                };
                expected.insert(key, last);
            }
        }
        rows += first.len();
        corrected += corrections.len();
        write(&args.out_dir.join(format!("spend-{tenant}.csv")), &first)?;
        write(
            &args.out_dir.join(format!("spend-{tenant}-corrections.csv")),
            &corrections,
        )?;
    }
    truth.save(&args.truth)?;
    eprintln!(
        "{rows} spend rows of tenants 1..={} over {} days ({corrected} restated in the corrections \
         files) in {}, added to {}",
        args.tenants,
        args.days,
        args.out_dir.display(),
        args.truth.display()
    );
    Ok(())
}
