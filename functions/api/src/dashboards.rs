//! Saved dashboards of a tenant ([`remarketable_core::dashboards`]), for the web dashboard.
//!
//! | route | credential | answers |
//! |---|---|---|
//! | `GET /api/v1/tenants/{tenant_id}/dashboards` | read key or share token | 200 `{"dashboards": [...]}` |
//! | `PUT /api/v1/tenants/{tenant_id}/dashboards/{name}` | read key | 200 the saved dashboard; 400 `bad_layout`, `bad_title`, `bad_dashboard_name`; 404; 409 `version_conflict`, `too_many_dashboards` |
//! | `DELETE /api/v1/tenants/{tenant_id}/dashboards/{name}` | read key | 204; 404 |
//!
//! A save names the version it started from (`expected_version`; none to create): a save over
//! someone else's newer save is refused with 409 rather than overwriting it.

use crate::access::{key_holder_of, tenant_id_of, ApiJson, TenantAccess};
use crate::error::ApiError;
use crate::{ApiState, Db};
use axum::extract::{DefaultBodyLimit, Path};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use remarketable_core::dashboards::{self, DashboardError, Layout};
use remarketable_core::telemetry::{Audit, Event};
use remarketable_core::ErrorCode;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// Largest body of a save: 30 widgets take well under 8 KiB.
const MAX_BODY_BYTES: usize = 32 << 10;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/tenants/{tenant_id}/dashboards", get(list))
        .route(
            "/api/v1/tenants/{tenant_id}/dashboards/{name}",
            axum::routing::put(save).delete(remove),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

fn dashboard_error(e: DashboardError) -> ApiError {
    match e {
        DashboardError::Invalid { code, message } => ApiError::new(code, message),
        DashboardError::Conflict(message) => ApiError::new(ErrorCode::VersionConflict, message),
        DashboardError::NotFound => ApiError::new(ErrorCode::NotFound, "no such dashboard"),
        e @ DashboardError::TooMany => ApiError::new(ErrorCode::TooManyDashboards, e.to_string()),
        DashboardError::Database(e) => ApiError::database(e),
    }
}

/// `GET /api/v1/tenants/{tenant_id}/dashboards`: also for share links, which draw a layout.
async fn list(
    access: TenantAccess,
    Path(tenant): Path<String>,
    Db(client): Db,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant_id = tenant_id_of(&tenant)?;
    access.require_tenant(tenant_id)?;
    let list = dashboards::list(&**client, tenant_id)
        .await
        .map_err(dashboard_error)?;
    Ok(Json(json!({ "dashboards": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SaveRequest {
    title: String,
    layout: serde_json::Value,
    #[serde(default)]
    expected_version: Option<i64>,
}

/// `PUT /api/v1/tenants/{tenant_id}/dashboards/{name}`
async fn save(
    access: TenantAccess,
    Path((tenant, name)): Path<(String, String)>,
    Db(mut client): Db,
    ApiJson(body): ApiJson<SaveRequest>,
) -> Result<Json<dashboards::Dashboard>, ApiError> {
    let tenant_id = key_holder_of(&access, &tenant)?;
    let name = dashboards::parse_name(&name).map_err(dashboard_error)?;
    let title = dashboards::parse_title(&body.title).map_err(dashboard_error)?;
    let layout = Layout::parse(body.layout).map_err(dashboard_error)?;
    let saved = dashboards::save(
        &mut client,
        tenant_id,
        &name,
        &title,
        &layout,
        body.expected_version,
    )
    .await
    .map_err(dashboard_error)?;
    Audit::DashboardSaved {
        tenant_id,
        dashboard: &saved.name,
        version: saved.version,
    }
    .emit();
    Ok(Json(saved))
}

/// `DELETE /api/v1/tenants/{tenant_id}/dashboards/{name}`
async fn remove(
    access: TenantAccess,
    Path((tenant, name)): Path<(String, String)>,
    Db(client): Db,
) -> Result<StatusCode, ApiError> {
    let tenant_id = key_holder_of(&access, &tenant)?;
    let name = dashboards::parse_name(&name).map_err(dashboard_error)?;
    if dashboards::delete(&**client, tenant_id, &name)
        .await
        .map_err(dashboard_error)?
    {
        Audit::DashboardDeleted {
            tenant_id,
            dashboard: &name,
        }
        .emit();
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(dashboard_error(DashboardError::NotFound))
    }
}
