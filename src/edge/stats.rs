//! What the telemetry message reports: counts from the Prometheus counters, latency
//! percentiles over each model's recent requests, outbox depth, reconnects, uptime, RSS.

use crate::telemetry::edge::EdgeMetrics;
use crate::telemetry::percentile::nearest_rank;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many recent latencies per model the percentiles cover.
const WINDOW: usize = 2048;

/// Counters shared by the request tasks and the telemetry publisher.
pub struct EdgeStats {
    pub metrics: EdgeMetrics,
    started: Instant,
    latencies: Mutex<BTreeMap<String, VecDeque<Duration>>>,
}

impl EdgeStats {
    pub fn new(metrics: EdgeMetrics) -> EdgeStats {
        EdgeStats {
            metrics,
            started: Instant::now(),
            latencies: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn received(&self, model: &str) {
        self.metrics
            .messages
            .with_label_values(&[model, "in"])
            .inc();
    }

    /// Records a finished request: scored (`ok`) or answered with an error.
    pub fn finished(&self, model: &str, ok: bool, latency: Duration) {
        let kind = if ok { "out" } else { "failed" };
        self.metrics
            .messages
            .with_label_values(&[model, kind])
            .inc();
        self.metrics
            .latency
            .with_label_values(&[model])
            .observe(latency.as_secs_f64());
        let mut all = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
        let ring = all.entry(model.to_string()).or_default();
        if ring.len() == WINDOW {
            ring.pop_front();
        }
        ring.push_back(latency);
    }

    /// Records a result that crossed one of its model's thresholds.
    pub fn alerted(&self, model: &str) {
        self.metrics.alerts.with_label_values(&[model]).inc();
    }

    /// The telemetry message. `models` maps each served model to the version serving it.
    pub fn telemetry(
        &self,
        models: &BTreeMap<String, Option<u64>>,
        outbox: (u64, u64),
        interval: Duration,
    ) -> Value {
        let latencies = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
        let per_model: Map<String, Value> = models
            .iter()
            .map(|(name, version)| {
                let count =
                    |kind: &str| self.metrics.messages.with_label_values(&[name, kind]).get();
                let (p50, p99) = latencies.get(name).map_or((None, None), |r| {
                    let mut sorted: Vec<Duration> = r.iter().copied().collect();
                    sorted.sort_unstable();
                    (percentile_ms(&sorted, 50.0), percentile_ms(&sorted, 99.0))
                });
                (
                    name.clone(),
                    json!({
                        "version": version,
                        "in": count("in"),
                        "out": count("out"),
                        "failed": count("failed"),
                        "alerts": self.metrics.alerts.with_label_values(&[name]).get(),
                        "latency_ms": {"p50": p50, "p99": p99},
                    }),
                )
            })
            .collect();
        json!({
            "uptime_s": self.started.elapsed().as_secs_f64().round(),
            "interval_s": interval.as_secs_f64(),
            "models": per_model,
            "outbox": {"messages": outbox.0, "bytes": outbox.1},
            "delivered": self.metrics.delivered.get(),
            "reconnects": self.metrics.reconnects.get(),
            "rss_bytes": rss_bytes(),
        })
    }
}

/// The nearest-rank percentile `p` of ascending `sorted` in milliseconds (to the
/// microsecond), `None` when empty.
fn percentile_ms(sorted: &[Duration], p: f64) -> Option<f64> {
    nearest_rank(sorted, p).map(|d| (d.as_secs_f64() * 1e6).round() / 1e3)
}

/// The process's resident set size in bytes, read as `/metrics` reads it for
/// `process_resident_memory_bytes` (the Prometheus process collector); `None` where there is
/// no such collector (outside Linux) or it cannot read the process.
pub fn rss_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        use prometheus::core::Collector;
        let families = prometheus::process_collector::ProcessCollector::for_self().collect();
        let rss = families
            .iter()
            .find(|f| f.name() == "process_resident_memory_bytes")?;
        rss.get_metric()
            .first()
            .map(|m| m.get_gauge().get_value() as u64)
    }
    #[cfg(not(target_os = "linux"))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&v, 50.0), Some(50.0));
        assert_eq!(percentile_ms(&v, 99.0), Some(99.0));
        assert_eq!(percentile_ms(&[], 50.0), None);
    }

    #[test]
    fn telemetry_counts_per_model() {
        let metrics = crate::telemetry::Metrics::new();
        let stats = EdgeStats::new(EdgeMetrics::register(&metrics));
        stats.received("digits");
        stats.finished("digits", true, Duration::from_millis(2));
        stats.received("digits");
        stats.finished("digits", false, Duration::from_millis(4));
        let t = stats.telemetry(
            &[("digits".to_string(), Some(1))].into(),
            (3, 300),
            Duration::from_secs(10),
        );
        assert_eq!(t["models"]["digits"]["in"], 2);
        assert_eq!(t["models"]["digits"]["out"], 1);
        assert_eq!(t["models"]["digits"]["failed"], 1);
        assert_eq!(t["models"]["digits"]["version"], 1);
        assert_eq!(t["models"]["digits"]["latency_ms"]["p99"], 4.0);
        assert_eq!(t["outbox"]["messages"], 3);
        #[cfg(target_os = "linux")]
        assert!(t["rss_bytes"].as_u64().unwrap() > 0);
    }
}
