//! `POST /api/v1/admin/tenants/{tenant_id}/spend` (admin key): a CSV upload of a tenant's ad
//! spend (`text/csv`: a header naming `date,campaign,source,medium,cost,currency`, `source` and
//! `medium` optional, then one row per campaign, source, medium and day). All of it is stored
//! or, with a line refused (400 `bad_spend` naming the line), none of it; an upload replaces the
//! figures it repeats, so sending one twice counts it once. The answer counts what it added,
//! changed and found unchanged. The rules are [`remarketable_core::spend`]'s.

use crate::access::{access_error, tenant_id_of, AdminAccess};
use crate::error::ApiError;
use crate::{ApiState, Db};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use remarketable_core::access::AccessError;
use remarketable_core::spend::{self, UploadReport};
use remarketable_core::{tenants, ErrorCode};
use std::sync::Arc;

/// Largest upload body: room for [`spend::MAX_UPLOAD_ROWS`] rows of ordinary length.
pub const MAX_UPLOAD_BYTES: usize = 16 << 20;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route(
            "/api/v1/admin/tenants/{tenant_id}/spend",
            post(upload_spend),
        )
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
}

async fn upload_spend(
    State(state): State<Arc<ApiState>>,
    admin: AdminAccess,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Db(mut client): Db,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<UploadReport>, ApiError> {
    let tenant_id = tenant_id_of(&tenant)?;
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    if media.as_deref() != Some("text/csv") {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the spend as text/csv",
        ));
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::TooLarge,
                format!("an upload is at most {MAX_UPLOAD_BYTES} bytes"),
            )
        } else {
            ApiError::new(ErrorCode::BadRequest, "request body could not be read")
        }
    })?;
    if !tenants::exists(&**client, tenant_id)
        .await
        .map_err(ApiError::database)?
    {
        return Err(access_error(AccessError::UnknownTenant(tenant_id)));
    }
    let report = spend::upload(&mut client, tenant_id, &body, &state.settings.limits)
        .await
        .map_err(remarketable_core::Error::from)?;
    tracing::info!(
        tenant_id,
        admin_key = %admin.key_id,
        rows = report.rows,
        "spend upload by admin key"
    );
    Ok(Json(report))
}
