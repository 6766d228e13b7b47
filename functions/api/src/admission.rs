//! Admission of report requests, so that no credential or tenant can take the reports'
//! capacity: each key or share link may have `REPORT_CONCURRENCY_PER_CREDENTIAL` reports
//! running in this process, each tenant `REPORT_CONCURRENCY_PER_TENANT`; one more is refused at
//! once with 429 `too_many_requests` and `Retry-After` (never queued). An admitted report then
//! takes a connection of the reports' own pool (`db::report_pool`), waiting at most until its
//! deadline, so ingest's pool is never touched by reports.

use crate::access::{TenantAccess, Via};
use crate::error::ApiError;
use crate::ApiState;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use remarketable_core::ErrorCode;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Slot {
    Credential(String),
    Tenant(i64),
}

/// Counts of running reports per credential and per tenant.
pub struct Admission {
    per_credential: usize,
    per_tenant: usize,
    running: Arc<Mutex<HashMap<Slot, usize>>>,
}

/// A report's place among the running ones, given back when dropped.
pub struct Admitted {
    running: Arc<Mutex<HashMap<Slot, usize>>>,
    slots: [Slot; 2],
}

impl Admission {
    pub fn new(per_credential: usize, per_tenant: usize) -> Self {
        Admission {
            per_credential,
            per_tenant,
            running: Arc::default(),
        }
    }

    /// Admits one more report of `access`, or refuses it at once.
    pub fn admit(&self, access: &TenantAccess) -> Result<Admitted, ApiError> {
        let credential = match &access.via {
            Via::ApiKey { key_id } => format!("key:{key_id}"),
            Via::ShareToken { token_id, .. } => format!("share:{token_id}"),
        };
        let slots = [Slot::Credential(credential), Slot::Tenant(access.tenant_id)];
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let count = |slot: &Slot| running.get(slot).copied().unwrap_or(0);
        if count(&slots[0]) >= self.per_credential {
            return Err(too_many(format!(
                "this credential already has {} reports running; retry in a moment",
                self.per_credential
            )));
        }
        if count(&slots[1]) >= self.per_tenant {
            return Err(too_many(format!(
                "this tenant already has {} reports running; retry in a moment",
                self.per_tenant
            )));
        }
        for slot in &slots {
            *running.entry(slot.clone()).or_default() += 1;
        }
        Ok(Admitted {
            running: self.running.clone(),
            slots,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for slot in &self.slots {
            if let Some(n) = running.get_mut(slot) {
                *n -= 1;
                if *n == 0 {
                    running.remove(slot);
                }
            }
        }
    }
}

fn too_many(message: String) -> ApiError {
    ApiError::new(ErrorCode::TooManyRequests, message)
}

/// What a report handler runs with: the caller's read access, its admission, and a connection
/// of the reports' pool (whose statements time out after `REPORT_TIMEOUT_MS`).
pub struct Report {
    pub access: TenantAccess,
    pub client: deadpool_postgres::Object,
    _admitted: Admitted,
}

impl FromRequestParts<Arc<ApiState>> for Report {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, ApiError> {
        let access = TenantAccess::from_request_parts(parts, state).await?;
        let admitted = state.admission.admit(&access)?;
        let client = state.reports.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
                ApiError::new(
                    ErrorCode::ReportTimeout,
                    "every report connection is busy; retry later",
                )
            }
            e => ApiError::pool(e),
        })?;
        Ok(Report {
            access,
            client,
            _admitted: admitted,
        })
    }
}

/// The deadline of a report request: its statements' own timeout plus a second for the
/// server's cancel to arrive first. A request still running then answers 503
/// `report_timeout` (the statement is cancelled by the server's timeout soon after).
pub async fn deadline(
    axum::extract::State(state): axum::extract::State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    let limit = state.settings.report_timeout + std::time::Duration::from_secs(1);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorCode::ReportTimeout,
            "the report took longer than its time limit; retry later or ask for a shorter range",
        )
        .into_response(),
    }
}
