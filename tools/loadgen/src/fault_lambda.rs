//! `loadgen lambda-faults`: the fault run's Lambda variant (issue 13). Generated storefront
//! traffic (malformed, late and producer-duplicate events included) is delivered as MSK or
//! Kinesis events to the real `lambda` binary (role `ingest`) through devhost's Runtime API
//! stand-in, one process per partition as Lambda runs them, and delivered the way an event
//! source mapping does: a batch is retried, unchanged, until an invocation succeeds, and only
//! then does its partition move on; now and then a batch already acknowledged is delivered
//! again. Meanwhile the function is SIGKILLed in the middle of invocations (a fresh process
//! then gets the same batch), and the caller may stop PostgreSQL (invocations fail with a typed
//! error and are retried). Everything generated goes to the truth file; `loadgen check` then
//! says whether the database holds each event exactly once.

use crate::bench_lambda::{LambdaProcess, CLUSTER_ARN};
use crate::traffic::{Traffic, TrafficConfig, LATE_MAX};
use crate::truth::{Run, Truth};
use anyhow::{bail, Context};
use chrono::{DateTime, Duration as TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use remarketable_core::event::EventLimits;
use remarketable_devhost::lambda_api::{kinesis_event, msk_event, KafkaRecord, Outcome};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The Kinesis stream of a run's positions (its seed appended, as to the Kafka topic: positions
/// start at 0 in every run, so another run into the same database needs another seed).
pub const STREAM_ARN: &str = "arn:aws:kinesis:eu-west-1:123456789012:stream/rmk-fault";
/// An invocation that has not answered by then is given up (the process is replaced).
const INVOCATION_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    Kafka,
    Kinesis,
}

#[derive(clap::Args)]
pub struct LambdaFaultArgs {
    /// The `lambda` binary.
    #[arg(long)]
    lambda: PathBuf,
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    #[arg(long, value_enum, default_value = "kafka")]
    source: Source,
    /// Events to generate.
    #[arg(long, default_value_t = 12_000)]
    events: usize,
    /// Partitions (Kafka) or shards (Kinesis), one process each.
    #[arg(long, default_value_t = 4)]
    partitions: usize,
    /// Records per batch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Events per second over all partitions (batches are paced to it).
    #[arg(long, default_value_t = 300)]
    rate: u32,
    /// SIGKILLs of a process while an invocation is in flight.
    #[arg(long, default_value_t = 4)]
    kills: u32,
    /// Tenants 1..=N (registered by the caller).
    #[arg(long, default_value_t = 20)]
    tenants: i64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long)]
    truth: PathBuf,
}

/// What the deliveries went through, summed over the partitions.
#[derive(Default)]
struct Tally {
    invocations: AtomicU64,
    failed: AtomicU64,
    kills: AtomicU64,
    restarts: AtomicU64,
    redeliveries: AtomicU64,
    error_types: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

/// The serialized events of one partition, in order.
fn batches(
    source: Source,
    seed: u64,
    partition: usize,
    records: &[(i64, DateTime<Utc>, &str)],
    batch: usize,
) -> anyhow::Result<Vec<Vec<u8>>> {
    records
        .chunks(batch)
        .map(|chunk| {
            let topic = format!("clickstream-{seed}");
            let event = match source {
                Source::Kafka => {
                    let records: Vec<KafkaRecord> = chunk
                        .iter()
                        .map(|(offset, at, body)| KafkaRecord {
                            topic: &topic,
                            partition: partition as i64,
                            offset: *offset,
                            timestamp_ms: at.timestamp_millis(),
                            value: Some(body.as_bytes()),
                        })
                        .collect();
                    msk_event(CLUSTER_ARN, &records)
                }
                Source::Kinesis => {
                    // Kinesis sequence numbers: 56-digit decimals, increasing, never contiguous.
                    let records: Vec<(String, Vec<u8>)> = chunk
                        .iter()
                        .map(|(n, _, body)| {
                            let seq = format!(
                                "4959033827149025660855969253836157109592157598913{:07}",
                                n * 3
                            );
                            (seq, body.as_bytes().to_vec())
                        })
                        .collect();
                    // One arrival time per batch: every record of it was enqueued then.
                    let arrival = chunk[0].1.timestamp() as f64;
                    kinesis_event(
                        &format!("{STREAM_ARN}-{seed}"),
                        &format!("shardId-{partition:012}"),
                        arrival,
                        &records,
                    )
                }
            };
            Ok(serde_json::to_vec(&event)?)
        })
        .collect()
}

/// Delivers one partition's batches in order, as an event source mapping does.
async fn deliver(
    args: Arc<LambdaFaultArgs>,
    partition: usize,
    events: Vec<Vec<u8>>,
    kill: Arc<AtomicU32>,
    tally: Arc<Tally>,
    pace: Duration,
) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(args.seed ^ ((partition as u64 + 1) * 0x9e37_79b9));
    let mut process = LambdaProcess::start(&args.lambda, &args.database_url).await?;
    let mut i = 0;
    let mut redeliver = false;
    while i < events.len() {
        let started = Instant::now();
        // A redelivery sends the batch before this one again (already acknowledged).
        let at = if redeliver { i - 1 } else { i };
        tally.invocations.fetch_add(1, Ordering::Relaxed);
        let invocation = process.api.invoke(events[at].clone(), INVOCATION_TIMEOUT);
        let kill_now = kill
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        let outcome = if kill_now {
            // Somewhere inside the invocation: before, during or after its commit. An
            // invocation done before that moment leaves the kill to the next one.
            let after = Duration::from_millis(rng.random_range(1..40));
            tokio::select! {
                outcome = invocation => {
                    kill.fetch_add(1, Ordering::Relaxed);
                    Some(outcome)
                }
                () = tokio::time::sleep(after) => None,
            }
        } else {
            Some(invocation.await)
        };
        let Some(outcome) = outcome else {
            process
                .child
                .start_kill()
                .context("SIGKILL the lambda process")?;
            process.child.wait().await?;
            tally.kills.fetch_add(1, Ordering::Relaxed);
            process = LambdaProcess::start(&args.lambda, &args.database_url).await?;
            tally.restarts.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        match outcome {
            Ok(Outcome::Response(body)) => {
                let answer: serde_json::Value = serde_json::from_slice(&body)
                    .with_context(|| format!("partition {partition}: the answer is not JSON"))?;
                if answer["batches"].as_array().is_none_or(|b| b.is_empty()) {
                    bail!("partition {partition}: an answer without batch reports: {answer}");
                }
                if redeliver {
                    redeliver = false;
                    tally.redeliveries.fetch_add(1, Ordering::Relaxed);
                } else {
                    i += 1;
                    redeliver = i > 0 && i < events.len() && rng.random_bool(0.05);
                }
                if let Some(rest) = pace.checked_sub(started.elapsed()) {
                    tokio::time::sleep(rest).await;
                }
            }
            Ok(Outcome::Error { error_type, .. }) => {
                // The database is down or refused: the mapping retries the same batch.
                tally.failed.fetch_add(1, Ordering::Relaxed);
                tally.error_types.lock().expect("lock").insert(error_type);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                // No answer: the environment is replaced, the batch retried.
                eprintln!("lambda-faults: partition {partition}: no answer ({e}); restarting");
                let _ = process.child.start_kill();
                let _ = process.child.wait().await;
                process = LambdaProcess::start(&args.lambda, &args.database_url).await?;
                tally.restarts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

pub async fn run(args: LambdaFaultArgs) -> anyhow::Result<()> {
    if args.events == 0 || args.partitions == 0 || args.batch == 0 || args.rate == 0 {
        bail!("--events, --partitions, --batch and --rate must be at least 1");
    }
    let args = Arc::new(args);
    let started_at = Utc::now();
    let mut truth = Truth::load(&args.truth)?;
    let config = TrafficConfig {
        seed: args.seed,
        tenants: args.tenants,
        late_share: 0.1,
        late_max: LATE_MAX,
        malformed_share: 0.02,
        duplicate_share: 0.01,
        limits: EventLimits::default(),
    };
    let mut traffic = Traffic::new(config);
    // Batch by batch, round robin over the partitions; a batch's events enqueued in the same
    // whole second (Kinesis gives one arrival time per batch), the last batch a second ago.
    let per_round = args.batch * args.partitions;
    let rounds = args.events.div_ceil(per_round);
    let first = DateTime::from_timestamp(started_at.timestamp() - rounds as i64 - 1, 0)
        .context("the clock")?;
    let mut generated = Vec::with_capacity(args.events);
    let (mut late, mut malformed, mut duplicates) = (0, 0, 0);
    for n in 0..args.events {
        let at = first + TimeDelta::seconds((n / per_round) as i64);
        let g = traffic.next(at);
        truth.expected.add(&g);
        late += u64::from(g.late);
        malformed += u64::from(g.malformed.is_some());
        duplicates += u64::from(g.producer_duplicate);
        generated.push((n, at, g.body));
    }
    let mut per_partition: Vec<Vec<(i64, DateTime<Utc>, &str)>> = vec![Vec::new(); args.partitions];
    for (n, at, body) in &generated {
        let p = (n / args.batch) % args.partitions;
        let offset = per_partition[p].len() as i64;
        let position = match args.source {
            Source::Kafka => offset,
            Source::Kinesis => *n as i64,
        };
        per_partition[p].push((position, *at, body));
    }
    let run_index = truth.runs.len();
    truth.runs.push(Run {
        started_at,
        updated_at: started_at,
        seed: args.seed,
        target: format!("lambda-{:?}", args.source).to_lowercase(),
        url: args.lambda.display().to_string(),
        generated: args.events as u64,
        acknowledged: 0,
        late,
        malformed,
        producer_duplicates: duplicates,
        uncertain_resends: 0,
        finished: false,
    });
    // Written before the first delivery: an interrupted run leaves a truth that is not
    // finished, never one that misses delivered events.
    truth.save(&args.truth)?;

    let tally = Arc::new(Tally::default());
    // Kills still to do, per partition.
    let kills: Vec<Arc<AtomicU32>> = (0..args.partitions)
        .map(|_| Arc::new(AtomicU32::new(0)))
        .collect();
    let pace = Duration::from_secs_f64(per_round as f64 / f64::from(args.rate));
    let expected_run = pace * rounds as u32;
    let mut tasks = Vec::new();
    for (p, records) in per_partition.iter().enumerate() {
        let events = batches(args.source, args.seed, p, records, args.batch)?;
        tasks.push(tokio::spawn(deliver(
            args.clone(),
            p,
            events,
            kills[p].clone(),
            tally.clone(),
            pace,
        )));
    }
    // The kills, spread over the first four fifths of the run, each on a random partition.
    let killer = {
        let (kills, n, seed) = (kills.clone(), args.kills, args.seed);
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(31));
            let gap = expected_run.mul_f64(0.8) / (n + 1);
            for _ in 0..n {
                tokio::time::sleep(gap).await;
                kills[rng.random_range(0..kills.len())].fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let clock = Instant::now();
    for t in tasks {
        t.await??;
    }
    killer.abort();
    let took = clock.elapsed();
    let run = &mut truth.runs[run_index];
    run.acknowledged = args.events as u64;
    run.updated_at = Utc::now();
    run.finished = true;
    truth.save(&args.truth)?;
    let errors = tally.error_types.lock().expect("lock").clone();
    eprintln!(
        "lambda-faults ({:?}): {} events in {} partitions delivered in {:.1} s: {} invocations, \
         {} failed ({}), {} SIGKILLs mid-invocation, {} processes restarted, {} batches \
         redelivered; truth in {}",
        args.source,
        args.events,
        args.partitions,
        took.as_secs_f64(),
        tally.invocations.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        if errors.is_empty() {
            "none".to_string()
        } else {
            errors.into_iter().collect::<Vec<_>>().join(", ")
        },
        tally.kills.load(Ordering::Relaxed),
        tally.restarts.load(Ordering::Relaxed),
        tally.redeliveries.load(Ordering::Relaxed),
        args.truth.display()
    );
    if tally.kills.load(Ordering::Relaxed) < u64::from(args.kills) {
        bail!(
            "only {} of the {} SIGKILLs happened (the run ended first): send more events",
            tally.kills.load(Ordering::Relaxed),
            args.kills
        );
    }
    Ok(())
}
