//! Latency statistics and error tallies of a benchmark run.
//!
//! Latencies are kept exactly (one `u64` of nanoseconds per request) and summarised by
//! sorting: a run of a million requests costs 8 MB, and the percentiles are exact.

use crate::telemetry::percentile::nearest_rank;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// How many distinct error messages a run keeps; further distinct ones are counted together.
pub const MAX_ERROR_MESSAGES: usize = 5;

/// Every measured latency of a run, in nanoseconds.
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    nanos: Vec<u64>,
}

impl Latencies {
    pub fn push(&mut self, latency: Duration) {
        self.nanos
            .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn extend(&mut self, other: Latencies) {
        self.nanos.extend(other.nanos);
    }

    pub fn len(&self) -> usize {
        self.nanos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nanos.is_empty()
    }

    /// Min, mean, p50/p90/p99 and max, in milliseconds; all zero when there are none.
    pub fn summary(mut self) -> LatencySummary {
        self.nanos.sort_unstable();
        let s = &self.nanos;
        let ms = |n: u64| n as f64 / 1e6;
        let percentile = |s: &[u64], p: f64| nearest_rank(s, p).unwrap_or(0);
        let mean = if s.is_empty() {
            0.0
        } else {
            s.iter().map(|&n| n as f64).sum::<f64>() / s.len() as f64 / 1e6
        };
        LatencySummary {
            min: ms(s.first().copied().unwrap_or(0)),
            mean,
            p50: ms(percentile(s, 50.0)),
            p90: ms(percentile(s, 90.0)),
            p99: ms(percentile(s, 99.0)),
            max: ms(s.last().copied().unwrap_or(0)),
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Failed requests: the total and the first few distinct messages with their counts.
#[derive(Debug, Default, Clone)]
pub struct ErrorTally {
    total: u64,
    /// Message → (first seen order, count).
    messages: BTreeMap<String, (usize, u64)>,
    other: u64,
}

impl ErrorTally {
    pub fn record(&mut self, message: &str) {
        self.total += 1;
        let next = self.messages.len();
        if let Some((_, count)) = self.messages.get_mut(message) {
            *count += 1;
        } else if next < MAX_ERROR_MESSAGES {
            self.messages.insert(message.to_string(), (next, 1));
        } else {
            self.other += 1;
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// The distinct messages in the order first seen, then a line for the rest, if any.
    pub fn messages(&self) -> Vec<ErrorCount> {
        let mut out: Vec<(usize, ErrorCount)> = self
            .messages
            .iter()
            .map(|(m, &(order, count))| {
                (
                    order,
                    ErrorCount {
                        message: m.clone(),
                        count,
                    },
                )
            })
            .collect();
        out.sort_by_key(|(order, _)| *order);
        let mut out: Vec<ErrorCount> = out.into_iter().map(|(_, e)| e).collect();
        if self.other > 0 {
            out.push(ErrorCount {
                message: "(other messages)".to_string(),
                count: self.other,
            });
        }
        out
    }
}

/// One distinct error message and how often it was seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorCount {
    pub message: String,
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_in_milliseconds_whatever_the_order() {
        let mut l = Latencies::default();
        for ms in [4u64, 1, 3, 2] {
            l.push(Duration::from_millis(ms));
        }
        let s = l.summary();
        assert_eq!(
            (s.min, s.p50, s.p90, s.p99, s.max),
            (1.0, 2.0, 4.0, 4.0, 4.0)
        );
        assert!((s.mean - 2.5).abs() < 1e-9);
        assert_eq!(Latencies::default().summary(), LatencySummary::default());
    }

    #[test]
    fn error_tally_keeps_the_first_distinct_messages() {
        let mut t = ErrorTally::default();
        for m in ["b", "a", "b", "c", "d", "e", "f", "g", "a"] {
            t.record(m);
        }
        assert_eq!(t.total(), 9);
        let got: Vec<(String, u64)> = t
            .messages()
            .into_iter()
            .map(|e| (e.message, e.count))
            .collect();
        let want = [
            ("b", 2),
            ("a", 2),
            ("c", 1),
            ("d", 1),
            ("e", 1),
            ("(other messages)", 2),
        ];
        let want: Vec<(String, u64)> = want.iter().map(|(m, c)| (m.to_string(), *c)).collect();
        assert_eq!(got, want);
    }
}
