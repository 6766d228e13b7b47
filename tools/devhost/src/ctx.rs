//! The state every devhost task shares: the loaded app, the hubs, the handler and the counters.
//!
//! It has its own module so that the triggers and the HTTP front depend on it alone, not on
//! the wiring in [`crate::host`] that starts them.

use crate::app::{App, FunctionDef};
use crate::envelope::Encoding;
use crate::handler::Handler;
use crate::hub::Hub;
use crate::status::Stats;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Everything the tasks share.
pub struct Ctx {
    pub app: App,
    pub hubs: BTreeMap<String, Arc<Hub>>,
    pub handler: Arc<Handler>,
    pub stats: Arc<Stats>,
    pub state_dir: PathBuf,
    pub encoding: Encoding,
    pub namespace: String,
    pub addr: SocketAddr,
    /// HTTP-triggered functions, most specific route first.
    pub http_functions: Vec<FunctionDef>,
    pub shutdown: CancellationToken,
}

/// The `GET /admin/status` document.
pub fn status_json(ctx: &Ctx) -> Value {
    let consumers = ctx.stats.consumers();
    let mut hubs = Map::new();
    for (name, hub) in &ctx.hubs {
        let partitions: Vec<Value> = hub
            .partitions
            .iter()
            .map(|p| {
                let last = p.last_seq();
                let mut readers = Map::new();
                for ((h, id, function), c) in &consumers {
                    if h != name || *id != p.id {
                        continue;
                    }
                    let done = c.last_checkpointed_sequence.unwrap_or(-1);
                    readers.insert(
                        function.clone(),
                        json!({
                            "consumerGroup": c.consumer_group,
                            "lastCheckpointedSequence": c.last_checkpointed_sequence,
                            "lag": (last - done).max(0),
                            "retrying": c.retrying,
                        }),
                    );
                }
                json!({
                    "partition": p.id.to_string(),
                    "lastEnqueuedSequence": (last >= 0).then_some(last),
                    "consumers": readers,
                })
            })
            .collect();
        hubs.insert(name.clone(), json!({"partitions": partitions}));
    }
    json!({
        "handler": {"ready": ctx.handler.is_ready(), "restarts": ctx.stats.handler_restarts()},
        "hubs": hubs,
        "functions": ctx.stats.functions(),
    })
}
