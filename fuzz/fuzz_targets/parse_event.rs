//! Fuzz target: `parse_event` and `peek_tenant_id` must never panic, and every accepted event must
//! satisfy the contract that the rest of the ingest path (and PostgreSQL) relies on.
//!
//! Each input is parsed twice: with the default limits, and with small limits derived from the
//! first bytes of the input, so that the size, length and time-window checks are reached as well.

#![no_main]

use chrono::{DateTime, Duration, TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use remarketable_core::event::{
    parse_event, peek_tenant_id, EventLimits, Rejection, ValidEvent, MAX_EVENT_TYPE_BYTES,
    MAX_REVENUE, REVENUE_SCALE,
};

/// Longest rejection message we accept: messages name the field and never echo the input.
const MAX_MESSAGE_BYTES: usize = 256;

fuzz_target!(|data: &[u8]| {
    let now = Utc
        .with_ymd_and_hms(2026, 11, 26, 10, 0, 0)
        .single()
        .expect("fixed timestamp is valid");
    let enqueued_at = now;
    let peeked = peek_tenant_id(data);
    if let Some(id) = peeked {
        assert!(id > 0, "peek_tenant_id answered {id}");
    }

    let defaults = EventLimits::default();
    let default_result = parse_event(data, enqueued_at, now, &defaults);
    check(data, &default_result, peeked, now, &defaults);

    let small = derived_limits(data);
    let small_result = parse_event(data, enqueued_at, now, &small);
    check(data, &small_result, peeked, now, &small);

    // Limits are monotone: what passes tighter limits also passes the defaults, unchanged.
    if no_looser(&small, &defaults) {
        if let Ok(event) = &small_result {
            match &default_result {
                Ok(default_event) => assert_eq!(event, default_event, "results differ by limits"),
                Err(r) => panic!("accepted under tighter limits, rejected under defaults: {r:?}"),
            }
        }
    }
});

/// Small limits taken from the first four bytes (missing bytes read as 0).
fn derived_limits(data: &[u8]) -> EventLimits {
    let b = |i: usize| data.get(i).copied().unwrap_or(0);
    let (b0, b1, b2, b3) = (b(0), b(1), b(2), b(3));
    EventLimits {
        // Around the body's own length, so that both sides of the size check are reached.
        max_event_bytes: (data.len() + 1).saturating_sub(usize::from(b0 % 3)),
        max_url_bytes: usize::from(b1 % 64),
        max_text_bytes: usize::from(b2 % 32),
        // Now and then the extreme values, which the time-window check must survive.
        future_skew: match b3 & 0x0f {
            0x0f => Duration::MAX,
            n => Duration::seconds(i64::from(n) * 20),
        },
        retention: match b3 >> 4 {
            0x0f => Duration::MAX,
            n => Duration::days(i64::from(n) * 2),
        },
    }
}

/// Whether every limit of `a` is at most as permissive as that of `b`.
fn no_looser(a: &EventLimits, b: &EventLimits) -> bool {
    a.max_event_bytes <= b.max_event_bytes
        && a.max_url_bytes <= b.max_url_bytes
        && a.max_text_bytes <= b.max_text_bytes
        && a.future_skew <= b.future_skew
        && a.retention <= b.retention
}

fn check(
    data: &[u8],
    result: &Result<ValidEvent, Rejection>,
    peeked: Option<i64>,
    now: DateTime<Utc>,
    limits: &EventLimits,
) {
    match result {
        Ok(event) => check_event(data, event, peeked, now, limits),
        Err(rejection) => {
            assert!(!rejection.message.is_empty(), "empty message: {rejection:?}");
            assert!(
                rejection.message.len() <= MAX_MESSAGE_BYTES,
                "message of {} bytes: {rejection:?}",
                rejection.message.len()
            );
            if let Some(id) = rejection.tenant_id {
                assert!(id > 0, "rejection names tenant {id}");
                assert_eq!(peeked, Some(id), "peek_tenant_id disagrees with the rejection");
            }
        }
    }
}

fn check_event(
    data: &[u8],
    e: &ValidEvent,
    peeked: Option<i64>,
    now: DateTime<Utc>,
    limits: &EventLimits,
) {
    assert!(data.len() <= limits.max_event_bytes, "body over the size limit accepted");

    assert!(e.tenant_id > 0, "tenant_id {} accepted", e.tenant_id);
    assert_eq!(peeked, Some(e.tenant_id), "peek_tenant_id disagrees with parse_event");

    let t = e.event_type.as_bytes();
    assert!(
        !t.is_empty()
            && t.len() <= MAX_EVENT_TYPE_BYTES
            && t[0].is_ascii_lowercase()
            && t.iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_'),
        "event_type {:?} accepted",
        e.event_type
    );

    if let Some(c) = &e.country {
        assert!(
            c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()),
            "country {c:?} accepted"
        );
    }
    if let Some(c) = &e.currency {
        assert!(
            c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()),
            "currency {c:?} accepted"
        );
    }
    if let Some(r) = &e.revenue {
        assert!(!r.is_sign_negative(), "revenue {r} accepted");
        assert!(*r < MAX_REVENUE, "revenue {r} accepted");
        assert!(r.scale() <= REVENUE_SCALE, "revenue {r} has scale {}", r.scale());
    }

    // Time window, where its bounds are representable.
    if let Some(max) = now.checked_add_signed(limits.future_skew) {
        assert!(e.event_time <= max, "event_time {} beyond skew", e.event_time);
    }
    if let Some(min) = now.checked_sub_signed(limits.retention) {
        assert!(e.event_time >= min, "event_time {} before retention", e.event_time);
    }

    for (name, value, max) in [
        ("browser", &e.browser, limits.max_text_bytes),
        ("page_url", &e.page_url, limits.max_url_bytes),
        ("referrer", &e.referrer, limits.max_url_bytes),
        ("campaign", &e.campaign, limits.max_text_bytes),
        ("source", &e.source, limits.max_text_bytes),
        ("medium", &e.medium, limits.max_text_bytes),
    ] {
        if let Some(s) = value {
            assert!(s.len() <= max, "{name} of {} bytes accepted (limit {max})", s.len());
        }
    }

    // PostgreSQL text and jsonb cannot hold U+0000 anywhere.
    let strings = [
        Some(&e.event_type),
        e.country.as_ref(),
        e.browser.as_ref(),
        e.page_url.as_ref(),
        e.referrer.as_ref(),
        e.campaign.as_ref(),
        e.source.as_ref(),
        e.medium.as_ref(),
        e.currency.as_ref(),
    ];
    for s in strings.into_iter().flatten() {
        assert!(!s.contains('\0'), "string field {s:?} contains U+0000");
    }
    if let Some(p) = &e.properties {
        let map = p.as_object().expect("properties is an object");
        assert!(!map.is_empty(), "empty properties kept instead of None");
        let mut stack = vec![p];
        while let Some(v) = stack.pop() {
            if let Some(s) = v.as_str() {
                assert!(!s.contains('\0'), "properties string contains U+0000");
            } else if let Some(items) = v.as_array() {
                stack.extend(items);
            } else if let Some(m) = v.as_object() {
                for (k, item) in m {
                    assert!(!k.contains('\0'), "properties key contains U+0000");
                    stack.push(item);
                }
            }
        }
    }
}
