//! The ingest path: one batch of one stream partition, written in one transaction.
//!
//! 1. lock the partition's row in `ingest_positions` (sent together with the preparation of
//!    the COPY); events at or below its sequence number, or repeated within the batch, are
//!    duplicates;
//! 2. validate the rest while the valid ones stream into `events` by binary COPY, one COPY
//!    command per [`COPY_CHUNK`] bytes, on Citus one COPY per batch over one connection per
//!    worker (a panic while validating dead-letters that event);
//!    events whose tenant or partition the caches miss are held back and judged after a reload;
//! 3. if the database refuses rows (SQLSTATE class 22 or 23, or XX000 as Citus relays a
//!    worker's refusal), redo the batch under savepoints that bisect down to the refused rows,
//!    which are dead-lettered; the rest is stored;
//! 4. write the rejects to `dead_letters`, record the batch in the ledger (one row), store the
//!    batch's `ad_spend` reports (they never enter `events`; see [`crate::spend`]), advance the
//!    position, commit.
//!
//! Any other database failure aborts the transaction and is returned as an [`IngestError`]; the
//! caller answers non-2xx so the trigger retries the batch and nothing is skipped.

use crate::error::is_transient;
use crate::event::{parse_event, peek_tenant_id, EventLimits, Rejection, ValidEvent};
use crate::ledger;
use crate::partitions::PartitionCache;
use crate::position::Position;
use crate::reason::Reason;
use crate::spend::{self, Spend};
use crate::tenants::TenantRegistry;
use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures_util::SinkExt;
use serde::Serialize;
use std::collections::HashSet;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::Statement;
use tokio_postgres::{Client, Transaction};

/// One delivery of events from one partition of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The stream, e.g. `<namespace>/<hub>`; together with `partition` it names a position.
    pub source: String,
    pub partition: String,
    pub events: Vec<IncomingEvent>,
    /// Whether positions in this stream follow each other without holes (Event Hubs sequence
    /// numbers do; Kafka offsets skip over compacted records and transaction markers, Kinesis
    /// sequence numbers are never contiguous). Only decides whether a hole is logged as events
    /// lost before delivery.
    pub contiguous: bool,
}

/// One event as delivered, before validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingEvent {
    /// Increasing within a partition; the event's position.
    pub sequence: Position,
    pub offset: Option<String>,
    pub enqueued_at: DateTime<Utc>,
    pub body: Vec<u8>,
}

/// What happened to one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Stored,
    Duplicate,
    DeadLettered { reason: Reason, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventOutcome {
    pub sequence: Position,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The result of a committed batch, per event and in total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchReport {
    pub source: String,
    pub partition: String,
    pub received: usize,
    pub stored: usize,
    pub duplicates: usize,
    pub dead_lettered: usize,
    /// The partition's position after the batch.
    pub position: Position,
    pub outcomes: Vec<EventOutcome>,
}

/// A batch that was not written. Nothing of it was committed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The database could not be reached or is shutting down, overloaded or in conflict:
    /// retrying the same batch later is expected to succeed.
    #[error("database unavailable")]
    Unavailable(#[source] tokio_postgres::Error),
    /// The database answered with an error that retrying alone will not fix (a schema or
    /// permission problem). The batch must still not be skipped.
    #[error("database error")]
    Database(#[source] tokio_postgres::Error),
}

/// Whether a batch may be written by trying again is the vocabulary's rule
/// ([`Error::retryable`](crate::error::Error::retryable), by SQLSTATE class), as for every
/// other database error.
impl From<IngestError> for crate::error::Error {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Unavailable(e) | IngestError::Database(e) => {
                crate::error::Error::database(&e)
            }
        }
    }
}

impl From<tokio_postgres::Error> for IngestError {
    fn from(e: tokio_postgres::Error) -> Self {
        if is_transient(&e) {
            IngestError::Unavailable(e)
        } else {
            IngestError::Database(e)
        }
    }
}

/// Data errors: the row, not the system, is at fault: SQLSTATE class 22 (data exception),
/// class 23 (integrity constraint violation), or 54000 (a value over a program limit, such as
/// a text too long for a btree index on it). A trigger that refuses rows must raise one of
/// these for the row to be dead-lettered; any other error fails the batch, to be retried.
pub fn is_data_error(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        matches!(&c.code()[..2], "22" | "23") || *c == SqlState::PROGRAM_LIMIT_EXCEEDED
    })
}

/// A failed multi-row COPY that may be the fault of some of its rows. Besides data errors this
/// includes XX000: Citus relays a worker's refusal of a COPY row (a constraint, a missing
/// partition) as an internal error, losing the worker's SQLSTATE (seen on Citus 13.2). The
/// one-row INSERT that ends narrowing gets the real code back and has the last word.
fn may_be_row_error(e: &tokio_postgres::Error) -> bool {
    is_data_error(e) || e.code() == Some(&SqlState::INTERNAL_ERROR)
}

/// Validates and stores batches. One per process; shared by all requests.
pub struct Ingestor {
    limits: EventLimits,
    tenants: TenantRegistry,
    partitions: PartitionCache,
    /// Whether the database is a Citus coordinator, read once.
    citus: tokio::sync::OnceCell<bool>,
}

/// The columns written for each stored event, and their types.
const EVENT_COLUMNS: &str = "tenant_id, event_time, event_type, device_id, session_id, \
    country, browser, page_url, referrer, campaign, source, medium, revenue, currency, properties, \
    received_at, stream_partition, stream_sequence";

const COLUMN_TYPES: [Type; 18] = [
    Type::INT8,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::NUMERIC,
    Type::TEXT,
    Type::JSONB,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::NUMERIC,
];

/// A valid event, where it came from, and its row of `events` in binary COPY form.
struct Row<'a> {
    index: usize,
    event: ValidEvent,
    incoming: &'a IncomingEvent,
    encoded: Bytes,
}

impl<'a> Row<'a> {
    /// Encodes the row once; narrowing sends the same bytes again. A value that cannot be
    /// encoded (validation should make that impossible) dead-letters its event.
    fn new(
        index: usize,
        event: ValidEvent,
        incoming: &'a IncomingEvent,
        partition: &str,
    ) -> Result<Self, Rejection> {
        let encoded = encode_row(&event, incoming, partition).map_err(|e| Rejection {
            reason: Reason::InternalError,
            message: format!("the row could not be encoded: {e}"),
            tenant_id: Some(event.tenant_id),
        })?;
        Ok(Row {
            index,
            event,
            incoming,
            encoded,
        })
    }
}

/// One tuple of the binary COPY format: the field count, then each field as a 32-bit length
/// (-1 for NULL) and its binary value.
fn encode_row(
    event: &ValidEvent,
    incoming: &IncomingEvent,
    partition: &str,
) -> Result<Bytes, Box<dyn std::error::Error + Sync + Send>> {
    let mut buf = BytesMut::with_capacity(384);
    buf.put_i16(COLUMN_TYPES.len() as i16);
    for (value, ty) in row_values(event, incoming, &partition)
        .iter()
        .zip(&COLUMN_TYPES)
    {
        let at = buf.len();
        buf.put_i32(0);
        let len = match value.to_sql_checked(ty, &mut buf)? {
            IsNull::Yes => -1,
            IsNull::No => i32::try_from(buf.len() - at - 4)?,
        };
        buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
    Ok(buf.freeze())
}

/// What happened to one event of the batch.
enum Verdict {
    Duplicate,
    Rejected(Rejection),
    /// Written (or being written) to `events`, for this tenant.
    Stored(i64),
}

/// Why an attempt at a batch ended without a report.
enum Attempt {
    /// The database refused a row during the savepoint-free attempt; do it again carefully.
    RowRefused,
    Failed(IngestError),
}

impl From<tokio_postgres::Error> for Attempt {
    fn from(e: tokio_postgres::Error) -> Self {
        Attempt::Failed(e.into())
    }
}

/// A refused row: its index in the batch, its event time, and why.
type Refusal = (usize, DateTime<Utc>, Rejection);

impl Ingestor {
    pub fn new(limits: EventLimits, tenant_cache_ttl: Duration) -> Self {
        Ingestor {
            limits,
            tenants: TenantRegistry::new(tenant_cache_ttl),
            partitions: PartitionCache::default(),
            citus: tokio::sync::OnceCell::new(),
        }
    }

    /// Creates the partitions of `events` that hold `times` and are missing (a bulk import of
    /// history older than upkeep keeps), in bounded transactions ([`crate::db::create_partitions_for`]),
    /// and makes the next batch see them. Answers the partitions created.
    pub async fn ensure_partitions(
        &self,
        client: &Client,
        times: &[DateTime<Utc>],
    ) -> Result<Vec<crate::db::PartitionChange>, tokio_postgres::Error> {
        let map = self.partitions.get(client, times.iter().copied()).await?;
        let missing: Vec<DateTime<Utc>> =
            times.iter().copied().filter(|t| !map.covers(*t)).collect();
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        let created = crate::db::create_partitions_for(client, &missing).await?;
        self.partitions.reload(client).await?;
        Ok(created)
    }

    /// Writes one batch in one transaction and reports what happened to each event.
    ///
    /// Events are validated while the COPY runs, so the database inserts one part of the batch
    /// while the next is being parsed. An event whose tenant or partition the caches do not know
    /// is held back, judged after the caches are reloaded, and written by a second COPY.
    ///
    /// The first attempt takes no savepoint (two round trips fewer per batch). If the database
    /// refuses a row, that transaction is rolled back and the batch is done again carefully,
    /// under savepoints that narrow the refusal down to the offending rows.
    pub async fn ingest(
        &self,
        client: &mut Client,
        batch: &Batch,
        now: DateTime<Utc>,
    ) -> Result<BatchReport, IngestError> {
        match self.attempt(client, batch, now, false).await {
            Err(Attempt::RowRefused) => {
                tracing::debug!(partition = %batch.partition, "a row was refused; narrowing");
                self.attempt(client, batch, now, true).await
            }
            other => other,
        }
        .map_err(|e| match e {
            Attempt::Failed(e) => e,
            Attempt::RowRefused => unreachable!("the careful attempt narrows refusals"),
        })
    }

    async fn attempt(
        &self,
        client: &mut Client,
        batch: &Batch,
        now: DateTime<Utc>,
        careful: bool,
    ) -> Result<BatchReport, Attempt> {
        let started = std::time::Instant::now();
        let tx = client.transaction().await?;
        // The caches as they are (reloaded only when expired): no query may run during COPY.
        let mut tenants = self.tenants.registered(&tx, []).await?;
        let partitions = self.partitions.get(&tx, []).await?;
        let citus = *self
            .citus
            .get_or_try_init(|| crate::db::has_citus(&tx))
            .await?;
        let chunk_bytes = copy_chunk_bytes(citus);
        let copy_sql = copy_sql();
        let ((), (last, id_floor), copy_statement) = if careful {
            sequential_on_citus(&tx, citus).await?;
            // The position lock must not be taken inside the savepoint: rolling back to it
            // would release the lock.
            let position = lock_position(&tx, batch).await?;
            tx.batch_execute("SAVEPOINT copy_events").await?;
            ((), position, tx.prepare_typed(&copy_sql, &[]).await?)
        } else {
            // Sent together: one round trip.
            tokio::try_join!(
                sequential_on_citus(&tx, citus),
                lock_position(&tx, batch),
                tx.prepare_typed(&copy_sql, &[])
            )?
        };
        let locked = started.elapsed();
        if let Some(first) = batch.events.first().filter(|_| batch.contiguous) {
            if last >= Position::from(0)
                && last.successor().is_some_and(|next| first.sequence > next)
            {
                // Sequence numbers are contiguous within a hub partition: a gap means events
                // expired from the hub before they were read. They cannot be recovered here.
                tracing::warn!(
                    source = %batch.source,
                    partition = %batch.partition,
                    stored_up_to = %last,
                    batch_starts_at = %first.sequence,
                    "gap in the stream: events between were never delivered"
                );
            }
        }

        // The valid rows go to the database in COPY commands of about COPY_CHUNK bytes each,
        // sent by `copier` while the rest of the batch is validated.
        let (chunks, to_copy) = tokio::sync::mpsc::unbounded_channel();
        let copier = copy_chunks(&tx, &copy_statement, to_copy);
        let validation = async {
            let mut verdicts = Vec::with_capacity(batch.events.len());
            let mut streamed = Vec::new();
            let mut held_back = Vec::new();
            let mut seen = HashSet::with_capacity(batch.events.len());
            let mut times = TimeSpan::default();
            let mut spend = Vec::new();
            let mut chunk = CopyChunk::new(chunk_bytes);
            for (index, incoming) in batch.events.iter().enumerate() {
                if incoming.sequence <= last || !seen.insert(&incoming.sequence) {
                    verdicts.push(Verdict::Duplicate);
                    continue;
                }
                let event = match self.validate(incoming, now) {
                    Ok(event) => event,
                    Err(rejection) => {
                        verdicts.push(Verdict::Rejected(rejection));
                        continue;
                    }
                };
                // A cost report goes to `ad_spend`, after the COPY (see below).
                if let Some(s) = Spend::from_event(&event) {
                    verdicts.push(Verdict::Stored(s.tenant_id));
                    spend.push((index, s));
                    continue;
                }
                match Row::new(index, event, incoming, &batch.partition) {
                    Err(rejection) => verdicts.push(Verdict::Rejected(rejection)),
                    Ok(row) => {
                        verdicts.push(Verdict::Stored(row.event.tenant_id));
                        if tenants.contains(&row.event.tenant_id)
                            && partitions.covers(row.event.event_time)
                        {
                            if let Some(full) = chunk.push(&row) {
                                // Fails only once the copier has stopped at an error, which
                                // `copier` returns; the batch is still validated to the end.
                                chunks.send(full).ok();
                                // Lets the copier (polled by the same task) send it.
                                tokio::task::yield_now().await;
                            }
                            times.include(row.event.event_time);
                            streamed.push(row);
                        } else {
                            held_back.push(row);
                        }
                    }
                }
            }
            if let Some(rest) = chunk.take() {
                chunks.send(rest).ok();
            }
            drop(chunks);
            (verdicts, streamed, held_back, times, spend)
        };
        let (copied, (mut verdicts, streamed, held_back, mut times, spend)) =
            tokio::join!(copier, validation);
        let validated = started.elapsed();
        let mut refused = match copied {
            Ok(()) if careful => {
                tx.batch_execute("RELEASE SAVEPOINT copy_events").await?;
                Vec::new()
            }
            Ok(()) => Vec::new(),
            Err(e) if may_be_row_error(&e) && careful => {
                undo_savepoint(&tx, "copy_events").await?;
                copy_narrowing(&tx, &batch.partition, &streamed).await?
            }
            // Dropping `tx` rolls the attempt back.
            Err(e) if may_be_row_error(&e) => return Err(Attempt::RowRefused),
            Err(e) => return Err(e.into()),
        };

        if !held_back.is_empty() {
            tenants = self
                .tenants
                .registered(&tx, held_back.iter().map(|r| r.event.tenant_id))
                .await?;
            let partitions = self
                .partitions
                .get(&tx, held_back.iter().map(|r| r.event.event_time))
                .await?;
            let mut late = Vec::new();
            for row in held_back {
                let tenant = row.event.tenant_id;
                if !tenants.contains(&tenant) {
                    verdicts[row.index] = Verdict::Rejected(Rejection::unknown_tenant(tenant));
                } else if !partitions.covers(row.event.event_time) {
                    verdicts[row.index] = Verdict::Rejected(no_partition(tenant));
                } else {
                    times.include(row.event.event_time);
                    late.push(row);
                }
            }
            refused.extend(copy_narrowing(&tx, &batch.partition, &late).await?);
        }
        // Spend of a tenant the cache does not know is judged after reloading it, as events are.
        if spend.iter().any(|(_, s)| !tenants.contains(&s.tenant_id)) {
            tenants = self
                .tenants
                .registered(&tx, spend.iter().map(|(_, s)| s.tenant_id))
                .await?;
        }
        let spend: Vec<Spend> = spend
            .into_iter()
            .filter_map(|(index, s)| {
                if tenants.contains(&s.tenant_id) {
                    return Some(s);
                }
                verdicts[index] = Verdict::Rejected(Rejection::unknown_tenant(s.tenant_id));
                None
            })
            .collect();
        let copied = started.elapsed();
        if !refused.is_empty() {
            // A partition dropped since the bounds were cached makes the row fail too; tell
            // those rows apart from ones a real constraint refused.
            let partitions = self.partitions.reload(&tx).await?;
            for (index, event_time, rejection) in refused {
                let tenant = rejection.tenant_id.unwrap_or_default();
                verdicts[index] = Verdict::Rejected(if partitions.covers(event_time) {
                    rejection
                } else {
                    no_partition(tenant)
                });
            }
        }

        let position = batch
            .events
            .iter()
            .map(|e| &e.sequence)
            .max()
            .filter(|&top| *top > last)
            .unwrap_or(&last)
            .clone();
        // Independent statements, sent together.
        tokio::try_join!(
            insert_dead_letters(&tx, batch, &verdicts, &self.limits),
            record_ledger(&tx, batch, &verdicts, &tenants),
            advance_position(&tx, batch, &last, &position),
            record_event_range(&tx, &verdicts, id_floor, &times),
            spend::store(&tx, &spend, spend::Origin::Stream),
        )?;
        let bookkept = started.elapsed();
        tx.commit().await?;
        tracing::debug!(
            careful,
            locked_us = locked.as_micros() as u64,
            validated_us = validated.as_micros() as u64,
            copied_us = copied.as_micros() as u64,
            bookkept_us = bookkept.as_micros() as u64,
            committed_us = started.elapsed().as_micros() as u64,
            "ingest phases (cumulative)"
        );
        Ok(report(batch, verdicts, position))
    }

    /// Validates one event; a panic while doing so dead-letters the event instead of failing
    /// the batch.
    fn validate(
        &self,
        incoming: &IncomingEvent,
        now: DateTime<Utc>,
    ) -> Result<ValidEvent, Rejection> {
        catch_unwind(AssertUnwindSafe(|| {
            parse_event(&incoming.body, incoming.enqueued_at, now, &self.limits)
        }))
        .unwrap_or_else(|_| {
            Err(Rejection {
                reason: Reason::InternalError,
                message: "validation panicked; see the handler log".into(),
                tenant_id: peek_tenant_id(&incoming.body),
            })
        })
    }
}

/// Bytes of COPY data per COPY command: about 250 rows.
///
/// A batch is written by several COPY commands rather than one. PostgreSQL 15 buffers
/// up to 1,000 rows of a binary COPY before inserting them (it counts no bytes for the binary
/// format). Every COPY creates a tuple slot per row it buffers (one long COPY reuses them), and
/// each slot pins the table's descriptor in a resource-owner array whose insertion is linear in the
/// number of pins already held: quadratic in the rows of one COPY. Four COPYs of 250 rows cost
/// the server about a fifth less CPU than one of 1,000 (measured: 0.28 against 0.345 s per
/// 100,000 rows).
const COPY_CHUNK: usize = 64 * 1024;

/// Bytes of COPY data per COPY command: [`COPY_CHUNK`] on PostgreSQL; on Citus the whole
/// batch in one COPY. A COPY into a distributed table is cut into one COPY per shard it
/// touches on the workers (32 for a batch of many tenants), so each extra command costs a
/// round of shard COPYs, while the coordinator buffers nothing of its own.
fn copy_chunk_bytes(citus: bool) -> usize {
    if citus {
        usize::MAX
    } else {
        COPY_CHUNK
    }
}

/// On Citus, makes the batch's transaction use one connection per worker
/// (`citus.multi_shard_modify_mode = sequential`, for this transaction only; the first
/// statement of the transaction, sent with the position lock).
///
/// In the default parallel mode a COPY into a distributed table opens a connection per shard
/// group it writes (about 14 per 1,000-event batch of 50 tenants on 2 workers), and with
/// `citus.max_cached_conns_per_worker` at its default of 1 all but one per worker are closed
/// at commit, so every batch paid for new connections. Measured with `loadgen bench-ingest`
/// on a coordinator + 2 workers (100,000 events, batches of 1,000, 4 partitions): 4,456
/// events/s in parallel mode, 34,567 to 43,479 in sequential mode with one COPY per batch.
async fn sequential_on_citus(
    tx: &Transaction<'_>,
    citus: bool,
) -> Result<(), tokio_postgres::Error> {
    if citus {
        tx.batch_execute("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'")
            .await?;
    }
    Ok(())
}

fn copy_sql() -> String {
    format!("COPY events ({EVENT_COLUMNS}) FROM STDIN (FORMAT binary)")
}

/// The data of one binary COPY command being gathered: the header, then whole rows.
struct CopyChunk {
    buf: BytesMut,
    rows: usize,
    /// Bytes after which the chunk is full.
    limit: usize,
}

impl CopyChunk {
    fn new(limit: usize) -> Self {
        let mut chunk = CopyChunk {
            buf: BytesMut::new(),
            rows: 0,
            limit,
        };
        chunk.reset();
        chunk
    }

    fn reset(&mut self) {
        self.buf.reserve(self.limit.min(COPY_CHUNK) + 2048);
        // Signature, flags (no OIDs), header extension length.
        self.buf.put_slice(b"PGCOPY\n\xff\r\n\0");
        self.buf.put_i32(0);
        self.buf.put_i32(0);
        self.rows = 0;
    }

    /// Adds a row; answers the data of a COPY command once it holds `limit` bytes.
    fn push(&mut self, row: &Row<'_>) -> Option<Bytes> {
        self.buf.put_slice(&row.encoded);
        self.rows += 1;
        (self.buf.len() >= self.limit)
            .then(|| self.take())
            .flatten()
    }

    /// The data of a COPY command of the rows added since the last one, if any.
    fn take(&mut self) -> Option<Bytes> {
        if self.rows == 0 {
            return None;
        }
        self.buf.put_i16(-1);
        let data = self.buf.split().freeze();
        self.reset();
        Some(data)
    }
}

/// Runs one COPY command per chunk received, in order, until the sender is dropped. Stops at
/// the first error and returns it.
///
/// Each COPY is ended (its outcome read) before the next one starts: sent along, the next one
/// would fail in the aborted transaction, and tokio-postgres would then send a stray CopyFail
/// whose answer breaks the connection.
async fn copy_chunks(
    tx: &Transaction<'_>,
    statement: &Statement,
    mut chunks: UnboundedReceiver<Bytes>,
) -> Result<(), tokio_postgres::Error> {
    while let Some(chunk) = chunks.recv().await {
        let mut sink = Box::pin(tx.copy_in::<_, Bytes>(statement).await?);
        sink.feed(chunk).await?;
        sink.as_mut().finish().await?;
    }
    Ok(())
}

/// Locks the partition's position row (creating it at -1, "nothing stored yet": sequence
/// numbers start at 0) and answers its sequence number. Concurrent deliveries of the same
/// partition queue on this lock until the first commits; the one that waited then reads the
/// position the first one committed.
///
/// Also answers the events sequence's last value before this transaction took an id: the
/// floor of the range [`record_event_range`] records.
///
/// It runs before the first COPY of the batch takes an id; it is sent together with the
/// preparation of the COPY statement.
async fn lock_position(
    tx: &Transaction<'_>,
    batch: &Batch,
) -> Result<(Position, i64), tokio_postgres::Error> {
    let row = tx
        .query_typed_one(
            include_str!("../sql/lock_position.sql"),
            &[(&batch.source, Type::TEXT), (&batch.partition, Type::TEXT)],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// The least and greatest event time of the rows a transaction wrote.
#[derive(Default)]
struct TimeSpan(Option<(DateTime<Utc>, DateTime<Utc>)>);

impl TimeSpan {
    fn include(&mut self, t: DateTime<Utc>) {
        self.0 = Some(match self.0 {
            None => (t, t),
            Some((lo, hi)) => (lo.min(t), hi.max(t)),
        });
    }
}

/// Records which event ids and times the batch wrote (`event_id_ranges`), so that a rollup
/// reads only the partitions its window touches. Only when a row was stored: then this session
/// has taken an id and `currval` is defined. The span may include rows the database refused,
/// which only widens it.
async fn record_event_range(
    tx: &Transaction<'_>,
    verdicts: &[Verdict],
    id_floor: i64,
    times: &TimeSpan,
) -> Result<(), tokio_postgres::Error> {
    let Some((min_time, max_time)) = times.0 else {
        return Ok(());
    };
    if !verdicts.iter().any(|v| matches!(v, Verdict::Stored(_))) {
        return Ok(());
    }
    tx.query_typed(
        include_str!("../sql/record_event_range.sql"),
        &[
            (&id_floor, Type::INT8),
            (&min_time, Type::TIMESTAMPTZ),
            (&max_time, Type::TIMESTAMPTZ),
        ],
    )
    .await?;
    Ok(())
}

async fn advance_position(
    tx: &Transaction<'_>,
    batch: &Batch,
    last: &Position,
    position: &Position,
) -> Result<(), tokio_postgres::Error> {
    if position > last {
        tx.query_typed(
            include_str!("../sql/advance_position.sql"),
            &[
                (&batch.source, Type::TEXT),
                (&batch.partition, Type::TEXT),
                (position, Type::NUMERIC),
            ],
        )
        .await?;
    }
    Ok(())
}

fn no_partition(tenant_id: i64) -> Rejection {
    Rejection {
        reason: Reason::NoPartition,
        message: "no partition of events covers event_time".into(),
        tenant_id: Some(tenant_id),
    }
}

/// COPYs the rows; rows the database refuses as data errors are found by bisection and returned
/// with their rejection, while every other row is written.
async fn copy_narrowing(
    tx: &Transaction<'_>,
    partition: &str,
    rows: &[Row<'_>],
) -> Result<Vec<Refusal>, tokio_postgres::Error> {
    let mut rejected = Vec::new();
    let mut pending: Vec<Range<usize>> = Vec::new();
    if !rows.is_empty() {
        pending.push(0..rows.len());
    }
    while let Some(range) = pending.pop() {
        tx.batch_execute("SAVEPOINT narrow").await?;
        let single = range.len() == 1;
        let written = if single {
            insert_row(tx, partition, &rows[range.start]).await
        } else {
            copy_rows(tx, &rows[range.clone()]).await
        };
        match written {
            Ok(()) => tx.batch_execute("RELEASE SAVEPOINT narrow").await?,
            Err(e) if single && is_data_error(&e) => {
                undo_savepoint(tx, "narrow").await?;
                let row = &rows[range.start];
                rejected.push((
                    row.index,
                    row.event.event_time,
                    db_rejection(&e, row.event.tenant_id),
                ));
            }
            Err(e) if !single && may_be_row_error(&e) => {
                undo_savepoint(tx, "narrow").await?;
                let mid = range.start + range.len() / 2;
                pending.push(mid..range.end);
                pending.push(range.start..mid);
            }
            // The whole transaction is lost; dropping it rolls back.
            Err(e) => return Err(e),
        }
    }
    Ok(rejected)
}

/// Rolls back to a savepoint and releases it: ROLLBACK TO alone keeps the savepoint open, and
/// open subtransactions pile up (past 64 they slow every snapshot of the cluster).
async fn undo_savepoint(tx: &Transaction<'_>, name: &str) -> Result<(), tokio_postgres::Error> {
    tx.batch_execute(&format!(
        "ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}"
    ))
    .await
}

fn db_rejection(e: &tokio_postgres::Error, tenant_id: i64) -> Rejection {
    let message = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => "the database refused the row".into(),
    };
    Rejection {
        reason: Reason::DbRejected,
        message,
        tenant_id: Some(tenant_id),
    }
}

/// The values of one row of `events`, in [`EVENT_COLUMNS`] order.
fn row_values<'a>(
    e: &'a ValidEvent,
    incoming: &'a IncomingEvent,
    partition: &'a &str,
) -> [&'a (dyn ToSql + Sync); 18] {
    [
        &e.tenant_id,
        &e.event_time,
        &e.event_type,
        &e.device_id,
        &e.session_id,
        &e.country,
        &e.browser,
        &e.page_url,
        &e.referrer,
        &e.campaign,
        &e.source,
        &e.medium,
        &e.revenue,
        &e.currency,
        &e.properties,
        &incoming.enqueued_at,
        partition,
        &incoming.sequence,
    ]
}

async fn copy_rows(tx: &Transaction<'_>, rows: &[Row<'_>]) -> Result<(), tokio_postgres::Error> {
    let statement = tx.prepare_typed(&copy_sql(), &[]).await?;
    let (chunks, to_copy) = tokio::sync::mpsc::unbounded_channel();
    // Narrowing and late rows: the PostgreSQL chunking (copy_chunk_bytes only matters for the
    // bulk of a batch).
    let mut chunk = CopyChunk::new(COPY_CHUNK);
    for row in rows {
        if let Some(full) = chunk.push(row) {
            chunks.send(full).ok();
        }
    }
    if let Some(rest) = chunk.take() {
        chunks.send(rest).ok();
    }
    drop(chunks);
    copy_chunks(tx, &statement, to_copy).await
}

/// Writes valid events of one stream partition to `events` in the caller's transaction, as
/// ingest writes them (the same binary COPY rows; refusals narrowed down to the offending rows
/// under savepoints, the rest written), and answers the events not written, by the caller's
/// index, with why. For dead-letter replay ([`crate::replay`]).
pub(crate) async fn write_events<'a>(
    tx: &Transaction<'_>,
    partition: &str,
    events: impl IntoIterator<Item = (usize, ValidEvent, &'a IncomingEvent)>,
) -> Result<Vec<(usize, Rejection)>, tokio_postgres::Error> {
    let mut rejected = Vec::new();
    let mut rows = Vec::new();
    for (index, event, incoming) in events {
        match Row::new(index, event, incoming, partition) {
            Ok(row) => rows.push(row),
            Err(rejection) => rejected.push((index, rejection)),
        }
    }
    let refused = copy_narrowing(tx, partition, &rows).await?;
    rejected.extend(refused.into_iter().map(|(index, _, r)| (index, r)));
    Ok(rejected)
}

/// One row by INSERT: the last step of narrowing, which also reports the row's own SQLSTATE
/// where a distributed COPY would not.
async fn insert_row(
    tx: &Transaction<'_>,
    partition: &str,
    row: &Row<'_>,
) -> Result<(), tokio_postgres::Error> {
    let values = row_values(&row.event, row.incoming, &partition);
    let params: Vec<(&(dyn ToSql + Sync), Type)> = values
        .into_iter()
        .zip(COLUMN_TYPES.iter().cloned())
        .collect();
    tx.query_typed(
        &format!(
            "INSERT INTO events ({EVENT_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
        ),
        &params,
    )
    .await?;
    Ok(())
}

async fn insert_dead_letters(
    tx: &Transaction<'_>,
    batch: &Batch,
    verdicts: &[Verdict],
    limits: &EventLimits,
) -> Result<(), tokio_postgres::Error> {
    let mut sequences = Vec::new();
    let mut offsets = Vec::new();
    let mut enqueued = Vec::new();
    let mut tenants = Vec::new();
    let mut reasons = Vec::new();
    let mut messages = Vec::new();
    let mut payloads: Vec<&[u8]> = Vec::new();
    let mut full_sizes: Vec<Option<i64>> = Vec::new();
    for (incoming, verdict) in batch.events.iter().zip(verdicts) {
        if let Verdict::Rejected(r) = verdict {
            let (payload, full_size) = kept_payload(&incoming.body, r.reason, limits);
            payloads.push(payload);
            full_sizes.push(full_size);
            sequences.push(&incoming.sequence);
            offsets.push(incoming.offset.as_deref());
            enqueued.push(incoming.enqueued_at);
            tenants.push(r.tenant_id);
            reasons.push(r.reason.code());
            messages.push(r.message.as_str());
        }
    }
    if sequences.is_empty() {
        return Ok(());
    }
    tx.query_typed(
        include_str!("../sql/insert_dead_letters.sql"),
        &[
            (&batch.source, Type::TEXT),
            (&batch.partition, Type::TEXT),
            (&sequences, Type::NUMERIC_ARRAY),
            (&offsets, Type::TEXT_ARRAY),
            (&enqueued, Type::TIMESTAMPTZ_ARRAY),
            (&tenants, Type::INT8_ARRAY),
            (&reasons, Type::TEXT_ARRAY),
            (&messages, Type::TEXT_ARRAY),
            (&payloads, Type::BYTEA_ARRAY),
            (&full_sizes, Type::INT8_ARRAY),
        ],
    )
    .await?;
    Ok(())
}

/// What a dead letter keeps of its payload: all of it, except for a `too_large` event, whose
/// first bytes only are kept, with its full size.
fn kept_payload<'a>(
    body: &'a [u8],
    reason: Reason,
    limits: &EventLimits,
) -> (&'a [u8], Option<i64>) {
    let cap = limits.max_dead_letter_payload_bytes;
    if reason == Reason::TooLarge && body.len() > cap {
        (&body[..cap], Some(body.len() as i64))
    } else {
        (body, None)
    }
}

/// Records the batch in the ledger, per tenant and hour of enqueue time. Events of a tenant
/// that is not registered, or whose tenant cannot be read, count under tenant 0.
async fn record_ledger(
    tx: &Transaction<'_>,
    batch: &Batch,
    verdicts: &[Verdict],
    registered: &HashSet<i64>,
) -> Result<(), tokio_postgres::Error> {
    let known = |id: Option<i64>| id.filter(|id| registered.contains(id)).unwrap_or(0);
    let mut entry = ledger::Entry::default();
    for (incoming, verdict) in batch.events.iter().zip(verdicts) {
        let (tenant, count): (i64, fn(&mut ledger::Counts)) = match verdict {
            Verdict::Stored(tenant) => (*tenant, |c| c.stored += 1),
            Verdict::Duplicate => (known(peek_tenant_id(&incoming.body)), |c| c.duplicates += 1),
            Verdict::Rejected(r) => (known(r.tenant_id), |c| c.dead_lettered += 1),
        };
        let c = entry.cell(tenant, incoming.enqueued_at);
        c.received += 1;
        count(c);
    }
    entry.record(tx, &batch.source, &batch.partition).await
}

fn report(batch: &Batch, verdicts: Vec<Verdict>, position: Position) -> BatchReport {
    let outcomes: Vec<EventOutcome> = batch
        .events
        .iter()
        .zip(verdicts)
        .map(|(incoming, verdict)| EventOutcome {
            sequence: incoming.sequence.clone(),
            outcome: match verdict {
                Verdict::Stored(_) => Outcome::Stored,
                Verdict::Duplicate => Outcome::Duplicate,
                Verdict::Rejected(r) => Outcome::DeadLettered {
                    reason: r.reason,
                    message: r.message,
                },
            },
        })
        .collect();
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(&o.outcome)).count();
    BatchReport {
        source: batch.source.clone(),
        partition: batch.partition.clone(),
        received: outcomes.len(),
        stored: count(|o| matches!(o, Outcome::Stored)),
        duplicates: count(|o| matches!(o, Outcome::Duplicate)),
        dead_lettered: count(|o| matches!(o, Outcome::DeadLettered { .. })),
        position,
        outcomes,
    }
}
