//! Storefront traffic with the skew of the real thing, deterministic for a given seed.
//!
//! - Tenants weigh about 1/k (Zipf): a few big storefronts and a long tail.
//! - Visitors come back: each tenant has a pool of devices, sized by its weight, and low device
//!   numbers return more often. Some storefronts' trackers send integer ids, the rest strings.
//! - A session walks the shop: it enters through a page view (sometimes referred by a search
//!   engine), an ad impression and click, or an email click (those carry campaign, source and
//!   medium), views and searches a few pages, and some sessions add to the cart, a share of
//!   which purchase with revenue. Many sessions are open at once and their events interleave.
//! - Countries and browsers follow skewed tables.
//! - A configurable share of events is late (event time minutes to hours before enqueue, never
//!   beyond retention), malformed (see [`crate::malformed`]), or a producer-side duplicate (the
//!   very same body sent again).
//!
//! Every generated event comes with what the ingest path will make of it ([`Expected`]), worked
//! out from what the generator chose, not by running the validator; the tests check the two
//! agree.

use crate::malformed::Malformed;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use remarketable_core::event::{hash_id, EventLimits, REVENUE_SCALE};
use remarketable_core::Reason;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{json, Value};
use std::collections::VecDeque;

const COUNTRIES: [(&str, u32); 12] = [
    ("US", 300),
    ("DE", 110),
    ("GB", 90),
    ("FR", 70),
    ("NL", 50),
    ("CA", 50),
    ("AU", 40),
    ("ES", 40),
    ("IT", 40),
    ("SE", 25),
    ("PL", 25),
    ("JP", 20),
];
const BROWSERS: [(&str, u32); 6] = [
    ("Chrome", 600),
    ("Safari", 200),
    ("Edge", 70),
    ("Firefox", 60),
    ("Samsung Internet", 40),
    ("Opera", 30),
];
/// (campaign, source, medium) of paid ads.
pub const AD_CAMPAIGNS: [(&str, &str, &str); 4] = [
    ("black-friday-2026", "google", "cpc"),
    ("winter-sale", "facebook", "paid_social"),
    ("retarget-cart", "criteo", "display"),
    ("brand-search", "bing", "cpc"),
];
/// (campaign, source, medium) of e-mails.
pub const EMAIL_CAMPAIGNS: [(&str, &str, &str); 2] = [
    ("newsletter-48", "newsletter", "email"),
    ("cart-reminder", "lifecycle", "email"),
];
const REFERRERS: [&str; 3] = [
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://duckduckgo.com/",
];
/// Sessions open at once; their events interleave.
const OPEN_SESSIONS: usize = 200;
/// Recently sent bodies a producer-side duplicate is drawn from.
const RECENT: usize = 32;
/// Lateness of a late event: between these (the upper bound configurable), capped an hour
/// short of retention.
const LATE_MIN: Duration = Duration::minutes(2);
pub const LATE_MAX: Duration = Duration::hours(3);

/// What to generate.
#[derive(Debug, Clone)]
pub struct TrafficConfig {
    pub seed: u64,
    /// Tenants `1..=tenants`, all expected to be registered.
    pub tenants: i64,
    /// Share of events whose event time lies minutes to hours before enqueue.
    pub late_share: f64,
    /// Most lateness of a late event ([`LATE_MAX`] by default; days to backfill a history).
    pub late_max: Duration,
    /// Share of malformed events.
    pub malformed_share: f64,
    /// Share of producer-side duplicates (a recent body sent again).
    pub duplicate_share: f64,
    /// The ingest path's limits (sizes, retention), which malformed kinds must overstep.
    pub limits: EventLimits,
}

impl TrafficConfig {
    /// Valid, timely, unique events only (for the benchmark).
    pub fn valid_only(seed: u64, tenants: i64) -> Self {
        TrafficConfig {
            seed,
            tenants,
            late_share: 0.0,
            late_max: LATE_MAX,
            malformed_share: 0.0,
            duplicate_share: 0.0,
            limits: EventLimits::default(),
        }
    }
}

/// What the ingest path will make of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    Stored(StoredEvent),
    DeadLettered {
        reason: Reason,
        /// The tenant the dead letter names, when the validator could read it.
        tenant_id: Option<i64>,
    },
}

/// The parts of a stored row the truth file counts.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub tenant_id: i64,
    pub event_time: DateTime<Utc>,
    /// As stored: integers as sent, strings through [`hash_id`].
    pub device_id: i64,
    pub session_id: i64,
    pub purchase: bool,
    /// Rounded as the validator rounds (to `numeric(18,4)`).
    pub revenue: Option<Decimal>,
    /// The campaign the event carries (its ad or email), if any: a touch for attribution.
    pub touch: Option<Touch>,
}

/// A campaign on an event: (campaign, source, medium), and whether it is a click (every touch
/// but an ad impression).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touch {
    pub campaign: (&'static str, &'static str, &'static str),
    pub click: bool,
}

/// One generated event.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The body, one line of UTF-8 text.
    pub body: String,
    pub expected: Expected,
    /// The kind of breakage, for malformed events.
    pub malformed: Option<Malformed>,
    pub late: bool,
    /// A body sent before, sent again by the producer.
    pub producer_duplicate: bool,
}

/// An identifier as a tracker sends it.
#[derive(Debug, Clone)]
enum Id {
    Int(i64),
    Text(String),
}

impl Id {
    fn json(&self) -> Value {
        match self {
            Id::Int(i) => json!(i),
            Id::Text(s) => json!(s),
        }
    }

    fn stored(&self) -> i64 {
        match self {
            Id::Int(i) => *i,
            Id::Text(s) => hash_id(s),
        }
    }
}

/// One step of a session's walk.
#[derive(Debug, Clone)]
enum Step {
    AdImpression(usize),
    AdClick(usize, u32),
    EmailClick(usize, u32),
    PageView {
        product: u32,
        referrer: Option<usize>,
    },
    Search(u32),
    AddToCart(u32),
    Purchase,
}

struct Session {
    tenant: i64,
    device: Id,
    session: Id,
    country: &'static str,
    browser: &'static str,
    steps: VecDeque<Step>,
}

/// The generator. Deterministic: the same config and the same enqueue times give the same
/// events.
pub struct Traffic {
    config: TrafficConfig,
    rng: StdRng,
    /// Cumulative tenant weights, for a binary-search draw.
    cumulative: Vec<u64>,
    open: Vec<Session>,
    recent: VecDeque<Generated>,
    sessions_started: u64,
}

impl Traffic {
    pub fn new(config: TrafficConfig) -> Self {
        let mut total = 0u64;
        let cumulative = (1..=config.tenants.max(1))
            .map(|k| {
                total += 1_000_000 / k as u64 + 1;
                total
            })
            .collect();
        Traffic {
            rng: StdRng::seed_from_u64(config.seed),
            config,
            cumulative,
            open: Vec::with_capacity(OPEN_SESSIONS),
            recent: VecDeque::with_capacity(RECENT),
            sessions_started: 0,
        }
    }

    /// The next event, enqueued (or about to be) at `enqueued_at`.
    pub fn next(&mut self, enqueued_at: DateTime<Utc>) -> Generated {
        let c = &self.config;
        if !self.recent.is_empty() && self.rng.random_bool(c.duplicate_share.clamp(0.0, 1.0)) {
            let i = self.rng.random_range(0..self.recent.len());
            let mut again = self.recent[i].clone();
            again.producer_duplicate = true;
            return again;
        }
        let late = self.rng.random_bool(c.late_share.clamp(0.0, 1.0));
        let malformed = self
            .rng
            .random_bool(c.malformed_share.clamp(0.0, 1.0))
            .then(|| Malformed::ALL[self.rng.random_range(0..Malformed::ALL.len())]);
        let (event, stored) = self.valid(enqueued_at, late);
        let generated = match malformed {
            None => Generated {
                body: event.to_string(),
                expected: Expected::Stored(stored),
                malformed: None,
                late,
                producer_duplicate: false,
            },
            Some(kind) => {
                let (body, tenant_id) =
                    kind.apply(event, enqueued_at, &self.config.limits, &mut self.rng);
                Generated {
                    body,
                    expected: Expected::DeadLettered {
                        reason: kind.reason(),
                        tenant_id,
                    },
                    malformed: Some(kind),
                    late,
                    producer_duplicate: false,
                }
            }
        };
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(generated.clone());
        generated
    }

    /// The next step of an open session (opening one when fewer are open than usual).
    fn valid(&mut self, enqueued_at: DateTime<Utc>, late: bool) -> (Value, StoredEvent) {
        if self.open.len() < OPEN_SESSIONS {
            let session = self.open_session();
            self.open.push(session);
        }
        let i = self.rng.random_range(0..self.open.len());
        let step = self.open[i]
            .steps
            .pop_front()
            .expect("open sessions have steps");
        let event_time = self.event_time(enqueued_at, late);
        let (event, stored) = self.render(&self.open[i], &step, event_time);
        let (event, stored) = self.with_revenue(event, stored, &step);
        if self.open[i].steps.is_empty() {
            self.open.swap_remove(i);
        }
        (event, stored)
    }

    fn event_time(&mut self, enqueued_at: DateTime<Utc>, late: bool) -> DateTime<Utc> {
        let before = if late {
            let max = (self.config.late_max.max(LATE_MIN))
                .min(self.config.limits.retention - Duration::hours(1));
            let span = (max - LATE_MIN).num_milliseconds().max(1);
            LATE_MIN + Duration::milliseconds(self.rng.random_range(0..span))
        } else {
            // Trackers batch and networks are slow: a few seconds between event and enqueue.
            Duration::milliseconds(self.rng.random_range(0..5_000))
        };
        truncate_millis(enqueued_at - before)
    }

    fn open_session(&mut self) -> Session {
        let rng = &mut self.rng;
        let draw = rng.random_range(0..*self.cumulative.last().expect("at least one tenant"));
        let tenant = self.cumulative.partition_point(|c| *c <= draw) as i64 + 1;
        // Bigger shops have more devices; low device numbers return more often.
        let devices = 50 + 200_000 / tenant as u64;
        let device = (devices as f64 * rng.random::<f64>().powi(2)) as u64;
        let n = self.sessions_started;
        self.sessions_started += 1;
        // One storefront in three has a tracker that sends integer ids.
        let (device, session) = if tenant % 3 == 0 {
            let device = tenant * 10_000_000 + device as i64;
            (
                Id::Int(device),
                Id::Int(((self.config.seed % 1000) as i64) << 40 | n as i64),
            )
        } else {
            (
                Id::Text(format!("d-{tenant}-{device:x}")),
                Id::Text(format!("s-{:x}-{n:x}", self.config.seed)),
            )
        };
        let steps = walk(rng);
        Session {
            tenant,
            device,
            session,
            country: pick(rng, &COUNTRIES),
            browser: pick(rng, &BROWSERS),
            steps,
        }
    }

    /// The event of one step, without revenue.
    fn render(&self, s: &Session, step: &Step, event_time: DateTime<Utc>) -> (Value, StoredEvent) {
        let shop = format!("https://shop{}.example", s.tenant);
        let mut e = json!({
            "tenant_id": s.tenant,
            "device_id": s.device.json(),
            "session_id": s.session.json(),
            "event_time": rfc3339(event_time),
            "country": s.country,
            "browser": s.browser,
        });
        let mut touch = None;
        let mut campaign = |e: &mut Value, c: (&'static str, &'static str, &'static str)| {
            e["campaign"] = json!(c.0);
            e["source"] = json!(c.1);
            e["medium"] = json!(c.2);
            touch = Some(Touch {
                campaign: c,
                click: !matches!(step, Step::AdImpression(_)),
            });
        };
        let event_type = match step {
            Step::AdImpression(c) => {
                campaign(&mut e, AD_CAMPAIGNS[*c]);
                "ad_impression"
            }
            Step::AdClick(c, product) => {
                campaign(&mut e, AD_CAMPAIGNS[*c]);
                e["page_url"] = json!(format!(
                    "{shop}/p/{product}?utm_campaign={}",
                    AD_CAMPAIGNS[*c].0
                ));
                "ad_click"
            }
            Step::EmailClick(c, product) => {
                campaign(&mut e, EMAIL_CAMPAIGNS[*c]);
                e["page_url"] = json!(format!(
                    "{shop}/p/{product}?utm_campaign={}",
                    EMAIL_CAMPAIGNS[*c].0
                ));
                "email_click"
            }
            Step::PageView { product, referrer } => {
                e["page_url"] = json!(format!("{shop}/p/{product}"));
                if let Some(r) = referrer {
                    e["referrer"] = json!(REFERRERS[*r]);
                }
                "page_view"
            }
            Step::Search(product) => {
                e["page_url"] = json!(format!("{shop}/search?q=item{product}"));
                "search"
            }
            Step::AddToCart(product) => {
                e["page_url"] = json!(format!("{shop}/cart"));
                e["properties"] = json!({"product_id": product, "quantity": 1 + product % 3});
                "add_to_cart"
            }
            Step::Purchase => {
                e["page_url"] = json!(format!("{shop}/checkout/done"));
                "purchase"
            }
        };
        e["event_type"] = json!(event_type);
        let stored = StoredEvent {
            tenant_id: s.tenant,
            event_time,
            device_id: s.device.stored(),
            session_id: s.session.stored(),
            purchase: event_type == "purchase",
            revenue: None,
            touch,
        };
        (e, stored)
    }

    /// Adds revenue, currency and an order id to a purchase. Most shops send cents as a
    /// string; some send a JSON number, some five decimals (converted prices), which the
    /// ingest path rounds half away from zero to four.
    fn with_revenue(
        &mut self,
        mut e: Value,
        mut stored: StoredEvent,
        step: &Step,
    ) -> (Value, StoredEvent) {
        if !matches!(step, Step::Purchase) {
            return (e, stored);
        }
        let rng = &mut self.rng;
        let tenant = stored.tenant_id;
        let cents: i64 = rng.random_range(500..50_000);
        let (sent, exact) = match tenant % 4 {
            0 => {
                let v = Decimal::new(cents * 1000 + rng.random_range(0..1000), 5);
                (json!(v.to_string()), v)
            }
            1 => {
                let v = Decimal::new(cents, 2);
                (json!(v.to_string().parse::<f64>().unwrap_or(0.0)), v)
            }
            _ => {
                let v = Decimal::new(cents, 2);
                (json!(v.to_string()), v)
            }
        };
        e["revenue"] = sent;
        e["currency"] = json!(if tenant % 2 == 0 { "EUR" } else { "USD" });
        e["order_id"] = json!(format!("o-{tenant}-{}", rng.random_range(0..1_000_000_000)));
        stored.revenue = Some(
            exact.round_dp_with_strategy(REVENUE_SCALE, RoundingStrategy::MidpointAwayFromZero),
        );
        (e, stored)
    }
}

/// A session's walk through the shop.
fn walk(rng: &mut StdRng) -> VecDeque<Step> {
    let mut steps = VecDeque::new();
    let product = |rng: &mut StdRng| (rng.random_range(1.0f64..1000.0).powi(2) / 1000.0) as u32;
    let entry = rng.random_range(0..100);
    if entry < 15 {
        let c = rng.random_range(0..AD_CAMPAIGNS.len());
        steps.push_back(Step::AdImpression(c));
        if entry < 7 {
            // Seen, not clicked: a session of impressions only.
            for _ in 0..rng.random_range(0..3) {
                steps.push_back(Step::AdImpression(rng.random_range(0..AD_CAMPAIGNS.len())));
            }
            return steps;
        }
        steps.push_back(Step::AdClick(c, product(rng)));
    } else if entry < 25 {
        let c = rng.random_range(0..EMAIL_CAMPAIGNS.len());
        steps.push_back(Step::EmailClick(c, product(rng)));
    } else {
        let referrer = (rng.random_range(0..10) < 4).then(|| rng.random_range(0..REFERRERS.len()));
        steps.push_back(Step::PageView {
            product: product(rng),
            referrer,
        });
    }
    // Geometric number of further pages, mean about four.
    while rng.random_range(0..100) < 78 && steps.len() < 30 {
        let p = product(rng);
        steps.push_back(if rng.random_range(0..100) < 15 {
            Step::Search(p)
        } else {
            Step::PageView {
                product: p,
                referrer: None,
            }
        });
    }
    if rng.random_range(0..100) < 22 {
        for _ in 0..rng.random_range(1..3) {
            steps.push_back(Step::AddToCart(product(rng)));
        }
        if rng.random_range(0..100) < 35 {
            steps.push_back(Step::Purchase);
        }
    }
    steps
}

/// Picks from a weighted table.
fn pick<T: Copy>(rng: &mut StdRng, table: &[(T, u32)]) -> T {
    let total: u32 = table.iter().map(|(_, w)| w).sum();
    let mut x = rng.random_range(0..total);
    for (item, w) in table {
        if x < *w {
            return *item;
        }
        x -= w;
    }
    table[table.len() - 1].0
}

/// RFC 3339 in UTC with milliseconds, as trackers send it.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Drops sub-millisecond digits, so that the time sent and the time counted are the same.
fn truncate_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use remarketable_core::event::parse_event;
    use std::collections::{BTreeMap, BTreeSet};

    fn start() -> DateTime<Utc> {
        "2026-11-26T10:00:00Z".parse().unwrap()
    }

    fn config(seed: u64) -> TrafficConfig {
        TrafficConfig {
            seed,
            tenants: 20,
            late_share: 0.03,
            late_max: LATE_MAX,
            malformed_share: 0.02,
            duplicate_share: 0.01,
            limits: EventLimits::default(),
        }
    }

    /// `n` events, enqueued 5 ms apart.
    fn generate(config: TrafficConfig, n: usize) -> Vec<(DateTime<Utc>, Generated)> {
        let mut traffic = Traffic::new(config);
        (0..n)
            .map(|i| {
                let at = start() + Duration::milliseconds(5 * i as i64);
                (at, traffic.next(at))
            })
            .collect()
    }

    #[test]
    fn same_seed_same_traffic_other_seed_other_traffic() {
        let bodies = |seed| -> Vec<String> {
            generate(config(seed), 2_000)
                .into_iter()
                .map(|(_, g)| g.body)
                .collect()
        };
        assert_eq!(bodies(7), bodies(7));
        assert_ne!(bodies(7), bodies(8));
    }

    #[test]
    fn shares_are_roughly_as_configured() {
        let n = 20_000;
        let events = generate(config(1), n);
        let share = |f: &dyn Fn(&Generated) -> bool| {
            events.iter().filter(|(_, g)| f(g)).count() as f64 / n as f64
        };
        let duplicates = share(&|g| g.producer_duplicate);
        let malformed = share(&|g| g.malformed.is_some() && !g.producer_duplicate);
        let late = share(&|g| g.late && !g.producer_duplicate);
        assert!(
            (0.007..0.013).contains(&duplicates),
            "duplicates {duplicates}"
        );
        assert!((0.015..0.025).contains(&malformed), "malformed {malformed}");
        assert!((0.024..0.036).contains(&late), "late {late}");
    }

    #[test]
    fn traffic_has_the_shape_of_a_shop() {
        let events = generate(TrafficConfig::valid_only(5, 50), 20_000);
        let mut per_tenant: BTreeMap<i64, usize> = BTreeMap::new();
        let mut per_session: BTreeMap<i64, usize> = BTreeMap::new();
        let mut types: BTreeMap<String, usize> = BTreeMap::new();
        let mut countries = BTreeSet::new();
        for (_, g) in &events {
            let Expected::Stored(e) = &g.expected else {
                panic!("valid_only made a malformed event")
            };
            *per_tenant.entry(e.tenant_id).or_default() += 1;
            *per_session.entry(e.session_id).or_default() += 1;
            let v: Value = serde_json::from_str(&g.body).unwrap();
            let t = v["event_type"].as_str().unwrap().to_string();
            if matches!(t.as_str(), "ad_impression" | "ad_click" | "email_click") {
                assert!(v["campaign"].is_string() && v["source"].is_string(), "{v}");
                assert!(v["medium"].is_string(), "{v}");
            }
            if t == "purchase" {
                assert!(e.revenue.is_some() && v["currency"].is_string(), "{v}");
            } else {
                assert!(e.revenue.is_none(), "{v}");
            }
            *types.entry(t).or_default() += 1;
            countries.insert(v["country"].as_str().unwrap().to_string());
        }
        // Zipf: the biggest storefront dwarfs the smallest, and the tail is there.
        assert!(per_tenant[&1] > 20 * per_tenant[&50], "{per_tenant:?}");
        assert_eq!(per_tenant.len(), 50);
        // Sessions span several events.
        let mean = events.len() as f64 / per_session.len() as f64;
        assert!((2.5..8.0).contains(&mean), "events per session {mean}");
        // The funnel narrows: views > carts > purchases > 0.
        assert!(types["page_view"] > 5 * types["add_to_cart"], "{types:?}");
        assert!(types["add_to_cart"] > types["purchase"], "{types:?}");
        assert!(types["purchase"] > 100, "{types:?}");
        assert!(types["ad_impression"] > 0 && types["email_click"] > 0);
        assert_eq!(countries.len(), COUNTRIES.len());
    }

    #[test]
    fn late_events_stay_within_retention() {
        let mut c = config(9);
        c.late_share = 1.0;
        c.malformed_share = 0.0;
        c.limits.retention = Duration::hours(2);
        for (at, g) in generate(c, 2_000) {
            let Expected::Stored(e) = g.expected else {
                panic!("not stored")
            };
            let lateness = at - e.event_time;
            assert!(
                lateness >= LATE_MIN && lateness <= Duration::hours(1),
                "{lateness}"
            );
        }
    }

    #[test]
    fn late_max_spreads_late_events_over_days() {
        let mut c = config(10);
        c.late_share = 1.0;
        c.malformed_share = 0.0;
        c.late_max = Duration::days(6);
        let lateness: Vec<Duration> = generate(c, 2_000)
            .into_iter()
            .filter_map(|(at, g)| match g.expected {
                Expected::Stored(e) => Some(at - e.event_time),
                _ => None,
            })
            .collect();
        assert!(lateness
            .iter()
            .all(|l| *l >= LATE_MIN && *l <= Duration::days(6)));
        let older_than_3_days = lateness.iter().filter(|l| **l > Duration::days(3)).count();
        assert!(older_than_3_days > 800, "{older_than_3_days} of 2000");
    }

    /// What the generator says of each event is what the validator says: stored with these
    /// ids, time and revenue, or dead-lettered for this reason with this tenant.
    #[test]
    fn expectations_agree_with_the_validator() {
        let mut c = config(21);
        c.malformed_share = 0.2;
        c.late_share = 0.1;
        c.duplicate_share = 0.05;
        let events = generate(c.clone(), 20_000);
        let mut kinds = BTreeSet::new();
        for (at, g) in &events {
            let verdict = parse_event(g.body.as_bytes(), *at, *at, &c.limits);
            match (&g.expected, verdict) {
                (Expected::Stored(e), Ok(v)) => {
                    assert_eq!(v.tenant_id, e.tenant_id);
                    assert_eq!(v.event_time, e.event_time);
                    assert_eq!(v.device_id, e.device_id);
                    assert_eq!(v.session_id, e.session_id);
                    assert_eq!(v.event_type == "purchase", e.purchase);
                    assert_eq!(v.revenue, e.revenue, "{}", g.body);
                }
                (
                    Expected::DeadLettered {
                        reason: Reason::UnknownTenant,
                        tenant_id,
                    },
                    Ok(v),
                ) => assert_eq!(Some(v.tenant_id), *tenant_id),
                (Expected::DeadLettered { reason, tenant_id }, Err(r)) => {
                    assert_eq!(r.reason, *reason, "{}", g.body);
                    assert_eq!(r.tenant_id, *tenant_id, "{}", g.body);
                }
                (expected, verdict) => {
                    panic!("{} expected {expected:?}, validator {verdict:?}", g.body)
                }
            }
            kinds.extend(g.malformed);
        }
        assert_eq!(
            kinds.len(),
            Malformed::ALL.len(),
            "every kind was generated"
        );
    }

    #[test]
    fn revenue_is_rounded_like_the_validator() {
        // Tenants 4 and 8 send five decimals: the expected revenue has four.
        let events = generate(TrafficConfig::valid_only(2, 12), 20_000);
        let revenues: Vec<Decimal> = events
            .iter()
            .filter_map(|(_, g)| match &g.expected {
                Expected::Stored(e) if e.tenant_id % 4 == 0 => e.revenue,
                _ => None,
            })
            .collect();
        assert!(!revenues.is_empty());
        assert!(revenues.iter().all(|r| r.scale() <= REVENUE_SCALE));
    }
}
