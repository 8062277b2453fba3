//! Delivery of the outbox to the broker: which record goes next, which publish carries which
//! record, and what to do when the broker answers.
//!
//! Invariant: every record in the outbox is published on each connection, in `seq` order,
//! until the broker acknowledges it; only then is it removed. Packet ids are mapped to records
//! here (publishes are queued by the driver's task alone, so rumqttc reports them sent in
//! queue order), and after a disconnect rumqttc's own replay queue is dropped and delivery
//! starts again from the outbox, so the mapping stays exact. A record published on an earlier
//! connection or run is resent marked `"duplicate": true`. A record the broker refuses (an
//! MQTT 5 PUBACK reason code: not authorized, quota exceeded, ...) stays in the outbox and is
//! published again after a backoff, without holding up the records behind it.

use super::backoff::Backoff;
use super::link::Client;
use super::message::mark_duplicate;
use super::outbox::Stored;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

/// Shortest and longest wait before refused records go again.
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(10);

struct Queued {
    stored: Stored,
    /// Published on an earlier connection, or left from an earlier run.
    sent_before: bool,
    acked: bool,
}

/// What the broker's answer to a publish means for the outbox.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Record `seq` is delivered: remove it from the outbox.
    Delivered(u64),
    /// Record `seq` was refused; it goes again after the backoff. `first` is true for the
    /// first refusal of a retry round (the one worth a log line).
    Refused { seq: u64, first: bool },
    /// A status, telemetry or reported message was refused.
    VolatileRefused,
    /// Nothing to do (a volatile message taken, or a packet id from an earlier connection).
    None,
}

pub struct Delivery {
    /// The outbox's records, in order.
    queue: VecDeque<Queued>,
    /// Index in `queue` of the next record to publish on this connection.
    next: usize,
    /// Publishes queued to the client, oldest first, waiting for their packet id: the record
    /// they carry, or `None` for status, telemetry and reported messages.
    issued: VecDeque<Option<u64>>,
    /// Packet id → record of publishes sent and not yet acknowledged.
    inflight: HashMap<u16, Option<u64>>,
    /// Records the broker refused on this connection, waiting for `retry_at`.
    refused: Vec<u64>,
    /// Refused records due to be published again, before the queue goes on from `next`.
    retry_now: VecDeque<u64>,
    retry_at: Option<Instant>,
    /// The wait before the next retry of refused records; reset when one is taken.
    retry_backoff: Backoff,
    /// The wait of the current retry round, for messages.
    retry_wait: Duration,
    /// Most publishes in flight at once.
    window: usize,
}

impl Delivery {
    /// Delivery of `left` (records from an earlier run, resent as duplicates) and whatever is
    /// pushed later, at most `window` publishes in flight.
    pub fn new(left: Vec<Stored>, window: usize) -> Delivery {
        Delivery {
            queue: left
                .into_iter()
                .map(|stored| Queued {
                    stored,
                    sent_before: true,
                    acked: false,
                })
                .collect(),
            next: 0,
            issued: VecDeque::new(),
            inflight: HashMap::new(),
            refused: Vec::new(),
            retry_now: VecDeque::new(),
            retry_at: None,
            retry_backoff: Backoff::new(RETRY_MIN, RETRY_MAX),
            retry_wait: Duration::ZERO,
            window: window.max(1),
        }
    }

    /// A record newly committed to the outbox.
    pub fn push(&mut self, stored: Stored) {
        self.queue.push_back(Queued {
            stored,
            sent_before: false,
            acked: false,
        });
    }

    /// Publishes records on `client` while the window has room: refused records due again
    /// first, then the queue in order. Returns the records that can never be published (a
    /// topic the client refuses, left by an older version): they leave the queue, and the
    /// caller removes them from the outbox, so they cannot hold up the others.
    pub fn top_up(&mut self, client: &Client) -> Vec<u64> {
        let mut dropped = Vec::new();
        while self.issued.len() + self.inflight.len() < self.window {
            let Some(seq) = self.retry_now.pop_front() else {
                break;
            };
            // Acknowledged on another path (or gone) since: nothing to retry.
            let Some(q) = self.queue.iter().find(|q| q.stored.seq == seq && !q.acked) else {
                continue;
            };
            let r = &q.stored.record;
            if client
                .try_publish(&r.topic, r.payload.clone(), false, r.correlation.clone())
                .is_err()
            {
                self.retry_now.push_front(seq);
                return dropped;
            }
            self.issued.push_back(Some(seq));
        }
        while self.next < self.queue.len() && self.issued.len() + self.inflight.len() < self.window
        {
            let q = &mut self.queue[self.next];
            if q.acked {
                self.next += 1;
                continue;
            }
            let r = &q.stored.record;
            let payload = if q.sent_before {
                mark_duplicate(&r.payload).map_or_else(|| r.payload.clone(), Bytes::from)
            } else {
                r.payload.clone()
            };
            if let Err(e) = client.try_publish(&r.topic, payload, false, r.correlation.clone()) {
                if let Err(why) = super::topics::valid_topic_name(&r.topic) {
                    tracing::error!(
                        "a result for topic {:?} can never be published ({why}: {e}); dropped from the outbox",
                        r.topic
                    );
                    let seq = q.stored.seq;
                    if self.acked(seq) {
                        dropped.push(seq);
                    }
                    continue;
                }
                break; // the request channel is full; the next event makes room
            }
            q.sent_before = true;
            self.issued.push_back(Some(q.stored.seq));
            self.next += 1;
        }
        dropped
    }

    /// A message that is not kept in the outbox was queued to the client.
    pub fn issued_volatile(&mut self) {
        self.issued.push_back(None);
    }

    /// rumqttc sent the oldest queued publish as packet `pkid`; false when nothing was queued
    /// (a bug).
    pub fn sent(&mut self, pkid: u16) -> bool {
        match self.issued.pop_front() {
            Some(record) => {
                self.inflight.insert(pkid, record);
                true
            }
            None => false,
        }
    }

    /// The broker answered packet `pkid`: took it, or `refused` it.
    pub fn answered(&mut self, pkid: u16, refused: bool) -> Answer {
        match (self.inflight.remove(&pkid), refused) {
            (Some(Some(seq)), false) => {
                self.retry_backoff.reset();
                if self.acked(seq) {
                    Answer::Delivered(seq)
                } else {
                    Answer::None
                }
            }
            (Some(Some(seq)), true) => {
                let first = self.retry_at.is_none();
                if first {
                    self.retry_wait = self.retry_backoff.next_delay();
                    self.retry_at = Some(Instant::now() + self.retry_wait);
                }
                self.refused.push(seq);
                Answer::Refused { seq, first }
            }
            (Some(None), true) => Answer::VolatileRefused,
            _ => Answer::None,
        }
    }

    /// The topic of record `seq`, for messages.
    pub fn topic(&self, seq: u64) -> &str {
        self.queue
            .iter()
            .find(|q| q.stored.seq == seq)
            .map_or("?", |q| q.stored.record.topic.as_str())
    }

    /// When refused records go again, if any are waiting.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// How long the refused records of the current round wait.
    pub fn retry_backoff(&self) -> Duration {
        self.retry_wait
    }

    /// Makes the refused records due again; the next refusal waits about twice as long
    /// (the backoff stepped up when this round began).
    pub fn retry_refused(&mut self) {
        self.retry_at = None;
        self.retry_now.extend(self.refused.drain(..));
    }

    /// Forgets what was in flight on the connection that ended: everything unacknowledged,
    /// refused records included, goes again from the start of the queue.
    pub fn reset(&mut self) {
        self.issued.clear();
        self.inflight.clear();
        self.refused.clear();
        self.retry_now.clear();
        self.retry_at = None;
        self.next = 0;
    }

    /// Marks `seq` delivered; false when it was not waiting. Delivered records leave the
    /// queue from the front; one behind a record still waiting (a refused one) is only marked.
    fn acked(&mut self, seq: u64) -> bool {
        // Records are acknowledged in order almost always: search from the front.
        let Some(q) = self
            .queue
            .iter_mut()
            .find(|q| q.stored.seq == seq && !q.acked)
        else {
            return false;
        };
        q.acked = true;
        while self.queue.front().is_some_and(|q| q.acked) {
            self.queue.pop_front();
            self.next = self.next.saturating_sub(1);
        }
        true
    }
}
