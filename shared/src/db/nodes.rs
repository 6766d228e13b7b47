//! What each node of the database offers, checked before migrating, and the `doctor` report.
//!
//! On Citus a migration that creates an extension runs on every worker too, and a worker
//! without the library fails half-way through (hll), or the coordinator decides on TopN by
//! its own `pg_available_extensions` while a worker lacks `topn.so`. [`preflight`] reads every
//! node first and refuses with the node and the package named, before anything is created.

use std::collections::BTreeMap;
use std::fmt;
use tokio_postgres::Client;

/// Extensions the project uses: required, or used when available.
const WATCHED: [&str; 4] = ["citus", "hll", "topn", "pg_cron"];

/// One node and the watched extensions it has: name -> installed version (`None`: the library
/// is available, the extension not created in this database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeExtensions {
    /// `coordinator` or `host:port`.
    pub node: String,
    pub extensions: BTreeMap<String, Option<String>>,
}

impl NodeExtensions {
    pub fn has(&self, name: &str) -> bool {
        self.extensions.contains_key(name)
    }
}

/// Why the schema cannot be migrated on this cluster.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("{node} has no {extension} extension library: {hint}; nothing was created")]
    MissingLibrary {
        node: String,
        extension: &'static str,
        hint: &'static str,
    },
    #[error("cannot read the extensions of worker {node}: {message}")]
    Unreachable { node: String, message: String },
    #[error("database error while checking the nodes")]
    Database(#[from] tokio_postgres::Error),
}

fn parse_extensions(text: &str) -> BTreeMap<String, Option<String>> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|item| match item.split_once('=') {
            Some((name, "")) => (name.to_string(), None),
            Some((name, version)) => (name.to_string(), Some(version.to_string())),
            None => (item.to_string(), None),
        })
        .collect()
}

fn extensions_query() -> String {
    let names = WATCHED.map(|n| format!("'{n}'")).join(", ");
    format!(
        "SELECT coalesce(string_agg(name || '=' || coalesce(installed_version, ''), ',' ORDER BY name), '') \
         FROM pg_available_extensions WHERE name IN ({names})"
    )
}

/// The watched extensions of the coordinator (or the only server) and, on Citus, of every
/// active worker.
pub async fn node_extensions(client: &Client) -> Result<Vec<NodeExtensions>, PreflightError> {
    let query = extensions_query();
    let local: String = client.query_one(&query, &[]).await?.get(0);
    let mut nodes = vec![NodeExtensions {
        node: "coordinator".into(),
        extensions: parse_extensions(&local),
    }];
    if !super::has_citus(client).await? {
        return Ok(nodes);
    }
    let rows = client
        .query(
            "SELECT nodename, nodeport, success, result FROM run_command_on_workers($1)",
            &[&query],
        )
        .await?;
    for row in rows {
        let node = format!("{}:{}", row.get::<_, String>(0), row.get::<_, i32>(1));
        let result: String = row.get(3);
        if !row.get::<_, bool>(2) {
            return Err(PreflightError::Unreachable {
                node,
                message: result,
            });
        }
        nodes.push(NodeExtensions {
            node: format!("worker {node}"),
            extensions: parse_extensions(&result),
        });
    }
    Ok(nodes)
}

/// What the migrations will use, decided once from every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preflight {
    pub nodes: Vec<NodeExtensions>,
    pub citus: bool,
    /// Whether the C TopN extension is (or will be) used rather than the SQL stand-in.
    pub topn: bool,
}

/// Checks that every node can take the migrations: hll everywhere, and topn on every worker
/// when the coordinator has it (the migration then creates it, which Citus propagates).
pub async fn preflight(client: &Client) -> Result<Preflight, PreflightError> {
    let nodes = node_extensions(client).await?;
    let citus = super::has_citus(client).await?;
    let topn = check_nodes(&nodes)?;
    Ok(Preflight { nodes, citus, topn })
}

/// The rule of [`preflight`] over nodes already read (the coordinator first); answers whether
/// TopN will be the C extension.
pub fn check_nodes(nodes: &[NodeExtensions]) -> Result<bool, PreflightError> {
    for node in nodes {
        if !node.has("hll") {
            return Err(PreflightError::MissingLibrary {
                node: node.node.clone(),
                extension: "hll",
                hint: "install postgresql-<version>-hll (or the hll package of the service) on every node",
            });
        }
    }
    let topn = nodes.first().is_some_and(|n| n.has("topn"));
    if topn {
        if let Some(node) = nodes.iter().find(|n| !n.has("topn")) {
            return Err(PreflightError::MissingLibrary {
                node: node.node.clone(),
                extension: "topn",
                hint: "the coordinator has topn, so the migration would create it on every node: \
                       install topn on this node too, or remove it from the coordinator to use \
                       the SQL stand-in",
            });
        }
    }
    Ok(topn)
}

/// What `remarketable doctor` prints: what the database has and what the project uses.
#[derive(Debug, Clone)]
pub struct Doctor {
    pub server_version: String,
    pub nodes: Vec<NodeExtensions>,
    pub citus_version: Option<String>,
    pub schema_version: Option<i32>,
    /// `extension x.y`, `SQL stand-in`, or not yet decided.
    pub topn: String,
    pub topn_switch_hint: Option<String>,
    pub partitions: Option<PartitionReport>,
    pub settings: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct PartitionReport {
    pub interval: String,
    pub retention: String,
    pub lookahead: String,
    pub count: i64,
    pub first: Option<chrono::DateTime<chrono::Utc>>,
    pub last: Option<chrono::DateTime<chrono::Utc>>,
    /// On Citus: shards per partition, and partitions per upkeep transaction.
    pub shards_per_partition: Option<i64>,
    pub changes_per_step: i32,
}

/// `1 day`, `30 days`, `5 minutes`: the largest whole unit (the settings hold no months).
fn seconds_text(seconds: i64) -> String {
    let (n, unit) = [
        (86_400, "day"),
        (3_600, "hour"),
        (60, "minute"),
        (1, "second"),
    ]
    .into_iter()
    .find(|(size, _)| seconds % size == 0)
    .map(|(size, unit)| (seconds / size, unit))
    .unwrap_or((seconds, "second"));
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Settings that matter to this project, where the server has them.
const SETTINGS: [&str; 9] = [
    "max_connections",
    "max_locks_per_transaction",
    "max_prepared_transactions",
    "citus.shard_count",
    "citus.max_cached_conns_per_worker",
    "citus.max_adaptive_executor_pool_size",
    "citus.node_conninfo",
    "topn.number_of_counters",
    "TimeZone",
];

/// Reads what [`Doctor`] reports. Works on an empty database as well as a migrated one.
pub async fn doctor(client: &Client) -> Result<Doctor, PreflightError> {
    let server_version: String = client
        .query_one("SELECT current_setting('server_version')", &[])
        .await?
        .get(0);
    let nodes = node_extensions(client).await?;
    let installed = |name: &str| {
        nodes[0]
            .extensions
            .get(name)
            .cloned()
            .flatten()
            .map(|v| format!("{name} {v}"))
    };
    let citus_version = installed("citus");
    let migrated = client
        .query_opt(
            "SELECT 1 FROM pg_class WHERE relname = 'refinery_schema_history' AND relkind = 'r'",
            &[],
        )
        .await?
        .is_some();
    let schema_version: Option<i32> = if migrated {
        client
            .query_one("SELECT max(version) FROM refinery_schema_history", &[])
            .await?
            .get(0)
    } else {
        None
    };
    let stand_in = client
        .query_opt(
            "SELECT 1 FROM pg_proc p WHERE p.proname = 'topn_union' AND NOT EXISTS \
             (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')",
            &[],
        )
        .await?
        .is_some();
    let all_have_topn = nodes.iter().all(|n| n.has("topn"));
    let (topn, topn_switch_hint) = match (installed("topn"), stand_in) {
        (Some(v), _) => (format!("C extension ({v})"), None),
        (None, true) => (
            "SQL stand-in".to_string(),
            all_have_topn.then(|| {
                "every node has the topn library; the stand-in has the extension's names and \
                 jsonb shape, so switching is: in one transaction between rollup runs, \
                 DROP AGGREGATE topn_add_agg(text), topn_union_agg(jsonb); DROP FUNCTION \
                 topn_counters(), topn_prune(jsonb), topn(jsonb, integer), topn_union(jsonb, \
                 jsonb), topn_add(jsonb, text), topn_pack_items(text[]), \
                 topn_pack_counters(jsonb[]); CREATE EXTENSION topn; and set \
                 topn.number_of_counters = 1000 for the database on every node"
                    .to_string()
            }),
        ),
        (None, false) if all_have_topn => ("C extension (created by migrate)".to_string(), None),
        (None, false) => ("SQL stand-in (created by migrate)".to_string(), None),
    };
    let partitions = if migrated {
        let row = client
            .query_one(
                "SELECT extract(epoch FROM s.partition_interval)::bigint, \
                        extract(epoch FROM s.retention)::bigint, \
                        extract(epoch FROM s.lookahead)::bigint, \
                        count(b.*), min(b.from_value), max(b.to_value) \
                 FROM partition_settings s LEFT JOIN partition_bounds('events') b ON true \
                 WHERE s.table_name = 'events' GROUP BY 1, 2, 3",
                &[],
            )
            .await?;
        let shards_per_partition = if citus_version.is_some() {
            client
                .query_one(
                    "SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'events'::regclass",
                    &[],
                )
                .await?
                .get(0)
        } else {
            None
        };
        Some(PartitionReport {
            interval: seconds_text(row.get(0)),
            retention: seconds_text(row.get(1)),
            lookahead: seconds_text(row.get(2)),
            count: row.get(3),
            first: row.get(4),
            last: row.get(5),
            shards_per_partition,
            changes_per_step: super::partition_changes_per_step(client).await?,
        })
    } else {
        None
    };
    let mut settings = Vec::new();
    for name in SETTINGS {
        let value: Option<String> = client
            .query_one("SELECT current_setting($1, true)", &[&name])
            .await?
            .get(0);
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            settings.push((name.to_string(), value));
        }
    }
    Ok(Doctor {
        server_version,
        nodes,
        citus_version,
        schema_version,
        topn,
        topn_switch_hint,
        partitions,
        settings,
    })
}

impl fmt::Display for Doctor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "server: PostgreSQL {}", self.server_version)?;
        match &self.citus_version {
            Some(v) => writeln!(
                f,
                "engine: Citus ({v}), {} worker(s); all writes go through the coordinator",
                self.nodes.len() - 1
            )?,
            None => writeln!(f, "engine: plain PostgreSQL (no citus extension)")?,
        }
        for node in &self.nodes {
            let list: Vec<String> = node
                .extensions
                .iter()
                .map(|(name, v)| match v {
                    Some(v) => format!("{name} {v}"),
                    None => format!("{name} (available)"),
                })
                .collect();
            writeln!(f, "  {}: {}", node.node, list.join(", "))?;
        }
        match self.schema_version {
            Some(v) => writeln!(f, "schema: migrated to V{v}")?,
            None => writeln!(f, "schema: not migrated (run `remarketable migrate`)")?,
        }
        writeln!(f, "topn: {}", self.topn)?;
        if let Some(hint) = &self.topn_switch_hint {
            writeln!(f, "  {hint}")?;
        }
        if let Some(p) = &self.partitions {
            writeln!(
                f,
                "partitions of events: {} every {}, kept {}, created {} ahead",
                p.count, p.interval, p.retention, p.lookahead
            )?;
            if let (Some(first), Some(last)) = (p.first, p.last) {
                writeln!(f, "  from {first} to {last}")?;
            }
            if let Some(shards) = p.shards_per_partition {
                writeln!(
                    f,
                    "  {shards} shards per partition ({} shard tables of events); upkeep creates \
                     {} partition(s) per transaction",
                    shards * (p.count + 1),
                    p.changes_per_step
                )?;
            }
        }
        writeln!(f, "settings:")?;
        for (name, value) in &self.settings {
            writeln!(f, "  {name} = {value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_extension_list() {
        let e = parse_extensions("hll=2.16,topn=,citus=13.2-1");
        assert_eq!(e.get("hll"), Some(&Some("2.16".to_string())));
        assert_eq!(e.get("topn"), Some(&None));
        assert_eq!(e.get("citus"), Some(&Some("13.2-1".to_string())));
        assert!(parse_extensions("").is_empty());
        assert_eq!(seconds_text(86_400), "1 day");
        assert_eq!(seconds_text(30 * 86_400), "30 days");
        assert_eq!(seconds_text(3_600), "1 hour");
        assert_eq!(seconds_text(300), "5 minutes");
        assert_eq!(seconds_text(90_000), "25 hours");
    }

    fn node(name: &str, extensions: &str) -> NodeExtensions {
        NodeExtensions {
            node: name.into(),
            extensions: parse_extensions(extensions),
        }
    }

    #[test]
    fn a_worker_without_a_library_is_named() {
        let ok = [
            node("coordinator", "citus=13.2-1,hll=2.16"),
            node("worker a:1", "citus=13.2-1,hll="),
        ];
        assert!(!check_nodes(&ok).unwrap());
        let no_hll = [
            node("coordinator", "citus=13.2-1,hll=2.16"),
            node("worker b:2", "citus=13.2-1"),
        ];
        let e = check_nodes(&no_hll).unwrap_err().to_string();
        assert!(e.contains("worker b:2") && e.contains("hll"), "{e}");
        assert!(e.contains("nothing was created"), "{e}");
        // TopN on the coordinator only: the migration would fail on the worker.
        let topn_here = [
            node("coordinator", "citus=13.2-1,hll=2.16,topn="),
            node("worker c:3", "citus=13.2-1,hll=2.16"),
        ];
        let e = check_nodes(&topn_here).unwrap_err().to_string();
        assert!(e.contains("worker c:3") && e.contains("topn"), "{e}");
        let topn_everywhere = [
            node("coordinator", "hll=,topn=2.7.0"),
            node("worker d:4", "hll=,topn="),
        ];
        assert!(check_nodes(&topn_everywhere).unwrap());
        // Plain PostgreSQL: one node.
        assert!(check_nodes(&[node("coordinator", "")]).is_err());
    }
}
