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

/// Drops every object the migrations create, leaving the extensions: a prepared Citus database
/// is reset with it instead of being remade. Everything in `public` that no extension owns goes
/// (tables, sequences no table owns (V27's funnel ids) and views, then routines: functions,
/// procedures, aggregates such as the TopN stand-in), so a new migration's objects need no
/// entry here; a list of names missed the functions added later, and a reset database then
/// refused to migrate ("already exists").
pub const RESET_PROJECT: &str = "
    DO $reset$
    DECLARE
        r record;
    BEGIN
        FOR r IN
            SELECT c.oid, c.relname, c.relkind FROM pg_class c
            WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'S')
              AND NOT c.relispartition
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                              AND d.objid = c.oid AND d.deptype = 'e')
            ORDER BY c.relkind = 'v' DESC, c.relname
        LOOP
            CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = r.oid);
            EXECUTE format('DROP %s %I CASCADE',
                           CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'S' THEN 'SEQUENCE'
                                          ELSE 'TABLE' END, r.relname);
        END LOOP;
        FOR r IN
            SELECT p.oid, p.oid::regprocedure::text AS signature, p.prokind FROM pg_proc p
            WHERE p.pronamespace = 'public'::regnamespace
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                              AND d.objid = p.oid AND d.deptype = 'e')
            ORDER BY p.prokind = 'a' DESC, 2
        LOOP
            CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_proc WHERE oid = r.oid);
            EXECUTE format('DROP %s %s CASCADE',
                           CASE r.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE'
                                          ELSE 'FUNCTION' END, r.signature);
        END LOOP;
    END
    $reset$;
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
