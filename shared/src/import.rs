//! Moving in: bulk import of historical events from files or from a query on another
//! PostgreSQL database, through the ingest path.
//!
//! A file is read as a stream of records, each becoming one [`IncomingEvent`] whose position is
//! the byte offset of the record in the (decompressed) file; a query ([`import_postgres`]) is
//! read by binary COPY in chunks of its key column's order, each row's position its key. Records are written in chunks, each
//! chunk one [`Batch`] given to the same [`Ingestor`] that serves the live stream: the same
//! validation and reason codes, dead letters, ledger, tenants refused as `unknown_tenant`,
//! binary COPY, and the same exactly-once rule. The chunk's position moves in the transaction that
//! writes its rows, under the source [`source_name`] (derived from the file's identity) and the
//! partition [`PARTITION`]. A killed import run again with the same file skips the records at
//! or below that position without sending them and goes on where it stopped (a query continues
//! with the keys above it).
//!
//! Before a chunk is written, the partitions holding its event times are created if missing
//! ([`Ingestor::ensure_partitions`]: bounded transactions at the table's fixed interval), so
//! history older than partition upkeep keeps can be stored. While an import runs it holds the
//! advisory lock `import:events` shared, and partition upkeep drops nothing (migration V18).
//!
//! Formats, by file name: `.ndjson` (one JSON object per line; blank lines are skipped) and
//! `.csv` (a header row; each row becomes a JSON object of its non-empty cells, named by the
//! header or by a [`ColumnMap`]), either optionally `.gz`.

use crate::event::{peek_event_time, EventLimits};
use crate::ingest::{Batch, IncomingEvent, IngestError, Ingestor, Outcome};
use crate::position::Position;
use crate::reason::Reason;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// The stream partition of every import source: one position per file.
pub const PARTITION: &str = "file";

/// Records per chunk (one transaction) unless told otherwise.
pub const DEFAULT_CHUNK_EVENTS: usize = 10_000;

/// Bytes of the file's start that go into its identity.
const IDENTITY_BYTES: usize = 64 * 1024;

/// Chunks read ahead of the one being written (memory stays at about this many chunks).
const READ_AHEAD: usize = 2;

/// The advisory lock an import holds shared for its session; partition upkeep drops no
/// partition while it is held (migration V18).
const IMPORT_LOCK: &str = "SELECT pg_advisory_lock_shared(hashtext('import:events'))";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Ndjson,
}

/// How a file is read, from its name: `.csv`, `.ndjson`, either optionally `.gz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileKind {
    pub format: Format,
    pub gzip: bool,
}

impl FileKind {
    pub fn from_name(path: &Path) -> Result<FileKind, ImportError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let (rest, gzip) = match name.strip_suffix(".gz") {
            Some(rest) => (rest, true),
            None => (name.as_str(), false),
        };
        let format = if rest.ends_with(".csv") {
            Format::Csv
        } else if rest.ends_with(".ndjson") || rest.ends_with(".jsonl") {
            Format::Ndjson
        } else {
            return Err(ImportError::Input(format!(
                "{}: the format comes from the name: .csv, .ndjson (or .jsonl), optionally .gz",
                path.display()
            )));
        };
        Ok(FileKind { format, gzip })
    }
}

/// CSV columns renamed to the event contract's fields (`--map column=field`); a column mapped
/// to nothing (`column=`) is left out. Columns not named keep their header as field name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnMap(HashMap<String, Option<String>>);

impl ColumnMap {
    /// From `column=field` items.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<ColumnMap, ImportError> {
        let mut map = HashMap::new();
        for item in items {
            let item = item.as_ref();
            let (column, field) = item.split_once('=').ok_or_else(|| {
                ImportError::Input(format!("column mapping {item:?} is not COLUMN=FIELD"))
            })?;
            let field = field.trim();
            let field = (!field.is_empty()).then(|| field.to_string());
            if map.insert(column.trim().to_string(), field).is_some() {
                return Err(ImportError::Input(format!(
                    "column {:?} is mapped twice",
                    column.trim()
                )));
            }
        }
        Ok(ColumnMap(map))
    }

    /// The field of each header (None: left out). Two columns may not become one field.
    fn fields(&self, headers: &[String]) -> Result<Vec<Option<String>>, ImportError> {
        for column in self.0.keys() {
            if !headers.contains(column) {
                return Err(ImportError::Input(format!(
                    "the mapping names column {column:?}, which the header row does not have"
                )));
            }
        }
        let fields: Vec<Option<String>> = headers
            .iter()
            .map(|h| self.0.get(h).cloned().unwrap_or_else(|| Some(h.clone())))
            .collect();
        let mut seen = HashSet::new();
        for f in fields.iter().flatten() {
            if !seen.insert(f) {
                return Err(ImportError::Input(format!(
                    "two columns become the field {f:?}: map one of them elsewhere or to nothing"
                )));
            }
        }
        Ok(fields)
    }
}

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub columns: ColumnMap,
    /// Records per chunk: one transaction, one position step.
    pub chunk_events: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            columns: ColumnMap::default(),
            chunk_events: DEFAULT_CHUNK_EVENTS,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Input(String),
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("chunk {chunk} was not written; run the same import again to continue")]
    Ingest {
        chunk: u64,
        #[source]
        source: IngestError,
    },
    #[error("database error")]
    Database(#[from] tokio_postgres::Error),
}

/// Where an import stands, after each chunk.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Chunks written by this run.
    pub chunks: u64,
    /// Records read (skipped ones included).
    pub records: u64,
    pub stored: u64,
    pub dead_lettered: u64,
    /// Records at or below the stored position: imported by an earlier run.
    pub skipped: u64,
    pub partitions_created: u64,
    /// Bytes of the input consumed (compressed bytes for `.gz`; COPY data for a query) and the
    /// size of the file (None for a query: unknown).
    pub bytes_read: u64,
    pub bytes_total: Option<u64>,
    pub elapsed: Duration,
}

impl Progress {
    /// Events written (stored or dead-lettered) per second by this run.
    pub fn rate(&self) -> f64 {
        (self.stored + self.dead_lettered) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// How much of a file is read; None for a query.
    pub fn done_percent(&self) -> Option<f64> {
        self.bytes_total.map(|total| {
            if total == 0 {
                100.0
            } else {
                self.bytes_read as f64 * 100.0 / total as f64
            }
        })
    }
}

/// What an import of one file did.
#[derive(Debug, Clone)]
pub struct ImportSummary {
    /// The file, or the database a query was read from.
    pub input: String,
    pub source: String,
    /// The position stored when the run started (-1: nothing imported before).
    pub resumed_after: Position,
    pub progress: Progress,
    /// Records skipped as already imported: at or below the position when the run started,
    /// plus those the ingest path found at or below it (a concurrent run of the same file).
    pub duplicates: u64,
    pub dead_letters: BTreeMap<Reason, u64>,
    /// The file's position after the run (byte offset of the last record written).
    pub position: Position,
}

/// The import source of a file: its canonical path, size and the SHA-256 of its first
/// 64 KiB. The same file named by another path is the same source; a file that changed
/// (another size or start) is a new one.
pub fn source_name(path: &Path) -> Result<String, ImportError> {
    let io_err = |source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let canonical = std::fs::canonicalize(path).map_err(io_err)?;
    let mut file = File::open(&canonical).map_err(io_err)?;
    let size = file.metadata().map_err(io_err)?.len();
    let mut head = Vec::with_capacity(IDENTITY_BYTES);
    (&mut file)
        .take(IDENTITY_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(io_err)?;
    let digest = Sha256::digest(&head);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("import:{}:{size}:{hex}", canonical.display()))
}

/// One record of a file, as an event body, with its position and the event time it states.
struct Record {
    position: i64,
    /// The line in a file (None for a query row).
    line: Option<u64>,
    body: Vec<u8>,
    time: Option<DateTime<Utc>>,
}

/// Counts the bytes read from the file (before decompression), for progress.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

enum Records {
    Ndjson {
        input: BufReader<Box<dyn Read + Send>>,
        offset: u64,
        line: u64,
    },
    Csv {
        input: Box<csv::Reader<Box<dyn Read + Send>>>,
        fields: Vec<Option<String>>,
        record: csv::ByteRecord,
    },
}

impl Records {
    fn open(
        path: &Path,
        kind: FileKind,
        columns: &ColumnMap,
        read: Arc<AtomicU64>,
    ) -> Result<Records, ImportError> {
        let io_err = |source| ImportError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = Counting {
            inner: File::open(path).map_err(io_err)?,
            read,
        };
        let input: Box<dyn Read + Send> = if kind.gzip {
            Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
                256 * 1024,
                file,
            )))
        } else {
            Box::new(file)
        };
        Ok(match kind.format {
            Format::Ndjson => Records::Ndjson {
                input: BufReader::with_capacity(256 * 1024, input),
                offset: 0,
                line: 0,
            },
            Format::Csv => {
                let mut input = csv::ReaderBuilder::new()
                    .has_headers(true)
                    .flexible(true)
                    .buffer_capacity(256 * 1024)
                    .from_reader(input);
                let headers: Vec<String> = input
                    .byte_headers()
                    .map_err(|e| csv_error(path, e))?
                    .iter()
                    .map(|h| {
                        std::str::from_utf8(h)
                            .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
                            .map_err(|_| {
                                ImportError::Input(format!(
                                    "{}: the header row is not UTF-8",
                                    path.display()
                                ))
                            })
                    })
                    .collect::<Result<_, _>>()?;
                if headers.is_empty() {
                    return Err(ImportError::Input(format!(
                        "{}: no header row",
                        path.display()
                    )));
                }
                let fields = columns.fields(&headers)?;
                Records::Csv {
                    input: Box::new(input),
                    fields,
                    record: csv::ByteRecord::new(),
                }
            }
        })
    }

    /// The next record, or None at the end of the file.
    fn next(&mut self, path: &Path) -> Result<Option<Record>, ImportError> {
        match self {
            Records::Ndjson {
                input,
                offset,
                line,
            } => loop {
                let mut body = Vec::new();
                let start = *offset;
                let n = input
                    .read_until(b'\n', &mut body)
                    .map_err(|source| ImportError::Io {
                        path: path.to_path_buf(),
                        source,
                    })?;
                if n == 0 {
                    return Ok(None);
                }
                *offset += n as u64;
                *line += 1;
                while matches!(body.last(), Some(b'\n' | b'\r')) {
                    body.pop();
                }
                if body.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let time = peek_event_time(&body);
                return Ok(Some(Record {
                    position: start as i64,
                    line: Some(*line),
                    body,
                    time,
                }));
            },
            Records::Csv {
                input,
                fields,
                record,
            } => {
                if !input
                    .read_byte_record(record)
                    .map_err(|e| csv_error(path, e))?
                {
                    return Ok(None);
                }
                let at = record
                    .position()
                    .cloned()
                    .unwrap_or_else(csv::Position::new);
                let (body, time) = csv_body(fields, record);
                Ok(Some(Record {
                    position: at.byte() as i64,
                    line: Some(at.line()),
                    body,
                    time,
                }))
            }
        }
    }
}

fn csv_error(path: &Path, e: csv::Error) -> ImportError {
    match e.into_kind() {
        csv::ErrorKind::Io(source) => ImportError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => ImportError::Input(format!("{}: {other:?}", path.display())),
    }
}

/// Fields of the contract whose CSV text is an integer when it reads as one (otherwise a
/// string, which the contract hashes or refuses as it would in JSON).
const INTEGER_FIELDS: [&str; 3] = ["tenant_id", "device_id", "session_id"];

/// One CSV row as an event body: a JSON object of its non-empty cells, in column order.
/// `properties` is embedded as JSON when its text is JSON (else as a string, which validation
/// refuses as `bad_properties`); integer fields as numbers when they read as integers; every
/// other cell as a string. A row that cannot be such an object becomes a body validation
/// refuses with its own reason: a row of more cells than the header has becomes a JSON array
/// (`not_an_object`), a row that is not UTF-8 its raw cells joined by commas (`invalid_json`).
fn csv_body(
    fields: &[Option<String>],
    record: &csv::ByteRecord,
) -> (Vec<u8>, Option<DateTime<Utc>>) {
    if record.len() > fields.len() {
        let cells: Vec<String> = record
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        return (serde_json::to_vec(&cells).unwrap_or_default(), None);
    }
    let mut cells = Vec::with_capacity(record.len());
    for cell in record.iter() {
        match std::str::from_utf8(cell) {
            Ok(text) => cells.push(text),
            Err(_) => return (record.iter().collect::<Vec<_>>().join(&b','), None),
        }
    }
    let mut body = Vec::with_capacity(record.as_slice().len() + 16 * cells.len() + 2);
    let mut time = None;
    body.push(b'{');
    for (field, text) in fields.iter().zip(cells) {
        let Some(field) = field else { continue };
        if text.is_empty() {
            continue;
        }
        if body.len() > 1 {
            body.push(b',');
        }
        write_json_string(&mut body, field);
        body.push(b':');
        if INTEGER_FIELDS.contains(&field.as_str()) && is_integer(text) {
            body.extend_from_slice(text.as_bytes());
        } else if field == "properties"
            && serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok()
        {
            body.extend_from_slice(text.trim().as_bytes());
        } else {
            if field == "event_time" {
                time = DateTime::parse_from_rfc3339(text)
                    .ok()
                    .map(|t| t.with_timezone(&Utc));
            }
            write_json_string(&mut body, text);
        }
    }
    body.push(b'}');
    (body, time)
}

fn write_json_string(out: &mut Vec<u8>, s: &str) {
    // Writing a str to a Vec cannot fail.
    serde_json::to_writer(&mut *out, s).ok();
}

/// `-?(0|[1-9][0-9]*)`: a JSON integer literal.
fn is_integer(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && digits.len() <= 19
}

/// The file's position: the byte offset of the last record stored (-1: none yet).
async fn stored_position(client: &Client, source: &str) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT last_sequence::bigint FROM ingest_positions \
             WHERE source = $1 AND stream_partition = $2",
            &[&source, &PARTITION],
        )
        .await?;
    Ok(row.map(|r| r.get(0)).unwrap_or(-1))
}

/// Imports one file (see the module documentation); `progress` is called after each chunk.
/// `limits` are the event contract's limits; an import passes a retention reaching as far back
/// as the history it brings.
pub async fn import_file(
    client: &mut Client,
    ingestor: &Ingestor,
    path: &Path,
    options: &ImportOptions,
    limits: &EventLimits,
    progress: impl FnMut(&Progress),
) -> Result<ImportSummary, ImportError> {
    let kind = FileKind::from_name(path)?;
    let source = source_name(path)?;
    let bytes_total = std::fs::metadata(path)
        .map_err(|source| ImportError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    client.batch_execute(IMPORT_LOCK).await?;
    let last = stored_position(client, &source).await?;

    let read = Arc::new(AtomicU64::new(0));
    let mut records = Records::open(path, kind, &options.columns, read.clone())?;
    let chunk_events = options.chunk_events.max(1);
    // Records are read on a blocking thread, a few chunks ahead of the one being written.
    let (chunks, incoming) = tokio::sync::mpsc::channel::<Result<Chunk, ImportError>>(READ_AHEAD);
    let file = path.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || {
        let mut skipped = 0u64;
        let mut chunk = Vec::with_capacity(chunk_events);
        loop {
            match records.next(&file) {
                Ok(Some(r)) if r.position <= last => skipped += 1,
                Ok(Some(r)) => {
                    chunk.push(r);
                    if chunk.len() == chunk_events {
                        let full = std::mem::replace(&mut chunk, Vec::with_capacity(chunk_events));
                        let c = Chunk {
                            records: full,
                            skipped: std::mem::take(&mut skipped),
                            bytes_read: read.load(Ordering::Relaxed),
                        };
                        if chunks.blocking_send(Ok(c)).is_err() {
                            return;
                        }
                    }
                }
                Ok(None) => {
                    let c = Chunk {
                        records: chunk,
                        skipped,
                        bytes_read: read.load(Ordering::Relaxed),
                    };
                    chunks.blocking_send(Ok(c)).ok();
                    return;
                }
                Err(e) => {
                    chunks.blocking_send(Err(e)).ok();
                    return;
                }
            }
        }
    });
    let written = write_chunks(
        client,
        ingestor,
        &source,
        last,
        Some(bytes_total),
        limits,
        incoming,
        progress,
    )
    .await;
    reader.await.ok();
    let (progress, duplicates, dead_letters, position) = written?;
    Ok(ImportSummary {
        input: path.display().to_string(),
        source,
        resumed_after: Position::from(last),
        duplicates,
        progress,
        dead_letters,
        position,
    })
}

/// Imports the rows of a query on another PostgreSQL database (see the module documentation):
/// each chunk is one `COPY (SELECT .. WHERE key > last ORDER BY key LIMIT n) TO STDOUT`, each
/// row becoming the JSON object of its non-NULL columns (`to_jsonb`; alias columns to the
/// contract's names in the query), its position the value of the integer column `key` (unique,
/// at least 0). The source is named by the database's host, port and name, the key and the
/// query's hash; a rerun continues after the greatest key stored.
#[allow(clippy::too_many_arguments)]
pub async fn import_postgres(
    client: &mut Client,
    ingestor: &Ingestor,
    from: Client,
    from_config: &tokio_postgres::Config,
    query: &str,
    key: &str,
    options: &ImportOptions,
    limits: &EventLimits,
    progress: impl FnMut(&Progress),
) -> Result<ImportSummary, ImportError> {
    let source = query_source_name(from_config, query, key);
    client.batch_execute(IMPORT_LOCK).await?;
    let last = stored_position(client, &source).await?;
    let chunk_events = options.chunk_events.max(1);
    let (chunks, incoming) = tokio::sync::mpsc::channel::<Result<Chunk, ImportError>>(READ_AHEAD);
    let statement = KeyRangeCopy::new(query, key, chunk_events);
    let reader = tokio::spawn(async move {
        let mut after = (last >= 0).then_some(last);
        let mut bytes = 0u64;
        loop {
            let read = statement.read(&from, after).await;
            let (records, size) = match read {
                Ok(read) => read,
                Err(e) => {
                    chunks.send(Err(e)).await.ok();
                    return;
                }
            };
            bytes += size;
            let full = records.len() == chunk_events;
            after = records.last().map(|r| r.position).or(after);
            let c = Chunk {
                records,
                skipped: 0,
                bytes_read: bytes,
            };
            if chunks.send(Ok(c)).await.is_err() || !full {
                return;
            }
        }
    });
    let written = write_chunks(
        client, ingestor, &source, last, None, limits, incoming, progress,
    )
    .await;
    reader.abort();
    let (progress, duplicates, dead_letters, position) = written?;
    Ok(ImportSummary {
        input: format!("query on {}", database_label(from_config)),
        source,
        resumed_after: Position::from(last),
        duplicates,
        progress,
        dead_letters,
        position,
    })
}

/// `host:port/dbname` of a connection configuration (never its user or password).
fn database_label(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or(""))
}

/// The import source of a query: the database, the key column and the query text's hash.
pub fn query_source_name(config: &tokio_postgres::Config, query: &str, key: &str) -> String {
    let digest = Sha256::digest(query.trim().as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("import:postgres:{}:{key}:{hex}", database_label(config))
}

/// One chunk of a query in key order, read by binary COPY.
struct KeyRangeCopy {
    query: String,
    key: String,
    limit: usize,
}

impl KeyRangeCopy {
    fn new(query: &str, key: &str, limit: usize) -> Self {
        KeyRangeCopy {
            query: query.trim().trim_end_matches(';').to_string(),
            // An identifier, quoted: the operator's column name, never SQL.
            key: format!("\"{}\"", key.replace('"', "\"\"")),
            limit,
        }
    }

    /// The rows after `after` (all from the start when None), at most `limit`, in key order,
    /// with the bytes COPY sent.
    async fn read(
        &self,
        from: &Client,
        after: Option<i64>,
    ) -> Result<(Vec<Record>, u64), ImportError> {
        use futures_util::TryStreamExt;
        let bound = after
            .map(|k| format!("WHERE q.{} > {k}", self.key))
            .unwrap_or_default();
        let sql = format!(
            "COPY (SELECT jsonb_strip_nulls(to_jsonb(q))::text, q.{key}::bigint \
             FROM ({query}) q {bound} ORDER BY q.{key} LIMIT {limit}) TO STDOUT (FORMAT binary)",
            key = self.key,
            query = self.query,
            limit = self.limit,
        );
        let stream = from.copy_out(&sql).await?;
        let data: Vec<bytes::Bytes> = stream.try_collect().await?;
        let size = data.iter().map(|b| b.len() as u64).sum();
        let mut buf = bytes::BytesMut::with_capacity(size as usize);
        for part in data {
            buf.extend_from_slice(&part);
        }
        Ok((binary_copy_rows(&buf)?, size))
    }
}

/// The rows of a binary COPY of (text, bigint): the event body and its key.
fn binary_copy_rows(data: &[u8]) -> Result<Vec<Record>, ImportError> {
    let bad = || ImportError::Input("the source database sent a malformed COPY stream".into());
    let mut at = data.get(11..).ok_or_else(bad)?; // signature
    let take = |at: &mut &[u8], n: usize| -> Result<Vec<u8>, ImportError> {
        let (head, rest) = (at.get(..n).ok_or_else(bad)?, at.get(n..).ok_or_else(bad)?);
        *at = rest;
        Ok(head.to_vec())
    };
    let int = |b: Vec<u8>| b.iter().fold(0i64, |n, x| (n << 8) | i64::from(*x));
    take(&mut at, 4)?; // flags
    let extension = int(take(&mut at, 4)?) as usize;
    take(&mut at, extension)?;
    let mut rows = Vec::new();
    loop {
        let fields = i16::from_be_bytes(take(&mut at, 2)?.try_into().map_err(|_| bad())?);
        if fields == -1 {
            return Ok(rows);
        }
        if fields != 2 {
            return Err(bad());
        }
        let len = i32::from_be_bytes(take(&mut at, 4)?.try_into().map_err(|_| bad())?);
        let body = take(&mut at, usize::try_from(len).map_err(|_| bad())?)?;
        let len = i32::from_be_bytes(take(&mut at, 4)?.try_into().map_err(|_| bad())?);
        if len != 8 {
            return Err(ImportError::Input("the key column must not be NULL".into()));
        }
        let key = i64::from_be_bytes(take(&mut at, 8)?.try_into().map_err(|_| bad())?);
        if key < 0 {
            return Err(ImportError::Input(format!(
                "key {key} is negative: the key column must be a unique integer of at least 0"
            )));
        }
        let time = peek_event_time(&body);
        rows.push(Record {
            position: key,
            line: None,
            body,
            time,
        });
    }
}

/// What [`write_chunks`] did: progress, duplicates, dead letters per reason, the position.
type Written = (Progress, u64, BTreeMap<Reason, u64>, Position);

/// Writes the chunks read by one reader through the ingest path, one transaction each, until
/// the reader is done.
#[allow(clippy::too_many_arguments)]
async fn write_chunks(
    client: &mut Client,
    ingestor: &Ingestor,
    source: &str,
    last: i64,
    bytes_total: Option<u64>,
    limits: &EventLimits,
    mut incoming: tokio::sync::mpsc::Receiver<Result<Chunk, ImportError>>,
    mut progress: impl FnMut(&Progress),
) -> Result<Written, ImportError> {
    let started = Instant::now();
    let mut state = Progress {
        bytes_total,
        ..Progress::default()
    };
    let mut duplicates = 0u64;
    let mut dead_letters = BTreeMap::new();
    let mut position = Position::from(last);
    while let Some(chunk) = incoming.recv().await {
        let chunk = chunk?;
        state.skipped += chunk.skipped;
        state.records += chunk.skipped + chunk.records.len() as u64;
        state.bytes_read = chunk.bytes_read;
        if chunk.records.is_empty() {
            continue;
        }
        let now = Utc::now();
        // Partitions only for times validation can accept: an event outside the limits is
        // dead-lettered, and must not make an import create years of empty partitions.
        let oldest = now - limits.retention;
        let newest = now + limits.future_skew;
        let times: Vec<DateTime<Utc>> = chunk
            .records
            .iter()
            .filter_map(|r| r.time)
            .filter(|t| *t >= oldest && *t <= newest)
            .collect();
        state.partitions_created += ingestor.ensure_partitions(client, &times).await?.len() as u64;
        let batch = Batch {
            source: source.to_string(),
            partition: PARTITION.to_string(),
            events: chunk
                .records
                .into_iter()
                .map(|r| IncomingEvent {
                    sequence: Position::from(r.position),
                    offset: r.line.map(|line| format!("line {line}")),
                    enqueued_at: now,
                    body: r.body,
                })
                .collect(),
            contiguous: false,
        };
        let report = ingestor
            .ingest(client, &batch, now)
            .await
            .map_err(|source| ImportError::Ingest {
                chunk: state.chunks + 1,
                source,
            })?;
        for o in &report.outcomes {
            if let Outcome::DeadLettered { reason, .. } = &o.outcome {
                *dead_letters.entry(*reason).or_insert(0u64) += 1;
            }
        }
        state.chunks += 1;
        state.stored += report.stored as u64;
        state.dead_lettered += report.dead_lettered as u64;
        duplicates += report.duplicates as u64;
        position = report.position;
        state.elapsed = started.elapsed();
        progress(&state);
    }
    state.elapsed = started.elapsed();
    client
        .batch_execute("SELECT pg_advisory_unlock_shared(hashtext('import:events'))")
        .await?;
    Ok((
        state.clone(),
        state.skipped + duplicates,
        dead_letters,
        position,
    ))
}

/// Records read for one transaction, and the records before them skipped as already stored.
struct Chunk {
    records: Vec<Record>,
    skipped: u64,
    /// Bytes of the file consumed when the chunk was complete.
    bytes_read: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(
        headers: &[&str],
        map: &[&str],
        row: &[&str],
    ) -> (serde_json::Value, Option<DateTime<Utc>>) {
        let headers: Vec<String> = headers.iter().map(|s| s.to_string()).collect();
        let fields = ColumnMap::parse(map).unwrap().fields(&headers).unwrap();
        let (b, t) = csv_body(&fields, &csv::ByteRecord::from(row.to_vec()));
        (serde_json::from_slice(&b).unwrap(), t)
    }

    #[test]
    fn kinds_come_from_the_name() {
        let k = |n: &str| FileKind::from_name(Path::new(n));
        assert_eq!(
            k("a/b.csv").unwrap(),
            FileKind {
                format: Format::Csv,
                gzip: false
            }
        );
        assert_eq!(
            k("b.NDJSON.gz").unwrap(),
            FileKind {
                format: Format::Ndjson,
                gzip: true
            }
        );
        assert_eq!(
            k("b.csv.gz").unwrap(),
            FileKind {
                format: Format::Csv,
                gzip: true
            }
        );
        assert!(k("b.json").is_err());
        assert!(k("b.gz").is_err());
    }

    #[test]
    fn csv_rows_become_typed_objects_of_their_non_empty_cells() {
        let (v, t) = body(
            &[
                "shop",
                "type",
                "device_id",
                "session_id",
                "event_time",
                "revenue",
                "properties",
                "note",
            ],
            &["shop=tenant_id", "type=event_type", "note="],
            &[
                "7",
                "purchase",
                "dev-1",
                "-12",
                "2025-01-02T03:04:05Z",
                "12.50",
                "{\"a\":1}",
                "x",
            ],
        );
        assert_eq!(
            v,
            serde_json::json!({"tenant_id": 7, "event_type": "purchase", "device_id": "dev-1",
                "session_id": -12, "event_time": "2025-01-02T03:04:05Z", "revenue": "12.50",
                "properties": {"a": 1}})
        );
        assert_eq!(t, Some("2025-01-02T03:04:05Z".parse().unwrap()));
        let (v, _) = body(
            &["tenant_id", "device_id", "properties"],
            &[],
            &["007", "", "nope"],
        );
        assert_eq!(
            v,
            serde_json::json!({"tenant_id": "007", "properties": "nope"})
        );
    }

    #[test]
    fn mappings_that_merge_columns_or_name_missing_ones_are_refused() {
        let headers = vec!["a".to_string(), "tenant_id".to_string()];
        assert!(ColumnMap::parse(&["a=tenant_id"])
            .unwrap()
            .fields(&headers)
            .is_err());
        assert!(ColumnMap::parse(&["b=tenant_id"])
            .unwrap()
            .fields(&headers)
            .is_err());
        assert!(ColumnMap::parse(&["a"]).is_err());
        assert!(ColumnMap::parse(&["a=x", "a=y"]).is_err());
    }
}
