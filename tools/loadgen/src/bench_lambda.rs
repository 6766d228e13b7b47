//! The Lambda part of the ingest benchmark: the `lambda` binary (role `ingest`) run as Lambda
//! runs it, through devhost's Runtime API stand-in, fed MSK events of the same rows the
//! handler gets, one process per partition (Lambda runs one invocation at a time per execution
//! environment, and one environment per Kafka partition at most).

use anyhow::{bail, Context};
use remarketable_devhost::lambda_api::{msk_event, KafkaRecord, LambdaApi, Outcome};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const CLUSTER_ARN: &str = "arn:aws:kafka:eu-west-1:123456789012:cluster/bench/uuid-1";
const TIMEOUT: Duration = Duration::from_secs(120);

/// One `lambda` process with its own Runtime API stand-in.
pub struct LambdaProcess {
    pub api: Arc<LambdaApi>,
    pub child: tokio::process::Child,
    pub started: Instant,
}

impl LambdaProcess {
    pub async fn start(binary: &Path, database_url: &str) -> anyhow::Result<LambdaProcess> {
        let api = Arc::new(LambdaApi::start().await?);
        let started = Instant::now();
        let child = tokio::process::Command::new(binary)
            .env("AWS_LAMBDA_RUNTIME_API", api.runtime_api())
            .env("AWS_LAMBDA_FUNCTION_NAME", "rmk-ingest")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/rmk-ingest")
            .env("LAMBDA_ROLE", "ingest")
            .env("DATABASE_URL", database_url)
            .env("DB_POOL_SIZE", "2")
            .env("EVENT_RETENTION_DAYS", "2")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        Ok(LambdaProcess {
            api,
            child,
            started,
        })
    }

    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("lambda pid")
    }

    /// One invocation; its response, or an error with the function's error object.
    pub async fn invoke(&self, payload: Vec<u8>) -> anyhow::Result<serde_json::Value> {
        match self.api.invoke(payload, TIMEOUT).await? {
            Outcome::Response(body) => Ok(serde_json::from_slice(&body)?),
            Outcome::Error {
                error_type,
                error_message,
            } => bail!("the invocation failed: {error_type}: {error_message}"),
        }
    }
}

/// MSK events of `batch` records each, per partition, serialized: partition `p` gets every
/// `partitions`-th batch of `bodies`, at offsets equal to the rows' indexes.
pub fn events(
    bodies: &[String],
    enqueued: &[chrono::DateTime<chrono::Utc>],
    batch: usize,
    partitions: usize,
) -> anyhow::Result<Vec<Vec<Vec<u8>>>> {
    let mut per_partition = vec![Vec::new(); partitions];
    for (i, chunk) in bodies.chunks(batch).enumerate() {
        let start = i * batch;
        let p = i % partitions;
        let records: Vec<KafkaRecord> = chunk
            .iter()
            .enumerate()
            .map(|(j, body)| KafkaRecord {
                topic: "clickstream",
                partition: p as i64,
                offset: (start + j) as i64,
                timestamp_ms: enqueued[start + j].timestamp_millis(),
                value: Some(body.as_bytes()),
            })
            .collect();
        per_partition[p].push(serde_json::to_vec(&msk_event(CLUSTER_ARN, &records))?);
    }
    Ok(per_partition)
}

/// Delivers each partition's events to its own process, the partitions at once.
pub async fn deliver(
    processes: &[LambdaProcess],
    per_partition: &[Vec<Vec<u8>>],
) -> anyhow::Result<()> {
    let tasks: Vec<_> = per_partition
        .iter()
        .zip(processes)
        .map(|(events, process)| {
            let api = process.api.clone();
            let events = events.clone();
            tokio::spawn(async move {
                for payload in events {
                    match api.invoke(payload, TIMEOUT).await? {
                        Outcome::Response(body) => {
                            let answer: serde_json::Value = serde_json::from_slice(&body)?;
                            let dead: u64 = answer["batches"]
                                .as_array()
                                .map(|b| b.iter().filter_map(|b| b["dead_lettered"].as_u64()).sum())
                                .unwrap_or(u64::MAX);
                            if dead != 0 {
                                bail!("unexpected dead letters: {answer}");
                            }
                        }
                        Outcome::Error {
                            error_type,
                            error_message,
                        } => bail!("invocation failed: {error_type}: {error_message}"),
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

/// Cold starts: a fresh process with one invocation (one record) waiting, timed from spawn to
/// the answer (includes the first database connection), and its peak RSS after it. `runs`
/// processes, one after another.
pub async fn cold_starts(
    binary: &Path,
    database_url: &str,
    body: &str,
    runs: usize,
) -> anyhow::Result<Vec<(Duration, u64)>> {
    let mut out = Vec::with_capacity(runs);
    for run in 0..runs {
        let record = KafkaRecord {
            topic: "coldstart",
            partition: 0,
            offset: run as i64,
            timestamp_ms: chrono::Utc::now().timestamp_millis(),
            value: Some(body.as_bytes()),
        };
        let payload = serde_json::to_vec(&msk_event(CLUSTER_ARN, &[record]))?;
        let process = LambdaProcess::start(binary, database_url).await?;
        let answer = process.invoke(payload).await?;
        let took = process.started.elapsed();
        if answer["batches"][0]["stored"] != 1 {
            bail!("cold start invocation did not store its record: {answer}");
        }
        let rss = crate::bench::peak_rss_kib(process.pid()?)?;
        out.push((took, rss));
    }
    Ok(out)
}
