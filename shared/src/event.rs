//! Event contract v1: parsing and validation of one event body.
//!
//! [`parse_event`] never panics on any input bytes (a fuzz target in `fuzz/` checks this) and
//! answers either a [`ValidEvent`] ready to be written or a [`Rejection`] carrying a stable
//! [`Reason`]. Whether the tenant is registered is checked by the caller (it needs the cached
//! tenant set), through [`Rejection::unknown_tenant`].
//!
//! Identifiers given as strings (`device_id`, `session_id`) are stored as [`hash_id`] of the
//! string: the first 8 bytes of its SHA-256 digest read as a big-endian signed 64-bit integer.
//! Any language can reproduce the value.

use crate::json::{self, StrictValue};
use crate::reason::Reason;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use rust_decimal::prelude::*;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::error::Category;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fmt;

/// Limits applied to every event. The defaults are documented in the README.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLimits {
    /// Largest accepted event body, in bytes.
    pub max_event_bytes: usize,
    /// Longest `page_url` and `referrer`, in bytes.
    pub max_url_bytes: usize,
    /// Longest other text field (browser, campaign, source, medium, string ids), in bytes.
    pub max_text_bytes: usize,
    /// How far into the future `event_time` may lie (clock skew of trackers).
    pub future_skew: Duration,
    /// How far into the past `event_time` may lie.
    pub retention: Duration,
    /// How much of a `too_large` event's payload its dead letter keeps.
    pub max_dead_letter_payload_bytes: usize,
}

impl Default for EventLimits {
    fn default() -> Self {
        EventLimits {
            max_event_bytes: 32 * 1024,
            max_url_bytes: 2048,
            max_text_bytes: 256,
            future_skew: Duration::minutes(5),
            retention: Duration::days(30),
            max_dead_letter_payload_bytes: 64 * 1024,
        }
    }
}

/// Longest `event_type`, in bytes.
pub const MAX_EVENT_TYPE_BYTES: usize = 64;
/// Largest accepted revenue (exclusive); revenue is stored as `numeric(18,4)`.
pub const MAX_REVENUE: Decimal = Decimal::from_parts(1_316_134_912, 2_328, 0, false, 0); // 10^13
/// Revenue is rounded (half away from zero) to this many decimal places.
pub const REVENUE_SCALE: u32 = 4;

/// A validated event, in the shape of a row of `events`.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEvent {
    pub tenant_id: i64,
    pub event_type: String,
    pub device_id: i64,
    pub session_id: i64,
    pub event_time: DateTime<Utc>,
    pub country: Option<String>,
    pub browser: Option<String>,
    pub page_url: Option<String>,
    pub referrer: Option<String>,
    pub campaign: Option<String>,
    pub source: Option<String>,
    pub medium: Option<String>,
    pub revenue: Option<Decimal>,
    pub currency: Option<String>,
    /// The `properties` object merged with unknown top-level fields; `None` when both are absent.
    pub properties: Option<Value>,
    /// For an [`AD_SPEND`] event, the day and cost it reports (it is stored in `ad_spend`, not
    /// `events`; see [`crate::spend`]). `None` for every other event.
    pub spend: Option<SpendDay>,
}

/// The event type of an ad platform's cost report: one campaign's cost on one day.
pub const AD_SPEND: &str = "ad_spend";
/// Longest `campaign`, `source` and `medium` of an [`AD_SPEND`] event (the key of `ad_spend`),
/// in bytes, when `max_text_bytes` allows more.
pub const MAX_SPEND_KEY_TEXT_BYTES: usize = 512;

/// What an [`AD_SPEND`] event reports besides its campaign, source, medium and currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpendDay {
    /// The tenant's calendar day the cost was spent on.
    pub day: NaiveDate,
    /// Rounded like revenue: four decimal places, 0 ≤ cost < 10^13.
    pub cost: Decimal,
}

/// Why one event was not accepted, with the tenant when it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    /// Safe to show to the tenant: it names the field, never echoes large input.
    pub message: String,
    pub tenant_id: Option<i64>,
}

impl Rejection {
    fn new(reason: Reason, message: impl Into<String>) -> Self {
        Rejection {
            reason,
            message: message.into(),
            tenant_id: None,
        }
    }

    pub fn unknown_tenant(tenant_id: i64) -> Self {
        Rejection {
            reason: Reason::UnknownTenant,
            message: format!("tenant {tenant_id} is not registered"),
            tenant_id: Some(tenant_id),
        }
    }
}

/// An event body read in one pass: the contract's fields as JSON values, every other top-level
/// field kept aside for `properties`. Keys of the contract are matched without allocating.
#[derive(Default)]
struct Fields {
    tenant_id: Option<Value>,
    event_type: Option<Value>,
    device_id: Option<Value>,
    session_id: Option<Value>,
    event_time: Option<Value>,
    country: Option<Value>,
    browser: Option<Value>,
    page_url: Option<Value>,
    referrer: Option<Value>,
    campaign: Option<Value>,
    source: Option<Value>,
    medium: Option<Value>,
    revenue: Option<Value>,
    currency: Option<Value>,
    properties: Option<Value>,
    unknown: Map<String, Value>,
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut f = Fields::default();
        // A repeated key is refused (see `crate::json`), here and in every nested object.
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let slot = match key.as_ref() {
                "tenant_id" => &mut f.tenant_id,
                "event_type" => &mut f.event_type,
                "device_id" => &mut f.device_id,
                "session_id" => &mut f.session_id,
                "event_time" => &mut f.event_time,
                "country" => &mut f.country,
                "browser" => &mut f.browser,
                "page_url" => &mut f.page_url,
                "referrer" => &mut f.referrer,
                "campaign" => &mut f.campaign,
                "source" => &mut f.source,
                "medium" => &mut f.medium,
                "revenue" => &mut f.revenue,
                "currency" => &mut f.currency,
                "properties" => &mut f.properties,
                _ => {
                    let value = map.next_value_seed(StrictValue)?;
                    if f.unknown.insert(key.clone().into_owned(), value).is_some() {
                        return Err(json::duplicate_key(&key));
                    }
                    continue;
                }
            };
            if slot.is_some() {
                return Err(json::duplicate_key(&key));
            }
            *slot = Some(map.next_value_seed(StrictValue)?);
        }
        Ok(f)
    }
}

/// Reads an object key, borrowed from the input when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// Stable 64-bit value of a string identifier: the first 8 bytes of SHA-256, big-endian, signed.
pub fn hash_id(s: &str) -> i64 {
    let digest = Sha256::digest(s.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// Reads only the tenant of a body, for attributing duplicates in the ledger without validating.
pub fn peek_tenant_id(body: &[u8]) -> Option<i64> {
    let fields: Fields = serde_json::from_slice(body).ok()?;
    tenant_id(fields.tenant_id.as_ref()).ok()
}

/// Reads only the `event_time` a body states (`None` when absent or unreadable), as validation
/// reads it, for a bulk import that must create the event's partition before writing it.
pub fn peek_event_time(body: &[u8]) -> Option<DateTime<Utc>> {
    #[derive(Deserialize)]
    struct Time<'a> {
        #[serde(borrow)]
        event_time: Option<std::borrow::Cow<'a, str>>,
    }
    let time: Time = serde_json::from_slice(body).ok()?;
    DateTime::parse_from_rfc3339(&time.event_time?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Parses and validates one event body.
///
/// `enqueued_at` is the hub's enqueue time, used when `event_time` is absent; `now` is the wall
/// clock against which skew and retention are judged.
pub fn parse_event(
    body: &[u8],
    enqueued_at: DateTime<Utc>,
    now: DateTime<Utc>,
    limits: &EventLimits,
) -> Result<ValidEvent, Rejection> {
    if body.len() > limits.max_event_bytes {
        return Err(Rejection::new(
            Reason::TooLarge,
            format!(
                "event is {} bytes, the limit is {}",
                body.len(),
                limits.max_event_bytes
            ),
        ));
    }
    let fields: Fields = serde_json::from_slice(body).map_err(|e| match e.classify() {
        Category::Data if json::is_duplicate_key(&e) => Rejection::new(
            Reason::DuplicateField,
            format!("an object repeats a key: {e}"),
        ),
        // Well-formed JSON of another type: the other data error the visitor raises.
        Category::Data => Rejection::new(Reason::NotAnObject, "an event must be a JSON object"),
        _ => Rejection::new(Reason::InvalidJson, format!("not valid JSON: {e}")),
    })?;
    let tenant_id = tenant_id(fields.tenant_id.as_ref())?;
    validate_fields(fields, tenant_id, enqueued_at, now, limits).map_err(|mut r| {
        r.tenant_id = Some(tenant_id);
        r
    })
}

fn tenant_id(value: Option<&Value>) -> Result<i64, Rejection> {
    match value {
        None | Some(Value::Null) => Err(Rejection::new(
            Reason::MissingTenantId,
            "tenant_id is required",
        )),
        Some(v) => v.as_i64().filter(|id| *id > 0).ok_or_else(|| {
            Rejection::new(
                Reason::BadTenantId,
                "tenant_id must be an integer greater than 0",
            )
        }),
    }
}

fn validate_fields(
    mut f: Fields,
    tenant_id: i64,
    enqueued_at: DateTime<Utc>,
    now: DateTime<Utc>,
    limits: &EventLimits,
) -> Result<ValidEvent, Rejection> {
    let event_type = event_type(f.event_type.take())?;
    if event_type == AD_SPEND {
        return validate_spend(f, tenant_id, enqueued_at, now, limits);
    }
    Ok(ValidEvent {
        tenant_id,
        event_type,
        device_id: identifier(
            f.device_id.as_ref(),
            "device_id",
            Reason::MissingDeviceId,
            Reason::BadDeviceId,
            limits,
        )?,
        session_id: identifier(
            f.session_id.as_ref(),
            "session_id",
            Reason::MissingSessionId,
            Reason::BadSessionId,
            limits,
        )?,
        event_time: event_time(f.event_time.as_ref(), enqueued_at, now, limits)?,
        country: country(f.country)?,
        browser: text(f.browser, "browser", limits.max_text_bytes)?,
        page_url: text(f.page_url, "page_url", limits.max_url_bytes)?,
        referrer: text(f.referrer, "referrer", limits.max_url_bytes)?,
        campaign: text(f.campaign, "campaign", limits.max_text_bytes)?,
        source: text(f.source, "source", limits.max_text_bytes)?,
        medium: text(f.medium, "medium", limits.max_text_bytes)?,
        revenue: revenue(f.revenue.as_ref())?,
        currency: currency(f.currency)?,
        properties: properties(f.properties, f.unknown)?,
        spend: None,
    }
    .with_utm_tags(limits))
}

/// An [`AD_SPEND`] event: `campaign`, `cost`, `currency` and `date` (`YYYY-MM-DD`) required,
/// `source` and `medium` optional; `event_time` (when the platform reported the figure; the
/// enqueue time when absent) orders corrections. Devices, sessions and the other fields mean
/// nothing for a cost and are not read.
fn validate_spend(
    mut f: Fields,
    tenant_id: i64,
    enqueued_at: DateTime<Utc>,
    now: DateTime<Utc>,
    limits: &EventLimits,
) -> Result<ValidEvent, Rejection> {
    // The three are `ad_spend`'s key: an index entry must stay well under PostgreSQL's
    // 2,704 bytes whatever EVENT_MAX_TEXT_BYTES allows.
    let max = limits.max_text_bytes.min(MAX_SPEND_KEY_TEXT_BYTES);
    let campaign = text(f.campaign, "campaign", max)?
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            Rejection::new(
                Reason::MissingCampaign,
                "an ad_spend event needs a campaign",
            )
        })?;
    let cost = amount(f.unknown.get("cost"), Reason::BadCost, "cost")?
        .ok_or_else(|| Rejection::new(Reason::BadCost, "an ad_spend event needs a cost"))?;
    let currency = currency(f.currency)?
        .ok_or_else(|| Rejection::new(Reason::BadCurrency, "an ad_spend event needs a currency"))?;
    let day = spend_day(f.unknown.remove("date"), now, limits)?;
    Ok(ValidEvent {
        tenant_id,
        event_type: AD_SPEND.to_owned(),
        device_id: 0,
        session_id: 0,
        event_time: event_time(f.event_time.as_ref(), enqueued_at, now, limits)?,
        country: None,
        browser: None,
        page_url: None,
        referrer: None,
        campaign: Some(campaign),
        source: text(f.source, "source", max)?,
        medium: text(f.medium, "medium", max)?,
        revenue: None,
        currency: Some(currency),
        properties: None,
        spend: Some(SpendDay { day, cost }),
    })
}

/// The `date` of a spend: a calendar day no older than the retention and no later than
/// tomorrow (UTC; a tenant's day may be a day ahead or behind of UTC's).
pub fn spend_day(
    value: Option<Value>,
    now: DateTime<Utc>,
    limits: &EventLimits,
) -> Result<NaiveDate, Rejection> {
    let bad = |m: String| Rejection::new(Reason::BadSpendDate, m);
    let day = match value {
        Some(Value::String(s)) => NaiveDate::parse_from_str(&s, "%Y-%m-%d")
            .ok()
            .filter(|_| s.len() == 10)
            .ok_or_else(|| bad("date must be a day as YYYY-MM-DD".into()))?,
        None | Some(Value::Null) => return Err(bad("an ad_spend event needs a date".into())),
        Some(_) => return Err(bad("date must be a string YYYY-MM-DD".into())),
    };
    let latest = now.date_naive() + Duration::days(1);
    let earliest = now
        .checked_sub_signed(limits.retention)
        .map(|t| t.date_naive() - Duration::days(1));
    if day > latest {
        return Err(bad(format!("date {day} is in the future")));
    }
    if earliest.is_some_and(|e| day < e) {
        return Err(bad(format!(
            "date {day} is older than the retention of {} days",
            limits.retention.num_days()
        )));
    }
    Ok(day)
}

impl ValidEvent {
    /// Each of `campaign`, `source` and `medium` that the event leaves absent is taken from the
    /// `utm_campaign`, `utm_source` and `utm_medium` query parameter of `page_url` (decoded,
    /// `+` as space, the first occurrence). A field the event sets is never replaced. A tag
    /// that is empty, does not decode, holds U+0000 or is longer than the text limit is ignored
    /// (the field stays absent): a URL parameter never rejects an event.
    fn with_utm_tags(mut self, limits: &EventLimits) -> Self {
        if let Some(url) = self.page_url.as_deref() {
            let tag = |name: &str| {
                crate::url::query_param(url, name).filter(|v| {
                    !v.is_empty() && !v.contains('\0') && v.len() <= limits.max_text_bytes
                })
            };
            let campaign = self
                .campaign
                .is_none()
                .then(|| tag("utm_campaign"))
                .flatten();
            let source = self.source.is_none().then(|| tag("utm_source")).flatten();
            let medium = self.medium.is_none().then(|| tag("utm_medium")).flatten();
            self.campaign = self.campaign.or(campaign);
            self.source = self.source.or(source);
            self.medium = self.medium.or(medium);
        }
        self
    }
}

/// Whether `s` is a well-formed `event_type`: `[a-z][a-z0-9_]*`, at most
/// [`MAX_EVENT_TYPE_BYTES`] bytes.
pub fn is_event_type(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_EVENT_TYPE_BYTES
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

fn event_type(value: Option<Value>) -> Result<String, Rejection> {
    let s = match value {
        None | Some(Value::Null) => {
            return Err(Rejection::new(
                Reason::MissingEventType,
                "event_type is required",
            ))
        }
        Some(Value::String(s)) => s,
        Some(_) => {
            return Err(Rejection::new(
                Reason::BadEventType,
                "event_type must be a string",
            ))
        }
    };
    if !is_event_type(&s) {
        return Err(Rejection::new(
            Reason::BadEventType,
            format!(
                "event_type must match [a-z][a-z0-9_]* and be at most {MAX_EVENT_TYPE_BYTES} bytes"
            ),
        ));
    }
    Ok(s)
}

fn identifier(
    value: Option<&Value>,
    field: &str,
    missing: Reason,
    bad: Reason,
    limits: &EventLimits,
) -> Result<i64, Rejection> {
    match value {
        None | Some(Value::Null) => Err(Rejection::new(missing, format!("{field} is required"))),
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| {
            Rejection::new(bad, format!("{field} must be a 64-bit integer or a string"))
        }),
        Some(Value::String(s)) if s.is_empty() => {
            Err(Rejection::new(bad, format!("{field} must not be empty")))
        }
        Some(Value::String(s)) if s.len() > limits.max_text_bytes => Err(Rejection::new(
            bad,
            format!("{field} is longer than {} bytes", limits.max_text_bytes),
        )),
        Some(Value::String(s)) => Ok(hash_id(s)),
        Some(_) => Err(Rejection::new(
            bad,
            format!("{field} must be a 64-bit integer or a string"),
        )),
    }
}

fn event_time(
    value: Option<&Value>,
    enqueued_at: DateTime<Utc>,
    now: DateTime<Utc>,
    limits: &EventLimits,
) -> Result<DateTime<Utc>, Rejection> {
    let t = match value {
        None | Some(Value::Null) => enqueued_at,
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map_err(|_| {
                Rejection::new(
                    Reason::BadEventTime,
                    "event_time must be an RFC 3339 timestamp with an offset",
                )
            })?
            .with_timezone(&Utc),
        Some(_) => {
            return Err(Rejection::new(
                Reason::BadEventTime,
                "event_time must be an RFC 3339 string",
            ))
        }
    };
    // Checked arithmetic: `now` plus a huge configured skew must not overflow.
    if now
        .checked_add_signed(limits.future_skew)
        .is_some_and(|max| t > max)
    {
        return Err(Rejection::new(
            Reason::FutureEventTime,
            format!(
                "event_time is more than {} s in the future",
                limits.future_skew.num_seconds()
            ),
        ));
    }
    if now
        .checked_sub_signed(limits.retention)
        .is_some_and(|min| t < min)
    {
        return Err(Rejection::new(
            Reason::OutsideRetention,
            format!(
                "event_time is older than the retention of {} days",
                limits.retention.num_days()
            ),
        ));
    }
    Ok(t)
}

/// An optional string field, moved out of its value.
fn optional_string(value: Option<Value>, field: &str) -> Result<Option<String>, Rejection> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            if s.contains('\0') {
                return Err(Rejection::new(
                    Reason::InvalidCharacters,
                    format!("{field} contains U+0000"),
                ));
            }
            Ok(Some(s))
        }
        Some(_) => Err(Rejection::new(
            Reason::BadField,
            format!("{field} must be a string"),
        )),
    }
}

fn text(value: Option<Value>, field: &str, max: usize) -> Result<Option<String>, Rejection> {
    let s = optional_string(value, field)?;
    if s.as_ref().is_some_and(|s| s.len() > max) {
        return Err(Rejection::new(
            Reason::FieldTooLong,
            format!("{field} is longer than {max} bytes"),
        ));
    }
    Ok(s)
}

fn country(value: Option<Value>) -> Result<Option<String>, Rejection> {
    let bad = || {
        Rejection::new(
            Reason::BadCountry,
            "country must be an ISO 3166-1 alpha-2 code",
        )
    };
    let Some(mut code) = optional_string(value, "country").map_err(|_| bad())? else {
        return Ok(None);
    };
    code.make_ascii_uppercase();
    if code.len() == 2 && is_iso_country(&code) {
        Ok(Some(code))
    } else {
        Err(bad())
    }
}

fn revenue(value: Option<&Value>) -> Result<Option<Decimal>, Rejection> {
    amount(value, Reason::BadRevenue, "revenue")
}

/// A sum of money (`revenue`, a spend's `cost`): a JSON number or a decimal string, rounded
/// half away from zero to [`REVENUE_SCALE`] places, 0 ≤ amount < 10^13 (`numeric(18,4)`).
pub fn amount(
    value: Option<&Value>,
    reason: Reason,
    field: &str,
) -> Result<Option<Decimal>, Rejection> {
    let bad = || {
        Rejection::new(
            reason,
            format!("{field} must be a decimal number >= 0 and < 10^13"),
        )
    };
    let number;
    let text = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => {
            number = n.to_string();
            number.as_str()
        }
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(bad()),
    };
    let parsed = Decimal::from_str_exact(text)
        .or_else(|_| Decimal::from_scientific(text))
        .map_err(|_| bad())?;
    let rounded =
        parsed.round_dp_with_strategy(REVENUE_SCALE, RoundingStrategy::MidpointAwayFromZero);
    if rounded.is_sign_negative() && !rounded.is_zero() || rounded >= MAX_REVENUE {
        return Err(bad());
    }
    // -0 is stored as 0.
    Ok(Some(rounded.abs()))
}

fn currency(value: Option<Value>) -> Result<Option<String>, Rejection> {
    let bad = || {
        Rejection::new(
            Reason::BadCurrency,
            "currency must be three letters (ISO 4217)",
        )
    };
    let Some(mut code) = optional_string(value, "currency").map_err(|_| bad())? else {
        return Ok(None);
    };
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_alphabetic()) {
        code.make_ascii_uppercase();
        Ok(Some(code))
    } else {
        Err(bad())
    }
}

/// `properties` merged with unknown top-level fields. A top-level field whose name is already a
/// key of `properties` is kept under `"$top.<name>"` (prefixed again while that is taken too),
/// so nothing is dropped.
fn properties(
    explicit: Option<Value>,
    unknown: Map<String, Value>,
) -> Result<Option<Value>, Rejection> {
    let mut merged = match explicit {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(Rejection::new(
                Reason::BadProperties,
                "properties must be a JSON object",
            ))
        }
    };
    for (key, value) in unknown {
        let mut name = key;
        while merged.contains_key(&name) {
            name = format!("$top.{name}");
        }
        merged.insert(name, value);
    }
    if merged.is_empty() {
        return Ok(None);
    }
    let merged = Value::Object(merged);
    if contains_nul(&merged) {
        return Err(Rejection::new(
            Reason::InvalidCharacters,
            "properties contain U+0000",
        ));
    }
    Ok(Some(merged))
}

/// PostgreSQL's jsonb cannot hold U+0000 in keys or strings. Iterative, so deep input cannot
/// exhaust the stack (serde_json already caps nesting at 128).
fn contains_nul(value: &Value) -> bool {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) if s.contains('\0') => return true,
            Value::Array(items) => stack.extend(items),
            Value::Object(m) => {
                if m.keys().any(|k| k.contains('\0')) {
                    return true;
                }
                stack.extend(m.values());
            }
            _ => {}
        }
    }
    false
}

/// ISO 3166-1 alpha-2 codes (officially assigned) plus XK (Kosovo, in common use), sorted for
/// binary search.
const ISO_COUNTRIES: [&str; 250] = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "XK", "YE", "YT", "ZA", "ZM", "ZW",
];

fn is_iso_country(code: &str) -> bool {
    ISO_COUNTRIES.binary_search(&code).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        "2026-11-26T10:00:00Z".parse().unwrap()
    }

    fn parse(v: Value) -> Result<ValidEvent, Rejection> {
        parse_event(
            v.to_string().as_bytes(),
            now(),
            now(),
            &EventLimits::default(),
        )
    }

    fn reason(v: Value) -> Reason {
        parse(v).unwrap_err().reason
    }

    fn base() -> Value {
        json!({"tenant_id": 7, "event_type": "page_view", "device_id": 1, "session_id": "s-1"})
    }

    fn with(field: &str, value: Value) -> Value {
        let mut v = base();
        v[field] = value;
        v
    }

    #[test]
    fn full_event_keeps_every_field() {
        let e = parse(json!({
            "tenant_id": 7, "event_type": "purchase", "device_id": "dev-9", "session_id": 42,
            "event_time": "2026-11-26T09:30:00.250+01:00", "country": "de", "browser": "Firefox",
            "page_url": "https://shop.example/checkout", "referrer": "https://search.example/",
            "campaign": "black-friday", "source": "newsletter", "medium": "email",
            "revenue": 19.99, "currency": "eur", "properties": {"sku": "A-1"}, "coupon": "XMAS"
        }))
        .unwrap();
        assert_eq!(e.tenant_id, 7);
        assert_eq!(e.device_id, hash_id("dev-9"));
        assert_eq!(e.session_id, 42);
        assert_eq!(
            e.event_time,
            "2026-11-26T08:30:00.250Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(e.country.as_deref(), Some("DE"));
        assert_eq!(e.revenue, Some(Decimal::new(1999, 2)));
        assert_eq!(e.currency.as_deref(), Some("EUR"));
        assert_eq!(e.properties, Some(json!({"sku": "A-1", "coupon": "XMAS"})));
    }

    #[test]
    fn utm_tags_fill_absent_campaign_fields() {
        let url = "https://shop.example/p/1?utm_campaign=black+friday&utm_source=news%20letter&utm_medium=email";
        let e = parse(with("page_url", json!(url))).unwrap();
        assert_eq!(e.campaign.as_deref(), Some("black friday"));
        assert_eq!(e.source.as_deref(), Some("news letter"));
        assert_eq!(e.medium.as_deref(), Some("email"));

        // Fields the event sets win, each on its own.
        let mut v = with("page_url", json!(url));
        v["campaign"] = json!("spring");
        let e = parse(v).unwrap();
        assert_eq!(e.campaign.as_deref(), Some("spring"));
        assert_eq!(e.source.as_deref(), Some("news letter"));

        // Over-long, empty, undecodable and NUL tags are ignored, never a rejection.
        let long = "x".repeat(257);
        let url = format!("/p?utm_campaign={long}&utm_source=&utm_medium=%zz&utm_medium=cpc#utm_x");
        let e = parse(with("page_url", json!(url))).unwrap();
        assert_eq!((e.campaign, e.source, e.medium), (None, None, None));
        let e = parse(with("page_url", json!("/p?utm_campaign=a%00b"))).unwrap();
        assert_eq!(e.campaign, None);
        let ok = "y".repeat(256);
        let e = parse(with("page_url", json!(format!("/p?utm_campaign={ok}")))).unwrap();
        assert_eq!(e.campaign.as_deref(), Some(ok.as_str()));

        // No page URL, or no tags: nothing changes.
        let e = parse(base()).unwrap();
        assert_eq!((e.campaign, e.source, e.medium), (None, None, None));
    }

    #[test]
    fn country_list_is_sorted_and_complete() {
        assert!(ISO_COUNTRIES.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(ISO_COUNTRIES.len(), 250);
        for code in ["AD", "DE", "US", "ZW", "XK"] {
            assert!(is_iso_country(code), "{code}");
        }
        for code in ["XX", "ZZ", "EU", "UK", "de"] {
            assert!(!is_iso_country(code), "{code}");
        }
    }

    #[test]
    fn hash_is_stable_and_documented() {
        // sha256("abc") = ba7816bf 8f01cfea ...; first 8 bytes as big-endian i64.
        assert_eq!(
            hash_id("abc"),
            -5_010_229_573_455_851_542,
            "the value in the README"
        );
        assert_eq!(
            hash_id("abc"),
            i64::from_be_bytes([0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea])
        );
    }

    #[test]
    fn event_time_defaults_to_enqueued_time() {
        assert_eq!(parse(base()).unwrap().event_time, now());
    }

    #[test]
    fn each_violation_has_its_reason() {
        let cases = [
            (json!([1]), Reason::NotAnObject),
            (
                json!({"event_type": "x", "device_id": 1, "session_id": 1}),
                Reason::MissingTenantId,
            ),
            (with("tenant_id", json!(0)), Reason::BadTenantId),
            (with("tenant_id", json!("7")), Reason::BadTenantId),
            (with("tenant_id", json!(1.5)), Reason::BadTenantId),
            (with("event_type", Value::Null), Reason::MissingEventType),
            (with("event_type", json!("Page View")), Reason::BadEventType),
            (with("device_id", Value::Null), Reason::MissingDeviceId),
            (with("device_id", json!(1.5)), Reason::BadDeviceId),
            (with("device_id", json!("")), Reason::BadDeviceId),
            (with("session_id", json!(true)), Reason::BadSessionId),
            (with("event_time", json!("yesterday")), Reason::BadEventTime),
            (
                with("event_time", json!("2026-11-26T10:06:00Z")),
                Reason::FutureEventTime,
            ),
            (
                with("event_time", json!("2026-10-26T09:59:59Z")),
                Reason::OutsideRetention,
            ),
            (with("country", json!("ZZ")), Reason::BadCountry),
            (with("country", json!("DEU")), Reason::BadCountry),
            (with("revenue", json!(-1)), Reason::BadRevenue),
            (with("revenue", json!("ten")), Reason::BadRevenue),
            (with("revenue", json!(1e13)), Reason::BadRevenue),
            (with("currency", json!("EURO")), Reason::BadCurrency),
            (with("properties", json!([1])), Reason::BadProperties),
            (with("browser", json!(5)), Reason::BadField),
            (
                with("campaign", json!("x".repeat(257))),
                Reason::FieldTooLong,
            ),
            (with("browser", json!("a\u{0}b")), Reason::InvalidCharacters),
            (
                with("extra", json!({"k": "a\u{0}"})),
                Reason::InvalidCharacters,
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(reason(input.clone()), expected, "input {input}");
        }
    }

    #[test]
    fn malformed_bytes_are_invalid_json() {
        for body in [&b"{"[..], b"", b"\xff\xfe", b"{\"a\":\"\\ud800\"}", b"nul"] {
            let r = parse_event(body, now(), now(), &EventLimits::default()).unwrap_err();
            assert_eq!(r.reason, Reason::InvalidJson);
        }
    }

    #[test]
    fn too_large_is_checked_before_parsing() {
        let limits = EventLimits {
            max_event_bytes: 10,
            ..EventLimits::default()
        };
        let r = parse_event(base().to_string().as_bytes(), now(), now(), &limits).unwrap_err();
        assert_eq!(r.reason, Reason::TooLarge);
    }

    #[test]
    fn rejection_carries_tenant_when_readable() {
        assert_eq!(
            parse(with("country", json!("ZZ"))).unwrap_err().tenant_id,
            Some(7)
        );
    }

    #[test]
    fn colliding_top_level_field_is_kept() {
        let e = parse(
            json!({"tenant_id": 7, "event_type": "x", "device_id": 1, "session_id": 1,
            "sku": "top", "properties": {"sku": "inner"}}),
        )
        .unwrap();
        assert_eq!(
            e.properties,
            Some(json!({"sku": "inner", "$top.sku": "top"}))
        );
        // A top-level "$top.sku" and "sku" next to properties.sku: all three are kept.
        let e = parse(
            json!({"tenant_id": 7, "event_type": "x", "device_id": 1, "session_id": 1,
            "sku": "top", "$top.sku": "odd", "properties": {"sku": "inner"}}),
        )
        .unwrap();
        let props = e.properties.unwrap();
        assert_eq!(props.as_object().unwrap().len(), 3, "{props}");
        assert_eq!(props["sku"], "inner");
    }

    #[test]
    fn repeated_keys_are_their_own_reason() {
        let limits = EventLimits::default();
        for body in [
            r#"{"tenant_id":7,"event_type":"x","device_id":1,"session_id":1,"event_type":"y"}"#,
            r#"{"tenant_id":7,"event_type":"x","device_id":1,"session_id":1,"sku":1,"sku":2}"#,
            r#"{"tenant_id":7,"event_type":"x","device_id":1,"session_id":1,"properties":{"a":1,"a":1}}"#,
        ] {
            let r = parse_event(body.as_bytes(), now(), now(), &limits).unwrap_err();
            assert_eq!(r.reason, Reason::DuplicateField, "{body}");
        }
    }

    #[test]
    fn ad_spend_reports_a_day_and_a_cost_without_device_or_session() {
        let spend = json!({"tenant_id": 7, "event_type": "ad_spend", "campaign": "xmas",
                           "source": "google", "cost": "120.50", "currency": "usd",
                           "date": "2026-11-25", "event_time": "2026-11-26T09:00:00Z"});
        let e = parse(spend.clone()).unwrap();
        assert_eq!(
            e.spend,
            Some(SpendDay {
                day: NaiveDate::from_ymd_opt(2026, 11, 25).unwrap(),
                cost: Decimal::new(12050, 2)
            })
        );
        assert_eq!(e.currency.as_deref(), Some("USD"));
        assert_eq!((e.medium, e.properties), (None, None));
        assert_eq!(
            e.event_time,
            "2026-11-26T09:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        // Other events keep `cost` and `date` as properties.
        let other = parse(with("cost", json!(3))).unwrap();
        assert_eq!(
            (other.spend, other.properties),
            (None, Some(json!({"cost": 3})))
        );
        let without = |field: &str| {
            let mut v = spend.clone();
            v.as_object_mut().unwrap().remove(field);
            parse(v).unwrap_err().reason
        };
        assert_eq!(without("campaign"), Reason::MissingCampaign);
        assert_eq!(without("cost"), Reason::BadCost);
        assert_eq!(without("currency"), Reason::BadCurrency);
        assert_eq!(without("date"), Reason::BadSpendDate);
        let mut old = spend.clone();
        old["date"] = json!("2026-09-01");
        assert_eq!(parse(old).unwrap_err().reason, Reason::BadSpendDate);
        let mut loose = spend.clone();
        loose["date"] = json!("2026-11-5");
        assert_eq!(parse(loose).unwrap_err().reason, Reason::BadSpendDate);
        // The key stays within an index entry even where longer texts are allowed.
        let roomy = EventLimits {
            max_text_bytes: 4096,
            ..EventLimits::default()
        };
        let mut long = spend;
        long["campaign"] = json!("c".repeat(MAX_SPEND_KEY_TEXT_BYTES + 1));
        let refused = parse_event(long.to_string().as_bytes(), now(), now(), &roomy);
        assert_eq!(refused.unwrap_err().reason, Reason::FieldTooLong);
    }

    #[test]
    fn revenue_rounds_to_four_places() {
        let e = parse(with("revenue", json!("0.30000000000000004"))).unwrap();
        assert_eq!(e.revenue, Some(Decimal::new(3000, 4)));
        let e = parse(with("revenue", json!(1.5e2))).unwrap();
        assert_eq!(e.revenue, Some(Decimal::new(150, 0)));
    }

    #[test]
    fn deep_nesting_is_rejected_not_overflowed() {
        let deep = format!(
            "{{\"tenant_id\":1,\"x\":{}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let limits = EventLimits {
            max_event_bytes: 1 << 20,
            ..EventLimits::default()
        };
        let r = parse_event(deep.as_bytes(), now(), now(), &limits).unwrap_err();
        assert_eq!(r.reason, Reason::InvalidJson);
    }
}
