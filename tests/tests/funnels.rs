//! Funnels (issue 14) against a brute-force computation over the raw events: the per-session
//! state the attribution step keeps, in different arrival orders (late step events, late
//! session starts, events of the same minute), live (events above the attribution watermark)
//! and after the next run, per campaign and per source; a funnel saved over existing events
//! equals one that saw them arrive; and the routes (definitions and the report, JSON and CSV,
//! share links, other tenants, bad input).

use chrono::{DateTime, Duration, Utc};
use remarketable_core::funnels::{self, Definition};
use remarketable_core::jobs;
use remarketable_core::reports::{self, Filters, FunnelBy, Granularity, Range};
use remarketable_tests::{call, ingest, read_key_header, settings_with, share_header, Rng, TestDb};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use tokio_postgres::Client;

const SHOP: &str = "https://shop.example";

/// The funnel every test uses: a product page view, an add to cart, a purchase.
fn checkout() -> Definition {
    Definition::parse(json!({"title": "Checkout", "steps": [
        {"event_type": "page_view", "url_prefix": format!("{SHOP}/p/")},
        {"event_type": "add_to_cart"},
        {"event_type": "purchase"}]}))
    .unwrap()
}

/// Shoppers' sessions over 40 hours, in whole minutes (so events of one session share times):
/// product and category page views (some tagged with a campaign), carts, purchases, in no
/// particular order within a session.
fn traffic(rng: &mut Rng, now: DateTime<Utc>, n: usize) -> Vec<Value> {
    let campaigns = [
        ("winter-sale", "google"),
        ("brand", "bing"),
        ("news", "email"),
    ];
    (0..n)
        .map(|_| {
            let tenant = [1, 1, 2][rng.below(3) as usize];
            let session = rng.below(120) as i64;
            // A session's events lie within 3 hours of each other, at session-dependent hours.
            let at = now
                - Duration::minutes((session % 37) * 60 + rng.below(180) as i64)
                - Duration::hours(rng.below(2) as i64);
            let mut e = json!({
                "tenant_id": tenant, "device_id": session / 3, "session_id": session,
                "event_time": at.to_rfc3339(),
            });
            match rng.below(10) {
                0..=3 => {
                    e["event_type"] = json!("page_view");
                    let path = ["/p/1", "/p/2", "/c/shoes"][rng.below(3) as usize];
                    e["page_url"] = json!(format!("{SHOP}{path}"));
                    if rng.below(3) == 0 {
                        let (c, s) = campaigns[rng.below(3) as usize];
                        e["campaign"] = json!(c);
                        e["source"] = json!(s);
                        e["medium"] = json!("cpc");
                    }
                }
                4..=6 => e["event_type"] = json!("add_to_cart"),
                7 => e["event_type"] = json!("ad_click"),
                _ => {
                    e["event_type"] = json!("purchase");
                    e["revenue"] = json!("10.00");
                }
            }
            e
        })
        .collect()
}

#[derive(Debug)]
struct Raw {
    time: DateTime<Utc>,
    kind: String,
    url: String,
    source: Option<(String, String, String)>,
}

/// Per group key (campaign or source of the session, '' without `by`), the sessions starting
/// in `range` that reached each step: the rule of V27 over every raw event.
async fn brute_force(
    client: &Client,
    tenant: i64,
    definition: &Definition,
    range: &Range,
    by: Option<FunnelBy>,
) -> BTreeMap<String, Vec<i64>> {
    let rows = client
        .query(
            "SELECT session_id, event_time, event_type, coalesce(page_url, ''), campaign, \
             coalesce(source, ''), coalesce(medium, '') FROM events WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .unwrap();
    let mut sessions: BTreeMap<i64, Vec<Raw>> = BTreeMap::new();
    for r in &rows {
        sessions.entry(r.get(0)).or_default().push(Raw {
            time: r.get(1),
            kind: r.get(2),
            url: r.get(3),
            source: r
                .get::<_, Option<String>>(4)
                .filter(|c| !c.is_empty())
                .map(|c| (c, r.get(5), r.get(6))),
        });
    }
    let n = definition.steps.len();
    let matches = |e: &Raw, i: usize| {
        let s = &definition.steps[i];
        e.kind == s.event_type && s.url_prefix.as_deref().is_none_or(|p| e.url.starts_with(p))
    };
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for events in sessions.values_mut() {
        // The session's first event: least time, then one with a campaign, then the least
        // (campaign, source, medium).
        let first = events
            .iter()
            .min_by_key(|e| (e.time, e.source.is_none(), e.source.clone()))
            .unwrap();
        if first.time < range.from || first.time >= range.to {
            continue;
        }
        let (campaign, source, _) = first.source.clone().unwrap_or_default();
        events.sort_by_key(|e| e.time);
        let (mut reached, mut last) = (0, None);
        for e in events.iter() {
            if reached < n && matches(e, reached) && last.is_none_or(|t| e.time > t) {
                reached += 1;
                last = Some(e.time);
            }
        }
        if reached == 0 {
            continue;
        }
        let key = match by {
            None => String::new(),
            Some(FunnelBy::Campaign) => campaign,
            Some(FunnelBy::Source) => source,
        };
        let counts = out.entry(key).or_insert_with(|| vec![0; n]);
        for c in &mut counts[..reached] {
            *c += 1;
        }
    }
    out
}

async fn report(
    client: &Client,
    tenant: i64,
    name: &str,
    range: &Range,
    filters: &Filters,
    by: Option<FunnelBy>,
) -> reports::FunnelReport {
    let funnel = funnels::get(client, tenant, name).await.unwrap().unwrap();
    reports::funnel(
        client,
        tenant,
        funnel,
        (range, Granularity::Hour),
        filters,
        by.map(|by| (by, 1000)),
    )
    .await
    .unwrap()
}

fn counts(r: &reports::FunnelReport) -> BTreeMap<String, Vec<i64>> {
    match &r.groups {
        Some(groups) => groups
            .iter()
            .map(|g| (g.key.clone(), g.steps.iter().map(|s| s.sessions).collect()))
            .collect(),
        None => BTreeMap::from([(String::new(), r.steps.iter().map(|s| s.sessions).collect())]),
    }
}

/// The report of tenant 1's and 2's funnels equals the brute force, overall and by campaign
/// and source; answers the reports for comparison.
async fn check(client: &Client, range: &Range) -> Vec<BTreeMap<String, Vec<i64>>> {
    let d = checkout();
    let mut all = Vec::new();
    for tenant in [1, 2] {
        for by in [None, Some(FunnelBy::Campaign), Some(FunnelBy::Source)] {
            let got =
                counts(&report(client, tenant, "checkout", range, &Filters::default(), by).await);
            let want = brute_force(client, tenant, &d, range, by).await;
            assert_eq!(got, want, "tenant {tenant} by {by:?}");
            all.push(got);
        }
    }
    all
}

async fn run_job(client: &mut Client) {
    jobs::rollup(client).await.unwrap();
}

fn hour(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp() / 3600 * 3600, 0).unwrap()
}

#[tokio::test]
async fn funnel_counts_equal_brute_force_in_any_arrival_order_live_and_after() {
    let now = Utc::now() - Duration::minutes(1);
    let bodies = traffic(&mut Rng(5), now, 2400);
    let range = Range::new(
        hour(now) - Duration::hours(30),
        hour(now) + Duration::hours(1),
    )
    .unwrap();
    let mut settled = Vec::new();
    // In generated order, and reversed (late session starts and late first steps), each in
    // rounds with the job between them and the last fifth left above the watermark.
    for order in [bodies.clone(), bodies.iter().rev().cloned().collect()] {
        let db = TestDb::create().await;
        let mut client = db.client().await;
        for tenant in [1, 2] {
            funnels::save(&mut client, tenant, "checkout", &checkout())
                .await
                .unwrap();
        }
        let cut = order.len() * 4 / 5;
        for (i, chunk) in order[..cut].chunks(cut / 4).enumerate() {
            ingest(&db, "0", (i * 1000) as i64, chunk, 100).await;
            run_job(&mut client).await;
        }
        ingest(&db, "1", 0, &order[cut..], 100).await;
        assert!(
            db.count("SELECT count(*) FROM events").await
                > db.count("SELECT last_event_id FROM attribution_state")
                    .await
        );
        let live = check(&client, &range).await;
        assert!(live[1].len() > 2, "{:?}", live[1]);
        assert!(live[0][""][2] > 0, "{:?}", live[0]);
        // The next run takes the fresh events in: nothing moves.
        run_job(&mut client).await;
        assert_eq!(
            db.count("SELECT count(*) FROM events").await,
            db.count("SELECT last_event_id FROM attribution_state")
                .await
        );
        let after = check(&client, &range).await;
        assert_eq!(live, after);

        // A funnel saved now, over stored events, is the same as one that saw them arrive.
        let saved = funnels::save(&mut client, 1, "again", &checkout())
            .await
            .unwrap();
        assert!(saved.sessions > 0 && !saved.replaced);
        let a = report(
            &client,
            1,
            "again",
            &range,
            &Filters::default(),
            Some(FunnelBy::Source),
        )
        .await;
        assert_eq!(counts(&a), after[2]);
        // Replacing a funnel rebuilds its state for its new steps.
        let two_steps = Definition::parse(json!({"title": "Carts", "steps": [
            {"event_type": "add_to_cart"}, {"event_type": "purchase"}]}))
        .unwrap();
        let replaced = funnels::save(&mut client, 1, "again", &two_steps)
            .await
            .unwrap();
        assert!(replaced.replaced);
        assert_ne!(replaced.funnel.funnel_id, saved.funnel.funnel_id);
        let r = report(&client, 1, "again", &range, &Filters::default(), None).await;
        assert_eq!(
            counts(&r),
            brute_force(&client, 1, &two_steps, &range, None).await
        );
        assert_eq!(
            db.count(&format!(
                "SELECT count(*) FROM funnel_sessions WHERE funnel_id = {}",
                saved.funnel.funnel_id
            ))
            .await,
            0
        );
        // A campaign filter keeps the sessions that started with that campaign.
        let brand = report(
            &client,
            1,
            "checkout",
            &range,
            &Filters::fixed([("campaign", "brand")]).unwrap(),
            Some(FunnelBy::Campaign),
        )
        .await;
        let by_campaign = &after[1];
        assert_eq!(
            counts(&brand),
            by_campaign
                .iter()
                .filter(|(k, _)| *k == "brand")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<BTreeMap<_, _>>()
        );
        settled.push(after);
    }
    // Both arrival orders settle on the same figures.
    assert_eq!(settled[0], settled[1]);
}

/// The routes: definitions saved, listed, replaced and deleted by key holders, listed by share
/// links; the report in JSON and CSV equal to the core's; a campaign share link sees its
/// campaign only; bad input refused precisely; another tenant's key sees nothing.
#[tokio::test]
async fn funnel_routes_answer_and_refuse_what_they_must() {
    let now = DateTime::from_timestamp(Utc::now().timestamp() - 60, 0).unwrap();
    let db = TestDb::create().await;
    let mut client = db.client().await;
    let bodies = traffic(&mut Rng(9), now, 1500);
    ingest(&db, "0", 0, &bodies[..1000], 100).await;
    run_job(&mut client).await;
    ingest(&db, "0", 1000, &bodies[1000..], 100).await;
    let (key1, key2) = (
        read_key_header(&client, 1).await,
        read_key_header(&client, 2).await,
    );
    let settings = settings_with(
        &db.url(),
        &[(
            "SHARE_TOKEN_SECRET",
            "funnel-report-test-secret-0123456789abcdef",
        )],
    );
    let share =
        |pairs: &'static [(&'static str, &'static str)]| share_header(&client, &settings, 1, pairs);
    let (brand, germany) = (
        share(&[("campaign", "brand")]).await,
        share(&[("country", "DE")]).await,
    );
    let app = remarketable_handler::app(std::sync::Arc::new(remarketable_handler::AppState::new(
        settings.clone(),
    )));
    let definition = json!({"title": "Checkout", "steps": [
        {"event_type": "page_view", "url_prefix": format!("{SHOP}/p/")},
        {"event_type": "add_to_cart"}, {"event_type": "purchase"}]});
    let put = call(
        &app,
        "PUT",
        "/api/v1/tenants/1/funnels/checkout",
        Some(&key1),
        definition.clone(),
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert_eq!(put.body["name"], "checkout");
    assert_eq!(put.body["replaced"], false);
    assert!(put.body["sessions"].as_u64().unwrap() > 0, "{}", put.text);
    assert_eq!(put.body["steps"][0]["url_prefix"], format!("{SHOP}/p/"));
    let put = call(
        &app,
        "PUT",
        "/api/v1/tenants/1/funnels/checkout",
        Some(&key1),
        definition.clone(),
    )
    .await;
    assert_eq!(put.body["replaced"], true);
    for who in [&key1, &brand] {
        let list = call(
            &app,
            "GET",
            "/api/v1/tenants/1/funnels",
            Some(who),
            Value::Null,
        )
        .await;
        assert_eq!(list.status, 200, "{}", list.text);
        assert_eq!(list.body["funnels"].as_array().unwrap().len(), 1);
        assert_eq!(list.body["funnels"][0]["title"], "Checkout");
    }

    let (from, to) = (now - Duration::hours(30), now + Duration::minutes(5));
    let range = Range::new(from, to).unwrap();
    let q = format!(
        "from={}&to={}&granularity=1h",
        from.format("%Y-%m-%dT%H:%M:%SZ"),
        to.format("%Y-%m-%dT%H:%M:%SZ")
    );
    let path = format!("/api/v1/tenants/1/funnels/checkout/report?{q}");
    for by in [None, Some(FunnelBy::Campaign), Some(FunnelBy::Source)] {
        let p = match by {
            None => path.clone(),
            Some(FunnelBy::Campaign) => format!("{path}&by=campaign"),
            Some(FunnelBy::Source) => format!("{path}&by=source"),
        };
        let a = call(&app, "GET", &p, Some(&key1), Value::Null).await;
        assert_eq!(a.status, 200, "{}", a.text);
        let core = report(&client, 1, "checkout", &range, &Filters::default(), by).await;
        assert_eq!(a.body["steps"], json!(core.steps));
        assert_eq!(a.body["groups"], json!(core.groups));
        assert_eq!(
            counts(&core),
            brute_force(&client, 1, &checkout(), &core.range, by).await
        );
        let first = core.steps[0].sessions;
        assert!(first > core.steps[2].sessions && core.steps[2].sessions > 0);
        assert_eq!(
            core.steps[1].from_previous,
            Some(core.steps[1].sessions as f64 / first as f64)
        );

        let csv = call(
            &app,
            "GET",
            &format!("{p}&format=csv"),
            Some(&key1),
            Value::Null,
        )
        .await;
        assert_eq!(csv.status, 200);
        assert!(csv.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv"));
        let lines: Vec<&str> = csv.text.trim_end().split("\r\n").collect();
        assert_eq!(
            lines[0].split(',').skip(1).collect::<Vec<_>>(),
            [
                "step",
                "event_type",
                "url_prefix",
                "sessions",
                "from_previous",
                "from_first"
            ]
        );
        let groups = core.groups.clone().unwrap_or_else(|| {
            vec![reports::FunnelGroup {
                key: String::new(),
                steps: core.steps.clone(),
            }]
        });
        let want: Vec<String> = groups
            .iter()
            .flat_map(|g| {
                g.steps
                    .iter()
                    .map(|s| format!("{},{},{}", g.key, s.step, s.sessions))
            })
            .collect();
        let got: Vec<String> = lines[1..]
            .iter()
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                format!("{},{},{}", f[0], f[1], f[4])
            })
            .collect();
        assert_eq!(got, want);
    }

    // A share link fixed to a campaign sees the sessions that started with it, and only those.
    let a = call(
        &app,
        "GET",
        &format!("{path}&by=campaign"),
        Some(&brand),
        Value::Null,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let groups = a.body["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{}", a.text);
    assert_eq!(groups[0]["key"], "brand");
    for (p, who, status, code) in [
        (format!("{path}&campaign=news"), &brand, 403, "filter_fixed"),
        (path.clone(), &germany, 403, "filter_fixed"),
        (path.clone(), &key2, 404, "not_found"),
        (format!("{path}&by=device"), &key1, 400, "bad_parameter"),
        (format!("{path}&country=DE"), &key1, 400, "bad_parameter"),
        (format!("{path}&limit=0"), &key1, 400, "bad_parameter"),
        (
            format!("/api/v1/tenants/1/funnels/nope/report?{q}"),
            &key1,
            404,
            "not_found",
        ),
        (
            format!("/api/v1/tenants/1/funnels/No_Way/report?{q}"),
            &key1,
            400,
            "bad_funnel_name",
        ),
    ] {
        let a = call(&app, "GET", &p, Some(who), Value::Null).await;
        assert_eq!(a.status.as_u16(), status, "{p}: {}", a.text);
        assert_eq!(a.code(), code, "{p}");
    }
    for (body, status, code) in [
        (
            json!({"title": "x", "steps": [{"event_type": "page_view"}]}),
            400,
            "bad_funnel",
        ),
        (
            json!({"title": "x", "steps": [{"event_type": "ad_spend"}, {"event_type": "a"}]}),
            400,
            "bad_funnel",
        ),
        (
            json!({"title": "", "steps": [{"event_type": "a"}, {"event_type": "b"}]}),
            400,
            "bad_title",
        ),
        (
            json!({"title": "x", "steps": [{"event_type": "a"}, {"event_type": "b"}], "x": 1}),
            400,
            "bad_funnel",
        ),
    ] {
        let a = call(
            &app,
            "PUT",
            "/api/v1/tenants/1/funnels/x",
            Some(&key1),
            body.clone(),
        )
        .await;
        assert_eq!(a.status.as_u16(), status, "{body}: {}", a.text);
        assert_eq!(a.code(), code, "{body}");
    }
    // Share links and other tenants' keys change nothing.
    let a = call(
        &app,
        "PUT",
        "/api/v1/tenants/1/funnels/x",
        Some(&brand),
        definition.clone(),
    )
    .await;
    assert_eq!(a.status, 403, "{}", a.text);
    let a = call(
        &app,
        "DELETE",
        "/api/v1/tenants/1/funnels/checkout",
        Some(&key2),
        Value::Null,
    )
    .await;
    assert_eq!(a.status, 404, "{}", a.text);
    // At most MAX_FUNNELS a tenant.
    for i in 1..funnels::MAX_FUNNELS {
        let a = call(
            &app,
            "PUT",
            &format!("/api/v1/tenants/2/funnels/f{i}"),
            Some(&key2),
            definition.clone(),
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.text);
    }
    let a = call(
        &app,
        "PUT",
        "/api/v1/tenants/2/funnels/f0",
        Some(&key2),
        definition.clone(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let a = call(
        &app,
        "PUT",
        "/api/v1/tenants/2/funnels/one-more",
        Some(&key2),
        definition.clone(),
    )
    .await;
    assert_eq!(
        (a.status.as_u16(), a.code()),
        (409, "too_many_funnels"),
        "{}",
        a.text
    );

    let a = call(
        &app,
        "DELETE",
        "/api/v1/tenants/1/funnels/checkout",
        Some(&key1),
        Value::Null,
    )
    .await;
    assert_eq!(a.status, 204, "{}", a.text);
    assert_eq!(
        db.count("SELECT count(*) FROM funnel_events WHERE tenant_id = 1")
            .await,
        0
    );
    assert_eq!(
        db.count("SELECT count(*) FROM funnel_sessions WHERE tenant_id = 1")
            .await,
        0
    );
    let a = call(
        &app,
        "DELETE",
        "/api/v1/tenants/1/funnels/checkout",
        Some(&key1),
        Value::Null,
    )
    .await;
    assert_eq!((a.status.as_u16(), a.code()), (404, "not_found"));
}
