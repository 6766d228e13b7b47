//! Storefront traffic with the skew of the real thing: a few big tenants and a long tail,
//! devices with multi-event sessions, page views leading to carts and purchases, ad and email
//! campaigns, and skewed countries and browsers. Deterministic for a given seed.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{json, Value};

const EVENT_TYPES: [(&str, u32); 7] = [
    ("page_view", 600),
    ("ad_impression", 200),
    ("add_to_cart", 70),
    ("ad_click", 50),
    ("email_click", 30),
    ("purchase", 30),
    ("search", 20),
];
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
const CAMPAIGNS: [(&str, &str, &str); 6] = [
    ("black-friday-2026", "google", "cpc"),
    ("winter-sale", "facebook", "paid_social"),
    ("retarget-cart", "criteo", "display"),
    ("brand-search", "bing", "cpc"),
    ("newsletter-48", "newsletter", "email"),
    ("cart-reminder", "lifecycle", "email"),
];

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

pub struct Traffic {
    rng: StdRng,
    tenants: Vec<(i64, u32)>,
}

impl Traffic {
    /// Traffic of tenants `1..=tenants`, tenant k weighing about 1/k (Zipf).
    pub fn new(seed: u64, tenants: i64) -> Self {
        let tenants = (1..=tenants)
            .map(|k| (k, (100_000 / k) as u32 + 1))
            .collect();
        Traffic {
            rng: StdRng::seed_from_u64(seed),
            tenants,
        }
    }

    /// One event body, happening shortly before `enqueued_at`.
    pub fn event(&mut self, enqueued_at: DateTime<Utc>) -> Value {
        let rng = &mut self.rng;
        let tenant = pick(rng, &self.tenants);
        // Bigger shops have more devices; a device has a handful of sessions.
        let devices = 100 + 5_000 / tenant;
        let device = rng.random_range(0..devices);
        let session = rng.random_range(0..4);
        let event_type = pick(rng, &EVENT_TYPES);
        let product = (rng.random_range(1.0f64..1000.0).powi(2) / 1000.0) as u32;
        let delay = Duration::milliseconds(rng.random_range(0..5_000));
        let mut e = json!({
            "tenant_id": tenant,
            "event_type": event_type,
            "event_time": (enqueued_at - delay).to_rfc3339_opts(SecondsFormat::Millis, true),
            "country": pick(rng, &COUNTRIES),
            "browser": pick(rng, &BROWSERS),
        });
        // A third of trackers send numeric ids, the rest strings.
        if device % 3 == 0 {
            e["device_id"] = json!(device);
            e["session_id"] = json!(device * 10 + session);
        } else {
            e["device_id"] = json!(format!("d-{tenant}-{device:x}"));
            e["session_id"] = json!(format!("s-{tenant}-{device:x}-{session}"));
        }
        let shop = format!("https://shop{tenant}.example");
        match event_type {
            "ad_impression" | "ad_click" | "email_click" => {
                let (campaign, source, medium) = CAMPAIGNS[rng.random_range(0..CAMPAIGNS.len())];
                e["campaign"] = json!(campaign);
                e["source"] = json!(source);
                e["medium"] = json!(medium);
                e["page_url"] = json!(format!("{shop}/p/{product}?utm_campaign={campaign}"));
            }
            "add_to_cart" => {
                e["page_url"] = json!(format!("{shop}/cart"));
                e["properties"] =
                    json!({"product_id": product, "quantity": rng.random_range(1..4)});
            }
            "purchase" => {
                e["page_url"] = json!(format!("{shop}/checkout/done"));
                let cents: i64 = rng.random_range(500..50_000);
                e["revenue"] = json!(format!("{}.{:02}", cents / 100, cents % 100));
                e["currency"] = json!(if tenant % 2 == 0 { "EUR" } else { "USD" });
                e["order_id"] = json!(format!(
                    "o-{tenant}-{device:x}-{}",
                    rng.random_range(0..1_000_000)
                ));
            }
            "search" => {
                e["page_url"] = json!(format!("{shop}/search?q=item{product}"));
            }
            _ => {
                e["page_url"] = json!(format!("{shop}/p/{product}"));
                if rng.random_range(0..4) == 0 {
                    e["referrer"] = json!("https://www.google.com/");
                }
            }
        }
        e
    }
}
