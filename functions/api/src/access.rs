//! Access control of the HTTP API: credential extractors and the key, tenant and share-token
//! endpoints.
//!
//! Credentials:
//! - `Authorization: Bearer rmk_read_…` — a tenant's read key: its reports, its share tokens;
//! - `Authorization: Share rms_…` or `?share=rms_…` (for iframes) — a share token: read-only
//!   reports of one tenant, possibly with fixed filters;
//! - `Authorization: Bearer rmk_admin_…` — an admin key: tenants and keys;
//! - `x-rmk-write-key: rmk_write_…` or `?write_key=` — a tenant's write key, for `collect` only.
//!
//! | route | credential | answers |
//! |---|---|---|
//! | `POST /api/v1/admin/tenants` | admin | 201; 400, 409 `tenant_exists` |
//! | `POST /api/v1/admin/tenants/{tenant_id}/keys` | admin | 201 with the key, shown once |
//! | `GET /api/v1/admin/tenants/{tenant_id}/keys` | admin | 200, no secrets |
//! | `GET`/`PUT /api/v1/admin/tenants/{tenant_id}/collect-limits` | admin | 200: the tenant's overrides of collect's limits and the limits in force |
//! | `DELETE /api/v1/admin/keys/{key_id}` | admin | 204 (the key's share tokens die with it); 404 |
//! | `GET /api/v1/admin/tenants/{tenant_id}/share-tokens` | admin | 200 |
//! | `DELETE /api/v1/admin/tenants/{tenant_id}/share-tokens/{token_id}` | admin | 204; 404 |
//! | `POST /api/v1/tenants/{tenant_id}/share-tokens` | read key | 201 with the token, shown once |
//! | `GET /api/v1/tenants/{tenant_id}/share-tokens` | read key | 200 |
//! | `DELETE /api/v1/tenants/{tenant_id}/share-tokens/{token_id}` | read key | 204; 404 |
//! | `GET /api/v1/tenants/{tenant_id}/whoami` | read key or share token | 200 |
//! | `GET /api/v1/whoami` | read key or share token | 200, with the tenant's name and time zone |
//!
//! Listings take `?limit=` (1–1000, default 100) and `?after=` (the `next` of the page before)
//! and answer `next` (`null` on the last page).
//!
//! Refusals: 401 `unauthorized` (missing, unknown or revoked credential), 401 `share_expired`,
//! 401 `share_revoked`, 403 `forbidden` (a credential of the wrong kind), 403
//! `share_tokens_disabled`, 404 `not_found` for a credential of another tenant (tenant ids are
//! not probed). Credentials are never echoed or logged.

use crate::error::ApiError;
use crate::{ApiState, Db};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use remarketable_core::access::{self, AccessError, Filters, KeyKind, Page, VerifiedKey};
use remarketable_core::quota;
use remarketable_core::telemetry::{Audit, Event};
use remarketable_core::tenants::{self, RegisterError};
use remarketable_core::ErrorCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Largest body of an access-control request.
const MAX_BODY_BYTES: usize = 16 << 10;

/// The routes of this module, merged into [`crate::app`].
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/admin/tenants", post(create_tenant))
        .route(
            "/api/v1/admin/tenants/{tenant_id}/keys",
            post(create_key).get(list_keys),
        )
        .route("/api/v1/admin/keys/{key_id}", delete(revoke_key))
        .route(
            "/api/v1/admin/tenants/{tenant_id}/collect-limits",
            get(collect_limits).put(set_collect_limits),
        )
        .route(
            "/api/v1/admin/tenants/{tenant_id}/share-tokens",
            get(admin_list_share_tokens),
        )
        .route(
            "/api/v1/admin/tenants/{tenant_id}/share-tokens/{token_id}",
            delete(admin_revoke_share_token),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/share-tokens",
            post(create_share_token).get(list_share_tokens),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/share-tokens/{token_id}",
            delete(revoke_share_token),
        )
        .route("/api/v1/tenants/{tenant_id}/whoami", get(whoami))
        .route("/api/v1/whoami", get(whoami_any))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// Maps a refusal of the core to the HTTP surface.
pub fn access_error(e: AccessError) -> ApiError {
    match e {
        AccessError::Unauthorized => unauthorized("missing, unknown or revoked credential"),
        AccessError::ShareExpired => ApiError::new(
            ErrorCode::ShareExpired,
            "the share link has expired; ask for a new one",
        ),
        AccessError::ShareRevoked => {
            ApiError::new(ErrorCode::ShareRevoked, "the share link was revoked")
        }
        AccessError::ShareTokensDisabled => ApiError::new(
            ErrorCode::ShareTokensDisabled,
            "share links are not enabled on this service",
        ),
        AccessError::UnknownTenant(id) => ApiError::new(
            ErrorCode::UnknownTenant,
            format!("tenant {id} is not registered"),
        ),
        AccessError::Invalid { code, message } => ApiError::new(code, message),
        AccessError::Random => {
            tracing::error!("the operating system's random source failed");
            ApiError::new(
                ErrorCode::RandomUnavailable,
                "cannot make a credential now; retry later",
            )
        }
        AccessError::Database(e) => ApiError::database(e),
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message)
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Forbidden, message)
}

fn bad_request(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

/// The credential a request presents.
enum Credential {
    Key(String),
    Share(String),
}

/// A query parameter of a URI; keys and tokens are URL-safe, so no percent-decoding is needed.
fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn credential(parts: &Parts) -> Result<Credential, ApiError> {
    let header = parts.headers.get(header::AUTHORIZATION);
    let share_query = query_param(parts.uri.query(), "share");
    match (header, share_query) {
        (Some(_), Some(_)) => Err(bad_request(
            ErrorCode::AmbiguousCredentials,
            "send either an Authorization header or a share parameter, not both",
        )),
        (None, Some(token)) => Ok(Credential::Share(token.to_string())),
        (None, None) => Err(unauthorized(
            "send Authorization: Bearer <key> or Share <token>",
        )),
        (Some(value), None) => {
            let value = value
                .to_str()
                .map_err(|_| unauthorized("malformed Authorization header"))?;
            let (scheme, rest) = value
                .trim()
                .split_once(' ')
                .ok_or_else(|| unauthorized("malformed Authorization header"))?;
            let rest = rest.trim().to_string();
            if scheme.eq_ignore_ascii_case("bearer") {
                Ok(Credential::Key(rest))
            } else if scheme.eq_ignore_ascii_case("share") {
                Ok(Credential::Share(rest))
            } else {
                Err(unauthorized(
                    "Authorization scheme must be Bearer (API key) or Share (share token)",
                ))
            }
        }
    }
}

/// Cheap checks first: a malformed or recently verified key needs no connection.
async fn verify_key(state: &ApiState, key: &str) -> Result<VerifiedKey, ApiError> {
    if let Some(verified) = state.verifier.cached_key(key).map_err(access_error)? {
        return Ok(verified);
    }
    let client = state.pool.get().await.map_err(ApiError::pool)?;
    state
        .verifier
        .verify_key(&**client, key)
        .await
        .map_err(access_error)
}

/// How a [`TenantAccess`] was granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Via {
    ApiKey {
        key_id: String,
    },
    ShareToken {
        token_id: String,
        expires_at: DateTime<Utc>,
    },
}

/// Read access to one tenant: a read key, or a share token (read-only, maybe with fixed
/// filters that every report must apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantAccess {
    pub tenant_id: i64,
    /// Dimension (`event_type`, `country`, `browser`, `campaign`) to the value every report of
    /// this request is restricted to.
    pub fixed_filters: Filters,
    /// True for share tokens: they may read reports and nothing else.
    pub read_only: bool,
    pub via: Via,
}

impl TenantAccess {
    /// The tenant in the path must be the credential's; another tenant's is answered as if it
    /// did not exist, so tenant ids cannot be probed.
    pub fn require_tenant(&self, path_tenant: i64) -> Result<(), ApiError> {
        if self.tenant_id == path_tenant {
            Ok(())
        } else {
            Err(ApiError::not_found())
        }
    }

    /// Refuses share tokens (for endpoints that change something).
    pub fn require_key(&self) -> Result<(), ApiError> {
        if self.read_only {
            Err(forbidden("a share link cannot do this; use a read key"))
        } else {
            Ok(())
        }
    }
}

impl FromRequestParts<Arc<ApiState>> for TenantAccess {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, ApiError> {
        match credential(parts)? {
            Credential::Key(key) => {
                let verified = verify_key(state, &key).await?;
                match (verified.kind, verified.tenant_id) {
                    (KeyKind::Read, Some(tenant_id)) => Ok(TenantAccess {
                        tenant_id,
                        fixed_filters: Filters::default(),
                        read_only: false,
                        via: Via::ApiKey {
                            key_id: verified.key_id,
                        },
                    }),
                    _ => Err(forbidden("this endpoint needs a tenant's read key")),
                }
            }
            Credential::Share(token) => {
                let secret = state.settings.share_token_secret.as_ref();
                // Signature and expiry before a connection; the database only for revocation.
                let claims = match state
                    .verifier
                    .cached_share(secret, &token, Utc::now())
                    .map_err(access_error)?
                {
                    Some(claims) => claims,
                    None => {
                        let client = state.pool.get().await.map_err(ApiError::pool)?;
                        state
                            .verifier
                            .verify_share(&**client, secret, &token, Utc::now())
                            .await
                            .map_err(access_error)?
                    }
                };
                Ok(TenantAccess {
                    tenant_id: claims.tenant_id,
                    fixed_filters: claims.filters,
                    read_only: true,
                    via: Via::ShareToken {
                        token_id: claims.token_id,
                        expires_at: claims.expires_at,
                    },
                })
            }
        }
    }
}

/// An operator: `Authorization: Bearer <admin key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAccess {
    pub key_id: String,
}

impl FromRequestParts<Arc<ApiState>> for AdminAccess {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, ApiError> {
        match credential(parts)? {
            Credential::Key(key) => {
                let verified = verify_key(state, &key).await?;
                if verified.kind == KeyKind::Admin {
                    Ok(AdminAccess {
                        key_id: verified.key_id,
                    })
                } else {
                    Err(forbidden("this endpoint needs an admin key"))
                }
            }
            Credential::Share(_) => Err(forbidden("this endpoint needs an admin key")),
        }
    }
}

/// A write key presented to `collect` (header `x-rmk-write-key` or query `write_key`): 401
/// without a valid key, 403 for a key of another kind.
pub(crate) async fn write_key(
    state: &ApiState,
    presented: Option<&str>,
) -> Result<VerifiedKey, ApiError> {
    let key = presented
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            unauthorized(
                "send the tenant's write key in x-rmk-write-key or the write_key parameter",
            )
        })?;
    let verified = verify_key(state, key).await?;
    match (verified.kind, verified.tenant_id) {
        (KeyKind::Write, Some(_)) => Ok(verified),
        _ => Err(forbidden("collect needs a tenant's write key")),
    }
}

/// A JSON object body, refused with our error shape. An empty body reads as `{}`; a body sent
/// with a content type that is not JSON is a 415 `unsupported_media_type`; another JSON value
/// than an object is a 400 `bad_request`.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json_type = req.headers().get(header::CONTENT_TYPE).map(|v| {
            let essence = v.to_str().unwrap_or("").split(';').next().unwrap_or("");
            let essence = essence.trim().to_ascii_lowercase();
            essence == "application/json" || essence.ends_with("+json")
        });
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    ErrorCode::TooLarge,
                    format!("request body is larger than {MAX_BODY_BYTES} bytes"),
                )
            } else {
                bad_request(ErrorCode::BadRequest, "request body could not be read")
            }
        })?;
        if bytes.is_empty() {
            return serde_json::from_slice(b"{}")
                .map(ApiJson)
                .map_err(|e| bad_request(ErrorCode::BadRequest, format!("request body: {e}")));
        }
        if json_type == Some(false) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "a request body must be sent as application/json",
            ));
        }
        let mut value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| bad_request(ErrorCode::BadRequest, format!("request body: {e}")))?;
        if !value.is_object() {
            return Err(bad_request(
                ErrorCode::BadRequest,
                "request body: a JSON object is expected",
            ));
        }
        whole_numbers(&mut value);
        serde_json::from_value(value)
            .map(ApiJson)
            .map_err(|e| bad_request(ErrorCode::BadRequest, format!("request body: {e}")))
    }
}

/// JSON has one number type: `3.0` is the integer 3 (as JSON Schema's `integer` says), so a
/// whole number written with a fraction or exponent is read as an integer wherever it is.
fn whole_numbers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(f) = n.as_f64() {
                // Only where f64 is exact (|f| <= 2^53): a larger literal, even one that looks
                // whole, may be an integer out of range rounded into it.
                if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
                    *value = serde_json::Value::from(f as i64);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        serde_json::Value::Object(map) => map.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

pub(crate) fn tenant_id_of(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        bad_request(
            ErrorCode::BadTenantId,
            "tenant ids are integers greater than 0",
        )
    })
}

/// A response that carries a secret shown once: never cached anywhere.
fn created_secret(body: serde_json::Value) -> Response {
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    tenant_id: i64,
    name: String,
    #[serde(default = "utc")]
    time_zone: String,
}

fn utc() -> String {
    "UTC".into()
}

/// `POST /api/v1/admin/tenants`
async fn create_tenant(
    admin: AdminAccess,
    Db(client): Db,
    ApiJson(body): ApiJson<NewTenant>,
) -> Result<Response, ApiError> {
    let tenant = tenants::NewTenant {
        tenant_id: body.tenant_id,
        name: body.name,
        time_zone: body.time_zone,
    };
    let created_at = tenants::register(&**client, &tenant)
        .await
        .map_err(|e| match e {
            RegisterError::BadTenantId => bad_request(ErrorCode::BadTenantId, e.to_string()),
            RegisterError::BadName => bad_request(ErrorCode::BadName, e.to_string()),
            RegisterError::BadTimeZone => bad_request(ErrorCode::BadTimeZone, e.to_string()),
            RegisterError::Exists(_) => ApiError::new(ErrorCode::TenantExists, e.to_string()),
            RegisterError::Database(e) => ApiError::database(e),
        })?;
    Audit::TenantRegistered {
        tenant_id: tenant.tenant_id,
        admin_key: &admin.key_id,
    }
    .emit();
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "tenant_id": tenant.tenant_id,
            "name": tenant.name.trim(),
            "time_zone": tenant.time_zone,
            "created_at": created_at,
        })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKeyRequest {
    kind: Option<String>,
    #[serde(default)]
    label: String,
    /// Write keys: the origins collect accepts them from (default: any).
    allowed_origins: Option<Vec<String>>,
}

/// `POST /api/v1/admin/tenants/{tenant_id}/keys`
async fn create_key(
    admin: AdminAccess,
    Path(tenant): Path<String>,
    Db(client): Db,
    ApiJson(body): ApiJson<NewKeyRequest>,
) -> Result<Response, ApiError> {
    let tenant_id = tenant_id_of(&tenant)?;
    let kind: KeyKind = body
        .kind
        .as_deref()
        .unwrap_or("read")
        .parse()
        .map_err(access_error)?;
    if kind == KeyKind::Admin {
        return Err(bad_request(
            ErrorCode::BadKind,
            "admin keys belong to no tenant: create them with `remarketable key create --admin`",
        ));
    }
    let key = access::create_key_for_origins(
        &**client,
        Some(tenant_id),
        kind,
        &body.label,
        body.allowed_origins.as_deref(),
    )
    .await
    .map_err(access_error)?;
    Audit::KeyCreated {
        tenant_id,
        key_id: &key.key_id,
        kind: key.kind,
        admin_key: &admin.key_id,
    }
    .emit();
    Ok(created_secret(json!({
        "key_id": key.key_id,
        "key": key.key,
        "kind": key.kind,
        "tenant_id": key.tenant_id,
        "label": key.label,
        "created_at": key.created_at,
        "allowed_origins": key.allowed_origins,
    })))
}

/// `?limit=&after=` of a listing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    limit: Option<String>,
    after: Option<String>,
}

impl PageQuery {
    fn page(&self) -> Result<Page, ApiError> {
        Page::parse(self.limit.as_deref(), self.after.as_deref()).map_err(access_error)
    }
}

/// 404 `unknown_tenant` unless the tenant is registered (for admin routes, which may name any).
async fn require_registered(client: &Db, tenant_id: i64) -> Result<(), ApiError> {
    let registered = remarketable_core::tenants::exists(&**client.0, tenant_id)
        .await
        .map_err(ApiError::database)?;
    if registered {
        Ok(())
    } else {
        Err(access_error(AccessError::UnknownTenant(tenant_id)))
    }
}

/// `GET /api/v1/admin/tenants/{tenant_id}/keys`
async fn list_keys(
    _admin: AdminAccess,
    Path(tenant): Path<String>,
    Query(query): Query<PageQuery>,
    db: Db,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant_id = tenant_id_of(&tenant)?;
    let page = query.page()?;
    require_registered(&db, tenant_id).await?;
    let keys = access::list_keys(&**db.0, Some(tenant_id), &page)
        .await
        .map_err(access_error)?;
    Ok(Json(json!({ "keys": keys.items, "next": keys.next })))
}

/// `DELETE /api/v1/admin/keys/{key_id}`
async fn revoke_key(
    State(state): State<Arc<ApiState>>,
    admin: AdminAccess,
    Path(key_id): Path<String>,
    Db(client): Db,
) -> Result<StatusCode, ApiError> {
    let key_id = access::parse_id(&key_id, ErrorCode::BadKeyId).map_err(access_error)?;
    let found = access::revoke_key(&**client, &key_id)
        .await
        .map_err(access_error)?;
    state.verifier.forget_key(&key_id);
    let Some(revoked) = found else {
        return Err(ApiError::new(ErrorCode::NotFound, "no such key"));
    };
    for token_id in &revoked.share_tokens {
        state.verifier.forget_share(token_id);
    }
    Audit::KeyRevoked {
        key_id: &key_id,
        admin_key: &admin.key_id,
        share_tokens: revoked.share_tokens.len(),
    }
    .emit();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewShareRequest {
    expires_in_seconds: i64,
    #[serde(default)]
    filters: BTreeMap<String, String>,
    #[serde(default)]
    label: String,
}

/// The tenant of the path, checked against a read key (not a share token).
pub(crate) fn key_holder_of(access: &TenantAccess, tenant: &str) -> Result<i64, ApiError> {
    let tenant_id = tenant_id_of(tenant)?;
    access.require_tenant(tenant_id)?;
    access.require_key()?;
    Ok(tenant_id)
}

/// `POST /api/v1/tenants/{tenant_id}/share-tokens`
async fn create_share_token(
    State(state): State<Arc<ApiState>>,
    access: TenantAccess,
    Path(tenant): Path<String>,
    Db(client): Db,
    ApiJson(body): ApiJson<NewShareRequest>,
) -> Result<Response, ApiError> {
    let tenant_id = key_holder_of(&access, &tenant)?;
    let secret = state
        .settings
        .share_token_secret
        .as_ref()
        .ok_or(AccessError::ShareTokensDisabled)
        .map_err(access_error)?;
    let ttl = access::check_share_ttl(body.expires_in_seconds).map_err(access_error)?;
    let filters = access::parse_filters(body.filters.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(access_error)?;
    let creator = match &access.via {
        Via::ApiKey { key_id } => Some(key_id.as_str()),
        Via::ShareToken { .. } => None,
    };
    let token = access::create_share_token(
        &**client,
        Some(secret),
        tenant_id,
        ttl,
        filters,
        &body.label,
        creator,
    )
    .await
    .map_err(access_error)?;
    Audit::ShareTokenCreated {
        tenant_id,
        token_id: &token.token_id,
        expires_at: token.expires_at,
    }
    .emit();
    Ok(created_secret(json!({
        "token_id": token.token_id,
        "token": token.token,
        "expires_at": token.expires_at,
        "filters": token.filters,
        "label": token.label,
    })))
}

/// `GET /api/v1/tenants/{tenant_id}/share-tokens`
async fn list_share_tokens(
    access: TenantAccess,
    Path(tenant): Path<String>,
    Query(query): Query<PageQuery>,
    db: Db,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant_id = key_holder_of(&access, &tenant)?;
    share_token_page(&db, tenant_id, &query.page()?).await
}

/// `GET /api/v1/admin/tenants/{tenant_id}/share-tokens`
async fn admin_list_share_tokens(
    _admin: AdminAccess,
    Path(tenant): Path<String>,
    Query(query): Query<PageQuery>,
    db: Db,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant_id = tenant_id_of(&tenant)?;
    let page = query.page()?;
    require_registered(&db, tenant_id).await?;
    share_token_page(&db, tenant_id, &page).await
}

async fn share_token_page(
    db: &Db,
    tenant_id: i64,
    page: &Page,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tokens = access::list_share_tokens(&**db.0, tenant_id, page)
        .await
        .map_err(access_error)?;
    Ok(Json(
        json!({ "share_tokens": tokens.items, "next": tokens.next }),
    ))
}

/// `DELETE /api/v1/admin/tenants/{tenant_id}/share-tokens/{token_id}`
async fn admin_revoke_share_token(
    State(state): State<Arc<ApiState>>,
    admin: AdminAccess,
    Path((tenant, token_id)): Path<(String, String)>,
    Db(client): Db,
) -> Result<StatusCode, ApiError> {
    let tenant_id = tenant_id_of(&tenant)?;
    let token_id = access::parse_id(&token_id, ErrorCode::BadTokenId).map_err(access_error)?;
    let found = access::revoke_share_token(&**client, Some(tenant_id), &token_id)
        .await
        .map_err(access_error)?;
    state.verifier.forget_share(&token_id);
    if !found {
        return Err(ApiError::new(ErrorCode::NotFound, "no such share token"));
    }
    Audit::ShareTokenRevoked {
        tenant_id,
        token_id: &token_id,
        admin_key: Some(&admin.key_id),
    }
    .emit();
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/tenants/{tenant_id}/share-tokens/{token_id}`
async fn revoke_share_token(
    State(state): State<Arc<ApiState>>,
    access: TenantAccess,
    Path((tenant, token_id)): Path<(String, String)>,
    Db(client): Db,
) -> Result<StatusCode, ApiError> {
    let tenant_id = key_holder_of(&access, &tenant)?;
    let token_id = access::parse_id(&token_id, ErrorCode::BadTokenId).map_err(access_error)?;
    let found = access::revoke_share_token(&**client, Some(tenant_id), &token_id)
        .await
        .map_err(access_error)?;
    state.verifier.forget_share(&token_id);
    if !found {
        return Err(ApiError::new(ErrorCode::NotFound, "no such share token"));
    }
    Audit::ShareTokenRevoked {
        tenant_id,
        token_id: &token_id,
        admin_key: None,
    }
    .emit();
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/tenants/{tenant_id}/whoami`: what the presented credential grants, for the
/// dashboard (which filters are fixed, whether it may manage share links, when a link expires).
async fn whoami(
    access: TenantAccess,
    Path(tenant): Path<String>,
    db: Db,
) -> Result<Json<serde_json::Value>, ApiError> {
    access.require_tenant(tenant_id_of(&tenant)?)?;
    whoami_any(access, db).await
}

/// `GET /api/v1/whoami`: the same without knowing the tenant beforehand, so that signing in to
/// the dashboard takes only a key (or a share link). Adds the tenant's name and time zone.
async fn whoami_any(
    access: TenantAccess,
    Db(client): Db,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = client
        .query_opt(
            "SELECT name, time_zone FROM tenants WHERE tenant_id = $1",
            &[&access.tenant_id],
        )
        .await
        .map_err(ApiError::database)?
        .ok_or_else(ApiError::not_found)?;
    let expires_at = match &access.via {
        Via::ShareToken { expires_at, .. } => Some(*expires_at),
        Via::ApiKey { .. } => None,
    };
    Ok(Json(json!({
        "tenant_id": access.tenant_id,
        "tenant_name": tenant.get::<_, String>(0),
        "time_zone": tenant.get::<_, String>(1),
        "read_only": access.read_only,
        "fixed_filters": access.fixed_filters,
        "expires_at": expires_at,
        "via": access.via,
    })))
}

/// The tenant's overrides and the limits they make, as both collect-limits routes answer.
fn collect_limits_body(
    state: &ApiState,
    tenant_id: i64,
    o: &quota::Overrides,
) -> Json<serde_json::Value> {
    Json(json!({
        "tenant_id": tenant_id,
        "overrides": o,
        "limits": state.settings.collect_limits.with(o),
    }))
}

/// `GET /api/v1/admin/tenants/{tenant_id}/collect-limits`
async fn collect_limits(
    State(state): State<Arc<ApiState>>,
    _admin: AdminAccess,
    Path(tenant): Path<String>,
    Db(client): Db,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant_id = tenant_id_of(&tenant)?;
    let overrides = quota::overrides(&**client, tenant_id)
        .await
        .map_err(ApiError::database)?
        .ok_or_else(|| access_error(AccessError::UnknownTenant(tenant_id)))?;
    Ok(collect_limits_body(&state, tenant_id, &overrides))
}

/// `PUT /api/v1/admin/tenants/{tenant_id}/collect-limits`: the whole set of overrides (a
/// field left out or `null` keeps the setting; 0 lifts that limit). Instances apply it within
/// `ACCESS_CACHE_TTL_SECONDS`.
async fn set_collect_limits(
    State(state): State<Arc<ApiState>>,
    admin: AdminAccess,
    Path(tenant): Path<String>,
    Db(client): Db,
    ApiJson(overrides): ApiJson<quota::Overrides>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant_id = tenant_id_of(&tenant)?;
    let too_big = [overrides.events_per_second, overrides.key_events_per_second]
        .iter()
        .flatten()
        .any(|v| *v > quota::MAX_EVENTS_PER_SECOND)
        || [overrides.events_per_day, overrides.key_events_per_day]
            .iter()
            .flatten()
            .any(|v| *v > quota::MAX_EVENTS_PER_DAY);
    if too_big {
        return Err(ApiError::bad_parameter(format!(
            "limits are at most {} events per second and {} per day",
            quota::MAX_EVENTS_PER_SECOND,
            quota::MAX_EVENTS_PER_DAY
        )));
    }
    if !quota::set_overrides(&**client, tenant_id, &overrides)
        .await
        .map_err(ApiError::database)?
    {
        return Err(access_error(AccessError::UnknownTenant(tenant_id)));
    }
    Audit::CollectLimitsSet {
        tenant_id,
        admin_key: &admin.key_id,
        overrides: &overrides,
    }
    .emit();
    Ok(collect_limits_body(&state, tenant_id, &overrides))
}
