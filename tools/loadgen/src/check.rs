//! `loadgen check`: the database against the truth file.
//!
//! Compared, all in one read-only snapshot:
//! - per tenant and UTC hour of event time: stored events, purchases, revenue, distinct
//!   devices and sessions;
//! - per tenant: distinct devices and sessions over all hours;
//! - dead letters per reason code and tenant (or without a tenant);
//! - the ledger: `received = stored + duplicates + dead_lettered`, its `stored` equal to the
//!   rows of `events`, its `dead_lettered` equal to the rows of `dead_letters` not replayed
//!   (a replay moves an event from dead-lettered to stored, in the ledger as in the tables), and
//!   `received - duplicates` equal to the events delivered;
//! - `ad_spend` row by row against the figures `loadgen spend` recorded (uploaded through
//!   `remarketable spend import`, so the ledger does not count them);
//! - attribution: per tenant, model and (campaign, source, medium), the conversions and revenue
//!   of `conversions` against a brute force over the truth's touches, purchases and session
//!   starts by the rules of V19 (when attribution has caught up with the events, the tenants
//!   count purchases only as conversions, and no chunk is uncertain).
//!
//! Without uncertain resends every figure must match exactly. With them, a figure may lie
//! between the expected value and the expected value plus every possible extra copy of the
//! uncertain chunks ([`Truth::upper_bound`]); the report says so.

use crate::truth::{CampaignFacts, HourTally, Source, Tally, TouchFact, Truth};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Display};
use std::str::FromStr;
use tokio_postgres::IsolationLevel;

/// One figure that is not what the truth allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub what: String,
    pub tenant: Option<i64>,
    pub hour: Option<DateTime<Utc>>,
    /// The value, or the allowed range `lo..=hi`.
    pub expected: String,
    pub actual: String,
}

/// The outcome of a check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub differences: Vec<Difference>,
    /// Rows of `events`, and of `dead_letters` not replayed.
    pub events: i64,
    pub dead_letters: i64,
    pub tenants: usize,
    pub tenant_hours: usize,
    /// Uncertain resends and the extra events they allow.
    pub uncertain_resends: usize,
    pub allowed_extra_events: u64,
    /// Rows of `ad_spend`.
    pub spend_rows: usize,
    /// Whether attribution was compared, and why not.
    pub attribution: Attribution,
}

/// Whether the attribution was compared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Attribution {
    /// Every purchase of the truth, under every model.
    Checked { conversions: usize },
    /// The truth file does not record touches (an older loadgen wrote it).
    #[default]
    NotRecorded,
    /// The attribution watermark is behind the events (run `remarketable rollup run`).
    Behind,
    /// Chunks may have been stored more than once: which copies exist is unknown.
    Uncertain,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.differences.is_empty()
    }
}

impl Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.differences.is_empty() {
            writeln!(
                f,
                "{:<34} {:>11} {:<17} {:>22} {:>14}",
                "difference", "tenant", "hour (UTC)", "expected", "actual"
            )?;
            for d in &self.differences {
                let tenant = d.tenant.map_or("-".into(), |t| t.to_string());
                let hour = d
                    .hour
                    .map_or("-".into(), |h| h.format("%Y-%m-%dT%H:%MZ").to_string());
                writeln!(
                    f,
                    "{:<34} {:>11} {:<17} {:>22} {:>14}",
                    d.what, tenant, hour, d.expected, d.actual
                )?;
            }
        }
        if self.uncertain_resends > 0 {
            writeln!(
                f,
                "note: {} uncertain resend(s): the hub may hold those chunks more than once, so \
                 up to {} extra events (and their dead letters) are allowed",
                self.uncertain_resends, self.allowed_extra_events
            )?;
        }
        let attribution = match &self.attribution {
            Attribution::Checked { conversions } => {
                format!("attribution of {conversions} conversions under 3 models")
            }
            Attribution::NotRecorded => "attribution not checked (no touches in the truth)".into(),
            Attribution::Behind => {
                "attribution not checked (its watermark is behind the events)".into()
            }
            Attribution::Uncertain => "attribution not checked (uncertain resends)".into(),
        };
        if self.is_ok() {
            write!(
                f,
                "check: OK: the database matches the truth ({} events of {} tenants in {} \
                 tenant-hours, {} dead letters, ledger consistent, {} ad spend rows, {attribution})",
                self.events, self.tenants, self.tenant_hours, self.dead_letters, self.spend_rows
            )
        } else {
            write!(
                f,
                "check: FAILED: {} difference(s) between the database and the truth",
                self.differences.len()
            )
        }
    }
}

struct Ledger {
    received: i64,
    stored: i64,
    duplicates: i64,
    dead_lettered: i64,
    events: i64,
    dead_letter_rows: i64,
}

/// Why a check could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("querying the database failed")]
    Database(#[from] tokio_postgres::Error),
    #[error("the database's revenue sum {0:?} is not a decimal this tool can hold")]
    Revenue(String),
}

/// Compares the database `client` is connected to with `truth`.
pub async fn check(
    client: &mut tokio_postgres::Client,
    truth: &Truth,
) -> Result<CheckReport, CheckError> {
    // One snapshot, so that an ingest running meanwhile cannot make the figures disagree.
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let mut hours = BTreeMap::new();
    for row in tx
        .query(include_str!("../sql/check_hours.sql"), &[])
        .await?
    {
        let revenue: String = row.get("revenue");
        let cell = Actual {
            events: row.get("events"),
            purchases: row.get("purchases"),
            revenue: Decimal::from_str(&revenue).map_err(|_| CheckError::Revenue(revenue))?,
            devices: row.get("devices"),
            sessions: row.get("sessions"),
        };
        hours.insert((row.get::<_, i64>("tenant_id"), row.get("hour")), cell);
    }
    let mut tenants = BTreeMap::new();
    for row in tx
        .query(include_str!("../sql/check_tenants.sql"), &[])
        .await?
    {
        let distinct: (i64, i64) = (row.get("devices"), row.get("sessions"));
        tenants.insert(row.get::<_, i64>("tenant_id"), distinct);
    }
    let mut dead = BTreeMap::new();
    for row in tx
        .query(include_str!("../sql/check_dead_letters.sql"), &[])
        .await?
    {
        let key: (String, Option<i64>) = (row.get("reason"), row.get("tenant_id"));
        dead.insert(key, row.get::<_, i64>("dead_letters"));
    }
    let mut spend: BTreeMap<i64, BTreeMap<String, Decimal>> = BTreeMap::new();
    for row in tx
        .query(
            "SELECT tenant_id, day::text || '|' || campaign || '|' || source || '|' || medium, \
             cost::text FROM ad_spend",
            &[],
        )
        .await?
    {
        let cost: String = row.get(2);
        let cost = Decimal::from_str(&cost).map_err(|_| CheckError::Revenue(cost))?;
        spend
            .entry(row.get(0))
            .or_default()
            .insert(row.get(1), cost);
    }
    let attribution = read_attribution(&tx).await?;
    let row = tx
        .query_one(include_str!("../sql/check_ledger.sql"), &[])
        .await?;
    let ledger = Ledger {
        received: row.get("received"),
        stored: row.get("stored"),
        duplicates: row.get("duplicates"),
        dead_lettered: row.get("dead_lettered"),
        events: row.get("events"),
        dead_letter_rows: row.get("dead_letter_rows"),
    };
    tx.commit().await?;
    let snapshot = Snapshot {
        hours,
        tenants,
        dead_letters: dead,
        ledger,
        spend,
        attribution,
    };
    Ok(compare(truth, &snapshot))
}

/// What the database holds, as the check reads it.
struct Snapshot {
    /// Per (tenant, hour).
    hours: BTreeMap<(i64, DateTime<Utc>), Actual>,
    /// Distinct (devices, sessions) per tenant.
    tenants: BTreeMap<i64, (i64, i64)>,
    /// Per (reason, tenant).
    dead_letters: BTreeMap<(String, Option<i64>), i64>,
    ledger: Ledger,
    /// `ad_spend`: per tenant, per `day|campaign|source|medium`.
    spend: BTreeMap<i64, BTreeMap<String, Decimal>>,
    attribution: AttributionSnapshot,
}

/// What attribution stored, and the settings it followed.
#[derive(Default)]
struct AttributionSnapshot {
    caught_up: bool,
    /// Per tenant: (conversion event types, lookback in seconds, clicks first).
    settings: BTreeMap<i64, (Vec<String>, i64, bool)>,
    /// Per (tenant, model, source): conversions and revenue.
    stored: BTreeMap<(i64, &'static str, Source), (i64, Decimal)>,
}

const MODELS: [&str; 3] = ["last_touch", "first_touch", "session"];

async fn read_attribution(
    tx: &tokio_postgres::Transaction<'_>,
) -> Result<AttributionSnapshot, CheckError> {
    let caught_up: bool = tx
        .query_one(
            "SELECT (SELECT last_event_id FROM attribution_state)
                    >= coalesce((SELECT max(event_id) FROM events), 0)
                AND NOT EXISTS (SELECT 1 FROM conversions WHERE stale)",
            &[],
        )
        .await?
        .get(0);
    let settings = tx
        .query(
            "SELECT tenant_id, conversion_event_types, \
             extract(epoch FROM attribution_lookback)::bigint, attribution_clicks_first \
             FROM tenants",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect();
    let mut stored = BTreeMap::new();
    for row in tx
        .query(
            "SELECT tenant_id, m, c, s, md, count(*), sum(revenue)::text FROM (
                 SELECT tenant_id, 0 AS m, last_campaign c, last_source s, last_medium md, revenue
                 FROM conversions
                 UNION ALL SELECT tenant_id, 1, first_campaign, first_source, first_medium, revenue
                 FROM conversions
                 UNION ALL SELECT tenant_id, 2, session_campaign, session_source, session_medium,
                        revenue FROM conversions) q
             GROUP BY 1, 2, 3, 4, 5",
            &[],
        )
        .await?
    {
        let model: i32 = row.get(1);
        let revenue: String = row.get(6);
        let revenue = Decimal::from_str(&revenue).map_err(|_| CheckError::Revenue(revenue))?;
        stored.insert(
            (
                row.get::<_, i64>(0),
                MODELS[model as usize],
                (row.get(2), row.get(3), row.get(4)),
            ),
            (row.get::<_, i64>(5), revenue),
        );
    }
    Ok(AttributionSnapshot {
        caught_up,
        settings,
        stored,
    })
}

/// The attribution of every purchase of the truth, by V19's rules, summed per (tenant, model,
/// source); and the number of purchases. Tenants whose conversion types are not exactly
/// `purchase` are returned apart (the truth knows purchases only).
#[allow(clippy::type_complexity)]
fn expected_attribution(
    facts: &CampaignFacts,
    settings: &BTreeMap<i64, (Vec<String>, i64, bool)>,
) -> (
    BTreeMap<(i64, &'static str, Source), (i64, Decimal)>,
    usize,
    Vec<i64>,
) {
    let direct = || (String::new(), String::new(), String::new());
    let mut out: BTreeMap<(i64, &'static str, Source), (i64, Decimal)> = BTreeMap::new();
    let mut unusual = Vec::new();
    let mut n = 0;
    for (tenant, purchases) in &facts.purchases {
        let Some((kinds, lookback_s, clicks_first)) = settings.get(tenant) else {
            continue;
        };
        if kinds.as_slice() != ["purchase"] {
            unusual.push(*tenant);
            continue;
        }
        let mut by_device: BTreeMap<i64, Vec<&TouchFact>> = BTreeMap::new();
        for t in facts.touches.get(tenant).into_iter().flatten() {
            by_device.entry(t.0).or_default().push(t);
        }
        let lookback_ms = lookback_s * 1000;
        for (device, session, at, revenue) in purchases {
            n += 1;
            let revenue = Decimal::from_str(revenue).unwrap_or_default();
            let candidates: Vec<&&TouchFact> = by_device
                .get(device)
                .into_iter()
                .flatten()
                .filter(|t| t.1 <= *at && t.1 >= at - lookback_ms)
                .collect();
            let source = |t: &&&TouchFact| (t.3.clone(), t.4.clone(), t.5.clone());
            let ranks_first = |t: &&&TouchFact| t.2 || !clicks_first;
            let last = candidates
                .iter()
                .max_by_key(|t| (ranks_first(t), t.1, std::cmp::Reverse(source(t))))
                .map(source)
                .unwrap_or_else(direct);
            let first = candidates
                .iter()
                .max_by_key(|t| {
                    (
                        ranks_first(t),
                        std::cmp::Reverse(t.1),
                        std::cmp::Reverse(source(t)),
                    )
                })
                .map(source)
                .unwrap_or_else(direct);
            let session = facts
                .sessions
                .get(tenant)
                .and_then(|s| s.get(session))
                .map(|f| (f.1.clone(), f.2.clone(), f.3.clone()))
                .unwrap_or_else(direct);
            for (model, source) in MODELS.into_iter().zip([last, first, session]) {
                let cell = out.entry((*tenant, model, source)).or_default();
                cell.0 += 1;
                cell.1 += revenue;
            }
        }
    }
    (out, n, unusual)
}

fn compare_attribution(
    out: &mut Differences,
    truth: &Truth,
    db: &AttributionSnapshot,
) -> Attribution {
    let facts = &truth.expected.campaigns;
    if !facts.recorded {
        return Attribution::NotRecorded;
    }
    if !truth.uncertain_resends.is_empty() {
        return Attribution::Uncertain;
    }
    if !db.caught_up {
        return Attribution::Behind;
    }
    let (expected, conversions, unusual) = expected_attribution(facts, &db.settings);
    for tenant in unusual {
        out.0.push(Difference {
            what: "conversion types (the truth knows purchases only)".into(),
            tenant: Some(tenant),
            hour: None,
            expected: "purchase".into(),
            actual: db.settings[&tenant].0.join(","),
        });
    }
    let keys: BTreeSet<&(i64, &'static str, Source)> =
        expected.keys().chain(db.stored.keys()).collect();
    for key in keys {
        let (e, a) = (
            expected.get(key).copied().unwrap_or_default(),
            db.stored.get(key).copied().unwrap_or_default(),
        );
        if e != a {
            let (tenant, model, (c, s, m)) = key;
            out.0.push(Difference {
                what: format!("{model} {c}/{s}/{m} conversions, revenue"),
                tenant: Some(*tenant),
                hour: None,
                expected: format!("{}, {}", e.0, e.1),
                actual: format!("{}, {}", a.0, a.1),
            });
        }
    }
    Attribution::Checked { conversions }
}

/// One tenant-hour as the database has it.
#[derive(Debug, Clone, Default)]
struct Actual {
    events: i64,
    purchases: i64,
    revenue: Decimal,
    devices: i64,
    sessions: i64,
}

fn compare(truth: &Truth, db: &Snapshot) -> CheckReport {
    let (hours, tenants, dead, ledger) = (&db.hours, &db.tenants, &db.dead_letters, &db.ledger);
    let expected = &truth.expected;
    let upper = truth.upper_bound();
    let mut out = Differences::default();
    compare_hours(&mut out, expected, &upper, hours);
    compare_tenants(&mut out, expected, &upper, tenants);
    compare_dead_letters(&mut out, expected, &upper, dead);
    compare_ledger(&mut out, expected, &upper, ledger);
    compare_spend(&mut out, &truth.spend, &db.spend);
    let attribution = compare_attribution(&mut out, truth, &db.attribution);
    CheckReport {
        differences: out.0,
        events: ledger.events,
        dead_letters: ledger.dead_letter_rows,
        tenants: tenants.len(),
        tenant_hours: hours.len(),
        uncertain_resends: truth.uncertain_resends.len(),
        allowed_extra_events: upper.delivered - expected.delivered,
        spend_rows: db.spend.values().map(BTreeMap::len).sum(),
        attribution,
    }
}

#[derive(Default)]
struct Differences(Vec<Difference>);

impl Differences {
    /// Records a difference unless `lo <= actual <= hi`.
    fn range<T: PartialOrd + Display>(
        &mut self,
        what: &str,
        tenant: Option<i64>,
        hour: Option<DateTime<Utc>>,
        (lo, hi): (T, T),
        actual: T,
    ) {
        if actual >= lo && actual <= hi {
            return;
        }
        let expected = if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}..={hi}")
        };
        self.0.push(Difference {
            what: what.into(),
            tenant,
            hour,
            expected,
            actual: actual.to_string(),
        });
    }
}

fn compare_hours(
    out: &mut Differences,
    expected: &Tally,
    upper: &Tally,
    hours: &BTreeMap<(i64, DateTime<Utc>), Actual>,
) {
    let cell = |t: &Tally, tenant: i64, hour: DateTime<Utc>| {
        t.stored
            .get(&tenant)
            .and_then(|h| h.get(&hour))
            .cloned()
            .unwrap_or_default()
    };
    let mut keys: BTreeSet<(i64, DateTime<Utc>)> = hours.keys().copied().collect();
    for (tenant, h) in &upper.stored {
        keys.extend(h.keys().map(|hour| (*tenant, *hour)));
    }
    for (tenant, hour) in keys {
        let (lo, hi): (HourTally, HourTally) =
            (cell(expected, tenant, hour), cell(upper, tenant, hour));
        let actual = hours.get(&(tenant, hour)).cloned().unwrap_or_default();
        let (t, h) = (Some(tenant), Some(hour));
        let count = |n: u64| n as i64;
        out.range(
            "events",
            t,
            h,
            (count(lo.events), count(hi.events)),
            actual.events,
        );
        out.range(
            "purchases",
            t,
            h,
            (count(lo.purchases), count(hi.purchases)),
            actual.purchases,
        );
        // Normalized, so that 306.88 and 306.8800 print alike.
        out.range(
            "revenue",
            t,
            h,
            (lo.revenue.normalize(), hi.revenue.normalize()),
            actual.revenue.normalize(),
        );
        out.range(
            "distinct devices",
            t,
            h,
            (lo.devices.len() as i64, hi.devices.len() as i64),
            actual.devices,
        );
        out.range(
            "distinct sessions",
            t,
            h,
            (lo.sessions.len() as i64, hi.sessions.len() as i64),
            actual.sessions,
        );
    }
}

fn compare_tenants(
    out: &mut Differences,
    expected: &Tally,
    upper: &Tally,
    tenants: &BTreeMap<i64, (i64, i64)>,
) {
    let mut keys: BTreeSet<i64> = tenants.keys().copied().collect();
    keys.extend(upper.stored.keys());
    for tenant in keys {
        let (lo_devices, lo_sessions) = expected.distinct_of(tenant);
        let (hi_devices, hi_sessions) = upper.distinct_of(tenant);
        let (devices, sessions) = tenants.get(&tenant).copied().unwrap_or_default();
        let t = Some(tenant);
        out.range(
            "distinct devices of the tenant",
            t,
            None,
            (lo_devices as i64, hi_devices as i64),
            devices,
        );
        out.range(
            "distinct sessions of the tenant",
            t,
            None,
            (lo_sessions as i64, hi_sessions as i64),
            sessions,
        );
    }
}

fn compare_dead_letters(
    out: &mut Differences,
    expected: &Tally,
    upper: &Tally,
    dead: &BTreeMap<(String, Option<i64>), i64>,
) {
    let count = |t: &Tally, reason: &str, tenant: Option<i64>| -> i64 {
        let Some(c) = t.dead_letters.get(reason) else {
            return 0;
        };
        (match tenant {
            None => c.unattributed,
            Some(id) => c.tenants.get(&id).copied().unwrap_or_default(),
        }) as i64
    };
    let mut keys: BTreeSet<(String, Option<i64>)> = dead.keys().cloned().collect();
    for (reason, c) in &upper.dead_letters {
        if c.unattributed > 0 {
            keys.insert((reason.clone(), None));
        }
        keys.extend(c.tenants.keys().map(|t| (reason.clone(), Some(*t))));
    }
    for (reason, tenant) in keys {
        out.range(
            &format!("dead letters {reason}"),
            tenant,
            None,
            (
                count(expected, &reason, tenant),
                count(upper, &reason, tenant),
            ),
            dead.get(&(reason.clone(), tenant)).copied().unwrap_or(0),
        );
    }
}

fn compare_spend(
    out: &mut Differences,
    expected: &BTreeMap<i64, BTreeMap<String, Decimal>>,
    actual: &BTreeMap<i64, BTreeMap<String, Decimal>>,
) {
    let none = BTreeMap::new();
    let tenants: BTreeSet<i64> = expected.keys().chain(actual.keys()).copied().collect();
    for tenant in tenants {
        let (e, a) = (
            expected.get(&tenant).unwrap_or(&none),
            actual.get(&tenant).unwrap_or(&none),
        );
        let keys: BTreeSet<&String> = e.keys().chain(a.keys()).collect();
        for key in keys {
            let show = |v: Option<&Decimal>| v.map_or("no row".to_string(), |c| c.to_string());
            if e.get(key) != a.get(key) {
                out.0.push(Difference {
                    what: format!("ad spend {key}"),
                    tenant: Some(tenant),
                    hour: None,
                    expected: show(e.get(key)),
                    actual: show(a.get(key)),
                });
            }
        }
    }
}

fn compare_ledger(out: &mut Differences, expected: &Tally, upper: &Tally, l: &Ledger) {
    let identity = l.stored + l.duplicates + l.dead_lettered;
    out.range(
        "ledger received = stored+dup+dead",
        None,
        None,
        (identity, identity),
        l.received,
    );
    out.range(
        "ledger stored = rows of events",
        None,
        None,
        (l.events, l.events),
        l.stored,
    );
    out.range(
        "ledger dead_lettered = dead rows",
        None,
        None,
        (l.dead_letter_rows, l.dead_letter_rows),
        l.dead_lettered,
    );
    out.range(
        "ledger received - duplicates",
        None,
        None,
        (expected.delivered as i64, upper.delivered as i64),
        l.received - l.duplicates,
    );
    out.range(
        "events stored (total)",
        None,
        None,
        (expected.stored_total() as i64, upper.stored_total() as i64),
        l.events,
    );
    out.range(
        "dead letters (total)",
        None,
        None,
        (
            expected.dead_lettered_total() as i64,
            upper.dead_lettered_total() as i64,
        ),
        l.dead_letter_rows,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::{Expected, Generated, StoredEvent};
    use crate::truth::UncertainResend;
    use remarketable_core::Reason;

    fn hour() -> DateTime<Utc> {
        "2026-11-26T10:00:00Z".parse().unwrap()
    }

    fn event(device: i64, revenue: Option<i64>) -> Generated {
        Generated {
            body: String::new(),
            expected: Expected::Stored(StoredEvent {
                tenant_id: 1,
                event_time: hour() + chrono::Duration::minutes(device),
                device_id: device,
                session_id: device,
                purchase: revenue.is_some(),
                revenue: revenue.map(Decimal::from),
                touch: None,
            }),
            malformed: None,
            late: false,
            producer_duplicate: false,
        }
    }

    /// A database holding `events` stored events of tenant 1 (copies of at most two devices
    /// and sessions, revenue 10 each for `purchases` of them) and `dead` bad_country dead
    /// letters of tenant 1.
    fn database(events: i64, purchases: i64, dead: i64) -> Snapshot {
        let hours = BTreeMap::from([(
            (1, hour()),
            Actual {
                events,
                purchases,
                revenue: Decimal::from(10 * purchases),
                devices: events.min(2),
                sessions: events.min(2),
            },
        )]);
        let tenants = BTreeMap::from([(1, (events.min(2), events.min(2)))]);
        let dead_letters = BTreeMap::from([(("bad_country".to_string(), Some(1)), dead)]);
        let ledger = Ledger {
            received: events + dead,
            stored: events,
            duplicates: 0,
            dead_lettered: dead,
            events,
            dead_letter_rows: dead,
        };
        Snapshot {
            hours,
            tenants,
            dead_letters,
            ledger,
            spend: BTreeMap::new(),
            attribution: AttributionSnapshot::default(),
        }
    }

    fn truth() -> (Truth, Tally) {
        let mut chunk = Tally::default();
        chunk.add(&event(1, None));
        chunk.add(&event(2, Some(10)));
        chunk.add(&Generated {
            expected: Expected::DeadLettered {
                reason: Reason::BadCountry,
                tenant_id: Some(1),
            },
            ..event(0, None)
        });
        let mut truth = Truth::default();
        truth.expected.merge(&chunk, 1);
        (truth, chunk)
    }

    #[test]
    fn exact_match_has_no_difference() {
        let (truth, _) = truth();
        let db = database(2, 1, 1);
        let report = compare(&truth, &db);
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.allowed_extra_events, 0);
    }

    #[test]
    fn a_missing_purchase_shows_in_every_figure_it_touches() {
        let (truth, _) = truth();
        let db = database(1, 0, 1);
        let report = compare(&truth, &db);
        let what: Vec<&str> = report.differences.iter().map(|d| d.what.as_str()).collect();
        assert_eq!(
            what,
            [
                "events",
                "purchases",
                "revenue",
                "distinct devices",
                "distinct sessions",
                "distinct devices of the tenant",
                "distinct sessions of the tenant",
                "ledger received - duplicates",
                "events stored (total)"
            ]
        );
        assert!(report
            .to_string()
            .ends_with("check: FAILED: 9 difference(s) between the database and the truth"));
    }

    #[test]
    fn attribution_is_the_brute_force_over_the_truth() {
        use crate::traffic::Touch;
        let at = |minutes: i64| hour() + chrono::Duration::minutes(minutes);
        let stored =
            |device: i64, session: i64, t: i64, touch: Option<Touch>, revenue: Option<i64>| {
                Generated {
                    body: String::new(),
                    expected: Expected::Stored(StoredEvent {
                        tenant_id: 1,
                        event_time: at(t),
                        device_id: device,
                        session_id: session,
                        purchase: revenue.is_some(),
                        revenue: revenue.map(Decimal::from),
                        touch,
                    }),
                    malformed: None,
                    late: false,
                    producer_duplicate: false,
                }
            };
        let ad = |click| {
            Some(Touch {
                campaign: ("winter", "google", "cpc"),
                click,
            })
        };
        let mail = Some(Touch {
            campaign: ("news", "newsletter", "email"),
            click: true,
        });
        let mut truth = Truth::default();
        for g in [
            stored(1, 10, 0, ad(false), None),
            stored(1, 11, 5, mail, None),
            stored(1, 11, 9, None, Some(30)),
            stored(2, 20, 3, None, Some(5)),
        ] {
            truth.expected.add(&g);
        }
        let key = |model: &'static str, s: (&str, &str, &str)| {
            (
                1,
                model,
                (s.0.to_string(), s.1.to_string(), s.2.to_string()),
            )
        };
        let (news, direct) = (("news", "newsletter", "email"), ("", "", ""));
        let mut db = database(0, 0, 0);
        db.attribution = AttributionSnapshot {
            caught_up: true,
            settings: BTreeMap::from([(1, (vec!["purchase".to_string()], 86_400, true))]),
            // The click outranks the earlier impression under both touch models; session 11
            // starts with the e-mail click.
            stored: BTreeMap::from([
                (key("last_touch", news), (1, Decimal::from(30))),
                (key("first_touch", news), (1, Decimal::from(30))),
                (key("session", news), (1, Decimal::from(30))),
                (key("last_touch", direct), (1, Decimal::from(5))),
                (key("first_touch", direct), (1, Decimal::from(5))),
                (key("session", direct), (1, Decimal::from(5))),
            ]),
        };
        truth.expected.stored.clear();
        let report = compare(&truth, &db);
        assert_eq!(report.attribution, Attribution::Checked { conversions: 2 });
        let attribution_differences = |r: &CheckReport| {
            r.differences
                .iter()
                .filter(|d| d.what.contains("conversions, revenue"))
                .count()
        };
        assert_eq!(attribution_differences(&report), 0, "{report}");
        // With clicks not first, the last touch is still the e-mail (later), the first the ad.
        db.attribution
            .settings
            .insert(1, (vec!["purchase".to_string()], 86_400, false));
        let report = compare(&truth, &db);
        assert_eq!(attribution_differences(&report), 2, "{report}");
        db.attribution.caught_up = false;
        assert_eq!(compare(&truth, &db).attribution, Attribution::Behind);
    }

    #[test]
    fn spend_differs_row_by_row() {
        let (mut truth, _) = truth();
        let figures = |rows: &[(&str, i64)]| {
            let day: BTreeMap<String, Decimal> = rows
                .iter()
                .map(|(k, c)| (k.to_string(), Decimal::from(*c)))
                .collect();
            BTreeMap::from([(1, day)])
        };
        truth.spend = figures(&[("2026-12-01|a|g|cpc", 5), ("2026-12-02|a|g|cpc", 7)]);
        let mut db = database(2, 1, 1);
        db.spend = truth.spend.clone();
        assert!(compare(&truth, &db).is_ok());
        db.spend = figures(&[("2026-12-01|a|g|cpc", 5), ("2026-12-03|a|g|cpc", 7)]);
        let found: Vec<(String, String, String)> = compare(&truth, &db)
            .differences
            .into_iter()
            .map(|d| (d.what, d.expected, d.actual))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "ad spend 2026-12-02|a|g|cpc".into(),
                    "7".into(),
                    "no row".into()
                ),
                (
                    "ad spend 2026-12-03|a|g|cpc".into(),
                    "no row".into(),
                    "7".into()
                ),
            ]
        );
    }

    #[test]
    fn an_unexpected_tenant_is_a_difference() {
        let (truth, _) = truth();
        let mut db = database(2, 1, 1);
        db.hours.insert(
            (7, hour()),
            Actual {
                events: 1,
                devices: 1,
                sessions: 1,
                ..Actual::default()
            },
        );
        db.tenants.insert(7, (1, 1));
        db.ledger.events += 1;
        db.ledger.stored += 1;
        db.ledger.received += 1;
        let report = compare(&truth, &db);
        assert!(
            report
                .differences
                .iter()
                .any(|d| d.tenant == Some(7) && d.what == "events" && d.expected == "0"),
            "{report}"
        );
    }

    #[test]
    fn uncertain_resends_allow_their_copies_and_no_more() {
        let (mut truth, chunk) = truth();
        truth.uncertain_resends.push(UncertainResend {
            at: Utc::now(),
            events: 3,
            extra_copies: 1,
            acknowledged: true,
            tally: chunk,
        });
        // Once or twice in the hub: both fine.
        for (events, purchases, dead) in [(2, 1, 1), (4, 2, 2)] {
            let db = database(events, purchases, dead);
            let report = compare(&truth, &db);
            assert!(report.is_ok(), "{report}");
            assert_eq!(report.allowed_extra_events, 3);
            assert!(
                report.to_string().contains("up to 3 extra events"),
                "{report}"
            );
        }
        // Three times: too many.
        let db = database(6, 3, 3);
        let report = compare(&truth, &db);
        let events = report
            .differences
            .iter()
            .find(|d| d.what == "events")
            .unwrap();
        assert_eq!(
            (events.expected.as_str(), events.actual.as_str()),
            ("2..=4", "6")
        );
    }
}
