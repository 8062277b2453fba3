//! The edge module's metrics (`scoria edge`), registered in the process's one registry.

use super::Metrics;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts};

/// Counters and gauges of the MQTT edge module.
#[derive(Clone)]
pub struct EdgeMetrics {
    /// Messages by model and kind: `in` (requests received), `out` (results scored),
    /// `failed` (error results).
    pub messages: IntCounterVec,
    /// Results that crossed one of their model's alert thresholds, by model.
    pub alerts: IntCounterVec,
    /// Results the broker acknowledged (removed from the outbox).
    pub delivered: IntCounter,
    pub outbox_messages: IntGauge,
    pub outbox_bytes: IntGauge,
    pub reconnects: IntCounter,
    /// Request to durable result, by model.
    pub latency: HistogramVec,
}

impl EdgeMetrics {
    /// Creates the edge metrics in `metrics`' registry.
    pub fn register(metrics: &Metrics) -> EdgeMetrics {
        let m = (|| -> prometheus::Result<EdgeMetrics> {
            let m = EdgeMetrics {
                messages: IntCounterVec::new(
                    Opts::new(
                        "edge_messages_total",
                        "MQTT messages by model and kind: in (requests), out (results), failed (error results)",
                    ),
                    &["model", "kind"],
                )?,
                alerts: IntCounterVec::new(
                    Opts::new(
                        "edge_alerts_total",
                        "Results that crossed one of their model's alert thresholds",
                    ),
                    &["model"],
                )?,
                delivered: IntCounter::new(
                    "edge_delivered_total",
                    "Results the broker acknowledged",
                )?,
                outbox_messages: IntGauge::new(
                    "edge_outbox_messages",
                    "Results in the outbox waiting for the broker",
                )?,
                outbox_bytes: IntGauge::new("edge_outbox_bytes", "Bytes in the outbox")?,
                reconnects: IntCounter::new(
                    "edge_reconnects_total",
                    "Connections to the broker after the first",
                )?,
                latency: HistogramVec::new(
                    HistogramOpts::new(
                        "edge_latency_seconds",
                        "Time from a request's arrival to its result in the outbox",
                    )
                    .buckets(super::LATENCY_BUCKETS.to_vec()),
                    &["model"],
                )?,
            };
            let r = metrics.registry();
            r.register(Box::new(m.messages.clone()))?;
            r.register(Box::new(m.alerts.clone()))?;
            r.register(Box::new(m.delivered.clone()))?;
            r.register(Box::new(m.outbox_messages.clone()))?;
            r.register(Box::new(m.outbox_bytes.clone()))?;
            r.register(Box::new(m.reconnects.clone()))?;
            r.register(Box::new(m.latency.clone()))?;
            Ok(m)
        })();
        m.expect("edge metric definitions are constant and registered once; this is a bug")
    }
}
