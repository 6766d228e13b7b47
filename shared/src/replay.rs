//! Replay of a tenant's dead letters after a fix (the tenant registered since, limits raised):
//! each pending dead letter is validated again with today's rules; the ones that pass are
//! stored in `events` and marked `replayed`, the others stay `pending`.
//!
//! One call is one transaction:
//! 1. take the tenant's replay lock (a second replay of the tenant waits, then finds nothing of
//!    what the first replayed still pending), read the event id floor;
//! 2. lock up to `max` pending dead letters of the tenant, oldest first;
//! 3. validate each payload as ingest does ([`parse_event`], the dead letter's enqueue time as
//!    the fallback event time, the tenant registry, the partition bounds);
//! 4. write the valid ones with ingest's own row encoding and narrowing
//!    ([`crate::ingest::write_events`]): a row the database refuses stays pending;
//! 5. record the id range in `event_id_ranges` (for the rollups), move the replayed events from
//!    dead-lettered to stored in the ledger (one `ingest_ledger_batches` entry), mark them
//!    `replayed`, commit.
//!
//! A dead letter that still fails keeps its original reason and message (the record of what
//! happened at ingest; the ledger attribution below depends on it); today's verdict is in the
//! [`ReplayReport`]. Dead letters without a tenant (the tenant could not be read) are not
//! replayed by tenant.
//!
//! ## The ledger
//!
//! Ingest counted each dead letter under its tenant and hour of enqueue time, or under tenant
//! 0 when the tenant was not registered then. A replayed event is moved, within its hour, from
//! dead-lettered under that ledger tenant to stored under its tenant: `received - 1,
//! dead_lettered - 1` for the first and `received + 1, stored + 1` for the second (one change of
//! `stored + 1, dead_lettered - 1` when they are the same). Every element keeps `received =
//! stored + duplicates + dead_lettered`, so the hourly table's CHECK holds whenever
//! `compact_ingest_ledger()` folds such entries, together with the batches they correct or
//! after them. The ledger tenant is 0 for `unknown_tenant` dead letters, and for others when
//! the tenant was registered after the event was dead-lettered (`tenants.created_at` later than
//! `dead_letters.received_at`); otherwise it is the tenant.

use crate::dead_letters::DeadLetter;
use crate::event::{parse_event, EventLimits, Rejection, ValidEvent};
use crate::ingest::{write_events, IncomingEvent, IngestError};
use crate::ledger;
use crate::partitions::PartitionCache;
use crate::reason::Reason;
use crate::spend::{self, Spend};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Transaction};

/// Dead letters examined per call unless the caller says otherwise.
pub const DEFAULT_MAX: usize = 10_000;

/// The `source` of the ledger entries replays write (their `stream_partition` is the tenant).
pub const LEDGER_SOURCE: &str = "dead-letter-replay";

/// A replay that was not done. Nothing of it was committed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Database(#[from] IngestError),
    /// Dead letters locked by the replay were changed by someone else meanwhile (which the
    /// locks should make impossible); the replay was rolled back, and may be run again.
    #[error("dead letters changed while locked for replay")]
    Changed,
}

/// The replay's refusal in the one error vocabulary, which also decides whether running it
/// again may succeed ([`ErrorCode::retryable`](crate::ErrorCode::retryable)): a database error
/// by its SQLSTATE class, a conflict always.
impl From<ReplayError> for crate::error::Error {
    fn from(e: ReplayError) -> Self {
        match e {
            ReplayError::Database(e) => e.into(),
            ReplayError::Changed => crate::error::Error::new(
                crate::ErrorCode::ReplayConflict,
                "dead letters changed during the replay; run it again",
            ),
        }
    }
}

impl From<tokio_postgres::Error> for ReplayError {
    fn from(e: tokio_postgres::Error) -> Self {
        ReplayError::Database(e.into())
    }
}

/// What one replay call did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    pub tenant_id: i64,
    /// Pending dead letters examined (at most `max`).
    pub examined: usize,
    /// Of those, stored (in `events`, or an ad spend report in `ad_spend`) and marked
    /// `replayed`.
    pub replayed: usize,
    /// Of those, still failing (left `pending`), per today's reason code.
    pub still_failing: BTreeMap<Reason, usize>,
    /// Whether pending dead letters of the tenant remain after the last one examined: call
    /// again with `after = resume_after` to go on.
    pub more: bool,
    /// The last dead letter examined (`dead_letter_id`), for the next call's `after`.
    pub resume_after: Option<i64>,
}

/// Replays up to `max` of the tenant's pending dead letters, oldest first. See the module
/// documentation. `now` judges clock skew and retention, and is written as `replayed_at`.
pub async fn replay_dead_letters(
    client: &mut Client,
    tenant_id: i64,
    limits: &EventLimits,
    now: DateTime<Utc>,
    max: usize,
) -> Result<ReplayReport, ReplayError> {
    replay_dead_letters_after(client, tenant_id, None, limits, now, max).await
}

/// Like [`replay_dead_letters`], starting after the dead letter `after` (a previous report's
/// `resume_after`), so that a loop over a tenant's backlog makes progress past dead letters
/// that still fail.
pub async fn replay_dead_letters_after(
    client: &mut Client,
    tenant_id: i64,
    after: Option<i64>,
    limits: &EventLimits,
    now: DateTime<Utc>,
    max: usize,
) -> Result<ReplayReport, ReplayError> {
    let report = replay(client, tenant_id, after, limits, now, max).await?;
    // Logged here, once for every host and the CLI (an empty replay too).
    tracing::info!(
        tenant_id,
        examined = report.examined,
        replayed = report.replayed,
        more = report.more,
        "dead letters replayed"
    );
    Ok(report)
}

async fn replay(
    client: &mut Client,
    tenant_id: i64,
    after: Option<i64>,
    limits: &EventLimits,
    now: DateTime<Utc>,
    max: usize,
) -> Result<ReplayReport, ReplayError> {
    let tx = client.transaction().await?;
    let start = tx
        .query_typed_one(
            include_str!("../sql/replay_lock_tenant.sql"),
            &[(&tenant_id, Type::INT8)],
        )
        .await?;
    let registered_at: Option<DateTime<Utc>> = start.get("registered_at");
    let id_floor: i64 = start.get("id_floor");

    // One more than asked for tells whether more remain.
    let limit = i64::try_from(max).unwrap_or(i64::MAX - 1).saturating_add(1);
    let rows = tx
        .query_typed(
            include_str!("../sql/replay_pending.sql"),
            &[
                (&tenant_id, Type::INT8),
                (&after.unwrap_or(0), Type::INT8),
                (&limit, Type::INT8),
            ],
        )
        .await?;
    let more = rows.len() > max;
    let letters: Vec<DeadLetter> = rows.iter().take(max).map(DeadLetter::from_row).collect();

    let mut report = ReplayReport {
        tenant_id,
        examined: letters.len(),
        more,
        resume_after: letters.last().map(|d| d.id),
        ..ReplayReport::default()
    };
    if letters.is_empty() {
        tx.commit().await?;
        return Ok(report);
    }

    // Judged as ingest judges them, against the state of now.
    let partitions = PartitionCache::default().reload(&tx).await?;
    let mut failing: Vec<(usize, Rejection)> = Vec::new();
    let mut valid: BTreeMap<&str, Vec<(usize, ValidEvent, &IncomingEvent)>> = BTreeMap::new();
    // Cost reports go to `ad_spend`, as ingest stores them.
    let mut spend: Vec<(usize, Spend)> = Vec::new();
    for (index, letter) in letters.iter().enumerate() {
        match judge(letter, tenant_id, registered_at.is_some(), limits, now) {
            Err(rejection) => failing.push((index, rejection)),
            Ok(event) if event.spend.is_some() => {
                spend.extend(Spend::from_event(&event).map(|s| (index, s)))
            }
            Ok(event) if !partitions.covers(event.event_time) => failing.push((
                index,
                Rejection {
                    reason: Reason::NoPartition,
                    message: "no partition of events covers event_time".into(),
                    tenant_id: Some(tenant_id),
                },
            )),
            Ok(event) => valid.entry(letter.partition.as_str()).or_default().push((
                index,
                event,
                &letter.incoming,
            )),
        }
    }

    let mut stored: Vec<(usize, DateTime<Utc>)> = Vec::new();
    for (partition, events) in valid {
        let times: Vec<(usize, DateTime<Utc>)> =
            events.iter().map(|(i, e, _)| (*i, e.event_time)).collect();
        let refused = write_events(&tx, partition, events).await?;
        let refused_at: HashSet<usize> = refused.iter().map(|(i, _)| *i).collect();
        stored.extend(times.into_iter().filter(|(i, _)| !refused_at.contains(i)));
        failing.extend(refused);
    }

    let spent: Vec<Spend> = spend.iter().map(|(_, s)| s.clone()).collect();
    spend::store(&tx, &spent, spend::Origin::Stream).await?;

    for (_, rejection) in &failing {
        *report.still_failing.entry(rejection.reason).or_default() += 1;
    }
    report.replayed = stored.len() + spend.len();
    if report.replayed > 0 {
        let replayed: Vec<&DeadLetter> = stored
            .iter()
            .map(|(i, _)| *i)
            .chain(spend.iter().map(|(i, _)| *i))
            .map(|i| &letters[i])
            .collect();
        // The events' times bound the id range recorded (none when only spend was replayed:
        // it is not in `events`).
        let min_time = stored.iter().map(|(_, t)| *t).min();
        let max_time = stored.iter().map(|(_, t)| *t).max();
        let ids: Vec<i64> = replayed.iter().map(|d| d.id).collect();
        let mark: [(&(dyn ToSql + Sync), Type); 2] =
            [(&ids, Type::INT8_ARRAY), (&now, Type::TIMESTAMPTZ)];
        let range: [(&(dyn ToSql + Sync), Type); 3] = [
            (&id_floor, Type::INT8),
            (&min_time, Type::TIMESTAMPTZ),
            (&max_time, Type::TIMESTAMPTZ),
        ];
        // Independent statements, sent together.
        let record_range = async {
            if stored.is_empty() {
                return Ok(());
            }
            tx.query_typed(include_str!("../sql/record_event_range.sql"), &range)
                .await
                .map(drop)
        };
        let (marked, _, _) = tokio::try_join!(
            tx.execute_typed(include_str!("../sql/replay_mark_replayed.sql"), &mark),
            record_range,
            record_ledger(&tx, tenant_id, registered_at, &replayed),
        )?;
        // The rows are locked by this transaction and were pending: all must be marked. If
        // not, something else changed them: write nothing (dropping `tx` rolls back) rather
        // than risk storing an event twice.
        if marked != ids.len() as u64 {
            return Err(ReplayError::Changed);
        }
    }
    tx.commit().await?;
    Ok(report)
}

/// Today's verdict on a dead letter of `tenant_id`, as ingest would give it (a panic while
/// validating is an `internal_error`).
fn judge(
    letter: &DeadLetter,
    tenant_id: i64,
    registered: bool,
    limits: &EventLimits,
    now: DateTime<Utc>,
) -> Result<ValidEvent, Rejection> {
    let incoming = &letter.incoming;
    if let Some(size) = letter.truncated_from {
        return Err(Rejection {
            reason: Reason::TooLarge,
            message: format!(
                "only the first {} of its {size} bytes were kept; it cannot be replayed",
                incoming.body.len()
            ),
            tenant_id: Some(tenant_id),
        });
    }
    let event = catch_unwind(AssertUnwindSafe(|| {
        parse_event(&incoming.body, incoming.enqueued_at, now, limits)
    }))
    .unwrap_or_else(|_| {
        Err(Rejection {
            reason: Reason::InternalError,
            message: "validation panicked; see the handler log".into(),
            tenant_id: Some(tenant_id),
        })
    })?;
    if event.tenant_id != tenant_id {
        // Only if the rules for reading tenant_id changed since: not this tenant's to replay.
        return Err(Rejection {
            reason: Reason::BadTenantId,
            message: format!(
                "the payload now reads as tenant {}, not {tenant_id}",
                event.tenant_id
            ),
            tenant_id: Some(tenant_id),
        });
    }
    if !registered {
        return Err(Rejection::unknown_tenant(tenant_id));
    }
    Ok(event)
}

/// Moves the replayed events from dead-lettered to stored in the ledger (see the module
/// documentation), as one entry of `ingest_ledger_batches`.
async fn record_ledger(
    tx: &Transaction<'_>,
    tenant_id: i64,
    registered_at: Option<DateTime<Utc>>,
    replayed: &[&DeadLetter],
) -> Result<(), tokio_postgres::Error> {
    let mut entry = ledger::Entry::default();
    for letter in replayed {
        let enqueued_at = letter.incoming.enqueued_at;
        let from = entry.cell(ledger_tenant(tenant_id, registered_at, letter), enqueued_at);
        from.received -= 1;
        from.dead_lettered -= 1;
        let to = entry.cell(tenant_id, enqueued_at);
        to.received += 1;
        to.stored += 1;
    }
    entry
        .record(tx, LEDGER_SOURCE, &tenant_id.to_string())
        .await
}

/// The tenant ingest counted a dead letter under: 0 when the tenant was not registered then.
fn ledger_tenant(tenant_id: i64, registered_at: Option<DateTime<Utc>>, letter: &DeadLetter) -> i64 {
    let registered_then = registered_at.is_some_and(|at| at <= letter.received_at);
    if letter.reason == Reason::UnknownTenant.code() || !registered_then {
        0
    } else {
        tenant_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn a_conflicting_replay_is_a_retryable_replay_conflict() {
        let e = crate::error::Error::from(ReplayError::Changed);
        assert_eq!(e.code, ErrorCode::ReplayConflict);
        assert!(e.retryable());
    }
}
