//! The scheduler of models without dynamic batching: each request runs on its own.

use super::{BatchResult, Caller, RequestOptions, Scheduler, SchedulerError, Ticket};
use crate::engine::Engine;
use crate::tensor::Tensor;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;
use tokio::sync::oneshot;

/// Runs each request alone on one of the version's engine instances: for an async caller on
/// tokio's blocking pool, for a blocking caller on its own thread. Instances are taken in
/// turn; one that runs a request at a time ([`Engine::concurrent`] is false) is held for the
/// run, and an idle one is preferred. Time spent waiting for an instance is queue time.
#[derive(Clone)]
pub struct Direct {
    inner: Arc<Inner>,
}

struct Inner {
    engines: Arc<Vec<Box<dyn Engine>>>,
    /// Round-robin cursor over `engines`.
    next: AtomicUsize,
    /// One per engine, held while a request runs on an engine that is not concurrent.
    busy: Vec<Mutex<()>>,
    /// Requests submitted that have not yet got an instance.
    waiting: AtomicUsize,
}

impl Direct {
    pub fn new(engines: Arc<Vec<Box<dyn Engine>>>) -> Direct {
        Direct {
            inner: Arc::new(Inner {
                busy: (0..engines.len()).map(|_| Mutex::new(())).collect(),
                engines,
                next: AtomicUsize::new(0),
                waiting: AtomicUsize::new(0),
            }),
        }
    }
}

impl Scheduler for Direct {
    fn submit(
        &self,
        inputs: Vec<Tensor>,
        rows: usize,
        caller: Caller,
        _options: &RequestOptions,
    ) -> Result<Ticket, SchedulerError> {
        let submitted = Instant::now();
        self.inner.waiting.fetch_add(1, Ordering::Relaxed);
        match caller {
            Caller::Blocking => Ok(Ticket::ready(self.inner.run(inputs, rows, submitted))),
            Caller::Async => {
                let (reply, rx) = oneshot::channel();
                let inner = Arc::clone(&self.inner);
                tokio::task::spawn_blocking(move || {
                    if reply.is_closed() {
                        // The caller went away while the request waited for a thread.
                        inner.waiting.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                    let _ = reply.send(inner.run(inputs, rows, submitted));
                });
                Ok(Ticket::waiting(rx))
            }
        }
    }

    fn queued(&self) -> usize {
        self.inner.waiting.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn run(
        &self,
        inputs: Vec<Tensor>,
        rows: usize,
        submitted: Instant,
    ) -> Result<BatchResult, SchedulerError> {
        let (engine, _busy) = self.instance();
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let started = Instant::now();
        let outputs = engine.run(inputs)?;
        Ok(BatchResult {
            outputs,
            queue: started - submitted,
            compute: started.elapsed(),
            batch_rows: rows,
            first: true,
        })
    }

    /// The engine a request runs on, taken in turn. Engines that run one request at a time
    /// are held (the guard) for the run: an idle one is preferred, else the caller waits for
    /// the one whose turn it is.
    fn instance(&self) -> (&dyn Engine, Option<MutexGuard<'_, ()>>) {
        let n = self.engines.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed) % n;
        if self.engines[first].concurrent() {
            return (self.engines[first].as_ref(), None);
        }
        for i in (first..n).chain(0..first) {
            if let Ok(guard) = self.busy[i].try_lock() {
                return (self.engines[i].as_ref(), Some(guard));
            }
        }
        let guard = self.busy[first]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (self.engines[first].as_ref(), Some(guard))
    }
}
