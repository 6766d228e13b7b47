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
    /// `DB_POOL_SIZE` (default 8): connections per handler process.
    pub pool_size: usize,
    /// `DB_CONNECT_TIMEOUT_SECONDS` (default 5).
    pub connect_timeout: std::time::Duration,
    /// Limits of the event contract (`EVENT_*`).
    pub limits: EventLimits,
    /// `COLLECT_MAX_BODY_BYTES` (default 1 MiB): largest `collect` request body.
    pub collect_max_body_bytes: usize,
    /// `COLLECT_MAX_EVENTS` (default 500): most events in one `collect` request.
    pub collect_max_events: usize,
    /// `TENANT_CACHE_TTL_SECONDS` (default 30): how long the registered tenant set is trusted.
    pub tenant_cache_ttl: std::time::Duration,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The database config holds the password: show only where it points.
        f.debug_struct("Settings")
            .field("database_hosts", &self.database.get_hosts().len())
            .field("database_name", &self.database.get_dbname())
            .field("pool_size", &self.pool_size)
            .field("limits", &self.limits)
            .field("collect_max_body_bytes", &self.collect_max_body_bytes)
            .field("collect_max_events", &self.collect_max_events)
            .field("tenant_cache_ttl", &self.tenant_cache_ttl)
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
        let database = tokio_postgres::Config::from_str(url).map_err(|_| ConfigError::Invalid {
            name: "DATABASE_URL",
            // The parser's message may quote the URL, which may hold a password.
            why: "not a PostgreSQL connection string (postgres://user:password@host:port/db?sslmode=require)"
                .into(),
        })?;
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
        };
        Ok(Settings {
            database,
            pool_size: reader.number("DB_POOL_SIZE", 8, 1, 256)?,
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
            tenant_cache_ttl: std::time::Duration::from_secs(reader.number(
                "TENANT_CACHE_TTL_SECONDS",
                30,
                0,
                86_400,
            )?),
        })
    }

    /// Settings from the process environment.
    pub fn from_env() -> Result<Settings, ConfigError> {
        Settings::from_map(&std::env::vars().collect())
    }
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
        assert_eq!(s.limits, EventLimits::default());
        assert_eq!(s.collect_max_events, 500);
        assert!(!format!("{s:?}").contains("secret"));
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
