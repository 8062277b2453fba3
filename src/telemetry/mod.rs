//! Telemetry: the one Prometheus registry of the process and every metric in it.
//!
//! Front ends record what they serve through [`Metrics`]; `/metrics` renders the registry in
//! the Prometheus text format. All names carry the `scoria_` prefix.

use crate::batch::{BatchObserver, BatchObservers};
use crate::models::stats::Timings;
use crate::models::{ModelManager, VersionState};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{OnceLock, RwLock};
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
    /// The series of each (model, version, route) requests were recorded for.
    series: RwLock<HashMap<SeriesKey, Series>>,
}

/// The series one (model, version, route) records into, resolved on its first request:
/// each `with_label_values` hashes its labels, takes its vector's lock and clones a handle,
/// which six times a request showed in the profile. A series appears in `/metrics` when
/// first recorded, as before (hence the cells).
struct Series {
    /// `requests_total` by outcome, in [`OUTCOMES`]' order.
    requests: [OnceLock<IntCounter>; 3],
    duration: Histogram,
    request_bytes: IntCounter,
    response_bytes: IntCounter,
    queue: OnceLock<Histogram>,
    compute: OnceLock<Histogram>,
}

/// The outcomes [`RequestRecord::outcome`] names.
const OUTCOMES: [&str; 3] = ["success", "client_error", "server_error"];

/// (model, version, route), owned.
#[derive(PartialEq, Eq, Hash)]
struct SeriesKey(String, String, String);

/// (model, version, route), as a request names them: the map is searched with borrowed
/// labels through `Borrow<dyn Labels>`, so a lookup allocates nothing.
trait Labels {
    fn labels(&self) -> (&str, &str, &str);
}

impl Labels for SeriesKey {
    fn labels(&self) -> (&str, &str, &str) {
        (&self.0, &self.1, &self.2)
    }
}

impl Labels for (&str, &str, &str) {
    fn labels(&self) -> (&str, &str, &str) {
        *self
    }
}

impl<'a> std::borrow::Borrow<dyn Labels + 'a> for SeriesKey {
    fn borrow(&self) -> &(dyn Labels + 'a) {
        self
    }
}

// Hashes and compares as `SeriesKey`'s derived impls do (a tuple of three `str`s), which
// `Borrow` requires.
impl Hash for dyn Labels + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.labels().hash(state);
    }
}

impl PartialEq for dyn Labels + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.labels() == other.labels()
    }
}

impl Eq for dyn Labels + '_ {}

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
                series: RwLock::default(),
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
        let key = (r.model, r.version, r.route);
        {
            let series = self.series.read().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = series.get(&key as &dyn Labels) {
                return self.record_in(s, r);
            }
        }
        let labels = [r.model, r.version, r.route];
        let s = Series {
            requests: Default::default(),
            duration: self.duration.with_label_values(&labels),
            request_bytes: self.request_bytes.with_label_values(&labels),
            response_bytes: self.response_bytes.with_label_values(&labels),
            queue: OnceLock::new(),
            compute: OnceLock::new(),
        };
        self.record_in(&s, r);
        let key = SeriesKey(r.model.into(), r.version.into(), r.route.into());
        let mut series = self.series.write().unwrap_or_else(|e| e.into_inner());
        series.entry(key).or_insert(s);
    }

    fn record_in(&self, s: &Series, r: &RequestRecord) {
        match OUTCOMES.iter().position(|o| *o == r.outcome) {
            Some(i) => s.requests[i]
                .get_or_init(|| {
                    self.requests
                        .with_label_values(&[r.model, r.version, r.route, OUTCOMES[i]])
                })
                .inc(),
            None => self
                .requests
                .with_label_values(&[r.model, r.version, r.route, r.outcome])
                .inc(),
        }
        s.duration.observe(r.total.as_secs_f64());
        s.request_bytes.inc_by(r.request_bytes);
        s.response_bytes.inc_by(r.response_bytes);
        if let Some(t) = &r.timings {
            let model = [r.model, r.version];
            s.queue
                .get_or_init(|| self.queue.with_label_values(&model))
                .observe(t.queue.as_secs_f64());
            s.compute
                .get_or_init(|| self.compute.with_label_values(&model))
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

    #[test]
    fn series_resolved_once_count_every_request_under_its_own_labels() {
        let m = Metrics::new();
        let record = |model, route, outcome, timings| {
            m.record(&RequestRecord {
                model,
                version: "1",
                route,
                outcome,
                total: Duration::from_millis(1),
                timings,
                request_bytes: 10,
                response_bytes: 5,
            })
        };
        let timed = Some(Timings::default());
        for _ in 0..3 {
            record("digits", "/v2/models/{model}/infer", "success", timed);
        }
        record("digits", "/v2/models/{model}/infer", "client_error", None);
        record("lenet", "/v2/models/{model}/infer", "success", timed);
        record("digits", "/score", "success", None);
        record("digits", "/score", "unexpected", None);
        let repo = crate::registry::Repository::open(std::env::temp_dir()).unwrap();
        let text = m.render(&ModelManager::new(
            repo,
            crate::models::LoadDefaults::default(),
        ));
        let has = |line: &str| assert!(text.contains(line), "{line} missing from\n{text}");
        has(
            r#"scoria_requests_total{model="digits",outcome="success",route="/v2/models/{model}/infer",version="1"} 3"#,
        );
        has(
            r#"scoria_requests_total{model="digits",outcome="client_error",route="/v2/models/{model}/infer",version="1"} 1"#,
        );
        has(
            r#"scoria_requests_total{model="lenet",outcome="success",route="/v2/models/{model}/infer",version="1"} 1"#,
        );
        has(
            r#"scoria_requests_total{model="digits",outcome="success",route="/score",version="1"} 1"#,
        );
        has(
            r#"scoria_requests_total{model="digits",outcome="unexpected",route="/score",version="1"} 1"#,
        );
        has(
            r#"scoria_request_bytes_total{model="digits",route="/v2/models/{model}/infer",version="1"} 40"#,
        );
        has(
            r#"scoria_request_duration_seconds_count{model="digits",route="/score",version="1"} 2"#,
        );
        has(r#"scoria_request_queue_seconds_count{model="digits",version="1"} 3"#);
        has(r#"scoria_request_compute_seconds_count{model="lenet",version="1"} 1"#);
        // No outcome or timing that never happened shows as a series.
        assert!(!text.contains(r#"outcome="server_error""#), "{text}");
        assert_eq!(
            text.matches("scoria_request_queue_seconds_count").count(),
            2,
            "{text}"
        );
    }
}
