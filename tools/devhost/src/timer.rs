//! Timer trigger: NCRONTAB schedules in UTC, status kept on disk between runs.
//!
//! The status file holds `Last`, `Next` and `LastUpdated` like the host's schedule monitor. When
//! devhost starts after a `Next` that already passed, the run fires at once with `IsPastDue`.
//! Runs are sequential, so a run never overlaps itself; a failed run is retried only under a
//! retry policy.

use crate::app::{FunctionDef, Trigger};
use crate::ctx::Ctx;
use crate::envelope::{self, RetryInfo, ScheduleStatus};
use crate::invoke::{invoke, Outcome};
use crate::state;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use std::path::PathBuf;
use std::sync::Arc;

/// A run this much later than its scheduled time is past due.
const PAST_DUE_AFTER: TimeDelta = TimeDelta::seconds(1);

/// `<state>/timers/<function>.json`
pub fn status_path(ctx: &Ctx, function: &str) -> PathBuf {
    ctx.state_dir
        .join("timers")
        .join(format!("{}.json", state::safe_name(function)))
}

/// .NET's `DateTime.MinValue`: `Last` before the first run.
fn never() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(1, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or_default()
}

/// Whether a run fired at `fired` for the occurrence `scheduled` is past due.
pub fn is_past_due(scheduled: DateTime<Utc>, fired: DateTime<Utc>) -> bool {
    fired - scheduled > PAST_DUE_AFTER
}

/// Runs until shutdown.
pub async fn run(ctx: Arc<Ctx>, function: Arc<FunctionDef>) {
    let Trigger::Timer {
        name: binding,
        schedule,
        run_on_startup,
    } = &function.trigger
    else {
        return;
    };
    let path = status_path(&ctx, &function.name);
    let mut status = match state::read_json::<ScheduleStatus>(&path) {
        Ok(Some(s)) => s,
        other => {
            if let Err(e) = other {
                tracing::warn!(path = %path.display(), error = %e, "unreadable timer status; starting afresh");
            }
            let now = Utc::now();
            let Some(next) = schedule.next_after(now) else {
                tracing::error!(function = %function.name, %schedule, "schedule never fires");
                return;
            };
            let fresh = ScheduleStatus {
                last: never(),
                next,
                last_updated: now,
            };
            save(&path, &fresh).await;
            fresh
        }
    };
    if *run_on_startup && !fire(&ctx, &function, binding, &status, false).await {
        return;
    }
    loop {
        let wait = (status.next - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let past_due = is_past_due(status.next, Utc::now());
        if !fire(&ctx, &function, binding, &status, past_due).await {
            return;
        }
        let now = Utc::now();
        let Some(next) = schedule.next_after(now) else {
            return;
        };
        status = ScheduleStatus {
            last: status.next,
            next,
            last_updated: now,
        };
        save(&path, &status).await;
    }
}

async fn save(path: &std::path::Path, status: &ScheduleStatus) {
    let path = path.to_path_buf();
    let status = status.clone();
    let shown = path.display().to_string();
    match tokio::task::spawn_blocking(move || state::write_atomic(&path, &status)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(path = %shown, error = %e, "timer status not written"),
        Err(e) => tracing::error!(error = %e, "timer status task failed"),
    }
}

/// One run, with retries if the function has a policy; `false` on shutdown.
async fn fire(
    ctx: &Ctx,
    function: &FunctionDef,
    binding: &str,
    status: &ScheduleStatus,
    past_due: bool,
) -> bool {
    let mut retry: Option<RetryInfo> = None;
    let mut attempt: i64 = 0;
    loop {
        let body = envelope::timer(&function.name, binding, status, past_due, retry.as_ref());
        let error = match invoke(ctx, function, &body).await {
            Outcome::Done(_) => {
                ctx.stats.invocation(&function.name, None);
                return true;
            }
            Outcome::Shutdown => return false,
            Outcome::Failed(e) | Outcome::CutOff { reason: e, .. } => e,
        };
        ctx.stats.invocation(&function.name, Some(error.clone()));
        tracing::warn!(function = %function.name, %error, "timer run failed");
        attempt += 1;
        let Some(policy) = function.retry.as_ref().filter(|p| p.allows(attempt)) else {
            return true;
        };
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return false,
            _ = tokio::time::sleep(policy.delay(attempt)) => {}
        }
        retry = Some(RetryInfo {
            retry_count: attempt,
            max_retry_count: policy.max_retry_count,
            error,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_due_only_when_late() {
        let scheduled = DateTime::parse_from_rfc3339("2026-11-26T10:07:00Z")
            .unwrap()
            .to_utc();
        assert!(!is_past_due(
            scheduled,
            scheduled + TimeDelta::milliseconds(30)
        ));
        assert!(is_past_due(scheduled, scheduled + TimeDelta::minutes(5)));
        assert_eq!(never().to_rfc3339(), "0001-01-01T00:00:00+00:00");
    }
}
