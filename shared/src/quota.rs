//! collect's limits per write key and per tenant: rate limits, daily quotas and allowed
//! origins. Write keys sit in web pages, so anyone may send with one; these limits bound what
//! one key, or one tenant, can push into the stream.
//!
//! - **Rates** are token buckets per key and per tenant, in each process (a deployment with `n`
//!   instances accepts up to `n` times the rate; the daily quota is the global bound). A bucket
//!   holds [`BURST_SECONDS`] of its rate; a request is admitted while both of its buckets are
//!   above zero and then takes one token per event, possibly going into debt, so a large
//!   request is never refused forever and a client keeping over the pace waits longer.
//! - **Daily quotas** count accepted events per key and per tenant and UTC day in the
//!   `collect_usage` table (migration V22). Each process keeps what it accepted since its last
//!   flush and writes it at most every [`FLUSH_INTERVAL`], reading back every instance's totals;
//!   the quota is checked against those totals plus the process's own unflushed part, so with
//!   `n` instances it may be overshot by what the others accepted within one interval. When the
//!   database cannot be read the check admits (collect does not stop because its accounting
//!   did) and says so in the log; the counts stay pending and are written once it answers.
//! - **Origins**: a write key may name the origins (`https://shop.example.com`) it is used
//!   from. A request whose `Origin` (or, without one, `Referer`) names another origin is
//!   refused; one naming none (a server, a tracker without headers) is let through: these
//!   headers stop other web pages from reusing a key, not a determined client.
//!
//! Per-tenant overrides of the four settings are stored with the tenant ([`Overrides`]).

use crate::cache::BoundedMap;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_postgres::GenericClient;

/// Seconds of its rate that a bucket holds when full.
pub const BURST_SECONDS: f64 = 2.0;

/// Most often a process writes its usage (and reads every instance's totals back).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Buckets kept per process; idle ones go first when there are more.
const BUCKET_CAPACITY: usize = 100_000;

/// The settings: events per second and per UTC day, per write key and per tenant; 0 for no
/// limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub events_per_second: u32,
    pub events_per_day: u64,
    pub key_events_per_second: u32,
    pub key_events_per_day: u64,
}

/// A tenant's own values for some of the [`Limits`] (`None`: the setting's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    pub events_per_second: Option<u32>,
    pub events_per_day: Option<u64>,
    pub key_events_per_second: Option<u32>,
    pub key_events_per_day: Option<u64>,
}

/// The tenant columns of [`Overrides`], in its order.
pub const OVERRIDE_COLUMNS: &str = "collect_events_per_second, collect_events_per_day, \
     collect_key_events_per_second, collect_key_events_per_day";

impl Overrides {
    /// Reads the four [`OVERRIDE_COLUMNS`] starting at column `first`.
    pub fn from_row(row: &tokio_postgres::Row, first: usize) -> Overrides {
        let rate = |i: usize| {
            row.get::<_, Option<i32>>(first + i)
                .map(|v| v.max(0) as u32)
        };
        let day = |i: usize| {
            row.get::<_, Option<i64>>(first + i)
                .map(|v| v.max(0) as u64)
        };
        Overrides {
            events_per_second: rate(0),
            events_per_day: day(1),
            key_events_per_second: rate(2),
            key_events_per_day: day(3),
        }
    }
}

impl Limits {
    /// These settings with a tenant's overrides applied.
    pub fn with(self, o: &Overrides) -> Limits {
        Limits {
            events_per_second: o.events_per_second.unwrap_or(self.events_per_second),
            events_per_day: o.events_per_day.unwrap_or(self.events_per_day),
            key_events_per_second: o
                .key_events_per_second
                .unwrap_or(self.key_events_per_second),
            key_events_per_day: o.key_events_per_day.unwrap_or(self.key_events_per_day),
        }
    }
}

/// Largest per-second and per-day values a setting or an override may take.
pub const MAX_EVENTS_PER_SECOND: u32 = 10_000_000;
pub const MAX_EVENTS_PER_DAY: u64 = 1_000_000_000_000;

/// Stores a tenant's overrides; `false` when the tenant is not registered.
pub async fn set_overrides<C: GenericClient>(
    client: &C,
    tenant_id: i64,
    o: &Overrides,
) -> Result<bool, tokio_postgres::Error> {
    let rate = |v: Option<u32>| v.map(|v| v as i32);
    let day = |v: Option<u64>| v.map(|v| v as i64);
    let updated = client
        .execute(
            "UPDATE tenants SET collect_events_per_second = $2, collect_events_per_day = $3, \
                    collect_key_events_per_second = $4, collect_key_events_per_day = $5 \
             WHERE tenant_id = $1",
            &[
                &tenant_id,
                &rate(o.events_per_second),
                &day(o.events_per_day),
                &rate(o.key_events_per_second),
                &day(o.key_events_per_day),
            ],
        )
        .await?;
    Ok(updated == 1)
}

/// A tenant's overrides; `None` when the tenant is not registered.
pub async fn overrides<C: GenericClient>(
    client: &C,
    tenant_id: i64,
) -> Result<Option<Overrides>, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            &format!("SELECT {OVERRIDE_COLUMNS} FROM tenants WHERE tenant_id = $1"),
            &[&tenant_id],
        )
        .await?
        .map(|row| Overrides::from_row(&row, 0)))
}

/// What a write key may do in collect, loaded with the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPolicy {
    /// `None`: any origin.
    pub allowed_origins: Option<Vec<String>>,
    pub overrides: Overrides,
}

impl KeyPolicy {
    /// Whether a request with these `Origin` and `Referer` headers may use the key.
    pub fn origin_allowed(&self, origin: Option<&str>, referer: Option<&str>) -> bool {
        let Some(allowed) = &self.allowed_origins else {
            return true;
        };
        let named = match origin.map(str::trim).filter(|o| !o.is_empty()) {
            Some(origin) => Some(origin.to_ascii_lowercase()),
            None => referer.and_then(origin_of_url),
        };
        match named {
            None => true,
            Some(origin) => allowed.contains(&origin),
        }
    }
}

/// `scheme://host[:port]` of an absolute http(s) URL, lower-cased; `None` for anything else
/// (a Referer that names no origin is treated as absent).
fn origin_of_url(url: &str) -> Option<String> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    // Credentials in a URL are not part of its origin.
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    (!host.is_empty()).then(|| format!("{}://{}", scheme, host).to_ascii_lowercase())
}

/// Why collect refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over a rate: retry after this many seconds.
    Rate { scope: Scope, retry_after: u32 },
    /// Over the day's quota of `limit` events: retry after this many seconds (next UTC day).
    Quota {
        scope: Scope,
        limit: u64,
        retry_after: u32,
    },
    /// The key may not be used from the request's origin.
    Origin,
}

/// Whose limit a refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Key,
    Tenant,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Key => "write key",
            Scope::Tenant => "tenant",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(rate) * BURST_SECONDS,
            at: now,
        }
    }

    fn refill(&mut self, rate: u32, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * f64::from(rate)).min(f64::from(rate) * BURST_SECONDS);
        self.at = now;
    }

    /// Seconds until the bucket is above zero again (at least one).
    fn wait(&self, rate: u32) -> u32 {
        let seconds = (-self.tokens / f64::from(rate.max(1))).ceil();
        seconds.clamp(1.0, 3600.0) as u32
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum BucketId {
    Tenant(i64),
    Key(String),
}

/// Counts of one key on one day, as stored in `collect_usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub accepted_events: i64,
    pub accepted_requests: i64,
    pub refused_rate: i64,
    pub refused_quota: i64,
    pub refused_origin: i64,
}

impl Usage {
    fn is_empty(&self) -> bool {
        *self == Usage::default()
    }

    fn add(&mut self, other: &Usage) {
        self.accepted_events += other.accepted_events;
        self.accepted_requests += other.accepted_requests;
        self.refused_rate += other.refused_rate;
        self.refused_quota += other.refused_quota;
        self.refused_origin += other.refused_origin;
    }

    fn refused(refusal: Refusal) -> Usage {
        let mut u = Usage::default();
        match refusal {
            Refusal::Rate { .. } => u.refused_rate = 1,
            Refusal::Quota { .. } => u.refused_quota = 1,
            Refusal::Origin => u.refused_origin = 1,
        }
        u
    }
}

/// Accepted events per key of a tenant on a day, as the database last said (every instance's).
#[derive(Debug, Clone, Default)]
struct Stored {
    keys: HashMap<String, i64>,
}

impl Stored {
    fn tenant(&self) -> i64 {
        self.keys.values().sum()
    }
}

#[derive(Default)]
struct Book {
    /// Not yet written: (tenant, day, key) → counts.
    pending: HashMap<(i64, NaiveDate, String), Usage>,
    /// Totals read back: (tenant, day) → per key. Only today's are kept.
    stored: HashMap<(i64, NaiveDate), Stored>,
    last_flush: Option<Instant>,
}

impl Book {
    fn pending_accepted(&self, tenant: i64, day: NaiveDate, key: Option<&str>) -> i64 {
        self.pending
            .iter()
            .filter(|((t, d, k), _)| *t == tenant && *d == day && key.is_none_or(|key| k == key))
            .map(|(_, u)| u.accepted_events)
            .sum()
    }

    fn record(&mut self, tenant: i64, day: NaiveDate, key: &str, usage: &Usage) {
        self.pending
            .entry((tenant, day, key.to_string()))
            .or_default()
            .add(usage);
    }
}

/// The limits of one process: buckets and the usage book. Shared by every request.
pub struct Gate {
    defaults: Limits,
    buckets: Mutex<BoundedMap<BucketId, Bucket>>,
    book: Mutex<Book>,
    /// One flush at a time.
    flushing: tokio::sync::Mutex<()>,
}

/// A request that passed the rate check, to be completed with its event count.
pub struct Admission<'a> {
    gate: &'a Gate,
    tenant_id: i64,
    key_id: String,
    limits: Limits,
}

impl Gate {
    pub fn new(defaults: Limits) -> Gate {
        Gate {
            defaults,
            buckets: Mutex::new(BoundedMap::new(BUCKET_CAPACITY)),
            book: Mutex::new(Book::default()),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn defaults(&self) -> Limits {
        self.defaults
    }

    /// The first checks of a request by `key_id` of `tenant_id`: origin, then rates (before
    /// the body is read, so a flood over the rate costs no parsing). A refusal is counted.
    pub fn open(
        &self,
        tenant_id: i64,
        key_id: &str,
        policy: &KeyPolicy,
        origin: Option<&str>,
        referer: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Admission<'_>, Refusal> {
        let limits = self.defaults.with(&policy.overrides);
        let refused = |refusal: Refusal| {
            self.lock_book().record(
                tenant_id,
                now.date_naive(),
                key_id,
                &Usage::refused(refusal),
            );
            refusal
        };
        if !policy.origin_allowed(origin, referer) {
            return Err(refused(Refusal::Origin));
        }
        let instant = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        for (id, rate, scope) in [
            (
                BucketId::Key(key_id.to_string()),
                limits.key_events_per_second,
                Scope::Key,
            ),
            (
                BucketId::Tenant(tenant_id),
                limits.events_per_second,
                Scope::Tenant,
            ),
        ] {
            if rate == 0 {
                continue;
            }
            let bucket = draw(&mut buckets, id, rate, instant, 0.0);
            if bucket.tokens <= 0.0 {
                drop(buckets);
                return Err(refused(Refusal::Rate {
                    scope,
                    retry_after: bucket.wait(rate),
                }));
            }
        }
        Ok(Admission {
            gate: self,
            tenant_id,
            key_id: key_id.to_string(),
            limits,
        })
    }

    fn lock_book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes what this process counted since its last flush, if [`FLUSH_INTERVAL`] has
    /// passed (or `force`), and reads today's totals of the tenants it wrote back. On a
    /// database error the counts stay pending.
    pub async fn flush<C: GenericClient>(
        &self,
        client: &C,
        force: bool,
    ) -> Result<usize, tokio_postgres::Error> {
        let Ok(_one) = self.flushing.try_lock() else {
            return Ok(0);
        };
        let pending: Vec<((i64, NaiveDate, String), Usage)> = {
            let mut book = self.lock_book();
            let due = book
                .last_flush
                .is_none_or(|at| at.elapsed() >= FLUSH_INTERVAL);
            if !(due || force) || book.pending.is_empty() {
                return Ok(0);
            }
            book.last_flush = Some(Instant::now());
            book.pending.drain().collect()
        };
        let written = pending.len();
        let result = write_usage(client, &pending).await;
        match result {
            Ok(totals) => {
                let today = Utc::now().date_naive();
                let mut book = self.lock_book();
                book.stored.retain(|(_, day), _| *day >= today);
                for ((tenant, day), stored) in totals {
                    if day >= today {
                        book.stored.insert((tenant, day), stored);
                    }
                }
                Ok(written)
            }
            Err(e) => {
                // Back into the book, added to whatever came in meanwhile.
                let mut book = self.lock_book();
                for ((tenant, day, key), usage) in pending {
                    book.record(tenant, day, &key, &usage);
                }
                Err(e)
            }
        }
    }

    /// Today's stored totals of a tenant, loading them if this process has none yet.
    async fn stored_today<C: GenericClient>(
        &self,
        client: &C,
        tenant_id: i64,
        day: NaiveDate,
    ) -> Result<Stored, tokio_postgres::Error> {
        if let Some(stored) = self.lock_book().stored.get(&(tenant_id, day)) {
            return Ok(stored.clone());
        }
        let stored = read_stored(client, tenant_id, day).await?;
        self.lock_book()
            .stored
            .insert((tenant_id, day), stored.clone());
        Ok(stored)
    }
}

/// Refills the bucket `id` to `now`, takes `tokens` from it and keeps it; answers it as left.
fn draw(
    buckets: &mut BoundedMap<BucketId, Bucket>,
    id: BucketId,
    rate: u32,
    now: Instant,
    tokens: f64,
) -> Bucket {
    let mut bucket = buckets
        .get(&id)
        .copied()
        .unwrap_or_else(|| Bucket::full(rate, now));
    bucket.refill(rate, now);
    bucket.tokens -= tokens;
    // Buckets used within their burst time are kept when the map is full: an idle one has
    // refilled (or nearly), the same as none.
    let idle = Duration::from_secs_f64(BURST_SECONDS);
    buckets.insert(id, bucket, 1, |_, b| b.at.elapsed() < idle);
    bucket
}

/// Every instance's accepted events of a tenant's keys on `day`.
async fn read_stored<C: GenericClient>(
    client: &C,
    tenant_id: i64,
    day: NaiveDate,
) -> Result<Stored, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT key_id, accepted_events FROM collect_usage \
             WHERE tenant_id = $1 AND day = $2",
            &[&tenant_id, &day],
        )
        .await?;
    Ok(Stored {
        keys: rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
    })
}

/// Adds `pending` to `collect_usage` and answers the day's per-key totals of every tenant
/// and day written, in one transaction per tenant and day (each a single shard on Citus).
async fn write_usage<C: GenericClient>(
    client: &C,
    pending: &[((i64, NaiveDate, String), Usage)],
) -> Result<HashMap<(i64, NaiveDate), Stored>, tokio_postgres::Error> {
    let mut by_tenant: HashMap<(i64, NaiveDate), Vec<(&str, &Usage)>> = HashMap::new();
    for ((tenant, day, key), usage) in pending {
        if !usage.is_empty() {
            by_tenant
                .entry((*tenant, *day))
                .or_default()
                .push((key, usage));
        }
    }
    let mut totals = HashMap::new();
    for ((tenant, day), rows) in by_tenant {
        let keys: Vec<&str> = rows.iter().map(|(k, _)| *k).collect();
        let col = |f: fn(&Usage) -> i64| rows.iter().map(|(_, u)| f(u)).collect::<Vec<i64>>();
        client
            .execute(
                "INSERT INTO collect_usage AS u (tenant_id, day, key_id, accepted_events, \
                     accepted_requests, refused_rate, refused_quota, refused_origin) \
                 SELECT $1, $2, k, a, r, rr, rq, ro \
                 FROM unnest($3::text[], $4::bigint[], $5::bigint[], $6::bigint[], \
                             $7::bigint[], $8::bigint[]) AS t(k, a, r, rr, rq, ro) \
                 ON CONFLICT (tenant_id, day, key_id) DO UPDATE SET \
                     accepted_events = u.accepted_events + excluded.accepted_events, \
                     accepted_requests = u.accepted_requests + excluded.accepted_requests, \
                     refused_rate = u.refused_rate + excluded.refused_rate, \
                     refused_quota = u.refused_quota + excluded.refused_quota, \
                     refused_origin = u.refused_origin + excluded.refused_origin",
                &[
                    &tenant,
                    &day,
                    &keys,
                    &col(|u| u.accepted_events),
                    &col(|u| u.accepted_requests),
                    &col(|u| u.refused_rate),
                    &col(|u| u.refused_quota),
                    &col(|u| u.refused_origin),
                ],
            )
            .await?;
        totals.insert((tenant, day), read_stored(client, tenant, day).await?);
    }
    Ok(totals)
}

/// Seconds from `now` to the next UTC midnight (at least one).
fn until_tomorrow(now: DateTime<Utc>) -> u32 {
    let tomorrow = now
        .date_naive()
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or(now);
    (tomorrow - now).num_seconds().clamp(1, 86_400) as u32
}

impl Gate {
    /// Whether [`flush`](Self::flush) would write now.
    pub fn flush_due(&self) -> bool {
        let book = self.lock_book();
        !book.pending.is_empty()
            && book
                .last_flush
                .is_none_or(|at| at.elapsed() >= FLUSH_INTERVAL)
    }
}

impl Admission<'_> {
    /// Whether [`take`](Self::take) needs the database: a daily quota applies and this
    /// process has not read today's totals of the tenant yet.
    pub fn needs_totals(&self, now: DateTime<Utc>) -> bool {
        (self.limits.events_per_day > 0 || self.limits.key_events_per_day > 0)
            && !self
                .gate
                .lock_book()
                .stored
                .contains_key(&(self.tenant_id, now.date_naive()))
    }

    /// Completes the admission of `events` events: checks the daily quotas (reading today's
    /// totals when this process has none), then takes the events from the buckets and counts
    /// them as accepted. Where the totals cannot be read, the quota is not checked (logged).
    pub async fn take<C: GenericClient>(
        self,
        client: Option<&C>,
        events: usize,
        now: DateTime<Utc>,
    ) -> Result<Accepted, Refusal> {
        let gate = self.gate;
        let day = now.date_naive();
        let n = events as i64;
        let l = self.limits;
        if l.events_per_day > 0 || l.key_events_per_day > 0 {
            let stored = match client {
                Some(client) => gate.stored_today(client, self.tenant_id, day).await,
                None => Ok(gate
                    .lock_book()
                    .stored
                    .get(&(self.tenant_id, day))
                    .cloned()
                    .unwrap_or_default()),
            };
            match stored {
                Ok(stored) => {
                    let book = gate.lock_book();
                    let key_used = stored.keys.get(&self.key_id).copied().unwrap_or(0)
                        + book.pending_accepted(self.tenant_id, day, Some(&self.key_id));
                    let tenant_used =
                        stored.tenant() + book.pending_accepted(self.tenant_id, day, None);
                    drop(book);
                    for (used, limit, scope) in [
                        (key_used, l.key_events_per_day, Scope::Key),
                        (tenant_used, l.events_per_day, Scope::Tenant),
                    ] {
                        if limit > 0 && (used + n) as u64 > limit {
                            let refusal = Refusal::Quota {
                                scope,
                                limit,
                                retry_after: until_tomorrow(now),
                            };
                            gate.lock_book().record(
                                self.tenant_id,
                                day,
                                &self.key_id,
                                &Usage::refused(refusal),
                            );
                            return Err(refusal);
                        }
                    }
                }
                Err(e) => tracing::warn!(
                    tenant_id = self.tenant_id,
                    error = %e,
                    "collect's daily usage cannot be read: the quota is not checked for this request"
                ),
            }
        }
        {
            let instant = Instant::now();
            let mut buckets = gate.buckets.lock().unwrap_or_else(|e| e.into_inner());
            for (id, rate) in [
                (BucketId::Key(self.key_id.clone()), l.key_events_per_second),
                (BucketId::Tenant(self.tenant_id), l.events_per_second),
            ] {
                if rate > 0 {
                    draw(&mut buckets, id, rate, instant, events as f64);
                }
            }
        }
        let accepted = Usage {
            accepted_events: n,
            accepted_requests: 1,
            ..Usage::default()
        };
        gate.lock_book()
            .record(self.tenant_id, day, &self.key_id, &accepted);
        Ok(Accepted {
            tenant_id: self.tenant_id,
            key_id: self.key_id,
            day,
            events: n,
        })
    }
}

/// Events counted as accepted, to be given back if they could not be sent on after all.
#[derive(Debug)]
pub struct Accepted {
    tenant_id: i64,
    key_id: String,
    day: NaiveDate,
    events: i64,
}

impl Gate {
    /// Un-counts events that were admitted but not sent (the stream refused them).
    pub fn give_back(&self, accepted: Accepted) {
        let back = Usage {
            accepted_events: -accepted.events,
            accepted_requests: -1,
            ..Usage::default()
        };
        self.lock_book()
            .record(accepted.tenant_id, accepted.day, &accepted.key_id, &back);
    }
}

/// A tenant's collect usage per day in `[from, to)`, summed over its keys, and per key over
/// the whole range.
#[derive(Debug, Clone, Serialize)]
pub struct UsageReport {
    pub limits: Limits,
    pub days: Vec<DayUsage>,
    pub keys: Vec<KeyUsage>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DayUsage {
    pub day: NaiveDate,
    #[serde(flatten)]
    pub usage: Usage,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyUsage {
    pub key_id: String,
    #[serde(flatten)]
    pub usage: Usage,
}

const USAGE_SUMS: &str = "sum(accepted_events)::bigint, sum(accepted_requests)::bigint, \
     sum(refused_rate)::bigint, sum(refused_quota)::bigint, sum(refused_origin)::bigint";

fn usage_at(row: &tokio_postgres::Row, first: usize) -> Usage {
    Usage {
        accepted_events: row.get(first),
        accepted_requests: row.get(first + 1),
        refused_rate: row.get(first + 2),
        refused_quota: row.get(first + 3),
        refused_origin: row.get(first + 4),
    }
}

/// The usage report of a tenant for the UTC days from `from` to `to` (exclusive).
pub async fn usage<C: GenericClient>(
    client: &C,
    tenant_id: i64,
    from: NaiveDate,
    to: NaiveDate,
    limits: Limits,
) -> Result<UsageReport, tokio_postgres::Error> {
    // Sums of the range grouped by `column`, first in each row.
    let grouped = |column: &'static str| async move {
        client
            .query(
                &format!(
                    "SELECT {column}, {USAGE_SUMS} FROM collect_usage \
                     WHERE tenant_id = $1 AND day >= $2 AND day < $3 \
                     GROUP BY {column} ORDER BY {column}"
                ),
                &[&tenant_id, &from, &to],
            )
            .await
    };
    let days = grouped("day")
        .await?
        .iter()
        .map(|r| DayUsage {
            day: r.get(0),
            usage: usage_at(r, 1),
        })
        .collect();
    let keys = grouped("key_id")
        .await?
        .iter()
        .map(|r| KeyUsage {
            key_id: r.get(0),
            usage: usage_at(r, 1),
        })
        .collect();
    Ok(UsageReport { limits, days, keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(key_rate: u32, tenant_rate: u32) -> Limits {
        Limits {
            events_per_second: tenant_rate,
            events_per_day: 0,
            key_events_per_second: key_rate,
            key_events_per_day: 0,
        }
    }

    fn policy(origins: Option<&[&str]>) -> KeyPolicy {
        KeyPolicy {
            allowed_origins: origins.map(|o| o.iter().map(|s| s.to_string()).collect()),
            overrides: Overrides::default(),
        }
    }

    #[tokio::test]
    async fn a_key_over_its_rate_is_refused_until_its_bucket_refills() {
        let gate = Gate::new(limits(100, 1000));
        let now = Utc::now();
        let p = policy(None);
        // The burst (2 s of the rate) passes in one large request, which leaves the bucket
        // in debt: 100 × 2 − 450 = −250 tokens, 3 s at 100/s.
        let a = gate.open(1, "k", &p, None, None, now).unwrap();
        a.take::<tokio_postgres::Client>(None, 450, now)
            .await
            .unwrap();
        match gate.open(1, "k", &p, None, None, now) {
            Err(Refusal::Rate {
                scope: Scope::Key,
                retry_after,
            }) => assert_eq!(retry_after, 3),
            other => panic!("expected a key rate refusal, got {:?}", other.err()),
        }
        // Another key of the tenant still has its own bucket, under the tenant's.
        assert!(gate.open(1, "other", &p, None, None, now).is_ok());
        let book = gate.lock_book();
        let k = &book.pending[&(1, now.date_naive(), "k".to_string())];
        assert_eq!((k.accepted_events, k.refused_rate), (450, 1));
    }

    #[tokio::test]
    async fn the_tenant_rate_bounds_all_its_keys_together() {
        let gate = Gate::new(limits(0, 10));
        let now = Utc::now();
        let p = policy(None);
        for key in ["a", "b"] {
            let a = gate.open(7, key, &p, None, None, now).unwrap();
            a.take::<tokio_postgres::Client>(None, 15, now)
                .await
                .unwrap();
        }
        assert!(matches!(
            gate.open(7, "c", &p, None, None, now),
            Err(Refusal::Rate {
                scope: Scope::Tenant,
                ..
            })
        ));
        // Another tenant is not affected.
        assert!(gate.open(8, "d", &p, None, None, now).is_ok());
    }

    #[tokio::test]
    async fn overrides_replace_the_settings_and_zero_lifts_a_limit() {
        let gate = Gate::new(limits(1, 1));
        let now = Utc::now();
        let p = KeyPolicy {
            allowed_origins: None,
            overrides: Overrides {
                events_per_second: Some(0),
                key_events_per_second: Some(0),
                ..Overrides::default()
            },
        };
        for _ in 0..5 {
            let a = gate.open(1, "k", &p, None, None, now).unwrap();
            a.take::<tokio_postgres::Client>(None, 1000, now)
                .await
                .unwrap();
        }
    }

    #[test]
    fn origins_are_checked_only_where_a_browser_names_one() {
        let p = policy(Some(&["https://shop.example.com"]));
        assert!(p.origin_allowed(Some("https://shop.example.com"), None));
        assert!(p.origin_allowed(Some("HTTPS://Shop.Example.com"), None));
        assert!(!p.origin_allowed(Some("https://evil.example"), None));
        assert!(!p.origin_allowed(Some("null"), None));
        assert!(p.origin_allowed(None, Some("https://shop.example.com/cart?x=1")));
        assert!(!p.origin_allowed(None, Some("https://shop.example.com.evil.example/")));
        assert!(!p.origin_allowed(None, Some("https://user@evil.example/")));
        // Origin wins over Referer.
        assert!(!p.origin_allowed(
            Some("https://evil.example"),
            Some("https://shop.example.com/")
        ));
        // Servers send neither; a Referer that names no origin counts as none.
        assert!(p.origin_allowed(None, None));
        assert!(p.origin_allowed(None, Some("android-app://x")));
        assert!(policy(None).origin_allowed(Some("https://anything"), None));
    }

    #[test]
    fn quota_refusals_wait_for_the_next_utc_day() {
        let t = DateTime::parse_from_rfc3339("2026-12-03T23:59:30Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(until_tomorrow(t), 30);
    }
}
