//! Database access: the connection pool, migrations and partition upkeep.

use crate::config::Settings;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::future::BoxFuture;

pub mod nodes;
pub mod tls;
pub use nodes::{Doctor, Preflight, PreflightError};
pub use tls::{parse_database_url, ConnectError, Connector, DbTls, SslMode};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The pool of ingest, the jobs and the API's small requests (`DB_POOL_SIZE`). It connects
/// lazily: creating it touches no network, so the handler is ready for the host's readiness
/// probe before the database answers. TLS follows `sslmode` as libpq does (see [`tls`]).
pub fn pool(settings: &Settings) -> Pool {
    build_pool(
        settings,
        settings.database.clone(),
        settings.pool_size,
        settings.connect_timeout,
    )
}

/// The reports' own pool (`REPORT_POOL_SIZE`), so a report load cannot take the connections
/// ingest needs. Its sessions carry `statement_timeout = REPORT_TIMEOUT_MS`, set when they
/// connect (no round trip per request); a report waits for a connection at most that long.
/// They also run without JIT: a report statement runs for milliseconds, but its estimates
/// (CTEs, `generate_series`) often pass `jit_above_cost`, and compiling it cost more than
/// running it (the campaign benchmark's funnel report: 1,071 of 1,195 ms in JIT, the campaign
/// report 205 of 598 ms).
pub fn report_pool(settings: &Settings) -> Pool {
    let mut config = settings.database.clone();
    let timeout = format!(
        "-c statement_timeout={} -c jit=off",
        settings.report_timeout.as_millis()
    );
    let options = match config.get_options() {
        Some(given) if !given.trim().is_empty() => format!("{given} {timeout}"),
        _ => timeout,
    };
    config.options(&options);
    if config.get_application_name().is_none() {
        config.application_name("remarketable-reports");
    }
    let wait = settings.report_timeout.min(settings.connect_timeout);
    build_pool(settings, config, settings.report_pool_size, wait)
}

fn build_pool(
    settings: &Settings,
    mut config: tokio_postgres::Config,
    size: usize,
    wait: std::time::Duration,
) -> Pool {
    config.connect_timeout(settings.connect_timeout);
    if config.get_application_name().is_none() {
        config.application_name("remarketable");
    }
    let manager = Manager::from_connect(
        config,
        PoolConnect {
            tls: settings.database_tls.clone(),
            connector: Connector::new(&settings.database_tls),
        },
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(wait))
        .create_timeout(Some(settings.connect_timeout))
        .build()
        .expect("a pool with a runtime and timeouts always builds")
}

/// How the pool opens a connection: the same path as [`connect_with`], so `prefer` falls back
/// to plain text there too.
struct PoolConnect {
    tls: DbTls,
    connector: Connector,
}

impl deadpool_postgres::Connect for PoolConnect {
    fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> BoxFuture<
        '_,
        Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
    > {
        let config = config.clone();
        Box::pin(async move {
            tls::connect(&config, &self.tls, &self.connector)
                .await
                .map_err(|e| {
                    // The pool's error shows only "error performing TLS handshake" at its top
                    // level, which is all its callers log; say here which setting to change.
                    if e.is_tls() {
                        tracing::warn!("{e}");
                    }
                    e.into_postgres()
                })
        })
    }
}

/// Connects one client outside any pool (for the admin CLI and tests), with the TLS the
/// config's `sslmode` asks for (disable, prefer or require; see [`tls`]). The connection task
/// is spawned on the current runtime.
pub async fn connect(
    config: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    connect_with(config, &DbTls::of_config(config))
        .await
        .map_err(ConnectError::into_postgres)
}

/// Connects one client with TLS settings read by [`parse_database_url`] (which knows
/// `verify-ca`, `verify-full` and `sslrootcert`); the error says which setting to change when
/// TLS is why it failed.
pub async fn connect_with(
    config: &tokio_postgres::Config,
    tls: &DbTls,
) -> Result<tokio_postgres::Client, ConnectError> {
    let (client, _task) = tls::connect(config, tls, &Connector::new(tls)).await?;
    Ok(client)
}

/// One applied migration, for reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i32,
    pub name: String,
}

/// Why [`migrate`] did not finish.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// A node cannot take the schema; checked before anything is created.
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error("the database refused a step of migrate")]
    Database(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Migration(#[from] refinery::Error),
}

/// Applies the pending migrations; applied ones are skipped, so running it again is a no-op.
/// Every node is checked first ([`nodes::preflight`]): a worker without a library the schema
/// needs is an error before anything is created.
pub async fn migrate(
    client: &mut tokio_postgres::Client,
) -> Result<Vec<AppliedMigration>, MigrateError> {
    migrate_with(client, None).await
}

/// [`migrate`], with the shard count of the distributed tables on Citus (`citus.shard_count`
/// for this session, which the migrations' `create_distributed_table` calls read; tables
/// distributed earlier keep theirs). Ignored on plain PostgreSQL.
pub async fn migrate_with(
    client: &mut tokio_postgres::Client,
    shard_count: Option<u32>,
) -> Result<Vec<AppliedMigration>, MigrateError> {
    let preflight = nodes::preflight(client).await?;
    if let (true, Some(n)) = (preflight.citus, shard_count) {
        client
            .execute(
                "SELECT set_config('citus.shard_count', $1, false)",
                &[&n.to_string()],
            )
            .await?;
    }
    let runner = embedded::migrations::runner();
    accept_rewrites(client, runner.get_migrations()).await?;
    let report = runner.set_abort_divergent(true).run_async(client).await?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| AppliedMigration {
            version: m.version(),
            name: m.name().to_owned(),
        })
        .collect())
}

/// Migrations whose text changed after they were released, with the checksum refinery recorded
/// for the released text. V12 and V17 failed on Citus 13.2 (`SET STORAGE` on a distributed
/// table; two DDL commands in one text on a reference table) and were rewritten to do on a
/// cluster what they did on plain PostgreSQL, where the rewrite does exactly what the released
/// text did. A database that applied a released text is not divergent: its recorded checksum
/// is moved to the rewrite's. Any other difference still stops `migrate` (abort on divergence).
pub const REWRITTEN_MIGRATIONS: &[(i32, u64)] = &[
    (12, 16_708_374_846_970_480_061),
    (17, 11_817_016_401_907_427_796),
];

/// Records the rewrites of [`REWRITTEN_MIGRATIONS`] in refinery's history, where it exists.
async fn accept_rewrites(
    client: &tokio_postgres::Client,
    migrations: &[refinery::Migration],
) -> Result<(), tokio_postgres::Error> {
    let history: bool = client
        .query_one(
            "SELECT to_regclass('refinery_schema_history') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !history {
        return Ok(());
    }
    for (version, released) in REWRITTEN_MIGRATIONS {
        let Some(now) = migrations.iter().find(|m| m.version() == *version) else {
            continue;
        };
        let moved = client
            .execute(
                "UPDATE refinery_schema_history SET checksum = $1 \
                 WHERE version = $2 AND checksum = $3",
                &[&now.checksum().to_string(), version, &released.to_string()],
            )
            .await?;
        if moved > 0 {
            tracing::info!(
                version,
                "migration recorded with its released text: rewrite accepted"
            );
        }
    }
    Ok(())
}

/// One partition created or dropped by [`maintain_partitions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionChange {
    pub action: String,
    pub partition: String,
    pub from: chrono::DateTime<chrono::Utc>,
    pub to: chrono::DateTime<chrono::Utc>,
}

/// Creates the partitions of `events` up to the look-ahead horizon and drops expired ones, in
/// bounded steps: each step is one statement (its own transaction unless the caller holds one)
/// making at most [`partition_changes_per_step`] changes, so a fresh install on Citus does not
/// hold thousands of shard locks in one transaction, and an interrupted run resumes where it
/// stopped.
pub async fn maintain_partitions(
    client: &tokio_postgres::Client,
) -> Result<Vec<PartitionChange>, tokio_postgres::Error> {
    let step = partition_changes_per_step(client).await?;
    let mut changes = Vec::new();
    loop {
        let rows = client
            .query(
                "SELECT action, partition_name, from_value, to_value \
                 FROM maintain_partitions('events', now(), $1)",
                &[&step],
            )
            .await?;
        let made = rows.len();
        changes.extend(rows.iter().map(|r| PartitionChange {
            action: r.get(0),
            partition: r.get(1),
            from: r.get(2),
            to: r.get(3),
        }));
        if made < step as usize {
            return Ok(changes);
        }
    }
}

/// Creates the missing partitions of `events` that hold `times` (history an import brings,
/// older than upkeep keeps), at the table's fixed interval, in the same bounded steps as
/// [`maintain_partitions`] (SQL `create_partitions_for`, migration V18), each its own
/// transaction. Answers the partitions created.
pub async fn create_partitions_for(
    client: &tokio_postgres::Client,
    times: &[chrono::DateTime<chrono::Utc>],
) -> Result<Vec<PartitionChange>, tokio_postgres::Error> {
    let step = partition_changes_per_step(client).await?;
    let mut created = Vec::new();
    loop {
        let rows = client
            .query(
                "SELECT partition_name, from_value, to_value \
                 FROM create_partitions_for('events', $1, $2)",
                &[&times, &step],
            )
            .await?;
        let made = rows.len();
        created.extend(rows.iter().map(|r| PartitionChange {
            action: "created".into(),
            partition: r.get(0),
            from: r.get(1),
            to: r.get(2),
        }));
        if made < step as usize {
            return Ok(created);
        }
    }
}

/// Locks one step of partition upkeep may hold, per node. The shared lock table holds
/// `max_locks_per_transaction` (64) x (`max_connections` + `max_prepared_transactions`) entries,
/// 19,200 on a default Citus node (Citus sets 200 prepared transactions); a step stays far below
/// that so ingest and queries running at the same time keep theirs.
const PARTITION_STEP_LOCKS: i64 = 1024;

/// Locks taken on a worker per shard of a new partition (table, primary key, BRIN index and
/// their metadata), measured on Citus 13.2: 16 shards per worker took about 205 locks.
const LOCKS_PER_SHARD: i64 = 13;

/// How many partitions one step of [`maintain_partitions`] creates or drops: on Citus as many
/// as keep the locks per worker under [`PARTITION_STEP_LOCKS`] (4 with 32 shards on 2 workers);
/// on plain PostgreSQL (a few locks per partition) 64.
pub async fn partition_changes_per_step(
    client: &tokio_postgres::Client,
) -> Result<i32, tokio_postgres::Error> {
    if !has_citus(client).await? {
        return Ok(64);
    }
    let shards_per_node: Option<i64> = client
        .query_one(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM pg_dist_shard s \
                                 JOIN pg_dist_placement p USING (shardid) \
                                 WHERE s.logicalrelid = 'events'::regclass \
                                 GROUP BY p.groupid) per_node",
            &[],
        )
        .await?
        .get(0);
    Ok(match shards_per_node {
        None => 64,
        Some(n) => (PARTITION_STEP_LOCKS / (n.max(1) * LOCKS_PER_SHARD)).clamp(1, 64) as i32,
    })
}

/// Whether the database has the citus extension (the guard of every Citus-only call).
pub async fn has_citus<C: tokio_postgres::GenericClient>(
    client: &C,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_opt("SELECT 1 FROM pg_extension WHERE extname = 'citus'", &[])
        .await?
        .is_some())
}

/// Folds the per-batch ledger entries into the hourly ledger; answers how many (tenant, hour)
/// totals were folded. The `ingest_ledger` view reads the same before and after.
pub async fn compact_ledger(client: &tokio_postgres::Client) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT compact_ingest_ledger()", &[])
        .await?
        .get(0))
}

/// Changes of partition layout requested at install time; `None` keeps the current value.
/// Values use PostgreSQL interval syntax (`1 hour`, `30 days`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionLayout {
    pub interval: Option<String>,
    pub retention: Option<String>,
    pub lookahead: Option<String>,
}

/// Applies a [`PartitionLayout`] to `events` (the interval only while no partition exists).
pub async fn configure_partitions(
    client: &tokio_postgres::Client,
    layout: &PartitionLayout,
) -> Result<(), tokio_postgres::Error> {
    if layout == &PartitionLayout::default() {
        return Ok(());
    }
    client
        .execute(
            "SELECT configure_partitions('events', $1::text::interval, $2::text::interval, $3::text::interval)",
            &[&layout.interval, &layout.retention, &layout.lookahead],
        )
        .await?;
    Ok(())
}
