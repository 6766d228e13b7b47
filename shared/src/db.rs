//! Database access: the connection pool, migrations and partition upkeep.

use crate::config::Settings;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::sync::Once;
use tokio_postgres_rustls::MakeRustlsConnect;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The TLS connector used for every connection. `sslmode` in `DATABASE_URL` decides whether
/// TLS is used (`prefer` by default; Azure requires `require`); server certificates are checked
/// against the Mozilla roots.
pub fn tls() -> MakeRustlsConnect {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Fails only if another provider was installed first, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    MakeRustlsConnect::with_webpki_roots()
}

/// A pool that connects lazily: creating it touches no network, so the handler is ready for
/// the host's readiness probe before the database answers.
pub fn pool(settings: &Settings) -> Pool {
    let mut config = settings.database.clone();
    config.connect_timeout(settings.connect_timeout);
    if config.get_application_name().is_none() {
        config.application_name("remarketable");
    }
    let manager = Manager::from_config(
        config,
        tls(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(settings.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.connect_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .build()
        .expect("a pool with a runtime and timeouts always builds")
}

/// Connects one client outside any pool (for the admin CLI and tests). The connection task is
/// spawned on the current runtime.
pub async fn connect(
    config: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(tls()).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}

/// One applied migration, for reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i32,
    pub name: String,
}

/// Applies the pending migrations; applied ones are skipped, so running it again is a no-op.
pub async fn migrate(
    client: &mut tokio_postgres::Client,
) -> Result<Vec<AppliedMigration>, refinery::Error> {
    let report = embedded::migrations::runner()
        .set_abort_divergent(true)
        .run_async(client)
        .await?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| AppliedMigration {
            version: m.version(),
            name: m.name().to_owned(),
        })
        .collect())
}

/// One partition created or dropped by [`maintain_partitions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionChange {
    pub action: String,
    pub partition: String,
    pub from: chrono::DateTime<chrono::Utc>,
    pub to: chrono::DateTime<chrono::Utc>,
}

/// Creates the partitions of `events` up to the look-ahead horizon and drops expired ones.
pub async fn maintain_partitions(
    client: &tokio_postgres::Client,
) -> Result<Vec<PartitionChange>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT action, partition_name, from_value, to_value FROM maintain_partitions('events')",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| PartitionChange {
            action: r.get(0),
            partition: r.get(1),
            from: r.get(2),
            to: r.get(3),
        })
        .collect())
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
