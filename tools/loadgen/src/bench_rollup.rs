//! The rollup benchmark.
//!
//! 1. Throughput: windows of new events aggregated into all three rollups (`rollup::run`: hll,
//!    TopN, upserts; it says whether TopN is the extension or the SQL stand-in, and how many
//!    rollup rows each event cost), next to a plain `INSERT .. SELECT .. GROUP BY` of the same id window into
//!    unindexed tables (counts and sums only: the database's own limit for this grouping), in
//!    the same run, alternating, with the ratio.
//! 2. Flatness: the run time of an empty window and of a one-batch window with 24 and with 720
//!    hourly partitions present. A window reads only the partitions its events' times span, so
//!    both must stay flat as partitions accumulate.
//! 3. Storage per rollup row and the size of the sketches.
//!
//! Events are generated inside the database (skewed tenants, devices, pages, dimensions) and
//! record their id range in `event_id_ranges`, as every writer of `events` does.

use crate::bench_db;
use remarketable_core::rollup::{self, Rollup};
use remarketable_core::{db, tenants};
use std::time::Instant;

#[derive(clap::Args)]
pub struct BenchRollupArgs {
    /// Superuser URL of a plain PostgreSQL server, where the benchmark makes (and remakes)
    /// database `rmk_bench_rollup`; or of a prepared database on a Citus coordinator, whose
    /// project tables it drops and recreates (see `bench_db`).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// New events per window.
    #[arg(long, default_value_t = 100_000)]
    window: i64,
    /// Windows measured (rollup and plain, alternating).
    #[arg(long, default_value_t = 5)]
    windows: usize,
    /// Repetitions of each flatness measurement (the median is printed).
    #[arg(long, default_value_t = 15)]
    repeat: usize,
}

/// Events of 50 tenants (skewed), spread over the last 50 minutes, with the dimensions and
/// sketch inputs of real traffic. $1: how many.
const GENERATE: &str = "
INSERT INTO events (tenant_id, event_time, event_type, device_id, session_id, country, browser,
                    page_url, campaign, revenue, received_at, stream_partition, stream_sequence)
SELECT tenant, now() - random() * interval '50 minutes', kind, device, device * 8 + (g % 8),
       (ARRAY['US','US','US','DE','DE','GB','FR','NL','CA','JP'])[1 + (random() * 9)::int],
       (ARRAY['Chrome','Chrome','Chrome','Safari','Safari','Edge','Firefox'])[1 + (random() * 6)::int],
       'https://shop' || tenant || '.example/p/' || floor(power(random(), 3) * 500)::int || '?ref=x',
       CASE WHEN kind IN ('ad_click', 'ad_impression') THEN
            (ARRAY['winter-sale','brand-search','retarget-cart'])[1 + (random() * 2)::int] END,
       CASE WHEN kind = 'purchase' THEN round((random() * 300)::numeric, 2) END,
       now(), 'bench', g
FROM (SELECT g, 1 + floor(power(random(), 2) * 50)::bigint AS tenant,
             floor(random() * 20000)::bigint AS device,
             (ARRAY['page_view','page_view','page_view','page_view','ad_impression','ad_click',
                    'add_to_cart','purchase'])[1 + (random() * 7)::int] AS kind
      FROM generate_series(1, $1::bigint) g) s";

/// The same groupings as the rollups, counts and sums only, into tables without indexes.
const PLAIN: [&str; 3] = [
    "INSERT INTO plain_5min SELECT tenant_id, date_bin('5 minutes', event_time, TIMESTAMPTZ 'epoch'),
            event_type, coalesce(country, ''), coalesce(browser, ''), coalesce(campaign, ''),
            count(*), coalesce(sum(revenue), 0), count(*) FILTER (WHERE event_type = 'purchase')
     FROM events WHERE event_id > $1 AND event_id <= $2 GROUP BY 1, 2, 3, 4, 5, 6",
    "INSERT INTO plain_1hour SELECT tenant_id, date_bin('1 hour', event_time, TIMESTAMPTZ 'epoch'),
            event_type, coalesce(country, ''), coalesce(browser, ''), coalesce(campaign, ''),
            count(*), coalesce(sum(revenue), 0), count(*) FILTER (WHERE event_type = 'purchase')
     FROM events WHERE event_id > $1 AND event_id <= $2 GROUP BY 1, 2, 3, 4, 5, 6",
    "INSERT INTO plain_1day SELECT e.tenant_id, (e.event_time AT TIME ZONE t.time_zone)::date,
            e.event_type, coalesce(e.country, ''), coalesce(e.browser, ''), coalesce(e.campaign, ''),
            count(*), coalesce(sum(e.revenue), 0), count(*) FILTER (WHERE e.event_type = 'purchase')
     FROM events e JOIN tenants t USING (tenant_id)
     WHERE e.event_id > $1 AND e.event_id <= $2 GROUP BY 1, 2, 3, 4, 5, 6",
];

pub async fn run(args: BenchRollupArgs) -> anyhow::Result<()> {
    let bench_db::BenchDb {
        mut client, engine, ..
    } = bench_db::prepare(&args.database_url, "rmk_bench_rollup", false).await?;
    // Citus: daily partitions (hourly ones are 32 shard tables an hour), and the plain
    // tables distributed with events, so both sides of the comparison run on the shards.
    let citus = matches!(engine, bench_db::Engine::Citus { .. });
    let (interval, counts) = if citus {
        ("1 day", [2, 30])
    } else {
        ("1 hour", [24, 720])
    };
    set_partitions(&client, interval, counts[0]).await?;
    client
        .batch_execute(
            "SELECT setseed(0.42);
             DROP TABLE IF EXISTS plain_5min, plain_1hour, plain_1day;
             CREATE TABLE plain_5min (tenant_id bigint, bucket timestamptz, event_type text,
                 country text, browser text, campaign text, event_count bigint, revenue numeric,
                 purchases bigint);
             CREATE TABLE plain_1hour (LIKE plain_5min);
             CREATE TABLE plain_1day (tenant_id bigint, day date, event_type text, country text,
                 browser text, campaign text, event_count bigint, revenue numeric,
                 purchases bigint);",
        )
        .await?;
    if citus {
        for plain in ["plain_5min", "plain_1hour", "plain_1day"] {
            client
                .execute(
                    "SELECT create_distributed_table($1::text::regclass, 'tenant_id', colocate_with => 'events')",
                    &[&plain],
                )
                .await?;
        }
    }
    tenants::register_demo(&client, 50, &tenants::DEMO_ZONES).await?;
    // Each measured window is one rollup pass of the whole generated window, however large.
    rollup::set_max_window(&client, args.window.max(1).saturating_mul(2)).await?;

    let topn: Option<String> = client
        .query_opt(
            "SELECT extversion FROM pg_extension WHERE extname = 'topn'",
            &[],
        )
        .await?
        .map(|r| r.get(0));
    println!(
        "TopN: {}",
        match &topn {
            Some(v) => format!("the topn extension {v}"),
            None => "the SQL stand-in (no topn extension installed)".into(),
        }
    );
    println!(
        "rollup throughput: {} windows of {} new events (50 tenants, 50 minutes of event time)",
        args.windows, args.window
    );
    println!("window  rollup ev/s  plain ev/s  ratio  rows written per event");
    let mut ratios = Vec::new();
    let (mut rollup_secs, mut plain_secs) = (0.0, 0.0);
    for w in 1..=args.windows {
        let (start, end) = generate(&client, args.window).await?;
        let started = Instant::now();
        let advances = rollup::run(&mut client).await?;
        let rollup_s = started.elapsed().as_secs_f64();
        let written: i64 = advances.iter().map(|a| a.rows).sum();
        anyhow::ensure!(
            advances.iter().all(|a| a.window_end == end),
            "a rollup window did not reach the last event"
        );
        let started = Instant::now();
        let tx = client.transaction().await?;
        for sql in PLAIN {
            tx.execute(sql, &[&start, &end]).await?;
        }
        tx.commit().await?;
        let plain_s = started.elapsed().as_secs_f64();
        let n = args.window as f64;
        println!(
            "{w:>6}  {:>11.0}  {:>10.0}  {:.3}  {:.2}",
            n / rollup_s,
            n / plain_s,
            plain_s / rollup_s,
            written as f64 / n
        );
        ratios.push(plain_s / rollup_s);
        rollup_secs += rollup_s;
        plain_secs += plain_s;
    }
    let total = (args.window * args.windows as i64) as f64;
    println!(
        "all windows: rollups {:.0} events/s, plain INSERT .. SELECT {:.0} events/s, ratio {:.3} \
         (median of windows {:.3})",
        total / rollup_secs,
        total / plain_secs,
        plain_secs / rollup_secs,
        median(&mut ratios)
    );
    check_totals(&client, total as i64).await?;
    storage(&client).await?;
    println!("engine measured: {engine}");

    println!(
        "\nrun time of all three rollups (median of {}):",
        args.repeat
    );
    println!("partitions  empty window ms  one-batch window ms (1000 events)");
    for partitions in counts {
        set_partitions(&client, interval, partitions).await?;
        let present: i64 = client
            .query_one("SELECT count(*) FROM partition_bounds('events')", &[])
            .await?
            .get(0);
        let mut empty = Vec::new();
        let mut one_batch = Vec::new();
        for _ in 0..args.repeat {
            empty.push(timed_run(&mut client).await?);
            generate(&client, 1000).await?;
            one_batch.push(timed_run(&mut client).await?);
        }
        println!(
            "{present:>10}  {:>15.2}  {:>10.2}",
            median(&mut empty),
            median(&mut one_batch)
        );
    }
    Ok(())
}

/// Keeps `count` partitions of `interval` (`1 hour` or `1 day`): `count - 1` back and one
/// ahead.
async fn set_partitions(
    client: &tokio_postgres::Client,
    interval: &str,
    count: i64,
) -> anyhow::Result<()> {
    let unit = interval.trim_start_matches("1 ");
    db::configure_partitions(
        client,
        &db::PartitionLayout {
            interval: Some(interval.into()),
            retention: Some(format!("{} {unit}s", count - 1)),
            lookahead: Some(interval.into()),
        },
    )
    .await?;
    db::maintain_partitions(client).await?;
    Ok(())
}

/// Inserts `n` events and records their id range; answers the window `(start, end]`.
async fn generate(client: &tokio_postgres::Client, n: i64) -> anyhow::Result<(i64, i64)> {
    let floor: i64 = client
        .query_one(
            "SELECT coalesce(pg_sequence_last_value('events_event_id_seq'), 0)",
            &[],
        )
        .await?
        .get(0);
    client.execute(GENERATE, &[&n]).await?;
    let row = client
        .query_one(
            "INSERT INTO event_id_ranges (id_floor, id_ceiling, min_event_time, max_event_time)
             SELECT $1, max(event_id), min(event_time), max(event_time) FROM events
             WHERE event_id > $1 RETURNING id_ceiling",
            &[&floor],
        )
        .await?;
    Ok((floor, row.get(0)))
}

async fn timed_run(client: &mut tokio_postgres::Client) -> anyhow::Result<f64> {
    let started = Instant::now();
    rollup::run(client).await?;
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

/// The rollups and the plain tables must hold the same totals, or the comparison is void.
async fn check_totals(client: &tokio_postgres::Client, events: i64) -> anyhow::Result<()> {
    for (r, plain) in Rollup::ALL
        .iter()
        .zip(["plain_5min", "plain_1hour", "plain_1day"])
    {
        let row = client
            .query_one(
                // One CTE per table: Citus cannot push down subqueries in the target list.
                &format!(
                    "WITH r AS (SELECT sum(event_count)::bigint AS n, sum(revenue) AS revenue \
                                FROM {}), \
                          p AS (SELECT sum(event_count)::bigint AS n, sum(revenue) AS revenue \
                                FROM {plain}) \
                     SELECT r.n, p.n, r.revenue = p.revenue FROM r, p",
                    r.table()
                ),
                &[],
            )
            .await?;
        let (rolled, plain_count, same_revenue): (i64, i64, bool) =
            (row.get(0), row.get(1), row.get(2));
        anyhow::ensure!(
            rolled == events && plain_count == events && same_revenue,
            "{r}: rollup holds {rolled} events, plain {plain_count}, expected {events}"
        );
    }
    println!("totals check: every rollup and plain table holds all {events} events");
    Ok(())
}

async fn storage(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    println!("\nstorage per rollup row (bytes; hll log2m 14, regwidth 5):");
    println!("rollup  rows      avg row  avg devices hll  max devices hll  avg top_pages");
    for r in Rollup::ALL {
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*), avg(pg_column_size(r.*))::float8,
                            avg(pg_column_size(devices))::float8,
                            max(pg_column_size(devices))::float8,
                            avg(pg_column_size(top_pages))::float8
                     FROM {} r",
                    r.table()
                ),
                &[],
            )
            .await?;
        let (rows, avg_row, avg_hll, max_hll, avg_top): (i64, f64, f64, f64, f64) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        println!(
            "{r:<6}  {rows:<8}  {avg_row:>7.0}  {avg_hll:>15.0}  {max_hll:>15.0}  {avg_top:>13.0}"
        );
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
