//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of the reports API, built from the same
//! closed types the handlers parse (granularities, dimensions, top lists), so the allowed values
//! in the document cannot drift from the code. A test requests every path it lists.

use axum::routing::get;
use axum::{Json, Router};
use remarketable_core::access::{DEFAULT_PAGE, MAX_PAGE};
use remarketable_core::reports::{Dimension, Granularity, Metric, Model, MAX_RANGE_DAYS};
use serde_json::{json, Map, Value};
use std::sync::Arc;

use crate::ApiState;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new().route("/api/v1/openapi.json", get(|| async { Json(document()) }))
}

/// One operation of the document: method, path, summary, credential, extra query parameters.
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub security: &'static [&'static str],
    pub params: &'static [&'static str],
    pub csv: bool,
}

const READ: &[&str] = &["readKey", "shareToken"];
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

pub const OPERATIONS: &[Operation] = &[
    Operation {
        method: "get",
        path: "/api/v1/tenants/{tenant_id}/timeseries",
        summary: "Events, unique devices and sessions, revenue, purchases and conversion rate per bucket",
        security: READ,
        params: COMMON,
        csv: true,
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
    },
    Operation {
        method: "get",
        path: "/api/v1/tenants/{tenant_id}/summary",
        summary: "KPI totals of a range and of the range of the same length before it",
        security: READ,
        params: COMMON,
        csv: true,
    },
    Operation {
        method: "get",
        path: "/api/v1/tenants/{tenant_id}/top",
        summary: "Top pages or devices (TopN estimates)",
        security: READ,
        params: &[
            "from", "to", "range", "granularity", "event_type", "country", "browser", "campaign",
            "format", "list", "n",
        ],
        csv: true,
    },
    Operation {
        method: "get",
        path: "/api/v1/tenants/{tenant_id}/ingest",
        summary: "The delivery ledger per hour (received, stored, duplicates, dead-lettered) and recent dead letters",
        security: READ,
        params: &["from", "to", "range", "format", "dead_letters"],
        csv: true,
    },
    Operation {
        method: "get",
        path: "/api/v1/tenants/{tenant_id}/campaigns",
        summary: "Per campaign, source and medium: impressions, clicks, CTR, reach, frequency, sessions, and conversions and revenue attributed under a model (direct: all empty)",
        security: READ,
        params: &[
            "from", "to", "range", "granularity", "campaign", "format", "model", "campaign_limit",
        ],
        csv: true,
    },
    Operation {
        method: "get",
        path: "/api/v1/tenants/{tenant_id}/whoami",
        summary: "What the credential allows: tenant, read-only, fixed filters",
        security: READ,
        params: &[],
        csv: false,
    },
    Operation {
        method: "get",
        path: "/api/v1/whoami",
        summary: "The credential's tenant (id, name, time zone), read-only flag and fixed filters",
        security: READ,
        params: &[],
        csv: false,
    },
    Operation {
        method: "get",
        path: "/api/v1/tenants/{tenant_id}/dashboards",
        summary: "The tenant's saved dashboards (name, title, layout, version)",
        security: READ,
        params: &[],
        csv: false,
    },
    Operation {
        method: "put",
        path: "/api/v1/tenants/{tenant_id}/dashboards/{name}",
        summary: "Create a dashboard (no expected_version) or replace the version you loaded (expected_version); 409 version_conflict when it changed meanwhile",
        security: TENANT,
        params: &[],
        csv: false,
    },
    Operation {
        method: "delete",
        path: "/api/v1/tenants/{tenant_id}/dashboards/{name}",
        summary: "Delete a dashboard",
        security: TENANT,
        params: &[],
        csv: false,
    },
    Operation {
        method: "post",
        path: "/api/v1/tenants/{tenant_id}/share-tokens",
        summary: "Create a share token (signed, expiring, revocable, read-only); shown once",
        security: TENANT,
        params: &[],
        csv: false,
    },
    Operation {
        method: "get",
        path: "/api/v1/tenants/{tenant_id}/share-tokens",
        summary: "List the tenant's share tokens, newest first, one page",
        security: TENANT,
        params: PAGE,
        csv: false,
    },
    Operation {
        method: "delete",
        path: "/api/v1/tenants/{tenant_id}/share-tokens/{token_id}",
        summary: "Revoke a share token",
        security: TENANT,
        params: &[],
        csv: false,
    },
    Operation {
        method: "get",
        path: "/api/v1/admin/tenants/{tenant_id}/share-tokens",
        summary: "List a tenant's share tokens, newest first, one page",
        security: ADMIN,
        params: PAGE,
        csv: false,
    },
    Operation {
        method: "delete",
        path: "/api/v1/admin/tenants/{tenant_id}/share-tokens/{token_id}",
        summary: "Revoke a tenant's share token",
        security: ADMIN,
        params: &[],
        csv: false,
    },
    Operation {
        method: "delete",
        path: "/api/v1/admin/keys/{key_id}",
        summary: "Revoke a key, and the share tokens it made",
        security: ADMIN,
        params: &[],
        csv: false,
    },
    Operation {
        method: "post",
        path: "/api/v1/admin/tenants",
        summary: "Register a tenant with its IANA time zone",
        security: ADMIN,
        params: &[],
        csv: false,
    },
    Operation {
        method: "post",
        path: "/api/v1/admin/tenants/{tenant_id}/keys",
        summary: "Issue a read, write or admin key; shown once, stored hashed",
        security: ADMIN,
        params: &[],
        csv: false,
    },
    Operation {
        method: "post",
        path: "/api/v1/admin/tenants/{tenant_id}/dead-letters/replay",
        summary: "Re-validate the tenant's pending dead letters, store those that now pass, mark them replayed",
        security: ADMIN,
        params: &[],
        csv: false,
    },
    Operation {
        method: "get",
        path: "/api/v1/admin/tenants/{tenant_id}/collect-limits",
        summary: "The tenant's overrides of collect's rate limits and daily quotas, and the limits in force",
        security: ADMIN,
        params: &[],
        csv: false,
    },
    Operation {
        method: "put",
        path: "/api/v1/admin/tenants/{tenant_id}/collect-limits",
        summary: "Set the tenant's overrides of collect's limits (absent or null: the setting; 0: no limit)",
        security: ADMIN,
        params: &[],
        csv: false,
    },
    Operation {
        method: "get",
        path: "/api/v1/admin/tenants/{tenant_id}/keys",
        summary: "List a tenant's keys (no secrets), oldest first, one page",
        security: ADMIN,
        params: PAGE,
        csv: false,
    },
];

fn names<T>(all: &[T], name: fn(&T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(name).collect()
}

fn parameter(name: &str) -> Value {
    let (description, schema) = match name {
        "from" | "to" => (
            "RFC 3339 time; the range is [from, to), widened to whole buckets",
            json!({"type": "string", "format": "date-time"}),
        ),
        "range" => (
            "instead of from/to: a range ending now (default 24h)",
            json!({"type": "string", "enum": ["1h", "24h", "7d", "30d"]}),
        ),
        "granularity" => (
            "bucket size; default from the range length (up to 1 day: 5m, up to 14 days: 1h, beyond: 1d, the tenant's local days)",
            json!({"type": "string", "enum": names(&Granularity::ALL, |g| g.name())}),
        ),
        "event_type" | "country" | "browser" | "campaign" => (
            "equality filter; an empty value selects events without this dimension",
            json!({"type": "string", "maxLength": 256}),
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
            json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 10}),
        ),
        "list" => (
            "which top list",
            json!({"type": "string", "enum": ["pages", "devices"], "default": "pages"}),
        ),
        "n" => (
            "most items returned",
            json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 10}),
        ),
        "dead_letters" => (
            "most recent dead letters returned",
            json!({"type": "integer", "minimum": 1, "maximum": 500, "default": 50}),
        ),
        "model" => (
            "the attribution model conversions and revenue are counted by",
            json!({"type": "string", "enum": names(&Model::ALL, |m| m.name()), "default": "last_touch"}),
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
            json!({"type": "string", "pattern": "^[0-9a-f]{16}$"}),
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

fn operation(op: &Operation) -> Value {
    let mut parameters: Vec<Value> = Vec::new();
    if op.path.contains("{tenant_id}") {
        parameters.push(json!({"name": "tenant_id", "in": "path", "required": true,
                               "schema": {"type": "integer", "minimum": 1}}));
    }
    if op.path.contains("{name}") {
        parameters.push(json!({"name": "name", "in": "path", "required": true,
                               "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,39}$"}}));
    }
    for id in ["token_id", "key_id"] {
        if op.path.contains(&format!("{{{id}}}")) {
            parameters.push(json!({"name": id, "in": "path", "required": true,
                                   "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"}}));
        }
    }
    parameters.extend(op.params.iter().map(|p| parameter(p)));
    let mut content = json!({"application/json": {"schema": {"type": "object"}}});
    if op.csv {
        content["text/csv"] = json!({"schema": {"type": "string"}});
    }
    let error = json!({"description": "an error", "content": {"application/json": {"schema":
        {"$ref": "#/components/schemas/Error"}}}});
    let mut operation = json!({
        "summary": op.summary,
        "security": op.security.iter().map(|s| json!({*s: []})).collect::<Vec<_>>(),
        "parameters": parameters,
        "responses": {
            "200": {"description": "the report", "content": content},
            "400": error, "401": error, "403": error, "404": error,
            "503": {"description": "database unavailable, or report_timeout; see Retry-After",
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                    "content": error["content"]}
        }
    });
    // The reports (the operations that also answer CSV) are admitted per credential and
    // tenant (`admission`).
    if op.csv {
        operation["responses"]["429"] = json!({
            "description": "too_many_requests: the credential or tenant has its most reports running",
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
            "content": error["content"],
        });
    }
    operation
}

/// The document.
pub fn document() -> Value {
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
                               "description": "a share token, also accepted as `Authorization: Share <token>`"}
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}
            }
        },
        "paths": paths,
    })
}
