//! `loadgen send`: generate traffic, deliver it in rounds of chunks, and keep the truth file
//! and the sequence state as checkpoints of what the target acknowledged.

use crate::deliver::{self, AttemptError, Delivery, RetryPolicy};
use crate::traffic::{Traffic, TrafficConfig};
use crate::truth::{Run, Tally, Truth, UncertainResend};
use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A handler's `/ingest`, as Event Hubs trigger invocations over `partitions` partitions.
    Ingest { url: String, partitions: usize },
    /// devhost's producer endpoint, with up to `parallel` chunks in flight.
    Hub { url: String, parallel: usize },
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::Ingest { .. } => "ingest",
            Target::Hub { .. } => "hub",
        }
    }

    fn url(&self) -> &str {
        match self {
            Target::Ingest { url, .. } | Target::Hub { url, .. } => url,
        }
    }

    /// Chunks per round: one per partition, or the chunks in flight.
    fn lanes(&self) -> usize {
        match self {
            Target::Ingest { partitions, .. } => *partitions,
            Target::Hub { parallel, .. } => *parallel,
        }
    }
}

/// Everything `send` needs.
#[derive(Debug, Clone)]
pub struct SendOptions {
    pub target: Target,
    pub traffic: TrafficConfig,
    /// Stop after this many events (counting every generated event).
    pub events: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Events per second (0: as fast as the target takes them).
    pub rate: u64,
    /// Most events per chunk.
    pub batch: usize,
    pub truth: Option<PathBuf>,
    /// Direct mode: each partition's next sequence number, kept across runs.
    pub state: Option<PathBuf>,
    pub retry: RetryPolicy,
    pub timeout: Duration,
    pub progress: bool,
    /// The enqueue time events are generated for (`Utc::now` but in tests, which fix it to
    /// make the bodies reproducible).
    pub clock: fn() -> DateTime<Utc>,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub generated: u64,
    pub acknowledged: u64,
    pub malformed: u64,
    pub late: u64,
    pub producer_duplicates: u64,
    pub uncertain_resends: u64,
    pub retries: u64,
    pub elapsed_ms: u64,
    /// Stopped by Ctrl-C before the events or the duration were reached.
    pub interrupted: bool,
    /// Ingest target: the handler's own counts, summed over its replies.
    pub handler: HandlerCounts,
    /// Ingest target: chunks whose reply disagrees with the truth (unregistered tenants, other
    /// `EVENT_*` limits than loadgen's, ...). The check will show where.
    pub disagreements: u64,
}

/// What a handler reported for a batch (`ReturnValue` of `/ingest`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandlerCounts {
    pub stored: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
}

/// One chunk: its bodies and what they leave in the database.
struct Chunk {
    lane: usize,
    lines: Vec<String>,
    tally: Tally,
    malformed: u64,
    late: u64,
}

/// Runs until the event count or duration is reached, the target fails for good, or `stop`
/// is set (Ctrl-C). The truth file holds exactly the acknowledged chunks (plus uncertain
/// resends) whenever it is written.
pub async fn run(opts: SendOptions, stop: Arc<AtomicBool>) -> anyhow::Result<Summary> {
    if opts.batch == 0 || opts.target.lanes() == 0 {
        bail!("--batch and --partitions/--parallel must be at least 1");
    }
    if opts.events.is_none() && opts.duration.is_none() {
        bail!("say how much to send: --events or --duration");
    }
    let mut truth = match &opts.truth {
        Some(path) => Truth::load(path)?,
        None => Truth::default(),
    };
    let now = Utc::now();
    truth.runs.push(Run {
        started_at: now,
        updated_at: now,
        seed: opts.traffic.seed,
        target: opts.target.name().into(),
        url: opts.target.url().into(),
        generated: 0,
        acknowledged: 0,
        late: 0,
        malformed: 0,
        producer_duplicates: 0,
        uncertain_resends: 0,
        finished: false,
    });
    let mut sequences = match opts.target {
        Target::Ingest { partitions, .. } => next_sequences(opts.state.as_deref(), partitions)?,
        Target::Hub { .. } => Vec::new(),
    };
    remarketable_core::db::tls::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(opts.timeout)
        .build()
        .context("HTTP client")?;
    let bar = progress_bar(&opts);
    let mut traffic = Traffic::new(opts.traffic.clone());
    let mut summary = Summary::default();
    let started = Instant::now();
    let mut failure = None;
    while !stop.load(Ordering::Relaxed) && !done(&opts, summary.generated, started) {
        let chunks = next_round(&opts, &mut traffic, &mut summary, &mut sequences);
        let deliveries = deliver_round(&opts, &client, &stop, &chunks, &sequences).await;
        for (chunk, delivery) in chunks.iter().zip(deliveries) {
            summary.retries += u64::from(delivery.attempts - 1);
            if let Err(e) = account(&mut truth, &mut summary, chunk, &delivery) {
                failure.get_or_insert(e);
            }
        }
        checkpoint(&opts, &mut truth, &summary, false, &sequences)?;
        bar.set_position(summary.generated);
        bar.set_message(progress_message(&summary));
        if let Some(e) = failure.take() {
            // Ctrl-C cutting a chunk's retries short ends the run as interrupted, not failed.
            let cut_short = stop.load(Ordering::Relaxed) && !matches!(e, AttemptError::Refused(_));
            if !cut_short {
                bar.abandon();
                return Err(anyhow::Error::new(e).context("a chunk could not be delivered"));
            }
        }
        pace(&opts, summary.generated, started, &stop).await;
    }
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    summary.interrupted = stop.load(Ordering::Relaxed);
    checkpoint(
        &opts,
        &mut truth,
        &summary,
        !summary.interrupted,
        &sequences,
    )?;
    bar.finish_with_message(progress_message(&summary));
    Ok(summary)
}

fn done(opts: &SendOptions, generated: u64, started: Instant) -> bool {
    opts.events.is_some_and(|n| generated >= n)
        || opts.duration.is_some_and(|d| started.elapsed() >= d)
}

/// Generates one round: a chunk per lane. In direct mode, reserves each chunk's sequence
/// numbers (`sequences` then holds the next free ones; the chunk starts `len` before).
fn next_round(
    opts: &SendOptions,
    traffic: &mut Traffic,
    summary: &mut Summary,
    sequences: &mut [i64],
) -> Vec<Chunk> {
    let lanes = opts.target.lanes();
    // With a rate, rounds stay short (about a quarter second) so the pace is smooth.
    let size = if opts.rate > 0 {
        ((opts.rate as usize) / lanes / 4).clamp(1, opts.batch)
    } else {
        opts.batch
    };
    let mut chunks = Vec::with_capacity(lanes);
    for lane in 0..lanes {
        let left = opts
            .events
            .map_or(usize::MAX, |n| n.saturating_sub(summary.generated) as usize);
        let n = size.min(left);
        if n == 0 {
            break;
        }
        let enqueued = (opts.clock)();
        let mut chunk = Chunk {
            lane,
            lines: Vec::with_capacity(n),
            tally: Tally::default(),
            malformed: 0,
            late: 0,
        };
        for _ in 0..n {
            let g = traffic.next(enqueued);
            chunk.tally.add(&g);
            chunk.malformed += u64::from(g.malformed.is_some() && !g.producer_duplicate);
            chunk.late += u64::from(g.late && !g.producer_duplicate);
            chunk.lines.push(g.body);
        }
        summary.generated += n as u64;
        if let Some(next) = sequences.get_mut(lane) {
            *next += n as i64;
        }
        chunks.push(chunk);
    }
    chunks
}

/// Sends every chunk of a round at once and waits for all.
async fn deliver_round(
    opts: &SendOptions,
    client: &reqwest::Client,
    stop: &Arc<AtomicBool>,
    chunks: &[Chunk],
    sequences: &[i64],
) -> Vec<Delivery<Option<HandlerCounts>>> {
    let mut tasks = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        let (client, stop, retry) = (client.clone(), stop.clone(), opts.retry.clone());
        let prepared = match &opts.target {
            Target::Hub { url, .. } => {
                deliver::ndjson(&chunk.lines).map(|body| (url.clone(), body, false))
            }
            Target::Ingest { url, .. } => {
                let first = sequences[chunk.lane] - chunk.lines.len() as i64;
                let enqueued = vec![(opts.clock)(); chunk.lines.len()];
                let envelope = deliver::envelope(chunk.lane, first, &enqueued, &chunk.lines);
                Ok((url.clone(), envelope.to_string().into_bytes(), true))
            }
        };
        let lines = chunk.lines.len();
        tasks.push(tokio::spawn(async move {
            let (url, body, direct): (String, Vec<u8>, bool) = match prepared {
                Ok(p) => p,
                Err(e) => {
                    return Delivery {
                        result: Err(e),
                        attempts: 1,
                        unanswered: 0,
                    }
                }
            };
            with_retries_for(&retry, &stop, &client, &url, body, lines, direct).await
        }));
    }
    let mut deliveries: Vec<Delivery<Option<HandlerCounts>>> = Vec::with_capacity(tasks.len());
    for task in tasks {
        deliveries.push(task.await.unwrap_or_else(|e| Delivery {
            result: Err(AttemptError::NoAnswer(format!(
                "the sending task failed: {e}"
            ))),
            attempts: 1,
            unanswered: 0,
        }));
    }
    deliveries
}

async fn with_retries_for(
    retry: &RetryPolicy,
    stop: &AtomicBool,
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    lines: usize,
    direct: bool,
) -> Delivery<Option<HandlerCounts>> {
    deliver::with_retries(retry, stop, || {
        let body = body.clone();
        async move {
            if direct {
                let reply = deliver::post_ingest(client, url, body).await?;
                let count = |field: &str| reply["ReturnValue"][field].as_u64().unwrap_or(0);
                Ok(Some(HandlerCounts {
                    stored: count("stored"),
                    duplicates: count("duplicates"),
                    dead_lettered: count("dead_lettered"),
                }))
            } else {
                deliver::post_hub(client, url, body, lines).await?;
                Ok(None)
            }
        }
    })
    .await
}

/// Adds an acknowledged chunk to the truth; records a chunk the target may hold more than
/// once (hub mode) as an uncertain resend. Answers the delivery's failure, if any.
fn account(
    truth: &mut Truth,
    summary: &mut Summary,
    chunk: &Chunk,
    delivery: &Delivery<Option<HandlerCounts>>,
) -> Result<(), AttemptError> {
    let acknowledged = delivery.result.is_ok();
    let run = truth.runs.last_mut().expect("the run was recorded");
    let n = chunk.lines.len() as u64;
    run.generated += n;
    if acknowledged {
        truth.expected.merge(&chunk.tally, 1);
        run.acknowledged += n;
        run.malformed += chunk.malformed;
        run.late += chunk.late;
        run.producer_duplicates += chunk.tally.producer_duplicates;
        summary.acknowledged += n;
        summary.malformed += chunk.malformed;
        summary.late += chunk.late;
        summary.producer_duplicates += chunk.tally.producer_duplicates;
    }
    // In direct mode a resend carries the same sequence numbers and is deduplicated, so only
    // a chunk that was never acknowledged can be uncertain (stored once, or not at all).
    let extra = delivery.possible_extra_copies();
    let uncertain = match run.target.as_str() {
        "hub" => extra,
        _ if !acknowledged => extra.min(1),
        _ => 0,
    };
    if uncertain > 0 {
        run.uncertain_resends += 1;
        summary.uncertain_resends += 1;
        truth.uncertain_resends.push(UncertainResend {
            at: Utc::now(),
            events: n,
            extra_copies: uncertain,
            acknowledged,
            tally: chunk.tally.clone(),
        });
    }
    if let Ok(Some(reply)) = &delivery.result {
        compare_reply(summary, chunk, reply);
    }
    delivery.result.as_ref().map(|_| ()).map_err(Clone::clone)
}

/// Adds a handler's reply to the summary, noting when it disagrees with the chunk's truth. A
/// resent batch whose first attempt was committed comes back as duplicates: not comparable.
fn compare_reply(summary: &mut Summary, chunk: &Chunk, reply: &HandlerCounts) {
    let h = &mut summary.handler;
    h.stored += reply.stored;
    h.duplicates += reply.duplicates;
    h.dead_lettered += reply.dead_lettered;
    let expected = (
        chunk.tally.stored_total(),
        chunk.tally.dead_lettered_total(),
    );
    if reply.duplicates == 0 && (reply.stored, reply.dead_lettered) != expected {
        summary.disagreements += 1;
    }
}

/// Writes the truth and the sequence state: after every round, and at the end.
fn checkpoint(
    opts: &SendOptions,
    truth: &mut Truth,
    summary: &Summary,
    finished: bool,
    sequences: &[i64],
) -> anyhow::Result<()> {
    let run = truth.runs.last_mut().expect("the run was recorded");
    run.updated_at = Utc::now();
    run.finished = finished;
    debug_assert_eq!(run.acknowledged, summary.acknowledged);
    if let Some(path) = &opts.truth {
        truth.save(path)?;
    }
    if let (Some(path), false) = (&opts.state, sequences.is_empty()) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(sequences)?)
            .with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// Sleeps until the rate allows the next round (waking early on Ctrl-C).
async fn pace(opts: &SendOptions, generated: u64, started: Instant, stop: &AtomicBool) {
    if opts.rate == 0 {
        return;
    }
    let due = Duration::from_secs_f64(generated as f64 / opts.rate as f64);
    while let Some(wait) = due.checked_sub(started.elapsed()) {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        tokio::time::sleep(wait.min(Duration::from_millis(100))).await;
    }
}

fn progress_bar(opts: &SendOptions) -> ProgressBar {
    if !opts.progress {
        return ProgressBar::hidden();
    }
    let total = opts.events.or_else(|| {
        opts.duration
            .filter(|_| opts.rate > 0)
            .map(|d| (d.as_secs_f64() * opts.rate as f64) as u64)
    });
    let bar = match total {
        Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    let template = if total.is_some() {
        "{elapsed_precise} [{bar:30}] {human_pos}/{human_len} events, {per_sec} | {msg}"
    } else {
        "{elapsed_precise} {spinner} {human_pos} events, {per_sec} | {msg}"
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn progress_message(s: &Summary) -> String {
    format!(
        "acknowledged {}, malformed {}, late {}, producer duplicates {}, retries {}, uncertain {}",
        s.acknowledged, s.malformed, s.late, s.producer_duplicates, s.retries, s.uncertain_resends
    )
}

/// Each partition's next sequence number: from the state file when there is one, otherwise
/// from the clock (so runs without state still move forward).
pub fn next_sequences(state: Option<&Path>, partitions: usize) -> anyhow::Result<Vec<i64>> {
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
