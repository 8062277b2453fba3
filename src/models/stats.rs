//! Per-version inference statistics in the shape Triton's statistics extension reports.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A count and a total duration.
#[derive(Default)]
struct Counter {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Counter {
    fn add(&self, d: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.ns.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn snapshot(&self) -> Duration2 {
        Duration2 {
            count: self.count.load(Ordering::Relaxed),
            ns: self.ns.load(Ordering::Relaxed),
        }
    }
}

/// Where one request's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Waiting for an inference thread.
    pub queue: Duration,
    /// Validating and converting inputs.
    pub compute_input: Duration,
    /// The engine run.
    pub compute_infer: Duration,
    /// Selecting and converting outputs.
    pub compute_output: Duration,
}

impl Timings {
    /// Time spent computing (input, inference and output).
    pub fn compute(&self) -> Duration {
        self.compute_input + self.compute_infer + self.compute_output
    }
}

/// Milliseconds since the Unix epoch (0 for a clock before it): the clock of
/// [`Stats::last_inference_ms`].
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Lock-free counters updated by every request to one model version.
#[derive(Default)]
pub struct Stats {
    inference_count: AtomicU64,
    execution_count: AtomicU64,
    last_inference_ms: AtomicU64,
    success: Counter,
    fail: Counter,
    queue: Counter,
    compute_input: Counter,
    compute_infer: Counter,
    compute_output: Counter,
}

impl Stats {
    /// Records a successful request of `rows` inferences.
    pub fn success(&self, rows: u64, t: &Timings) {
        self.inference_count.fetch_add(rows, Ordering::Relaxed);
        self.touch();
        self.success.add(t.queue + t.compute());
        self.queue.add(t.queue);
        self.compute_input.add(t.compute_input);
        self.compute_infer.add(t.compute_infer);
        self.compute_output.add(t.compute_output);
    }

    /// Records one engine execution (a request, or a batch of several).
    pub fn executed(&self, _rows: u64) {
        self.execution_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a failed request that spent `total` in the core.
    pub fn failure(&self, total: Duration) {
        self.touch();
        self.fail.add(total);
    }

    fn touch(&self) {
        self.last_inference_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// When a request last succeeded or failed, in milliseconds since the Unix epoch (0 if
    /// none has).
    pub fn last_inference_ms(&self) -> u64 {
        self.last_inference_ms.load(Ordering::Relaxed)
    }

    /// The counters now, in Triton's `inference_stats` JSON shape.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            last_inference: self.last_inference_ms.load(Ordering::Relaxed),
            inference_count: self.inference_count.load(Ordering::Relaxed),
            execution_count: self.execution_count.load(Ordering::Relaxed),
            inference_stats: InferenceStats {
                success: self.success.snapshot(),
                fail: self.fail.snapshot(),
                queue: self.queue.snapshot(),
                compute_input: self.compute_input.snapshot(),
                compute_infer: self.compute_infer.snapshot(),
                compute_output: self.compute_output.snapshot(),
            },
        }
    }
}

/// `{count, ns}` as Triton reports durations.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Duration2 {
    pub count: u64,
    pub ns: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct InferenceStats {
    pub success: Duration2,
    pub fail: Duration2,
    pub queue: Duration2,
    pub compute_input: Duration2,
    pub compute_infer: Duration2,
    pub compute_output: Duration2,
}

/// One version's statistics.
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    /// Milliseconds since the epoch of the last request, 0 if none.
    pub last_inference: u64,
    pub inference_count: u64,
    pub execution_count: u64,
    pub inference_stats: InferenceStats,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_durations_accumulate() {
        let s = Stats::default();
        let t = Timings {
            queue: Duration::from_nanos(5),
            compute_infer: Duration::from_nanos(10),
            ..Default::default()
        };
        s.success(4, &t);
        s.success(1, &t);
        s.executed(5);
        s.executed(1);
        s.failure(Duration::from_nanos(3));
        let snap = s.snapshot();
        assert_eq!(snap.inference_count, 5);
        assert_eq!(snap.execution_count, 2);
        assert_eq!(snap.inference_stats.success, Duration2 { count: 2, ns: 30 });
        assert_eq!(snap.inference_stats.fail, Duration2 { count: 1, ns: 3 });
        assert_eq!(snap.inference_stats.queue.ns, 10);
        assert!(snap.last_inference > 0);
    }
}
