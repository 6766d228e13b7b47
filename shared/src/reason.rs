//! Stable reason codes for events that are not stored.
//!
//! The codes are part of the public contract: they are written to `dead_letters.reason`, shown to
//! tenants and counted by monitoring. Never rename one; add new ones instead.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an event went to `dead_letters` instead of `events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The body is not valid UTF-8 JSON.
    InvalidJson,
    /// The body is valid JSON but not an object.
    NotAnObject,
    /// The body is larger than the configured event size limit.
    TooLarge,
    MissingTenantId,
    /// `tenant_id` is not an integer in 1..=2^63-1.
    BadTenantId,
    /// `tenant_id` is well formed but no such tenant is registered.
    UnknownTenant,
    MissingEventType,
    /// `event_type` is not a short lowercase token (`[a-z][a-z0-9_]*`).
    BadEventType,
    MissingDeviceId,
    BadDeviceId,
    MissingSessionId,
    BadSessionId,
    /// `event_time` is present but not an RFC 3339 timestamp.
    BadEventTime,
    /// `event_time` lies further in the future than the allowed clock skew.
    FutureEventTime,
    /// `event_time` lies before the retention horizon.
    OutsideRetention,
    /// `event_time` is within retention but no partition of `events` covers it
    /// (partition upkeep has not run, or a partition was dropped by hand).
    NoPartition,
    /// `country` is not an ISO 3166-1 alpha-2 code.
    BadCountry,
    /// `revenue` is not a decimal number in the allowed range.
    BadRevenue,
    /// `currency` is not three ASCII letters (ISO 4217 form).
    BadCurrency,
    /// `properties` is present but not a JSON object.
    BadProperties,
    /// An optional text field has the wrong JSON type.
    BadField,
    /// A text field is longer than its limit.
    FieldTooLong,
    /// A string contains U+0000, which PostgreSQL text and jsonb cannot store.
    InvalidCharacters,
    /// An object repeats a key (at any depth): readers disagree on which value counts.
    DuplicateField,
    /// An `ad_spend` event without a campaign.
    MissingCampaign,
    /// An `ad_spend` event's `cost` is absent or not a decimal number in the allowed range.
    BadCost,
    /// An `ad_spend` event's `date` is absent, not `YYYY-MM-DD`, in the future or older than
    /// the retention.
    BadSpendDate,
    /// The database refused the row (a constraint or data error, SQLSTATE class 22 or 23).
    DbRejected,
    /// Handling this event panicked; the event is kept for investigation.
    InternalError,
}

impl Reason {
    pub const ALL: [Reason; 29] = [
        Reason::InvalidJson,
        Reason::NotAnObject,
        Reason::TooLarge,
        Reason::MissingTenantId,
        Reason::BadTenantId,
        Reason::UnknownTenant,
        Reason::MissingEventType,
        Reason::BadEventType,
        Reason::MissingDeviceId,
        Reason::BadDeviceId,
        Reason::MissingSessionId,
        Reason::BadSessionId,
        Reason::BadEventTime,
        Reason::FutureEventTime,
        Reason::OutsideRetention,
        Reason::NoPartition,
        Reason::BadCountry,
        Reason::BadRevenue,
        Reason::BadCurrency,
        Reason::BadProperties,
        Reason::BadField,
        Reason::FieldTooLong,
        Reason::InvalidCharacters,
        Reason::DuplicateField,
        Reason::MissingCampaign,
        Reason::BadCost,
        Reason::BadSpendDate,
        Reason::DbRejected,
        Reason::InternalError,
    ];

    /// The stable code, as stored in `dead_letters.reason`.
    pub fn code(self) -> &'static str {
        match self {
            Reason::InvalidJson => "invalid_json",
            Reason::NotAnObject => "not_an_object",
            Reason::TooLarge => "too_large",
            Reason::MissingTenantId => "missing_tenant_id",
            Reason::BadTenantId => "bad_tenant_id",
            Reason::UnknownTenant => "unknown_tenant",
            Reason::MissingEventType => "missing_event_type",
            Reason::BadEventType => "bad_event_type",
            Reason::MissingDeviceId => "missing_device_id",
            Reason::BadDeviceId => "bad_device_id",
            Reason::MissingSessionId => "missing_session_id",
            Reason::BadSessionId => "bad_session_id",
            Reason::BadEventTime => "bad_event_time",
            Reason::FutureEventTime => "future_event_time",
            Reason::OutsideRetention => "outside_retention",
            Reason::NoPartition => "no_partition",
            Reason::BadCountry => "bad_country",
            Reason::BadRevenue => "bad_revenue",
            Reason::BadCurrency => "bad_currency",
            Reason::BadProperties => "bad_properties",
            Reason::BadField => "bad_field",
            Reason::FieldTooLong => "field_too_long",
            Reason::InvalidCharacters => "invalid_characters",
            Reason::DuplicateField => "duplicate_field",
            Reason::MissingCampaign => "missing_campaign",
            Reason::BadCost => "bad_cost",
            Reason::BadSpendDate => "bad_spend_date",
            Reason::DbRejected => "db_rejected",
            Reason::InternalError => "internal_error",
        }
    }

    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_match_serde() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.code()), "duplicate code {}", r.code());
            assert_eq!(serde_json::to_value(r).unwrap(), r.code());
            assert_eq!(Reason::from_code(r.code()), Some(r));
        }
    }
}
