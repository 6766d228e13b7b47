//! Malformed events of many kinds, each labelled with the dead-letter reason the ingest path
//! gives it.
//!
//! Every kind starts from a valid event and breaks exactly one thing, so the validator's first
//! complaint is the one intended. The unit tests run each kind through
//! [`remarketable_core::event::parse_event`] and fail when the label and the validator disagree.
//!
//! Every body is one line of UTF-8 text (JSON escapes the characters that would break a line),
//! so all kinds can be sent as NDJSON lines to the hub.

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::RngExt;
use remarketable_core::event::EventLimits;
use remarketable_core::Reason;
use serde_json::{json, Value};

/// Tenants at or above this id are never registered by the tools; events naming one are
/// dead-lettered as `unknown_tenant`.
pub const UNKNOWN_TENANT_BASE: i64 = 900_000_000;

/// One way of breaking an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Malformed {
    /// The body stops in the middle of the object.
    TruncatedJson,
    /// Text that is not JSON at all.
    NotJson,
    /// The event wrapped in an array.
    ArrayBody,
    MissingTenantId,
    BadTenantId,
    /// A well-formed tenant id that is not registered (judged by the ingest path, not the
    /// validator).
    UnknownTenant,
    MissingEventType,
    BadEventType,
    MissingDeviceId,
    BadDeviceId,
    MissingSessionId,
    BadSessionId,
    BadEventTime,
    /// A day ahead of the enqueue time: far beyond any clock skew allowance.
    FutureEventTime,
    /// A day beyond the retention horizon.
    OutsideRetention,
    BadCountry,
    BadRevenue,
    BadCurrency,
    BadProperties,
    /// A text field of the wrong JSON type.
    BadField,
    /// A campaign longer than the text limit.
    TextTooLong,
    /// A page URL longer than the URL limit.
    UrlTooLong,
    /// U+0000 in a text field (sent as the JSON escape `\u0000`).
    NulCharacter,
    /// A body larger than the event size limit.
    TooLarge,
    /// `event_type` written twice (serialized by hand: a JSON value cannot hold it).
    DuplicateField,
    /// An `ad_spend` event without a campaign.
    SpendWithoutCampaign,
    /// An `ad_spend` event whose cost is negative, not a number or too large.
    BadCost,
    /// An `ad_spend` event whose date is not a day or lies in the future.
    BadSpendDate,
}

impl Malformed {
    pub const ALL: [Malformed; 28] = [
        Malformed::TruncatedJson,
        Malformed::NotJson,
        Malformed::ArrayBody,
        Malformed::MissingTenantId,
        Malformed::BadTenantId,
        Malformed::UnknownTenant,
        Malformed::MissingEventType,
        Malformed::BadEventType,
        Malformed::MissingDeviceId,
        Malformed::BadDeviceId,
        Malformed::MissingSessionId,
        Malformed::BadSessionId,
        Malformed::BadEventTime,
        Malformed::FutureEventTime,
        Malformed::OutsideRetention,
        Malformed::BadCountry,
        Malformed::BadRevenue,
        Malformed::BadCurrency,
        Malformed::BadProperties,
        Malformed::BadField,
        Malformed::TextTooLong,
        Malformed::UrlTooLong,
        Malformed::NulCharacter,
        Malformed::TooLarge,
        Malformed::DuplicateField,
        Malformed::SpendWithoutCampaign,
        Malformed::BadCost,
        Malformed::BadSpendDate,
    ];

    /// The reason code the ingest path writes to `dead_letters.reason` for this kind.
    pub fn reason(self) -> Reason {
        match self {
            Malformed::TruncatedJson | Malformed::NotJson => Reason::InvalidJson,
            Malformed::ArrayBody => Reason::NotAnObject,
            Malformed::MissingTenantId => Reason::MissingTenantId,
            Malformed::BadTenantId => Reason::BadTenantId,
            Malformed::UnknownTenant => Reason::UnknownTenant,
            Malformed::MissingEventType => Reason::MissingEventType,
            Malformed::BadEventType => Reason::BadEventType,
            Malformed::MissingDeviceId => Reason::MissingDeviceId,
            Malformed::BadDeviceId => Reason::BadDeviceId,
            Malformed::MissingSessionId => Reason::MissingSessionId,
            Malformed::BadSessionId => Reason::BadSessionId,
            Malformed::BadEventTime => Reason::BadEventTime,
            Malformed::FutureEventTime => Reason::FutureEventTime,
            Malformed::OutsideRetention => Reason::OutsideRetention,
            Malformed::BadCountry => Reason::BadCountry,
            Malformed::BadRevenue => Reason::BadRevenue,
            Malformed::BadCurrency => Reason::BadCurrency,
            Malformed::BadProperties => Reason::BadProperties,
            Malformed::BadField => Reason::BadField,
            Malformed::TextTooLong | Malformed::UrlTooLong => Reason::FieldTooLong,
            Malformed::NulCharacter => Reason::InvalidCharacters,
            Malformed::TooLarge => Reason::TooLarge,
            Malformed::DuplicateField => Reason::DuplicateField,
            Malformed::SpendWithoutCampaign => Reason::MissingCampaign,
            Malformed::BadCost => Reason::BadCost,
            Malformed::BadSpendDate => Reason::BadSpendDate,
        }
    }

    /// Whether the dead letter carries the tenant: the validator reads `tenant_id` first and
    /// attaches it to every later complaint; a body too large, not JSON or without a usable
    /// tenant has none.
    pub fn keeps_tenant(self) -> bool {
        !matches!(
            self,
            Malformed::TruncatedJson
                | Malformed::NotJson
                | Malformed::ArrayBody
                | Malformed::MissingTenantId
                | Malformed::BadTenantId
                | Malformed::TooLarge
                | Malformed::DuplicateField
        )
    }

    /// Breaks `event` (a valid event of `tenant`, enqueued at `enqueued_at`) and answers the
    /// body to send and the tenant the dead letter will name.
    pub fn apply(
        self,
        mut event: Value,
        enqueued_at: DateTime<Utc>,
        limits: &EventLimits,
        rng: &mut StdRng,
    ) -> (String, Option<i64>) {
        let tenant = event["tenant_id"].as_i64();
        let e = &mut event;
        match self {
            Malformed::TruncatedJson => {
                let text = e.to_string();
                // Cut somewhere inside the object, never at its end.
                let cut = rng.random_range(1..text.len() - 1);
                let cut = (0..=cut)
                    .rev()
                    .find(|i| text.is_char_boundary(*i))
                    .unwrap_or(1);
                return (text[..cut].to_string(), None);
            }
            Malformed::NotJson => {
                let body = one_of(
                    rng,
                    ["tenant_id=3&event_type=page_view", "<event/>", "undefined"],
                );
                return (body.to_string(), None);
            }
            Malformed::ArrayBody => return (json!([event]).to_string(), None),
            Malformed::MissingTenantId => remove(e, "tenant_id"),
            Malformed::BadTenantId => {
                e["tenant_id"] = one_of(rng, [json!(0), json!(-3), json!("7"), json!(1.5)])
            }
            Malformed::UnknownTenant => {
                let unknown = UNKNOWN_TENANT_BASE + rng.random_range(0..1000);
                e["tenant_id"] = json!(unknown);
                return (event.to_string(), Some(unknown));
            }
            Malformed::MissingEventType => remove(e, "event_type"),
            Malformed::BadEventType => {
                e["event_type"] = one_of(
                    rng,
                    [
                        json!("Page View"),
                        json!("add-to-cart"),
                        json!(7),
                        json!(""),
                    ],
                )
            }
            Malformed::MissingDeviceId => remove(e, "device_id"),
            Malformed::BadDeviceId => {
                e["device_id"] = one_of(rng, [json!(""), json!(1.5), json!({"id": 1})])
            }
            Malformed::MissingSessionId => remove(e, "session_id"),
            Malformed::BadSessionId => {
                let too_long = "x".repeat(limits.max_text_bytes + 1);
                e["session_id"] = one_of(rng, [json!(true), json!([1]), json!(too_long)])
            }
            Malformed::BadEventTime => {
                e["event_time"] = one_of(
                    rng,
                    [
                        json!("yesterday"),
                        json!("2026-11-26 10:00:00"),
                        json!(1_764_150_000),
                    ],
                )
            }
            Malformed::FutureEventTime => {
                e["event_time"] = json!(crate::traffic::rfc3339(enqueued_at + Duration::days(1)))
            }
            Malformed::OutsideRetention => {
                let t = enqueued_at - limits.retention - Duration::days(1);
                e["event_time"] = json!(crate::traffic::rfc3339(t))
            }
            Malformed::BadCountry => {
                e["country"] = one_of(rng, [json!("ZZ"), json!("Germany"), json!("UK"), json!(49)])
            }
            Malformed::BadRevenue => {
                e["revenue"] = one_of(
                    rng,
                    [json!("-5.00"), json!("ten"), json!(1e13), json!(true)],
                )
            }
            Malformed::BadCurrency => {
                e["currency"] = one_of(rng, [json!("EURO"), json!("€"), json!(978)])
            }
            Malformed::SpendWithoutCampaign => {
                spend(e, enqueued_at);
                remove(e, "campaign")
            }
            Malformed::BadCost => {
                spend(e, enqueued_at);
                e["cost"] = one_of(rng, [json!("-0.01"), json!("free"), json!(1e13), json!([])])
            }
            Malformed::BadSpendDate => {
                spend(e, enqueued_at);
                let future = (enqueued_at + Duration::days(400)).date_naive();
                e["date"] = one_of(
                    rng,
                    [
                        json!("2026-13-01"),
                        json!("1/12/2026"),
                        json!(future.to_string()),
                        json!(20261201),
                    ],
                )
            }
            Malformed::BadProperties => {
                e["properties"] = one_of(rng, [json!([1, 2]), json!("sku=1"), json!(5)])
            }
            Malformed::BadField => {
                let field = one_of(rng, ["browser", "campaign", "referrer"]);
                e[field] = json!(5);
            }
            Malformed::TextTooLong => {
                let len = limits.max_text_bytes + rng.random_range(1..100);
                e["campaign"] = json!("c".repeat(len));
            }
            Malformed::UrlTooLong => {
                let len = limits.max_url_bytes + rng.random_range(1..100);
                e["page_url"] = json!(format!("https://shop.example/search?q={}", "q".repeat(len)));
            }
            Malformed::NulCharacter => {
                e["browser"] = json!("Chrome\u{0}");
            }
            Malformed::TooLarge => {
                remove(e, "properties");
                let base = e.to_string().len();
                let pad = limits.max_event_bytes.saturating_sub(base) + rng.random_range(1..500);
                e["properties"] = json!({"blob": "b".repeat(pad)});
                return (event.to_string(), None);
            }
            Malformed::DuplicateField => {
                let body = event.to_string();
                let repeated = format!("{{\"event_type\":\"page_view\",{}", &body[1..]);
                return (repeated, None);
            }
        }
        let tenant = if self.keeps_tenant() { tenant } else { None };
        (event.to_string(), tenant)
    }
}

/// One of `values`, drawn evenly.
fn one_of<T, const N: usize>(rng: &mut StdRng, values: [T; N]) -> T {
    let i = rng.random_range(0..N);
    values.into_iter().nth(i).expect("i < N")
}

/// Makes `event` a valid `ad_spend` event of its tenant (a campaign's cost on the enqueue day),
/// for a kind to break one of its fields.
fn spend(event: &mut Value, enqueued_at: DateTime<Utc>) {
    event["event_type"] = json!(remarketable_core::event::AD_SPEND);
    if event["campaign"].as_str().is_none_or(str::is_empty) {
        event["campaign"] = json!("spring-sale");
    }
    event["cost"] = json!("12.50");
    event["currency"] = json!("EUR");
    event["date"] = json!(enqueued_at.date_naive().to_string());
}

fn remove(event: &mut Value, field: &str) {
    if let Some(map) = event.as_object_mut() {
        map.remove(field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::{Traffic, TrafficConfig};
    use rand::SeedableRng;
    use remarketable_core::event::parse_event;
    use remarketable_core::Settings;
    use std::collections::HashMap;

    fn now() -> DateTime<Utc> {
        "2026-11-26T10:20:30.456Z".parse().unwrap()
    }

    /// Valid events of every sort the generator makes: the first 200 (mostly page views and
    /// campaign entries) and every cart and purchase of the first 5000.
    fn bases() -> Vec<Value> {
        let mut traffic = Traffic::new(TrafficConfig::valid_only(3, 10));
        (0..5000)
            .map(|_| serde_json::from_str::<Value>(&traffic.next(now()).body).unwrap())
            .enumerate()
            .filter(|(i, e)| {
                *i < 200 || matches!(e["event_type"].as_str(), Some("purchase" | "add_to_cart"))
            })
            .map(|(_, e)| e)
            .collect()
    }

    /// Every kind, many times over, against the validator with `limits`: the reason code and
    /// the tenant of the dead letter must be the ones the kind claims.
    fn assert_kinds_agree_with_validator(limits: &EventLimits) {
        let bases = bases();
        assert!(bases.iter().any(|b| b["event_type"] == "purchase"));
        let mut rng = StdRng::seed_from_u64(11);
        for kind in Malformed::ALL {
            for base in &bases {
                let tenant = base["tenant_id"].as_i64();
                let (body, dead_letter_tenant) = kind.apply(base.clone(), now(), limits, &mut rng);
                assert!(
                    !body.contains(['\n', '\r']),
                    "{kind:?} is not one NDJSON line"
                );
                let verdict = parse_event(body.as_bytes(), now(), now(), limits);
                if kind == Malformed::UnknownTenant {
                    // Well formed; the ingest path finds the tenant is not registered.
                    let e = verdict.unwrap_or_else(|r| panic!("{kind:?}: {r:?} for {body}"));
                    assert!(e.tenant_id >= UNKNOWN_TENANT_BASE);
                    assert_eq!(dead_letter_tenant, Some(e.tenant_id));
                    continue;
                }
                let r = verdict.expect_err(&format!("{kind:?} must be rejected: {body}"));
                assert_eq!(
                    r.reason,
                    kind.reason(),
                    "{kind:?}: {} for {body}",
                    r.message
                );
                assert_eq!(
                    r.tenant_id, dead_letter_tenant,
                    "{kind:?}: tenant of {body}"
                );
                let readable = if kind.keeps_tenant() { tenant } else { None };
                assert_eq!(dead_letter_tenant, readable, "{kind:?}");
            }
        }
    }

    #[test]
    fn every_kind_gets_its_reason_from_the_validator_with_default_limits() {
        assert_kinds_agree_with_validator(&EventLimits::default());
    }

    #[test]
    fn every_kind_follows_configured_limits() {
        let map: HashMap<String, String> = [
            ("DATABASE_URL", "postgres://unused/db"),
            ("EVENT_MAX_BYTES", "4096"),
            ("EVENT_MAX_URL_BYTES", "300"),
            ("EVENT_MAX_TEXT_BYTES", "64"),
            ("EVENT_RETENTION_DAYS", "3"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let settings = Settings::from_map(&map).unwrap();
        assert_kinds_agree_with_validator(&settings.limits);
    }

    #[test]
    fn kinds_cover_every_validation_reason() {
        use std::collections::BTreeSet;
        let covered: BTreeSet<Reason> = Malformed::ALL.iter().map(|k| k.reason()).collect();
        // Reasons that only the database or a crash produce are not generated.
        let not_from_data = [
            Reason::NoPartition,
            Reason::DbRejected,
            Reason::InternalError,
        ];
        for reason in Reason::ALL {
            assert_eq!(
                covered.contains(&reason),
                !not_from_data.contains(&reason),
                "{reason}"
            );
        }
    }
}
