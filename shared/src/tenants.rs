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
