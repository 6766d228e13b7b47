//! The `rollup` and `maintenance` roles: EventBridge Scheduler invocations (the target's
//! `Input`, sent verbatim) and EventBridge rule `Scheduled Event` envelopes.
//!
//! Both arrive asynchronously and at least once, so a run may be repeated or overlap another:
//! the jobs are safe for that (rollups serialize on their watermark rows, partition upkeep on
//! an advisory lock). The deployment's part is reserved concurrency 1 and no async retries.

use remarketable_core::{Error, ErrorCode};
use serde_json::Value;

/// Which job a schedule asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    Rollup,
    Maintenance,
}

impl Job {
    pub fn name(self) -> &'static str {
        match self {
            Job::Rollup => "rollup",
            Job::Maintenance => "maintenance",
        }
    }
}

/// What a schedule said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// `rule` (EventBridge rule) or `scheduler` (EventBridge Scheduler input).
    pub via: &'static str,
    /// The scheduled time, when the payload carries one (`time` of a rule event, or
    /// `scheduled_time` of the documented Scheduler input).
    pub scheduled_time: Option<String>,
}

fn bad(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::BadEnvelope, message)
}

/// Checks a schedule payload against the function's job.
///
/// - A rule event must be `{"source": "aws.events", "detail-type": "Scheduled Event", ...}`.
/// - Scheduler input is whatever the schedule's target `Input` says; the README documents
///   `{"job": "rollup", "scheduled_time": "<aws.scheduler.scheduled-time>"}`. A `job` other than
///   this function's fails loudly (a schedule pointed at the wrong function); an object without
///   `job` runs this function's job.
pub fn decode(payload: &Value, job: Job) -> Result<Trigger, Error> {
    let object = payload
        .as_object()
        .ok_or_else(|| bad("a schedule payload must be a JSON object"))?;
    if let Some(detail_type) = object.get("detail-type") {
        if detail_type.as_str() != Some("Scheduled Event")
            || object.get("source").and_then(Value::as_str) != Some("aws.events")
        {
            return Err(bad(format!(
                "an EventBridge event that is not a Scheduled Event from aws.events \
                 (detail-type {detail_type})"
            )));
        }
        return Ok(Trigger {
            via: "rule",
            scheduled_time: object.get("time").and_then(Value::as_str).map(Into::into),
        });
    }
    match object.get("job") {
        None => {}
        Some(Value::String(asked)) if asked == job.name() => {}
        Some(other) => {
            return Err(bad(format!(
                "the schedule asks for job {other}, but this function runs {}",
                job.name()
            )))
        }
    }
    Ok(Trigger {
        via: "scheduler",
        scheduled_time: object
            .get("scheduled_time")
            .and_then(Value::as_str)
            .map(Into::into),
    })
}
