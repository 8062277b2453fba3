//! The dynamic batcher (Triton's semantics).
//!
//! Requests (each already validated, each with its own batch dimension ≥ 1) wait in one
//! queue. A worker thread per engine instance takes the oldest request, gathers more for at
//! most `max_queue_delay` until the largest preferred batch size (or `max_batch_size`) is
//! reached or the next request would not fit, concatenates along dimension 0, runs the
//! engine once and splits the outputs back exactly. A full queue refuses at once; a request
//! whose caller went away is dropped before it runs.

use super::{BatchObserver, BatchResult, Caller, Scheduler, SchedulerError, Ticket};
use crate::engine::Engine;
use crate::registry::config::DynamicBatching;
use crate::tensor::Tensor;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

struct Pending {
    inputs: Vec<Tensor>,
    rows: usize,
    enqueued: Instant,
    reply: oneshot::Sender<Result<BatchResult, SchedulerError>>,
}

struct Queue {
    pending: VecDeque<Pending>,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    max_rows: usize,
    /// Rows worth waiting for.
    target_rows: usize,
    max_delay: Duration,
    max_queue: usize,
    observer: Option<BatchObserver>,
}

/// The queue and worker threads of one model version.
pub struct Batcher {
    shared: Arc<Shared>,
}

impl Batcher {
    /// Starts one worker thread per engine in `engines`.
    pub fn start(
        name: &str,
        engines: Arc<Vec<Box<dyn Engine>>>,
        max_batch_size: u32,
        config: &DynamicBatching,
        observer: Option<BatchObserver>,
    ) -> std::io::Result<Batcher> {
        let max_rows = max_batch_size.max(1) as usize;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                pending: VecDeque::new(),
                closed: false,
            }),
            wake: Condvar::new(),
            max_rows,
            target_rows: config
                .preferred_batch_size
                .last()
                .map_or(max_rows, |&p| p as usize),
            max_delay: Duration::from_micros(config.max_queue_delay_us),
            max_queue: config.max_queue_size as usize,
            observer,
        });
        for i in 0..engines.len() {
            let (shared, engines) = (Arc::clone(&shared), Arc::clone(&engines));
            std::thread::Builder::new()
                .name(format!("batch-{name}-{i}"))
                .spawn(move || worker(&shared, engines[i].as_ref()))?;
        }
        Ok(Batcher { shared })
    }
}

impl Scheduler for Batcher {
    /// Queues validated `inputs` (model order) holding `rows` rows for a worker, whoever the
    /// caller is. Refuses at once with [`SchedulerError::QueueFull`] when `max_queue_size`
    /// requests already wait.
    fn submit(
        &self,
        inputs: Vec<Tensor>,
        rows: usize,
        _caller: Caller,
    ) -> Result<Ticket, SchedulerError> {
        let (reply, rx) = oneshot::channel();
        let mut q = lock(&self.shared.queue);
        if self.shared.max_queue > 0 && q.pending.len() >= self.shared.max_queue {
            return Err(SchedulerError::QueueFull(format!(
                "queue full: {} requests are already waiting (max_queue_size {})",
                q.pending.len(),
                self.shared.max_queue
            )));
        }
        q.pending.push_back(Pending {
            inputs,
            rows,
            enqueued: Instant::now(),
            reply,
        });
        drop(q);
        self.shared.wake.notify_one();
        Ok(Ticket::waiting(rx))
    }

    fn queued(&self) -> usize {
        lock(&self.shared.queue).pending.len()
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.wake.notify_all();
    }
}

fn lock(m: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    // Workers never panic while holding the lock (no user code runs under it).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn worker(shared: &Shared, engine: &dyn Engine) {
    while let Some(batch) = next_batch(shared) {
        run_batch(engine, batch);
    }
}

/// Waits for the oldest request, then gathers more until the target size, the next request
/// does not fit, or the oldest has waited `max_delay`. `None` once the batcher is dropped.
fn next_batch(shared: &Shared) -> Option<Vec<Pending>> {
    let mut q = lock(&shared.queue);
    loop {
        drop_abandoned(&mut q.pending);
        if !q.pending.is_empty() {
            break;
        }
        if q.closed {
            return None;
        }
        q = shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
    }
    let deadline = q.pending[0].enqueued + shared.max_delay;
    let mut batch = Vec::new();
    let mut rows = 0;
    loop {
        drop_abandoned(&mut q.pending);
        while let Some(next) = q.pending.front() {
            if !batch.is_empty() && rows + next.rows > shared.max_rows {
                break;
            }
            rows += next.rows;
            batch.extend(q.pending.pop_front());
            if rows >= shared.target_rows {
                break;
            }
        }
        let full = rows >= shared.target_rows
            || q.pending
                .front()
                .is_some_and(|n| rows + n.rows > shared.max_rows);
        let now = Instant::now();
        if full || now >= deadline || q.closed {
            break;
        }
        q = shared
            .wake
            .wait_timeout(q, deadline - now)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    let depth = q.pending.len();
    drop(q);
    if let Some(observe) = &shared.observer {
        observe(rows, depth);
    }
    Some(batch)
}

/// Requests whose caller went away (the receiver was dropped) are not worth running.
fn drop_abandoned(pending: &mut VecDeque<Pending>) {
    pending.retain(|p| !p.reply.is_closed());
}

fn run_batch(engine: &dyn Engine, batch: Vec<Pending>) {
    let started = Instant::now();
    let rows: Vec<usize> = batch.iter().map(|p| p.rows).collect();
    let total: usize = rows.iter().sum();
    let mut replies = Vec::with_capacity(batch.len());
    let mut columns: Vec<Vec<Tensor>> = Vec::new();
    for p in batch {
        for (i, t) in p.inputs.into_iter().enumerate() {
            if columns.len() <= i {
                columns.push(Vec::with_capacity(rows.len()));
            }
            columns[i].push(t);
        }
        replies.push((p.reply, started - p.enqueued));
    }
    let outcome = columns
        .into_iter()
        .map(Tensor::concat0)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SchedulerError::Internal(format!("cannot form a batch: {e}")))
        .and_then(|inputs| engine.run(inputs).map_err(SchedulerError::from));
    let compute = started.elapsed();
    let split = outcome.and_then(|outputs| {
        outputs
            .into_iter()
            .map(|o| o.split0(&rows))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SchedulerError::Internal(format!("cannot split the batch's outputs: {e}")))
    });
    match split {
        Ok(per_output) => {
            // per_output[o][r]: output o's rows for request r.
            let mut per_request: Vec<Vec<Tensor>> =
                (0..replies.len()).map(|_| Vec::new()).collect();
            for pieces in per_output {
                for (r, piece) in pieces.into_iter().enumerate() {
                    per_request[r].push(piece);
                }
            }
            for (i, ((reply, queue), outputs)) in replies.into_iter().zip(per_request).enumerate() {
                let result = BatchResult {
                    outputs,
                    queue,
                    compute,
                    batch_rows: total,
                    first: i == 0,
                };
                let _ = reply.send(Ok(result));
            }
        }
        Err(e) => {
            for (reply, _) in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
