//! Durable local Event Hubs: one append-only log file per partition.
//!
//! Each record is one line of JSON (`seq`, `offset`, `enqueued`, `key`, `body`); the offset is
//! the record's byte position in the file. An append is fsync'd before it is acknowledged, so a
//! SIGKILL loses nothing a producer was told about. A torn last line (a write cut off before its
//! fsync, hence never acknowledged) is cut away when the log is opened again. Events are also
//! kept in memory: devhost is a development tool and its hubs are small.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::watch;

/// One stored event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub seq: i64,
    pub offset: u64,
    pub enqueued: DateTime<Utc>,
    pub key: Option<String>,
    pub body: String,
}

/// Hub store failures.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("hub {hub} partition {partition}: {source}")]
    Io {
        hub: String,
        partition: u32,
        source: std::io::Error,
    },
    #[error("hub {hub} partition {partition}: record at byte {offset} is corrupt")]
    Corrupt {
        hub: String,
        partition: u32,
        offset: u64,
    },
    #[error("hub {hub} was created with {found} partitions, devhost was asked for {wanted}: pass --partitions {found} or delete {dir}")]
    PartitionCount {
        hub: String,
        found: u32,
        wanted: u32,
        dir: PathBuf,
    },
    #[error("hub {hub} has no partition {partition}")]
    NoPartition { hub: String, partition: u32 },
}

/// Where a batch of events goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    RoundRobin,
    Key(String),
    Partition(u32),
}

struct Log {
    file: File,
    end: u64,
}

/// One partition: its log and a watch on its last sequence number (-1 when empty).
///
/// The file and the in-memory events have separate locks so that readers never wait for an
/// appender's fsync; only appenders (holding `log`) change `events`.
pub struct Partition {
    pub id: u32,
    hub: String,
    log: Mutex<Log>,
    events: RwLock<Vec<Arc<StoredEvent>>>,
    last_seq: watch::Sender<i64>,
}

/// One hub.
pub struct Hub {
    pub name: String,
    pub partitions: Vec<Arc<Partition>>,
    next_rr: AtomicUsize,
}

impl Hub {
    /// Opens (or creates) the hub under `dir`, checking the partition count it was created with.
    pub fn open(dir: &Path, name: &str, partitions: u32) -> Result<Hub, HubError> {
        let io = |partition: u32| {
            move |source| HubError::Io {
                hub: name.to_string(),
                partition,
                source,
            }
        };
        std::fs::create_dir_all(dir).map_err(io(0))?;
        let count_file = dir.join("partitions");
        match std::fs::read_to_string(&count_file) {
            Ok(text) => {
                let found: u32 = text.trim().parse().unwrap_or(0);
                if found != partitions {
                    return Err(HubError::PartitionCount {
                        hub: name.to_string(),
                        found,
                        wanted: partitions,
                        dir: dir.to_path_buf(),
                    });
                }
            }
            Err(_) => {
                crate::state::write_atomic(&count_file, &partitions).map_err(io(0))?;
            }
        }
        let mut parts = Vec::new();
        for id in 0..partitions {
            let (log, events) = open_log(&dir.join(format!("{id}.log")), name, id)?;
            let last = events.last().map_or(-1, |e| e.seq);
            parts.push(Arc::new(Partition {
                id,
                hub: name.to_string(),
                log: Mutex::new(log),
                events: RwLock::new(events),
                last_seq: watch::channel(last).0,
            }));
        }
        Ok(Hub {
            name: name.to_string(),
            partitions: parts,
            next_rr: AtomicUsize::new(0),
        })
    }

    /// Appends bodies durably; answers how many were stored. Several partitions (round robin)
    /// are appended one after the other: a failure part-way leaves the earlier ones stored.
    pub async fn append(&self, bodies: Vec<String>, target: Target) -> Result<usize, HubError> {
        let count = self.partitions.len();
        let mut per_partition: Vec<Vec<(String, Option<String>)>> = vec![Vec::new(); count];
        let total = bodies.len();
        for body in bodies {
            let (index, key) = match &target {
                Target::RoundRobin => (self.next_rr.fetch_add(1, Ordering::Relaxed) % count, None),
                Target::Key(k) => (partition_for_key(k, count), Some(k.clone())),
                Target::Partition(p) => {
                    if *p as usize >= count {
                        return Err(HubError::NoPartition {
                            hub: self.name.clone(),
                            partition: *p,
                        });
                    }
                    (*p as usize, None)
                }
            };
            per_partition[index].push((body, key));
        }
        for (index, batch) in per_partition.into_iter().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let partition = self.partitions[index].clone();
            // File writes and fsync block: keep them off the async workers.
            tokio::task::spawn_blocking(move || partition.append_blocking(batch))
                .await
                .map_err(|e| HubError::Io {
                    hub: self.name.clone(),
                    partition: index as u32,
                    source: std::io::Error::other(e),
                })??;
        }
        Ok(total)
    }
}

impl Partition {
    fn append_blocking(&self, batch: Vec<(String, Option<String>)>) -> Result<(), HubError> {
        let io = |source| HubError::Io {
            hub: self.hub.clone(),
            partition: self.id,
            source,
        };
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        // Millisecond precision: the same as what the envelope shows.
        let now = Utc::now()
            .duration_trunc(TimeDelta::milliseconds(1))
            .unwrap_or_else(|_| Utc::now());
        let mut next_seq = self.last_seq() + 1;
        let mut offset = log.end;
        let mut bytes = Vec::new();
        let mut fresh = Vec::with_capacity(batch.len());
        for (body, key) in batch {
            let event = StoredEvent {
                seq: next_seq,
                offset,
                enqueued: now,
                key,
                body,
            };
            let mut line = serde_json::to_vec(&event).map_err(|e| io(e.into()))?;
            line.push(b'\n');
            offset += line.len() as u64;
            next_seq += 1;
            bytes.extend_from_slice(&line);
            fresh.push(Arc::new(event));
        }
        let start = log.end;
        let written = log
            .file
            .write_all(&bytes)
            .and_then(|()| log.file.sync_data());
        if let Err(e) = written {
            // Cut the half-written tail so the next append starts on a clean line.
            let _ = log.file.set_len(start);
            return Err(io(e));
        }
        log.end = offset;
        self.events
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(fresh);
        // Still under the log lock: the watch and `events` move together.
        self.last_seq.send_replace(next_seq - 1);
        Ok(())
    }

    /// Up to `max` events starting at sequence number `from`.
    pub fn read(&self, from: i64, max: usize) -> Vec<Arc<StoredEvent>> {
        let events = self.events.read().unwrap_or_else(|p| p.into_inner());
        let start = (from.max(0) as usize).min(events.len());
        let end = start.saturating_add(max).min(events.len());
        events[start..end].to_vec()
    }

    /// Last sequence number, -1 when the partition is empty.
    pub fn last_seq(&self) -> i64 {
        *self.last_seq.borrow()
    }

    /// A receiver that changes whenever events are appended.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.last_seq.subscribe()
    }
}

/// FNV-1a: stable across runs, so a key always lands on the same partition.
pub fn partition_for_key(key: &str, partitions: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % partitions.max(1) as u64) as usize
}

type Opened = (Log, Vec<Arc<StoredEvent>>);

fn open_log(path: &Path, hub: &str, partition: u32) -> Result<Opened, HubError> {
    let io = |source| HubError::Io {
        hub: hub.to_string(),
        partition,
        source,
    };
    let existed = path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io)?;
    if !existed {
        if let Some(dir) = path.parent() {
            crate::state::sync_dir(dir).map_err(io)?;
        }
    }
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.read_to_end(&mut bytes).map_err(io)?;
    let mut events = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let Some(len) = bytes[pos..].iter().position(|b| *b == b'\n') else {
            break; // torn tail: no newline, never acknowledged
        };
        let line = &bytes[pos..pos + len];
        match serde_json::from_slice::<StoredEvent>(line) {
            Ok(event) if event.seq == events.len() as i64 && event.offset == pos as u64 => {
                events.push(Arc::new(event));
            }
            _ => {
                return Err(HubError::Corrupt {
                    hub: hub.to_string(),
                    partition,
                    offset: pos as u64,
                })
            }
        }
        pos += len + 1;
    }
    if pos < bytes.len() {
        tracing::warn!(
            hub,
            partition,
            bytes = bytes.len() - pos,
            "cutting a torn, unacknowledged record from the end of the log"
        );
        file.set_len(pos as u64).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    Ok((
        Log {
            file,
            end: pos as u64,
        },
        events,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("devhost-hub-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn appends_survive_reopening_and_torn_tails_are_cut() {
        let dir = temp_dir("reopen");
        let hub = Hub::open(&dir, "h", 2).unwrap();
        hub.append(vec!["a".into(), "b".into(), "c".into()], Target::RoundRobin)
            .await
            .unwrap();
        hub.append(vec!["line\nbreak".into()], Target::Partition(1))
            .await
            .unwrap();
        drop(hub);
        // A record cut off mid-write, as after a SIGKILL before its fsync.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join("1.log"))
            .unwrap();
        f.write_all(b"{\"seq\":3,\"off").unwrap();
        drop(f);
        let hub = Hub::open(&dir, "h", 2).unwrap();
        let p0: Vec<String> = hub.partitions[0]
            .read(0, 10)
            .iter()
            .map(|e| e.body.clone())
            .collect();
        let p1 = hub.partitions[1].read(0, 10);
        assert_eq!(p0, vec!["a", "c"]);
        assert_eq!(
            p1.iter().map(|e| e.body.as_str()).collect::<Vec<_>>(),
            vec!["b", "line\nbreak"]
        );
        assert_eq!(p1.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![0, 1]);
        assert!(p1[1].offset > p1[0].offset);
        assert_eq!(hub.partitions[1].last_seq(), 1);
        hub.append(vec!["d".into()], Target::Partition(1))
            .await
            .unwrap();
        assert_eq!(hub.partitions[1].read(2, 10)[0].body, "d");
        assert!(matches!(
            Hub::open(&dir, "h", 3),
            Err(HubError::PartitionCount { found: 2, .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn keys_pin_a_partition() {
        let dir = temp_dir("keys");
        let hub = Hub::open(&dir, "h", 4).unwrap();
        hub.append(vec!["1".into(), "2".into()], Target::Key("tenant-7".into()))
            .await
            .unwrap();
        let p = partition_for_key("tenant-7", 4);
        let events = hub.partitions[p].read(0, 10);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].key.as_deref(), Some("tenant-7"));
        assert!(matches!(
            hub.append(vec!["x".into()], Target::Partition(4)).await,
            Err(HubError::NoPartition { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
