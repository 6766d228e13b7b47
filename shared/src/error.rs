//! The one error vocabulary of ReMarketable: stable codes that clients, logs and every host
//! see, and the one predicate that says whether trying again can help.
//!
//! Each host maps an [`Error`] once: the HTTP API to a status and `{"error": {"code",
//! "message"}}`, the Azure invocation routes to a failed invocation, the Lambda host to a typed
//! function error. Retriability is a property of the code ([`ErrorCode::retryable`]), decided for
//! database failures by SQLSTATE class ([`is_transient`]), never by reading messages.

use std::fmt;
use tokio_postgres::error::SqlState;

/// What kind of refusal a code is; hosts map kinds, not individual codes, to their statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or names something invalid (HTTP 400).
    Invalid,
    /// No valid credential (401).
    Unauthenticated,
    /// A valid credential that may not do this (403).
    Forbidden,
    /// No such thing (404).
    NotFound,
    /// The path exists, the method does not (405).
    MethodNotAllowed,
    /// The state does not allow it (409).
    Conflict,
    /// Over a size limit (413).
    TooLarge,
    /// A body of a media type that is not taken (415).
    UnsupportedMediaType,
    /// Over a rate or concurrency limit of the caller's; retry after a pause (429).
    RateLimited,
    /// A dependency is down or busy; the same request may succeed later (503).
    Unavailable,
    /// A fault of ours or of the database that retrying alone will not fix (500).
    Internal,
}

macro_rules! codes {
    ($($variant:ident => $code:literal, $kind:ident;)*) => {
        /// Stable error codes. The text form ([`ErrorCode::as_str`]) is part of the API contract.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            /// Every code, for documents and tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            pub const fn kind(self) -> ErrorKind {
                match self {
                    $(ErrorCode::$variant => ErrorKind::$kind,)*
                }
            }
        }
    };
}

codes! {
    // Requests and parameters.
    BadRequest => "bad_request", Invalid;
    BadParameter => "bad_parameter", Invalid;
    BadFilter => "bad_filter", Invalid;
    BadTenantId => "bad_tenant_id", Invalid;
    BadKind => "bad_kind", Invalid;
    BadLabel => "bad_label", Invalid;
    BadKeyId => "bad_key_id", Invalid;
    BadTokenId => "bad_token_id", Invalid;
    BadExpiry => "bad_expiry", Invalid;
    BadName => "bad_name", Invalid;
    BadTimeZone => "bad_time_zone", Invalid;
    BadDashboardName => "bad_dashboard_name", Invalid;
    BadTitle => "bad_title", Invalid;
    BadLayout => "bad_layout", Invalid;
    BadSpend => "bad_spend", Invalid;
    BadFunnel => "bad_funnel", Invalid;
    BadFunnelName => "bad_funnel_name", Invalid;
    AmbiguousCredentials => "ambiguous_credentials", Invalid;
    // Bodies sent to collect.
    EmptyBody => "empty_body", Invalid;
    InvalidJson => "invalid_json", Invalid;
    NotAnObject => "not_an_object", Invalid;
    DuplicateField => "duplicate_field", Invalid;
    MissingTenantId => "missing_tenant_id", Invalid;
    // A trigger envelope the host sent that cannot be decoded.
    BadEnvelope => "bad_envelope", Invalid;
    // Credentials.
    Unauthorized => "unauthorized", Unauthenticated;
    ShareExpired => "share_expired", Unauthenticated;
    ShareRevoked => "share_revoked", Unauthenticated;
    Forbidden => "forbidden", Forbidden;
    WrongTenant => "wrong_tenant", Forbidden;
    FilterFixed => "filter_fixed", Forbidden;
    NotForShareLinks => "not_for_share_links", Forbidden;
    ShareTokensDisabled => "share_tokens_disabled", Forbidden;
    OriginNotAllowed => "origin_not_allowed", Forbidden;
    SpendNotCollected => "spend_not_collected", Forbidden;
    // Things and states.
    NotFound => "not_found", NotFound;
    MethodNotAllowed => "method_not_allowed", MethodNotAllowed;
    UnknownTenant => "unknown_tenant", NotFound;
    TenantExists => "tenant_exists", Conflict;
    VersionConflict => "version_conflict", Conflict;
    TooManyDashboards => "too_many_dashboards", Conflict;
    TooManyFunnels => "too_many_funnels", Conflict;
    // Sizes and media types.
    TooLarge => "too_large", TooLarge;
    EventTooLarge => "event_too_large", TooLarge;
    TooManyEvents => "too_many_events", TooLarge;
    UnsupportedMediaType => "unsupported_media_type", UnsupportedMediaType;
    // Limits of a caller.
    TooManyRequests => "too_many_requests", RateLimited;
    QuotaExceeded => "quota_exceeded", RateLimited;
    // Infrastructure.
    DatabaseUnavailable => "database_unavailable", Unavailable;
    ReportTimeout => "report_timeout", Unavailable;
    RandomUnavailable => "random_unavailable", Unavailable;
    ReplayConflict => "replay_conflict", Unavailable;
    // The stream collect publishes to (Kinesis on AWS) refused or did not answer.
    StreamUnavailable => "stream_unavailable", Unavailable;
    DatabaseError => "database_error", Internal;
    InternalError => "internal_error", Internal;
}

impl ErrorCode {
    /// Whether the same request, unchanged, may succeed later. Only infrastructure refusals
    /// are: a trigger answers them by failing the invocation so the source redelivers.
    pub const fn retryable(self) -> bool {
        matches!(self.kind(), ErrorKind::Unavailable)
    }

    /// How long a client should wait before asking again (the HTTP `Retry-After`, unless the
    /// refusal knows better, as a daily quota does): a moment past a caller's own limit (not [`retryable`](Self::retryable): the same request keeps
    /// being refused while the caller keeps the pace), longer for a busy or absent dependency.
    pub const fn retry_after_seconds(self) -> Option<u32> {
        match self.kind() {
            ErrorKind::RateLimited => Some(1),
            ErrorKind::Unavailable => Some(5),
            _ => None,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal with a stable code and a message safe to show a client. The cause (a database
/// error, say) is kept for the log and never shown.
#[derive(Debug)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    /// The cause, for logs and operators' tools; never sent to clients.
    detail: Option<Detail>,
}

/// The text of a cause, kept as an error so `{:#}` chains (the CLI's) show it.
#[derive(Debug)]
struct Detail(String);

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Detail {}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// Adds what the log should say about the cause (never sent to clients).
    pub fn with_detail(mut self, detail: impl fmt::Display) -> Self {
        self.detail = Some(Detail(detail.to_string()));
        self
    }

    pub fn detail(&self) -> Option<&str> {
        self.detail.as_ref().map(|d| d.0.as_str())
    }

    pub fn retryable(&self) -> bool {
        self.code.retryable()
    }

    pub fn internal(detail: impl fmt::Display) -> Self {
        Error::new(
            ErrorCode::InternalError,
            "internal error; see the service log",
        )
        .with_detail(detail)
    }

    /// A database error, classified by its SQLSTATE class ([`is_transient`]).
    pub fn database(e: &tokio_postgres::Error) -> Self {
        let detail = std::error::Error::source(e)
            .map(|s| format!("{e}: {s}"))
            .unwrap_or_else(|| e.to_string());
        if e.code() == Some(&SqlState::QUERY_CANCELED) {
            // statement_timeout (the reports' pool sets one) or a cancel request.
            Error::new(
                ErrorCode::ReportTimeout,
                "the report took longer than its time limit; retry later or ask for a shorter range",
            )
            .with_detail(detail)
        } else if is_transient(e) {
            Error::new(
                ErrorCode::DatabaseUnavailable,
                "the database is unavailable; retry later",
            )
            .with_detail(detail)
        } else {
            Error::new(
                ErrorCode::DatabaseError,
                "the database refused the operation; see the service log",
            )
            .with_detail(detail)
        }
    }

    /// No pooled connection could be had (the database is down, or every connection is busy).
    pub fn pool(e: &deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => Error::database(e),
            e => Error::new(
                ErrorCode::DatabaseUnavailable,
                "the database is unavailable; retry later",
            )
            .with_detail(e),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.detail
            .as_ref()
            .map(|d| d as &(dyn std::error::Error + 'static))
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::database(&e)
    }
}

/// Errors that go away by themselves: no answer from the server (connection refused, lost or
/// closed), or SQLSTATE classes 08 (connection), 40 (rollback: serialization, deadlock),
/// 53 (insufficient resources), 57 (operator intervention: shutdown, cancel), 58 (system), or
/// a lock timeout.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    let Some(code) = e.code() else {
        // No SQLSTATE: transient if the connection could not be made, broke or was closed;
        // anything else (an unexpected row count, a type mismatch) is a bug to surface.
        return e.is_closed()
            || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
    };
    let code = code.code();
    matches!(&code[..2], "08" | "40" | "53" | "57" | "58")
        || code == SqlState::LOCK_NOT_AVAILABLE.code()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_snake_case_tokens() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(
                text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{text}"
            );
        }
    }

    #[test]
    fn only_infrastructure_refusals_are_retryable() {
        let retryable: Vec<_> = ErrorCode::ALL
            .iter()
            .filter(|c| c.retryable())
            .map(|c| c.as_str())
            .collect();
        assert_eq!(
            retryable,
            [
                "database_unavailable",
                "report_timeout",
                "random_unavailable",
                "replay_conflict",
                "stream_unavailable"
            ]
        );
    }
}
