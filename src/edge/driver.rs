//! The connection driver: owns the MQTT event loop, dispatches what arrives, and feeds the
//! outbox to the broker through [`Delivery`] (see its module for the delivery invariant).

use super::backoff::Backoff;
use super::delivery::{Answer, Delivery};
use super::desired;
use super::link::{Client, Ev, EventLoop, InMsg, LinkError, SubRefusal};
use super::outbox::Stored;
use super::request::{self, Target};
use super::topics::Inbound;
use super::{Ctx, EdgeError};
use bytes::Bytes;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

/// Shortest and longest wait between connection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Longest a stopping share-group member spends finishing the requests the broker already
/// sent it (and delivering their results) after leaving the group.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long no request must arrive after leaving before the member counts as drained.
const LEAVE_QUIET: Duration = Duration::from_millis(300);
/// Longest a stopping module waits for the requests it is scoring to store their results
/// and queue their acknowledgements before it says goodbye.
const FINISH_TIMEOUT: Duration = Duration::from_secs(10);

/// What one turn of a stopping module's loop took ([`Driver::stopping_turn`]).
enum Turn {
    /// Nothing for the caller: an event handled, results delivered, or the tick.
    Quiet,
    UnsubAck,
    /// A request (or other message) the broker sent.
    Publish(InMsg),
    /// The connection is gone.
    Lost,
}

pub struct Driver {
    ctx: Arc<Ctx>,
    client: Client,
    events: EventLoop,
    committed: UnboundedReceiver<Stored>,
    delivery: Delivery,
    connected: bool,
    connections: u64,
    backoff: Backoff,
    broker: String,
    config_count: u64,
    /// The filters of the last subscribe, in order (SUBACK codes answer them by position).
    subscribed: Vec<String>,
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
            delivery: Delivery::new(left, window),
            connected: false,
            connections: 0,
            backoff: Backoff::new(BACKOFF_MIN, BACKOFF_MAX),
            broker,
            config_count: 0,
            subscribed: Vec::new(),
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
            if self.connected {
                let dropped = self.delivery.top_up(&self.client);
                if !dropped.is_empty() {
                    self.ctx.outbox.remove(dropped);
                }
            }
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                ev = self.events.poll() => match ev {
                    Ok(ev) => self.on_event(ev)?,
                    Err(LinkError::Refused(code)) => {
                        return Err(EdgeError::Refused { broker: self.broker.clone(), reason: code });
                    }
                    Err(LinkError::Transient(e)) => self.on_disconnect(&e).await,
                },
                Some(stored) = self.committed.recv() => self.deliver_committed(stored),
                _ = telemetry.tick() => self.publish_telemetry(),
                () = sleep_until(self.delivery.retry_at()) => self.delivery.retry_refused(),
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
            self.leave_group().await;
        }
        if self.connected {
            self.finish_requests().await;
        }
        if self.connected {
            let (topic, retain) = self.ctx.topics.status();
            let offline = json!({"state": "offline", "client_id": self.ctx.client_id});
            let _ = self
                .client
                .try_publish(&topic, offline.to_string().into(), retain, None);
            self.client.disconnect().await;
            // Let the event loop write the goodbye before the process exits, taking the
            // broker's last acknowledgements so their results are not resent next time.
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while let Ok(ev) = self.events.poll().await {
                    match ev {
                        Ev::Sent(pkid) => {
                            self.delivery.sent(pkid);
                        }
                        Ev::PubAck { pkid, refused } => {
                            if let Answer::Delivered(seq) =
                                self.delivery.answered(pkid, refused.is_some())
                            {
                                self.ctx.outbox.remove(vec![seq]);
                            }
                        }
                        _ => {}
                    }
                }
            })
            .await;
        }
        self.ctx.outbox.flush().await;
        Ok(())
    }

    /// Publishes a message that is not kept in the outbox.
    fn publish_volatile(&mut self, topic: &str, payload: Bytes, retain: bool) {
        if !self.connected {
            return;
        }
        match self.client.try_publish(topic, payload, retain, None) {
            Ok(()) => self.delivery.issued_volatile(),
            Err(e) => tracing::warn!("cannot publish on {topic}: {e}"),
        }
    }

    /// A stopping share-group member: unsubscribes from the shared subscriptions, so the
    /// broker sends the group's later requests to the other members, then finishes the
    /// requests already sent to it and delivers their results, until nothing arrives for
    /// [`LEAVE_QUIET`] (or [`LEAVE_TIMEOUT`] passes). Without this, requests the broker
    /// queued for the member would wait in its session until it came back or expired.
    async fn leave_group(&mut self) {
        let filters = self.ctx.topics.shared_filters(&self.ctx.served);
        if filters.is_empty() {
            return;
        }
        if let Err(e) = self.client.try_unsubscribe(&filters) {
            tracing::warn!("cannot leave the share group: {e}");
            return;
        }
        tracing::info!("leaving the share group; finishing the requests already received");
        let deadline = Instant::now() + LEAVE_TIMEOUT;
        let (mut unsubacks, mut last_request) = (0, Instant::now());
        loop {
            let drained = unsubacks >= filters.len()
                && self.ctx.pending.load(Ordering::SeqCst) == 0
                && self.ctx.outbox.depth.messages.load(Ordering::SeqCst) == 0
                && last_request.elapsed() >= LEAVE_QUIET;
            if drained {
                tracing::info!("left the share group");
                return;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    "left the share group with {} requests unfinished and {} results undelivered after {} s",
                    self.ctx.pending.load(Ordering::SeqCst),
                    self.ctx.outbox.depth.messages.load(Ordering::SeqCst),
                    LEAVE_TIMEOUT.as_secs()
                );
                return;
            }
            match self
                .stopping_turn(Duration::from_millis(50), "leaving the share group")
                .await
            {
                Turn::UnsubAck => unsubacks += 1,
                Turn::Publish(msg) => {
                    last_request = Instant::now();
                    self.on_publish(msg);
                }
                Turn::Quiet => {}
                // The session keeps what is left for the next start.
                Turn::Lost => return,
            }
        }
    }

    /// A stopping module's requests still being scored: waits (up to [`FINISH_TIMEOUT`])
    /// until each has stored its result and queued its acknowledgement, delivering results
    /// meanwhile. An acknowledgement queued after the goodbye is never sent: the broker
    /// would redeliver that request at the next start, which would score it again and send
    /// a second result for it. Requests arriving meanwhile stay unacknowledged in the
    /// session, for the next start.
    async fn finish_requests(&mut self) {
        let deadline = Instant::now() + FINISH_TIMEOUT;
        while self.ctx.pending.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= deadline {
                tracing::warn!(
                    "stopping with {} requests unfinished after {} s; the broker will send them again",
                    self.ctx.pending.load(Ordering::SeqCst),
                    FINISH_TIMEOUT.as_secs()
                );
                return;
            }
            // A request arriving now stays unacknowledged in the session.
            if let Turn::Lost = self
                .stopping_turn(Duration::from_millis(10), "stopping")
                .await
            {
                return;
            }
        }
    }

    /// One turn of a stopping module's loop: tops up the deliveries in flight, then takes
    /// the next event (a request or an UNSUBACK is the caller's; any other is handled, a
    /// failure logged as happening while `doing`), delivers the results the outbox
    /// committed, or waits `tick`. A lost connection leaves what is left in the session.
    async fn stopping_turn(&mut self, tick: Duration, doing: &str) -> Turn {
        let dropped = self.delivery.top_up(&self.client);
        if !dropped.is_empty() {
            self.ctx.outbox.remove(dropped);
        }
        tokio::select! {
            ev = self.events.poll() => match ev {
                Ok(Ev::UnsubAck) => Turn::UnsubAck,
                Ok(Ev::Publish(msg)) => Turn::Publish(msg),
                Ok(ev) => {
                    if let Err(e) = self.on_event(ev) {
                        tracing::warn!("while {doing}: {e}");
                    }
                    Turn::Quiet
                }
                Err(_) => {
                    self.connected = false;
                    Turn::Lost
                }
            },
            Some(stored) = self.committed.recv() => {
                self.deliver_committed(stored);
                Turn::Quiet
            }
            () = tokio::time::sleep(tick) => Turn::Quiet,
        }
    }

    /// Queues `stored` and every other result the outbox has committed since for delivery.
    fn deliver_committed(&mut self, stored: Stored) {
        self.delivery.push(stored);
        while let Ok(stored) = self.committed.try_recv() {
            self.delivery.push(stored);
        }
    }

    fn on_event(&mut self, ev: Ev) -> Result<(), EdgeError> {
        match ev {
            Ev::Connected { session_present } => self.on_connect(session_present),
            Ev::Sent(pkid) => {
                if !self.delivery.sent(pkid) {
                    tracing::warn!(
                        "publish {pkid} sent that the driver did not queue; this is a bug"
                    );
                }
            }
            Ev::PubAck { pkid, refused } => {
                match self.delivery.answered(pkid, refused.is_some()) {
                    Answer::Delivered(seq) => {
                        // Off the disk at once, also behind an older record still waiting
                        // (a refused one), so delivered results never fill the outbox.
                        self.ctx.stats.metrics.delivered.inc();
                        self.ctx.outbox.remove(vec![seq]);
                    }
                    Answer::Refused { seq, first: true } => tracing::warn!(
                        "the broker refused a result on {}: {}; it stays in the outbox \
                         (with any others refused), next try in {} ms",
                        self.delivery.topic(seq),
                        refused.unwrap_or("?"),
                        self.delivery.retry_backoff().as_millis()
                    ),
                    Answer::VolatileRefused => tracing::warn!(
                        "the broker refused a status or telemetry message: {}",
                        refused.unwrap_or("?")
                    ),
                    Answer::Refused { .. } | Answer::None => {}
                }
            }
            Ev::Publish(msg) => self.on_publish(msg),
            Ev::SubAck(codes) => {
                for (filter, code) in self.subscribed.iter().zip(codes) {
                    match code {
                        None => {}
                        Some(SubRefusal::SharedNotSupported) if filter.starts_with("$share/") => {
                            return Err(EdgeError::Setup(format!(
                                "the broker {} does not support shared subscriptions (SUBACK 0x9E for {filter}); drop --share-group or use a broker that has them (e.g. mosquitto 2)",
                                self.broker
                            )));
                        }
                        Some(why) => {
                            tracing::error!("the broker refused the subscription {filter}: {why}")
                        }
                    }
                }
            }
            Ev::UnsubAck | Ev::Other => {}
        }
        Ok(())
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
        self.backoff.reset();
        self.delivery.reset();
        self.subscribed = self.ctx.topics.subscriptions(&self.ctx.served);
        if let Err(e) = self.client.try_subscribe(&self.subscribed) {
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
        self.delivery.reset();
        let wait = self.backoff.next_delay();
        if self.connected {
            tracing::warn!(
                "lost the connection to {}: {reason}; reconnecting",
                self.broker
            );
        } else {
            tracing::warn!(
                "cannot connect to {}: {reason}; retrying in {} ms",
                self.broker,
                wait.as_millis()
            );
        }
        self.connected = false;
        if let Some(renew) = &self.renew_credentials {
            match (renew.0)() {
                Ok((user, password)) => self.events.set_credentials(&user, &password),
                Err(e) => tracing::error!("cannot renew the broker credentials: {e}"),
            }
        }
        tokio::time::sleep(wait).await;
    }

    fn on_publish(&mut self, msg: InMsg) {
        match self.ctx.topics.inbound(&msg.topic) {
            Inbound::Request { model } => self.spawn_request(msg, Target::Model(model)),
            Inbound::Method { name, rid } if name == "score" => {
                self.spawn_request(msg, Target::Method { rid });
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
                    if let Some((desired, version)) = desired::from_twin(&msg.payload) {
                        self.on_config(&desired, version);
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

    /// Handles a request in its own task, counted in `ctx.pending` until it is answered.
    fn spawn_request(&self, msg: InMsg, target: Target) {
        struct Pending(Arc<Ctx>);
        impl Drop for Pending {
            fn drop(&mut self) {
                self.0.pending.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.ctx.pending.fetch_add(1, Ordering::SeqCst);
        let pending = Pending(Arc::clone(&self.ctx));
        tokio::spawn(async move {
            request::handle(Arc::clone(&pending.0), msg, target).await;
            drop(pending);
        });
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
        let mut t = self.ctx.stats.telemetry(
            &self.ctx.serving_versions(),
            (messages, bytes),
            self.ctx.applied().telemetry_interval,
        );
        // Members of a share group publish on one telemetry topic: say whose this is.
        if let Some(map) = t.as_object_mut() {
            map.insert("client_id".into(), json!(self.ctx.client_id));
        }
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
