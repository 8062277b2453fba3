//! Nearest-rank percentiles, the one implementation behind every latency summary the front
//! ends report (`scoria bench`'s results, the edge module's telemetry).

/// The nearest-rank percentile `p` (clamped to 0..=100) of ascending `sorted`: the smallest
/// value with at least `p` % of the values at or below it (the first value for `p` = 0).
/// `None` for an empty slice. `sorted` must be in ascending order; it is not checked.
pub fn nearest_rank<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p.clamp(0.0, 100.0) / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let percentile = |v: &[u64], p: f64| nearest_rank(v, p).unwrap_or(0);
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 90.0), 90);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        // Ten values: p50 is the 5th, p90 the 9th, p99 the 10th.
        let v: Vec<u64> = (1..=10).map(|x| x * 10).collect();
        assert_eq!(
            (
                percentile(&v, 50.0),
                percentile(&v, 90.0),
                percentile(&v, 99.0)
            ),
            (50, 90, 100)
        );
        assert_eq!(nearest_rank::<u64>(&[], 50.0), None);
    }
}
