//! Typed, validated configuration built from an explicit map of settings.
//!
//! Hosts pass `std::env::vars()` (Azure app settings and Lambda environment arrive as
//! environment variables); tests pass a literal map. Every error names the setting, never its
//! value, because values may be secrets.

use crate::event::EventLimits;
use chrono::Duration;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// Settings of the handler, with their defaults documented in the README.
#[derive(Clone)]
pub struct Settings {
    /// Parsed `DATABASE_URL`. Kept parsed so the secret text is not carried around.
    pub database: tokio_postgres::Config,
    /// `sslmode` and `sslrootcert` of `DATABASE_URL` (or `DATABASE_SSLROOTCERT`), which
    /// tokio-postgres cannot hold: see [`crate::db::tls`].
    pub database_tls: crate::db::DbTls,
    /// `DB_POOL_SIZE` (default 8): connections per handler process for ingest, the jobs,
    /// collect and the API's small reads and writes. Reports never take these.
    pub pool_size: usize,
    /// `REPORT_POOL_SIZE` (default 4): connections per handler process for reports, apart from
    /// the ones above, so that no report load can take ingest's capacity.
    pub report_pool_size: usize,
    /// `REPORT_TIMEOUT_MS` (default 5000): each report statement's `statement_timeout`, and
    /// (plus a second) the deadline of a report request, waiting for a connection included.
    pub report_timeout: std::time::Duration,
    /// `REPORT_CONCURRENCY_PER_CREDENTIAL` (default 16: a dashboard's widgets at once) and
    /// `REPORT_CONCURRENCY_PER_TENANT` (default 32): reports one key or share link, and one tenant, may have running at once in
    /// a process; more are refused at once with 429 `too_many_requests`.
    pub report_concurrency_per_credential: usize,
    pub report_concurrency_per_tenant: usize,
    /// `DB_CONNECT_TIMEOUT_SECONDS` (default 5).
    pub connect_timeout: std::time::Duration,
    /// Limits of the event contract (`EVENT_*`).
    pub limits: EventLimits,
    /// `COLLECT_MAX_BODY_BYTES` (default 1 MiB): largest `collect` request body.
    pub collect_max_body_bytes: usize,
    /// `COLLECT_MAX_EVENTS` (default 500): most events in one `collect` request.
    pub collect_max_events: usize,
    /// `COLLECT_EVENTS_PER_SECOND_PER_KEY` (default 1000), `…_PER_TENANT` (2000),
    /// `COLLECT_EVENTS_PER_DAY_PER_KEY` (50 million), `…_PER_TENANT` (100 million): collect's
    /// limits ([`crate::quota`]), 0 for none; tenants may have their own.
    pub collect_limits: crate::quota::Limits,
    /// `TENANT_CACHE_TTL_SECONDS` (default 30): how long the registered tenant set is trusted.
    pub tenant_cache_ttl: std::time::Duration,
    /// `SHARE_TOKEN_SECRET` (optional, at least 32 bytes): signs share tokens. Without it share
    /// tokens are refused (`share_tokens_disabled`). Never printed.
    pub share_token_secret: Option<ShareSecret>,
    /// `ACCESS_CACHE_TTL_SECONDS` (default 10): how long a verified API key or share token is
    /// trusted before it is looked up again, so a revocation reaches every instance within it.
    pub access_cache_ttl: std::time::Duration,
    /// `REPORTS_CORS_ORIGINS` (comma-separated origins such as `https://app.example.com`;
    /// default none): browser origins allowed to call the reports API.
    pub reports_cors_origins: Vec<String>,
    /// `EMBED_FRAME_ANCESTORS` (default `'self'`): the CSP `frame-ancestors` value of embeddable
    /// pages.
    pub embed_frame_ancestors: String,
    /// `HSTS_MAX_AGE_SECONDS` (default 0: not sent): the `Strict-Transport-Security` max-age of
    /// every API and dashboard answer, for deployments served over HTTPS only.
    pub hsts_max_age_seconds: u64,
    /// `HTTP_HEADER_READ_TIMEOUT_SECONDS` (default 90): how long a connection to the handler's
    /// own HTTP server may take to send a request's headers, and so also how long an idle
    /// keep-alive connection is kept.
    pub http_header_read_timeout: std::time::Duration,
}

/// The key that signs share tokens. Its bytes never leave this type except to the HMAC.
#[derive(Clone, PartialEq, Eq)]
pub struct ShareSecret(Vec<u8>);

impl ShareSecret {
    pub const MIN_BYTES: usize = 32;

    /// A secret of at least [`ShareSecret::MIN_BYTES`] bytes (the text's UTF-8 bytes, as set).
    pub fn new(text: &str) -> Result<ShareSecret, ConfigError> {
        if text.len() < Self::MIN_BYTES {
            return Err(ConfigError::Invalid {
                name: "SHARE_TOKEN_SECRET",
                why: format!(
                    "must be at least {} bytes (e.g. `openssl rand -base64 48`)",
                    Self::MIN_BYTES
                ),
            });
        }
        Ok(ShareSecret(text.as_bytes().to_vec()))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ShareSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShareSecret(..)")
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The database config holds the password: show only where it points.
        f.debug_struct("Settings")
            .field("database_hosts", &self.database.get_hosts().len())
            .field("database_name", &self.database.get_dbname())
            .field("database_sslmode", &self.database_tls.mode)
            .field("pool_size", &self.pool_size)
            .field("report_pool_size", &self.report_pool_size)
            .field("report_timeout", &self.report_timeout)
            .field(
                "report_concurrency_per_credential",
                &self.report_concurrency_per_credential,
            )
            .field(
                "report_concurrency_per_tenant",
                &self.report_concurrency_per_tenant,
            )
            .field("limits", &self.limits)
            .field("collect_max_body_bytes", &self.collect_max_body_bytes)
            .field("collect_max_events", &self.collect_max_events)
            .field("collect_limits", &self.collect_limits)
            .field("tenant_cache_ttl", &self.tenant_cache_ttl)
            .field("share_tokens_enabled", &self.share_token_secret.is_some())
            .field("access_cache_ttl", &self.access_cache_ttl)
            .field("reports_cors_origins", &self.reports_cors_origins)
            .field("embed_frame_ancestors", &self.embed_frame_ancestors)
            .field("hsts_max_age_seconds", &self.hsts_max_age_seconds)
            .field("http_header_read_timeout", &self.http_header_read_timeout)
            .finish()
    }
}

/// A setting that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("setting {0} is required but not set")]
    Missing(&'static str),
    #[error(
        "setting {0} still holds an unresolved Key Vault reference: the Functions host could not \
         read the secret (check the app's managed identity and the vault's access policy)"
    )]
    UnresolvedKeyVault(String),
    #[error("setting {name} is invalid: {why}")]
    Invalid { name: &'static str, why: String },
}

impl Settings {
    /// Builds settings from a map such as `std::env::vars().collect()`.
    pub fn from_map(map: &HashMap<String, String>) -> Result<Settings, ConfigError> {
        // Any Key Vault reference left unresolved is fatal, even in a setting we do not read,
        // so a broken vault shows at start-up rather than as odd behaviour later.
        let mut unresolved: Vec<&String> = map
            .iter()
            .filter(|(_, v)| v.trim_start().starts_with("@Microsoft.KeyVault("))
            .map(|(k, _)| k)
            .collect();
        unresolved.sort();
        if let Some(name) = unresolved.first() {
            return Err(ConfigError::UnresolvedKeyVault((*name).clone()));
        }
        let reader = Reader(map);
        let url = reader
            .get("DATABASE_URL")
            .ok_or(ConfigError::Missing("DATABASE_URL"))?;
        // sslmode (with libpq's verify-ca / verify-full) and sslrootcert are read here; the
        // rest goes to tokio-postgres. Errors name the setting, never the URL.
        let (database, database_tls) =
            crate::db::parse_database_url(url, reader.get(crate::db::tls::ROOT_CERT_SETTING))?;
        let defaults = EventLimits::default();
        let limits = EventLimits {
            max_event_bytes: reader.number(
                "EVENT_MAX_BYTES",
                defaults.max_event_bytes,
                256,
                1 << 20,
            )?,
            max_url_bytes: reader.number(
                "EVENT_MAX_URL_BYTES",
                defaults.max_url_bytes,
                16,
                65_536,
            )?,
            max_text_bytes: reader.number(
                "EVENT_MAX_TEXT_BYTES",
                defaults.max_text_bytes,
                16,
                65_536,
            )?,
            future_skew: Duration::seconds(reader.number(
                "EVENT_FUTURE_SKEW_SECONDS",
                defaults.future_skew.num_seconds(),
                0,
                7 * 24 * 3600,
            )?),
            retention: Duration::days(reader.number(
                "EVENT_RETENTION_DAYS",
                defaults.retention.num_days(),
                1,
                3660,
            )?),
            max_dead_letter_payload_bytes: reader.number(
                "DEAD_LETTER_MAX_PAYLOAD_BYTES",
                defaults.max_dead_letter_payload_bytes,
                1024,
                16 << 20,
            )?,
        };
        Ok(Settings {
            database,
            database_tls,
            pool_size: reader.number("DB_POOL_SIZE", 8, 1, 256)?,
            report_pool_size: reader.number("REPORT_POOL_SIZE", 4, 1, 256)?,
            report_timeout: std::time::Duration::from_millis(reader.number(
                "REPORT_TIMEOUT_MS",
                5_000,
                100,
                600_000,
            )?),
            report_concurrency_per_credential: reader.number(
                "REPORT_CONCURRENCY_PER_CREDENTIAL",
                16,
                1,
                1_000,
            )?,
            report_concurrency_per_tenant: reader.number(
                "REPORT_CONCURRENCY_PER_TENANT",
                32,
                1,
                10_000,
            )?,
            connect_timeout: std::time::Duration::from_secs(reader.number(
                "DB_CONNECT_TIMEOUT_SECONDS",
                5,
                1,
                300,
            )?),
            limits,
            collect_max_body_bytes: reader.number(
                "COLLECT_MAX_BODY_BYTES",
                1 << 20,
                1024,
                64 << 20,
            )?,
            collect_max_events: reader.number("COLLECT_MAX_EVENTS", 500, 1, 100_000)?,
            collect_limits: {
                use crate::quota::{MAX_EVENTS_PER_DAY, MAX_EVENTS_PER_SECOND};
                crate::quota::Limits {
                    key_events_per_second: reader.number(
                        "COLLECT_EVENTS_PER_SECOND_PER_KEY",
                        1_000,
                        0,
                        MAX_EVENTS_PER_SECOND,
                    )?,
                    events_per_second: reader.number(
                        "COLLECT_EVENTS_PER_SECOND_PER_TENANT",
                        2_000,
                        0,
                        MAX_EVENTS_PER_SECOND,
                    )?,
                    key_events_per_day: reader.number(
                        "COLLECT_EVENTS_PER_DAY_PER_KEY",
                        50_000_000,
                        0,
                        MAX_EVENTS_PER_DAY,
                    )?,
                    events_per_day: reader.number(
                        "COLLECT_EVENTS_PER_DAY_PER_TENANT",
                        100_000_000,
                        0,
                        MAX_EVENTS_PER_DAY,
                    )?,
                }
            },
            tenant_cache_ttl: std::time::Duration::from_secs(reader.number(
                "TENANT_CACHE_TTL_SECONDS",
                30,
                0,
                86_400,
            )?),
            share_token_secret: reader
                .get("SHARE_TOKEN_SECRET")
                .map(ShareSecret::new)
                .transpose()?,
            access_cache_ttl: std::time::Duration::from_secs(reader.number(
                "ACCESS_CACHE_TTL_SECONDS",
                10,
                0,
                300,
            )?),
            reports_cors_origins: reader
                .get("REPORTS_CORS_ORIGINS")
                .map(cors_origins)
                .transpose()?
                .unwrap_or_default(),
            embed_frame_ancestors: reader
                .get("EMBED_FRAME_ANCESTORS")
                .map(frame_ancestors)
                .transpose()?
                .unwrap_or_else(|| "'self'".into()),
            hsts_max_age_seconds: reader.number("HSTS_MAX_AGE_SECONDS", 0, 0, 63_072_000)?,
            http_header_read_timeout: std::time::Duration::from_secs(reader.number(
                "HTTP_HEADER_READ_TIMEOUT_SECONDS",
                90,
                1,
                3600,
            )?),
        })
    }

    /// Settings from the process environment.
    pub fn from_env() -> Result<Settings, ConfigError> {
        Settings::from_map(&std::env::vars().collect())
    }
}

/// `https://app.example.com[:port]`, comma-separated: scheme and host only, as browsers send
/// them in `Origin`.
fn cors_origins(raw: &str) -> Result<Vec<String>, ConfigError> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            origin(item).map_err(|why| ConfigError::Invalid {
                name: "REPORTS_CORS_ORIGINS",
                why,
            })
        })
        .collect()
}

/// One web origin as browsers send it in `Origin` (`https://app.example.com[:port]`: scheme and
/// host only), lower-cased; the error says what is wrong with it.
pub fn origin(item: &str) -> Result<String, String> {
    let rest = item
        .strip_prefix("https://")
        .or_else(|| item.strip_prefix("http://"))
        .ok_or_else(|| format!("origin {item:?} must start with https:// or http://"))?;
    let host_ok = !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if !host_ok {
        return Err(format!(
            "origin {item:?} must be a scheme and a host (and port), without path or wildcard"
        ));
    }
    Ok(item.to_ascii_lowercase())
}

/// A CSP source list: no characters that would end the directive or the header.
fn frame_ancestors(raw: &str) -> Result<String, ConfigError> {
    if raw.chars().any(|c| c == ';' || c == ',' || c.is_control()) {
        return Err(ConfigError::Invalid {
            name: "EMBED_FRAME_ANCESTORS",
            why: "a space-separated CSP source list such as 'self' https://cms.example.com".into(),
        });
    }
    Ok(raw.to_string())
}

struct Reader<'a>(&'a HashMap<String, String>);

impl Reader<'_> {
    /// A set, non-blank value.
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn number<T>(&self, name: &'static str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
    {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        let value: T = raw.parse().map_err(|_| ConfigError::Invalid {
            name,
            why: format!("expected a whole number between {min} and {max}"),
        })?;
        if value < min || value > max {
            return Err(ConfigError::Invalid {
                name,
                why: format!("must be between {min} and {max}"),
            });
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_apply() {
        let s = Settings::from_map(&map(&[("DATABASE_URL", "postgres://u:secret@h/db")])).unwrap();
        assert_eq!(s.pool_size, 8);
        assert_eq!(s.report_pool_size, 4);
        assert_eq!(s.report_timeout, std::time::Duration::from_secs(5));
        assert_eq!(
            (
                s.report_concurrency_per_credential,
                s.report_concurrency_per_tenant
            ),
            (16, 32)
        );
        assert_eq!(s.limits, EventLimits::default());
        assert_eq!(s.collect_max_events, 500);
        assert_eq!(
            s.collect_limits,
            crate::quota::Limits {
                events_per_second: 2_000,
                events_per_day: 100_000_000,
                key_events_per_second: 1_000,
                key_events_per_day: 50_000_000,
            }
        );
        assert!(!format!("{s:?}").contains("secret"));
        assert!(s.share_token_secret.is_none());
        assert_eq!(s.access_cache_ttl, std::time::Duration::from_secs(10));
        assert!(s.reports_cors_origins.is_empty());
        assert_eq!(s.embed_frame_ancestors, "'self'");
    }

    #[test]
    fn share_token_secret_is_checked_and_never_printed() {
        let secret = "k3y-material-that-is-long-enough-0123456789";
        let s = Settings::from_map(&map(&[
            ("DATABASE_URL", "postgres://h/db"),
            ("SHARE_TOKEN_SECRET", secret),
        ]))
        .unwrap();
        assert_eq!(
            s.share_token_secret.as_ref().unwrap().bytes(),
            secret.as_bytes()
        );
        let printed = format!("{s:?} {:?}", s.share_token_secret);
        assert!(!printed.contains("k3y-material"), "{printed}");
        assert!(printed.contains("share_tokens_enabled: true"), "{printed}");

        let err = Settings::from_map(&map(&[
            ("DATABASE_URL", "postgres://h/db"),
            ("SHARE_TOKEN_SECRET", "short-secret"),
        ]))
        .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                name: "SHARE_TOKEN_SECRET",
                ..
            }
        ));
        assert!(!err.to_string().contains("short-secret"), "{err}");
    }

    #[test]
    fn cors_origins_and_frame_ancestors() {
        let s = Settings::from_map(&map(&[
            ("DATABASE_URL", "postgres://h/db"),
            (
                "REPORTS_CORS_ORIGINS",
                " https://App.example.com, http://localhost:5173 ,",
            ),
            ("EMBED_FRAME_ANCESTORS", "'self' https://cms.example.com"),
        ]))
        .unwrap();
        assert_eq!(
            s.reports_cors_origins,
            vec!["https://app.example.com", "http://localhost:5173"]
        );
        assert_eq!(s.embed_frame_ancestors, "'self' https://cms.example.com");
        for (name, value) in [
            ("REPORTS_CORS_ORIGINS", "app.example.com"),
            ("REPORTS_CORS_ORIGINS", "https://app.example.com/path"),
            ("REPORTS_CORS_ORIGINS", "https://*"),
            ("EMBED_FRAME_ANCESTORS", "'self'; script-src *"),
        ] {
            let err =
                Settings::from_map(&map(&[("DATABASE_URL", "postgres://h/db"), (name, value)]))
                    .unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { name: n, .. } if n == name),
                "{name}={value}: {err}"
            );
        }
    }

    #[test]
    fn database_url_is_required() {
        assert_eq!(
            Settings::from_map(&map(&[])).unwrap_err(),
            ConfigError::Missing("DATABASE_URL")
        );
    }

    #[test]
    fn bad_database_url_does_not_echo_it() {
        let err = Settings::from_map(&map(&[(
            "DATABASE_URL",
            "postgres://u:hunter2@h:notaport/db",
        )]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("DATABASE_URL"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn unresolved_key_vault_reference_is_named() {
        let err = Settings::from_map(&map(&[(
            "DATABASE_URL",
            "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/db/)",
        )]))
        .unwrap_err();
        assert_eq!(err, ConfigError::UnresolvedKeyVault("DATABASE_URL".into()));
        assert!(err.to_string().contains("Key Vault"));
    }

    #[test]
    fn out_of_range_numbers_are_refused() {
        let err = Settings::from_map(&map(&[
            ("DATABASE_URL", "postgres://h/db"),
            ("DB_POOL_SIZE", "0"),
        ]))
        .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                name: "DB_POOL_SIZE",
                ..
            }
        ));
        let err = Settings::from_map(&map(&[
            ("DATABASE_URL", "postgres://h/db"),
            ("EVENT_MAX_BYTES", "lots"),
        ]))
        .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                name: "EVENT_MAX_BYTES",
                ..
            }
        ));
    }
}
