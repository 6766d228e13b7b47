//! Where tenants' rows live, for operators (issue 16): per-tenant figures to see which
//! storefronts are big, a tenant's rows moved into shards of their own, and the cluster
//! rebalanced. Isolation and rebalancing are Citus features; on plain PostgreSQL they answer
//! [`PlacementError::NeedsCitus`], and the figures leave the shard columns empty.

use crate::db;
use serde::Serialize;
use tokio_postgres::Client;

#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error(
        "{0} needs Citus: this database has no citus extension (on plain PostgreSQL every tenant \
         already shares one node)"
    )]
    NeedsCitus(&'static str),
    #[error("tenant {0} is not registered")]
    UnknownTenant(i64),
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
}

/// How Citus copies shards while isolating or rebalancing (`citus.shard_transfer_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferMode {
    /// Citus' choice: logical replication, refused when a colocated table has no replica
    /// identity (the rollups' staging tables have none).
    Auto,
    /// Logical replication (needs `wal_level = logical`): writes continue during the copy.
    ForceLogical,
    /// Writes to the moved shards wait until the copy is done (works at any `wal_level`).
    BlockWrites,
}

impl std::str::FromStr for TransferMode {
    type Err = String;

    fn from_str(s: &str) -> Result<TransferMode, String> {
        [
            TransferMode::Auto,
            TransferMode::ForceLogical,
            TransferMode::BlockWrites,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
        .ok_or_else(|| {
            format!("{s:?}: the transfer modes are auto, force_logical and block_writes")
        })
    }
}

impl TransferMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferMode::Auto => "auto",
            TransferMode::ForceLogical => "force_logical",
            TransferMode::BlockWrites => "block_writes",
        }
    }
}

/// The shard holding a tenant's rows of `events` (and, colocated, of every tenant table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shard {
    pub shard_id: i64,
    /// The shard holds this tenant alone (its hash range is one value).
    pub isolated: bool,
    /// `host:port` of the worker holding it.
    pub node: String,
}

/// A tenant's figures.
#[derive(Debug, Clone, Serialize)]
pub struct TenantStats {
    pub tenant_id: i64,
    pub name: String,
    /// Every event counted by the daily rollup (all history, imports included).
    pub events: i64,
    /// Events within the raw partitions' time range (daily rollup).
    pub raw_events: i64,
    /// The tenant's share of `events`' size on disk: its share of the raw events times the
    /// table's total size (tables, indexes, TOAST).
    pub raw_bytes_estimate: i64,
    /// Events stored in the last 24 hours (the ingest ledger), and their mean rate.
    pub stored_last_24h: i64,
    pub events_per_second_24h: f64,
    /// Queries Citus counted for the tenant in its last two periods
    /// (`citus.stat_tenants_track = 'all'`); `None` when not tracked.
    pub queries: Option<i64>,
    pub shard: Option<Shard>,
}

/// What `tenant stats` needs to say about where the figures come from.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub tenants: Vec<TenantStats>,
    pub citus: bool,
    /// Citus tracks queries per tenant (`citus.stat_tenants_track`).
    pub queries_tracked: bool,
    /// Size of `events` on disk, every partition, on every node.
    pub events_bytes: i64,
}

const FIGURES: &str = "
    WITH daily AS (
        SELECT d.tenant_id, sum(d.event_count)::bigint AS events,
               coalesce(sum(d.event_count) FILTER (WHERE d.day >= $1::date), 0)::bigint AS raw
        FROM rollup_events_1day d GROUP BY 1),
    recent AS (
        SELECT l.tenant_id, sum(l.stored)::bigint AS stored
        FROM ingest_ledger l WHERE l.hour >= now() - interval '24 hours' GROUP BY 1)
    SELECT t.tenant_id, t.name, coalesce(d.events, 0), coalesce(d.raw, 0), coalesce(r.stored, 0)
    FROM tenants t LEFT JOIN daily d USING (tenant_id) LEFT JOIN recent r USING (tenant_id)
    ORDER BY coalesce(d.raw, 0) DESC, t.tenant_id";

/// Every tenant's figures, largest raw volume first.
pub async fn stats(client: &Client) -> Result<Stats, PlacementError> {
    let citus = db::has_citus(client).await?;
    let size = if citus {
        "citus_total_relation_size(b.partition_name::regclass)"
    } else {
        "pg_total_relation_size(b.partition_name::regclass)"
    };
    let events_bytes: i64 = client
        .query_one(
            &format!("SELECT coalesce(sum({size}), 0)::bigint FROM partition_bounds('events') b"),
            &[],
        )
        .await?
        .get(0);
    // Read first: Citus plans no statement that mixes this SQL function with distributed tables.
    let oldest: Option<chrono::DateTime<chrono::Utc>> = client
        .query_one(
            "SELECT min(from_value) FROM partition_bounds('events')",
            &[],
        )
        .await?
        .get(0);
    let oldest = oldest.map_or(chrono::NaiveDate::MAX, |t| t.date_naive());
    let rows = client.query(FIGURES, &[&oldest]).await?;
    let all_raw: i64 = rows.iter().map(|r| r.get::<_, i64>(3)).sum();
    let mut tenants: Vec<TenantStats> = rows
        .iter()
        .map(|r| {
            let raw: i64 = r.get(3);
            let stored: i64 = r.get(4);
            TenantStats {
                tenant_id: r.get(0),
                name: r.get(1),
                events: r.get(2),
                raw_events: raw,
                raw_bytes_estimate: if all_raw > 0 {
                    (events_bytes as f64 * raw as f64 / all_raw as f64).round() as i64
                } else {
                    0
                },
                stored_last_24h: stored,
                events_per_second_24h: stored as f64 / 86_400.0,
                queries: None,
                shard: None,
            }
        })
        .collect();
    let mut queries_tracked = false;
    if citus {
        let track: String = client
            .query_one("SELECT current_setting('citus.stat_tenants_track')", &[])
            .await?
            .get(0);
        queries_tracked = track != "none";
        let counts: std::collections::HashMap<String, i64> = if queries_tracked {
            client
                .query(
                    "SELECT tenant_attribute, sum(query_count_in_this_period \
                            + query_count_in_last_period)::bigint \
                     FROM citus_stat_tenants GROUP BY 1",
                    &[],
                )
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect()
        } else {
            Default::default()
        };
        for t in &mut tenants {
            t.shard = shard_of(client, t.tenant_id).await?;
            if queries_tracked {
                t.queries = Some(counts.get(&t.tenant_id.to_string()).copied().unwrap_or(0));
            }
        }
    }
    Ok(Stats {
        tenants,
        citus,
        queries_tracked,
        events_bytes,
    })
}

/// The shard of `events` holding the tenant's rows (Citus only).
pub async fn shard_of(client: &Client, tenant_id: i64) -> Result<Option<Shard>, PlacementError> {
    let row = client
        .query_opt(
            "SELECT s.shardid, s.shardminvalue = s.shardmaxvalue, n.nodename || ':' || n.nodeport \
             FROM pg_dist_shard s \
             JOIN pg_dist_placement p ON p.shardid = s.shardid \
             JOIN pg_dist_node n ON n.groupid = p.groupid \
             WHERE s.shardid = get_shard_id_for_distribution_column('events', $1::bigint) \
             ORDER BY n.nodeid LIMIT 1",
            &[&tenant_id],
        )
        .await?;
    Ok(row.map(|r| Shard {
        shard_id: r.get(0),
        isolated: r.get(1),
        node: r.get(2),
    }))
}

/// What [`isolate`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Isolated {
    pub tenant_id: i64,
    pub before: Shard,
    pub after: Shard,
    /// The tenant had a shard of its own already: nothing moved.
    pub already: bool,
}

/// Moves the tenant's rows of every table colocated with `events` (partitions, rollups,
/// attribution, dashboards, ledger, usage) into shards of their own
/// (`isolate_tenant_to_new_shard(.., 'CASCADE')`), on the node that held them; `tenant
/// rebalance` may move them afterwards.
pub async fn isolate(
    client: &Client,
    tenant_id: i64,
    mode: TransferMode,
) -> Result<Isolated, PlacementError> {
    if !db::has_citus(client).await? {
        return Err(PlacementError::NeedsCitus("tenant isolate"));
    }
    if !crate::tenants::exists(client, tenant_id).await? {
        return Err(PlacementError::UnknownTenant(tenant_id));
    }
    let before = shard_of(client, tenant_id)
        .await?
        .expect("a distributed events table has a shard for every value");
    if before.isolated {
        return Ok(Isolated {
            tenant_id,
            after: before.clone(),
            before,
            already: true,
        });
    }
    client
        .execute(
            "SELECT isolate_tenant_to_new_shard('events', $1::bigint, 'CASCADE', \
                    shard_transfer_mode => $2::text::citus.shard_transfer_mode)",
            &[&tenant_id, &mode.as_str()],
        )
        .await?;
    let after = shard_of(client, tenant_id)
        .await?
        .expect("the isolated shard exists");
    Ok(Isolated {
        tenant_id,
        before,
        after,
        already: false,
    })
}

/// One state of a rebalance job (`citus_rebalance_status()`).
#[derive(Debug, Clone, Serialize)]
pub struct Rebalance {
    pub job_id: i64,
    pub state: String,
    /// Tasks per state, as Citus reports them (JSON object).
    pub tasks: serde_json::Value,
}

impl Rebalance {
    pub fn finished(&self) -> bool {
        matches!(
            self.state.as_str(),
            "finished" | "cancelled" | "failed" | "failing"
        )
    }
}

/// Starts a background rebalance of the shards over the workers (`citus_rebalance_start`);
/// `None` when nothing needs to move.
pub async fn rebalance_start(
    client: &Client,
    mode: TransferMode,
) -> Result<Option<i64>, PlacementError> {
    if !db::has_citus(client).await? {
        return Err(PlacementError::NeedsCitus("cluster rebalance"));
    }
    Ok(client
        .query_one(
            "SELECT citus_rebalance_start(shard_transfer_mode => $1::text::citus.shard_transfer_mode)",
            &[&mode.as_str()],
        )
        .await?
        .get(0))
}

/// The latest rebalance job's state, if any ran.
pub async fn rebalance_status(client: &Client) -> Result<Option<Rebalance>, PlacementError> {
    if !db::has_citus(client).await? {
        return Err(PlacementError::NeedsCitus("cluster rebalance"));
    }
    let row = client
        .query_opt(
            "SELECT job_id, state::text, coalesce(details -> 'tasks', '{}'::jsonb) \
             FROM citus_rebalance_status() ORDER BY job_id DESC LIMIT 1",
            &[],
        )
        .await?;
    Ok(row.map(|r| Rebalance {
        job_id: r.get(0),
        state: r.get(1),
        tasks: r.get(2),
    }))
}
