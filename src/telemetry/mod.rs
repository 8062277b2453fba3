//! Telemetry: the one Prometheus registry of the process and every metric in it.
//!
//! Front ends record what they serve through [`Metrics`]; `/metrics` renders the registry in
//! the Prometheus text format. All names carry the `scoria_` prefix.

use crate::batch::{BatchObserver, BatchObservers};
use crate::models::stats::Timings;
use crate::models::{ModelManager, VersionState};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::time::Duration;

pub mod edge;
pub mod percentile;

/// Latency buckets in seconds: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// What one served request contributes to the metrics.
#[derive(Debug, Clone, Default)]
pub struct RequestRecord<'a> {
    pub model: &'a str,
    pub version: &'a str,
    pub route: &'a str,
    /// `success`, `client_error` or `server_error`.
    pub outcome: &'a str,
    pub total: Duration,
    /// Present when the request reached an engine.
    pub timings: Option<Timings>,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    queue: HistogramVec,
    compute: HistogramVec,
    request_bytes: IntCounterVec,
    response_bytes: IntCounterVec,
    model_state: IntGaugeVec,
    batch_size: HistogramVec,
    queue_depth: IntGaugeVec,
    pending: IntGaugeVec,
    inflight: IntGauge,
}

/// Counts one request as in flight until dropped (see [`Metrics::in_flight`]).
pub struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// Creates the registry with every scoria metric and the process collector (CPU, RSS,
    /// open fds).
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("scoria".into()), None)
            .expect("a constant registry prefix is valid; this is a bug");
        let labels = ["model", "version", "route"];
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "Requests served, by model, version, route and outcome",
            ),
            &["model", "version", "route", "outcome"],
        );
        let hist = |name: &str, help: &str, labels: &[&str]| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )
        };
        let metrics = (|| -> prometheus::Result<Metrics> {
            let m = Metrics {
                requests: requests?,
                duration: hist(
                    "request_duration_seconds",
                    "Total time to serve a request, from routing to response",
                    &labels,
                )?,
                queue: hist(
                    "request_queue_seconds",
                    "Time a request waited for an inference thread",
                    &["model", "version"],
                )?,
                compute: hist(
                    "request_compute_seconds",
                    "Time a request spent computing (inputs, inference, outputs)",
                    &["model", "version"],
                )?,
                request_bytes: IntCounterVec::new(
                    Opts::new("request_bytes_total", "Request body bytes received"),
                    &labels,
                )?,
                response_bytes: IntCounterVec::new(
                    Opts::new("response_bytes_total", "Response body bytes sent"),
                    &labels,
                )?,
                model_state: IntGaugeVec::new(
                    Opts::new(
                        "model_versions",
                        "Model versions by state (1 for the state each version is in)",
                    ),
                    &["model", "version", "state"],
                )?,
                batch_size: HistogramVec::new(
                    HistogramOpts::new("batch_size", "Rows in each batch the dynamic batcher ran")
                        .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
                    &["model", "version"],
                )?,
                queue_depth: IntGaugeVec::new(
                    Opts::new("queue_depth", "Requests waiting in the batching queue"),
                    &["model", "version"],
                )?,
                pending: IntGaugeVec::new(
                    Opts::new(
                        "pending_requests",
                        "Inference requests queued or executing, per model (every route and engine): the signal autoscalers read",
                    ),
                    &["model"],
                )?,
                inflight: IntGauge::new(
                    "inflight_requests",
                    "Requests the server is handling now, on every route",
                )?,
                registry,
            };
            m.registry.register(Box::new(m.pending.clone()))?;
            m.registry.register(Box::new(m.inflight.clone()))?;
            m.registry.register(Box::new(m.batch_size.clone()))?;
            m.registry.register(Box::new(m.queue_depth.clone()))?;
            m.registry.register(Box::new(m.requests.clone()))?;
            m.registry.register(Box::new(m.duration.clone()))?;
            m.registry.register(Box::new(m.queue.clone()))?;
            m.registry.register(Box::new(m.compute.clone()))?;
            m.registry.register(Box::new(m.request_bytes.clone()))?;
            m.registry.register(Box::new(m.response_bytes.clone()))?;
            m.registry.register(Box::new(m.model_state.clone()))?;
            #[cfg(target_os = "linux")]
            m.registry.register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))?;
            Ok(m)
        })();
        metrics.expect("metric definitions are constant and valid; this is a bug")
    }

    /// The registry, for front ends that add their own metrics (the edge module).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Records one served request.
    pub fn record(&self, r: &RequestRecord) {
        let labels = [r.model, r.version, r.route];
        self.requests
            .with_label_values(&[r.model, r.version, r.route, r.outcome])
            .inc();
        self.duration
            .with_label_values(&labels)
            .observe(r.total.as_secs_f64());
        self.request_bytes
            .with_label_values(&labels)
            .inc_by(r.request_bytes);
        self.response_bytes
            .with_label_values(&labels)
            .inc_by(r.response_bytes);
        if let Some(t) = &r.timings {
            self.queue
                .with_label_values(&[r.model, r.version])
                .observe(t.queue.as_secs_f64());
            self.compute
                .with_label_values(&[r.model, r.version])
                .observe(t.compute().as_secs_f64());
        }
    }

    /// Counts a request as in flight (`scoria_inflight_requests`) until the guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        self.inflight.inc();
        InFlight(self.inflight.clone())
    }

    /// The registry in the Prometheus text format, with model states and pending requests
    /// read from `models` now.
    pub fn render(&self, models: &ModelManager) -> String {
        self.model_state.reset();
        self.pending.reset();
        for status in models.statuses() {
            let pending: usize = status
                .versions
                .values()
                .map(|state| match state {
                    VersionState::Ready(served) => served.model.pending(),
                    _ => 0,
                })
                .sum();
            self.pending
                .with_label_values(&[&status.name])
                .set(i64::try_from(pending).unwrap_or(i64::MAX));
            if status.versions.is_empty() {
                let state = if status.unloaded {
                    "unloaded"
                } else {
                    "failed"
                };
                self.model_state
                    .with_label_values(&[&status.name, "", state])
                    .set(1);
            }
            for (v, state) in &status.versions {
                let state = match state {
                    VersionState::Loading => "loading",
                    VersionState::Ready(_) => "ready",
                    VersionState::Failed(_) => "failed",
                };
                self.model_state
                    .with_label_values(&[&status.name, &v.to_string(), state])
                    .set(1);
            }
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!("cannot encode metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl BatchObservers for Metrics {
    /// An observer for the dynamic batcher of `model`:`version`: records each batch's rows
    /// and the queue depth left behind.
    fn observer(&self, model: &str, version: u64) -> BatchObserver {
        let version = version.to_string();
        let sizes = self.batch_size.with_label_values(&[model, &version]);
        let depth = self.queue_depth.with_label_values(&[model, &version]);
        std::sync::Arc::new(move |rows, waiting| {
            sizes.observe(rows as f64);
            depth.set(i64::try_from(waiting).unwrap_or(i64::MAX));
        })
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_renders_with_prefix() {
        let m = Metrics::new();
        m.record(&RequestRecord {
            model: "digits",
            version: "1",
            route: "/v2/models/{model}/infer",
            outcome: "success",
            total: Duration::from_millis(2),
            timings: Some(Timings {
                queue: Duration::from_micros(50),
                ..Default::default()
            }),
            request_bytes: 300,
            response_bytes: 200,
        });
        let repo = crate::registry::Repository::open(std::env::temp_dir()).unwrap();
        let text = m.render(&ModelManager::new(
            repo,
            crate::models::LoadDefaults::default(),
        ));
        assert!(text.contains(r#"scoria_requests_total{model="digits",outcome="success",route="/v2/models/{model}/infer",version="1"} 1"#), "{text}");
        assert!(text.contains("scoria_request_queue_seconds_bucket"));
        assert!(text.contains(r#"scoria_request_bytes_total{model="digits",route="/v2/models/{model}/infer",version="1"} 300"#));
        #[cfg(target_os = "linux")]
        assert!(
            text.contains("scoria_process_resident_memory_bytes"),
            "{text}"
        );
    }
}
