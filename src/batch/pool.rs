//! A bounded set of threads for a scheduler's blocking work.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

type Job = Box<dyn FnOnce() + Send>;

/// Runs jobs on at most `limit` threads of its own, started on demand (none while idle at
/// first) and kept until the pool is dropped; jobs beyond them wait in order. Unlike tokio's
/// blocking pool (up to 512 threads), its threads do not grow with the number of callers.
pub struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    limit: usize,
    name: String,
}

struct State {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
    closed: bool,
}

impl Pool {
    /// A pool of at most `limit` (at least 1) threads named `name-N`.
    pub fn new(name: &str, limit: usize) -> Pool {
        Pool {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    jobs: VecDeque::new(),
                    threads: 0,
                    idle: 0,
                    closed: false,
                }),
                wake: Condvar::new(),
                limit: limit.max(1),
                name: name.to_string(),
            }),
        }
    }

    /// Queues `job` for the next free thread, starting one if none is idle and the limit
    /// allows. Fails only when no thread runs and none can be started.
    pub fn execute(&self, job: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        let mut state = lock(&self.shared.state);
        state.jobs.push_back(Box::new(job));
        // Idle threads not yet woken are each counted once against the jobs waiting.
        if state.jobs.len() <= state.idle || state.threads >= self.shared.limit {
            drop(state);
            self.shared.wake.notify_one();
            return Ok(());
        }
        let n = state.threads;
        state.threads += 1;
        drop(state);
        let shared = Arc::clone(&self.shared);
        let started = std::thread::Builder::new()
            .name(format!("{}-{n}", self.shared.name))
            .spawn(move || work(&shared));
        if let Err(e) = started {
            let mut state = lock(&self.shared.state);
            state.threads -= 1;
            if state.threads == 0 {
                state.jobs.pop_back();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Threads started so far.
    #[cfg(test)]
    pub fn threads(&self) -> usize {
        lock(&self.shared.state).threads
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.wake.notify_all();
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // No job runs under the lock, so it is never poisoned by one.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn work(shared: &Shared) {
    let mut state = lock(&shared.state);
    loop {
        if let Some(job) = state.jobs.pop_front() {
            drop(state);
            job();
            state = lock(&shared.state);
            continue;
        }
        if state.closed {
            state.threads -= 1;
            return;
        }
        state.idle += 1;
        state = shared
            .wake
            .wait(state)
            .unwrap_or_else(PoisonError::into_inner);
        state.idle -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn threads_are_bounded_by_the_limit_not_by_the_jobs() {
        let pool = Pool::new("t", 2);
        let (running, most, done) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        for _ in 0..16 {
            let (running, most, done) = (running.clone(), most.clone(), done.clone());
            pool.execute(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
                running.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while done.load(Ordering::SeqCst) < 16 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(done.load(Ordering::SeqCst), 16);
        assert_eq!(pool.threads(), 2);
        assert_eq!(most.load(Ordering::SeqCst), 2);
        // Sequential jobs reuse an idle thread.
        let pool = Pool::new("t", 4);
        for _ in 0..8 {
            let (tx, rx) = std::sync::mpsc::channel();
            pool.execute(move || tx.send(()).unwrap()).unwrap();
            rx.recv().unwrap();
            while lock(&pool.shared.state).idle == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(pool.threads(), 1);
    }
}
