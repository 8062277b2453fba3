//! Intra-op threads for a tract run that has the machine to itself.
//!
//! A run on its caller's thread alone leaves the other cores idle while fewer requests run
//! than there are cores (resnet at concurrency 1 kept one of two cores busy). A run that starts
//! while no other tract run is in progress, of a plan whose last run took at least
//! [`MIN_ALONE_RUN`], splits its matrix products over a pool of one thread per core
//! (tract's `multithread-mm`: panels of the product go to the pool's threads, each computed
//! whole by one thread, so results are bit for bit those of one thread). Runs that start
//! while another is in progress stay on their own thread: under concurrent load every core
//! already has a run, and splitting them too only added the pool's hand-offs (resnet, 2
//! cores: 121 → 85–97 requests/s at concurrency 2 with every run split). Small models never
//! split: a hand-off costs microseconds, their whole run not much more.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tract_linalg::multithread::{multithread_tract_scope, Executor};

/// Runs shorter than this stay on their caller's thread even when alone.
pub(super) const MIN_ALONE_RUN: Duration = Duration::from_millis(2);

/// tract runs in progress, in the whole process.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// The pool of one thread per core, made on first use; `None` on a single core, or where
/// its threads cannot be started (runs then stay on their callers' threads; tract's own
/// constructor would panic).
fn pool() -> Option<&'static Executor> {
    static POOL: OnceLock<Option<Executor>> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cores < 2 {
            return None;
        }
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("tract-{i}"))
            .num_threads(cores)
            .build()
            .map_err(|e| tracing::warn!("tract runs stay on one thread each: {e}"))
            .ok()
            .map(|pool| Executor::MultiThread(Arc::new(pool)))
    })
    .as_ref()
}

/// How long a plan's last run on one thread took, for [`run`] to decide whether the next
/// one splits (a split run's shorter time would otherwise undo the decision).
#[derive(Debug, Default)]
pub(super) struct RunTime(AtomicU64);

impl RunTime {
    fn get(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }

    fn set(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.store(nanos, Ordering::Relaxed);
    }
}

/// A run counted in [`RUNNING`] until dropped, however the run ends.
struct Running;

impl Running {
    /// Counts a run; whether it is the only one.
    fn start() -> (Running, bool) {
        (Running, RUNNING.fetch_add(1, Ordering::AcqRel) == 0)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs `f` (one run of a plan whose runs `time` records) over the pool when it starts alone
/// and the plan's last run took at least [`MIN_ALONE_RUN`]; on the caller's thread otherwise.
/// Runs of plans known to be shorter are not counted in [`RUNNING`]: they would only make
/// every small request touch one more shared counter, to hold back a split by microseconds.
pub(super) fn run<R>(time: &RunTime, f: impl FnOnce() -> R) -> R {
    let last = time.get();
    if last > Duration::ZERO && last < MIN_ALONE_RUN {
        return timed(time, f);
    }
    let (_running, alone) = Running::start();
    match pool() {
        Some(pool) if alone && last >= MIN_ALONE_RUN => multithread_tract_scope(pool.clone(), f),
        _ => timed(time, f),
    }
}

/// Runs `f` on the caller's thread and records how long it took in `time`.
fn timed<R>(time: &RunTime, f: impl FnOnce() -> R) -> R {
    let started = Instant::now();
    let out = f();
    time.set(started.elapsed());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_linalg::multithread::current_tract_executor;

    #[test]
    fn short_runs_stay_on_their_thread_and_are_timed() {
        let single = || matches!(current_tract_executor(), Executor::SingleThread);
        let time = RunTime::default();
        time.set(MIN_ALONE_RUN / 2);
        assert!(run(&time, single));
        assert!(time.get() < MIN_ALONE_RUN);
        // A run's length is recorded for the next decision.
        run(&time, || std::thread::sleep(MIN_ALONE_RUN));
        assert!(time.get() >= MIN_ALONE_RUN);
    }
}
