//! `POST /api/v1/admin/tenants/{tenant_id}/dead-letters/replay` (admin key): re-validates a
//! tenant's pending dead letters with today's rules (after the tenant was registered, or a
//! limit raised), stores those that pass and marks them replayed. Replaying again changes
//! nothing. Body (optional): `{"max": 1..=10000, "after": <dead_letter_id>}`; the answer says
//! whether more remain and where to resume.

use crate::access::{tenant_id_of, AdminAccess, ApiJson};
use crate::error::ApiError;
use crate::{ApiState, Db};
use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use remarketable_core::replay::{self, DEFAULT_MAX};
use remarketable_core::ErrorCode;
use serde::Deserialize;
use std::sync::Arc;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new().route(
        "/api/v1/admin/tenants/{tenant_id}/dead-letters/replay",
        post(replay_dead_letters),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    max: Option<usize>,
    after: Option<i64>,
}

async fn replay_dead_letters(
    State(state): State<Arc<ApiState>>,
    _admin: AdminAccess,
    Path(tenant): Path<String>,
    Db(mut client): Db,
    ApiJson(request): ApiJson<ReplayRequest>,
) -> Result<Json<replay::ReplayReport>, ApiError> {
    // Admin routes may name any tenant, so the id is checked here (0 was replayed as a tenant).
    let tenant_id = tenant_id_of(&tenant)?;
    let max = request.max.unwrap_or(DEFAULT_MAX);
    if !(1..=DEFAULT_MAX).contains(&max) {
        return Err(ApiError::new(
            ErrorCode::BadParameter,
            format!("max must be between 1 and {DEFAULT_MAX}"),
        ));
    }
    let report = replay::replay_dead_letters_after(
        &mut client,
        tenant_id,
        request.after,
        &state.settings.limits,
        chrono::Utc::now(),
        max,
    )
    .await
    .map_err(remarketable_core::Error::from)?;
    // The core logged the replay ("dead letters replayed"), as it does for every host.
    Ok(Json(report))
}
