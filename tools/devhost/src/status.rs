//! Counters behind `GET /admin/status` and the terminal summary line.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Per function.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FunctionStats {
    pub invocations: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

/// Per consumer: one function reading one partition.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerStats {
    pub consumer_group: String,
    /// Last checkpointed sequence number; `None` before the first checkpoint.
    pub last_checkpointed_sequence: Option<i64>,
    /// Retry number in progress, 0 when not retrying.
    pub retrying: i64,
}

/// Key of a consumer: (hub, partition, function).
pub type ConsumerKey = (String, u32, String);

#[derive(Default)]
struct Inner {
    functions: BTreeMap<String, FunctionStats>,
    consumers: BTreeMap<ConsumerKey, ConsumerStats>,
}

/// Shared counters; cheap to update from any task.
#[derive(Default)]
pub struct Stats {
    inner: Mutex<Inner>,
    restarts: AtomicU64,
    /// Bumped on every change, so the summary line prints only when something moved.
    version: AtomicU64,
}

impl Stats {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.version.fetch_add(1, Ordering::Relaxed);
        f(&mut inner)
    }

    fn read<R>(&self, f: impl FnOnce(&Inner) -> R) -> R {
        f(&self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn register_function(&self, name: &str) {
        self.with(|i| {
            i.functions.entry(name.to_string()).or_default();
        });
    }

    /// Counts one finished invocation; `error` is the reason it failed.
    pub fn invocation(&self, function: &str, error: Option<String>) {
        self.with(|i| {
            let f = i.functions.entry(function.to_string()).or_default();
            f.invocations += 1;
            if let Some(e) = error {
                f.failures += 1;
                f.last_error = Some(e);
            }
        });
    }

    pub fn consumer(&self, key: ConsumerKey, group: &str, checkpoint: Option<i64>) {
        self.with(|i| {
            let c = i.consumers.entry(key).or_default();
            c.consumer_group = group.to_string();
            c.last_checkpointed_sequence = checkpoint;
        });
    }

    pub fn checkpointed(&self, key: &ConsumerKey, seq: i64) {
        self.with(|i| {
            if let Some(c) = i.consumers.get_mut(key) {
                c.last_checkpointed_sequence = Some(seq);
                c.retrying = 0;
            }
        });
    }

    pub fn retrying(&self, key: &ConsumerKey, count: i64) {
        self.with(|i| {
            if let Some(c) = i.consumers.get_mut(key) {
                c.retrying = count;
            }
        });
    }

    pub fn handler_restarted(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        self.version.fetch_add(1, Ordering::Relaxed);
    }

    pub fn handler_restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    pub fn functions(&self) -> BTreeMap<String, FunctionStats> {
        self.read(|i| i.functions.clone())
    }

    pub fn consumers(&self) -> BTreeMap<ConsumerKey, ConsumerStats> {
        self.read(|i| i.consumers.clone())
    }
}
