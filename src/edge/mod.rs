//! The IoT edge front end (`scoria edge`): scoring requests over MQTT with durable,
//! at-least-once delivery of results, telemetry, desired configuration, and an Azure IoT Hub
//! preset.
//!
//! - [`link`]: one interface over rumqttc's MQTT 3.1.1 and 5 clients.
//! - [`driver`]: the connection loop; [`delivery`]: which outbox record goes next, and what
//!   the broker's answers mean for it.
//! - [`request`]: one request from arrival to acknowledgement, scored through the serving core.
//! - [`outbox`]: the durable store of results awaiting the broker (redb).
//! - [`topics`], [`message`], [`desired`], [`threshold`], [`stats`]: topic layouts, payloads,
//!   desired configuration, alert thresholds, telemetry.
//! - [`iothub`], [`workload`]: IoT Hub identities and SAS tokens, signed with a key or by
//!   IoT Edge's workload API.

mod backoff;
mod delivery;
pub mod desired;
mod driver;
pub mod iothub;
pub mod link;
pub mod message;
pub mod outbox;
pub(crate) mod request;
pub mod stats;
pub mod threshold;
pub mod topics;
pub mod workload;

use crate::models::ModelManager;
use crate::telemetry::edge::EdgeMetrics;
use crate::telemetry::Metrics;
use bytes::Bytes;
use desired::Applied;
use link::{Client, LinkOptions};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use topics::Topics;

/// Failures of the edge module; each is a one-line reason for the CLI.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("the broker {broker} refused the connection: {reason} (check --username/--password or the IoT Hub credentials)")]
    Refused { broker: String, reason: String },
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
    #[error("{0}")]
    Setup(String),
}

/// Everything `scoria edge` is configured with.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    pub link: LinkOptions,
    /// `mqtt://host:port` as given, for log lines.
    pub broker: String,
    pub topics: Topics,
    /// Served models and the version pinned for each (`None`: highest ready).
    pub models: Vec<(String, Option<u64>)>,
    /// Models of `models` that cannot be served, and why: their requests get error results.
    pub unavailable: BTreeMap<String, String>,
    pub outbox_dir: PathBuf,
    pub outbox_limits: outbox::Limits,
    pub max_message: usize,
    pub telemetry_interval: Duration,
    /// Fresh credentials for each connection attempt (IoT Hub SAS tokens expire).
    pub renew_credentials: Option<CredentialSource>,
}

/// Produces `(username, password)` for the next connection attempt.
#[derive(Clone)]
#[allow(clippy::type_complexity)]
pub struct CredentialSource(pub Arc<dyn Fn() -> Result<(String, String), String> + Send + Sync>);

impl std::fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialSource")
    }
}

/// State shared by the driver and the request tasks.
pub struct Ctx {
    pub(crate) models: Arc<ModelManager>,
    pub(crate) served: Vec<String>,
    /// Served models that failed to load, and why (requests for them get error results).
    pub(crate) unavailable: BTreeMap<String, String>,
    pub(crate) client: Client,
    pub(crate) client_id: String,
    pub(crate) topics: Topics,
    pub(crate) outbox: outbox::Outbox,
    pub(crate) stats: stats::EdgeStats,
    pub(crate) max_message: usize,
    /// Requests received and not yet answered (stored in the outbox and acknowledged).
    pub(crate) pending: std::sync::atomic::AtomicUsize,
    applied: RwLock<Applied>,
}

impl Ctx {
    pub(crate) fn applied(&self) -> Applied {
        self.applied
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_applied(&self, a: Applied) {
        *self.applied.write().unwrap_or_else(|p| p.into_inner()) = a;
    }

    /// The version pinned for `model`, if any.
    pub(crate) fn pinned(&self, model: &str) -> Option<u64> {
        self.applied
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .versions
            .get(model)
            .copied()
            .flatten()
    }

    /// The thresholds `result` of `model` crosses, or `None` when the model has none.
    pub(crate) fn alerts(&self, model: &str, result: &serde_json::Value) -> Option<Vec<String>> {
        self.applied
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .thresholds
            .get(model)
            .map(|t| threshold::crossed(t, result))
    }

    /// The version each served model scores on now.
    pub(crate) fn serving_versions(&self) -> BTreeMap<String, Option<u64>> {
        self.served
            .iter()
            .map(|m| {
                let pinned = self.pinned(m).map(|v| v.to_string());
                let v = self
                    .models
                    .get_served(m, pinned.as_deref())
                    .ok()
                    .map(|s| s.model.version());
                (m.clone(), v)
            })
            .collect()
    }
}

/// Runs the edge module until `shutdown` resolves. `models` must have finished loading.
pub async fn run(
    settings: EdgeSettings,
    models: Arc<ModelManager>,
    metrics: &Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), EdgeError> {
    let (committed_tx, committed_rx) = tokio::sync::mpsc::unbounded_channel();
    let (outbox, left) =
        outbox::Outbox::open(&settings.outbox_dir, settings.outbox_limits, committed_tx)?;
    let (client, events) = link::create(&settings.link).map_err(EdgeError::Setup)?;
    let ctx = Arc::new(Ctx {
        models,
        served: settings.models.iter().map(|(m, _)| m.clone()).collect(),
        unavailable: settings.unavailable.clone(),
        client: client.clone(),
        client_id: settings.link.client_id.clone(),
        topics: settings.topics.clone(),
        outbox,
        stats: stats::EdgeStats::new(EdgeMetrics::register(metrics)),
        max_message: settings.max_message,
        pending: std::sync::atomic::AtomicUsize::new(0),
        applied: RwLock::new(Applied {
            telemetry_interval: settings.telemetry_interval,
            versions: settings.models.iter().cloned().collect(),
            thresholds: BTreeMap::new(),
        }),
    });
    let serving: Vec<&str> = ctx
        .served
        .iter()
        .filter(|m| !ctx.unavailable.contains_key(*m))
        .map(String::as_str)
        .collect();
    let broken: Vec<&str> = ctx.unavailable.keys().map(String::as_str).collect();
    let group = match &settings.topics {
        Topics::Plain { share: Some(g), .. } => format!(" in share group '{g}'"),
        _ => String::new(),
    };
    tracing::info!(
        "edge module '{}'{group} serving {}{} on {} (outbox {})",
        settings.link.client_id,
        serving.join(", "),
        if broken.is_empty() {
            String::new()
        } else {
            format!(" (cannot serve {})", broken.join(", "))
        },
        settings.broker,
        settings.outbox_dir.display()
    );
    let window = usize::from(settings.link.inflight);
    let mut driver = driver::Driver::new(
        ctx,
        client,
        events,
        committed_rx,
        left,
        window,
        settings.broker,
    );
    driver.renew_credentials = settings.renew_credentials;
    driver.run(shutdown).await
}

/// The last will payload: `{"state":"offline","client_id":ID}` (members of a share group
/// publish status on one topic: the client id says which one went away).
pub fn last_will(client_id: &str) -> Bytes {
    Bytes::from(serde_json::json!({"state": "offline", "client_id": client_id}).to_string())
}
