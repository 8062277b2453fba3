//! What runs have cost: the measurements behind a scheduler's choices (whether a request
//! runs inline, how many rows a batch takes, how many threads run a version's requests).

use crate::engine::Engine;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Work estimated to take at most this long runs on the async caller's own thread instead of
/// being handed to a scheduler thread: the handoff (two thread wake-ups, and the run's data
/// moving to another core) costs more than such a run saves the executor, up to tokio's
/// guideline for time between awaits (10–100 µs). Measured with perf_analyzer on 2 cores,
/// lenet on tract (70–100 µs a run) against a 50 µs budget: 1.17× / 1.21–1.33× the
/// throughput at concurrency 1 / 4, 0.97–1.0× at 16 (p99 3.1 → 4.0 ms there, where the
/// workers' batches had made the runs fewer); ort lenet 1.08× at 4.
pub const INLINE_BUDGET: Duration = Duration::from_micros(100);

/// Runs measured before any request may run inline: the first runs (plans optimised lazily,
/// cold caches) do not predict the later ones.
const INLINE_AFTER_RUNS: u64 = 32;

/// The most rows a dynamic batch of `engines` gathers: `max_batch_size` (at least 1), but no
/// more than every instance runs well ([`Engine::rows_per_run`]).
pub fn batch_rows(engines: &[Box<dyn Engine>], max_batch_size: u32) -> usize {
    engines
        .iter()
        .filter_map(|e| e.rows_per_run())
        .fold(max_batch_size.max(1) as usize, usize::min)
        .max(1)
}

/// Threads that run a version's requests: one per instance for engines that run one request
/// at a time; for engines that run any number at once, one per core (at least one per
/// instance). More would only contend for the cores, and each thread an engine has run on
/// keeps its scratch memory — so threads are bounded by cores and instances, never by how
/// many clients there are.
pub fn threads_for(engines: &[Box<dyn Engine>]) -> usize {
    let instances = engines.len().max(1);
    if engines.iter().all(|e| e.concurrent()) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        instances.max(cores)
    } else {
        instances
    }
}

/// What runs have cost per input element: the basis of the inline decision.
#[derive(Default)]
pub struct Cost {
    runs: AtomicU64,
    /// Moving average (weight 1/8) of compute nanoseconds per input element, in 1/1024 ns.
    per_element: AtomicU64,
    /// The most input elements of a measured run.
    max_elements: AtomicU64,
}

impl Cost {
    /// Records a run of `elements` input elements that took `compute`.
    pub fn record(&self, elements: u64, compute: Duration) {
        let elements = elements.max(1);
        let sample = u64::try_from(compute.as_nanos().saturating_mul(1024) / u128::from(elements))
            .unwrap_or(u64::MAX);
        let runs = self.runs.fetch_add(1, Ordering::Relaxed);
        // Racing updates may lose a sample; the average stays an average.
        let old = self.per_element.load(Ordering::Relaxed);
        let new = if runs == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.per_element.store(new, Ordering::Relaxed);
        self.max_elements.fetch_max(elements, Ordering::Relaxed);
    }

    /// Whether a request of `elements` input elements is expected to run within
    /// [`INLINE_BUDGET`]: never before [`INLINE_AFTER_RUNS`] runs are measured, never for a
    /// request larger than the largest measured.
    pub fn fits_inline(&self, elements: u64) -> bool {
        if self.runs.load(Ordering::Relaxed) < INLINE_AFTER_RUNS
            || elements > self.max_elements.load(Ordering::Relaxed)
        {
            return false;
        }
        let estimate_ns = u128::from(self.per_element.load(Ordering::Relaxed))
            * u128::from(elements.max(1))
            / 1024;
        estimate_ns <= INLINE_BUDGET.as_nanos()
    }
}

/// Batch sizes (in rows) whose cost is tracked; larger batches are not measured.
const TRACKED_ROWS: usize = 256;

/// Runs of a batch size that are not measured: the first run of a size may optimise its plan.
const WARMUP_RUNS: u32 = 1;

/// While a candidate size is unmeasured, every this many batches tries one.
const EXPLORE_EVERY: u64 = 4;

/// Every this many batches, the least measured candidate size is tried, so a size measured
/// under unlucky conditions is measured again.
const REMEASURE_EVERY: u64 = 256;

/// A larger batch is chosen only when it costs at most this fraction per row of the best
/// smaller one: measurements are noisy (threads share the cores), and a smaller batch
/// leaves more requests to other threads.
const LARGER_PAYS: f64 = 0.9;

/// What engine runs of each batch size (rows) have cost per row: how many rows a dynamic
/// batch is worth. Batching pays only where a larger run costs less per row than smaller
/// ones; where it does not (an engine whose batched kernels are no faster per row), taking
/// fewer rows leaves the rest to other threads, as if batching were off.
#[derive(Debug)]
pub struct BatchSizes {
    /// Index `rows - 1`: runs seen, and the moving average (weight 1/4) of compute per row.
    sizes: Vec<(u32, f64)>,
    batches: u64,
}

impl BatchSizes {
    /// Tracks sizes up to `max_rows` (bounded by [`TRACKED_ROWS`]).
    pub fn new(max_rows: usize) -> BatchSizes {
        BatchSizes {
            sizes: vec![(0, 0.0); max_rows.clamp(1, TRACKED_ROWS)],
            batches: 0,
        }
    }

    /// Records an engine run of `rows` rows that took `compute`.
    pub fn record(&mut self, rows: usize, compute: Duration) {
        let Some((runs, per_row)) = rows.checked_sub(1).and_then(|i| self.sizes.get_mut(i)) else {
            return;
        };
        *runs = runs.saturating_add(1);
        let sample = compute.as_secs_f64() / rows as f64;
        match *runs {
            n if n <= WARMUP_RUNS => {}
            n if n == WARMUP_RUNS + 1 => *per_row = sample,
            _ => *per_row += (sample - *per_row) / 4.0,
        }
    }

    /// The rows worth gathering into the next batch, at most `target`.
    ///
    /// Candidates are 1, the powers of two below `target`, and `target`. While `target`
    /// itself is unmeasured it is the goal (Triton's behaviour: batch as much as allowed).
    /// Then the measured size up to `target` that costs least per row is, except that every
    /// [`EXPLORE_EVERY`] batches an unmeasured candidate is tried, and every
    /// [`REMEASURE_EVERY`] the least measured one. A larger size must cost at most
    /// [`LARGER_PAYS`] per row of the best smaller one.
    pub fn goal(&mut self, target: usize) -> usize {
        self.batches += 1;
        let target = target.max(1);
        if target > self.sizes.len() {
            return target;
        }
        let runs = |rows: usize| self.sizes[rows - 1].0;
        if runs(target) <= WARMUP_RUNS {
            return target;
        }
        let candidates = || {
            std::iter::successors(Some(1usize), |n| n.checked_mul(2))
                .take_while(move |&n| n < target)
                .chain(std::iter::once(target))
        };
        if self.batches.is_multiple_of(EXPLORE_EVERY) {
            if let Some(unmeasured) = candidates().find(|&n| runs(n) <= WARMUP_RUNS) {
                return unmeasured;
            }
        }
        if self.batches.is_multiple_of(REMEASURE_EVERY) {
            if let Some(least) = candidates().min_by_key(|&n| runs(n)) {
                return least;
            }
        }
        let mut best: Option<(usize, f64)> = None;
        for (i, &(runs, per_row)) in self.sizes[..target].iter().enumerate() {
            if runs > WARMUP_RUNS && best.is_none_or(|(_, b)| per_row < b * LARGER_PAYS) {
                best = Some((i + 1, per_row));
            }
        }
        best.map_or(target, |(rows, _)| rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn batches_grow_to_the_target_until_measurements_say_smaller_pays_more() {
        let mut sizes = BatchSizes::new(8);
        // Nothing measured: gather to the target (Triton's behaviour).
        assert_eq!(sizes.goal(8), 8);
        // Only small sizes measured: the target may still pay.
        for _ in 0..3 {
            sizes.record(1, ms(1));
            sizes.record(2, ms(2));
        }
        assert_eq!(sizes.goal(8), 8);
        // Batches of 8 cost 3 ms per row where one row alone costs 1 ms: one row at a time.
        sizes.record(8, ms(1000)); // the first run of a size (plan optimisation) is not counted
        sizes.record(8, ms(24));
        assert_eq!(sizes.goal(8), 1);
        // A cheaper size per row wins, and a smaller target bounds the choice.
        sizes.record(4, ms(1));
        sizes.record(4, ms(2));
        assert_eq!(sizes.goal(8), 4);
        // Only by a margin: 5 % cheaper per row is noise.
        let mut close = BatchSizes::new(2);
        for _ in 0..3 {
            close.record(1, ms(100));
            close.record(2, ms(190));
        }
        assert_eq!(close.goal(2), 1);
        close.record(2, ms(100));
        close.record(2, ms(100));
        assert_eq!(close.goal(2), 2);
        // Equal cost per row: the smaller batch, leaving the rest to other threads.
        assert_eq!(sizes.goal(2), 1);
        // Where batching pays per row, the target is kept.
        let mut paying = BatchSizes::new(4);
        for _ in 0..3 {
            paying.record(1, ms(4));
            paying.record(2, ms(5));
            paying.record(4, ms(6));
        }
        assert_eq!(paying.goal(4), 4);
    }

    #[test]
    fn unmeasured_candidates_are_tried_and_all_are_measured_again_now_and_then() {
        let mut sizes = BatchSizes::new(4);
        for _ in 0..3 {
            sizes.record(4, ms(40));
        }
        // Only the target is measured: every EXPLORE_EVERY-th batch tries 1, then 2.
        let goals: Vec<usize> = (0..EXPLORE_EVERY).map(|_| sizes.goal(4)).collect();
        assert_eq!(goals, [4, 4, 4, 1]);
        for _ in 0..3 {
            sizes.record(1, ms(1));
        }
        let goals: Vec<usize> = (0..EXPLORE_EVERY).map(|_| sizes.goal(4)).collect();
        assert_eq!(goals, [1, 1, 1, 2]);
        for _ in 0..2 {
            sizes.record(2, ms(20));
        }
        // All measured: size 1 wins, except the least measured is tried every REMEASURE_EVERY.
        let goals: Vec<usize> = (0..REMEASURE_EVERY).map(|_| sizes.goal(4)).collect();
        assert_eq!(
            goals.iter().filter(|&&g| g == 1).count(),
            REMEASURE_EVERY as usize - 1,
            "{goals:?}"
        );
        assert_eq!(goals.iter().filter(|&&g| g == 2).count(), 1, "{goals:?}");
    }

    #[test]
    fn sizes_beyond_those_tracked_are_not_recorded() {
        let mut sizes = BatchSizes::new(100_000);
        assert_eq!(sizes.sizes.len(), TRACKED_ROWS);
        sizes.record(100_000, ms(1));
        sizes.record(0, ms(1));
        assert_eq!(sizes.goal(100_000), 100_000);
    }
}
