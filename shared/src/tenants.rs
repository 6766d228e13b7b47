//! The set of registered tenants, cached so that ingest does not query it per event.

use crate::cache::Cached;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::GenericClient;

/// An unknown tenant triggers a reload at most this often: a tenant registered a moment ago is
/// found quickly, and a producer flooding events of an unregistered tenant costs little.
const MISS_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Registered tenant ids.
pub struct TenantRegistry {
    ids: Cached<HashSet<i64>>,
}

impl TenantRegistry {
    pub fn new(ttl: Duration) -> Self {
        TenantRegistry {
            ids: Cached::new(ttl, MISS_RELOAD_INTERVAL),
        }
    }

    /// The registered ids, fresh enough to judge `wanted`.
    pub async fn registered<C: GenericClient>(
        &self,
        client: &C,
        wanted: impl IntoIterator<Item = i64>,
    ) -> Result<Arc<HashSet<i64>>, tokio_postgres::Error> {
        if let Some(ids) = self
            .ids
            .fresh(|ids| wanted.into_iter().all(|id| ids.contains(&id)))
        {
            return Ok(ids);
        }
        let rows = client.query("SELECT tenant_id FROM tenants", &[]).await?;
        Ok(self.ids.store(rows.iter().map(|r| r.get(0)).collect()))
    }
}

/// Whether the tenant is registered (read now, not from a registry's cache).
pub async fn exists<C: GenericClient>(
    client: &C,
    tenant_id: i64,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_opt("SELECT 1 FROM tenants WHERE tenant_id = $1", &[&tenant_id])
        .await?
        .is_some())
}

/// A tenant (a storefront) to register.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub tenant_id: i64,
    pub name: String,
    /// IANA time zone of the tenant's calendar days (daily rollups, reports by day).
    pub time_zone: String,
}

/// Why a tenant could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("tenant ids are integers greater than 0")]
    BadTenantId,
    #[error("name must be 1 to 200 characters without control characters")]
    BadName,
    #[error("time_zone must be an IANA time zone name such as Europe/Berlin")]
    BadTimeZone,
    #[error("tenant {0} is already registered")]
    Exists(i64),
    #[error("database error")]
    Database(#[from] tokio_postgres::Error),
}

/// Longest time zone name accepted (PostgreSQL's longest is 38 bytes).
pub const MAX_TIME_ZONE_BYTES: usize = 64;

/// Registers a tenant: the one place every host, the CLI and the benchmarks register through.
/// The name is trimmed; answers the row's `created_at`.
pub async fn register<C: GenericClient>(
    client: &C,
    tenant: &NewTenant,
) -> Result<chrono::DateTime<chrono::Utc>, RegisterError> {
    if tenant.tenant_id <= 0 {
        return Err(RegisterError::BadTenantId);
    }
    let name = tenant.name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(RegisterError::BadName);
    }
    // Zone names are short printable ASCII; anything else (a NUL, which PostgreSQL refuses
    // in text) is answered without asking the database.
    let zone = &tenant.time_zone;
    if zone.is_empty()
        || zone.len() > MAX_TIME_ZONE_BYTES
        || !zone.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(RegisterError::BadTimeZone);
    }
    let known_zone = client
        .query_opt(
            "SELECT 1 FROM pg_timezone_names WHERE name = $1",
            &[&tenant.time_zone],
        )
        .await?
        .is_some();
    if !known_zone {
        return Err(RegisterError::BadTimeZone);
    }
    // A plain INSERT .. VALUES: `tenants` is a Citus reference table, where INSERT .. SELECT
    // .. RETURNING forms are refused.
    let row = client
        .query_opt(
            "INSERT INTO tenants (tenant_id, name, time_zone) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO NOTHING RETURNING created_at",
            &[&tenant.tenant_id, &name, &tenant.time_zone],
        )
        .await?;
    row.map(|r| r.get(0))
        .ok_or(RegisterError::Exists(tenant.tenant_id))
}

/// Time zones the demo and benchmark tenants cycle through (tenant N gets `DEMO_ZONES[N % 3]`).
pub const DEMO_ZONES: [&str; 3] = ["UTC", "Europe/Berlin", "America/New_York"];

/// Registers tenants `1..=count` for demos and benchmarks (`shop N`, time zones cycling through
/// `zones`); tenants already registered are left as they are. Answers how many were new.
pub async fn register_demo<C: GenericClient>(
    client: &C,
    count: i64,
    zones: &[&str],
) -> Result<u64, RegisterError> {
    let mut added = 0;
    for id in 1..=count {
        let zone = zones
            .get(id as usize % zones.len().max(1))
            .unwrap_or(&"UTC");
        let tenant = NewTenant {
            tenant_id: id,
            name: format!("shop {id}"),
            time_zone: (*zone).to_string(),
        };
        match register(client, &tenant).await {
            Ok(_) => added += 1,
            Err(RegisterError::Exists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(added)
}
