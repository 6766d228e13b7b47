//! A tenant's funnels ([`remarketable_core::funnels`]): their definitions, for the web
//! dashboard's funnel widget and the funnel report (in [`crate::reports`]).
//!
//! | route | credential | answers |
//! |---|---|---|
//! | `GET /api/v1/tenants/{tenant_id}/funnels` | read key or share token | 200 `{"funnels": [...]}` |
//! | `PUT /api/v1/tenants/{tenant_id}/funnels/{name}` | read key | 200 the saved funnel and what building its state found; 400 `bad_funnel`, `bad_title`, `bad_funnel_name`; 404; 409 `too_many_funnels` |
//! | `DELETE /api/v1/tenants/{tenant_id}/funnels/{name}` | read key | 204; 404 |
//!
//! A save creates the funnel or replaces the one of that name (its steps and its state, which
//! is built again from the stored events in the same request).

use crate::access::{key_holder_of, tenant_id_of, ApiJson, TenantAccess};
use crate::error::ApiError;
use crate::{ApiState, Db};
use axum::extract::{DefaultBodyLimit, Path};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use remarketable_core::funnels::{self, Definition, Saved};
use remarketable_core::ErrorCode;
use serde_json::json;
use std::sync::Arc;

/// Largest body of a save: eight steps with 512-byte prefixes take under 6 KiB.
const MAX_BODY_BYTES: usize = 16 << 10;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/tenants/{tenant_id}/funnels", get(list))
        .route(
            "/api/v1/tenants/{tenant_id}/funnels/{name}",
            axum::routing::put(save).delete(remove),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// `GET /api/v1/tenants/{tenant_id}/funnels`: also for share links, whose dashboards draw them.
async fn list(
    access: TenantAccess,
    Path(tenant): Path<String>,
    Db(client): Db,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant_id = tenant_id_of(&tenant)?;
    access.require_tenant(tenant_id)?;
    let list = funnels::list(&**client, tenant_id).await?;
    Ok(Json(json!({ "funnels": list })))
}

/// `PUT /api/v1/tenants/{tenant_id}/funnels/{name}`
async fn save(
    access: TenantAccess,
    Path((tenant, name)): Path<(String, String)>,
    Db(mut client): Db,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Json<Saved>, ApiError> {
    let tenant_id = key_holder_of(&access, &tenant)?;
    let name = funnels::parse_name(&name)?;
    let definition = Definition::parse(body)?;
    let saved = funnels::save(&mut client, tenant_id, &name, &definition).await?;
    tracing::info!(
        tenant_id,
        funnel = %saved.funnel.name,
        funnel_id = saved.funnel.funnel_id,
        replaced = saved.replaced,
        events_matched = saved.events_matched,
        sessions = saved.sessions,
        "funnel saved"
    );
    Ok(Json(saved))
}

/// `DELETE /api/v1/tenants/{tenant_id}/funnels/{name}`
async fn remove(
    access: TenantAccess,
    Path((tenant, name)): Path<(String, String)>,
    Db(mut client): Db,
) -> Result<StatusCode, ApiError> {
    let tenant_id = key_holder_of(&access, &tenant)?;
    let name = funnels::parse_name(&name)?;
    if funnels::delete(&mut client, tenant_id, &name).await? {
        tracing::info!(tenant_id, funnel = %name, "funnel deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(ErrorCode::NotFound, "no such funnel"))
    }
}
