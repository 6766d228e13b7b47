//! `GET`/`PUT /api/v1/admin/tenants/{tenant_id}/attribution` (admin key): a tenant's attribution
//! settings, which event types are conversions, the lookback and whether clicks outrank
//! impressions. A `PUT` changes the fields it names (left out or `null`: kept) and answers the
//! settings in force; conversions stored from then on are attributed by them
//! ([`remarketable_core::attribution`]).

use crate::access::{access_error, tenant_id_of, AdminAccess, ApiJson};
use crate::error::ApiError;
use crate::ApiState;
use crate::Db;
use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use remarketable_core::access::AccessError;
use remarketable_core::attribution::{self, Settings, SettingsChange};
use std::sync::Arc;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new().route(
        "/api/v1/admin/tenants/{tenant_id}/attribution",
        get(read_settings).put(change_settings),
    )
}

async fn read_settings(
    _admin: AdminAccess,
    Path(tenant): Path<String>,
    Db(client): Db,
) -> Result<Json<Settings>, ApiError> {
    let tenant_id = tenant_id_of(&tenant)?;
    attribution::settings(&**client, tenant_id)
        .await
        .map_err(ApiError::database)?
        .map(Json)
        .ok_or_else(|| access_error(AccessError::UnknownTenant(tenant_id)))
}

async fn change_settings(
    admin: AdminAccess,
    Path(tenant): Path<String>,
    Db(client): Db,
    ApiJson(change): ApiJson<SettingsChange>,
) -> Result<Json<Settings>, ApiError> {
    let tenant_id = tenant_id_of(&tenant)?;
    let change = change.checked()?;
    let settings = attribution::set_settings(&**client, tenant_id, &change)
        .await
        .map_err(ApiError::database)?
        .ok_or_else(|| access_error(AccessError::UnknownTenant(tenant_id)))?;
    tracing::info!(
        tenant_id,
        admin_key = %admin.key_id,
        conversion_event_types = ?settings.conversion_event_types,
        lookback_seconds = settings.lookback_seconds,
        clicks_first = settings.clicks_first,
        "attribution settings changed"
    );
    Ok(Json(settings))
}
