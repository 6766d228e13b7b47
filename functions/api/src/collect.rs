//! collect's admission, the same on every host (the Azure envelope route, the Lambda HTTP
//! route): the write key, its allowed origins, the rate limits, the core's body checks
//! ([`remarketable_core::collect`]) and the daily quotas ([`remarketable_core::quota`]). The host
//! then sends the admitted events on (Event Hubs output, Kinesis) and answers 202.
//!
//! Refusals: 401 `unauthorized`, 403 `forbidden` (not a write key), 403 `origin_not_allowed`,
//! 429 `too_many_requests` (a rate; `Retry-After` in seconds), 429 `quota_exceeded` (the day's
//! quota; `Retry-After` until the next UTC day), and the body checks' 400/413/415.

use crate::access::write_key;
use crate::{ApiError, ApiState};
use chrono::Utc;
use remarketable_core::collect::{self, CollectLimits};
use remarketable_core::quota::{Accepted, KeyPolicy, Refusal};
use remarketable_core::ErrorCode;

/// What a collect request presents, as the host received it.
#[derive(Debug, Clone, Copy, Default)]
pub struct CollectRequest<'a> {
    /// `x-rmk-write-key`, else the `write_key` query parameter.
    pub write_key: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub referer: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: &'a str,
}

/// Events admitted to the stream, counted against the key's and tenant's quotas.
#[derive(Debug)]
pub struct Admitted {
    /// The events' JSON texts, one stream message each.
    pub events: Vec<String>,
    accepted: Accepted,
}

/// Admits a collect request, or answers why not.
pub async fn admit(state: &ApiState, request: CollectRequest<'_>) -> Result<Admitted, ApiError> {
    let key = write_key(state, request.write_key).await?;
    let tenant_id = key
        .tenant_id
        .ok_or_else(|| ApiError::new(ErrorCode::Forbidden, "collect needs a tenant's write key"))?;
    let no_policy = KeyPolicy::default();
    let policy = key.collect.as_deref().unwrap_or(&no_policy);
    let gate = &state.collect_gate;
    let now = Utc::now();
    let admission = match gate.open(
        tenant_id,
        &key.key_id,
        policy,
        request.origin,
        request.referer,
        now,
    ) {
        Ok(admission) => admission,
        Err(refused) => {
            // A flood of refusals is counted too, at most once per flush interval.
            if gate.flush_due() {
                flush_usage(state, false).await;
            }
            return Err(refusal(refused));
        }
    };
    let events = collect::accept(
        request.body,
        request.content_type,
        CollectLimits::from_settings(&state.settings),
        tenant_id,
    )?;
    // A connection only when the day's totals must be read or written.
    let client = if admission.needs_totals(now) || gate.flush_due() {
        match state.pool.get().await {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::warn!(error = %e, "collect's usage cannot be read or written now");
                None
            }
        }
    } else {
        None
    };
    let taken = admission
        .take(client.as_deref().map(|c| &**c), events.len(), now)
        .await;
    if let Some(client) = &client {
        if let Err(e) = gate.flush(&***client, false).await {
            tracing::warn!(error = %e, "collect's usage not written yet; kept for the next try");
        }
    }
    let accepted = taken.map_err(refusal)?;
    Ok(Admitted { events, accepted })
}

/// Writes the usage this process counted and has not written yet (`force`: whether or not
/// the flush interval has passed, as at shutdown).
pub async fn flush_usage(state: &ApiState, force: bool) {
    let written = match state.pool.get().await {
        Ok(client) => state.collect_gate.flush(&**client, force).await,
        Err(e) => {
            tracing::warn!(error = %e, "collect's last usage counts cannot be written");
            return;
        }
    };
    if let Err(e) = written {
        tracing::warn!(error = %e, "collect's last usage counts cannot be written");
    }
}

/// The host could not send admitted events on: they no longer count against the quotas.
pub fn not_sent(state: &ApiState, admitted: Admitted) {
    state.collect_gate.give_back(admitted.accepted);
}

fn refusal(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Origin => ApiError::new(
            ErrorCode::OriginNotAllowed,
            "this write key is not accepted from the page's origin",
        ),
        Refusal::Rate { scope, retry_after } => ApiError::new(
            ErrorCode::TooManyRequests,
            format!(
                "the {}'s event rate is exceeded; retry after {retry_after} s",
                scope.as_str()
            ),
        )
        .with_retry_after(retry_after),
        Refusal::Quota {
            scope,
            limit,
            retry_after,
        } => ApiError::new(
            ErrorCode::QuotaExceeded,
            format!(
                "the {}'s quota of {limit} events per UTC day is used up",
                scope.as_str()
            ),
        )
        .with_retry_after(retry_after),
    }
}
