//! Ad spend (issue 14) against a real PostgreSQL: `ad_spend` events through the ingest path are
//! stored once per key (redelivered, sent again or corrected, in any arrival order), never in
//! `events`, bad ones dead-lettered with their own reasons and replayable; the CSV upload route
//! stores all rows or none, counts a repeated upload once and lets a correction replace; the
//! campaign report's cost, CPC, CPA and ROAS equal the figures computed here by hand, live and
//! after the rollup job, for the tenant's calendar days, under a share link's campaign filter.

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, TimeZone, Utc};
use remarketable_core::access::{self, Filters, KeyKind};
use remarketable_core::replay::replay_dead_letters;
use remarketable_core::reports::{self, Granularity, Model, Range};
use remarketable_core::{jobs, Outcome, Reason};
use remarketable_tests::{batch, ingestor, settings_for, settings_with, TestDb};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::str::FromStr;
use tokio_postgres::Client;

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn spend(tenant: i64, day: NaiveDate, campaign: &str, cost: &str, at: DateTime<Utc>) -> Value {
    json!({"tenant_id": tenant, "event_type": "ad_spend", "campaign": campaign,
           "source": "google", "medium": "cpc", "cost": cost, "currency": "EUR",
           "date": day.to_string(), "event_time": at.to_rfc3339()})
}

/// The stored rows of `ad_spend`: (tenant, day, campaign, cost, reported_at, revision).
async fn stored(client: &Client) -> Vec<(i64, NaiveDate, String, Decimal, DateTime<Utc>, i32)> {
    client
        .query(
            "SELECT tenant_id, day, campaign, cost, reported_at, revision FROM ad_spend \
             ORDER BY tenant_id, day, campaign",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect()
}

#[tokio::test]
async fn stream_spend_is_stored_once_per_key_and_the_latest_report_wins_in_any_order() {
    let db = TestDb::create().await;
    let mut client = db.client().await;
    let ingestor = ingestor();
    let now = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let day = now.date_naive() - Duration::days(1);
    let t = |minutes: i64| now - Duration::minutes(minutes);

    // One report, with a page view, then the same batch again: stored once.
    let first = vec![
        spend(1, day, "winter", "10.00", t(30)),
        remarketable_tests::event(1, 1),
    ];
    let b = batch("0", 0, now, &first);
    let report = ingestor.ingest(&mut client, &b, now).await.unwrap();
    assert_eq!((report.stored, report.dead_lettered), (2, 0));
    let again = ingestor.ingest(&mut client, &b, now).await.unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 2));
    // The same report at a new position changes nothing either.
    let resent = batch("0", 2, now, &first[..1]);
    ingestor.ingest(&mut client, &resent, now).await.unwrap();
    assert_eq!(
        stored(&client).await,
        vec![(1, day, "winter".into(), dec("10.00"), t(30), 1)]
    );
    // Cost reports are not events: the reports count page views, not spend.
    let in_events = db
        .count("SELECT count(*) FROM events WHERE event_type = 'ad_spend'")
        .await;
    assert_eq!(in_events, 0);
    assert_eq!(db.count("SELECT count(*) FROM events").await, 1);

    // A later correction replaces; an earlier one arriving afterwards does not.
    let later = batch("0", 3, now, &[spend(1, day, "winter", "12.00", t(20))]);
    ingestor.ingest(&mut client, &later, now).await.unwrap();
    let stale = batch("0", 4, now, &[spend(1, day, "winter", "99.00", t(25))]);
    ingestor.ingest(&mut client, &stale, now).await.unwrap();
    assert_eq!(
        stored(&client).await,
        vec![(1, day, "winter".into(), dec("12.00"), t(20), 2)]
    );

    // The same reports in three arrival orders (tenants 2 and 3, one order each, and in one
    // batch for tenant 1's second campaign) settle on the same figure: the latest report, and
    // of two reports of the same time the greater cost.
    let reports = |tenant: i64, campaign: &str| {
        vec![
            spend(tenant, day, campaign, "10.00", t(40)),
            spend(tenant, day, campaign, "11.00", t(10)),
            spend(tenant, day, campaign, "12.00", t(10)),
            spend(tenant, day, campaign, "9.50", t(50)),
        ]
    };
    let mut r2 = reports(2, "spring");
    r2.reverse();
    for (i, body) in r2.iter().enumerate() {
        let b = batch("1", i as i64, now, std::slice::from_ref(body));
        ingestor.ingest(&mut client, &b, now).await.unwrap();
    }
    let r3 = reports(3, "spring");
    for (i, body) in [2, 0, 3, 1].into_iter().map(|i| &r3[i]).enumerate() {
        let b = batch("2", i as i64, now, std::slice::from_ref(body));
        ingestor.ingest(&mut client, &b, now).await.unwrap();
    }
    let b = batch("3", 0, now, &reports(1, "spring"));
    ingestor.ingest(&mut client, &b, now).await.unwrap();
    let settled: Vec<_> = stored(&client)
        .await
        .into_iter()
        .filter(|r| r.2 == "spring")
        .map(|r| (r.0, r.3, r.4))
        .collect();
    assert_eq!(
        settled,
        vec![
            (1, dec("12.00"), t(10)),
            (2, dec("12.00"), t(10)),
            (3, dec("12.00"), t(10)),
        ]
    );

    // Bad reports are dead-lettered with their reasons; one of an unknown tenant too.
    let mut no_cost = spend(1, day, "x", "1", now);
    no_cost.as_object_mut().unwrap().remove("cost");
    let bad = [
        no_cost,
        spend(1, day, "x", "-3", now),
        spend(1, day + Duration::days(3), "x", "1", now),
        spend(1, day, "", "1", now),
        spend(77, day, "x", "1", now),
    ];
    let report = ingestor
        .ingest(&mut client, &batch("4", 0, now, &bad), now)
        .await
        .unwrap();
    let reasons: Vec<Reason> = report
        .outcomes
        .iter()
        .map(|o| match &o.outcome {
            Outcome::DeadLettered { reason, .. } => *reason,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        reasons,
        [
            Reason::BadCost,
            Reason::BadCost,
            Reason::BadSpendDate,
            Reason::MissingCampaign,
            Reason::UnknownTenant
        ]
    );
    assert_eq!(stored(&client).await.len(), 4);

    // Tenant 77 registered later: its report is replayed into ad_spend, once.
    client
        .execute(
            "INSERT INTO tenants (tenant_id, name) VALUES (77, 'late')",
            &[],
        )
        .await
        .unwrap();
    let limits = settings_for("postgres://unused/db").limits;
    let replayed = replay_dead_letters(&mut client, 77, &limits, Utc::now(), 100)
        .await
        .unwrap();
    assert_eq!((replayed.examined, replayed.replayed), (1, 1));
    let again = replay_dead_letters(&mut client, 77, &limits, Utc::now(), 100)
        .await
        .unwrap();
    assert_eq!(again.examined, 0);
    let late: Vec<_> = stored(&client)
        .await
        .into_iter()
        .filter(|r| r.0 == 77)
        .map(|r| (r.2, r.3))
        .collect();
    assert_eq!(late, vec![("x".to_string(), dec("1"))]);
    // The ledger counts spend as events: of the 24 received, 17 stored, 2 duplicates and 5
    // dead letters, then the replay moved one from dead-lettered to stored.
    let ledger = client
        .query_one(
            "SELECT sum(r)::bigint, sum(s)::bigint, sum(d)::bigint, sum(x)::bigint FROM ( \
             SELECT unnest(received) r, unnest(stored) s, unnest(duplicates) d, \
             unnest(dead_lettered) x FROM ingest_ledger_batches) q",
            &[],
        )
        .await
        .unwrap();
    let totals: (i64, i64, i64, i64) = (ledger.get(0), ledger.get(1), ledger.get(2), ledger.get(3));
    assert_eq!(totals, (24, 18, 2, 4));
}

/// A request with a CSV body.
async fn post_csv(
    app: &axum::Router,
    path: &str,
    authorization: &str,
    content_type: &str,
    csv: &str,
) -> (u16, Value) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let request = axum::http::Request::post(path)
        .header("authorization", authorization)
        .header("content-type", content_type)
        .body(axum::body::Body::from(csv.to_owned()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_upload_route_stores_all_rows_or_none_and_counts_a_repeat_once() {
    let db = TestDb::create().await;
    let client = db.client().await;
    let admin = access::create_key(&client, None, KeyKind::Admin, "a")
        .await
        .unwrap();
    let admin = format!("Bearer {}", admin.key);
    let read = access::create_key(&client, Some(1), KeyKind::Read, "r")
        .await
        .unwrap();
    let read = format!("Bearer {}", read.key);
    let app = remarketable_handler::app(std::sync::Arc::new(remarketable_handler::AppState::new(
        db.settings(None),
    )));
    let today = Utc::now().date_naive();
    let (d1, d2) = (today - Duration::days(2), today - Duration::days(1));
    let csv = format!(
        "date,campaign,source,medium,cost,currency\n\
         {d1},winter,google,cpc,10.50,EUR\n\
         {d2},winter,google,cpc,7,EUR\n\
         {d2},brand,,,3.25,eur\n"
    );
    let path = "/api/v1/admin/tenants/1/spend";
    let (status, body) = post_csv(&app, path, &admin, "text/csv", &csv).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            &body["rows"],
            &body["added"],
            &body["changed"],
            &body["unchanged"]
        ),
        (&json!(3), &json!(3), &json!(0), &json!(0))
    );
    assert_eq!(body["first_day"], json!(d1.to_string()));
    assert_eq!(body["cost"], json!({"EUR": "20.75"}));
    let (status, body) = post_csv(&app, path, &admin, "text/csv; charset=utf-8", &csv).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((&body["added"], &body["unchanged"]), (&json!(0), &json!(3)));
    let corrected = format!("date,campaign,cost,currency\n{d2},brand,4,EUR\n");
    let (_, body) = post_csv(&app, path, &admin, "text/csv", &corrected).await;
    assert_eq!((&body["changed"], &body["rows"]), (&json!(1), &json!(1)));
    let rows = db
        .json_rows(
            "SELECT day, campaign, source, cost::text AS cost, origin, revision FROM ad_spend \
             ORDER BY day, campaign",
        )
        .await;
    assert_eq!(
        rows,
        vec![
            json!({"day": d1.to_string(), "campaign": "winter", "source": "google", "cost": "10.5000",
                   "origin": "upload", "revision": 1}),
            json!({"day": d2.to_string(), "campaign": "brand", "source": "", "cost": "4.0000",
                   "origin": "upload", "revision": 2}),
            json!({"day": d2.to_string(), "campaign": "winter", "source": "google", "cost": "7.0000",
                   "origin": "upload", "revision": 1}),
        ]
    );

    // A refused line stores nothing of the upload.
    let before = db.json_rows("SELECT * FROM ad_spend ORDER BY 2, 3").await;
    let bad = format!("date,campaign,cost,currency\n{d1},winter,1,EUR\n{d2},winter,lots,EUR\n");
    let (status, body) = post_csv(&app, path, &admin, "text/csv", &bad).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_spend");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("line 3: cost must be"), "{message}");
    assert_eq!(
        db.json_rows("SELECT * FROM ad_spend ORDER BY 2, 3").await,
        before
    );

    for (path, authorization, content_type, status, code) in [
        (
            path,
            admin.as_str(),
            "application/json",
            415,
            "unsupported_media_type",
        ),
        (path, read.as_str(), "text/csv", 403, "forbidden"),
        (
            "/api/v1/admin/tenants/99/spend",
            &admin,
            "text/csv",
            404,
            "unknown_tenant",
        ),
        (
            "/api/v1/admin/tenants/0/spend",
            &admin,
            "text/csv",
            400,
            "bad_tenant_id",
        ),
    ] {
        let (s, body) = post_csv(&app, path, authorization, content_type, &csv).await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}"
        );
    }
    let huge = "x".repeat(remarketable_api::spend::MAX_UPLOAD_BYTES + 1);
    let (s, body) = post_csv(&app, path, &admin, "text/csv", &huge).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (413, Some("too_large"))
    );
}

async fn ingest(client: &mut Client, partition: &str, bodies: &[Value]) {
    let ingestor = ingestor();
    let now = Utc::now();
    for (i, chunk) in bodies.chunks(50).enumerate() {
        let b = batch(partition, (i * 50) as i64, now, chunk);
        ingestor.ingest(client, &b, now).await.unwrap();
    }
}

fn touch(kind: &str, device: i64, at: DateTime<Utc>, campaign: (&str, &str, &str)) -> Value {
    json!({"tenant_id": 2, "event_type": kind, "device_id": device, "session_id": device * 10,
           "event_time": at.to_rfc3339(), "campaign": campaign.0, "source": campaign.1,
           "medium": campaign.2})
}

fn purchase(device: i64, at: DateTime<Utc>, revenue: &str) -> Value {
    json!({"tenant_id": 2, "event_type": "purchase", "device_id": device,
           "session_id": device * 10, "event_time": at.to_rfc3339(), "revenue": revenue})
}

#[tokio::test]
async fn the_campaign_report_has_cost_cpc_cpa_and_roas_of_the_tenants_days() {
    let db = TestDb::create().await;
    let mut client = db.client().await;
    // Tokyo: UTC+9 all year, so the tenant's days start at 15:00 UTC the day before.
    client
        .execute(
            "UPDATE tenants SET time_zone = 'Asia/Tokyo' WHERE tenant_id = 2",
            &[],
        )
        .await
        .unwrap();
    let tokyo = FixedOffset::east_opt(9 * 3600).unwrap();
    let now = DateTime::from_timestamp(Utc::now().timestamp() - 60, 0).unwrap();
    let today = now.with_timezone(&tokyo).date_naive();
    let day_start = |d: NaiveDate| {
        tokyo
            .from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap())
            .unwrap()
            .with_timezone(&Utc)
    };
    let winter = ("winter", "google", "cpc");
    let brand = ("brand", "bing", "cpc");
    let h = Duration::hours;
    ingest(
        &mut client,
        "0",
        &[
            touch("ad_click", 1, now - h(3), winter),
            touch("ad_click", 1, now - h(2), winter),
            touch("ad_impression", 2, now - h(3), winter),
            purchase(1, now - h(1), "50.00"),
            touch("ad_click", 3, now - h(2), brand),
            purchase(3, now - h(1), "30.00"),
        ],
    )
    .await;
    jobs::rollup(&mut client).await.unwrap();
    let cost = |day: NaiveDate, c: (&str, &str, &str), cost: &str| {
        json!({"tenant_id": 2, "event_type": "ad_spend", "campaign": c.0, "source": c.1,
               "medium": c.2, "cost": cost, "currency": "JPY", "date": day.to_string(),
               "event_time": now.to_rfc3339()})
    };
    // After the last rollup run, so the report must read it live.
    ingest(
        &mut client,
        "1",
        &[
            cost(today, winter, "15"),
            cost(today - Duration::days(1), winter, "5"),
            cost(today - Duration::days(2), winter, "1000"),
            cost(today - Duration::days(10), brand, "1000"),
            cost(today, brand, "60"),
            cost(today, ("ghost", "meta", "paid_social"), "5"),
        ],
    )
    .await;
    // From the start of yesterday (Tokyo): yesterday's and today's costs count, not earlier.
    let range = Range::new(day_start(today - Duration::days(1)), now + h(1)).unwrap();
    let report = |model: Model| {
        let (client, range) = (&client, &range);
        async move {
            reports::campaigns(
                client,
                2,
                range,
                Granularity::Hour,
                &Filters::default(),
                model,
                100,
            )
            .await
            .unwrap()
        }
    };
    let live = report(Model::LastTouch).await;
    let row = |c: &reports::Campaigns, name: &str| {
        c.rows
            .iter()
            .find(|r| r.campaign == name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", c.rows))
            .clone()
    };
    let w = row(&live, "winter");
    assert_eq!((w.clicks, w.impressions, w.conversions), (2, 1, 1));
    assert_eq!(w.revenue, dec("50"));
    assert_eq!(w.cost, Some(dec("20")));
    assert_eq!(w.cpc, Some(dec("10")));
    assert_eq!(w.cpa, Some(dec("20")));
    assert_eq!(w.roas, Some(dec("2.5")));
    let b = row(&live, "brand");
    assert_eq!(
        (b.cost, b.cpc, b.cpa, b.roas),
        (
            Some(dec("60")),
            Some(dec("60")),
            Some(dec("60")),
            Some(dec("0.5"))
        )
    );
    // Spend without touches still shows, with what can be divided.
    let g = row(&live, "ghost");
    assert_eq!(
        (g.clicks, g.cost, g.cpc, g.cpa, g.roas),
        (0, Some(dec("5")), None, None, Some(dec("0")))
    );
    assert_eq!(live.totals.cost, Some(dec("85")));
    assert_eq!(live.totals.roas, Some((dec("80") / dec("85")).round_dp(4)));
    assert_eq!(live.totals.spend_currencies, vec!["JPY".to_string()]);
    assert!(live
        .rows
        .iter()
        .filter(|r| r.campaign.is_empty())
        .all(|r| r.cost.is_none()));

    // The rollup job takes the events in; the figures do not move.
    jobs::rollup(&mut db.client().await).await.unwrap();
    let after = report(Model::LastTouch).await;
    assert_eq!(after.rows, live.rows);
    assert_eq!(after.totals, live.totals);
    // Spend does not depend on the model; revenue does (first touch is the same here).
    let first = report(Model::FirstTouch).await;
    assert_eq!(row(&first, "winter").cost, Some(dec("20")));

    // Over HTTP: JSON as the core, CSV with the spend columns, a share link fixed to one
    // campaign sees that campaign's spend only.
    let settings = settings_with(
        &db.url(),
        &[(
            "SHARE_TOKEN_SECRET",
            "spend-report-test-secret-0123456789abcdef",
        )],
    );
    let read = access::create_key(&client, Some(2), KeyKind::Read, "r")
        .await
        .unwrap();
    let share = access::create_share_token(
        &client,
        settings.share_token_secret.as_ref(),
        2,
        Duration::hours(1),
        Filters::fixed([("campaign", "brand")]).unwrap(),
        "brand only",
        None,
    )
    .await
    .unwrap();
    let app = remarketable_handler::app(std::sync::Arc::new(remarketable_handler::AppState::new(
        settings,
    )));
    let q = format!(
        "/api/v1/tenants/2/campaigns?from={}&to={}&granularity=1h",
        range.from.format("%Y-%m-%dT%H:%M:%SZ"),
        range.to.format("%Y-%m-%dT%H:%M:%SZ")
    );
    let get = |path: String, authorization: String| {
        let app = app.clone();
        async move {
            use http_body_util::BodyExt;
            use tower::ServiceExt;
            let request = axum::http::Request::get(path)
                .header("authorization", authorization)
                .body(axum::body::Body::empty())
                .unwrap();
            let response = app.oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    let (status, body) = get(q.clone(), format!("Bearer {}", read.key)).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["rows"], json!(after.rows));
    assert_eq!(v["totals"]["cost"], json!("85.0000"));
    let (status, csv) = get(format!("{q}&format=csv"), format!("Bearer {}", read.key)).await;
    assert_eq!(status, 200, "{csv}");
    let lines: Vec<&str> = csv.trim_end().split("\r\n").collect();
    assert!(lines[0].ends_with(",cost,cpc,cpa,roas"), "{}", lines[0]);
    let winter_line = lines.iter().find(|l| l.starts_with("winter,")).unwrap();
    assert!(
        winter_line.ends_with(",20.0000,10.0000,20.0000,2.5000"),
        "{winter_line}"
    );
    let ghost_line = lines.iter().find(|l| l.starts_with("ghost,")).unwrap();
    assert!(ghost_line.ends_with(",5.0000,,,0.0000"), "{ghost_line}");
    let (status, body) = get(q, format!("Share {}", share.token)).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let campaigns: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["campaign"].as_str().unwrap())
        .collect();
    assert_eq!(campaigns, ["brand"]);
    assert_eq!(v["totals"]["cost"], json!("60.0000"));
}
