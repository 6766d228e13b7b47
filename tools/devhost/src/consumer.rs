//! Event Hubs trigger: one consumer per (function, partition), checkpointing like the host.
//!
//! The checkpoint moves after every invocation that finished, failed or not, except while the
//! function's retry policy is still retrying: then the same batch is delivered again with a
//! `RetryContext`. An invocation cut off by a handler crash or by shutdown never moves it: the
//! batch is delivered again once the handler is back (or after the next start).

use crate::app::{FunctionDef, Trigger};
use crate::ctx::Ctx;
use crate::envelope::{self, PartitionInfo, RetryInfo};
use crate::hub::{Partition, StoredEvent};
use crate::invoke::{invoke, Outcome};
use crate::state;
use crate::status::ConsumerKey;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The checkpoint file of one consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub sequence_number: i64,
    pub offset: u64,
    pub updated: DateTime<Utc>,
}

/// `<state>/checkpoints/<hub>/<consumer group>/<function>/<partition>.json`
pub fn checkpoint_path(
    ctx: &Ctx,
    hub: &str,
    group: &str,
    function: &str,
    partition: u32,
) -> PathBuf {
    ctx.state_dir
        .join("checkpoints")
        .join(state::safe_name(hub))
        .join(state::safe_name(group))
        .join(state::safe_name(function))
        .join(format!("{partition}.json"))
}

/// Runs until shutdown.
pub async fn run(ctx: Arc<Ctx>, function: Arc<FunctionDef>, partition: Arc<Partition>) {
    let Trigger::EventHub {
        name: binding,
        hub,
        consumer_group,
        ..
    } = &function.trigger
    else {
        return;
    };
    let path = checkpoint_path(&ctx, hub, consumer_group, &function.name, partition.id);
    let checkpoint = match state::read_json::<Checkpoint>(&path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "unreadable checkpoint; consumer not started");
            return;
        }
    };
    let key: ConsumerKey = (hub.clone(), partition.id, function.name.clone());
    ctx.stats.consumer(
        key.clone(),
        consumer_group,
        checkpoint.as_ref().map(|c| c.sequence_number),
    );
    let mut next = match &checkpoint {
        Some(c) => c.sequence_number + 1,
        None if ctx.app.host.event_hubs.from_end => partition.last_seq() + 1,
        None => 0,
    };
    let info = PartitionInfo {
        namespace: ctx.namespace.clone(),
        hub: hub.clone(),
        consumer_group: consumer_group.clone(),
        partition: partition.id,
    };
    while let Some(batch) = next_batch(&ctx, &partition, next).await {
        let Some(last) = batch.last().map(|e| (e.seq, e.offset)) else {
            continue;
        };
        if !deliver(&ctx, &function, binding, &info, &key, &batch).await {
            return; // shutdown: no checkpoint for the batch in flight
        }
        let saved = Checkpoint {
            sequence_number: last.0,
            offset: last.1,
            updated: Utc::now(),
        };
        let file = path.clone();
        let written = tokio::task::spawn_blocking(move || state::write_atomic(&file, &saved)).await;
        match written {
            Ok(Ok(())) => ctx.stats.checkpointed(&key, last.0),
            Ok(Err(e)) => {
                tracing::error!(path = %path.display(), error = %e, "checkpoint not written; the batch will be delivered again after a restart")
            }
            Err(e) => tracing::error!(error = %e, "checkpoint task failed"),
        }
        next = last.0 + 1;
    }
}

/// Invokes until the batch may be checkpointed; `false` on shutdown.
async fn deliver(
    ctx: &Ctx,
    function: &FunctionDef,
    binding: &str,
    info: &PartitionInfo,
    key: &ConsumerKey,
    batch: &[Arc<StoredEvent>],
) -> bool {
    let mut retry: Option<RetryInfo> = None;
    let mut attempt: i64 = 0;
    loop {
        let body = envelope::event_hub(
            &function.name,
            binding,
            batch,
            info,
            retry.as_ref(),
            ctx.encoding,
        );
        match invoke(ctx, function, &body).await {
            Outcome::Done(_) => {
                ctx.stats.invocation(&function.name, None);
                return true;
            }
            Outcome::Failed(error) => {
                ctx.stats.invocation(&function.name, Some(error.clone()));
                tracing::warn!(function = %function.name, partition = info.partition, %error, "invocation failed");
                attempt += 1;
                let Some(policy) = function.retry.as_ref().filter(|p| p.allows(attempt)) else {
                    // No policy, or a finite one used up: the host moves on.
                    return true;
                };
                ctx.stats.retrying(key, attempt);
                if !sleep_or_shutdown(ctx, policy.delay(attempt)).await {
                    return false;
                }
                retry = Some(RetryInfo {
                    retry_count: attempt,
                    max_retry_count: policy.max_retry_count,
                    error,
                });
            }
            Outcome::CutOff { reason, generation } => {
                ctx.stats.invocation(&function.name, Some(reason.clone()));
                tracing::warn!(function = %function.name, partition = info.partition, %reason, "invocation cut off; delivering the batch again when the handler is back");
                ctx.handler
                    .wait_replaced(generation, Duration::from_secs(10))
                    .await;
                if ctx.shutdown.is_cancelled() {
                    return false;
                }
            }
            Outcome::Shutdown => return false,
        }
    }
}

async fn sleep_or_shutdown(ctx: &Ctx, delay: Duration) -> bool {
    tokio::select! {
        _ = ctx.shutdown.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// Waits for a batch starting at `from`: delivered once `minEventBatchSize` events are there, or
/// `maxWaitTime` after the first one showed up; `None` on shutdown.
async fn next_batch(ctx: &Ctx, partition: &Partition, from: i64) -> Option<Vec<Arc<StoredEvent>>> {
    let config = &ctx.app.host.event_hubs;
    let mut changes = partition.subscribe();
    let mut first_seen: Option<Instant> = None;
    loop {
        let last = *changes.borrow_and_update();
        let available = (last - from + 1).max(0) as usize;
        if available == 0 {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return None,
                changed = changes.changed() => if changed.is_err() { return None },
            }
            continue;
        }
        let since = *first_seen.get_or_insert_with(Instant::now);
        let waited = since.elapsed();
        if available >= config.min_batch || waited >= config.max_wait {
            return Some(partition.read(from, config.max_batch));
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return None,
            _ = changes.changed() => {}
            _ = tokio::time::sleep(config.max_wait - waited) => {}
        }
    }
}
