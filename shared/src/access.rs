//! Access control: API keys and share tokens.
//!
//! **API keys** look like `rmk_<kind>_<key_id>_<secret>`: `kind` is `read`, `write` or `admin`,
//! `key_id` (16 hex digits) is public and names the key in lists and logs, `secret` is 32 bytes
//! from the operating system's random source, base64url. Only the SHA-256 of the whole key text
//! is stored (a fast hash is enough for 256 random bits); a presented key is looked up by its id
//! and its hash compared in constant time. A key is shown once, when it is created.
//!
//! **Share tokens** give read-only access to one tenant's reports, for links and iframes:
//! `rms_<payload>.<signature>`, where the payload (base64url JSON) holds the token id, tenant,
//! expiry and optional fixed dimension filters, and the signature is HMAC-SHA256 under
//! `SHARE_TOKEN_SECRET`. The signature and expiry are checked without the database; the row in
//! `share_tokens` is checked for revocation.
//!
//! Verified credentials are cached for `ACCESS_CACHE_TTL_SECONDS`, so the hot path (`collect`)
//! costs at most one indexed lookup per key and interval.

use crate::cache::BoundedMap;
use crate::config::ShareSecret;
use crate::error::ErrorCode;
use crate::quota::{KeyPolicy, Overrides, OVERRIDE_COLUMNS};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio_postgres::GenericClient;

/// The longest a share token may live.
pub const MAX_SHARE_TTL: chrono::Duration = chrono::Duration::days(90);
/// The shortest a share token may live.
pub const MIN_SHARE_TTL: chrono::Duration = chrono::Duration::seconds(60);
/// Longest label of a key or share token, in bytes.
pub const MAX_LABEL_BYTES: usize = 200;
/// Verified credentials kept in memory at most (the cache is emptied when full).
const CACHE_CAPACITY: usize = 10_000;
/// `last_used_at` is refreshed at most this often per key.
const LAST_USED_RESOLUTION: chrono::Duration = chrono::Duration::hours(1);

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// Read a tenant's reports and manage its share tokens.
    Read,
    /// Send a tenant's events to `collect`.
    Write,
    /// Operate the service: tenants and keys. Belongs to no tenant.
    Admin,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Read => "read",
            KeyKind::Write => "write",
            KeyKind::Admin => "admin",
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyKind {
    type Err = AccessError;
    fn from_str(s: &str) -> Result<Self, AccessError> {
        match s {
            "read" => Ok(KeyKind::Read),
            "write" => Ok(KeyKind::Write),
            "admin" => Ok(KeyKind::Admin),
            _ => Err(AccessError::Invalid {
                code: ErrorCode::BadKind,
                message: "kind must be read, write or admin".into(),
            }),
        }
    }
}

/// Dimensions a share token may fix: the reports' closed set of dimensions.
pub use crate::reports::Dimension as FilterDimension;

/// Fixed filters of a share token: the reports' filters, checked by [`Filters::fixed`].
pub use crate::reports::Filters;

/// Checks caller-supplied fixed filters (`{"country": "DE"}` or `country=DE` pairs).
pub fn parse_filters<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Filters, AccessError> {
    Filters::fixed(pairs).map_err(|e| AccessError::Invalid {
        code: e.code,
        message: e.message,
    })
}

/// Why a credential or an access-control request was refused. Messages are safe to show and
/// never contain the credential.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Missing, malformed, unknown or revoked key; bad share token signature.
    #[error("invalid credential")]
    Unauthorized,
    #[error("the share token has expired")]
    ShareExpired,
    #[error("the share token was revoked")]
    ShareRevoked,
    #[error("share tokens are not enabled on this service (SHARE_TOKEN_SECRET is not set)")]
    ShareTokensDisabled,
    #[error("tenant {0} is not registered")]
    UnknownTenant(i64),
    /// Bad input, with a stable code.
    #[error("{message}")]
    Invalid { code: ErrorCode, message: String },
    #[error("the operating system's random source failed")]
    Random,
    #[error("database error")]
    Database(#[from] tokio_postgres::Error),
}

/// A refused foreign key to `tenants` means the tenant is not registered; anything else is a
/// database error.
fn unknown_tenant_or(e: tokio_postgres::Error, tenant_id: i64) -> AccessError {
    if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) {
        AccessError::UnknownTenant(tenant_id)
    } else {
        AccessError::Database(e)
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], AccessError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| AccessError::Random)?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random public id: 16 hex digits.
fn new_id() -> Result<String, AccessError> {
    Ok(hex(&random_bytes::<8>()?))
}

fn is_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks a key or token id from a path.
pub fn parse_id(s: &str, code: ErrorCode) -> Result<String, AccessError> {
    if is_id(s) {
        Ok(s.to_string())
    } else {
        Err(AccessError::Invalid {
            code,
            message: "ids are 16 lowercase hex digits".into(),
        })
    }
}

fn check_label(label: &str) -> Result<String, AccessError> {
    if label.len() > MAX_LABEL_BYTES || label.chars().any(char::is_control) {
        return Err(AccessError::Invalid {
            code: ErrorCode::BadLabel,
            message: format!(
                "label must be at most {MAX_LABEL_BYTES} bytes without control characters"
            ),
        });
    }
    Ok(label.trim().to_string())
}

fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The parts of a presented key text, if it has the key format.
fn split_key(key: &str) -> Option<(KeyKind, &str)> {
    let mut parts = key.splitn(4, '_');
    let (prefix, kind, id, secret) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if prefix != "rmk" || !is_id(id) || secret.len() < 43 || secret.len() > 128 {
        return None;
    }
    if !secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    Some((kind.parse().ok()?, id))
}

/// A key as created: `key` is shown once and never stored.
#[derive(Clone, Serialize)]
pub struct NewKey {
    pub key_id: String,
    pub key: String,
    pub kind: KeyKind,
    pub tenant_id: Option<i64>,
    pub label: String,
    pub created_at: DateTime<Utc>,
    pub allowed_origins: Option<Vec<String>>,
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey")
            .field("key_id", &self.key_id)
            .field("kind", &self.kind)
            .field("tenant_id", &self.tenant_id)
            .finish_non_exhaustive()
    }
}

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyInfo {
    pub key_id: String,
    pub tenant_id: Option<i64>,
    pub kind: KeyKind,
    pub label: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// Of a write key: the origins it is accepted from (`None`: any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_origins: Option<Vec<String>>,
}

/// Most origins one write key may name.
pub const MAX_ALLOWED_ORIGINS: usize = 32;

/// Creates a key of `tenant_id` (`None` for an admin key, which needs `KeyKind::Admin`).
pub async fn create_key<C: GenericClient>(
    client: &C,
    tenant_id: Option<i64>,
    kind: KeyKind,
    label: &str,
) -> Result<NewKey, AccessError> {
    create_key_for_origins(client, tenant_id, kind, label, None).await
}

/// [`create_key`], for a write key that collect accepts only from `allowed_origins`
/// (`https://shop.example.com`; see [`crate::quota`]) where given.
pub async fn create_key_for_origins<C: GenericClient>(
    client: &C,
    tenant_id: Option<i64>,
    kind: KeyKind,
    label: &str,
    allowed_origins: Option<&[String]>,
) -> Result<NewKey, AccessError> {
    if (kind == KeyKind::Admin) != tenant_id.is_none() {
        return Err(AccessError::Invalid {
            code: ErrorCode::BadKind,
            message: "admin keys belong to no tenant; read and write keys to one".into(),
        });
    }
    let label = check_label(label)?;
    let allowed_origins = allowed_origins
        .map(|origins| check_origins(kind, origins))
        .transpose()?;
    let key_id = new_id()?;
    let secret = URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
    let key = format!("rmk_{kind}_{key_id}_{secret}");
    let hash = key_hash(&key);
    // INSERT .. VALUES: `api_keys` is a Citus reference table, where INSERT .. SELECT ..
    // RETURNING fails ("missing FROM-clause entry"); the foreign key tells an unknown tenant.
    let row = client
        .query_one(
            "INSERT INTO api_keys (key_id, tenant_id, kind, secret_hash, label, allowed_origins) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING created_at",
            &[
                &key_id,
                &tenant_id,
                &kind.as_str(),
                &hash.as_slice(),
                &label,
                &allowed_origins,
            ],
        )
        .await
        .map_err(|e| unknown_tenant_or(e, tenant_id.unwrap_or_default()))?;
    Ok(NewKey {
        key_id,
        key,
        kind,
        tenant_id,
        label,
        created_at: row.get(0),
        allowed_origins,
    })
}

/// Origins a write key may name: at least one, each a scheme and host.
fn check_origins(kind: KeyKind, origins: &[String]) -> Result<Vec<String>, AccessError> {
    let invalid = |message: String| AccessError::Invalid {
        code: ErrorCode::BadParameter,
        message,
    };
    if kind != KeyKind::Write {
        return Err(invalid(
            "allowed_origins is for write keys, which collect takes from browsers".into(),
        ));
    }
    if origins.is_empty() || origins.len() > MAX_ALLOWED_ORIGINS {
        return Err(invalid(format!(
            "allowed_origins names 1 to {MAX_ALLOWED_ORIGINS} origins (omit it for any origin)"
        )));
    }
    let mut checked = Vec::with_capacity(origins.len());
    for origin in origins {
        let origin = crate::config::origin(origin.trim()).map_err(invalid)?;
        if !checked.contains(&origin) {
            checked.push(origin);
        }
    }
    Ok(checked)
}

fn key_info(row: &tokio_postgres::Row) -> KeyInfo {
    let kind: String = row.get(2);
    KeyInfo {
        key_id: row.get(0),
        tenant_id: row.get(1),
        // The table's CHECK allows only the three kinds.
        kind: kind.parse().unwrap_or(KeyKind::Read),
        label: row.get(3),
        created_at: row.get(4),
        revoked_at: row.get(5),
        last_used_at: row.get(6),
        allowed_origins: row.get(7),
    }
}

const KEY_COLUMNS: &str =
    "key_id, tenant_id, kind, label, created_at, revoked_at, last_used_at, allowed_origins";

/// Items of a listing by default, and at most.
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;

/// Which part of a listing to read: at most `limit` items following the item whose id is
/// `after` (the `next` of the page before), in the listing's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub limit: usize,
    pub after: Option<String>,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            limit: DEFAULT_PAGE,
            after: None,
        }
    }
}

impl Page {
    /// Checks a page asked for by a client: `limit` in 1..=[`MAX_PAGE`], `after` an id.
    pub fn parse(limit: Option<&str>, after: Option<&str>) -> Result<Page, AccessError> {
        let limit = match limit {
            None => DEFAULT_PAGE,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_PAGE).contains(n))
                .ok_or_else(|| AccessError::Invalid {
                    code: ErrorCode::BadParameter,
                    message: format!("limit must be an integer from 1 to {MAX_PAGE}"),
                })?,
        };
        let after = after
            .map(|id| {
                parse_id(id, ErrorCode::BadParameter).map_err(|_| AccessError::Invalid {
                    code: ErrorCode::BadParameter,
                    message: "after must be the `next` of the previous page".into(),
                })
            })
            .transpose()?;
        Ok(Page { limit, after })
    }

    fn fetch(&self) -> i64 {
        // One more than the page tells whether another follows.
        self.limit.min(MAX_PAGE) as i64 + 1
    }

    fn cut<T>(&self, mut items: Vec<T>, id: impl Fn(&T) -> String) -> Listing<T> {
        let limit = self.limit.min(MAX_PAGE);
        let next = (items.len() > limit).then(|| {
            items.truncate(limit);
            id(items.last().expect("limit is at least 1"))
        });
        Listing { items, next }
    }
}

/// One page of a listing; `next` (the last item's id) asks for the following page.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Keys of one tenant, or every key (admin keys first) when `tenant_id` is `None`; oldest
/// first, one page.
pub async fn list_keys<C: GenericClient>(
    client: &C,
    tenant_id: Option<i64>,
    page: &Page,
) -> Result<Listing<KeyInfo>, AccessError> {
    let rows = client
        .query(
            &format!(
                "SELECT {KEY_COLUMNS} FROM api_keys \
                 WHERE ($1::bigint IS NULL OR tenant_id = $1) \
                   AND ($2::text IS NULL OR (coalesce(tenant_id, 0), created_at, key_id) > \
                        (SELECT coalesce(tenant_id, 0), created_at, key_id FROM api_keys \
                         WHERE key_id = $2)) \
                 ORDER BY coalesce(tenant_id, 0), created_at, key_id LIMIT $3"
            ),
            &[&tenant_id, &page.after, &page.fetch()],
        )
        .await?;
    let keys = rows.iter().map(key_info).collect();
    Ok(page.cut(keys, |k: &KeyInfo| k.key_id.clone()))
}

/// What revoking a key did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedKey {
    /// The key's tenant (`None` for an admin key).
    pub tenant_id: Option<i64>,
    /// The share tokens the key had made, revoked with it.
    pub share_tokens: Vec<String>,
}

/// Revokes a key and the share tokens it made (a link dies with the key that made it).
/// Answers `None` when no such key exists; revoking twice keeps the first revocation times.
pub async fn revoke_key<C: GenericClient>(
    client: &C,
    key_id: &str,
) -> Result<Option<RevokedKey>, AccessError> {
    let Some(row) = client
        .query_opt(
            // least(), not coalesce(): Citus refuses a non-immutable function inside COALESCE
            // or CASE in an UPDATE; least() skips the NULL and keeps an earlier revocation.
            "UPDATE api_keys SET revoked_at = least(revoked_at, now()) WHERE key_id = $1 \
             RETURNING tenant_id",
            &[&key_id],
        )
        .await?
    else {
        return Ok(None);
    };
    // A second statement (a failure between the two is covered: verification also refuses a
    // link whose creator is revoked).
    let share_tokens = client
        .query(
            "UPDATE share_tokens SET revoked_at = least(revoked_at, now()) \
             WHERE created_by = $1 RETURNING token_id",
            &[&key_id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(Some(RevokedKey {
        tenant_id: row.get(0),
        share_tokens,
    }))
}

/// A key that passed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedKey {
    pub key_id: String,
    pub tenant_id: Option<i64>,
    pub kind: KeyKind,
    /// Of a write key: its allowed origins and its tenant's collect limits.
    pub collect: Option<Arc<KeyPolicy>>,
}

#[derive(Clone)]
struct StoredKey {
    tenant_id: Option<i64>,
    kind: KeyKind,
    hash: [u8; 32],
    revoked: bool,
    collect: Option<Arc<KeyPolicy>>,
}

/// A small map of recently verified credentials, each trusted for `ttl`.
struct TtlMap<V> {
    ttl: Duration,
    entries: Mutex<BoundedMap<String, (V, std::time::Instant)>>,
}

impl<V: Clone> TtlMap<V> {
    fn new(ttl: Duration) -> Self {
        TtlMap {
            ttl,
            entries: Mutex::new(BoundedMap::new(CACHE_CAPACITY)),
        }
    }

    fn get(&self, id: &str) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (value, at) = entries.get(id)?;
        (at.elapsed() < self.ttl).then(|| value.clone())
    }

    fn put(&self, id: &str, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        // One unit per credential; expired ones are the first to go.
        entries.insert(
            id.to_string(),
            (value, std::time::Instant::now()),
            1,
            |_, (_, at)| at.elapsed() < self.ttl,
        );
    }

    fn forget(&self, id: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// Verifies API keys and share tokens, caching what the database said for a short while.
pub struct Verifier {
    keys: TtlMap<StoredKey>,
    shares: TtlMap<ShareRow>,
}

#[derive(Clone)]
struct ShareRow {
    tenant_id: i64,
    revoked: bool,
}

impl Verifier {
    pub fn new(ttl: Duration) -> Self {
        Verifier {
            keys: TtlMap::new(ttl),
            shares: TtlMap::new(ttl),
        }
    }

    /// The cheap part of [`verify_key`](Self::verify_key), for callers that would rather not
    /// take a database connection when none is needed: a malformed key is refused, a key this
    /// instance verified recently is answered (`Some`); `None` means the database must say.
    pub fn cached_key(&self, presented: &str) -> Result<Option<VerifiedKey>, AccessError> {
        let (claimed_kind, key_id) = split_key(presented).ok_or(AccessError::Unauthorized)?;
        self.keys
            .get(key_id)
            .map(|stored| check_key(presented, claimed_kind, key_id, &stored))
            .transpose()
    }

    /// Checks a presented key: format, known id, hash, not revoked. The kind is the caller's
    /// to check.
    pub async fn verify_key<C: GenericClient>(
        &self,
        client: &C,
        presented: &str,
    ) -> Result<VerifiedKey, AccessError> {
        let (claimed_kind, key_id) = split_key(presented).ok_or(AccessError::Unauthorized)?;
        let stored = match self.keys.get(key_id) {
            Some(stored) => stored,
            None => {
                let Some(row) = client
                    .query_opt(
                        &format!(
                            "SELECT k.tenant_id, k.kind, k.secret_hash, k.revoked_at IS NOT NULL, \
                                    k.last_used_at IS NULL \
                                    OR k.last_used_at < now() - $2::text::interval, \
                                    k.allowed_origins, {OVERRIDE_COLUMNS} \
                             FROM api_keys k LEFT JOIN tenants t ON t.tenant_id = k.tenant_id \
                             WHERE k.key_id = $1"
                        ),
                        &[
                            &key_id,
                            &format!("{} seconds", LAST_USED_RESOLUTION.num_seconds()),
                        ],
                    )
                    .await?
                else {
                    return Err(AccessError::Unauthorized);
                };
                let kind: String = row.get(1);
                let kind: KeyKind = kind.parse().map_err(|_| AccessError::Unauthorized)?;
                let hash: Vec<u8> = row.get(2);
                let collect = (kind == KeyKind::Write).then(|| {
                    Arc::new(KeyPolicy {
                        allowed_origins: row.get(5),
                        overrides: Overrides::from_row(&row, 6),
                    })
                });
                let stored = StoredKey {
                    tenant_id: row.get(0),
                    kind,
                    hash: hash.try_into().map_err(|_| AccessError::Unauthorized)?,
                    revoked: row.get(3),
                    collect,
                };
                let stale_use: bool = row.get(4);
                let genuine = bool::from(key_hash(presented).ct_eq(&stored.hash));
                if genuine && !stored.revoked && stale_use {
                    // Best effort: a failed refresh must not refuse a valid key.
                    if let Err(e) = client
                        .execute(
                            "UPDATE api_keys SET last_used_at = now() WHERE key_id = $1",
                            &[&key_id],
                        )
                        .await
                    {
                        tracing::warn!(key_id, error = %e, "cannot record key use");
                    }
                }
                if genuine {
                    // Only genuine keys are cached: a guessed id with a wrong secret must not
                    // evict or shadow anything.
                    self.keys.put(key_id, stored.clone());
                }
                stored
            }
        };
        check_key(presented, claimed_kind, key_id, &stored)
    }

    /// Drops a key from this instance's cache (after revoking it here).
    pub fn forget_key(&self, key_id: &str) {
        self.keys.forget(key_id);
    }

    /// Drops a share token from this instance's cache (after revoking it here).
    pub fn forget_share(&self, token_id: &str) {
        self.shares.forget(token_id);
    }

    /// The cheap part of [`verify_share`](Self::verify_share): signature and expiry are
    /// checked (no connection needed), and a token this instance looked up recently is
    /// answered (`Some`); `None` means the database must say whether it was revoked.
    pub fn cached_share(
        &self,
        secret: Option<&ShareSecret>,
        presented: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ShareClaims>, AccessError> {
        let secret = secret.ok_or(AccessError::ShareTokensDisabled)?;
        let claims = open_share_token(secret, presented, now)?;
        self.shares
            .get(&claims.token_id)
            .map(|row| check_share(claims, &row))
            .transpose()
    }

    /// Checks a presented share token: signature under `secret`, expiry at `now`, and the
    /// stored row (exists, same tenant, not revoked).
    pub async fn verify_share<C: GenericClient>(
        &self,
        client: &C,
        secret: Option<&ShareSecret>,
        presented: &str,
        now: DateTime<Utc>,
    ) -> Result<ShareClaims, AccessError> {
        let secret = secret.ok_or(AccessError::ShareTokensDisabled)?;
        let claims = open_share_token(secret, presented, now)?;
        let row = match self.shares.get(&claims.token_id) {
            Some(row) => row,
            None => {
                // Revoked with its own revocation or its creator's.
                let Some(r) = client
                    .query_opt(
                        "SELECT s.tenant_id, s.revoked_at IS NOT NULL OR k.revoked_at IS NOT NULL \
                         FROM share_tokens s LEFT JOIN api_keys k ON k.key_id = s.created_by \
                         WHERE s.token_id = $1",
                        &[&claims.token_id],
                    )
                    .await?
                else {
                    return Err(AccessError::Unauthorized);
                };
                let row = ShareRow {
                    tenant_id: r.get(0),
                    revoked: r.get(1),
                };
                self.shares.put(&claims.token_id, row.clone());
                row
            }
        };
        check_share(claims, &row)
    }
}

/// A presented key against what is stored for its id (the hash compared in constant time).
fn check_key(
    presented: &str,
    claimed_kind: KeyKind,
    key_id: &str,
    stored: &StoredKey,
) -> Result<VerifiedKey, AccessError> {
    let genuine = bool::from(key_hash(presented).ct_eq(&stored.hash));
    if !genuine || stored.revoked || stored.kind != claimed_kind {
        return Err(AccessError::Unauthorized);
    }
    Ok(VerifiedKey {
        key_id: key_id.to_string(),
        tenant_id: stored.tenant_id,
        kind: stored.kind,
        collect: stored.collect.clone(),
    })
}

/// A share token's signed claims against its stored row.
fn check_share(claims: ShareClaims, row: &ShareRow) -> Result<ShareClaims, AccessError> {
    if row.tenant_id != claims.tenant_id {
        return Err(AccessError::Unauthorized);
    }
    if row.revoked {
        return Err(AccessError::ShareRevoked);
    }
    Ok(claims)
}

/// What a share token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareClaims {
    pub token_id: String,
    pub tenant_id: i64,
    pub expires_at: DateTime<Utc>,
    pub filters: Filters,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    v: u8,
    tid: String,
    ten: i64,
    exp: i64,
    #[serde(default, skip_serializing_if = "Filters::is_empty")]
    f: Filters,
}

const SHARE_PREFIX: &str = "rms_";
/// Signed with the payload, so a signature cannot be reused for another purpose.
const SHARE_CONTEXT: &[u8] = b"remarketable share token v1.";

fn mac(secret: &ShareSecret, payload_b64: &str) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret.bytes()).expect("HMAC takes any key");
    mac.update(SHARE_CONTEXT);
    mac.update(payload_b64.as_bytes());
    mac
}

/// Signs `claims` into a token text.
pub fn seal_share_token(secret: &ShareSecret, claims: &ShareClaims) -> String {
    let payload = Payload {
        v: 1,
        tid: claims.token_id.clone(),
        ten: claims.tenant_id,
        exp: claims.expires_at.timestamp(),
        f: claims.filters.clone(),
    };
    let json = serde_json::to_vec(&payload).expect("the payload serializes");
    let payload_b64 = URL_SAFE_NO_PAD.encode(json);
    let signature = mac(secret, &payload_b64).finalize().into_bytes();
    format!(
        "{SHARE_PREFIX}{payload_b64}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// Checks a token's signature and expiry, without the database.
pub fn open_share_token(
    secret: &ShareSecret,
    token: &str,
    now: DateTime<Utc>,
) -> Result<ShareClaims, AccessError> {
    let body = token
        .strip_prefix(SHARE_PREFIX)
        .ok_or(AccessError::Unauthorized)?;
    if body.len() > 4096 {
        return Err(AccessError::Unauthorized);
    }
    let (payload_b64, signature_b64) = body.split_once('.').ok_or(AccessError::Unauthorized)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| AccessError::Unauthorized)?;
    // verify_slice compares in constant time.
    mac(secret, payload_b64)
        .verify_slice(&signature)
        .map_err(|_| AccessError::Unauthorized)?;
    let json = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| AccessError::Unauthorized)?;
    let payload: Payload = serde_json::from_slice(&json).map_err(|_| AccessError::Unauthorized)?;
    if payload.v != 1 || !is_id(&payload.tid) || payload.ten <= 0 {
        return Err(AccessError::Unauthorized);
    }
    let expires_at = DateTime::from_timestamp(payload.exp, 0).ok_or(AccessError::Unauthorized)?;
    if expires_at <= now {
        return Err(AccessError::ShareExpired);
    }
    Ok(ShareClaims {
        token_id: payload.tid,
        tenant_id: payload.ten,
        expires_at,
        filters: payload.f,
    })
}

/// A share token as created: `token` is shown once (it can only be made again with the secret).
#[derive(Clone, Serialize)]
pub struct NewShareToken {
    pub token_id: String,
    pub token: String,
    pub tenant_id: i64,
    pub expires_at: DateTime<Utc>,
    pub filters: BTreeMap<String, String>,
    pub label: String,
}

impl fmt::Debug for NewShareToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewShareToken")
            .field("token_id", &self.token_id)
            .field("tenant_id", &self.tenant_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A stored share token (the token text is not stored).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShareTokenInfo {
    pub token_id: String,
    pub tenant_id: i64,
    /// The key that made it (`None`: made by an operator with the CLI).
    pub created_by: Option<String>,
    pub filters: BTreeMap<String, String>,
    pub label: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Checks a share token lifetime against [`MIN_SHARE_TTL`]..=[`MAX_SHARE_TTL`].
pub fn check_share_ttl(seconds: i64) -> Result<chrono::Duration, AccessError> {
    let ttl = chrono::Duration::seconds(seconds);
    if ttl < MIN_SHARE_TTL || ttl > MAX_SHARE_TTL {
        return Err(AccessError::Invalid {
            code: ErrorCode::BadExpiry,
            message: format!(
                "a share token lives between {} seconds and {} days",
                MIN_SHARE_TTL.num_seconds(),
                MAX_SHARE_TTL.num_days()
            ),
        });
    }
    Ok(ttl)
}

/// Creates and signs a share token of `tenant_id`, valid for `ttl` from now; `created_by`,
/// the key that asks for it (revoking that key revokes the token).
pub async fn create_share_token<C: GenericClient>(
    client: &C,
    secret: Option<&ShareSecret>,
    tenant_id: i64,
    ttl: chrono::Duration,
    filters: Filters,
    label: &str,
    created_by: Option<&str>,
) -> Result<NewShareToken, AccessError> {
    let secret = secret.ok_or(AccessError::ShareTokensDisabled)?;
    let ttl = check_share_ttl(ttl.num_seconds())?;
    let label = check_label(label)?;
    let token_id = new_id()?;
    let names = filters.names();
    let filters_json = serde_json::to_value(&names).expect("filters serialize");
    let ttl_text = format!("{} seconds", ttl.num_seconds());
    // Whole seconds: the token carries its expiry in seconds.
    // INSERT .. VALUES on the reference table, as for keys.
    let row = client
        .query_one(
            "INSERT INTO share_tokens (token_id, tenant_id, filters, expires_at, label, created_by) \
             VALUES ($1, $2, $3, date_trunc('second', now() + $4::text::interval), $5, $6) \
             RETURNING expires_at",
            &[&token_id, &tenant_id, &filters_json, &ttl_text, &label, &created_by],
        )
        .await
        .map_err(|e| unknown_tenant_or(e, tenant_id))?;
    let expires_at: DateTime<Utc> = row.get(0);
    let token = seal_share_token(
        secret,
        &ShareClaims {
            token_id: token_id.clone(),
            tenant_id,
            expires_at,
            filters,
        },
    );
    Ok(NewShareToken {
        token_id,
        token,
        tenant_id,
        expires_at,
        filters: names,
        label,
    })
}

/// Share tokens of a tenant, newest first, one page. A token whose creating key is revoked
/// reads as revoked then.
pub async fn list_share_tokens<C: GenericClient>(
    client: &C,
    tenant_id: i64,
    page: &Page,
) -> Result<Listing<ShareTokenInfo>, AccessError> {
    let rows = client
        .query(
            "SELECT s.token_id, s.tenant_id, s.filters, s.label, s.created_at, s.expires_at, \
                    least(s.revoked_at, k.revoked_at), s.created_by \
             FROM share_tokens s LEFT JOIN api_keys k ON k.key_id = s.created_by \
             WHERE s.tenant_id = $1 \
               AND ($2::text IS NULL OR (s.created_at, s.token_id) < \
                    (SELECT created_at, token_id FROM share_tokens WHERE token_id = $2)) \
             ORDER BY s.created_at DESC, s.token_id DESC LIMIT $3",
            &[&tenant_id, &page.after, &page.fetch()],
        )
        .await?;
    let tokens = rows
        .iter()
        .map(|r| {
            let filters: serde_json::Value = r.get(2);
            ShareTokenInfo {
                token_id: r.get(0),
                tenant_id: r.get(1),
                created_by: r.get(7),
                filters: serde_json::from_value(filters).unwrap_or_default(),
                label: r.get(3),
                created_at: r.get(4),
                expires_at: r.get(5),
                revoked_at: r.get(6),
            }
        })
        .collect();
    Ok(page.cut(tokens, |t: &ShareTokenInfo| t.token_id.clone()))
}

/// Revokes a share token, of `tenant_id` when given. Answers whether such a token exists.
pub async fn revoke_share_token<C: GenericClient>(
    client: &C,
    tenant_id: Option<i64>,
    token_id: &str,
) -> Result<bool, AccessError> {
    let n = client
        .execute(
            // least(): see revoke_key.
            "UPDATE share_tokens SET revoked_at = least(revoked_at, now()) \
             WHERE token_id = $1 AND ($2::bigint IS NULL OR tenant_id = $2)",
            &[&token_id, &tenant_id],
        )
        .await?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> ShareSecret {
        ShareSecret::new(&format!("{s:0<40}")).unwrap()
    }

    fn claims(exp: DateTime<Utc>) -> ShareClaims {
        ShareClaims {
            token_id: "0123456789abcdef".into(),
            tenant_id: 7,
            expires_at: DateTime::from_timestamp(exp.timestamp(), 0).unwrap(),
            filters: parse_filters([("country", "DE")]).unwrap(),
        }
    }

    #[test]
    fn share_tokens_round_trip_and_refuse_tampering() {
        let now = Utc::now();
        let c = claims(now + chrono::Duration::hours(1));
        let token = seal_share_token(&secret("a"), &c);
        assert_eq!(open_share_token(&secret("a"), &token, now).unwrap(), c);
        // Another secret.
        assert!(matches!(
            open_share_token(&secret("b"), &token, now),
            Err(AccessError::Unauthorized)
        ));
        // A payload with another tenant under the old signature.
        let (payload, sig) = token.strip_prefix("rms_").unwrap().split_once('.').unwrap();
        let mut json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        json["ten"] = 8.into();
        let forged = format!("rms_{}.{sig}", URL_SAFE_NO_PAD.encode(json.to_string()));
        assert!(matches!(
            open_share_token(&secret("a"), &forged, now),
            Err(AccessError::Unauthorized)
        ));
        // Expired.
        assert!(matches!(
            open_share_token(&secret("a"), &token, now + chrono::Duration::hours(2)),
            Err(AccessError::ShareExpired)
        ));
        for junk in ["", "rms_", "rms_.", "rmk_read_x", &token[..token.len() - 2]] {
            assert!(
                matches!(
                    open_share_token(&secret("a"), junk, now),
                    Err(AccessError::Unauthorized)
                ),
                "{junk}"
            );
        }
    }

    #[test]
    fn key_texts_are_parsed_strictly() {
        let secret = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let key = format!("rmk_write_0123456789abcdef_{secret}");
        assert_eq!(split_key(&key), Some((KeyKind::Write, "0123456789abcdef")));
        for bad in [
            format!("rmk_owner_0123456789abcdef_{secret}"),
            format!("rmk_read_0123456789ABCDEF_{secret}"),
            format!("rmk_read_0123456789abcdef_{}", &secret[..20]),
            format!("xyz_read_0123456789abcdef_{secret}"),
            format!("rmk_read_0123456789abcdef_{secret} "),
        ] {
            assert_eq!(split_key(&bad), None, "{bad}");
        }
    }

    #[test]
    fn filters_are_a_closed_set() {
        let f = parse_filters([("country", "DE"), ("campaign", "black-friday")]).unwrap();
        assert_eq!(
            f.names(),
            BTreeMap::from([
                ("campaign".to_string(), "black-friday".to_string()),
                ("country".to_string(), "DE".to_string())
            ])
        );
        for (k, v) in [
            ("tenant_id", "2"),
            ("country", "de"),
            ("country", "DEU"),
            ("event_type", "Page View"),
            ("browser", ""),
        ] {
            let err = parse_filters([(k, v)]).unwrap_err();
            assert!(
                matches!(
                    err,
                    AccessError::Invalid {
                        code: ErrorCode::BadFilter,
                        ..
                    }
                ),
                "{k}={v}"
            );
        }
        assert!(parse_filters([("country", "DE"), ("country", "FR")]).is_err());
    }

    #[test]
    fn share_lifetimes_are_bounded() {
        assert!(check_share_ttl(59).is_err());
        assert!(check_share_ttl(60).is_ok());
        assert!(check_share_ttl(90 * 86_400).is_ok());
        assert!(check_share_ttl(90 * 86_400 + 1).is_err());
    }
}
