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
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tract_linalg::multithread::{multithread_tract_scope, Executor};

/// Runs shorter than this stay on their caller's thread even when alone.
pub(super) const MIN_ALONE_RUN: Duration = Duration::from_millis(2);

/// tract runs in progress, in the whole process.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// The pool of one thread per core, made on first use; `None` on a single core.
fn pool() -> Option<&'static Executor> {
    static POOL: OnceLock<Option<Executor>> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores > 1).then(|| Executor::multithread_with_name(cores, "tract"))
    })
    .as_ref()
}

/// How long a plan's runs took, for [`run`] to decide whether the next one splits.
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
    let started = Instant::now();
    let out = if last > Duration::ZERO && last < MIN_ALONE_RUN {
        f()
    } else {
        let (_running, alone) = Running::start();
        match pool() {
            Some(pool) if alone && last >= MIN_ALONE_RUN => {
                multithread_tract_scope(pool.clone(), f)
            }
            _ => f(),
        }
    };
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
