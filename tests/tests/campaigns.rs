//! Campaign attribution (issue 14) against a brute-force computation over the raw events: per
//! model, with touches arriving after the purchase, late touches and late session starts, in
//! different arrival orders; exactly once; revenue over campaigns plus direct equals the total;
//! and the campaign report (live and after attribution, over HTTP in JSON and CSV) against a
//! brute force over the raw events.

use chrono::{DateTime, Duration, Utc};
use remarketable_core::reports::{
    self, Dimension, Filters, Granularity, Model, Range, DISTINCT_ERROR_BOUND_95,
};
use remarketable_core::{access, attribution, db, funnels, jobs, rollup};
use remarketable_loadgen::bench_db;
use remarketable_tests::{
    batch, ingestor, read_key_header, settings_with, share_header, Rng, TestDb,
};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::str::FromStr;
use tokio_postgres::Client;

/// (campaign, source, medium); all '' is direct.
type Source = (String, String, String);

#[derive(Debug, Clone)]
struct Raw {
    tenant: i64,
    time: DateTime<Utc>,
    kind: String,
    device: i64,
    session: i64,
    source: Option<Source>,
    revenue: Decimal,
}

/// A conversion by what does not depend on arrival order (event ids do), with its attribution
/// per model: last touch, first touch, session. The value counts conversions that are alike in
/// all of this (same device, session and time).
type Key = (i64, i64, DateTime<Utc>, i64, String);
type Attributed = BTreeMap<(Key, Decimal, Source, Source, Source), usize>;

async fn raw_events(client: &Client) -> Vec<Raw> {
    let rows = client
        .query(
            "SELECT tenant_id, event_id, event_time, event_type, device_id, session_id, \
             campaign, coalesce(source, ''), coalesce(medium, ''), coalesce(revenue, 0) \
             FROM events",
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| Raw {
            tenant: r.get(0),
            time: r.get(2),
            kind: r.get(3),
            device: r.get(4),
            session: r.get(5),
            source: r
                .get::<_, Option<String>>(6)
                .filter(|c| !c.is_empty())
                .map(|c| (c, r.get(7), r.get(8))),
            revenue: r.get(9),
        })
        .collect()
}

/// The attribution rules of the README, computed from scratch over every raw event.
async fn brute_force(client: &Client) -> Attributed {
    let settings: BTreeMap<i64, (Vec<String>, i64, bool)> = client
        .query(
            "SELECT tenant_id, conversion_event_types, \
             extract(epoch FROM attribution_lookback)::bigint, attribution_clicks_first \
             FROM tenants",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect();
    let events = raw_events(client).await;
    let direct = || (String::new(), String::new(), String::new());
    let is_conversion = |e: &Raw| settings[&e.tenant].0.contains(&e.kind);
    let mut out = Attributed::new();
    for c in events.iter().filter(|e| is_conversion(e)) {
        let lookback = Duration::seconds(settings[&c.tenant].1);
        let touches: Vec<&Raw> = events
            .iter()
            .filter(|t| {
                t.tenant == c.tenant
                    && t.device == c.device
                    && t.source.is_some()
                    && !is_conversion(t)
                    && t.time <= c.time
                    && t.time >= c.time - lookback
            })
            .collect();
        // Clicks first (unless the tenant turned it off), then the latest or earliest time,
        // then the least (campaign, source, medium): never the event id.
        let clicks_first = settings[&c.tenant].2;
        let click = |t: &&Raw| t.kind != "ad_impression" || !clicks_first;
        let last = touches
            .iter()
            .max_by_key(|t| (click(t), t.time, Reverse(t.source.clone())))
            .and_then(|t| t.source.clone())
            .unwrap_or_else(direct);
        let first = touches
            .iter()
            .max_by_key(|t| (click(t), Reverse(t.time), Reverse(t.source.clone())))
            .and_then(|t| t.source.clone())
            .unwrap_or_else(direct);
        // The session's first event: least time, then one with a campaign, then the least
        // (campaign, source, medium).
        let session = events
            .iter()
            .filter(|e| e.tenant == c.tenant && e.session == c.session)
            .min_by_key(|e| (e.time, e.source.is_none(), e.source.clone()))
            .and_then(|e| e.source.clone())
            .unwrap_or_else(direct);
        let key = (c.tenant, c.device, c.time, c.session, c.kind.clone());
        *out.entry((key, c.revenue, last, first, session))
            .or_default() += 1;
    }
    out
}

async fn stored(client: &Client) -> Attributed {
    let rows = client
        .query(
            "SELECT tenant_id, device_id, event_time, session_id, event_type, revenue, \
             last_campaign, last_source, last_medium, first_campaign, first_source, \
             first_medium, session_campaign, session_source, session_medium, stale \
             FROM conversions",
            &[],
        )
        .await
        .unwrap();
    let mut out = Attributed::new();
    for r in &rows {
        assert!(!r.get::<_, bool>(15), "a conversion was left stale");
        let s = |i: usize| (r.get(i), r.get(i + 1), r.get(i + 2));
        let key = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        *out.entry((key, r.get(5), s(6), s(9), s(12))).or_default() += 1;
    }
    out
}

/// The one conversion of a test database.
async fn only(client: &Client) -> (Decimal, Source, Source, Source) {
    let s = stored(client).await;
    assert_eq!(s.values().sum::<usize>(), 1);
    let (_, revenue, last, first, session) = s.into_keys().next().unwrap();
    (revenue, last, first, session)
}

async fn run_job(client: &mut Client) -> jobs::RollupRun {
    jobs::rollup(client).await.unwrap()
}

/// Ingests `bodies` as batches of 100 on partition "0", from sequence `first`.
async fn ingest(client: &mut Client, first: i64, bodies: &[Value]) {
    let ingestor = ingestor();
    for (i, chunk) in bodies.chunks(100).enumerate() {
        let b = batch("0", first + (i * 100) as i64, Utc::now(), chunk);
        ingestor.ingest(client, &b, Utc::now()).await.unwrap();
    }
}

fn body(
    tenant: i64,
    kind: &str,
    device: i64,
    session: i64,
    at: DateTime<Utc>,
    touch: Option<(&str, &str, &str)>,
) -> Value {
    let mut e = json!({
        "tenant_id": tenant, "event_type": kind, "device_id": device, "session_id": session,
        "event_time": at.to_rfc3339(),
    });
    if let Some((c, s, m)) = touch {
        e["campaign"] = json!(c);
        e["source"] = json!(s);
        e["medium"] = json!(m);
    }
    if kind == "purchase" || kind == "signup" {
        e["revenue"] = json!(format!("{}.25", device % 50));
    }
    e
}

/// Storefront traffic with dense touches on few devices, so lookbacks, click/impression ranks
/// and ties matter; some page views carry UTM tags only in their URL.
fn traffic(rng: &mut Rng, now: DateTime<Utc>, n: usize) -> Vec<Value> {
    let campaigns = [
        ("winter-sale", "google", "cpc"),
        ("winter-sale", "meta", "paid_social"),
        ("newsletter-12", "newsletter", "email"),
        ("brand", "bing", "cpc"),
    ];
    (0..n)
        .map(|_| {
            let tenant = [1, 1, 2, 3][rng.below(4) as usize];
            let device = rng.below(25) as i64;
            let session = device * 10 + rng.below(4) as i64;
            // Whole minutes over 40 hours: equal event times happen, so ties are exercised.
            let at = now - Duration::minutes(rng.below(40 * 60) as i64);
            let c = campaigns[rng.below(4) as usize];
            match rng.below(10) {
                0..=2 => body(tenant, "ad_impression", device, session, at, Some(c)),
                3 => body(tenant, "ad_click", device, session, at, Some(c)),
                4 => body(
                    tenant,
                    "email_click",
                    device,
                    session,
                    at,
                    Some(campaigns[2]),
                ),
                5 => {
                    let mut e = body(tenant, "page_view", device, session, at, None);
                    e["page_url"] = json!(format!(
                        "https://shop.example/p/1?utm_campaign={}&utm_source={}&utm_medium={}",
                        c.0, c.1, c.2
                    ));
                    e
                }
                6 => body(tenant, "page_view", device, session, at, None),
                7 => body(tenant, "signup", device, session, at, None),
                _ => body(tenant, "purchase", device, session, at, None),
            }
        })
        .collect()
}

async fn campaign_db() -> TestDb {
    let db = TestDb::create().await;
    // Tenant 2 looks back six hours only; tenant 3 also counts sign-ups as conversions and
    // ranks impressions like clicks.
    db.client()
        .await
        .batch_execute(
            "UPDATE tenants SET attribution_lookback = interval '6 hours' WHERE tenant_id = 2;
             UPDATE tenants SET conversion_event_types = '{purchase,signup}', \
               attribution_clicks_first = false WHERE tenant_id = 3;",
        )
        .await
        .unwrap();
    db
}

/// Ingests `bodies` in chunks, running the rollup job after each, so touches and session
/// starts arrive after the conversions they change.
async fn ingest_in_rounds(client: &mut Client, bodies: &[Value], rounds: usize) {
    let size = bodies.len().div_ceil(rounds);
    for (i, chunk) in bodies.chunks(size).enumerate() {
        ingest(client, (i * size) as i64, chunk).await;
        run_job(client).await;
    }
}

#[tokio::test]
async fn attribution_equals_brute_force_in_any_arrival_order() {
    let now = Utc::now() - Duration::minutes(1);
    let bodies = traffic(&mut Rng(14), now, 1500);

    let a = campaign_db().await;
    let mut ca = a.client().await;
    ingest_in_rounds(&mut ca, &bodies, 7).await;
    let expected = brute_force(&ca).await;
    assert!(
        expected.len() > 200,
        "enough conversions: {}",
        expected.len()
    );
    let direct = |s: &Source| s.0.is_empty();
    for (name, pick) in [("last", 0), ("first", 1), ("session", 2)] {
        let attributed = expected
            .keys()
            .filter(|v| !direct([&v.2, &v.3, &v.4][pick]))
            .count();
        assert!(
            attributed > 50 && attributed < expected.len(),
            "{name}: {attributed} of {} attributed to campaigns: both kinds occur",
            expected.len()
        );
    }
    let got = stored(&ca).await;
    assert_eq!(got, expected);

    // Reverse order, one conversion at a time for the first part: every late touch re-attributes.
    let mut reversed = bodies.clone();
    reversed.reverse();
    let b = campaign_db().await;
    let mut cb = b.client().await;
    ingest_in_rounds(&mut cb, &reversed, 13).await;
    assert_eq!(stored(&cb).await, expected);
    assert_eq!(brute_force(&cb).await, expected);

    // All at once, in windows of 97 ids (V23): the job takes window after window until caught
    // up, and cutting the events into windows changes nothing.
    let c = campaign_db().await;
    let mut cc = c.client().await;
    rollup::set_max_window(&cc, 97).await.unwrap();
    ingest(&mut cc, 0, &bodies).await;
    let run = run_job(&mut cc).await;
    let last_id = c.count("SELECT max(event_id) FROM events").await;
    assert_eq!(run.attribution.window_end, last_id, "caught up in one run");
    assert!(
        run.advances.len() >= 3 * (last_id as usize).div_ceil(97),
        "{} rollup windows for {last_id} ids",
        run.advances.len()
    );
    assert_eq!(stored(&cc).await, expected);

    // pg_cron's procedure runs attribution too, window after window.
    let d = campaign_db().await;
    let mut cd = d.client().await;
    rollup::set_max_window(&cd, 250).await.unwrap();
    ingest(&mut cd, 0, &bodies).await;
    cd.batch_execute("CALL run_rollups()").await.unwrap();
    let last_id = d.count("SELECT max(event_id) FROM events").await;
    assert_eq!(
        d.count("SELECT last_event_id FROM attribution_state").await,
        last_id
    );
    assert_eq!(
        d.count("SELECT min(last_event_id) FROM rollup_state").await,
        last_id
    );
    assert_eq!(stored(&cd).await, expected);

    // A second run finds nothing new and changes nothing.
    let again = run_job(&mut ca).await;
    assert_eq!(again.attribution.window_start, again.attribution.window_end);
    assert_eq!(stored(&ca).await, expected);
    assert_eq!(
        a.count("SELECT count(*) FROM conversions").await,
        a.count(
            "SELECT count(*) FROM events e JOIN tenants t USING (tenant_id) \
             WHERE e.event_type = ANY (t.conversion_event_types)"
        )
        .await
    );

    // Revenue over all campaigns plus direct equals the total, per model and tenant, exactly.
    let client = a.client().await;
    for model in ["last", "first", "session"] {
        let rows = client
            .query(
                &format!(
                    "WITH per AS (SELECT tenant_id, {model}_campaign, {model}_source, \
                     {model}_medium, sum(revenue) AS revenue FROM conversions GROUP BY 1, 2, 3, 4) \
                     SELECT p.tenant_id, p.total, r.total FROM \
                     (SELECT tenant_id, sum(revenue) AS total FROM per GROUP BY 1) p \
                     FULL JOIN (SELECT e.tenant_id, sum(coalesce(e.revenue, 0)) AS total \
                       FROM events e JOIN tenants t USING (tenant_id) \
                       WHERE e.event_type = ANY (t.conversion_event_types) GROUP BY 1) r \
                     USING (tenant_id)"
                ),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 3, "{model}");
        for r in &rows {
            let (per, raw): (Option<Decimal>, Option<Decimal>) = (r.get(1), r.get(2));
            assert_eq!(per, raw, "{model} tenant {}", r.get::<_, i64>(0));
            assert!(per.unwrap() > Decimal::ZERO);
        }
    }
}

#[tokio::test]
async fn late_touches_and_touches_after_the_purchase() {
    let db = campaign_db().await;
    let mut client = db.client().await;
    let t = Utc::now() - Duration::hours(2);
    let m = Duration::minutes;
    let a = ("spring", "google", "cpc");
    let b = ("retarget", "meta", "paid_social");
    let c = ("newsletter", "mail", "email");
    let purchase = body(1, "purchase", 7, 70, t, None);
    let impression = body(1, "ad_impression", 7, 60, t - m(90), Some(a));
    let session_start = body(1, "page_view", 7, 70, t - m(10), Some(c));
    ingest(&mut client, 0, &[impression, session_start, purchase]).await;
    run_job(&mut client).await;
    let src = |x: (&str, &str, &str)| (x.0.to_string(), x.1.to_string(), x.2.to_string());
    let direct = (String::new(), String::new(), String::new());
    let v = only(&client).await;
    // The session start carries the newsletter campaign, so it is also the latest click.
    assert_eq!((v.1, v.2, v.3), (src(c), src(c), src(c)));

    // A late click, older than everything: first touch moves to it (clicks outrank the
    // impression, earliest click wins), last touch stays the newer click.
    let late_click = body(1, "ad_click", 7, 50, t - m(120), Some(b));
    // A touch after the purchase, and one on another device: neither changes anything.
    let after = body(1, "ad_click", 7, 70, t + m(5), Some(a));
    let other_device = body(1, "ad_click", 8, 80, t - m(1), Some(a));
    ingest(&mut client, 3, &[late_click, after, other_device]).await;
    let run = run_job(&mut client).await;
    assert_eq!(run.attribution.touches, 3);
    assert_eq!(run.attribution.conversions, 1);
    let v = only(&client).await;
    assert_eq!((v.1, v.2, v.3), (src(c), src(b), src(c)));

    // A late page view without campaign starts the session earlier: session source becomes
    // direct; the touch models are unchanged.
    let earlier_start = body(1, "page_view", 7, 70, t - m(30), None);
    // A click outside the 30-day lookback cannot be stored (retention), so lookback limits are
    // covered by tenant 2's six hours in the generated traffic.
    ingest(&mut client, 6, &[earlier_start]).await;
    run_job(&mut client).await;
    let v = only(&client).await;
    assert_eq!((v.1.clone(), v.2.clone(), v.3), (src(c), src(b), direct));
    assert_eq!(stored(&client).await, brute_force(&client).await);
}

/// Touches and session starts of the same time: the winner is chosen by campaign, source and
/// medium, never by event id, so both arrival orders (one event per round) give one answer.
#[tokio::test]
async fn ties_do_not_depend_on_arrival_order() {
    let t = Utc::now() - Duration::hours(3);
    let m = Duration::minutes;
    let bodies = vec![
        body(
            1,
            "ad_click",
            5,
            40,
            t - m(30),
            Some(("y-camp", "google", "cpc")),
        ),
        body(
            1,
            "ad_click",
            5,
            40,
            t - m(30),
            Some(("x-camp", "meta", "cpc")),
        ),
        body(
            1,
            "ad_click",
            5,
            41,
            t - m(10),
            Some(("b-camp", "google", "cpc")),
        ),
        body(
            1,
            "ad_click",
            5,
            41,
            t - m(10),
            Some(("a-camp", "meta", "cpc")),
        ),
        body(
            1,
            "ad_impression",
            5,
            41,
            t - m(5),
            Some(("c-camp", "meta", "display")),
        ),
        body(1, "page_view", 5, 50, t - m(20), None),
        body(
            1,
            "page_view",
            5,
            50,
            t - m(20),
            Some(("z-camp", "bing", "cpc")),
        ),
        body(1, "purchase", 5, 50, t, None),
    ];
    let src = |c: &str, s: &str, m: &str| (c.to_string(), s.to_string(), m.to_string());
    let expected = (
        src("a-camp", "meta", "cpc"),
        src("x-camp", "meta", "cpc"),
        src("z-camp", "bing", "cpc"),
    );
    for order in [false, true] {
        let mut bodies = bodies.clone();
        if order {
            bodies.reverse();
        }
        let db = campaign_db().await;
        let mut client = db.client().await;
        ingest_in_rounds(&mut client, &bodies, bodies.len()).await;
        let v = only(&client).await;
        assert_eq!((v.1, v.2, v.3), expected.clone(), "reversed: {order}");
        assert_eq!(stored(&client).await, brute_force(&client).await);
    }
}

/// On a real Citus cluster (`CITUS_URL`, a disposable prepared database as for tests/citus.rs):
/// every statement of an attribution window is pushed down (one task per shard, no
/// coordinator step), and the attribution equals the brute force there too.
#[tokio::test]
#[ignore = "needs a Citus cluster: scripts/test runs it when CITUS_URL is set"]
async fn attribution_on_citus() {
    let Some(url) = std::env::var("CITUS_URL").ok().filter(|u| !u.is_empty()) else {
        eprintln!("SKIPPED: CITUS_URL is not set; the Citus test needs a Citus coordinator");
        return;
    };
    let config = tokio_postgres::Config::from_str(&url).expect("CITUS_URL parses");
    let mut client = db::connect(&config).await.expect("connect to CITUS_URL");
    assert!(db::has_citus(&client).await.unwrap());
    client
        .batch_execute(bench_db::RESET_PROJECT)
        .await
        .expect("reset");
    db::migrate(&mut client).await.expect("migrations on Citus");
    db::configure_partitions(&client, &db::PartitionLayout::default())
        .await
        .unwrap();
    db::maintain_partitions(&client).await.unwrap();
    client
        .batch_execute(
            "INSERT INTO tenants (tenant_id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c');
             UPDATE tenants SET attribution_lookback = interval '6 hours' WHERE tenant_id = 2;
             UPDATE tenants SET conversion_event_types = '{purchase,signup}', \
               attribution_clicks_first = false WHERE tenant_id = 3;",
        )
        .await
        .unwrap();

    let shards: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'conversions'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let colocated: i64 = client
        .query_one(
            "SELECT count(DISTINCT colocationid) FROM pg_dist_partition WHERE logicalrelid IN \
             ('events'::regclass, 'touches'::regclass, 'session_sources'::regclass, \
              'conversions'::regclass)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(colocated, 1, "attribution tables are colocated with events");
    // Every statement of a window: attribution's, then the funnels' (V27), which the window
    // runs once a funnel exists.
    for (function, part) in [
        ("attribution_statement", "touches"),
        ("attribution_statement", "sessions"),
        ("attribution_statement", "conversions"),
        ("attribution_statement", "stale_touches"),
        ("attribution_statement", "stale_sessions"),
        ("attribution_statement", "attribute"),
        ("funnel_statement", "funnel_events"),
        ("funnel_statement", "funnel_sessions"),
    ] {
        let statement: String = client
            .query_one(&format!("SELECT {function}($1)"), &[&part])
            .await
            .unwrap()
            .get(0);
        client
            .batch_execute(&format!(
                "PREPARE window_step (bigint, bigint, timestamptz, timestamptz) AS {statement}"
            ))
            .await
            .unwrap();
        let plan: Vec<String> = client
            .query(
                "EXPLAIN (COSTS OFF) EXECUTE window_step(0, 1000000, '-infinity', 'infinity')",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let plan = plan.join("\n");
        for coordinator_step in ["INSERT/SELECT method", "Subplan", "Repartition"] {
            assert!(
                !plan.contains(coordinator_step),
                "{part}: not pushed down ({coordinator_step}):\n{plan}"
            );
        }
        assert!(
            plan.contains(&format!("Task Count: {shards}")),
            "{part}: one task per shard:\n{plan}"
        );
        client
            .batch_execute("DEALLOCATE window_step")
            .await
            .unwrap();
    }

    // Attribution alone (the rollups on Citus are tests/citus.rs's), in rounds, in reverse order,
    // with a funnel kept by the same windows.
    let steps = funnels::Definition::parse(json!({"title": "Clicks to purchases", "steps": [
        {"event_type": "ad_click"}, {"event_type": "purchase"}]}))
    .unwrap();
    funnels::save(&mut client, 1, "clicks", &steps)
        .await
        .unwrap();
    let now = Utc::now() - Duration::minutes(1);
    let mut bodies = traffic(&mut Rng(21), now, 600);
    bodies.reverse();
    for (i, chunk) in bodies.chunks(150).enumerate() {
        ingest(&mut client, (i * 150) as i64, chunk).await;
        let a = attribution::advance(&mut client).await.unwrap();
        assert!(a.window_end > a.window_start);
    }
    let expected = brute_force(&client).await;
    assert!(expected.len() > 100, "{}", expected.len());
    assert_eq!(stored(&client).await, expected);
    let again = attribution::advance(&mut client).await.unwrap();
    assert_eq!(again.window_start, again.window_end);
    assert_eq!(stored(&client).await, expected);

    // The funnel's state kept window by window equals the one built at once from the same
    // events by a save after them (the backfill), on the cluster.
    let backfilled = funnels::save(&mut client, 1, "clicks-again", &steps)
        .await
        .unwrap();
    assert!(backfilled.sessions > 0, "no session reached the funnel");
    let day = Range::new(now - Duration::hours(41), now + Duration::hours(1)).unwrap();
    let mut per_funnel = Vec::new();
    for name in ["clicks", "clicks-again"] {
        let funnel = funnels::get(&client, 1, name).await.unwrap().unwrap();
        let r = reports::funnel(
            &client,
            1,
            funnel,
            (&day, Granularity::Hour),
            &Filters::default(),
            Some((reports::FunnelBy::Campaign, 1000)),
        )
        .await
        .unwrap();
        let mut report = serde_json::to_value(&r).unwrap();
        report["funnel"] = Value::Null;
        report["freshness"]["as_of"] = Value::Null;
        per_funnel.push(report);
    }
    assert_eq!(per_funnel[0], per_funnel[1]);
    assert!(per_funnel[0]["steps"][0]["sessions"].as_i64().unwrap() > 0);

    // The campaign report on the cluster equals the brute force, with events above the
    // attribution watermark that the report attributes itself.
    let more = traffic(&mut Rng(22), now, 200);
    ingest(&mut client, 10_000, &more).await;
    let hour = |t: DateTime<Utc>| DateTime::from_timestamp(t.timestamp() / 3600 * 3600, 0).unwrap();
    let range = Range::new(
        hour(now) - Duration::hours(29),
        hour(now) + Duration::hours(1),
    )
    .unwrap();
    let live = check_report(&client, &range).await;
    assert!(live.iter().any(|c| c.rows.len() > 2));
}

/// One row of the campaign report as computed from the raw events.
#[derive(Debug, Default, Clone, PartialEq)]
struct Figures {
    impressions: i64,
    clicks: i64,
    devices: std::collections::BTreeSet<i64>,
    sessions: i64,
    conversions: i64,
    revenue: Decimal,
}

/// The campaign report of `tenant` over `range` under `model` (0 last touch, 1 first touch,
/// 2 session), from scratch over the raw events: touches and session starts by their time,
/// conversions by their time with their brute-force attribution.
async fn brute_report(
    client: &Client,
    tenant: i64,
    range: &Range,
    model: usize,
) -> BTreeMap<Source, Figures> {
    let kinds: Vec<String> = client
        .query_one(
            "SELECT conversion_event_types FROM tenants WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .unwrap()
        .get(0);
    let inside = |t: DateTime<Utc>| t >= range.from && t < range.to;
    let direct = || (String::new(), String::new(), String::new());
    let events: Vec<Raw> = raw_events(client)
        .await
        .into_iter()
        .filter(|e| e.tenant == tenant)
        .collect();
    let mut out: BTreeMap<Source, Figures> = BTreeMap::new();
    for e in &events {
        if let (Some(s), false, true) = (&e.source, kinds.contains(&e.kind), inside(e.time)) {
            let f = out.entry(s.clone()).or_default();
            if e.kind == "ad_impression" {
                f.impressions += 1;
            } else {
                f.clicks += 1;
            }
            f.devices.insert(e.device);
        }
    }
    let mut firsts: BTreeMap<i64, &Raw> = BTreeMap::new();
    for e in &events {
        let key = |x: &Raw| (x.time, x.source.is_none(), x.source.clone());
        let first = firsts.entry(e.session).or_insert(e);
        if key(e) < key(first) {
            *first = e;
        }
    }
    for e in firsts.values().filter(|e| inside(e.time)) {
        out.entry(e.source.clone().unwrap_or_else(direct))
            .or_default()
            .sessions += 1;
    }
    for ((key, revenue, last, first, session), n) in brute_force(client).await {
        if key.0 != tenant || !inside(key.2) {
            continue;
        }
        let f = out
            .entry([last, first, session][model].clone())
            .or_default();
        f.conversions += n as i64;
        f.revenue += revenue * Decimal::from(n);
    }
    out
}

/// The core's campaign report equals [`brute_report`] for every tenant and model: counts and
/// revenue exactly, reach within the HyperLogLog bound; derived ratios follow from them.
async fn check_report(client: &Client, range: &Range) -> Vec<reports::Campaigns> {
    let mut answers = Vec::new();
    for tenant in [1, 2, 3] {
        for (i, model) in Model::ALL.into_iter().enumerate() {
            let got = reports::campaigns(
                client,
                tenant,
                range,
                Granularity::Hour,
                &Filters::default(),
                model,
                1000,
            )
            .await
            .unwrap();
            assert_eq!(got.range, *range, "the test's range is already aligned");
            let expected = brute_report(client, tenant, range, i).await;
            let keys: Vec<Source> = got
                .rows
                .iter()
                .map(|r| (r.campaign.clone(), r.source.clone(), r.medium.clone()))
                .collect();
            let mut sorted = keys.clone();
            sorted.sort();
            assert_eq!(
                sorted,
                expected.keys().cloned().collect::<Vec<_>>(),
                "tenant {tenant} {model:?}: rows"
            );
            assert_eq!(got.total_rows, keys.len());
            for (row, key) in got.rows.iter().zip(&keys) {
                let e = &expected[key];
                let what = format!("tenant {tenant} {model:?} {key:?}");
                assert_eq!(row.impressions, e.impressions, "{what}");
                assert_eq!(row.clicks, e.clicks, "{what}");
                assert_eq!(row.sessions, e.sessions, "{what}");
                assert_eq!(row.conversions, e.conversions, "{what}");
                assert_eq!(row.revenue, e.revenue, "{what}");
                let reach = e.devices.len() as f64;
                assert!(
                    (row.reach as f64 - reach).abs() <= (reach * DISTINCT_ERROR_BOUND_95).ceil(),
                    "{what}: reach {} for {reach} devices",
                    row.reach
                );
                if row.impressions > 0 {
                    assert_eq!(row.ctr, row.clicks as f64 / row.impressions as f64);
                }
                if row.reach > 0 {
                    assert_eq!(row.frequency, row.impressions as f64 / row.reach as f64);
                } else {
                    assert_eq!((row.frequency, row.impressions), (0.0, 0), "{what}");
                }
                if row.sessions > 0 {
                    assert_eq!(
                        row.conversion_rate,
                        row.conversions as f64 / row.sessions as f64
                    );
                }
            }
            // Campaigns plus direct hold every conversion of the range, and its revenue.
            let total: Decimal = expected.values().map(|f| f.revenue).sum();
            assert_eq!(got.totals.revenue, total, "tenant {tenant} {model:?}");
            assert_eq!(
                got.totals.conversions,
                expected.values().map(|f| f.conversions).sum::<i64>()
            );
            answers.push(got);
        }
    }
    answers
}

/// What a report says, without its freshness (which moves with every read).
fn figures(c: &reports::Campaigns) -> Value {
    json!({"rows": c.rows, "totals": c.totals, "total_rows": c.total_rows})
}

#[tokio::test]
async fn the_campaign_report_equals_brute_force_live_and_after_attribution() {
    let now = Utc::now() - Duration::minutes(1);
    let bodies = traffic(&mut Rng(33), now, 1500);
    let db = campaign_db().await;
    let mut client = db.client().await;
    // Four fifths attributed in rounds; the rest committed after the last job run, so the
    // report attributes it itself (touches, session starts and conversions of any time).
    let cut = bodies.len() * 4 / 5;
    ingest_in_rounds(&mut client, &bodies[..cut], 4).await;
    ingest(&mut client, cut as i64, &bodies[cut..]).await;
    assert!(
        db.count("SELECT count(*) FROM events").await
            > db.count("SELECT last_event_id FROM attribution_state")
                .await
    );
    let hour = |t: DateTime<Utc>| DateTime::from_timestamp(t.timestamp() / 3600 * 3600, 0).unwrap();
    // 30 hours of the 40 the traffic spans: touches before the range still attribute.
    let range = Range::new(
        hour(now) - Duration::hours(29),
        hour(now) + Duration::hours(1),
    )
    .unwrap();
    let live = check_report(&client, &range).await;
    assert!(live.iter().any(|c| c.rows.len() > 4));
    // The next attribution run takes the fresh events in: not one figure moves.
    run_job(&mut client).await;
    assert_eq!(
        db.count("SELECT count(*) FROM events").await,
        db.count("SELECT last_event_id FROM attribution_state")
            .await
    );
    let settled = check_report(&client, &range).await;
    for (a, b) in live.iter().zip(&settled) {
        assert_eq!(figures(a), figures(b));
    }

    // A campaign filter keeps that campaign's rows only, with the same figures.
    let all = &settled[0];
    let one = reports::campaigns(
        &client,
        1,
        &range,
        Granularity::Hour,
        &Filters::fixed([("campaign", "brand")]).unwrap(),
        Model::LastTouch,
        1000,
    )
    .await
    .unwrap();
    let brand: Vec<_> = all.rows.iter().filter(|r| r.campaign == "brand").collect();
    assert!(!brand.is_empty());
    assert_eq!(one.rows.iter().collect::<Vec<_>>(), brand);
    // Filters the touches do not carry are refused, not ignored.
    let mut country = Filters::default();
    country.set(Dimension::Country, "DE").unwrap();
    let err = reports::campaigns(
        &client,
        1,
        &range,
        Granularity::Hour,
        &country,
        Model::LastTouch,
        10,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, reports::ReportError::BadRequest(_)), "{err}");
}

async fn http_get(app: &axum::Router, path: &str, authorization: &str) -> (u16, String, String) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let request = axum::http::Request::get(path)
        .header("authorization", authorization)
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

/// The route answers the core's figures in JSON and CSV for each model, refuses bad
/// parameters with a precise code, and another tenant's key gets nothing.
#[tokio::test]
async fn the_campaign_route_answers_json_and_csv_and_refuses_what_it_must() {
    // Whole seconds, so the query's times are the core's.
    let now = DateTime::from_timestamp(Utc::now().timestamp() - 60, 0).unwrap();
    let db = campaign_db().await;
    let mut client = db.client().await;
    let bodies = traffic(&mut Rng(7), now, 900);
    ingest_in_rounds(&mut client, &bodies[..600], 2).await;
    ingest(&mut client, 600, &bodies[600..]).await;
    let (key1, key2) = (
        read_key_header(&client, 1).await,
        read_key_header(&client, 2).await,
    );
    let settings = settings_with(
        &db.url(),
        &[(
            "SHARE_TOKEN_SECRET",
            "campaign-report-test-secret-0123456789abcdef",
        )],
    );
    let share =
        |pairs: &'static [(&'static str, &'static str)]| share_header(&client, &settings, 1, pairs);
    let brand = share(&[("campaign", "brand")]).await;
    let germany = share(&[("country", "DE")]).await;
    let app = remarketable_handler::app(std::sync::Arc::new(remarketable_handler::AppState::new(
        settings.clone(),
    )));
    let (from, to) = (now - Duration::hours(30), now + Duration::minutes(5));
    let range = Range::new(from, to).unwrap();
    let q = format!(
        "from={}&to={}&granularity=1h",
        from.format("%Y-%m-%dT%H:%M:%SZ"),
        to.format("%Y-%m-%dT%H:%M:%SZ")
    );
    for model in Model::ALL {
        let path = format!("/api/v1/tenants/1/campaigns?{q}&model={}", model.name());
        let (status, content_type, body) = http_get(&app, &path, &key1).await;
        assert_eq!(status, 200, "{body}");
        assert!(content_type.starts_with("application/json"));
        let v: Value = serde_json::from_str(&body).unwrap();
        let core = reports::campaigns(
            &client,
            1,
            &range,
            Granularity::Hour,
            &Filters::default(),
            model,
            100,
        )
        .await
        .unwrap();
        assert_eq!(v["model"], model.name());
        assert_eq!(v["rows"], json!(core.rows), "{model:?}");
        assert_eq!(v["totals"], json!(core.totals));
        assert_eq!(v["distinct_counts"]["method"], "hyperloglog");
        let rows = v["rows"].as_array().unwrap();
        assert!(rows.len() > 4, "{body}");

        let (status, content_type, csv) =
            http_get(&app, &format!("{path}&format=csv"), &key1).await;
        assert_eq!(status, 200, "{csv}");
        assert!(content_type.starts_with("text/csv"));
        let lines: Vec<&str> = csv.trim_end().split("\r\n").collect();
        let header: Vec<&str> = lines[0].split(',').collect();
        assert_eq!(header.len(), 17);
        assert_eq!(lines.len(), rows.len() + 1);
        for (line, row) in lines[1..].iter().zip(rows) {
            // The generated campaign names hold no comma or quote.
            for (name, field) in header.iter().zip(line.split(',')) {
                let json = &row[*name];
                match json {
                    Value::String(s) => assert_eq!(field, s, "{name}"),
                    Value::Number(n) => assert!(
                        (field.parse::<f64>().unwrap() - n.as_f64().unwrap()).abs() < 1e-6,
                        "{name}: {field} vs {n}"
                    ),
                    // No spend in this traffic: cost, CPC, CPA and ROAS are empty.
                    Value::Null => assert_eq!(field, "", "{name}"),
                    other => panic!("{name}: {other}"),
                }
            }
        }
    }

    // `limit` cuts the rows, not the totals.
    let (_, _, body) = http_get(&app, &format!("/api/v1/tenants/1/campaigns?{q}"), &key1).await;
    let all: Value = serde_json::from_str(&body).unwrap();
    let (_, _, body) = http_get(
        &app,
        &format!("/api/v1/tenants/1/campaigns?{q}&limit=2"),
        &key1,
    )
    .await;
    let two: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        two["rows"].as_array().unwrap()[..],
        all["rows"].as_array().unwrap()[..2]
    );
    assert_eq!(two["totals"], all["totals"]);
    assert_eq!(two["total_rows"], all["total_rows"]);
    assert!(all["total_rows"].as_u64().unwrap() > 2);

    for (query, status, code) in [
        ("model=linear", 400, "bad_parameter"),
        ("limit=0", 400, "bad_parameter"),
        ("limit=1001", 400, "bad_parameter"),
        ("country=DE", 400, "bad_parameter"),
        ("range=30d&granularity=5m", 400, "bad_parameter"),
        ("format=xml", 400, "bad_parameter"),
    ] {
        let (s, _, body) =
            http_get(&app, &format!("/api/v1/tenants/1/campaigns?{query}"), &key1).await;
        assert_eq!(s, status, "{query}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], code, "{query}");
        assert!(v["error"]["message"].as_str().unwrap().len() > 5);
    }
    // Another tenant's key: 404, no hint that tenant 1 exists.
    let (s, _, body) = http_get(&app, "/api/v1/tenants/1/campaigns", &key2).await;
    assert_eq!(s, 404, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "not_found");
    let (s, _, _) = http_get(&app, "/api/v1/tenants/2/campaigns", &key2).await;
    assert_eq!(s, 200);

    // A share link fixed to one campaign sees that campaign only, and cannot ask for another;
    // one fixed to a country (which touches do not carry) is refused rather than shown all.
    let path = format!("/api/v1/tenants/1/campaigns?{q}");
    let (s, _, body) = http_get(&app, &path, &brand).await;
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["campaign"] == "brand"), "{body}");
    let (_, _, body) = http_get(&app, &path, &key1).await;
    let all: Value = serde_json::from_str(&body).unwrap();
    let brand_rows: Vec<&Value> = all["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["campaign"] == "brand")
        .collect();
    assert_eq!(rows.iter().collect::<Vec<_>>(), brand_rows);
    for (path, who, code) in [
        (
            format!("{path}&campaign=winter-sale"),
            &brand,
            "filter_fixed",
        ),
        (path.clone(), &germany, "filter_fixed"),
    ] {
        let (s, _, body) = http_get(&app, &path, who).await;
        assert_eq!(s, 403, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], code);
    }
    let (s, _, body) = http_get(&app, "/api/v1/tenants/2/campaigns", &brand).await;
    assert_eq!(s, 404, "{body}");
}

/// The admin route reads and changes a tenant's attribution settings, refuses bad values
/// precisely, and conversions stored afterwards follow the new settings.
#[tokio::test]
async fn attribution_settings_are_changed_by_the_admin_route() {
    use remarketable_tests::call;
    let db = TestDb::create().await;
    let mut client = db.client().await;
    let admin = access::create_key(&client, None, access::KeyKind::Admin, "a")
        .await
        .unwrap();
    let admin = format!("Bearer {}", admin.key);
    let read = access::create_key(&client, Some(1), access::KeyKind::Read, "r")
        .await
        .unwrap();
    let read = format!("Bearer {}", read.key);
    let app = remarketable_handler::app(std::sync::Arc::new(remarketable_handler::AppState::new(
        db.settings(None),
    )));
    let path = "/api/v1/admin/tenants/1/attribution";
    let a = call(&app, "GET", path, Some(&admin), Value::Null).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        a.body,
        json!({"tenant_id": 1, "conversion_event_types": ["purchase"],
               "lookback_seconds": 30 * 86_400, "clicks_first": true})
    );
    let change =
        json!({"conversion_event_types": ["purchase", "signup"], "lookback_seconds": 3600});
    let a = call(&app, "PUT", path, Some(&admin), change).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        a.body,
        json!({"tenant_id": 1, "conversion_event_types": ["purchase", "signup"],
               "lookback_seconds": 3600, "clicks_first": true})
    );
    // Only the fields named change.
    let a = call(
        &app,
        "PUT",
        path,
        Some(&admin),
        json!({"clicks_first": false}),
    )
    .await;
    assert_eq!(
        (&a.body["lookback_seconds"], &a.body["clicks_first"]),
        (&json!(3600), &json!(false))
    );
    for (method, path, auth, body, status, code) in [
        (
            "PUT",
            path,
            &admin,
            json!({"lookback_seconds": 0}),
            400,
            "bad_parameter",
        ),
        (
            "PUT",
            path,
            &admin,
            json!({"conversion_event_types": ["ad_spend"]}),
            400,
            "bad_parameter",
        ),
        (
            "PUT",
            path,
            &admin,
            json!({"conversion_event_types": []}),
            400,
            "bad_parameter",
        ),
        (
            "PUT",
            path,
            &admin,
            json!({"lookback": 5}),
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/admin/tenants/77/attribution",
            &admin,
            Value::Null,
            404,
            "unknown_tenant",
        ),
        (
            "PUT",
            "/api/v1/admin/tenants/77/attribution",
            &admin,
            json!({}),
            404,
            "unknown_tenant",
        ),
        ("GET", path, &read, Value::Null, 403, "forbidden"),
    ] {
        let a = call(&app, method, path, Some(auth), body.clone()).await;
        assert_eq!(
            (a.status.as_u16(), a.code()),
            (status, code),
            "{method} {path} {body}: {}",
            a.text
        );
    }

    // A sign-up is now a conversion; a click two hours before it is outside the hour of lookback.
    let now = Utc::now() - Duration::minutes(1);
    let bodies = [
        body(
            1,
            "ad_click",
            5,
            50,
            now - Duration::hours(2),
            Some(("brand", "bing", "cpc")),
        ),
        body(
            1,
            "ad_click",
            6,
            60,
            now - Duration::minutes(30),
            Some(("brand", "bing", "cpc")),
        ),
        body(1, "signup", 5, 51, now, None),
        body(1, "signup", 6, 61, now, None),
    ];
    ingest(&mut client, 0, &bodies).await;
    run_job(&mut client).await;
    let rows: Vec<(i64, String)> = client
        .query(
            "SELECT device_id, last_campaign FROM conversions WHERE tenant_id = 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, vec![(5, String::new()), (6, "brand".to_string())]);
}
