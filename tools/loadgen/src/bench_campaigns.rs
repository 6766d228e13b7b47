//! The campaign benchmark (issue 14): latency of the largest tenant's 30-day campaign report
//! (last touch, with ad spend) and funnel report (by campaign) through the handler's HTTP API,
//! at concurrency 1 and 16, next to the same figures computed from the raw `events` table by
//! SQL, with the ratios; and what attribution (touches, conversions, session sources, funnel
//! state) adds to the rollups' cost per 1,000 events, both run window after window as the
//! rollup timer runs them. First at 1 M events, then at the full count.
//!
//! The data is the reports benchmark's shape (200 tenants, tenant 1 a fifth, a long tail) with
//! what attribution needs: devices that come back over the 30 days, sessions of a device and
//! local day, ad impressions, ad and email clicks and UTM landing page views of four campaigns
//! with their source and medium, purchases with revenue, a `checkout` funnel for tenant 1
//! (product page, add to cart, purchase), and a day of spend per campaign.

use crate::bench_db;
use crate::bench_reports::{generate_with, ReportLoad, ReportRun, REPORT_HEADER};
use anyhow::Context;
use remarketable_core::{attribution, db, funnels, rollup, tenants};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct BenchCampaignsArgs {
    /// Superuser URL of a plain PostgreSQL server, where the benchmark makes (and remakes) the
    /// database `--database`; or of a prepared database on a Citus coordinator (see `bench_db`).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The handler executable (`cargo build --release -p remarketable-handler`).
    #[arg(long, default_value = "target/release/handler")]
    handler: PathBuf,
    #[command(flatten)]
    load: ReportLoad,
    /// Events in all (measured first at 1 M, then at this count).
    #[arg(long, default_value_t = 10_000_000)]
    events: i64,
    /// Events generated, attributed and rolled up per step.
    #[arg(long, default_value_t = 250_000)]
    chunk: i64,
    /// The benchmark's database.
    #[arg(long, default_value = "rmk_bench_campaigns")]
    database: String,
    /// Events of the last five minutes left above the watermarks before measuring, so that
    /// every report merges fresh events into the stored state.
    #[arg(long, default_value_t = 2_000)]
    fresh: i64,
    /// The handler's `REPORT_TIMEOUT_MS`: above the default (5,000), so that a slow report is
    /// measured rather than answered 503.
    #[arg(long, default_value_t = 60_000)]
    report_timeout_ms: u64,
}

/// Events of 200 tenants between $2 and $3 ($1 how many). Tenant 1 takes a fifth, over 20,000
/// devices; a session is a device's UTC day. Touches: impressions, ad clicks, email clicks and
/// a tenth of the page views (UTM landings) carry one of four campaigns with its source and
/// medium.
const GENERATE: &str = "
INSERT INTO events (tenant_id, event_time, event_type, device_id, session_id, country, browser,
                    page_url, campaign, source, medium, revenue, received_at, stream_partition,
                    stream_sequence)
SELECT tenant, t, kind, device,
       device * 100000 + floor(extract(epoch FROM t) / 86400)::bigint % 100000,
       (ARRAY['US','US','US','DE','DE','GB','FR','NL','CA','JP'])[1 + (random() * 9)::int],
       (ARRAY['Chrome','Chrome','Chrome','Safari','Safari','Edge','Firefox'])[1 + (random() * 6)::int],
       'https://shop' || tenant || '.example/'
           || CASE WHEN kind = 'page_view' THEN 'p/' ELSE 'cart/' END
           || floor(power(random(), 3) * 500)::int,
       CASE WHEN touch THEN (ARRAY['winter-sale','brand-search','retarget-cart','newsletter'])[c] END,
       CASE WHEN touch THEN (ARRAY['google','bing','meta','newsletter'])[c] END,
       CASE WHEN touch THEN (ARRAY['cpc','cpc','paid_social','email'])[c] END,
       CASE WHEN kind = 'purchase' THEN round((random() * 300)::numeric, 2) END,
       now(), 'bench', g
FROM (SELECT g, tenant, kind, t,
             CASE WHEN tenant = 1 THEN 1000000 + floor(random() * 20000)::bigint
                  ELSE tenant * 1000000 + floor(random() * 2000)::bigint END AS device,
             kind IN ('ad_impression', 'ad_click', 'email_click')
                 OR (kind = 'page_view' AND random() < 0.1) AS touch,
             CASE WHEN kind = 'email_click' THEN 4 ELSE 1 + (random() * 2)::int END AS c
      FROM (SELECT g,
                   CASE WHEN random() < 0.2 THEN 1 ELSE 2 + floor(power(random(), 3) * 199)::bigint END
                       AS tenant,
                   (ARRAY['page_view','page_view','page_view','page_view','page_view',
                          'ad_impression','ad_impression','ad_click','email_click','add_to_cart',
                          'add_to_cart','purchase'])[1 + floor(random() * 12)::int] AS kind,
                   $2::timestamptz + random() * ($3::timestamptz - $2::timestamptz) AS t
            FROM generate_series(1, $1::bigint) g) k) s";

/// The campaign report's figures from the raw events ($1 tenant, $2 from, $3 to): impressions,
/// clicks and reach per campaign, source and medium; purchases and revenue by last touch within
/// 30 days per device, a click outranking impressions; sessions by the campaign of their first
/// event. (Touches of equal times may be ordered differently than the attribution step does.)
const RAW_CAMPAIGNS: &str = "
WITH ev AS (
    SELECT device_id, session_id, event_time, event_id, event_type, revenue, campaign,
           coalesce(source, '') AS source, coalesce(medium, '') AS medium,
           campaign IS NOT NULL AND event_type <> 'purchase' AS touch,
           event_type <> 'ad_impression' AS click,
           to_char(event_time AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISSUS') AS at
    FROM events
    WHERE tenant_id = $1 AND event_time >= $2::timestamptz - interval '30 days'
      AND event_time < $3),
marked AS (
    SELECT ev.*,
           max(CASE WHEN touch AND click THEN at || chr(31) || campaign || chr(31) || source
                                              || chr(31) || medium END) OVER w AS last_click,
           max(CASE WHEN touch THEN at || chr(31) || campaign || chr(31) || source
                                    || chr(31) || medium END) OVER w AS last_touch
    FROM ev
    WINDOW w AS (PARTITION BY device_id ORDER BY event_time, event_id ROWS UNBOUNDED PRECEDING)),
attributed AS (
    SELECT m.revenue,
           CASE WHEN left(m.last_click, 20) >= b.since THEN m.last_click
                WHEN left(m.last_touch, 20) >= b.since THEN m.last_touch END AS best
    FROM marked m
    CROSS JOIN LATERAL (SELECT to_char((m.event_time - interval '30 days') AT TIME ZONE 'UTC',
                                       'YYYYMMDDHH24MISSUS') AS since) b
    WHERE m.event_type = 'purchase' AND m.event_time >= $2),
conversions AS (
    SELECT split_part(best, chr(31), 2) AS campaign, split_part(best, chr(31), 3) AS source,
           split_part(best, chr(31), 4) AS medium, count(*) AS conversions, sum(revenue) AS revenue
    FROM attributed GROUP BY 1, 2, 3),
touched AS (
    SELECT campaign, source, medium, count(*) FILTER (WHERE NOT click) AS impressions,
           count(*) FILTER (WHERE click) AS clicks, count(DISTINCT device_id) AS reach
    FROM ev WHERE touch AND event_time >= $2 GROUP BY 1, 2, 3),
sessions AS (
    SELECT campaign, source, medium, count(*) AS sessions
    FROM (SELECT DISTINCT ON (session_id) event_time, coalesce(campaign, '') AS campaign,
                 CASE WHEN campaign IS NULL THEN '' ELSE source END AS source,
                 CASE WHEN campaign IS NULL THEN '' ELSE medium END AS medium
          FROM ev ORDER BY session_id, event_time, campaign IS NULL, campaign, source, medium) f
    WHERE event_time >= $2 GROUP BY 1, 2, 3)
SELECT * FROM touched
FULL JOIN conversions USING (campaign, source, medium)
FULL JOIN sessions USING (campaign, source, medium)";

/// The funnel report's figures from the raw events ($1 tenant, $2 from, $3 to): per campaign of
/// the session's first event, sessions reaching a product page, then an add to cart after it,
/// then a purchase after that.
const RAW_FUNNEL: &str = "
WITH ev AS (
    SELECT session_id, event_time, event_type, page_url, campaign
    FROM events WHERE tenant_id = $1 AND event_time >= $2 AND event_time < $3),
first AS (
    SELECT DISTINCT ON (session_id) session_id, coalesce(campaign, '') AS campaign
    FROM ev ORDER BY session_id, event_time, campaign IS NULL, campaign),
s1 AS (
    SELECT session_id, min(event_time) AS t FROM ev
    WHERE event_type = 'page_view' AND page_url LIKE 'https://shop1.example/p/%' GROUP BY 1),
s2 AS (
    SELECT s1.session_id, min(e.event_time) AS t FROM s1
    JOIN ev e ON e.session_id = s1.session_id AND e.event_type = 'add_to_cart' AND e.event_time > s1.t
    GROUP BY 1),
s3 AS (
    SELECT s2.session_id FROM s2
    JOIN ev e ON e.session_id = s2.session_id AND e.event_type = 'purchase' AND e.event_time > s2.t
    GROUP BY 1)
SELECT f.campaign, count(s1.session_id), count(s2.session_id), count(s3.session_id)
FROM first f LEFT JOIN s1 USING (session_id) LEFT JOIN s2 USING (session_id)
LEFT JOIN s3 USING (session_id)
GROUP BY 1";

/// (name, route under the tenant, raw statement).
const REPORTS: [(&str, &str, &str); 2] = [
    (
        "campaigns",
        "campaigns?range=30d&model=last_touch",
        RAW_CAMPAIGNS,
    ),
    (
        "funnel",
        "funnels/checkout/report?range=30d&by=campaign",
        RAW_FUNNEL,
    ),
];

/// $1 tenant 1, $2 and $3 the last 30 days.
fn raw_params() -> Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> {
    let to = chrono::Utc::now();
    vec![
        Box::new(1i64),
        Box::new(to - chrono::Duration::days(30)),
        Box::new(to),
    ]
}

/// Seconds spent by attribution and by the rollups taking every committed event in, window
/// after window (as the rollup job does, attribution first).
async fn catch_up(client: &mut tokio_postgres::Client) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    loop {
        let a = attribution::advance(client).await?;
        if a.window_end == a.window_start {
            break;
        }
    }
    let attributed = started.elapsed().as_secs_f64();
    let started = Instant::now();
    loop {
        let advances = rollup::run(client).await?;
        if advances.iter().all(|a| a.window_end == a.window_start) {
            break;
        }
    }
    Ok((attributed, started.elapsed().as_secs_f64()))
}

pub async fn run(args: BenchCampaignsArgs) -> anyhow::Result<()> {
    args.load.check(&args.handler, args.events, args.chunk)?;
    let bench_db::BenchDb {
        url: bench_url,
        config,
        mut client,
        engine,
        ..
    } = bench_db::prepare(&args.database_url, &args.database, false).await?;
    db::maintain_partitions(&client).await?;
    client.batch_execute("SELECT setseed(0.25)").await?;
    tenants::register_demo(&client, 200, &tenants::DEMO_ZONES).await?;
    let checkout = funnels::Definition::parse(serde_json::json!({
        "title": "Checkout",
        "steps": [
            {"event_type": "page_view", "url_prefix": "https://shop1.example/p/"},
            {"event_type": "add_to_cart"},
            {"event_type": "purchase"},
        ],
    }))
    .map_err(|e| anyhow::anyhow!("the benchmark's funnel: {e}"))?;
    funnels::save(&mut client, 1, "checkout", &checkout)
        .await
        .map_err(|e| anyhow::anyhow!("cannot save the benchmark's funnel: {e}"))?;
    // A day of spend per campaign over the 31 local days the reports touch.
    client
        .execute(
            "INSERT INTO ad_spend (tenant_id, day, campaign, source, medium, cost, currency,
                                   reported_at, origin)
             SELECT 1, d::date, c.campaign, c.source, c.medium,
                    round((50 + random() * 450)::numeric, 2), 'EUR', now(), 'upload'
             FROM generate_series(now() - interval '31 days', now(), interval '1 day') d
             CROSS JOIN (VALUES ('winter-sale', 'google', 'cpc'), ('brand-search', 'bing', 'cpc'),
                                ('retarget-cart', 'meta', 'paid_social'),
                                ('newsletter', 'newsletter', 'email')) c (campaign, source, medium)",
            &[],
        )
        .await
        .context("cannot store the benchmark's spend")?;
    remarketable_core::db::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    let timeout = [("REPORT_TIMEOUT_MS", args.report_timeout_ms.to_string())];
    let (key, handler) = args
        .load
        .start_handler(&client, &args.handler, &bench_url, &timeout, &http)
        .await?;
    let port = handler.port;

    println!(
        "campaign and funnel reports of the largest tenant (1) over 30 days, through the \
         handler's HTTP API, {} requests per report at concurrency 1 and 16 x {} at 16 \
         (REPORT_TIMEOUT_MS {}); raw = the same figures from `events`",
        args.load.requests, args.load.requests, args.report_timeout_ms
    );
    let start = chrono::Utc::now() - chrono::Duration::days(30);
    let span = chrono::Duration::days(30) - chrono::Duration::minutes(2);
    let (mut generated, mut attributed_s, mut rolled_s) = (0i64, 0f64, 0f64);
    let mut targets = vec![1_000_000, args.events];
    targets.dedup();
    for target in targets {
        let phase_start = generated;
        let chunks = ((target - phase_start) as f64 / args.chunk as f64)
            .ceil()
            .max(1.0);
        let at = |k: f64| {
            start
                + chrono::Duration::milliseconds(
                    (span.num_milliseconds() as f64 * k / chunks) as i64,
                )
        };
        while generated < target {
            let n = args.chunk.min(target - generated);
            let k = ((generated - phase_start) / args.chunk) as f64;
            generate_with(&client, GENERATE, n, at(k), at(k + 1.0)).await?;
            let (a, r) = catch_up(&mut client).await?;
            attributed_s += a;
            rolled_s += r;
            generated += n;
            eprintln!("{generated} events: attribution {a:.1} s, rollups {r:.1} s");
        }
        let now = chrono::Utc::now();
        generate_with(
            &client,
            GENERATE,
            args.fresh,
            now - chrono::Duration::minutes(5),
            now,
        )
        .await?;
        client.batch_execute("ANALYZE").await?;
        let counts = client
            .query_one(
                "SELECT (SELECT count(*) FROM events WHERE tenant_id = 1),
                        (SELECT count(*) FROM touches WHERE tenant_id = 1),
                        (SELECT count(*) FROM conversions WHERE tenant_id = 1),
                        (SELECT count(*) FROM funnel_sessions WHERE tenant_id = 1)",
                &[],
            )
            .await?;
        let (tenant_events, touches, conversions, funnel_sessions): (i64, i64, i64, i64) =
            (counts.get(0), counts.get(1), counts.get(2), counts.get(3));
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "\n{generated} events ({tenant_events} of tenant 1: {touches} touches, {conversions} \
             conversions, {funnel_sessions} funnel sessions) and {} fresh above the watermarks; \
             load average {}",
            args.fresh,
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
        println!(
            "cost per 1,000 events: rollups {:.1} ms, attribution (touches, conversions, \
             sessions, funnel) {:.1} ms, attribution / rollups {:.2}",
            rolled_s * 1e6 / generated as f64,
            attributed_s * 1e6 / generated as f64,
            attributed_s / rolled_s
        );
        println!("{REPORT_HEADER}");
        let run = ReportRun {
            http: &http,
            config: &config,
            key: &key,
            warmup: args.load.warmup,
            requests: args.load.requests,
            raw_requests: args.load.raw_requests(),
        };
        for (name, route, raw_sql) in REPORTS {
            let url = format!("http://127.0.0.1:{port}/api/v1/tenants/1/{route}");
            run.measure(name, url, raw_sql, raw_params).await?;
        }
        // The fresh events are taken in before the next phase generates more.
        let (a, r) = catch_up(&mut client).await?;
        attributed_s += a;
        rolled_s += r;
        generated += args.fresh;
    }
    handler.stop().await;
    println!("engine measured: {engine}");
    Ok(())
}
