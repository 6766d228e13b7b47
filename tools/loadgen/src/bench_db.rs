//! Where a benchmark runs: a database it makes on a plain PostgreSQL server, or a prepared
//! database on a Citus coordinator.
//!
//! Citus does not propagate `CREATE DATABASE` with the extension and the workers, so a
//! database a tool makes on a coordinator holds plain local tables: measuring it would measure
//! PostgreSQL. When `DATABASE_URL` names a database with the citus extension (created on every
//! node, workers added: README, Running on Citus), the benchmark uses that database, dropping
//! and recreating the project's objects in it, and says which engine it measured.

use anyhow::Context;
use remarketable_core::db;
use std::fmt;
use std::str::FromStr;

/// Drops every object the migrations create (tables, views, functions, the TopN stand-in),
/// leaving the extensions: a prepared Citus database is reset with it instead of being remade.
pub const RESET_PROJECT: &str = "
    DO $reset$
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_class WHERE relname = 'ingest_ledger' AND relkind = 'v') THEN
            DROP VIEW ingest_ledger;
        END IF;
    END
    $reset$;
    DROP TABLE IF EXISTS events, dead_letters, ingest_positions, ingest_ledger, ingest_ledger_hourly,
        ingest_ledger_batches, tenants, partition_settings, refinery_schema_history CASCADE;
    DROP FUNCTION IF EXISTS partition_bounds(regclass), configure_partitions(text, interval, interval, interval),
        maintain_partitions(text, timestamptz), maintain_partitions(text, timestamptz, integer),
        compact_ingest_ledger();
    DROP TABLE IF EXISTS rollup_events_5min, rollup_events_1hour, rollup_events_1day, event_id_ranges,
        rollup_state, rollup_slices_5min, rollup_slices_1hour, rollup_slices_1day, api_keys,
        share_tokens, dashboards CASCADE;
    DROP FUNCTION IF EXISTS slices_statement(text);
    DROP PROCEDURE IF EXISTS run_rollups();
    DROP FUNCTION IF EXISTS rollup_statement(text), advance_rollup(text), prune_event_id_ranges(),
        apply_rollup_retention();
    DROP TABLE IF EXISTS rollup_stage, rollup_stage_items CASCADE;
    DROP TABLE IF EXISTS touches, session_sources, conversions, attribution_state CASCADE;
    DROP FUNCTION IF EXISTS advance_attribution(), attribution_statement(text);
    DROP FUNCTION IF EXISTS advance_rollups(text[]), rollup_pass_statement(text, text),
        rollup_topn_prune(jsonb, integer), rollup_topn_counters();
    DO $topn$
    BEGIN
        -- The SQL stand-in for TopN, unless the extension provides the names.
        IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'topn') THEN
            DROP AGGREGATE IF EXISTS topn_add_agg(text), topn_union_agg(jsonb);
            DROP FUNCTION IF EXISTS topn_counters(), topn_prune(jsonb), topn(jsonb, integer),
                topn_union(jsonb, jsonb), topn_add(jsonb, text), topn_pack_items(text[]),
                topn_pack_counters(jsonb[]);
        END IF;
    END
    $topn$;
";

/// The engine a benchmark measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engine {
    Plain {
        version: String,
    },
    Citus {
        version: String,
        postgres: String,
        workers: i64,
    },
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Engine::Plain { version } => write!(f, "plain PostgreSQL {version}"),
            Engine::Citus {
                version,
                postgres,
                workers,
            } => write!(
                f,
                "Citus {version} on PostgreSQL {postgres}, {workers} workers, distributed tables"
            ),
        }
    }
}

/// A benchmark's database, connected.
pub struct BenchDb {
    /// The URL of the benchmark's database (for the handler and psql).
    pub url: String,
    pub config: tokio_postgres::Config,
    pub client: tokio_postgres::Client,
    pub engine: Engine,
    /// Whether the project's objects were kept from an earlier run (`keep` and they exist).
    pub kept: bool,
}

/// Prepares the database of a benchmark. On plain PostgreSQL `database_url` names the server:
/// database `name` is made (dropped first unless `keep` and it exists). On Citus
/// `database_url` names the prepared database itself: the project's objects in it are dropped
/// (unless `keep` and they exist). Either way the schema is migrated afterwards.
pub async fn prepare(database_url: &str, name: &str, keep: bool) -> anyhow::Result<BenchDb> {
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        anyhow::bail!("database names are lower-case letters, digits and _");
    }
    let admin_config = tokio_postgres::Config::from_str(database_url)
        .map_err(|_| anyhow::anyhow!("DATABASE_URL is not a PostgreSQL connection string"))?;
    let admin = db::connect(&admin_config)
        .await
        .context("connect to DATABASE_URL")?;
    let version: String = admin
        .query_one("SELECT current_setting('server_version')", &[])
        .await?
        .get(0);
    let (url, config, kept) = if db::has_citus(&admin).await? {
        let migrated = admin
            .query_opt("SELECT 1 FROM pg_class WHERE relname = 'events'", &[])
            .await?
            .is_some();
        let kept = keep && migrated;
        if !kept {
            admin.batch_execute(RESET_PROJECT).await?;
        }
        (database_url.to_string(), admin_config, kept)
    } else {
        let exists = admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await?
            .is_some();
        let kept = keep && exists;
        if !kept {
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await?;
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await?;
        }
        let mut config = admin_config.clone();
        config.dbname(name);
        (crate::bench::with_db(database_url, name), config, kept)
    };
    drop(admin);
    let mut client = db::connect(&config).await?;
    db::migrate(&mut client).await?;
    let engine = if db::has_citus(&client).await? {
        let citus: String = client
            .query_one(
                "SELECT extversion FROM pg_extension WHERE extname = 'citus'",
                &[],
            )
            .await?
            .get(0);
        let workers: i64 = client
            .query_one("SELECT count(*) FROM citus_get_active_worker_nodes()", &[])
            .await?
            .get(0);
        Engine::Citus {
            version: citus,
            postgres: version,
            workers,
        }
    } else {
        Engine::Plain { version }
    };
    eprintln!("engine: {engine}");
    Ok(BenchDb {
        url,
        config,
        client,
        engine,
        kept,
    })
}
