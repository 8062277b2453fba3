//! The scheduler of models without dynamic batching: each request runs on its own.

use super::cost::{threads_for, Cost};
use super::instances::{Held, Instances};
use super::pool::Pool;
use super::{BatchResult, Caller, RequestOptions, Scheduler, SchedulerError, Ticket};
use crate::engine::Engine;
use crate::tensor::Tensor;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

/// Runs each request alone on one of the version's engine instances: for an async caller on
/// one of the version's own threads (at most [`threads_for`] the instances), for a blocking
/// caller on its own thread. Instances are taken in
/// turn; one that runs a request at a time ([`Engine::concurrent`] is false) is held for the
/// run, and an idle one is preferred. Time spent waiting for an instance is queue time.
///
/// An async caller's request runs on its own thread, without the handoff, when the version's
/// measured cost says it fits [`super::INLINE_BUDGET`] (see [`Cost::fits_inline`]) and an
/// instance is idle.
#[derive(Clone)]
pub struct Direct {
    inner: Arc<Inner>,
}

struct Inner {
    instances: Instances,
    /// Round-robin cursor over the instances.
    next: AtomicUsize,
    /// Requests submitted that have not yet got an instance.
    waiting: AtomicUsize,
    cost: Cost,
    /// The threads async callers' requests run on.
    pool: Pool,
    /// Whether a request's dimension 0 holds independent rows (`max_batch_size` > 0), which
    /// an engine may run in parts ([`Engine::run_rows`]).
    rows: bool,
}

impl Direct {
    /// Runs requests on `engines`; `name` names its threads. `rows`: the model is batched
    /// (`max_batch_size` > 0), so a request's dimension 0 holds rows the model computes
    /// independently, which an engine may run in parts ([`Engine::run_rows`]).
    pub fn new(name: &str, engines: Arc<Vec<Box<dyn Engine>>>, rows: bool) -> Direct {
        Direct {
            inner: Arc::new(Inner {
                rows,
                pool: Pool::new(&format!("infer-{name}"), threads_for(&engines)),
                instances: Instances::new(engines),
                next: AtomicUsize::new(0),
                waiting: AtomicUsize::new(0),
                cost: Cost::default(),
            }),
        }
    }
}

/// One submitted request.
struct Request {
    inputs: Vec<Tensor>,
    /// Input elements, the measure of its cost.
    elements: u64,
    rows: usize,
    submitted: Instant,
}

impl Scheduler for Direct {
    fn submit(
        &self,
        inputs: Vec<Tensor>,
        rows: usize,
        caller: Caller,
        _options: &RequestOptions,
    ) -> Result<Ticket, SchedulerError> {
        let req = Request {
            elements: inputs.iter().map(|t| t.data().len() as u64).sum(),
            inputs,
            rows,
            submitted: Instant::now(),
        };
        self.inner.waiting.fetch_add(1, Ordering::Relaxed);
        let inline = match caller {
            Caller::Blocking => return Ok(Ticket::ready(self.inner.run(req))),
            Caller::Async if self.inner.cost.fits_inline(req.elements) => {
                self.inner.idle_instance()
            }
            Caller::Async => None,
        };
        match inline {
            Some((engine, busy)) => Ok(Ticket::ready(self.inner.run_on(engine, busy, req))),
            None => self.inner.hand_off(req),
        }
    }

    fn queued(&self) -> usize {
        self.inner.waiting.load(Ordering::Relaxed)
    }
}

impl Inner {
    /// Runs the request on one of the version's threads.
    fn hand_off(self: &Arc<Self>, req: Request) -> Result<Ticket, SchedulerError> {
        let (reply, rx) = oneshot::channel();
        let inner = Arc::clone(self);
        self.pool
            .execute(move || {
                if reply.is_closed() {
                    // The caller went away while the request waited for a thread.
                    inner.waiting.fetch_sub(1, Ordering::Relaxed);
                    return;
                }
                let _ = reply.send(inner.run(req));
            })
            .map_err(|e| {
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                SchedulerError::Internal(format!("cannot start an inference thread: {e}"))
            })?;
        Ok(Ticket::waiting(rx))
    }

    /// Runs the request on the calling thread, waiting for an instance if need be.
    fn run(&self, req: Request) -> Result<BatchResult, SchedulerError> {
        let (engine, busy) = self.instance();
        self.run_on(engine, busy, req)
    }

    /// Runs the request on `engine` (held by `_busy` if it runs one request at a time) and
    /// measures it.
    fn run_on(
        &self,
        engine: &dyn Engine,
        _busy: Held<'_>,
        req: Request,
    ) -> Result<BatchResult, SchedulerError> {
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let started = Instant::now();
        let outputs = if self.rows {
            engine.run_rows(req.inputs, req.rows)?
        } else {
            engine.run(req.inputs)?
        };
        let compute = started.elapsed();
        self.cost.record(req.elements, compute);
        Ok(BatchResult {
            outputs,
            queue: started - req.submitted,
            compute,
            batch_rows: req.rows,
            first: true,
        })
    }

    /// The engine a request runs on, taken in turn. Engines that run one request at a time
    /// are held for the run: an idle one is preferred, else the caller waits for the one
    /// whose turn it is.
    fn instance(&self) -> (&dyn Engine, Held<'_>) {
        let first = self.next_in_turn();
        self.instances
            .idle_from(first)
            .unwrap_or_else(|| self.instances.hold(first))
    }

    /// The next engine in turn if it runs requests concurrently, else an idle one (held);
    /// `None` when every instance is busy.
    fn idle_instance(&self) -> Option<(&dyn Engine, Held<'_>)> {
        self.instances.idle_from(self.next_in_turn())
    }

    fn next_in_turn(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.instances.engines().len()
    }
}
