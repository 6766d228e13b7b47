//! One invocation of the handler, shared by every trigger: send the envelope, classify the
//! answer, show its `Logs`, apply its non-HTTP outputs.

use crate::app::{FunctionDef, Output};
use crate::ctx::Ctx;
use crate::envelope::{self, InvocationResult};
use crate::handler::CallError;
use crate::hub::Target;
use bytes::Bytes;
use serde_json::Value;

/// How an invocation ended.
#[derive(Debug)]
pub enum Outcome {
    /// 2xx with a JSON object; outputs already applied.
    Done(InvocationResult),
    /// Failed as the host counts failures (non-2xx, not JSON, timeout, outputs not written).
    Failed(String),
    /// The handler went away mid-call (crash or restart): the host never saw an answer.
    CutOff { reason: String, generation: u64 },
    /// devhost is stopping.
    Shutdown,
}

/// Calls `POST /<function>` with `envelope` and applies the outputs of a successful answer.
pub async fn invoke(ctx: &Ctx, function: &FunctionDef, envelope: &Value) -> Outcome {
    let body = match serde_json::to_vec(envelope) {
        Ok(b) => Bytes::from(b),
        Err(e) => return Outcome::Failed(format!("cannot encode the envelope: {e}")),
    };
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        reqwest::header::HeaderValue::from_static("application/json"),
    );
    let path = format!("/{}", function.name);
    let response = match ctx
        .handler
        .call(reqwest::Method::POST, &path, headers, body)
        .await
    {
        Ok(r) => r,
        Err(CallError::CutOff { reason, generation }) => {
            return Outcome::CutOff { reason, generation }
        }
        Err(CallError::Timeout) => return Outcome::Failed("timed out (functionTimeout)".into()),
        Err(CallError::Shutdown) => return Outcome::Shutdown,
    };
    let result = match envelope::parse_response(response.status.as_u16(), &response.body) {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(e),
    };
    for line in &result.logs {
        println!("[{}] {line}", function.name);
    }
    if let Err(e) = apply_outputs(ctx, function, &result).await {
        return Outcome::Failed(e);
    }
    Outcome::Done(result)
}

/// Writes Event Hubs outputs; the invocation fails if they cannot be stored.
async fn apply_outputs(
    ctx: &Ctx,
    function: &FunctionDef,
    result: &InvocationResult,
) -> Result<(), String> {
    for output in &function.outputs {
        let Output::EventHub { name, hub } = output else {
            continue;
        };
        let value = if name == "$return" {
            result.return_value.as_ref()
        } else {
            result.outputs.get(name)
        };
        let Some(value) = value else { continue };
        let events = envelope::output_events(value);
        if events.is_empty() {
            continue;
        }
        let Some(store) = ctx.hubs.get(hub) else {
            return Err(format!("output {name}: hub {hub} is not open"));
        };
        let count = events.len();
        store
            .append(events, Target::RoundRobin)
            .await
            .map_err(|e| format!("output {name}: {e}"))?;
        tracing::debug!(function = %function.name, hub = %hub, count, "output events appended");
    }
    Ok(())
}
