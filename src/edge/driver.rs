//! The connection driver: owns the MQTT event loop, dispatches what arrives, and delivers the
//! outbox in order.
//!
//! Delivery invariant: every record in the outbox is published on each connection, in `seq`
//! order, until the broker acknowledges it; only then is it removed. The driver maps packet
//! ids to records itself (publishes are queued by this task alone, so rumqttc reports them
//! sent in queue order), and after a disconnect it drops rumqttc's own replay queue and
//! replays from the outbox, so the mapping stays exact. A record published on an earlier
//! connection or run is resent marked `"duplicate": true`. A record the broker refuses (an
//! MQTT 5 PUBACK reason code: not authorized, quota exceeded, ...) stays in the outbox and is
//! published again after a backoff, without holding up the records behind it.

use super::desired;
use super::link::{Client, Ev, EventLoop, InMsg, LinkError};
use super::message::mark_duplicate;
use super::outbox::Stored;
use super::request::{self, Target};
use super::topics::Inbound;
use super::{Ctx, EdgeError};
use bytes::Bytes;
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

struct Queued {
    stored: Stored,
    /// Published on an earlier connection, or left from an earlier run.
    sent_before: bool,
    acked: bool,
}

pub struct Driver {
    ctx: Arc<Ctx>,
    client: Client,
    events: EventLoop,
    committed: UnboundedReceiver<Stored>,
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
    retry_backoff: Duration,
    window: usize,
    connected: bool,
    connections: u64,
    backoff: Duration,
    broker: String,
    config_count: u64,
    /// The last reported document, published again on every connect.
    reported: Option<(String, Bytes, bool)>,
    /// Fresh credentials before each reconnect, when they expire.
    pub renew_credentials: Option<super::CredentialSource>,
}

impl Driver {
    pub fn new(
        ctx: Arc<Ctx>,
        client: Client,
        events: EventLoop,
        committed: UnboundedReceiver<Stored>,
        left: Vec<Stored>,
        window: usize,
        broker: String,
    ) -> Driver {
        if !left.is_empty() {
            tracing::info!(
                "outbox holds {} results from an earlier run; delivering them first",
                left.len()
            );
        }
        Driver {
            ctx,
            client,
            events,
            committed,
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
            retry_backoff: BACKOFF_MIN,
            window: window.max(1),
            connected: false,
            connections: 0,
            backoff: BACKOFF_MIN,
            broker,
            config_count: 0,
            reported: None,
            renew_credentials: None,
        }
    }

    /// Runs until `shutdown` resolves (then says goodbye to the broker) or the broker refuses
    /// the connection.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), EdgeError> {
        tokio::pin!(shutdown);
        let mut interval = self.ctx.applied().telemetry_interval;
        let mut telemetry =
            tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        telemetry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.top_up();
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                ev = self.events.poll() => match ev {
                    Ok(ev) => self.on_event(ev),
                    Err(LinkError::Refused(code)) => {
                        return Err(EdgeError::Refused { broker: self.broker.clone(), reason: code });
                    }
                    Err(LinkError::Transient(e)) => self.on_disconnect(&e).await,
                },
                Some(stored) = self.committed.recv() => {
                    self.push(stored);
                    while let Ok(stored) = self.committed.try_recv() {
                        self.push(stored);
                    }
                }
                _ = telemetry.tick() => self.publish_telemetry(),
                () = sleep_until(self.retry_at) => self.retry_refused(),
            }
            let wanted = self.ctx.applied().telemetry_interval;
            if wanted != interval {
                interval = wanted;
                telemetry =
                    tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
                telemetry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
        }
        if self.connected {
            let (topic, retain) = self.ctx.topics.status();
            let offline = json!({"state": "offline", "client_id": self.ctx.client_id});
            let _ = self
                .client
                .try_publish(&topic, offline.to_string().into(), retain, None);
            self.client.disconnect().await;
            // Let the event loop write the goodbye before the process exits.
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while self.events.poll().await.is_ok() {}
            })
            .await;
        }
        Ok(())
    }

    fn push(&mut self, stored: Stored) {
        self.queue.push_back(Queued {
            stored,
            sent_before: false,
            acked: false,
        });
    }

    /// Publishes outbox records while the window has room.
    fn top_up(&mut self) {
        if !self.connected {
            return;
        }
        while self.issued.len() + self.inflight.len() < self.window {
            let Some(seq) = self.retry_now.pop_front() else {
                break;
            };
            // Acknowledged on another path (or gone) since: nothing to retry.
            let Some(q) = self.queue.iter().find(|q| q.stored.seq == seq && !q.acked) else {
                continue;
            };
            let r = &q.stored.record;
            if self
                .client
                .try_publish(&r.topic, r.payload.clone(), false, r.correlation.clone())
                .is_err()
            {
                self.retry_now.push_front(seq);
                return;
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
            if self
                .client
                .try_publish(&r.topic, payload, false, r.correlation.clone())
                .is_err()
            {
                break; // the request channel is full; the next event makes room
            }
            q.sent_before = true;
            self.issued.push_back(Some(q.stored.seq));
            self.next += 1;
        }
    }

    /// Publishes a message that is not kept in the outbox.
    fn publish_volatile(&mut self, topic: &str, payload: Bytes, retain: bool) {
        if !self.connected {
            return;
        }
        match self.client.try_publish(topic, payload, retain, None) {
            Ok(()) => self.issued.push_back(None),
            Err(e) => tracing::warn!("cannot publish on {topic}: {e}"),
        }
    }

    fn on_event(&mut self, ev: Ev) {
        match ev {
            Ev::Connected { session_present } => self.on_connect(session_present),
            Ev::Sent(pkid) => match self.issued.pop_front() {
                Some(record) => {
                    self.inflight.insert(pkid, record);
                }
                None => tracing::warn!(
                    "publish {pkid} sent that the driver did not queue; this is a bug"
                ),
            },
            Ev::PubAck { pkid, refused } => match (self.inflight.remove(&pkid), refused) {
                (Some(Some(seq)), None) => {
                    self.retry_backoff = BACKOFF_MIN;
                    self.acked(seq);
                }
                (Some(Some(seq)), Some(reason)) => self.on_refused(seq, reason),
                (Some(None), Some(reason)) => {
                    tracing::warn!("the broker refused a status or telemetry message: {reason}")
                }
                _ => {}
            },
            Ev::Publish(msg) => self.on_publish(msg),
            Ev::Other => {}
        }
    }

    /// The broker refused record `seq`: it stays in the outbox, and goes again after the
    /// backoff.
    fn on_refused(&mut self, seq: u64, reason: &str) {
        if self.retry_at.is_none() {
            let topic = self
                .queue
                .iter()
                .find(|q| q.stored.seq == seq)
                .map_or("?", |q| q.stored.record.topic.as_str());
            tracing::warn!(
                "the broker refused a result on {topic}: {reason}; it stays in the outbox \
                 (with any others refused), next try in {} ms",
                self.retry_backoff.as_millis()
            );
            self.retry_at = Some(Instant::now() + self.retry_backoff);
        }
        self.refused.push(seq);
    }

    /// Publishes the refused records again; the next refusal waits twice as long.
    fn retry_refused(&mut self) {
        self.retry_at = None;
        self.retry_now.extend(self.refused.drain(..));
        self.retry_backoff = (self.retry_backoff * 2).min(BACKOFF_MAX);
    }

    /// Forgets what was in flight on the connection that ended: everything unacknowledged,
    /// refused records included, goes again from the start of the queue.
    fn reset_delivery(&mut self) {
        self.issued.clear();
        self.inflight.clear();
        self.refused.clear();
        self.retry_now.clear();
        self.retry_at = None;
        self.next = 0;
    }

    fn acked(&mut self, seq: u64) {
        // Records are acknowledged in order almost always: search from the front.
        let Some(q) = self
            .queue
            .iter_mut()
            .find(|q| q.stored.seq == seq && !q.acked)
        else {
            return;
        };
        q.acked = true;
        // Off the disk at once, also behind an older record still waiting (a refused one), so
        // delivered results never fill the outbox.
        self.ctx.stats.metrics.delivered.inc();
        self.ctx.outbox.remove(vec![seq]);
        while self.queue.front().is_some_and(|q| q.acked) {
            self.queue.pop_front();
            self.next = self.next.saturating_sub(1);
        }
    }

    fn on_connect(&mut self, session_present: bool) {
        self.connections += 1;
        if self.connections > 1 {
            self.ctx.stats.metrics.reconnects.inc();
        }
        tracing::info!(
            "connected to {} as '{}' (session {})",
            self.broker,
            self.ctx.client_id,
            if session_present { "resumed" } else { "new" }
        );
        self.connected = true;
        self.backoff = BACKOFF_MIN;
        self.reset_delivery();
        if let Err(e) = self.client.try_subscribe(&self.ctx.topics.subscriptions()) {
            tracing::error!("cannot subscribe: {e}");
        }
        let (topic, retain) = self.ctx.topics.status();
        let online = json!({
            "state": "online",
            "client_id": self.ctx.client_id,
            "models": self.ctx.serving_versions(),
        });
        self.publish_volatile(&topic, online.to_string().into(), retain);
        if let Some(get) = self.ctx.topics.twin_get() {
            self.publish_volatile(&get, Bytes::new(), false);
        }
        if let Some((topic, payload, retain)) = self.reported.clone() {
            self.publish_volatile(&topic, payload, retain);
        }
    }

    async fn on_disconnect(&mut self, reason: &str) {
        self.events.drop_pending();
        self.reset_delivery();
        if self.connected {
            tracing::warn!(
                "lost the connection to {}: {reason}; reconnecting",
                self.broker
            );
        } else {
            tracing::warn!(
                "cannot connect to {}: {reason}; retrying in {} ms",
                self.broker,
                self.backoff.as_millis()
            );
        }
        self.connected = false;
        if let Some(renew) = &self.renew_credentials {
            match (renew.0)() {
                Ok((user, password)) => self.events.set_credentials(&user, &password),
                Err(e) => tracing::error!("cannot renew the broker credentials: {e}"),
            }
        }
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    fn on_publish(&mut self, msg: InMsg) {
        match self.ctx.topics.inbound(&msg.topic) {
            Inbound::Request { model } => {
                tokio::spawn(request::handle(
                    Arc::clone(&self.ctx),
                    msg,
                    Target::Model(model),
                ));
            }
            Inbound::Method { name, rid } if name == "score" => {
                tokio::spawn(request::handle(
                    Arc::clone(&self.ctx),
                    msg,
                    Target::Method { rid },
                ));
            }
            Inbound::Method { name, rid } => {
                tracing::warn!("unknown direct method '{name}'");
                let topic = super::topics::Topics::method_response(404, &rid);
                let body = json!({"error": format!("unknown method '{name}' (available: score)")});
                self.publish_volatile(&topic, body.to_string().into(), false);
                self.ack(msg);
            }
            Inbound::Config { version } => {
                self.on_config(&msg.payload, version);
                self.ack(msg);
            }
            Inbound::Twin { status } => {
                if status == 200 {
                    let desired = serde_json::from_slice::<serde_json::Value>(&msg.payload)
                        .ok()
                        .and_then(|t| t.get("desired").cloned());
                    if let Some(d) = desired {
                        let version = d.get("$version").and_then(serde_json::Value::as_u64);
                        self.on_config(d.to_string().as_bytes(), version);
                    }
                } else {
                    tracing::warn!("twin request answered with status {status}");
                }
                self.ack(msg);
            }
            Inbound::Unknown => {
                tracing::warn!("ignoring a message on unexpected topic '{}'", msg.topic);
                self.ack(msg);
            }
        }
    }

    fn ack(&self, msg: InMsg) {
        let client = self.client.clone();
        tokio::spawn(async move {
            let _ = client.ack(msg.ack).await;
        });
    }

    fn on_config(&mut self, payload: &[u8], topic_version: Option<u64>) {
        self.config_count += 1;
        let version = desired::desired_version(payload, topic_version, self.config_count);
        let current = self.ctx.applied();
        let rejected = match desired::apply(payload, &current, self.ctx.models.as_ref()) {
            Ok(next) => {
                tracing::info!(
                    "applied desired configuration {version}: telemetry every {} s, versions {:?}, thresholds {}",
                    next.telemetry_interval.as_secs_f64(),
                    next.versions,
                    describe_thresholds(&next)
                );
                self.ctx.set_applied(next);
                None
            }
            Err(reason) => {
                tracing::warn!("rejected desired configuration {version}: {reason}");
                Some(reason)
            }
        };
        let applied = self.ctx.applied();
        let mut doc = desired::reported(
            &applied,
            &self.ctx.serving_versions(),
            version,
            rejected.as_deref(),
        );
        if matches!(self.ctx.topics, super::topics::Topics::IotHub { .. }) {
            // Twin property names cannot start with `$`.
            if let Some(v) = doc.as_object_mut().and_then(|m| m.remove("$version")) {
                doc["desired_version"] = v;
            }
        }
        let (topic, retain) = self.ctx.topics.reported(self.config_count);
        let payload = Bytes::from(doc.to_string());
        self.reported = Some((topic.clone(), payload.clone(), retain));
        self.publish_volatile(&topic, payload, retain);
    }

    fn publish_telemetry(&mut self) {
        let depth = &self.ctx.outbox.depth;
        let (messages, bytes) = (
            depth.messages.load(Ordering::Relaxed),
            depth.bytes.load(Ordering::Relaxed),
        );
        let m = &self.ctx.stats.metrics;
        m.outbox_messages.set(messages as i64);
        m.outbox_bytes.set(bytes as i64);
        let t = self.ctx.stats.telemetry(
            &self.ctx.serving_versions(),
            (messages, bytes),
            self.ctx.applied().telemetry_interval,
        );
        let topic = self.ctx.topics.telemetry();
        self.publish_volatile(&topic, t.to_string().into(), false);
    }
}

/// `model: key below x, ...; model2: ...`, or `none`.
fn describe_thresholds(applied: &desired::Applied) -> String {
    if applied.thresholds.is_empty() {
        return "none".into();
    }
    applied
        .thresholds
        .iter()
        .map(|(model, t)| {
            let t: Vec<String> = t.iter().map(ToString::to_string).collect();
            format!("{model}: {}", t.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Resolves at `at`, or never when there is none.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
