//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of the reports API, built from the same
//! closed types the handlers parse (granularities, dimensions, top lists), so the allowed values
//! in the document cannot drift from the code. A test requests every path it lists.

use axum::routing::get;
use axum::{Json, Router};
use remarketable_core::access::{
    DEFAULT_PAGE, MAX_ALLOWED_ORIGINS, MAX_LABEL_BYTES, MAX_PAGE, MAX_SHARE_TTL, MIN_SHARE_TTL,
};
use remarketable_core::attribution::{MAX_CONVERSION_TYPES, MAX_LOOKBACK_DAYS};
use remarketable_core::dashboards::{
    GRID_COLUMNS, MAX_HEIGHT, MAX_TITLE_CHARS, MAX_WIDGETS, REFRESH_SECONDS,
};
use remarketable_core::event::AD_SPEND;
use remarketable_core::funnels::{MAX_PREFIX_BYTES, MAX_STEPS, MIN_STEPS};
use remarketable_core::quota;
use remarketable_core::replay::DEFAULT_MAX as REPLAY_MAX;
use remarketable_core::reports::{
    Dimension, Granularity, Metric, Model, MAX_FILTER_BYTES, MAX_RANGE_DAYS,
};
use remarketable_core::spend::{MAX_UPLOAD_ROWS, UPLOAD_COLUMNS};
use remarketable_core::tenants::MAX_TIME_ZONE_BYTES;
use remarketable_core::ErrorCode;
use serde_json::{json, Map, Value};
use std::sync::Arc;

use crate::error::status_of;
use crate::ApiState;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new().route("/api/v1/openapi.json", get(|| async { Json(document()) }))
}

/// One operation of the document: method, path, summary, credential, extra query parameters,
/// request body, success answer and every error code it can answer (their statuses come from
/// [`status_of`], so a code cannot be documented under a status it is not sent with).
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub security: &'static [&'static str],
    pub params: &'static [&'static str],
    pub csv: bool,
    /// The JSON request body, if the operation takes one.
    pub body: Option<Body>,
    /// Status of success: 200 (JSON), 201 (JSON, a secret shown once) or 204 (no content).
    pub success: u16,
    /// Error codes besides those of every operation ([`ALWAYS`]) and of its credential.
    pub errors: &'static [ErrorCode],
}

/// Request bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    NewTenant,
    NewKey,
    NewShareToken,
    SaveDashboard,
    SaveFunnel,
    Replay,
    CollectLimits,
    /// `text/csv`, not JSON.
    SpendCsv,
    Attribution,
}

/// A read key, or a share token in the query or in `Authorization: Share` (never both).
const READ: &[&str] = &["readKey", "shareToken", "shareHeader"];
const TENANT: &[&str] = &["readKey"];
const ADMIN: &[&str] = &["adminKey"];
const COMMON: &[&str] = &[
    "from",
    "to",
    "range",
    "granularity",
    "event_type",
    "country",
    "browser",
    "campaign",
    "format",
];

/// A listing's page: `limit` and `after`.
const PAGE: &[&str] = &["page_limit", "after"];

use ErrorCode as E;

/// What any operation may answer: a request the framework refuses (a path or query value of
/// the wrong type), the database down or failing.
const ALWAYS: &[ErrorCode] = &[
    E::BadRequest,
    E::DatabaseUnavailable,
    E::DatabaseError,
    E::InternalError,
];
/// Refusals of a key or token (`access`); a share token presented to a key-only route is
/// verified first, then refused as `forbidden`.
const KEY_OR_SHARE: &[ErrorCode] = &[
    E::AmbiguousCredentials,
    E::Unauthorized,
    E::ShareExpired,
    E::ShareRevoked,
    E::Forbidden,
    E::ShareTokensDisabled,
];
const ADMIN_REFUSALS: &[ErrorCode] = &[E::AmbiguousCredentials, E::Unauthorized, E::Forbidden];
/// A report's own refusals: its parameters, a share link's fixed filters, another tenant,
/// admission and the statement timeout.
const REPORT: &[ErrorCode] = &[
    E::BadParameter,
    E::FilterFixed,
    E::NotFound,
    E::TooManyRequests,
    E::ReportTimeout,
];
/// A JSON body that is too large, not JSON, or not sent as JSON.
const BODY: &[ErrorCode] = &[E::TooLarge, E::UnsupportedMediaType];

pub const OPERATIONS: &[Operation] = &[
    Operation {
        method: "get",
        path: "/api/v1/tenants/{tenant_id}/timeseries",
        summary: "Events, unique devices and sessions, revenue, purchases and conversion rate per bucket",
        security: READ,
        params: COMMON,
        csv: true,
        body: None,
        success: 200,
        errors: REPORT,
    },
    Operation {
        method: "get",
        path: "/api/v1/tenants/{tenant_id}/breakdown",
        summary: "One dimension's top values with the same metrics",
        security: READ,
        params: &[
            "from", "to", "range", "granularity", "event_type", "country", "browser", "campaign",
            "format", "dimension", "order", "limit",
        ],
        csv: true,
        body: None,
        success: 200,
        errors: REPORT,
    },
    Operation {
        method: "get",
        path: "/api/v1/tenants/{tenant_id}/summary",
        summary: "KPI totals of a range and of the range of the same length before it",
        security: READ,
        params: COMMON,
        csv: true,
        body: None,
        success: 200,
        errors: REPORT,
    },
    Operation {
        method: "get",
        path: "/api/v1/tenants/{tenant_id}/top",
        summary: "Top pages or devices (TopN estimates); devices are for keys, not share links",
        security: READ,
        params: &[
            "from", "to", "range", "granularity", "event_type", "country", "browser", "campaign",
            "format", "list", "n",
        ],
        csv: true,
        body: None,
        success: 200,
        errors: &[
            E::BadParameter,
            E::FilterFixed,
            E::NotFound,
            E::TooManyRequests,
            E::ReportTimeout,
            E::NotForShareLinks,
        ],
    },
    Operation {
        method: "get",
        path: "/api/v1/tenants/{tenant_id}/ingest",
        summary: "The delivery ledger per hour (received, stored, duplicates, dead-lettered) and recent dead letters (for keys only; a share link sees an empty list)",
        security: READ,
        params: &["from", "to", "range", "format", "dead_letters"],
        csv: true,
        body: None,
        success: 200,
        errors: REPORT,
    },
    Operation {
        method: "get",
        path: "/api/v1/tenants/{tenant_id}/campaigns",
        summary: "Per campaign, source and medium: impressions, clicks, CTR, reach, frequency, sessions, conversions and revenue attributed under a model (direct: all empty), and with ad spend its cost, CPC, CPA and ROAS",
        security: READ,
        params: &[
            "from", "to", "range", "granularity", "campaign", "format", "model", "campaign_limit",
        ],
        csv: true,
        body: None,
        success: 200,
        errors: REPORT,
    },
    Operation {
        method: "get",
        path: "/api/v1/tenants/{tenant_id}/whoami",
        summary: "What the credential allows: tenant, read-only, fixed filters",
        security: READ,
        params: &[],
        csv: false,
        body: None,
        success: 200,
        errors: &[E::BadTenantId, E::NotFound],
    },
    Operation {
        method: "get",
        path: "/api/v1/whoami",
        summary: "The credential's tenant (id, name, time zone), read-only flag and fixed filters",
        security: READ,
        params: &[],
        csv: false,
        body: None,
        success: 200,
        errors: &[E::NotFound],
    },
    Operation {
        method: "get",
        path: "/api/v1/tenants/{tenant_id}/dashboards",
        summary: "The tenant's saved dashboards (name, title, layout, version)",
        security: READ,
        params: &[],
        csv: false,
        body: None,
        success: 200,
        errors: &[E::BadTenantId, E::NotFound],
    },
    Operation {
        method: "put",
        path: "/api/v1/tenants/{tenant_id}/dashboards/{name}",
        summary: "Create a dashboard (no expected_version) or replace the version you loaded (expected_version); 409 version_conflict when it changed meanwhile",
        security: TENANT,
        params: &[],
        csv: false,
        body: Some(Body::SaveDashboard),
        success: 200,
        errors: &[
            E::BadTenantId,
            E::NotFound,
            E::BadDashboardName,
            E::BadTitle,
            E::BadLayout,
            E::VersionConflict,
            E::TooManyDashboards,
        ],
    },
    Operation {
        method: "delete",
        path: "/api/v1/tenants/{tenant_id}/dashboards/{name}",
        summary: "Delete a dashboard",
        security: TENANT,
        params: &[],
        csv: false,
        body: None,
        success: 204,
        errors: &[E::BadTenantId, E::NotFound, E::BadDashboardName],
    },
    Operation {
        method: "get",
        path: "/api/v1/tenants/{tenant_id}/funnels",
        summary: "The tenant's funnels (name, id, title, steps)",
        security: READ,
        params: &[],
        csv: false,
        body: None,
        success: 200,
        errors: &[E::BadTenantId, E::NotFound],
    },
    Operation {
        method: "put",
        path: "/api/v1/tenants/{tenant_id}/funnels/{name}",
        summary: "Create a funnel or replace the one of that name; its per-session state is built from the stored events before the answer",
        security: TENANT,
        params: &[],
        csv: false,
        body: Some(Body::SaveFunnel),
        success: 200,
        errors: &[
            E::BadTenantId,
            E::NotFound,
            E::UnknownTenant,
            E::BadFunnelName,
            E::BadFunnel,
            E::BadTitle,
            E::TooManyFunnels,
        ],
    },
    Operation {
        method: "delete",
        path: "/api/v1/tenants/{tenant_id}/funnels/{name}",
        summary: "Delete a funnel and its state",
        security: TENANT,
        params: &[],
        csv: false,
        body: None,
        success: 204,
        errors: &[E::BadTenantId, E::NotFound, E::BadFunnelName],
    },
    Operation {
        method: "get",
        path: "/api/v1/tenants/{tenant_id}/funnels/{name}/report",
        summary: "Of the sessions starting in the range: how many reached each step of the funnel in order, the conversion from the step before and from step 1; with `by`, per campaign or source of the session",
        security: READ,
        params: &["from", "to", "range", "granularity", "campaign", "format", "by", "campaign_limit"],
        csv: true,
        body: None,
        success: 200,
        errors: &[
            E::BadParameter,
            E::FilterFixed,
            E::NotFound,
            E::BadFunnelName,
            E::TooManyRequests,
            E::ReportTimeout,
        ],
    },
    Operation {
        method: "post",
        path: "/api/v1/tenants/{tenant_id}/share-tokens",
        summary: "Create a share token (signed, expiring, revocable, read-only); shown once",
        security: TENANT,
        params: &[],
        csv: false,
        body: Some(Body::NewShareToken),
        success: 201,
        errors: &[
            E::BadTenantId,
            E::NotFound,
            E::UnknownTenant,
            E::BadExpiry,
            E::BadFilter,
            E::BadLabel,
            E::RandomUnavailable,
        ],
    },
    Operation {
        method: "get",
        path: "/api/v1/tenants/{tenant_id}/share-tokens",
        summary: "List the tenant's share tokens, newest first, one page",
        security: TENANT,
        params: PAGE,
        csv: false,
        body: None,
        success: 200,
        errors: &[E::BadTenantId, E::NotFound, E::BadParameter],
    },
    Operation {
        method: "delete",
        path: "/api/v1/tenants/{tenant_id}/share-tokens/{token_id}",
        summary: "Revoke a share token",
        security: TENANT,
        params: &[],
        csv: false,
        body: None,
        success: 204,
        errors: &[E::BadTenantId, E::NotFound, E::BadTokenId],
    },
    Operation {
        method: "get",
        path: "/api/v1/admin/tenants/{tenant_id}/share-tokens",
        summary: "List a tenant's share tokens, newest first, one page",
        security: ADMIN,
        params: PAGE,
        csv: false,
        body: None,
        success: 200,
        errors: &[E::BadTenantId, E::BadParameter, E::UnknownTenant],
    },
    Operation {
        method: "delete",
        path: "/api/v1/admin/tenants/{tenant_id}/share-tokens/{token_id}",
        summary: "Revoke a tenant's share token",
        security: ADMIN,
        params: &[],
        csv: false,
        body: None,
        success: 204,
        errors: &[E::BadTenantId, E::BadTokenId, E::NotFound],
    },
    Operation {
        method: "delete",
        path: "/api/v1/admin/keys/{key_id}",
        summary: "Revoke a key, and the share tokens it made",
        security: ADMIN,
        params: &[],
        csv: false,
        body: None,
        success: 204,
        errors: &[E::BadKeyId, E::NotFound],
    },
    Operation {
        method: "post",
        path: "/api/v1/admin/tenants",
        summary: "Register a tenant with its IANA time zone",
        security: ADMIN,
        params: &[],
        csv: false,
        body: Some(Body::NewTenant),
        success: 201,
        errors: &[
            E::BadTenantId,
            E::BadName,
            E::BadTimeZone,
            E::TenantExists,
        ],
    },
    Operation {
        method: "post",
        path: "/api/v1/admin/tenants/{tenant_id}/keys",
        summary: "Issue a read or write key; shown once, stored hashed (admin keys are made with the CLI)",
        security: ADMIN,
        params: &[],
        csv: false,
        body: Some(Body::NewKey),
        success: 201,
        errors: &[
            E::BadTenantId,
            E::BadKind,
            E::BadLabel,
            E::BadParameter,
            E::UnknownTenant,
            E::RandomUnavailable,
        ],
    },
    Operation {
        method: "post",
        path: "/api/v1/admin/tenants/{tenant_id}/dead-letters/replay",
        summary: "Re-validate the tenant's pending dead letters, store those that now pass, mark them replayed",
        security: ADMIN,
        params: &[],
        csv: false,
        body: Some(Body::Replay),
        success: 200,
        errors: &[E::BadTenantId, E::BadParameter, E::ReplayConflict],
    },
    Operation {
        method: "get",
        path: "/api/v1/admin/tenants/{tenant_id}/attribution",
        summary: "The tenant's attribution settings: conversion event types, lookback, whether clicks outrank impressions",
        security: ADMIN,
        params: &[],
        csv: false,
        body: None,
        success: 200,
        errors: &[E::BadTenantId, E::UnknownTenant],
    },
    Operation {
        method: "put",
        path: "/api/v1/admin/tenants/{tenant_id}/attribution",
        summary: "Change some of the tenant's attribution settings (a field left out or null keeps its value); conversions stored from then on follow them",
        security: ADMIN,
        params: &[],
        csv: false,
        body: Some(Body::Attribution),
        success: 200,
        errors: &[E::BadTenantId, E::BadParameter, E::UnknownTenant],
    },
    Operation {
        method: "post",
        path: "/api/v1/admin/tenants/{tenant_id}/spend",
        summary: "Upload the tenant's ad spend as CSV (date,campaign,source,medium,cost,currency): every row or, with a line refused, none; a repeated figure replaces the stored one",
        security: ADMIN,
        params: &[],
        csv: false,
        body: Some(Body::SpendCsv),
        success: 200,
        errors: &[E::BadTenantId, E::BadSpend, E::UnknownTenant],
    },
    Operation {
        method: "get",
        path: "/api/v1/admin/tenants/{tenant_id}/collect-limits",
        summary: "The tenant's overrides of collect's rate limits and daily quotas, and the limits in force",
        security: ADMIN,
        params: &[],
        csv: false,
        body: None,
        success: 200,
        errors: &[E::BadTenantId, E::UnknownTenant],
    },
    Operation {
        method: "put",
        path: "/api/v1/admin/tenants/{tenant_id}/collect-limits",
        summary: "Set the tenant's overrides of collect's limits (absent or null: the setting; 0: no limit)",
        security: ADMIN,
        params: &[],
        csv: false,
        body: Some(Body::CollectLimits),
        success: 200,
        errors: &[E::BadTenantId, E::BadParameter, E::UnknownTenant],
    },
    Operation {
        method: "get",
        path: "/api/v1/admin/tenants/{tenant_id}/keys",
        summary: "List a tenant's keys (no secrets), oldest first, one page",
        security: ADMIN,
        params: PAGE,
        csv: false,
        body: None,
        success: 200,
        errors: &[E::BadTenantId, E::BadParameter, E::UnknownTenant],
    },
];

impl Operation {
    /// Every code the operation can answer, in [`ErrorCode::ALL`]'s order.
    pub fn error_codes(&self) -> Vec<ErrorCode> {
        let credential = if self.security == ADMIN {
            ADMIN_REFUSALS
        } else {
            KEY_OR_SHARE
        };
        ErrorCode::ALL
            .iter()
            .copied()
            .filter(|c| {
                ALWAYS.contains(c)
                    || credential.contains(c)
                    || self.errors.contains(c)
                    || (self.body.is_some() && BODY.contains(c))
            })
            .collect()
    }
}

fn names<T>(all: &[T], name: fn(&T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(name).collect()
}

/// Text without control characters (what `char::is_control` refuses).
const NO_CONTROL: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// What `str::trim` removes (`char::is_whitespace`), as a regular expression's class body.
const WHITE: &str =
    "\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
/// What `char::is_control` refuses, likewise.
const CONTROL: &str = "\\u0000-\\u001f\\u007f-\\u009f";

/// Text of 1 to `max` characters once trimmed, without control characters inside (a name or
/// title): white space around it is allowed and does not count.
fn trimmed_text(max: usize) -> Value {
    let inner = max - 2;
    json!({"type": "string",
           "pattern": format!("^[{WHITE}]*[^{WHITE}{CONTROL}](?:[^{CONTROL}]{{0,{inner}}}[^{WHITE}{CONTROL}])?[{WHITE}]*$"),
           "description": format!("1 to {max} characters (trimmed) without control characters")})
}

/// A web origin, scheme and host (and port), around which `str::trim` removes white space.
fn origin_pattern() -> String {
    format!("^[{WHITE}]*https?://[A-Za-z0-9.:\\[\\]-]+[{WHITE}]*$")
}

/// A public key or token id.
const ID: &str = "^[0-9a-f]{16}$";

fn parameter(name: &str) -> Value {
    let (description, schema) = match name {
        "from" | "to" => (
            "RFC 3339 time; the range is [from, to), widened to whole buckets; `from` before `to`, \
             at most the longest range apart (else 400 bad_parameter). `from` excludes `range`",
            json!({"type": "string", "format": "date-time"}),
        ),
        "range" => (
            "instead of `from`: a range ending at `to` (default now); default 24h. Sending both \
             `from` and `range` is a 400 bad_parameter",
            json!({"type": "string", "enum": ["1h", "24h", "7d", "30d"]}),
        ),
        "granularity" => (
            "bucket size; default from the range length (up to 1 day: 5m, up to 14 days: 1h, beyond: 1d, the tenant's local days)",
            json!({"type": "string", "enum": names(&Granularity::ALL, |g| g.name())}),
        ),
        "event_type" | "country" | "browser" | "campaign" => (
            "equality filter, at most 256 bytes of UTF-8 without control characters; an empty \
             value selects events without this dimension; a share link's fixed value may only be repeated",
            json!({"type": "string", "maxLength": MAX_FILTER_BYTES, "pattern": NO_CONTROL}),
        ),
        "format" => (
            "csv for text/csv (also chosen by Accept: text/csv)",
            json!({"type": "string", "enum": ["json", "csv"]}),
        ),
        "dimension" => (
            "the dimension to break down by",
            json!({"type": "string", "enum": names(&Dimension::ALL, |d| d.name())}),
        ),
        "order" => (
            "the metric the values are ranked by, most first (ties: most events, then value)",
            json!({"type": "string", "enum": names(&Metric::ALL, |m| m.name()), "default": "events"}),
        ),
        "limit" => (
            "most values returned",
            json!({"type": "integer", "format": "int64", "minimum": 1, "maximum": 100, "default": 10}),
        ),
        "list" => (
            "which top list",
            json!({"type": "string", "enum": ["pages", "devices"], "default": "pages"}),
        ),
        "n" => (
            "most items returned",
            json!({"type": "integer", "format": "int32", "minimum": 1, "maximum": 100, "default": 10}),
        ),
        "dead_letters" => (
            "most recent dead letters returned",
            json!({"type": "integer", "format": "int64", "minimum": 1, "maximum": 500, "default": 50}),
        ),
        "model" => (
            "the attribution model conversions and revenue are counted by",
            json!({"type": "string", "enum": names(&Model::ALL, |m| m.name()), "default": "last_touch"}),
        ),
        "by" => (
            "break the sessions down by the campaign or the source of their first event",
            json!({"type": "string", "enum": ["campaign", "source"]}),
        ),
        "campaign_limit" => (
            "most rows returned (ranked by revenue; `totals` covers every row)",
            json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
        ),
        "page_limit" => (
            "most items returned; `next` in the answer asks for the following page",
            json!({"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE}),
        ),
        "after" => (
            "the `next` of the previous page",
            json!({"type": "string", "pattern": ID}),
        ),
        _ => ("", json!({"type": "string"})),
    };
    let name = match name {
        "page_limit" | "campaign_limit" => "limit",
        other => other,
    };
    json!({"name": name, "in": "query", "required": name == "dimension",
           "description": description, "schema": schema})
}

/// A label of a key or share token.
fn label() -> Value {
    json!({"type": "string", "maxLength": MAX_LABEL_BYTES, "pattern": NO_CONTROL, "default": "",
           "description": "at most 200 bytes of UTF-8 without control characters"})
}

fn request_body(body: Body) -> Value {
    let schema = match body {
        Body::NewTenant => json!({
            "type": "object", "additionalProperties": false, "required": ["tenant_id", "name"],
            "properties": {
                "tenant_id": {"type": "integer", "format": "int64", "minimum": 1,
                              "maximum": i64::MAX},
                "name": trimmed_text(200),
                "time_zone": {"type": "string", "default": "UTC",
                              "pattern": format!("^[!-~]{{1,{MAX_TIME_ZONE_BYTES}}}$"),
                              "description": "an IANA time zone name (PostgreSQL's pg_timezone_names); another is a 400 bad_time_zone"},
            }
        }),
        // `allowed_origins` is for write keys only, so a read key (the default kind) and a
        // write key are two shapes.
        Body::NewKey => json!({"oneOf": [
            {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "kind": {"enum": ["read", null], "default": "read"},
                    "label": label(),
                    "allowed_origins": {"type": "null"},
                }
            },
            {
                "type": "object", "additionalProperties": false, "required": ["kind"],
                "properties": {
                    "kind": {"const": "write"},
                    "label": label(),
                    "allowed_origins": {
                        "type": ["array", "null"], "minItems": 1, "maxItems": MAX_ALLOWED_ORIGINS,
                        "description": "the origins collect takes this key from (absent or null: any)",
                        "items": {"type": "string", "pattern": origin_pattern()},
                    },
                }
            },
        ]}),
        Body::NewShareToken => json!({
            "type": "object", "additionalProperties": false, "required": ["expires_in_seconds"],
            "properties": {
                "expires_in_seconds": {"type": "integer", "format": "int64",
                    "minimum": MIN_SHARE_TTL.num_seconds(), "maximum": MAX_SHARE_TTL.num_seconds()},
                "filters": {
                    "type": "object", "additionalProperties": false,
                    "description": "dimensions every report of the token is restricted to",
                    "properties": {
                        "event_type": {"type": "string", "pattern": "^[a-z0-9_]{1,64}$"},
                        "country": {"type": "string", "pattern": "^[A-Z]{2}$",
                                    "description": "ISO 3166-1 alpha-2"},
                        "browser": {"type": "string", "maxLength": MAX_FILTER_BYTES,
                                    "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*\\S[^\\u0000-\\u001f\\u007f-\\u009f]*$"},
                        "campaign": {"type": "string", "maxLength": MAX_FILTER_BYTES,
                                     "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*\\S[^\\u0000-\\u001f\\u007f-\\u009f]*$"},
                    }
                },
                "label": label(),
            }
        }),
        Body::SaveDashboard => json!({
            "type": "object", "additionalProperties": false, "required": ["title", "layout"],
            "properties": {
                "title": trimmed_text(MAX_TITLE_CHARS),
                "layout": {"$ref": "#/components/schemas/Layout"},
                "expected_version": {"type": ["integer", "null"], "format": "int64",
                    "description": "the version loaded; absent or null to create"},
            }
        }),
        Body::SaveFunnel => json!({
            "type": "object", "additionalProperties": false, "required": ["title", "steps"],
            "properties": {
                "title": trimmed_text(MAX_TITLE_CHARS),
                "steps": {"type": "array", "minItems": MIN_STEPS, "maxItems": MAX_STEPS,
                    "items": {"type": "object", "additionalProperties": false,
                              "required": ["event_type"], "properties": {
                        "event_type": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$",
                                       "not": {"const": AD_SPEND}},
                        "url_prefix": {"type": ["string", "null"], "maxLength": MAX_PREFIX_BYTES,
                                       "pattern": NO_CONTROL,
                                       "description": "the step's events' page_url starts with it (bytes); empty or absent: any"},
                    }}},
            }
        }),
        Body::Replay => json!({
            "type": "object", "additionalProperties": false,
            "properties": {
                "max": {"type": ["integer", "null"], "minimum": 1, "maximum": REPLAY_MAX,
                        "default": REPLAY_MAX},
                "after": {"type": ["integer", "null"], "format": "int64",
                          "minimum": i64::MIN, "maximum": i64::MAX,
                          "description": "the `resume_after` of the previous call"},
            }
        }),
        Body::CollectLimits => {
            let limit = |max: u64, what: &str| {
                json!({"type": ["integer", "null"], "format": "int64", "minimum": 0,
                       "maximum": max,
                       "description": format!("{what}; absent or null: the setting; 0: no limit")})
            };
            let rate = limit(u64::from(quota::MAX_EVENTS_PER_SECOND), "events per second");
            let day = limit(quota::MAX_EVENTS_PER_DAY, "events per day");
            json!({
                "type": "object", "additionalProperties": false,
                "properties": {
                    "events_per_second": rate, "events_per_day": day,
                    "key_events_per_second": rate, "key_events_per_day": day,
                }
            })
        }
        Body::Attribution => json!({
            "type": "object", "additionalProperties": false,
            "properties": {
                "conversion_event_types": {
                    "type": ["array", "null"], "minItems": 1, "maxItems": MAX_CONVERSION_TYPES,
                    "items": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$",
                              "not": {"const": AD_SPEND}},
                },
                "lookback_seconds": {"type": ["integer", "null"], "format": "int64", "minimum": 1,
                                     "maximum": MAX_LOOKBACK_DAYS * 86_400},
                "clicks_first": {"type": ["boolean", "null"]},
            }
        }),
        Body::SpendCsv => {
            return json!({
                "required": true,
                "description": format!(
                    "CSV with a header row: {} (source and medium may be left out); at most {} rows and {} bytes",
                    UPLOAD_COLUMNS.join(","), MAX_UPLOAD_ROWS, crate::spend::MAX_UPLOAD_BYTES),
                "content": {"text/csv": {"schema": {"type": "string"}}},
            })
        }
    };
    json!({"required": body == Body::NewTenant || body == Body::NewShareToken
                      || body == Body::SaveDashboard || body == Body::SaveFunnel,
           "description": "JSON; an empty body reads as {}",
           "content": {"application/json": {"schema": schema}}})
}

fn operation(op: &Operation) -> Value {
    let mut parameters: Vec<Value> = Vec::new();
    if op.path.contains("{tenant_id}") {
        parameters.push(json!({"name": "tenant_id", "in": "path", "required": true,
                               "schema": {"type": "integer", "format": "int64", "minimum": 1,
                                          "maximum": i64::MAX}}));
    }
    if op.path.contains("{name}") {
        parameters.push(json!({"name": "name", "in": "path", "required": true,
                               "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,39}$"}}));
    }
    for id in ["token_id", "key_id"] {
        if op.path.contains(&format!("{{{id}}}")) {
            parameters.push(json!({"name": id, "in": "path", "required": true,
                                   "schema": {"type": "string", "pattern": ID}}));
        }
    }
    parameters.extend(op.params.iter().map(|p| parameter(p)));
    let mut responses = Map::new();
    let success = match op.success {
        204 => json!({"description": "done"}),
        201 => {
            json!({"description": "created; the secret in it is shown once (Cache-Control: no-store)",
                   "content": {"application/json": {"schema": answer_schema(op)}}})
        }
        _ => {
            let mut content = json!({"application/json": {"schema": answer_schema(op)}});
            if op.csv {
                content["text/csv"] = json!({"schema": {"type": "string"}});
            }
            json!({"description": "the answer", "content": content})
        }
    };
    responses.insert(op.success.to_string(), success);
    let mut by_status: std::collections::BTreeMap<u16, Vec<&'static str>> = Default::default();
    for code in op.error_codes() {
        by_status
            .entry(status_of(code).as_u16())
            .or_default()
            .push(code.as_str());
    }
    for (status, codes) in by_status {
        let mut answer = json!({
            "description": codes.join(", "),
            "content": {"application/json": {"schema": {"allOf": [
                {"$ref": "#/components/schemas/Error"},
                {"properties": {"error": {"properties": {"code": {"enum": codes}}}}},
            ]}}},
        });
        if status == 429 || status == 503 {
            answer["headers"] = json!({"Retry-After": {"required": true,
                "schema": {"type": "integer", "minimum": 1}}});
        }
        responses.insert(status.to_string(), answer);
    }
    let mut operation = json!({
        "summary": op.summary,
        "security": op.security.iter().map(|s| json!({*s: []})).collect::<Vec<_>>(),
        "parameters": parameters,
        "responses": responses,
    });
    if let Some(body) = op.body {
        operation["requestBody"] = request_body(body);
    }
    operation
}

/// An object with these properties, all of them required (further ones may follow).
fn object(properties: Value) -> Value {
    let required: Vec<String> = properties
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    json!({"type": "object", "required": required, "properties": properties})
}

fn time() -> Value {
    json!({"type": "string", "format": "date-time"})
}

fn time_or_null() -> Value {
    json!({"type": ["string", "null"], "format": "date-time"})
}

fn strings() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string"}})
}

/// A listing's page of `items` and its `next`.
fn page_of(items: &str, item: &str) -> Value {
    object(json!({
        items: {"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}},
        "next": {"type": ["string", "null"], "pattern": ID},
    }))
}

/// The JSON body of an operation's success.
fn answer_schema(op: &Operation) -> Value {
    let path = op.path;
    match (op.method, path) {
        ("post", "/api/v1/admin/tenants") => object(json!({
            "tenant_id": {"type": "integer", "minimum": 1}, "name": {"type": "string"},
            "time_zone": {"type": "string"}, "created_at": time(),
        })),
        ("post", _) if path.ends_with("/keys") => object(json!({
            "key_id": {"type": "string", "pattern": ID},
            "key": {"type": "string", "pattern": "^rmk_(read|write)_[0-9a-f]{16}_"},
            "kind": {"enum": ["read", "write"]}, "tenant_id": {"type": "integer"},
            "label": {"type": "string"}, "created_at": time(),
            "allowed_origins": {"type": ["array", "null"], "items": {"type": "string"}},
        })),
        ("get", _) if path.ends_with("/keys") => page_of("keys", "Key"),
        ("post", _) if path.ends_with("/share-tokens") => object(json!({
            "token_id": {"type": "string", "pattern": ID},
            "token": {"type": "string", "pattern": "^rms_"},
            "expires_at": time(), "filters": strings(), "label": {"type": "string"},
        })),
        ("get", _) if path.ends_with("/share-tokens") => page_of("share_tokens", "ShareToken"),
        ("get", _) if path.ends_with("/whoami") => object(json!({
            "tenant_id": {"type": "integer"}, "tenant_name": {"type": "string"},
            "time_zone": {"type": "string"}, "read_only": {"type": "boolean"},
            "fixed_filters": strings(), "expires_at": time_or_null(),
            "via": {"type": "object", "required": ["type"],
                    "properties": {"type": {"enum": ["api_key", "share_token"]}}},
        })),
        ("get", _) if path.ends_with("/dashboards") => object(json!({
            "dashboards": {"type": "array", "items": {"$ref": "#/components/schemas/Dashboard"}},
        })),
        ("put", _) if path.ends_with("/dashboards/{name}") => {
            json!({"$ref": "#/components/schemas/Dashboard"})
        }
        ("get", _) if path.ends_with("/funnels") => object(json!({
            "funnels": {"type": "array", "items": {"$ref": "#/components/schemas/Funnel"}},
        })),
        ("put", _) if path.ends_with("/funnels/{name}") => json!({"allOf": [
            {"$ref": "#/components/schemas/Funnel"},
            object(json!({
                "replaced": {"type": "boolean"},
                "events_matched": {"type": "integer", "minimum": 0},
                "sessions": {"type": "integer", "minimum": 0},
                "built_to_event": {"type": "integer"},
            })),
        ]}),
        (_, _) if path.ends_with("/collect-limits") => {
            let limits = |nullable: bool| {
                let t = if nullable {
                    json!(["integer", "null"])
                } else {
                    json!("integer")
                };
                object(json!({
                    "events_per_second": {"type": t, "minimum": 0},
                    "events_per_day": {"type": t, "minimum": 0},
                    "key_events_per_second": {"type": t, "minimum": 0},
                    "key_events_per_day": {"type": t, "minimum": 0},
                }))
            };
            object(
                json!({"tenant_id": {"type": "integer"}, "overrides": limits(true),
                          "limits": limits(false)}),
            )
        }
        ("post", _) if path.ends_with("/replay") => object(json!({
            "tenant_id": {"type": "integer"}, "examined": {"type": "integer", "minimum": 0},
            "replayed": {"type": "integer", "minimum": 0},
            "still_failing": {"type": "object", "additionalProperties": {"type": "integer"}},
            "more": {"type": "boolean"}, "resume_after": {"type": ["integer", "null"]},
        })),
        (_, _) if path.ends_with("/attribution") => object(json!({
            "tenant_id": {"type": "integer"},
            "conversion_event_types": {"type": "array", "items": {"type": "string"}},
            "lookback_seconds": {"type": "integer", "minimum": 1},
            "clicks_first": {"type": "boolean"},
        })),
        ("post", _) if path.ends_with("/spend") => {
            let day = json!({"type": ["string", "null"], "format": "date"});
            object(json!({
                "tenant_id": {"type": "integer"}, "rows": {"type": "integer", "minimum": 0},
                "added": {"type": "integer", "minimum": 0},
                "changed": {"type": "integer", "minimum": 0},
                "unchanged": {"type": "integer", "minimum": 0},
                "first_day": day, "last_day": day,
                "cost": {"type": "object", "additionalProperties": {"type": "string"},
                         "description": "the uploaded costs summed per currency"},
            }))
        }
        // The reports: every one says how fresh it is.
        _ => json!({"type": "object", "required": ["freshness"], "properties": {
            "freshness": {"type": "object", "required": ["as_of"],
                          "properties": {"as_of": time()}}}}),
    }
}

/// Schemas the answers share.
fn answer_components() -> Map<String, Value> {
    let mut schemas = Map::new();
    schemas.insert(
        "Key".into(),
        json!({"type": "object",
        "required": ["key_id", "tenant_id", "kind", "label", "created_at", "revoked_at",
                     "last_used_at"],
        "properties": {
            "key_id": {"type": "string", "pattern": ID},
            "tenant_id": {"type": ["integer", "null"]},
            "kind": {"enum": ["read", "write", "admin"]}, "label": {"type": "string"},
            "created_at": time(), "revoked_at": time_or_null(),
            "last_used_at": time_or_null(),
            "allowed_origins": {"type": "array", "items": {"type": "string"}},
        }}),
    );
    schemas.insert(
        "ShareToken".into(),
        object(json!({
            "token_id": {"type": "string", "pattern": ID}, "tenant_id": {"type": "integer"},
            "created_by": {"type": ["string", "null"]}, "filters": strings(),
            "label": {"type": "string"}, "created_at": time(), "expires_at": time(),
            "revoked_at": time_or_null(),
        })),
    );
    schemas.insert(
        "Dashboard".into(),
        object(json!({
            "name": {"type": "string"}, "title": {"type": "string"},
            "layout": {"$ref": "#/components/schemas/Layout"},
            "version": {"type": "integer"}, "updated_at": time(),
        })),
    );
    schemas.insert(
        "Funnel".into(),
        object(json!({
            "name": {"type": "string"}, "funnel_id": {"type": "integer"},
            "title": {"type": "string"}, "created_at": time(),
            "steps": {"type": "array", "items": {"type": "object", "required": ["event_type"],
                "properties": {"event_type": {"type": "string"},
                               "url_prefix": {"type": "string"}}}},
        })),
    );
    schemas
}

/// A dashboard's layout: what [`remarketable_core::dashboards::Layout::parse`] takes. Each
/// widget kind takes exactly the fields it draws with; ids must also differ (400 bad_layout).
fn layout_schema() -> Value {
    let metric = json!({"type": "string", "enum": names(&Metric::ALL, |m| m.name())});
    let dimension = json!({"type": "string", "enum": names(&Dimension::ALL, |d| d.name())});
    let list = json!({"type": "string", "enum": ["pages", "devices"]});
    let model = json!({"type": "string", "enum": names(&Model::ALL, |m| m.name())});
    let absent = json!({"type": "null"});
    let funnel = json!({"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,39}$"});
    let widget = |kinds: &[&str], takes: [bool; 5]| {
        let mut required = vec!["id", "kind", "width", "height"];
        let mut properties = json!({
            "id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,32}$"},
            "kind": {"type": "string", "enum": kinds},
            "width": {"type": "integer", "minimum": 1, "maximum": GRID_COLUMNS},
            "height": {"type": "integer", "minimum": 1, "maximum": MAX_HEIGHT},
            "title": {"type": ["string", "null"], "maxLength": MAX_TITLE_CHARS, "pattern": NO_CONTROL},
        });
        for ((field, schema), wanted) in [
            ("metric", &metric),
            ("dimension", &dimension),
            ("list", &list),
            ("model", &model),
            ("funnel", &funnel),
        ]
        .into_iter()
        .zip(takes)
        {
            if wanted {
                required.push(field);
                properties[field] = schema.clone();
            } else {
                properties[field] = absent.clone();
            }
        }
        json!({"type": "object", "additionalProperties": false, "required": required,
               "properties": properties})
    };
    json!({
        "type": "object", "additionalProperties": false, "required": ["widgets"],
        "properties": {
            "widgets": {"type": "array", "maxItems": MAX_WIDGETS, "items": {"oneOf": [
                widget(&["kpi", "timeseries"], [true, false, false, false, false]),
                widget(&["breakdown"], [true, true, false, false, false]),
                widget(&["top"], [false, false, true, false, false]),
                widget(&["ingest"], [false, false, false, false, false]),
                widget(&["campaigns"], [false, false, false, true, false]),
                widget(&["funnel"], [false, false, false, false, true]),
            ]}},
            "refresh_seconds": {"type": ["integer", "null"], "minimum": REFRESH_SECONDS.start(),
                                "maximum": REFRESH_SECONDS.end()},
        }
    })
}

/// The document.
pub fn document() -> Value {
    let answers = answer_components();
    let mut paths = Map::new();
    for op in OPERATIONS {
        let entry = paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        entry[op.method] = operation(op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "ReMarketable reports API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "Tenant-scoped, real-time marketing reports. Ranges span at most {MAX_RANGE_DAYS} days. \
                 Distinct counts are HyperLogLog estimates (95 % relative error bound in \
                 `distinct_counts.relative_error_95`); top lists are TopN estimates. Every answer \
                 carries `freshness.as_of`."
            ),
        },
        "components": {
            "securitySchemes": {
                "readKey": {"type": "http", "scheme": "bearer", "description": "a tenant read key (rmk_read_…)"},
                "adminKey": {"type": "http", "scheme": "bearer", "description": "an admin key (rmk_admin_…)"},
                "shareToken": {"type": "apiKey", "in": "query", "name": "share",
                               "description": "a share token (rms_…) in the query, for iframes; \
                                               excludes an Authorization header (both: 400 ambiguous_credentials)"},
                "shareHeader": {"type": "apiKey", "in": "header", "name": "Authorization",
                                "description": "`Share <token>`: a share token in the header; \
                                                excludes the share parameter"}
            },
            "schemas": {
                "Layout": layout_schema(),
                "Key": answers["Key"], "ShareToken": answers["ShareToken"],
                "Dashboard": answers["Dashboard"], "Funnel": answers["Funnel"],
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}
            }
        },
        "paths": paths,
    })
}
