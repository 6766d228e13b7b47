//! The truth file: what the database must hold after the ingest path has read everything that
//! loadgen delivered, accumulated across runs.
//!
//! # Format (`remarketable-loadgen-truth/1`, JSON)
//!
//! ```text
//! {
//!   "format": "remarketable-loadgen-truth/1",
//!   "runs": [ { "started_at", "updated_at", "seed", "target", "url", "generated",
//!               "acknowledged", "late", "malformed", "producer_duplicates",
//!               "uncertain_resends", "finished" } ],
//!   "expected": <tally>,
//!   "uncertain_resends": [ { "at", "events", "extra_copies", "acknowledged", "tally": <tally> } ]
//! }
//! <tally> = {
//!   "delivered": n,            // events acknowledged by the hub or handler, all kinds
//!   "producer_duplicates": n,  // of which: the same body sent again by the producer
//!   "stored": { "<tenant_id>": { "<UTC hour of event_time, RFC 3339>": {
//!       "events": n, "purchases": n, "revenue": "123.4500",
//!       "devices": [i64, ...], "sessions": [i64, ...] } } },
//!   "dead_letters": { "<reason code>": { "unattributed": n, "tenants": { "<tenant_id>": n } } }
//! }
//! ```
//!
//! - `stored` counts every event the ingest path stores, producer duplicates included: the
//!   contract has no idempotency key, so a body sent twice gets two hub sequence numbers and
//!   is stored twice. `producer_duplicates` says how many of them were such resends.
//! - `revenue` is an exact decimal string: the sum of the stored events' revenue, each rounded
//!   half away from zero to four places as the validator does for `numeric(18,4)`.
//! - `devices` and `sessions` are the distinct ids as the database stores them (integers as
//!   sent, strings through `hash_id`), kept as sets so that later runs can add to them and
//!   distinct counts per hour and per tenant stay exact. The file grows with the number of
//!   distinct sessions (roughly 25 bytes per session and hour).
//! - `dead_letters` counts expected dead letters by reason code; `tenants` where the validator
//!   can read the tenant, `unattributed` where it cannot (the row's `tenant_id` is NULL).
//! - `uncertain_resends`: chunks the hub may hold more than once, because an attempt to send
//!   them got no answer (so may have been accepted) and they were sent again. `extra_copies`
//!   is how many more copies than counted in `expected` may exist (`acknowledged: false`: the
//!   run stopped before any attempt was acknowledged, so the chunk is not in `expected` and
//!   may be there up to `extra_copies` times).
//!
//! The file is rewritten atomically (a temporary file in the same folder, fsync, rename) after
//! every acknowledged round, like a checkpoint.

use crate::traffic::{Expected, Generated};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "remarketable-loadgen-truth/1";

/// Counts of one tenant in one hour of event time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HourTally {
    pub events: u64,
    pub purchases: u64,
    #[serde(with = "decimal_string")]
    pub revenue: Decimal,
    pub devices: BTreeSet<i64>,
    pub sessions: BTreeSet<i64>,
}

/// Expected dead letters of one reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterCounts {
    /// Dead letters whose tenant the validator could not read.
    pub unattributed: u64,
    pub tenants: BTreeMap<i64, u64>,
}

impl DeadLetterCounts {
    pub fn total(&self) -> u64 {
        self.unattributed + self.tenants.values().sum::<u64>()
    }
}

/// What a set of delivered events leaves in the database.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub delivered: u64,
    pub producer_duplicates: u64,
    pub stored: BTreeMap<i64, BTreeMap<DateTime<Utc>, HourTally>>,
    pub dead_letters: BTreeMap<String, DeadLetterCounts>,
    /// What attribution reads: touches, purchases and each session's first event. Absent in
    /// older files (their attribution is then not checked).
    #[serde(default)]
    pub campaigns: CampaignFacts,
}

/// (campaign, source, medium); all empty is direct.
pub type Source = (String, String, String);
/// A touch: (device, event time in ms, click, campaign, source, medium).
pub type TouchFact = (i64, i64, bool, String, String, String);
/// A session's first event: (time in ms, campaign, source, medium).
pub type SessionStart = (i64, String, String, String);

/// The stored events attribution depends on, per tenant, as the check's brute force reads them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CampaignFacts {
    /// Whether the file records them (files of older loadgens do not).
    pub recorded: bool,
    /// Per tenant: (device, event time in ms, click, campaign, source, medium).
    pub touches: BTreeMap<i64, Vec<TouchFact>>,
    /// Per tenant: (device, session, event time in ms, revenue) of each purchase.
    pub purchases: BTreeMap<i64, Vec<(i64, i64, i64, String)>>,
    /// Per tenant and session: its first event (time in ms, campaign, source, medium; empty
    /// without a campaign) by V19's rule: the least time, then one with a campaign, then the
    /// least (campaign, source, medium).
    pub sessions: BTreeMap<i64, BTreeMap<i64, SessionStart>>,
}

impl CampaignFacts {
    fn add(&mut self, e: &crate::traffic::StoredEvent) {
        self.recorded = true;
        let ms = e.event_time.timestamp_millis();
        let (c, s, m) = e.touch.map_or(("", "", ""), |t| t.campaign);
        if let Some(t) = e.touch {
            self.touches.entry(e.tenant_id).or_default().push((
                e.device_id,
                ms,
                t.click,
                c.into(),
                s.into(),
                m.into(),
            ));
        }
        if e.purchase {
            let revenue = e
                .revenue
                .unwrap_or_default()
                .round_dp(4)
                .normalize()
                .to_string();
            self.purchases.entry(e.tenant_id).or_default().push((
                e.device_id,
                e.session_id,
                ms,
                revenue,
            ));
        }
        let first = (ms, c.to_string(), s.to_string(), m.to_string());
        let rank = |f: &SessionStart| (f.0, f.1.is_empty(), f.1.clone(), f.2.clone(), f.3.clone());
        let slot = self.sessions.entry(e.tenant_id).or_default();
        match slot.get(&e.session_id) {
            Some(old) if rank(old) <= rank(&first) => {}
            _ => {
                slot.insert(e.session_id, first);
            }
        }
    }

    fn merge(&mut self, other: &CampaignFacts, copies: u64) {
        self.recorded |= other.recorded;
        for _ in 0..copies {
            for (t, list) in &other.touches {
                self.touches
                    .entry(*t)
                    .or_default()
                    .extend(list.iter().cloned());
            }
            for (t, list) in &other.purchases {
                self.purchases
                    .entry(*t)
                    .or_default()
                    .extend(list.iter().cloned());
            }
        }
        let rank = |f: &SessionStart| (f.0, f.1.is_empty(), f.1.clone(), f.2.clone(), f.3.clone());
        for (t, sessions) in &other.sessions {
            let mine = self.sessions.entry(*t).or_default();
            for (session, first) in sessions {
                match mine.get(session) {
                    Some(old) if rank(old) <= rank(first) => {}
                    _ => {
                        mine.insert(*session, first.clone());
                    }
                }
            }
        }
    }
}

impl Tally {
    /// Counts one delivered event.
    pub fn add(&mut self, g: &Generated) {
        self.delivered += 1;
        if g.producer_duplicate {
            self.producer_duplicates += 1;
        }
        match &g.expected {
            Expected::Stored(e) => {
                let hour = hour_of(e.event_time);
                let cell = self
                    .stored
                    .entry(e.tenant_id)
                    .or_default()
                    .entry(hour)
                    .or_default();
                cell.events += 1;
                cell.purchases += u64::from(e.purchase);
                cell.revenue += e.revenue.unwrap_or_default();
                cell.devices.insert(e.device_id);
                cell.sessions.insert(e.session_id);
                self.campaigns.add(e);
            }
            Expected::DeadLettered { reason, tenant_id } => {
                let counts = self.dead_letters.entry(reason.code().into()).or_default();
                match tenant_id {
                    Some(t) => *counts.tenants.entry(*t).or_default() += 1,
                    None => counts.unattributed += 1,
                }
            }
        }
    }

    /// Adds `copies` copies of `other`: counts multiply, id sets are united.
    pub fn merge(&mut self, other: &Tally, copies: u64) {
        self.delivered += other.delivered * copies;
        self.producer_duplicates += other.producer_duplicates * copies;
        for (tenant, hours) in &other.stored {
            let mine = self.stored.entry(*tenant).or_default();
            for (hour, theirs) in hours {
                let cell = mine.entry(*hour).or_default();
                cell.events += theirs.events * copies;
                cell.purchases += theirs.purchases * copies;
                cell.revenue += theirs.revenue * Decimal::from(copies);
                cell.devices.extend(&theirs.devices);
                cell.sessions.extend(&theirs.sessions);
            }
        }
        for (reason, theirs) in &other.dead_letters {
            let mine = self.dead_letters.entry(reason.clone()).or_default();
            mine.unattributed += theirs.unattributed * copies;
            for (tenant, n) in &theirs.tenants {
                *mine.tenants.entry(*tenant).or_default() += n * copies;
            }
        }
        self.campaigns.merge(&other.campaigns, copies);
    }

    pub fn stored_total(&self) -> u64 {
        self.stored
            .values()
            .flat_map(|hours| hours.values())
            .map(|c| c.events)
            .sum()
    }

    pub fn dead_lettered_total(&self) -> u64 {
        self.dead_letters
            .values()
            .map(DeadLetterCounts::total)
            .sum()
    }

    /// Distinct (devices, sessions) of a tenant over all its hours.
    pub fn distinct_of(&self, tenant: i64) -> (usize, usize) {
        let mut devices: BTreeSet<i64> = BTreeSet::new();
        let mut sessions: BTreeSet<i64> = BTreeSet::new();
        for cell in self
            .stored
            .get(&tenant)
            .into_iter()
            .flat_map(|h| h.values())
        {
            devices.extend(&cell.devices);
            sessions.extend(&cell.sessions);
        }
        (devices.len(), sessions.len())
    }
}

/// The hour of event time a row counts in (`date_bin('1 hour', t, TIMESTAMPTZ 'epoch')`).
pub fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

/// One run of `loadgen send`, or a file of `loadgen history` (target `file`, all acknowledged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub seed: u64,
    /// `ingest`, `hub` or `file`.
    pub target: String,
    pub url: String,
    pub generated: u64,
    pub acknowledged: u64,
    pub late: u64,
    pub malformed: u64,
    pub producer_duplicates: u64,
    pub uncertain_resends: u64,
    /// False while running, and for a run that was interrupted or failed.
    pub finished: bool,
}

/// A chunk that may be in the hub more often than counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UncertainResend {
    pub at: DateTime<Utc>,
    pub events: u64,
    pub extra_copies: u64,
    /// Whether a later attempt was acknowledged (then the chunk is counted once in
    /// `expected`).
    pub acknowledged: bool,
    pub tally: Tally,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    pub format: String,
    pub runs: Vec<Run>,
    pub expected: Tally,
    pub uncertain_resends: Vec<UncertainResend>,
    /// The ad spend uploads leave (`loadgen spend`): per tenant, per
    /// `day|campaign|source|medium`, the last figure given. Absent in older files: none.
    #[serde(default)]
    pub spend: BTreeMap<i64, BTreeMap<String, Decimal>>,
}

impl Default for Truth {
    fn default() -> Self {
        Truth {
            format: FORMAT.into(),
            runs: Vec::new(),
            expected: Tally::default(),
            uncertain_resends: Vec::new(),
            spend: BTreeMap::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TruthError {
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a loadgen truth file")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} has format {found:?}; this loadgen reads {FORMAT:?}")]
    Format { path: PathBuf, found: String },
}

impl Truth {
    /// Reads the file, or answers an empty truth when it does not exist yet.
    pub fn load(path: &Path) -> Result<Truth, TruthError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Truth::default()),
            Err(source) => {
                return Err(TruthError::Io {
                    path: path.into(),
                    source,
                })
            }
        };
        let truth: Truth = serde_json::from_slice(&bytes).map_err(|source| TruthError::Parse {
            path: path.into(),
            source,
        })?;
        if truth.format != FORMAT {
            return Err(TruthError::Format {
                path: path.into(),
                found: truth.format,
            });
        }
        Ok(truth)
    }

    /// Writes the file atomically: readers and a crash see the old file or the new one.
    pub fn save(&self, path: &Path) -> Result<(), TruthError> {
        let io = |source| TruthError::Io {
            path: path.into(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let json = serde_json::to_vec(self).expect("a truth always serializes");
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(&json).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(io)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(dir) {
            d.sync_all().ok();
        }
        Ok(())
    }

    /// The most the database may hold: `expected` plus every possible extra copy of the
    /// uncertain resends. Equal to `expected` when there are none.
    pub fn upper_bound(&self) -> Tally {
        let mut upper = self.expected.clone();
        for u in &self.uncertain_resends {
            upper.merge(&u.tally, u.extra_copies);
        }
        upper
    }
}

/// `Decimal` as an exact string (`"123.4500"`), never a float.
mod decimal_string {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::str::FromStr;

    pub fn serialize<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(d)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let text = String::deserialize(d)?;
        Decimal::from_str(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::{StoredEvent, Traffic, TrafficConfig};
    use remarketable_core::Reason;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn stored(
        tenant: i64,
        time: &str,
        device: i64,
        session: i64,
        revenue: Option<&str>,
    ) -> Generated {
        Generated {
            body: String::new(),
            expected: Expected::Stored(StoredEvent {
                tenant_id: tenant,
                event_time: at(time),
                device_id: device,
                session_id: session,
                purchase: revenue.is_some(),
                revenue: revenue.map(|r| r.parse().unwrap()),
                touch: None,
            }),
            malformed: None,
            late: false,
            producer_duplicate: false,
        }
    }

    fn dead(reason: Reason, tenant: Option<i64>) -> Generated {
        Generated {
            body: String::new(),
            expected: Expected::DeadLettered {
                reason,
                tenant_id: tenant,
            },
            malformed: None,
            late: false,
            producer_duplicate: false,
        }
    }

    #[test]
    fn a_tally_counts_per_tenant_and_hour_of_event_time() {
        let mut t = Tally::default();
        t.add(&stored(
            1,
            "2026-11-26T10:59:59.999Z",
            5,
            50,
            Some("12.3457"),
        ));
        t.add(&stored(1, "2026-11-26T10:00:00Z", 5, 51, None));
        t.add(&stored(1, "2026-11-26T11:00:00Z", 6, 51, Some("0.0001")));
        let mut again = stored(1, "2026-11-26T10:30:00Z", 5, 50, Some("1"));
        again.producer_duplicate = true;
        t.add(&again);
        t.add(&dead(Reason::BadCountry, Some(1)));
        t.add(&dead(Reason::InvalidJson, None));
        let ten = &t.stored[&1][&at("2026-11-26T10:00:00Z")];
        assert_eq!((ten.events, ten.purchases), (3, 2));
        assert_eq!(ten.revenue.to_string(), "13.3457");
        assert_eq!(ten.devices.len(), 1);
        assert_eq!(ten.sessions.len(), 2);
        assert_eq!(t.stored[&1][&at("2026-11-26T11:00:00Z")].events, 1);
        assert_eq!(t.distinct_of(1), (2, 2));
        assert_eq!((t.delivered, t.producer_duplicates), (6, 1));
        assert_eq!((t.stored_total(), t.dead_lettered_total()), (4, 2));
        assert_eq!(t.dead_letters["bad_country"].tenants[&1], 1);
        assert_eq!(t.dead_letters["invalid_json"].unattributed, 1);
    }

    #[test]
    fn runs_accumulate_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("truth.json");
        let mut traffic = Traffic::new(TrafficConfig {
            malformed_share: 0.1,
            duplicate_share: 0.05,
            ..TrafficConfig::valid_only(4, 5)
        });
        let now = at("2026-11-26T10:00:00Z");
        let mut all = Tally::default();
        for run in 0..3 {
            let mut truth = Truth::load(&path).unwrap();
            assert_eq!(truth.runs.len(), run);
            let mut chunk = Tally::default();
            for _ in 0..2_000 {
                let g = traffic.next(now);
                chunk.add(&g);
                all.add(&g);
            }
            truth.expected.merge(&chunk, 1);
            truth.runs.push(Run {
                started_at: now,
                updated_at: now,
                seed: 4,
                target: "hub".into(),
                url: "http://x".into(),
                generated: 2_000,
                acknowledged: 2_000,
                late: 0,
                malformed: 0,
                producer_duplicates: chunk.producer_duplicates,
                uncertain_resends: 0,
                finished: true,
            });
            truth.save(&path).unwrap();
        }
        let truth = Truth::load(&path).unwrap();
        assert_eq!(truth.runs.len(), 3);
        // Loading and adding run by run gives what counting everything at once gives: counts
        // add, revenue is exact, id sets unite.
        assert_eq!(truth.expected, all);
        assert_eq!(truth.expected.delivered, 6_000);
        // Only the file is left behind, no temporary.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("truth.json")]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"revenue\":\""), "revenue is a string");
    }

    #[test]
    fn save_replaces_the_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        let mut big = Truth::default();
        for i in 0..5_000 {
            big.expected
                .add(&stored(i % 7 + 1, "2026-11-26T10:00:00Z", i, i, None));
        }
        big.save(&path).unwrap();
        let small = Truth::default();
        small.save(&path).unwrap();
        // A smaller file over a bigger one leaves no tail of the old content.
        assert_eq!(Truth::load(&path).unwrap(), small);
        // A folder that does not exist: an error naming the file, and nothing written.
        let missing = dir.path().join("nope").join("t.json");
        let e = small.save(&missing).unwrap_err();
        assert!(e.to_string().contains("t.json"), "{e}");
    }

    #[test]
    fn load_refuses_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        assert_eq!(Truth::load(&path).unwrap(), Truth::default());
        std::fs::write(&path, "[1, 2]").unwrap();
        assert!(matches!(Truth::load(&path), Err(TruthError::Parse { .. })));
        let mut other = serde_json::to_value(Truth::default()).unwrap();
        other["format"] = "remarketable-loadgen-truth/0".into();
        std::fs::write(&path, other.to_string()).unwrap();
        assert!(matches!(Truth::load(&path), Err(TruthError::Format { .. })));
    }

    #[test]
    fn uncertain_resends_widen_the_upper_bound_only() {
        let mut truth = Truth::default();
        let mut chunk = Tally::default();
        chunk.add(&stored(2, "2026-11-26T10:00:00Z", 1, 1, Some("2.5")));
        chunk.add(&stored(2, "2026-11-26T10:00:00Z", 2, 2, None));
        chunk.add(&dead(Reason::BadRevenue, Some(2)));
        truth.expected.merge(&chunk, 1);
        assert_eq!(truth.upper_bound(), truth.expected);
        truth.uncertain_resends.push(UncertainResend {
            at: Utc::now(),
            events: 3,
            extra_copies: 2,
            acknowledged: true,
            tally: chunk.clone(),
        });
        let upper = truth.upper_bound();
        let cell = &upper.stored[&2][&at("2026-11-26T10:00:00Z")];
        assert_eq!((cell.events, cell.revenue.to_string().as_str()), (6, "7.5"));
        assert_eq!(cell.devices.len(), 2, "copies bring no new ids");
        assert_eq!(upper.dead_letters["bad_revenue"].tenants[&2], 3);
        assert_eq!(upper.delivered, 9);
    }
}
