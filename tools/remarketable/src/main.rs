//! `remarketable`: the admin CLI.
//!
//! ```text
//! remarketable migrate [--partition-interval '1 hour'] [--retention '30 days'] [--lookahead '1 day']
//! remarketable partitions
//! remarketable tenant add <id> [--name N] [--time-zone Z]
//! remarketable tenant list
//! remarketable rollup run | status
//! remarketable rollup retention <5min|1hour|1day> <interval|keep>
//! ```
//! Every command reads `DATABASE_URL`.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use remarketable_core::db::{self, PartitionLayout};
use remarketable_core::rollup::{self, Rollup};
use std::str::FromStr;

#[derive(Parser)]
#[command(name = "remarketable", version, about = "ReMarketable admin CLI")]
struct Cli {
    /// PostgreSQL connection string (postgres://user:password@host:port/db?sslmode=require).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending migrations, then create and expire partitions. Safe to run again.
    Migrate {
        /// Partition interval of `events` (PostgreSQL interval, e.g. '1 hour', '1 day').
        /// Chosen once: it cannot change after the first partition exists.
        #[arg(long, env = "EVENTS_PARTITION_INTERVAL")]
        partition_interval: Option<String>,
        /// How long raw events are kept (e.g. '30 days').
        #[arg(long, env = "EVENTS_RETENTION")]
        retention: Option<String>,
        /// How far ahead partitions are created (e.g. '1 day').
        #[arg(long, env = "EVENTS_LOOKAHEAD")]
        lookahead: Option<String>,
    },
    /// Create missing partitions up to the look-ahead and drop expired ones (what the
    /// `maintenance` timer does).
    Partitions,
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Incremental rollups (what the `rollup` timer does, and their settings).
    Rollup {
        #[command(subcommand)]
        command: RollupCommand,
    },
}

#[derive(Subcommand)]
enum RollupCommand {
    /// Advance the 5-minute, hourly and daily rollups over the events committed since their
    /// last run.
    Run,
    /// Each rollup's watermark, retention and last run.
    Status,
    /// How long a rollup keeps its rows: a PostgreSQL interval ('90 days', '2 years') or
    /// `keep` for ever. Defaults: 5min 90 days, 1hour 2 years, 1day kept.
    Retention { rollup: Rollup, retention: String },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Register a tenant (a storefront). Events of unregistered tenants are dead-lettered.
    Add {
        /// Tenant id, an integer greater than 0, as producers send it in `tenant_id`.
        id: i64,
        /// Display name (default: "tenant <id>").
        #[arg(long)]
        name: Option<String>,
        /// IANA time zone of the storefront, for daily figures (default UTC).
        #[arg(long, default_value = "UTC")]
        time_zone: String,
    },
    /// List registered tenants.
    List,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = tokio_postgres::Config::from_str(&cli.database_url)
        .map_err(|_| anyhow::anyhow!("DATABASE_URL is not a PostgreSQL connection string"))?;
    let mut client = db::connect(&config)
        .await
        .context("cannot connect to the database named by DATABASE_URL")?;
    match cli.command {
        Command::Migrate {
            partition_interval,
            retention,
            lookahead,
        } => {
            let applied = db::migrate(&mut client).await.context("migration failed")?;
            if applied.is_empty() {
                eprintln!("schema is up to date");
            }
            for m in &applied {
                eprintln!("applied migration V{} {}", m.version, m.name);
            }
            let layout = PartitionLayout {
                interval: partition_interval,
                retention,
                lookahead,
            };
            db::configure_partitions(&client, &layout)
                .await
                .context("cannot set the partition layout")?;
            maintain(&client).await?;
        }
        Command::Partitions => maintain(&client).await?,
        Command::Tenant { command } => tenant(&client, command).await?,
        Command::Rollup { command } => rollups(&mut client, command).await?,
    }
    Ok(())
}

async fn maintain(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    let changes = db::maintain_partitions(client)
        .await
        .context("partition upkeep failed")?;
    let created = changes.iter().filter(|c| c.action == "created").count();
    let dropped = changes.len() - created;
    let row = client
        .query_one(
            "SELECT count(*), min(from_value), max(to_value) FROM partition_bounds('events')",
            &[],
        )
        .await?;
    let count: i64 = row.get(0);
    let from: Option<chrono::DateTime<chrono::Utc>> = row.get(1);
    let to: Option<chrono::DateTime<chrono::Utc>> = row.get(2);
    eprintln!("partitions of events: {created} created, {dropped} dropped; {count} cover {from:?} .. {to:?}");
    Ok(())
}

async fn tenant(client: &tokio_postgres::Client, command: TenantCommand) -> anyhow::Result<()> {
    match command {
        TenantCommand::Add {
            id,
            name,
            time_zone,
        } => {
            if id <= 0 {
                bail!("tenant id must be greater than 0");
            }
            let known_zone = client
                .query_opt(
                    "SELECT 1 FROM pg_timezone_names WHERE name = $1",
                    &[&time_zone],
                )
                .await?
                .is_some();
            if !known_zone {
                bail!("unknown time zone {time_zone:?}: use an IANA name such as Europe/Berlin");
            }
            let name = name.unwrap_or_else(|| format!("tenant {id}"));
            let inserted = client
                .execute(
                    "INSERT INTO tenants (tenant_id, name, time_zone) VALUES ($1, $2, $3) \
                     ON CONFLICT (tenant_id) DO NOTHING",
                    &[&id, &name, &time_zone],
                )
                .await
                .context("cannot register the tenant")?;
            if inserted == 0 {
                eprintln!("tenant {id} is already registered");
            } else {
                eprintln!("registered tenant {id} ({name}, {time_zone})");
            }
        }
        TenantCommand::List => {
            for row in client
                .query(
                    "SELECT tenant_id, name, time_zone FROM tenants ORDER BY tenant_id",
                    &[],
                )
                .await?
            {
                let id: i64 = row.get(0);
                let name: String = row.get(1);
                let zone: String = row.get(2);
                println!("{id}\t{name}\t{zone}");
            }
        }
    }
    Ok(())
}

async fn rollups(
    client: &mut tokio_postgres::Client,
    command: RollupCommand,
) -> anyhow::Result<()> {
    match command {
        RollupCommand::Run => {
            for advance in rollup::run(client).await.context("rollup failed")? {
                eprintln!("{advance}");
            }
        }
        RollupCommand::Status => {
            println!("rollup\tlast_event_id\tretention\tlast_run_at\tlast_rows");
            for s in rollup::states(client).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    s.rollup,
                    s.last_event_id,
                    s.retention.as_deref().unwrap_or("keep"),
                    s.last_run_at
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "never".into()),
                    s.last_rows.map(|n| n.to_string()).unwrap_or_default()
                );
            }
        }
        RollupCommand::Retention { rollup, retention } => {
            let keep = (retention != "keep").then_some(retention.as_str());
            rollup::set_retention(client, rollup, keep)
                .await
                .with_context(|| {
                    format!("cannot set the retention of {rollup} to {retention:?}")
                })?;
            eprintln!(
                "{rollup} rollup keeps its rows {}",
                keep.map(|k| format!("for {k}"))
                    .unwrap_or_else(|| "for ever".into())
            );
        }
    }
    Ok(())
}
