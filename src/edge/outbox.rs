//! The durable outbox: results waiting for the broker's acknowledgement, in a redb database.
//!
//! Invariants:
//! - [`Outbox::append`] returns only after the record is committed with immediate durability,
//!   so a request acknowledged after it can never lose its result, even to `kill -9`.
//! - Records are numbered in commit order (`seq`) and handed to the driver in that order, once
//!   each; the driver delivers them in that order (a record the broker refuses goes again
//!   later, out of order) and removes each when the broker has acknowledged it. Removals are committed lazily: after a crash, a removed record may come
//!   back and be delivered again (marked as a duplicate), never the reverse.
//! - When the outbox holds `max_messages` records or `max_bytes` bytes, appends wait (their
//!   requests stay unacknowledged at the broker) until removals make room: nothing is dropped.
//!
//! One thread owns the database and commits appends in groups (one fsync for every append
//! waiting at that moment).

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

const RESULTS: TableDefinition<u64, &[u8]> = TableDefinition::new("results");

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("cannot open the outbox {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("cannot write the outbox: {0}")]
    Write(String),
    #[error("the outbox is closed")]
    Closed,
}

/// One message to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub payload: Bytes,
    /// MQTT 5 correlation data to send with it.
    pub correlation: Option<Bytes>,
}

/// A record as stored, with its sequence number.
#[derive(Debug, Clone)]
pub struct Stored {
    pub seq: u64,
    pub record: Record,
}

/// The outbox bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_messages: u64,
    pub max_bytes: u64,
}

/// Current fill, shared with telemetry.
#[derive(Debug, Default)]
pub struct Depth {
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
}

/// Where an append's outcome goes.
type Reply = tokio::sync::oneshot::Sender<Result<u64, OutboxError>>;

enum Cmd {
    Append(Record, Reply),
    Remove(Vec<u64>),
    /// Answered once everything sent before it is committed.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The handle front ends use; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Cmd>,
    pub depth: Arc<Depth>,
}

impl Outbox {
    /// Opens (creating) the outbox in `dir` and starts its writer thread. Returns the records
    /// left from an earlier run, in order; records committed from now on are sent to
    /// `committed` in order.
    pub fn open(
        dir: &Path,
        limits: Limits,
        committed: tokio::sync::mpsc::UnboundedSender<Stored>,
    ) -> Result<(Outbox, Vec<Stored>), OutboxError> {
        let open_err = |reason: String| OutboxError::Open {
            path: dir.to_path_buf(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let db = Database::create(dir.join("outbox.redb")).map_err(|e| open_err(e.to_string()))?;
        let left = load(&db).map_err(open_err)?;
        let depth = Arc::new(Depth::default());
        depth.messages.store(left.len() as u64, Ordering::Relaxed);
        let sizes: std::collections::HashMap<u64, u64> = left
            .iter()
            .map(|s| (s.seq, record_size(&s.record)))
            .collect();
        depth.bytes.store(sizes.values().sum(), Ordering::Relaxed);
        let next_seq = left.last().map_or(1, |s| s.seq + 1);
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            db,
            limits,
            depth: Arc::clone(&depth),
            next_seq,
            sizes,
            waiting: VecDeque::new(),
            committed,
            full_logged: false,
        };
        std::thread::Builder::new()
            .name("edge-outbox".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| open_err(format!("cannot start the writer thread: {e}")))?;
        Ok((Outbox { tx, depth }, left))
    }

    /// Appends `record`; resolves once it is durable, with its sequence number. Waits while
    /// the outbox is full.
    pub async fn append(&self, record: Record) -> Result<u64, OutboxError> {
        let (reply, done) = tokio::sync::oneshot::channel();
        self.tx
            .send(Cmd::Append(record, reply))
            .map_err(|_| OutboxError::Closed)?;
        done.await.map_err(|_| OutboxError::Closed)?
    }

    /// Waits until every append and removal sent before it is committed (for a clean
    /// shutdown: delivered results are not resent by the next start).
    pub async fn flush(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.tx.send(Cmd::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Removes delivered records (committed lazily; see the module invariants).
    pub fn remove(&self, seqs: Vec<u64>) {
        if !seqs.is_empty() {
            let _ = self.tx.send(Cmd::Remove(seqs));
        }
    }
}

struct Writer {
    db: Database,
    limits: Limits,
    depth: Arc<Depth>,
    next_seq: u64,
    /// Stored size of each record in the outbox, by seq.
    sizes: std::collections::HashMap<u64, u64>,
    /// Appends waiting for room.
    waiting: VecDeque<(Record, Reply)>,
    committed: tokio::sync::mpsc::UnboundedSender<Stored>,
    full_logged: bool,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        while let Ok(first) = rx.recv() {
            let mut removals = Vec::new();
            let mut flushed = Vec::new();
            for cmd in std::iter::once(first).chain(rx.try_iter()) {
                match cmd {
                    Cmd::Append(r, reply) => self.waiting.push_back((r, reply)),
                    Cmd::Remove(seqs) => removals.extend(seqs),
                    Cmd::Flush(done) => flushed.push(done),
                }
            }
            let admitted = self.admit(&removals);
            if let Err(e) = self.commit(&removals, &admitted, !flushed.is_empty()) {
                tracing::error!("{e}");
                for (_, _, reply) in admitted {
                    let _ = reply.send(Err(OutboxError::Write(e.clone())));
                }
                continue;
            }
            for seq in &removals {
                if let Some(size) = self.sizes.remove(seq) {
                    self.depth.messages.fetch_sub(1, Ordering::Relaxed);
                    self.depth.bytes.fetch_sub(size, Ordering::Relaxed);
                }
            }
            for (seq, record, reply) in admitted {
                let size = record_size(&record);
                self.sizes.insert(seq, size);
                self.depth.messages.fetch_add(1, Ordering::Relaxed);
                self.depth.bytes.fetch_add(size, Ordering::Relaxed);
                let _ = self.committed.send(Stored { seq, record });
                let _ = reply.send(Ok(seq));
            }
            self.log_fill();
            for done in flushed {
                let _ = done.send(());
            }
        }
    }

    /// Takes the waiting appends that fit once `removals` are gone, numbering them.
    fn admit(&mut self, removals: &[u64]) -> Vec<(u64, Record, Reply)> {
        let freed: u64 = removals.iter().filter_map(|s| self.sizes.get(s)).sum();
        let freed_n = removals
            .iter()
            .filter(|s| self.sizes.contains_key(s))
            .count() as u64;
        let mut messages = self.depth.messages.load(Ordering::Relaxed) - freed_n;
        let mut bytes = self.depth.bytes.load(Ordering::Relaxed) - freed;
        let mut admitted = Vec::new();
        while let Some((record, _)) = self.waiting.front() {
            let size = record_size(record);
            // An empty outbox takes any one record, so an oversize one cannot wedge it.
            let fits = messages == 0
                || (messages < self.limits.max_messages && bytes + size <= self.limits.max_bytes);
            if !fits {
                break;
            }
            let (record, reply) = self.waiting.pop_front().expect("front was Some");
            messages += 1;
            bytes += size;
            admitted.push((self.next_seq, record, reply));
            self.next_seq += 1;
        }
        admitted
    }

    /// Commits `removals` and `admitted`: durably when anything is admitted or `durable` is
    /// asked (a flush), which also makes every earlier lazy removal durable.
    fn commit(
        &self,
        removals: &[u64],
        admitted: &[(u64, Record, Reply)],
        durable: bool,
    ) -> Result<(), String> {
        if removals.is_empty() && admitted.is_empty() && !durable {
            return Ok(());
        }
        let mut txn = self.db.begin_write().map_err(|e| e.to_string())?;
        let durability = if admitted.is_empty() && !durable {
            redb::Durability::None
        } else {
            redb::Durability::Immediate
        };
        txn.set_durability(durability).map_err(|e| e.to_string())?;
        {
            let mut table = txn.open_table(RESULTS).map_err(|e| e.to_string())?;
            for seq in removals {
                table.remove(seq).map_err(|e| e.to_string())?;
            }
            for (seq, record, _) in admitted {
                table
                    .insert(seq, encode(record).as_slice())
                    .map_err(|e| e.to_string())?;
            }
        }
        txn.commit().map_err(|e| e.to_string())
    }

    fn log_fill(&mut self) {
        if !self.waiting.is_empty() && !self.full_logged {
            self.full_logged = true;
            tracing::warn!(
                "outbox full ({} messages, {} bytes; limits {} / {}): not taking new requests until the broker acknowledges results",
                self.depth.messages.load(Ordering::Relaxed),
                self.depth.bytes.load(Ordering::Relaxed),
                self.limits.max_messages,
                self.limits.max_bytes
            );
        } else if self.waiting.is_empty() && self.full_logged {
            self.full_logged = false;
            tracing::info!("outbox has room again; taking requests");
        }
    }
}

fn load(db: &Database) -> Result<Vec<Stored>, String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let table = match txn.open_table(RESULTS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.to_string()),
    };
    let mut out = Vec::new();
    for item in table.iter().map_err(|e| e.to_string())? {
        let (k, v) = item.map_err(|e| e.to_string())?;
        let seq = k.value();
        let record = decode(v.value()).ok_or_else(|| format!("record {seq} is corrupt"))?;
        out.push(Stored { seq, record });
    }
    Ok(out)
}

fn record_size(r: &Record) -> u64 {
    (r.topic.len() + r.payload.len() + r.correlation.as_ref().map_or(0, |c| c.len())) as u64
}

/// Value layout: u32 topic length, topic, u32 correlation length + 1 (0: none), correlation,
/// payload (the rest); lengths little-endian.
fn encode(r: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(record_size(r) as usize + 8);
    out.extend_from_slice(&(r.topic.len() as u32).to_le_bytes());
    out.extend_from_slice(r.topic.as_bytes());
    match &r.correlation {
        None => out.extend_from_slice(&0u32.to_le_bytes()),
        Some(c) => {
            out.extend_from_slice(&(c.len() as u32 + 1).to_le_bytes());
            out.extend_from_slice(c);
        }
    }
    out.extend_from_slice(&r.payload);
    out
}

fn decode(b: &[u8]) -> Option<Record> {
    let take_u32 = |b: &[u8]| -> Option<usize> {
        Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize)
    };
    let tlen = take_u32(b)?;
    let topic = std::str::from_utf8(b.get(4..4 + tlen)?).ok()?.to_string();
    let rest = &b[4 + tlen..];
    let clen = take_u32(rest)?;
    let (correlation, payload) = if clen == 0 {
        (None, &rest[4..])
    } else {
        let c = rest.get(4..4 + clen - 1)?;
        (Some(Bytes::copy_from_slice(c)), &rest[4 + clen - 1..])
    };
    Some(Record {
        topic,
        payload: Bytes::copy_from_slice(payload),
        correlation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u32) -> Record {
        Record {
            topic: format!("t/{i}"),
            payload: Bytes::from(format!("{{\"id\":{i}}}")),
            correlation: i.is_multiple_of(2).then(|| Bytes::from(vec![i as u8; 3])),
        }
    }

    #[test]
    fn encoding_round_trips() {
        for i in 0..4 {
            assert_eq!(decode(&encode(&rec(i))), Some(rec(i)));
        }
        assert_eq!(decode(&[1, 0]), None);
    }

    #[tokio::test]
    async fn survives_reopen_in_order_and_waits_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_messages: 2,
            max_bytes: 1 << 20,
        };
        {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let (outbox, left) = Outbox::open(dir.path(), limits, tx).unwrap();
            assert!(left.is_empty());
            assert_eq!(outbox.append(rec(1)).await.unwrap(), 1);
            assert_eq!(outbox.append(rec(2)).await.unwrap(), 2);
            // Full: the third waits until a removal makes room.
            let third = {
                let o = outbox.clone();
                tokio::spawn(async move { o.append(rec(3)).await })
            };
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            assert!(!third.is_finished());
            outbox.remove(vec![1]);
            assert_eq!(third.await.unwrap().unwrap(), 3);
            let seqs: Vec<u64> = [rx.recv().await, rx.recv().await, rx.recv().await]
                .into_iter()
                .map(|s| s.unwrap().seq)
                .collect();
            assert_eq!(seqs, [1, 2, 3]);
            assert_eq!(outbox.depth.messages.load(Ordering::Relaxed), 2);
        }
        // The writer thread exits when its handles are gone; give it a moment to close.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let (outbox, left) = Outbox::open(dir.path(), limits, tx).unwrap();
        let left: Vec<_> = left.into_iter().map(|s| (s.seq, s.record)).collect();
        assert_eq!(left, [(2, rec(2)), (3, rec(3))]);
        assert_eq!(outbox.depth.messages.load(Ordering::Relaxed), 2);
        outbox.remove(vec![2, 3]);
        assert_eq!(outbox.append(rec(4)).await.unwrap(), 4);
    }
}
