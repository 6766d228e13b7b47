//! `remarketable`: the admin CLI.
//!
//! ```text
//! remarketable migrate [--partition-interval '1 hour'] [--retention '30 days'] [--lookahead '1 day'] [--shard-count N]
//! remarketable doctor
//! remarketable partitions
//! remarketable tenant add <id> [--name N] [--time-zone Z]
//! remarketable tenant list
//! remarketable tenant attribution <id> [--conversions purchase,signup] [--lookback-days N] [--clicks-first true|false]
//! remarketable tenant stats [--json]
//! remarketable tenant isolate <id> [--transfer-mode block_writes|force_logical|auto]   # Citus
//! remarketable cluster rebalance [--transfer-mode M] [--no-wait]                       # Citus
//! remarketable rollup run | status
//! remarketable rollup retention <5min|1hour|1day> <interval|keep>
//! remarketable dead-letters replay <tenant_id> [--batch N]
//! remarketable import [--map COLUMN=FIELD]... [--chunk-events N] [--max-age-days N] FILE...
//! remarketable import --from-postgres URL --query 'SELECT ...' [--key id] [--chunk-events N] [--max-age-days N]
//! remarketable rollup window <events>
//! remarketable spend import <tenant_id> FILE           # CSV: date,campaign,source,medium,cost,currency
//! remarketable funnel save <tenant_id> <name> --title T STEP...   # STEP: event_type or event_type@url_prefix
//! remarketable funnel list <tenant_id>
//! remarketable funnel delete <tenant_id> <name>
//! remarketable key create <tenant_id> [--write [--allowed-origin O]...] [--label L]   # prints the key once, on stdout
//! remarketable key create --admin [--label L]
//! remarketable key list [<tenant_id>]
//! remarketable key revoke <key_id>
//! remarketable share create <tenant_id> --expires 7d [--filter country=DE]... [--label L]
//! remarketable share list <tenant_id>
//! remarketable share revoke <token_id>
//! ```
//! Every command reads `DATABASE_URL`; `share create` also `SHARE_TOKEN_SECRET` (the handler's).

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use remarketable_core::access::{self, KeyKind};
use remarketable_core::config::ShareSecret;
use remarketable_core::db::{self, PartitionLayout};
use remarketable_core::rollup::{self, Rollup};
use remarketable_core::telemetry::{MaintenanceDone, RollupsAdvanced};
use remarketable_core::ErrorCode;
use remarketable_core::{attribution, funnels, import, jobs, placement, spend, tenants};

/// jemalloc, as the handler: `import` validates every record through the ingest core, and
/// glibc's malloc/free took about a fifth of the importer's time (perf, 300,000 events).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
        /// On Citus: shards of each distributed table (citus.shard_count), read when the
        /// tables are first distributed; ignored afterwards and on plain PostgreSQL.
        #[arg(long, env = "CITUS_SHARD_COUNT", value_parser = clap::value_parser!(u32).range(1..=4096))]
        shard_count: Option<u32>,
    },
    /// Print what the database has (engine, nodes and their extensions, schema version,
    /// partition layout, settings) and what the project uses (C TopN or the SQL stand-in).
    Doctor,
    /// Create missing partitions up to the look-ahead and drop expired ones.
    Partitions,
    /// Everything the `maintenance` timer does: partitions, ledger compaction, rollup
    /// retention.
    Maintenance,
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// The Citus cluster's shards.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Incremental rollups (what the `rollup` timer does, and their settings).
    Rollup {
        #[command(subcommand)]
        command: RollupCommand,
    },
    /// API keys: read and write keys of tenants, admin keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Share tokens: signed, expiring, read-only links to a tenant's reports.
    Share {
        #[command(subcommand)]
        command: ShareCommand,
    },
    /// Dead letters.
    DeadLetters {
        #[command(subcommand)]
        command: DeadLetterCommand,
    },
    /// Ad spend: what campaigns cost per day, for the campaign report's cost, CPC, CPA, ROAS.
    Spend {
        #[command(subcommand)]
        command: SpendCommand,
    },
    /// Funnels: ordered steps whose sessions the funnel report counts.
    Funnel {
        #[command(subcommand)]
        command: FunnelCommand,
    },
    /// Import historical events from files (.csv with a header row, .ndjson; optionally .gz)
    /// through the ingest path: same validation, dead letters and ledger, exactly once.
    /// Stopped or killed, the same command continues where it stopped.
    Import {
        /// Files to import, one after the other.
        #[arg(
            required_unless_present = "from_postgres",
            conflicts_with = "from_postgres"
        )]
        files: Vec<std::path::PathBuf>,
        /// Read the events from a query on this PostgreSQL database instead (libpq URL, as
        /// DATABASE_URL): each row is the JSON object of its non-NULL columns, named as the
        /// event contract's fields (alias them in the query).
        #[arg(long, requires = "query", hide_env_values = true)]
        from_postgres: Option<String>,
        /// The query of --from-postgres (a SELECT, read chunk by chunk in key order).
        #[arg(long, requires = "from_postgres")]
        query: Option<String>,
        /// The query's column that orders and resumes the import: a unique integer >= 0
        /// (indexed in the source table, so each chunk is an index range scan).
        #[arg(long, default_value = "id")]
        key: String,
        /// CSV: a column's field in the event contract (e.g. shop=tenant_id); `COLUMN=` leaves
        /// the column out. Other columns keep their header as name. Repeatable.
        #[arg(long = "map", value_name = "COLUMN=FIELD")]
        map: Vec<String>,
        /// Records per transaction.
        #[arg(long, default_value_t = import::DEFAULT_CHUNK_EVENTS as u32,
              value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        chunk_events: u32,
        /// Oldest event_time accepted, in days before now (live ingest keeps
        /// EVENT_RETENTION_DAYS); older events are dead-lettered as outside_retention.
        #[arg(long, default_value_t = 3660, value_parser = clap::value_parser!(i64).range(1..=36600))]
        max_age_days: i64,
    },
}

#[derive(Subcommand)]
enum FunnelCommand {
    /// Create a tenant's funnel or replace the one of that name, and build its per-session
    /// state from the stored events (as `PUT /api/v1/tenants/{id}/funnels/{name}`).
    Save {
        tenant_id: i64,
        name: String,
        #[arg(long)]
        title: String,
        /// 2 to 8 steps in order: an event type, or `event_type@url_prefix` for events whose
        /// page_url starts with the prefix.
        #[arg(required = true, num_args = 2..=8)]
        steps: Vec<String>,
    },
    /// A tenant's funnels and their steps.
    List { tenant_id: i64 },
    /// Delete a funnel and its state.
    Delete { tenant_id: i64, name: String },
}

#[derive(Subcommand)]
enum SpendCommand {
    /// Store a tenant's ad spend from a CSV file (header: date,campaign,source,medium,cost,
    /// currency; source and medium optional), as the admin upload route does: every row or,
    /// with a line refused, none. A figure given again replaces the stored one, so importing
    /// the same file twice counts it once.
    Import {
        tenant_id: i64,
        /// The CSV file (`-` for standard input).
        file: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    /// Re-validate a tenant's pending dead letters with today's rules (e.g. after registering
    /// the tenant), store those that pass and mark them replayed. Running it again changes
    /// nothing.
    Replay {
        tenant_id: i64,
        /// Dead letters per transaction.
        #[arg(long, default_value_t = remarketable_core::replay::DEFAULT_MAX)]
        batch: usize,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create a key and print it once on stdout (only its hash is stored). A tenant key is a
    /// read key unless --write is given (write keys are for `collect`).
    Create {
        /// The tenant of a read or write key.
        #[arg(required_unless_present = "admin", conflicts_with = "admin")]
        tenant_id: Option<i64>,
        /// A write key, for sending events to `collect`.
        #[arg(long)]
        write: bool,
        /// An admin key (tenants and keys through the admin API); belongs to no tenant.
        #[arg(long, conflicts_with = "write")]
        admin: bool,
        /// What the key is for, shown in lists.
        #[arg(long, default_value = "")]
        label: String,
        /// A write key's origin (https://shop.example.com) that collect accepts it from when
        /// a browser names one; repeat for several. Default: any origin.
        #[arg(long = "allowed-origin", requires = "write")]
        allowed_origins: Vec<String>,
    },
    /// List keys (of one tenant, or all), without secrets.
    List { tenant_id: Option<i64> },
    /// Revoke a key by its id (the 16 hex digits after the kind). Takes effect within
    /// ACCESS_CACHE_TTL_SECONDS on every handler instance.
    Revoke { key_id: String },
}

#[derive(Subcommand)]
enum ShareCommand {
    /// Create a share token and print it once on stdout. Needs SHARE_TOKEN_SECRET, the same as
    /// the handler's.
    Create {
        tenant_id: i64,
        /// Lifetime: a number with s, m, h or d (e.g. 7d), at most 90 days.
        #[arg(long)]
        expires: String,
        /// A dimension fixed for every report the token reads: event_type, country, browser or
        /// campaign (e.g. country=DE). Repeatable.
        #[arg(long = "filter", value_name = "DIMENSION=VALUE")]
        filters: Vec<String>,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List a tenant's share tokens (the tokens themselves are not stored).
    List { tenant_id: i64 },
    /// Revoke a share token by its id.
    Revoke { token_id: String },
}

#[derive(Subcommand)]
enum RollupCommand {
    /// Advance the 5-minute, hourly and daily rollups over the events committed since their
    /// last run.
    Run,
    /// Each rollup's watermark, retention and last run.
    Status,
    /// The most event ids one rollup window takes (default 100000); a run takes window after
    /// window, each its own transaction, until caught up (or 50 s).
    Window {
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        events: i64,
    },
    /// How long a rollup keeps its rows: a PostgreSQL interval ('90 days', '2 years') or
    /// `keep` for ever. Defaults: 5min 90 days, 1hour 2 years, 1day kept.
    Retention { rollup: Rollup, retention: String },
    /// The most distinct values of a dimension (event_type, browser or campaign) one tenant's
    /// local day takes into the rollups (default 1000); later new values are rolled up as
    /// `(other)` (raw events keep them). Conversion event types are never folded.
    Values {
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(rollup::GUARDED_DIMENSIONS))]
        dimension: String,
        #[arg(value_parser = clap::value_parser!(i32).range(0..))]
        max_per_day: i32,
    },
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
    /// Show the tenant's attribution settings, or change those named: which event types are
    /// conversions, the lookback, whether clicks outrank impressions. Conversions stored from
    /// then on follow them.
    Attribution {
        id: i64,
        /// Event types that count as conversions, comma-separated (e.g. purchase,signup).
        #[arg(long, value_delimiter = ',')]
        conversions: Option<Vec<String>>,
        /// How far before a conversion a touch may lie, in days (1 to 366).
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..=366))]
        lookback_days: Option<i64>,
        /// Whether clicks outrank impressions (true or false).
        #[arg(long)]
        clicks_first: Option<bool>,
    },
    /// Per tenant: events, raw volume and its estimated storage, ingest over 24 hours,
    /// queries (Citus, when tracked) and its shard: which storefronts to isolate.
    Stats {
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Citus: move the tenant's rows of every colocated table into shards of their own.
    Isolate {
        id: i64,
        /// How shards are copied: block_writes (the default) works at any wal_level, writes to
        /// the tenant's shard wait meanwhile; force_logical keeps them flowing but needs
        /// wal_level = logical; auto refuses here (the rollups' staging tables have no
        /// replica identity).
        #[arg(long, default_value = "block_writes")]
        transfer_mode: placement::TransferMode,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Citus: start a background rebalance of the shards over the workers and, unless
    /// --no-wait, show its progress until it ends.
    Rebalance {
        #[arg(long, default_value = "block_writes")]
        transfer_mode: placement::TransferMode,
        #[arg(long)]
        no_wait: bool,
    },
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

/// The settings the handler would run with here (the EVENT_* limits, the caches' lifetimes),
/// from this environment.
fn env_settings(database_url: &str) -> anyhow::Result<remarketable_core::Settings> {
    let mut map: std::collections::HashMap<String, String> = std::env::vars().collect();
    map.insert("DATABASE_URL".into(), database_url.to_owned());
    remarketable_core::Settings::from_map(&map)
        .context("the settings in the environment are invalid")
}

async fn funnel(client: &mut tokio_postgres::Client, command: FunnelCommand) -> anyhow::Result<()> {
    let refused = |e: remarketable_core::Error| anyhow::anyhow!("{} ({})", e.message, e.code);
    match command {
        FunnelCommand::Save {
            tenant_id,
            name,
            title,
            steps,
        } => {
            let name = funnels::parse_name(&name).map_err(refused)?;
            let steps: Vec<serde_json::Value> = steps
                .iter()
                .map(|s| match s.split_once('@') {
                    Some((kind, prefix)) => {
                        serde_json::json!({"event_type": kind, "url_prefix": prefix})
                    }
                    None => serde_json::json!({"event_type": s}),
                })
                .collect();
            let definition =
                funnels::Definition::parse(serde_json::json!({"title": title, "steps": steps}))
                    .map_err(refused)?;
            eprintln!("building the funnel's state from the stored events of tenant {tenant_id}…");
            let saved = funnels::save(client, tenant_id, &name, &definition)
                .await
                .map_err(refused)?;
            eprintln!(
                "funnel {} ({}) {}: {} matching events, {} sessions, built to event {}",
                saved.funnel.name,
                saved.funnel.funnel_id,
                if saved.replaced {
                    "replaced"
                } else {
                    "created"
                },
                saved.events_matched,
                saved.sessions,
                saved.built_to_event
            );
        }
        FunnelCommand::List { tenant_id } => {
            for f in funnels::list(&*client, tenant_id).await.map_err(refused)? {
                let steps: Vec<String> = f
                    .steps
                    .iter()
                    .map(|s| match &s.url_prefix {
                        Some(p) => format!("{}@{p}", s.event_type),
                        None => s.event_type.clone(),
                    })
                    .collect();
                println!("{}\t{}\t{}", f.name, f.title, steps.join(" → "));
            }
        }
        FunnelCommand::Delete { tenant_id, name } => {
            let name = funnels::parse_name(&name).map_err(refused)?;
            if !funnels::delete(client, tenant_id, &name)
                .await
                .map_err(refused)?
            {
                bail!("tenant {tenant_id} has no funnel named {name:?}");
            }
            eprintln!("funnel {name} of tenant {tenant_id} deleted");
        }
    }
    Ok(())
}

async fn spend_import(
    client: &mut tokio_postgres::Client,
    tenant_id: i64,
    file: &std::path::Path,
    limits: &remarketable_core::event::EventLimits,
) -> anyhow::Result<()> {
    let csv = if file == std::path::Path::new("-") {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("reading stdin")?;
        buf
    } else {
        std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    if !tenants::exists(&*client, tenant_id).await? {
        bail!("tenant {tenant_id} is not registered");
    }
    let report = spend::upload(client, tenant_id, &csv, limits)
        .await
        .map_err(|e| match e {
            spend::UploadError::Invalid { .. } => anyhow::anyhow!("{}: {e}", file.display()),
            spend::UploadError::Database(e) => anyhow::Error::new(e).context("database error"),
        })?;
    let mut cost: Vec<String> = report
        .cost
        .iter()
        .map(|(c, v)| format!("{v} {c}"))
        .collect();
    cost.sort();
    eprintln!(
        "tenant {tenant_id}: {} rows ({} added, {} changed, {} unchanged), days {} to {}, cost {}",
        report.rows,
        report.added,
        report.changed,
        report.unchanged,
        report.first_day.map_or("-".into(), |d| d.to_string()),
        report.last_day.map_or("-".into(), |d| d.to_string()),
        if cost.is_empty() {
            "0".into()
        } else {
            cost.join(", ")
        }
    );
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // The same reading as the handler's: libpq's sslmode values, sslrootcert, and
    // DATABASE_SSLROOTCERT.
    let root_cert = std::env::var(db::tls::ROOT_CERT_SETTING).ok();
    let (config, tls) = db::parse_database_url(&cli.database_url, root_cert.as_deref())?;
    let mut client = db::connect_with(&config, &tls)
        .await
        .context("cannot connect to the database named by DATABASE_URL")?;
    match cli.command {
        Command::Migrate {
            partition_interval,
            retention,
            lookahead,
            shard_count,
        } => {
            let applied = db::migrate_with(&mut client, shard_count)
                .await
                .context("migration failed")?;
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
        Command::Doctor => {
            let report = db::nodes::doctor(&client)
                .await
                .context("cannot read the database's state")?;
            print!("{report}");
        }
        Command::Partitions => maintain(&client).await?,
        Command::Maintenance => {
            let run = jobs::maintenance(&client)
                .await
                .context("maintenance failed")?;
            eprintln!(
                "{}",
                MaintenanceDone {
                    run: &run,
                    past_due: false
                }
            );
        }
        Command::Tenant { command } => tenant(&client, command).await?,
        Command::Cluster { command } => cluster(&client, command).await?,
        Command::Rollup { command } => rollups(&mut client, command).await?,
        Command::Key { command } => keys(&client, command).await?,
        Command::Share { command } => shares(&client, command).await?,
        Command::Spend {
            command: SpendCommand::Import { tenant_id, file },
        } => {
            let limits = env_settings(&cli.database_url)?.limits;
            spend_import(&mut client, tenant_id, &file, &limits).await?
        }
        Command::Funnel { command } => funnel(&mut client, command).await?,
        Command::DeadLetters {
            command: DeadLetterCommand::Replay { tenant_id, batch },
        } => {
            let limits = env_settings(&cli.database_url)?.limits;
            replay(&mut client, tenant_id, batch, &limits).await?
        }
        Command::Import {
            files,
            from_postgres,
            query,
            key,
            map,
            chunk_events,
            max_age_days,
        } => {
            let settings = env_settings(&cli.database_url)?;
            let options = import::ImportOptions {
                columns: import::ColumnMap::parse(&map)?,
                chunk_events: chunk_events as usize,
            };
            let mut limits = settings.limits.clone();
            limits.retention = chrono::Duration::days(max_age_days);
            let ingestor =
                remarketable_core::Ingestor::new(limits.clone(), settings.tenant_cache_ttl);
            match (from_postgres, query) {
                (Some(url), Some(query)) => {
                    let (from_config, from_tls) =
                        db::parse_database_url(&url, root_cert.as_deref())
                            .context("--from-postgres is not a valid PostgreSQL URL")?;
                    let from = db::connect_with(&from_config, &from_tls)
                        .await
                        .context("cannot connect to the database of --from-postgres")?;
                    let mut show = progress_printer("query".into());
                    let summary = import::import_postgres(
                        &mut client,
                        &ingestor,
                        from,
                        &from_config,
                        &query,
                        &key,
                        &options,
                        &limits,
                        &mut show,
                    )
                    .await
                    .context("the import of the query stopped")?;
                    print_summary(&summary);
                }
                _ => {
                    for file in &files {
                        let name = file.display().to_string();
                        let mut show = progress_printer(name.clone());
                        let summary = import::import_file(
                            &mut client,
                            &ingestor,
                            file,
                            &options,
                            &limits,
                            &mut show,
                        )
                        .await
                        .with_context(|| format!("import of {name} stopped"))?;
                        print_summary(&summary);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Progress of `remarketable import` on stderr: a line per chunk on a pipe (logs, tests), one
/// line rewritten at most four times a second on a terminal.
fn progress_printer(name: String) -> impl FnMut(&import::Progress) {
    use std::io::{IsTerminal, Write};
    let terminal = std::io::stderr().is_terminal();
    let mut last_shown = std::time::Instant::now() - std::time::Duration::from_secs(1);
    move |p| {
        if terminal && last_shown.elapsed() < std::time::Duration::from_millis(250) {
            return;
        }
        last_shown = std::time::Instant::now();
        let done = p
            .done_percent()
            .map(|d| format!(", {d:.1} % done"))
            .unwrap_or_default();
        let line = format!(
            "{name}: chunk {}, {} stored, {} dead-lettered, {} skipped, {:.0} events/s{done}",
            p.chunks,
            p.stored,
            p.dead_lettered,
            p.skipped,
            p.rate(),
        );
        let mut err = std::io::stderr().lock();
        if terminal {
            write!(err, "\r{line}\x1b[K").ok();
        } else {
            writeln!(err, "{line}").ok();
        }
        err.flush().ok();
    }
}

fn print_summary(summary: &import::ImportSummary) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let p = &summary.progress;
    let resumed = if summary.resumed_after >= remarketable_core::Position::from(0) {
        format!(", continued after position {}", summary.resumed_after)
    } else {
        String::new()
    };
    eprintln!(
        "{}: {} events stored, {} dead-lettered, {} skipped as already imported, \
         {} partitions created; {} chunks in {:.1} s ({:.0} events/s){resumed}; source {}",
        summary.input,
        p.stored,
        p.dead_lettered,
        summary.duplicates,
        p.partitions_created,
        p.chunks,
        p.elapsed.as_secs_f64(),
        p.rate(),
        summary.source
    );
    for (reason, n) in &summary.dead_letters {
        eprintln!("  dead-lettered {}: {n}", reason.code());
    }
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
            let tenant = tenants::NewTenant {
                tenant_id: id,
                name: name.unwrap_or_else(|| format!("tenant {id}")),
                time_zone,
            };
            match tenants::register(client, &tenant).await {
                Ok(_) => eprintln!(
                    "registered tenant {id} ({}, {})",
                    tenant.name.trim(),
                    tenant.time_zone
                ),
                Err(tenants::RegisterError::Exists(_)) => {
                    eprintln!("tenant {id} is already registered")
                }
                Err(e @ tenants::RegisterError::Database(_)) => {
                    return Err(anyhow::Error::new(e).context("cannot register the tenant"))
                }
                Err(e) => bail!("{e}"),
            }
        }
        TenantCommand::Stats { json } => {
            let stats = placement::stats(client).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
                return Ok(());
            }
            print_stats(&stats);
        }
        TenantCommand::Isolate { id, transfer_mode } => {
            let done = placement::isolate(client, id, transfer_mode).await?;
            if done.already {
                eprintln!(
                    "tenant {id} already has its own shard ({} on {})",
                    done.after.shard_id, done.after.node
                );
            } else {
                eprintln!(
                    "tenant {id} isolated: shard {} on {} (it shared shard {} on {})",
                    done.after.shard_id, done.after.node, done.before.shard_id, done.before.node
                );
            }
        }
        TenantCommand::Attribution {
            id,
            conversions,
            lookback_days,
            clicks_first,
        } => {
            let change = attribution::SettingsChange {
                conversion_event_types: conversions,
                lookback_seconds: lookback_days.map(|d| d * 86_400),
                clicks_first,
            };
            let settings = if change == attribution::SettingsChange::default() {
                attribution::settings(client, id).await?
            } else {
                let change = change
                    .checked()
                    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
                attribution::set_settings(client, id, &change).await?
            };
            let Some(s) = settings else {
                bail!("tenant {id} is not registered");
            };
            println!(
                "tenant {id}: conversions {}; lookback {} s ({:.1} days); clicks first: {}",
                s.conversion_event_types.join(","),
                s.lookback_seconds,
                s.lookback_seconds as f64 / 86_400.0,
                s.clicks_first
            );
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

fn print_stats(stats: &placement::Stats) {
    let mib = |b: i64| b as f64 / (1024.0 * 1024.0);
    println!(
        "{:>9}  {:<24} {:>13} {:>13} {:>11} {:>12} {:>9} {:>9}  shard",
        "tenant", "name", "events", "raw events", "raw MiB~", "stored 24 h", "ev/s 24h", "queries"
    );
    for t in &stats.tenants {
        let queries = t.queries.map_or("-".to_string(), |q| q.to_string());
        let shard = t.shard.as_ref().map_or("-".to_string(), |s| {
            format!(
                "{} on {}{}",
                s.shard_id,
                s.node,
                if s.isolated { " (own shard)" } else { "" }
            )
        });
        let name: String = t.name.chars().take(24).collect();
        println!(
            "{:>9}  {:<24} {:>13} {:>13} {:>11.1} {:>12} {:>9.2} {:>9}  {shard}",
            t.tenant_id,
            name,
            t.events,
            t.raw_events,
            mib(t.raw_bytes_estimate),
            t.stored_last_24h,
            t.events_per_second_24h,
            queries
        );
    }
    eprintln!(
        "events: the daily rollup (all history); raw: within the raw partitions; raw MiB~: the \
         tenant's share of `events` ({:.1} MiB on disk)",
        mib(stats.events_bytes)
    );
    if !stats.citus {
        eprintln!("plain PostgreSQL: no shards, and queries per tenant are not tracked");
    } else if !stats.queries_tracked {
        eprintln!(
            "queries per tenant: set citus.stat_tenants_track = 'all' (ALTER SYSTEM, every node) \
             to count them"
        );
    }
}

async fn cluster(client: &tokio_postgres::Client, command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Rebalance {
            transfer_mode,
            no_wait,
        } => {
            let Some(job) = placement::rebalance_start(client, transfer_mode).await? else {
                eprintln!("the shards are balanced: nothing to move");
                return Ok(());
            };
            eprintln!("rebalance started: job {job}");
            if no_wait {
                return Ok(());
            }
            loop {
                let Some(status) = placement::rebalance_status(client).await? else {
                    bail!("rebalance job {job} is not listed by citus_rebalance_status()");
                };
                eprintln!("job {}: {} {}", status.job_id, status.state, status.tasks);
                if status.finished() {
                    if status.state != "finished" {
                        bail!("rebalance job {} ended {}", status.job_id, status.state);
                    }
                    return Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        }
    }
}

async fn rollups(
    client: &mut tokio_postgres::Client,
    command: RollupCommand,
) -> anyhow::Result<()> {
    match command {
        RollupCommand::Run => {
            let run = jobs::rollup(client).await.context("rollup failed")?;
            eprintln!(
                "{}",
                RollupsAdvanced {
                    run: &run,
                    past_due: false
                }
            );
        }
        RollupCommand::Window { events } => {
            rollup::set_max_window(client, events)
                .await
                .context("cannot set the rollup window")?;
            eprintln!("a rollup window takes at most {events} event ids");
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
            println!();
            println!("dimension\tmax_values_per_day");
            for (dimension, max) in rollup::dimension_limits(client).await? {
                println!("{dimension}\t{max}");
            }
        }
        RollupCommand::Values {
            dimension,
            max_per_day,
        } => {
            if !rollup::set_dimension_limit(client, &dimension, max_per_day)
                .await
                .context("cannot set the dimension limit")?
            {
                bail!("{dimension} is not a guarded dimension");
            }
            eprintln!(
                "a tenant's local day takes at most {max_per_day} {dimension} values into the \
                 rollups; later new ones are rolled up as {}",
                rollup::OTHER
            );
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

fn access_error(e: access::AccessError) -> anyhow::Error {
    match e {
        access::AccessError::Database(e) => anyhow::Error::new(e).context("database error"),
        other => anyhow::anyhow!("{other}"),
    }
}

fn time_text(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into())
}

async fn keys(client: &tokio_postgres::Client, command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Create {
            tenant_id,
            write,
            admin,
            label,
            allowed_origins,
        } => {
            let kind = match (admin, write) {
                (true, _) => KeyKind::Admin,
                (false, true) => KeyKind::Write,
                (false, false) => KeyKind::Read,
            };
            let origins = (!allowed_origins.is_empty()).then_some(allowed_origins.as_slice());
            let key = access::create_key_for_origins(client, tenant_id, kind, &label, origins)
                .await
                .map_err(access_error)?;
            match key.tenant_id {
                Some(t) => eprintln!(
                    "created {} key {} of tenant {t}; it is shown only now:",
                    key.kind, key.key_id
                ),
                None => eprintln!("created admin key {}; it is shown only now:", key.key_id),
            }
            println!("{}", key.key);
        }
        KeyCommand::List { tenant_id } => {
            println!("key_id\ttenant_id\tkind\tlabel\tcreated_at\trevoked_at\tlast_used_at");
            for k in
                all_pages(|page| async move { access::list_keys(client, tenant_id, &page).await })
                    .await?
            {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    k.key_id,
                    k.tenant_id
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "-".into()),
                    k.kind,
                    k.label,
                    k.created_at.to_rfc3339(),
                    time_text(k.revoked_at),
                    time_text(k.last_used_at)
                );
            }
        }
        KeyCommand::Revoke { key_id } => {
            let key_id = access::parse_id(&key_id, ErrorCode::BadKeyId).map_err(access_error)?;
            match access::revoke_key(client, &key_id)
                .await
                .map_err(access_error)?
            {
                Some(revoked) => eprintln!(
                    "key {key_id} revoked, with the {} share tokens it made",
                    revoked.share_tokens.len()
                ),
                None => bail!("no key {key_id}"),
            }
        }
    }
    Ok(())
}

/// Every item of a listing, page after page.
async fn all_pages<T, F, Fut>(mut read: F) -> anyhow::Result<Vec<T>>
where
    F: FnMut(access::Page) -> Fut,
    Fut: std::future::Future<Output = Result<access::Listing<T>, access::AccessError>>,
{
    let mut page = access::Page {
        limit: access::MAX_PAGE,
        after: None,
    };
    let mut all = Vec::new();
    loop {
        let listing = read(page.clone()).await.map_err(access_error)?;
        all.extend(listing.items);
        match listing.next {
            Some(next) => page.after = Some(next),
            None => return Ok(all),
        }
    }
}

/// `7d`, `12h`, `30m`, `3600s`.
fn parse_lifetime(text: &str) -> anyhow::Result<chrono::Duration> {
    let text = text.trim();
    let split = text.len().saturating_sub(1);
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().ok().filter(|n| *n > 0).with_context(|| {
        format!("--expires {text:?}: expected a number with s, m, h or d, e.g. 7d")
    })?;
    let seconds = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => bail!("--expires {text:?}: expected a number with s, m, h or d, e.g. 7d"),
    };
    access::check_share_ttl(seconds).map_err(access_error)
}

async fn shares(client: &tokio_postgres::Client, command: ShareCommand) -> anyhow::Result<()> {
    match command {
        ShareCommand::Create {
            tenant_id,
            expires,
            filters,
            label,
        } => {
            let ttl = parse_lifetime(&expires)?;
            let pairs = filters
                .iter()
                .map(|f| {
                    f.split_once('=')
                        .with_context(|| format!("--filter {f:?}: expected DIMENSION=VALUE"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let filters = access::parse_filters(pairs).map_err(access_error)?;
            let secret_text = std::env::var("SHARE_TOKEN_SECRET").map_err(|_| {
                anyhow::anyhow!("SHARE_TOKEN_SECRET is not set: share tokens are signed with the handler's secret")
            })?;
            let secret = ShareSecret::new(secret_text.trim())?;
            let token =
                // Made by the operator, not by a key: it lives until revoked or expired.
                access::create_share_token(
                    client,
                    Some(&secret),
                    tenant_id,
                    ttl,
                    filters,
                    &label,
                    None,
                )
                .await
                .map_err(access_error)?;
            eprintln!(
                "created share token {} of tenant {tenant_id}, expires {}; it is shown only now:",
                token.token_id,
                token.expires_at.to_rfc3339()
            );
            println!("{}", token.token);
        }
        ShareCommand::List { tenant_id } => {
            println!("token_id\tfilters\tlabel\tcreated_at\texpires_at\trevoked_at");
            for t in all_pages(|page| async move {
                access::list_share_tokens(client, tenant_id, &page).await
            })
            .await?
            {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    t.token_id,
                    filters_text(&t.filters),
                    t.label,
                    t.created_at.to_rfc3339(),
                    t.expires_at.to_rfc3339(),
                    time_text(t.revoked_at)
                );
            }
        }
        ShareCommand::Revoke { token_id } => {
            let token_id =
                access::parse_id(&token_id, ErrorCode::BadTokenId).map_err(access_error)?;
            if access::revoke_share_token(client, None, &token_id)
                .await
                .map_err(access_error)?
            {
                eprintln!("share token {token_id} revoked");
            } else {
                bail!("no share token {token_id}");
            }
        }
    }
    Ok(())
}

fn filters_text(filters: &std::collections::BTreeMap<String, String>) -> String {
    filters
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Replays in transactions of `batch` dead letters, resuming after the last one examined, so
/// dead letters that still fail do not hold the rest back.
async fn replay(
    client: &mut tokio_postgres::Client,
    tenant_id: i64,
    batch: usize,
    limits: &remarketable_core::event::EventLimits,
) -> anyhow::Result<()> {
    if !(1..=remarketable_core::replay::DEFAULT_MAX).contains(&batch) {
        bail!(
            "--batch must be between 1 and {}",
            remarketable_core::replay::DEFAULT_MAX
        );
    }
    let (mut examined, mut replayed) = (0, 0);
    let mut still_failing = std::collections::BTreeMap::new();
    let mut after = None;
    loop {
        let report = remarketable_core::replay::replay_dead_letters_after(
            client,
            tenant_id,
            after,
            limits,
            chrono::Utc::now(),
            batch,
        )
        .await
        .context("replay failed")?;
        examined += report.examined;
        replayed += report.replayed;
        for (reason, n) in &report.still_failing {
            *still_failing.entry(reason.code()).or_insert(0) += n;
        }
        eprintln!(
            "tenant {tenant_id}: {examined} dead letters examined, {replayed} stored and marked replayed"
        );
        if !report.more {
            break;
        }
        after = report.resume_after;
    }
    for (reason, n) in still_failing {
        eprintln!("  still failing: {reason} {n}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("7d").unwrap(), chrono::Duration::days(7));
        assert_eq!(
            parse_lifetime("90m").unwrap(),
            chrono::Duration::minutes(90)
        );
        assert!(parse_lifetime("91d").is_err());
        assert!(parse_lifetime("10s").is_err());
        assert!(parse_lifetime("7w").is_err());
        assert!(parse_lifetime("d").is_err());
        assert!(parse_lifetime("").is_err());
    }

    #[test]
    fn key_create_arguments() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let parse = |args: &[&str]| {
            Cli::try_parse_from(
                ["remarketable", "--database-url", "postgres://h/db"]
                    .iter()
                    .chain(args),
            )
        };
        assert!(parse(&["key", "create", "3", "--write"]).is_ok());
        assert!(parse(&["key", "create", "--admin"]).is_ok());
        assert!(parse(&["key", "create"]).is_err());
        assert!(parse(&["key", "create", "3", "--admin"]).is_err());
        assert!(parse(&["key", "create", "--admin", "--write"]).is_err());
    }
}
