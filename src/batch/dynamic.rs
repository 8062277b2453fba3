//! The dynamic batcher (Triton's semantics).
//!
//! Requests (each already validated, each with its own batch dimension ≥ 1) wait in one
//! queue. Worker threads ([`threads_for`] the engine instances: one per instance, or one per
//! core for engines that run requests concurrently) take the oldest request, gather more for
//! at most `max_queue_delay` until the batch's goal is reached or the next request would not
//! fit, concatenate along dimension 0, run the engine once and split the outputs back
//! exactly. The goal is the largest preferred batch size (or `max_batch_size`) unless the
//! batch sizes measured so far ([`BatchSizes`]) say a smaller batch costs less per row: then
//! a worker takes fewer rows and leaves the rest to the others, so batching never runs
//! slower than running each request alone would. Without a queue delay, where instances run
//! requests concurrently, the goal is also bounded by the batch's share of the queued rows
//! among the idle workers, so that one worker does not run on one core what others could
//! run beside it. Batches never gather more rows than the engine runs well
//! ([`Engine::rows_per_run`]). A full queue refuses at once; a request whose caller went away
//! is dropped before it runs.
//!
//! Without a queue delay, when no batch is being gathered, an instance is free (an engine
//! that runs requests concurrently always is; of those that run a request at a time, one
//! must be idle, with fewer runs in progress than instances) and the request's measured
//! cost fits [`super::INLINE_BUDGET`], an async caller's request runs on the caller's
//! thread, as [`super::Direct`] does, since the handoff would cost more than the run (run
//! alone, it is answered at once, with no reply channel) — together with
//! every request still queued when they all fit one batch of the size that pays within that
//! budget (the caller batches for the workers). When they do not, it runs alone if that
//! delays none of them (instances that run concurrently, one priority level: the workers
//! run the queued ones meanwhile), else it is queued behind them.
//!
//! Queue policy (Triton's `default_queue_policy` and `priority_levels`): requests wait in one
//! queue per priority level and are taken highest priority (level 1) first, oldest first
//! within a level. A request past its timeout never reaches the engine: it is refused
//! (`reject`) or moved behind every request still in time (`delay`).

use super::cost::{batch_rows, threads_for, BatchSizes, Cost};
use super::instances::{Held, Instances};
use super::{
    BatchObserver, BatchResult, Caller, RequestOptions, Scheduler, SchedulerError, Ticket,
};
use crate::engine::Engine;
use crate::registry::config::{DynamicBatching, TimeoutAction};
use crate::tensor::Tensor;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

struct Pending {
    inputs: Vec<Tensor>,
    rows: usize,
    /// Input elements, the measure of its cost.
    elements: u64,
    enqueued: Instant,
    /// When the request times out in the queue, if it has a timeout.
    expires: Option<Instant>,
    reply: Reply,
}

type Reply = oneshot::Sender<Result<BatchResult, SchedulerError>>;

struct Queue {
    /// One queue per priority level, highest priority (level 1) first; then the requests
    /// whose timeout expired under the `delay` action.
    levels: Vec<VecDeque<Pending>>,
    closed: bool,
    /// Whether a worker is gathering a batch: one at a time, so a request arriving within
    /// `max_queue_delay` joins that batch rather than starting another on an idle worker.
    gathering: bool,
    sizes: BatchSizes,
}

impl Queue {
    fn len(&self) -> usize {
        self.levels.iter().map(VecDeque::len).sum()
    }

    /// The request a batch takes next: the oldest of the highest non-empty priority.
    fn front(&self) -> Option<&Pending> {
        self.levels.iter().find_map(VecDeque::front)
    }

    fn pop_front(&mut self) -> Option<Pending> {
        self.levels.iter_mut().find_map(VecDeque::pop_front)
    }
}

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes an idle worker to start a batch.
    wake: Condvar,
    /// Wakes the gathering worker: more requests arrived.
    more: Condvar,
    max_rows: usize,
    /// Rows worth waiting for.
    target_rows: usize,
    max_delay: Duration,
    max_queue: usize,
    observer: Option<BatchObserver>,
    /// Priority levels (at least 1); requests that name none get `default_level`.
    levels: u32,
    default_level: u32,
    /// The queue policy's timeout for every request, and whether a request may shorten it.
    timeout: Option<Duration>,
    allow_override: bool,
    action: TimeoutAction,
    /// Engine runs in progress (batches and inline requests); for instances that run one
    /// request at a time, raised only under the queue's lock.
    running: AtomicUsize,
    /// The queue's length, stored under its lock whenever it changes: read without the lock
    /// by the inline path where requests [`Shared::may_overtake`].
    waiting: AtomicUsize,
    /// Worker threads ([`threads_for`] the instances).
    workers: usize,
    cost: Cost,
    /// Held for each run when they run one request at a time, so a request run inline and a
    /// worker's batch never share one.
    instances: Instances,
}

/// What one engine run took: its rows and compute time.
struct Ran {
    rows: usize,
    compute: Duration,
}

/// The queue and worker threads of one model version.
pub struct Batcher {
    shared: Arc<Shared>,
}

impl Batcher {
    /// Starts [`threads_for`] `engines` worker threads, taking the engines in turn.
    pub fn start(
        name: &str,
        engines: Arc<Vec<Box<dyn Engine>>>,
        max_batch_size: u32,
        config: &DynamicBatching,
        observer: Option<BatchObserver>,
    ) -> std::io::Result<Batcher> {
        // Rows beyond what every instance runs well (Engine::rows_per_run) are not gathered.
        let max_rows = batch_rows(&engines, max_batch_size);
        if max_rows < max_batch_size as usize {
            tracing::info!(
                "{name}: dynamic batches gather at most {max_rows} rows (max_batch_size \
                 {max_batch_size}): the engine runs more rows at once no faster per row, or \
                 only with another copy of the model; a request of more rows runs in parts \
                 of {max_rows}"
            );
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                levels: (0..=config.priority_levels.max(1))
                    .map(|_| VecDeque::new())
                    .collect(),
                closed: false,
                gathering: false,
                sizes: BatchSizes::new(max_rows),
            }),
            wake: Condvar::new(),
            more: Condvar::new(),
            max_rows,
            target_rows: config
                .preferred_batch_size
                .last()
                .map_or(max_rows, |&p| p as usize)
                .min(max_rows),
            max_delay: Duration::from_micros(config.max_queue_delay_us),
            max_queue: config.max_queue_size as usize,
            observer,
            levels: config.priority_levels.max(1),
            default_level: config.default_priority_level.max(1),
            timeout: (config.queue_policy.default_timeout_us > 0)
                .then(|| Duration::from_micros(config.queue_policy.default_timeout_us)),
            allow_override: config.queue_policy.allow_timeout_override,
            action: config.queue_policy.timeout_action,
            running: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            workers: threads_for(&engines),
            cost: Cost::default(),
            instances: Instances::new(Arc::clone(&engines)),
        });
        for i in 0..shared.workers {
            let shared = Arc::clone(&shared);
            let engine = i % engines.len().max(1);
            std::thread::Builder::new()
                .name(format!("batch-{name}-{i}"))
                .spawn(move || worker(&shared, engine))?;
        }
        Ok(Batcher { shared })
    }
}

impl Scheduler for Batcher {
    /// Queues validated `inputs` (model order) holding `rows` rows for a worker — or runs
    /// them on an async caller's thread when nothing is queued and they fit the inline
    /// budget (see the module's documentation). Refuses at once with [`SchedulerError::QueueFull`] when `max_queue_size`
    /// requests already wait.
    fn submit(
        &self,
        inputs: Vec<Tensor>,
        rows: usize,
        caller: Caller,
        options: &RequestOptions,
    ) -> Result<Ticket, SchedulerError> {
        let shared = &self.shared;
        let level = match options.priority {
            0 => shared.default_level,
            p if p <= shared.levels => p,
            p => {
                return Err(SchedulerError::Invalid(format!(
                "priority {p} is not a priority level of this model (1 to {}; 1 is the highest)",
                shared.levels
            )))
            }
        };
        let timeout = match (shared.timeout, options.timeout) {
            (Some(policy), Some(asked)) if shared.allow_override => Some(policy.min(asked)),
            (None, Some(asked)) if shared.allow_override => Some(asked),
            (policy, _) => policy,
        };
        let enqueued = Instant::now();
        let elements = inputs.iter().map(|t| t.data().len() as u64).sum();
        // A queue delay asks for requests to wait for company: never inline then.
        let inline = caller == Caller::Async
            && shared.max_delay.is_zero()
            && shared.cost.fits_inline(elements);
        if inline && shared.may_overtake() && shared.waiting.load(Ordering::Relaxed) == 0 {
            // Nothing queued to batch with: run it as Direct would, without the lock.
            if let Some((engine, busy)) = shared.instances.idle_from(0) {
                shared.running.fetch_add(1, Ordering::Relaxed);
                let result = run_alone(shared, engine, busy, inputs, rows, elements, enqueued);
                return Ok(Ticket::ready(result));
            }
        }
        let mut q = lock(&shared.queue);
        let instance = if inline && !q.gathering && !q.closed {
            shared.free_instance()
        } else {
            None
        };
        let queued = match instance {
            Some(_) => shared.take_all_inline(&mut q, rows, elements),
            None => None,
        };
        // The request as queued or batched, and where its answer comes.
        let own = |inputs| {
            let (reply, rx) = oneshot::channel();
            let pending = Pending {
                inputs,
                rows,
                elements,
                enqueued,
                expires: timeout.map(|t| enqueued + t),
                reply,
            };
            (pending, rx)
        };
        if let (Some((engine, busy)), Some(mut batch)) = (instance, queued) {
            shared.running.fetch_add(1, Ordering::Relaxed);
            drop(q);
            if batch.is_empty() {
                let result = run_alone(shared, engine, busy, inputs, rows, elements, enqueued);
                return Ok(Ticket::ready(result));
            }
            let (pending, rx) = own(inputs);
            batch.push(pending);
            shared.ran_inline(run_batch(shared, engine, busy, batch));
            return Ok(Ticket::waiting(rx));
        }
        let waiting = q.len();
        if shared.max_queue > 0 && waiting >= shared.max_queue {
            return Err(SchedulerError::QueueFull(format!(
                "queue full: {waiting} requests are already waiting (max_queue_size {})",
                shared.max_queue
            )));
        }
        let (pending, rx) = own(inputs);
        q.levels[level as usize - 1].push_back(pending);
        shared.publish(&q);
        let gathering = q.gathering;
        drop(q);
        if gathering {
            self.shared.more.notify_one();
        } else {
            self.shared.wake.notify_one();
        }
        Ok(Ticket::waiting(rx))
    }

    fn queued(&self) -> usize {
        lock(&self.shared.queue).len()
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.wake.notify_all();
        self.shared.more.notify_all();
    }
}

fn lock(m: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    // Workers never panic while holding the lock (no user code runs under it).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Stores the queue's length for the lock-free inline path.
    fn publish(&self, q: &Queue) {
        self.waiting.store(q.len(), Ordering::Relaxed);
    }

    /// Records a run made on a caller's thread: its batch size's cost when the queue's lock
    /// is free (a sample lost under contention costs less than waiting), and the observer.
    fn ran_inline(&self, ran: Ran) {
        if let Ok(mut q) = self.queue.try_lock() {
            q.sizes.record(ran.rows, ran.compute);
        }
        if let Some(observe) = &self.observer {
            observe(ran.rows, 0);
        }
    }

    /// An instance a request may run on now, held if need be: the first engine when they run
    /// requests concurrently; else an idle one, when fewer runs are in progress (batches
    /// being gathered included) than there are instances, so that no batch about to run is
    /// left waiting for one. Called under the queue's lock.
    fn free_instance(&self) -> Option<(&dyn Engine, Held<'_>)> {
        if !self.instances.concurrent()
            && self.running.load(Ordering::Relaxed) >= self.instances.engines().len()
        {
            return None;
        }
        self.instances.idle_from(0)
    }

    /// Every request still queued, taken (oldest of the highest priority first) to run in
    /// one batch with a new request of `rows` rows and `elements` input elements on the
    /// async caller's thread — when they all fit one batch of the size that pays
    /// ([`BatchSizes::goal`]) within [`super::INLINE_BUDGET`]. Else the queue is left to the
    /// workers: the new request runs alone (none taken) where that delays no queued one
    /// (instances that run concurrently, one priority level), or is queued too (`None`).
    /// Called under the queue's lock, with an instance free.
    fn take_all_inline(&self, q: &mut Queue, rows: usize, elements: u64) -> Option<Vec<Pending>> {
        expire(self, q);
        if q.len() == 0 {
            return Some(Vec::new());
        }
        let (total_rows, total_elements) = q
            .levels
            .iter()
            .flatten()
            .fold((rows, elements), |(r, e), p| (r + p.rows, e + p.elements));
        if total_rows <= self.max_rows
            && total_rows <= q.sizes.goal(self.target_rows)
            && self.cost.fits_inline(total_elements)
        {
            let all = std::iter::from_fn(|| q.pop_front()).collect();
            self.publish(q);
            return Some(all);
        }
        // Rather than queueing behind a queue that would never drain.
        self.may_overtake().then(Vec::new)
    }

    /// Whether a request may run on the caller's thread ahead of queued ones: when instances
    /// run concurrently (it takes nothing from them: the workers run them meanwhile) and
    /// there is one priority level (it passes none of a higher one).
    fn may_overtake(&self) -> bool {
        self.instances.concurrent() && self.levels == 1
    }

    /// The most rows a batch starting now should take so that it leaves work to the other
    /// workers: with instances that run concurrently and no queue delay, the queued rows
    /// shared among the workers not running a batch, this one included — one worker taking
    /// them all would run them on one core while others idle. Otherwise no bound. Called
    /// under the queue's lock, with this batch counted in `running`.
    fn share(&self, q: &Queue) -> usize {
        if !self.max_delay.is_zero() || !self.instances.concurrent() {
            return usize::MAX;
        }
        let others = self.running.load(Ordering::Relaxed).saturating_sub(1);
        let free = self.workers.saturating_sub(others).max(1);
        let rows: usize = q.levels.iter().flatten().map(|p| p.rows).sum();
        rows.div_ceil(free).max(1)
    }
}

fn worker(shared: &Shared, engine: usize) {
    let mut last = None;
    while let Some(batch) = next_batch(shared, last.take()) {
        // Its own instance may be running a request inline while another is idle.
        let (engine, held) = shared
            .instances
            .idle_from(engine)
            .unwrap_or_else(|| shared.instances.hold(engine));
        last = Some(run_batch(shared, engine, held, batch));
    }
}

/// Records the worker's `last` run, waits for a request, then gathers more (highest
/// priority first) until the batch's goal, the next request does not fit, or the first one
/// has waited `max_delay`. Counts the batch as running from its first request on (so no
/// request runs inline on an instance a batch is about to take). `None` once the batcher is
/// dropped.
fn next_batch(shared: &Shared, last: Option<Ran>) -> Option<Vec<Pending>> {
    let mut q = lock(&shared.queue);
    if let Some(ran) = last {
        q.sizes.record(ran.rows, ran.compute);
    }
    loop {
        let next_expiry = expire(shared, &mut q);
        if q.len() == 0 || q.gathering {
            if q.closed {
                return None;
            }
            q = match next_expiry {
                Some(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    shared
                        .wake
                        .wait_timeout(q, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => shared.wake.wait(q).unwrap_or_else(|p| p.into_inner()),
            };
            continue;
        }
        shared.running.fetch_add(1, Ordering::Relaxed);
        q.gathering = true;
        let deadline = q.front().map_or_else(Instant::now, |p| p.enqueued) + shared.max_delay;
        let target = shared.target_rows.min(shared.share(&q));
        let goal = q.sizes.goal(target);
        let mut batch = Vec::new();
        let mut rows = 0;
        loop {
            expire(shared, &mut q);
            while let Some(next) = q.front() {
                if !batch.is_empty() && rows + next.rows > shared.max_rows {
                    break;
                }
                rows += next.rows;
                batch.extend(q.pop_front());
                if rows >= goal {
                    break;
                }
            }
            let full = rows >= goal || q.front().is_some_and(|n| rows + n.rows > shared.max_rows);
            let now = Instant::now();
            if full || now >= deadline || q.closed {
                break;
            }
            q = shared
                .more
                .wait_timeout(q, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        q.gathering = false;
        shared.publish(&q);
        if q.len() > 0 {
            shared.wake.notify_one();
        }
        if batch.is_empty() {
            // Every request gathered expired or went away meanwhile.
            shared.running.fetch_sub(1, Ordering::Relaxed);
            continue;
        }
        let depth = q.len();
        drop(q);
        if let Some(observe) = &shared.observer {
            observe(rows, depth);
        }
        return Some(batch);
    }
}

/// Drops requests whose caller went away, and applies the timeout action to those past
/// their timeout: refused at once, or moved behind every request still in time. Returns the
/// earliest timeout still to come.
fn expire(shared: &Shared, q: &mut Queue) -> Option<Instant> {
    let now = Instant::now();
    let delayed = q.levels.len() - 1;
    let mut late = Vec::new();
    for level in &mut q.levels[..delayed] {
        level.retain(|p| !p.reply.is_closed());
        if level.iter().any(|p| p.expires.is_some_and(|at| at <= now)) {
            let (over, kept): (VecDeque<Pending>, VecDeque<Pending>) = level
                .drain(..)
                .partition(|p| p.expires.is_some_and(|at| at <= now));
            *level = kept;
            late.extend(over);
        }
    }
    q.levels[delayed].retain(|p| !p.reply.is_closed());
    for mut p in late {
        match shared.action {
            TimeoutAction::Reject => {
                let waited = now - p.enqueued;
                let _ = p.reply.send(Err(SchedulerError::TimedOut(format!(
                    "the request timed out after waiting {} ms in the queue (queue policy timeout)",
                    waited.as_millis()
                ))));
            }
            TimeoutAction::Delay => {
                p.expires = None;
                q.levels[delayed].push_back(p);
            }
        }
    }
    shared.publish(q);
    q.levels[..delayed]
        .iter()
        .flat_map(|l| l.iter().filter_map(|p| p.expires))
        .min()
}

/// Runs `batch` on `engine` (held by `busy` if need be) as one engine run (counted in
/// `running`, which it ends) and answers each request with its rows.
fn run_batch(shared: &Shared, engine: &dyn Engine, busy: Held<'_>, batch: Vec<Pending>) -> Ran {
    let started = Instant::now();
    let single = batch.len() == 1;
    let rows: Vec<usize> = batch.iter().map(|p| p.rows).collect();
    let elements = batch.iter().map(|p| p.elements).sum();
    let mut replies = Vec::with_capacity(batch.len());
    let inputs = if single {
        batch.into_iter().next().map_or_else(Vec::new, |p| {
            replies.push((p.reply, started - p.enqueued));
            p.inputs
        })
    } else {
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
        match columns.into_iter().map(Tensor::concat0).collect() {
            Ok(inputs) => inputs,
            Err(e) => {
                let e = SchedulerError::Internal(format!("cannot form a batch: {e}"));
                return end_run(shared, busy, replies, Err(e), &rows, started, elements);
            }
        }
    };
    let outcome = engine
        .run_rows(inputs, rows.iter().sum())
        .map_err(SchedulerError::from);
    end_run(shared, busy, replies, outcome, &rows, started, elements)
}

/// Runs one request on the caller's thread, on `engine` (held by `busy` if need be; the run
/// counted in `running`, which it ends), and answers it: no batch to form, no reply channel.
fn run_alone(
    shared: &Shared,
    engine: &dyn Engine,
    busy: Held<'_>,
    inputs: Vec<Tensor>,
    rows: usize,
    elements: u64,
    enqueued: Instant,
) -> Result<BatchResult, SchedulerError> {
    let started = Instant::now();
    let outcome = engine.run_rows(inputs, rows).map_err(SchedulerError::from);
    let ran = end_of_run(shared, busy, started, elements, rows);
    let compute = ran.compute;
    shared.ran_inline(ran);
    outcome.map(|outputs| BatchResult {
        outputs,
        queue: started - enqueued,
        compute,
        batch_rows: rows,
        first: true,
    })
}

/// Ends the run of `rows` rows and `elements` input elements that `started`: lets its
/// instance go and counts it out of `running` — before any answer, so a caller answered can
/// find the model idle — and records its cost.
fn end_of_run(
    shared: &Shared,
    busy: Held<'_>,
    started: Instant,
    elements: u64,
    rows: usize,
) -> Ran {
    let compute = started.elapsed();
    drop(busy);
    shared.running.fetch_sub(1, Ordering::Relaxed);
    shared.cost.record(elements, compute);
    Ran { rows, compute }
}

/// Ends the run that `started` (letting its instance go) and answers each request of
/// `replies` with its `rows` of `outcome`.
fn end_run(
    shared: &Shared,
    busy: Held<'_>,
    replies: Vec<(Reply, Duration)>,
    outcome: Result<Vec<Tensor>, SchedulerError>,
    rows: &[usize],
    started: Instant,
    elements: u64,
) -> Ran {
    let single = replies.len() == 1;
    let total: usize = rows.iter().sum();
    let ran = end_of_run(shared, busy, started, elements, total);
    let compute = ran.compute;
    if single {
        // One request's outputs are its own, whatever their first dimension.
        if let Some((reply, queue)) = replies.into_iter().next() {
            let _ = reply.send(outcome.map(|outputs| BatchResult {
                outputs,
                queue,
                compute,
                batch_rows: total,
                first: true,
            }));
        }
        return ran;
    }
    let split = outcome.and_then(|outputs| {
        outputs
            .into_iter()
            .map(|o| o.split0(rows))
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
    ran
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::{batching, doubler, engines};

    fn queue_rows(q: &mut Queue, rows: &[usize]) {
        for &rows in rows {
            q.levels[0].push_back(Pending {
                inputs: vec![],
                rows,
                elements: 0,
                enqueued: Instant::now(),
                expires: None,
                reply: oneshot::channel().0,
            });
        }
    }

    /// Without a queue delay, a batch of a concurrent engine takes its share of the queued
    /// rows among the workers not running one (rounded up); all of them when the others are
    /// busy; and any number under a queue delay (which asks for batches).
    #[test]
    fn a_batch_leaves_their_share_of_the_queue_to_idle_workers() {
        let start = |delay_us| {
            let (instances, _) = engines([doubler(Duration::ZERO, true)]);
            Batcher::start("t", instances, 8, &batching(delay_us, 0), None).unwrap()
        };
        let b = start(0);
        let shared = &b.shared;
        let workers = shared.workers;
        let mut q = lock(&shared.queue);
        queue_rows(&mut q, &[1, 1, 2, 1, 3]);
        shared.running.store(1, Ordering::Relaxed);
        assert_eq!(shared.share(&q), 8usize.div_ceil(workers));
        shared.running.store(workers, Ordering::Relaxed);
        assert_eq!(shared.share(&q), 8);
        shared.running.store(workers + 3, Ordering::Relaxed);
        assert_eq!(shared.share(&q), 8);
        q.levels[0].clear();
        assert_eq!(shared.share(&q), 1);
        shared.running.store(0, Ordering::Relaxed);
        drop(q);

        let b = start(100);
        let mut q = lock(&b.shared.queue);
        queue_rows(&mut q, &[1, 1]);
        b.shared.running.store(1, Ordering::Relaxed);
        assert_eq!(b.shared.share(&q), usize::MAX);
        q.levels[0].clear();
        b.shared.running.store(0, Ordering::Relaxed);
    }
}
