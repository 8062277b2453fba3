//! Both schedulers against a stand-in engine: no model files, no metrics exporter.

use super::*;
use crate::engine::{Backend, Dim, Engine, TensorSpec};
use crate::registry::config::{DynamicBatching, QueuePolicy, TimeoutAction};

const NONE: RequestOptions = RequestOptions {
    priority: 0,
    timeout: None,
};
use crate::tensor::{DataType, TensorData};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Doubles its one FP32 input; records the rows of each run; takes `delay` per run; runs one
/// request at a time when not `concurrent` (and then counts overlapping runs).
pub(super) struct Doubler {
    specs: Vec<TensorSpec>,
    runs: Mutex<Vec<usize>>,
    /// The first input value of each run.
    firsts: Mutex<Vec<f32>>,
    delay: Duration,
    /// Whether a run of n rows takes `delay` × n² (batching costs more per row) instead of
    /// `delay`.
    squared: bool,
    concurrent: bool,
    /// What [`Engine::rows_per_run`] answers.
    rows_per_run: Option<usize>,
    running: AtomicUsize,
    overlapped: AtomicUsize,
    /// The thread of each run.
    threads: Mutex<Vec<std::thread::ThreadId>>,
    /// Runs whose first input value is negative wait while a test holds this.
    gate: Mutex<()>,
}

/// The engine as a scheduler holds it, sharing the [`Doubler`] with the test.
struct Handle(Arc<Doubler>);

pub(super) fn doubler(delay: Duration, concurrent: bool) -> (Box<dyn Engine>, Arc<Doubler>) {
    doubler_with(delay, false, concurrent)
}

fn doubler_with(
    delay: Duration,
    squared: bool,
    concurrent: bool,
) -> (Box<dyn Engine>, Arc<Doubler>) {
    let d = Arc::new(Doubler {
        specs: vec![TensorSpec {
            name: "x".into(),
            dtype: DataType::F32,
            shape: vec![Dim::Dynamic, Dim::Fixed(2)],
        }],
        runs: Mutex::new(Vec::new()),
        firsts: Mutex::new(Vec::new()),
        delay,
        squared,
        concurrent,
        rows_per_run: None,
        running: AtomicUsize::new(0),
        overlapped: AtomicUsize::new(0),
        threads: Mutex::new(Vec::new()),
        gate: Mutex::new(()),
    });
    (Box::new(Handle(Arc::clone(&d))), d)
}

pub(super) type Instances = Arc<Vec<Box<dyn Engine>>>;

pub(super) fn engines(
    list: impl IntoIterator<Item = (Box<dyn Engine>, Arc<Doubler>)>,
) -> (Instances, Vec<Arc<Doubler>>) {
    let (engines, doublers): (Vec<_>, Vec<_>) = list.into_iter().unzip();
    (Arc::new(engines), doublers)
}

impl Engine for Handle {
    fn backend(&self) -> Backend {
        Backend::Tract
    }

    fn inputs(&self) -> &[TensorSpec] {
        &self.0.specs
    }

    fn outputs(&self) -> &[TensorSpec] {
        &self.0.specs
    }

    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
        self.0.run(inputs)
    }

    fn concurrent(&self) -> bool {
        self.0.concurrent
    }

    fn rows_per_run(&self) -> Option<usize> {
        self.0.rows_per_run
    }
}

impl Doubler {
    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
        if self.running.fetch_add(1, Ordering::SeqCst) > 0 && !self.concurrent {
            self.overlapped.fetch_add(1, Ordering::SeqCst);
        }
        if let TensorData::F32(v) = inputs[0].data() {
            if v.first().is_some_and(|v| *v < 0.0) {
                drop(self.gate.lock());
            }
        }
        let n = inputs[0].shape()[0] as u32;
        std::thread::sleep(if self.squared {
            self.delay * n * n
        } else {
            self.delay
        });
        self.threads
            .lock()
            .unwrap()
            .push(std::thread::current().id());
        let x = &inputs[0];
        self.runs.lock().unwrap().push(x.shape()[0]);
        let TensorData::F32(v) = x.data() else {
            return Err(EngineError::Run("not FP32".into()));
        };
        self.firsts.lock().unwrap().extend(v.first());
        if v.iter().any(|v| v.is_nan()) {
            self.running.fetch_sub(1, Ordering::SeqCst);
            return Err(EngineError::Run("NaN refused".into()));
        }
        let y = Tensor::new(
            x.shape().to_vec(),
            TensorData::F32(v.iter().map(|v| v * 2.0).collect()),
        )
        .map_err(|e| EngineError::Run(e.to_string()));
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(vec![y?])
    }

    fn runs(&self) -> Vec<usize> {
        self.runs.lock().unwrap().clone()
    }
}

fn rows(start: f32, n: usize) -> Tensor {
    let data = (0..n * 2).map(|i| start + i as f32).collect();
    Tensor::new(vec![n, 2], TensorData::F32(data)).unwrap()
}

fn doubled(t: &Tensor) -> Vec<f32> {
    match t.data() {
        TensorData::F32(v) => v.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn direct_runs_blocking_callers_on_their_own_thread() {
    let (engines, d) = engines([doubler(Duration::ZERO, true)]);
    let direct = Direct::new("t", engines, true);
    let ticket = direct
        .submit(vec![rows(1.0, 2)], 2, Caller::Blocking, &NONE)
        .unwrap();
    // The work is done before submit returns: nothing is left waiting.
    assert_eq!(direct.queued(), 0);
    let r = ticket.wait_blocking().unwrap();
    assert_eq!(doubled(&r.outputs[0]), vec![2.0, 4.0, 6.0, 8.0]);
    assert_eq!((r.batch_rows, r.first), (2, true));
    assert_eq!(d[0].runs(), vec![2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_keeps_async_callers_off_the_executor_and_prefers_idle_instances() {
    let delay = Duration::from_millis(50);
    let (engines, doublers) = engines([doubler(delay, false), doubler(delay, false)]);
    let direct = Direct::new("t", engines, true);
    let started = Instant::now();
    let tickets: Vec<_> = (0..4)
        .map(|i| {
            direct
                .submit(vec![rows(i as f32, 1)], 1, Caller::Async, &NONE)
                .unwrap()
        })
        .collect();
    let mut queued = Vec::new();
    for (i, t) in tickets.into_iter().enumerate() {
        let r = t.wait().await.unwrap();
        assert_eq!(
            doubled(&r.outputs[0]),
            vec![2.0 * i as f32, 2.0 * i as f32 + 2.0]
        );
        queued.push(r.queue);
    }
    // Two instances, one request each at a time: four 50 ms runs take two rounds, never
    // overlap on one instance, and the second round's wait is queue time.
    let elapsed = started.elapsed();
    assert!(elapsed >= delay * 2, "{elapsed:?}");
    for d in doublers {
        assert_eq!(d.overlapped.load(Ordering::SeqCst), 0);
        assert_eq!(d.runs().len(), 2);
    }
    assert!(
        queued.iter().filter(|q| **q >= delay / 2).count() >= 2,
        "{queued:?}"
    );
    assert_eq!(direct.queued(), 0);
}

/// Work measured to fit the inline budget runs on the async caller's thread (no handoff),
/// but only after enough runs are measured and never for a request larger than those
/// measured; slow work is always handed off.
#[tokio::test(flavor = "current_thread")]
async fn direct_runs_small_measured_work_inline_and_the_rest_off_the_executor() {
    let here = std::thread::current().id();
    let (instances, d) = engines([doubler(Duration::ZERO, true)]);
    let direct = Direct::new("t", instances, true);
    let call = |n: usize| {
        let direct = direct.clone();
        async move {
            direct
                .submit(vec![rows(1.0, n)], n, Caller::Async, &NONE)
                .unwrap()
                .wait()
                .await
                .unwrap()
        }
    };
    for _ in 0..32 {
        call(2).await;
    }
    let threads = d[0].threads.lock().unwrap().clone();
    assert!(
        threads.iter().all(|t| *t != here),
        "unmeasured work ran inline"
    );
    let r = call(2).await;
    assert_eq!(doubled(&r.outputs[0]), vec![2.0, 4.0, 6.0, 8.0]);
    assert_eq!(
        d[0].threads.lock().unwrap().last(),
        Some(&here),
        "measured small work is inline"
    );
    call(3).await;
    assert_ne!(
        d[0].threads.lock().unwrap().last(),
        Some(&here),
        "a request larger than any measured is handed off"
    );

    let (instances, slow) = engines([doubler(Duration::from_micros(200), true)]);
    let direct = Direct::new("t", instances, true);
    for _ in 0..40 {
        direct
            .submit(vec![rows(1.0, 1)], 1, Caller::Async, &NONE)
            .unwrap()
            .wait()
            .await
            .unwrap();
    }
    assert!(
        slow[0].threads.lock().unwrap().iter().all(|t| *t != here),
        "slow work ran inline"
    );
    assert_eq!(direct.queued(), 0);
}

#[test]
fn direct_engine_failures_are_internal() {
    let direct = Direct::new("t", engines([doubler(Duration::ZERO, true)]).0, true);
    let nan = Tensor::new(vec![1, 2], TensorData::F32(vec![f32::NAN, 1.0])).unwrap();
    let e = direct
        .submit(vec![nan], 1, Caller::Blocking, &NONE)
        .unwrap()
        .wait_blocking()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal);
    assert_eq!(e.to_string(), "inference failed: NaN refused");
}

pub(super) fn batching(delay_us: u64, max_queue_size: u32) -> DynamicBatching {
    DynamicBatching {
        max_queue_delay_us: delay_us,
        preferred_batch_size: vec![],
        max_queue_size,
        priority_levels: 0,
        default_priority_level: 0,
        queue_policy: QueuePolicy::default(),
    }
}

#[test]
fn the_batcher_forms_batches_and_splits_them_back_exactly() {
    let (engines, d) = engines([doubler(Duration::ZERO, true)]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let observer: BatchObserver = {
        let seen = Arc::clone(&seen);
        Arc::new(move |rows, depth| seen.lock().unwrap().push((rows, depth)))
    };
    let batcher = Batcher::start("t", engines, 8, &batching(200_000, 0), Some(observer)).unwrap();
    // Requests of 1, 2 and 3 rows within the queue delay: one run of 6 rows.
    let tickets: Vec<_> = [(0.0, 1), (10.0, 2), (100.0, 3)]
        .into_iter()
        .map(|(start, n)| {
            let t = batcher.submit(vec![rows(start, n)], n, Caller::Blocking, &NONE);
            (start, n, t.unwrap())
        })
        .collect();
    let mut firsts = 0;
    for (start, n, t) in tickets {
        let r = t.wait_blocking().unwrap();
        let want: Vec<f32> = (0..n * 2).map(|i| 2.0 * (start + i as f32)).collect();
        assert_eq!(doubled(&r.outputs[0]), want);
        assert_eq!(r.outputs[0].shape(), &[n, 2]);
        assert_eq!(r.batch_rows, 6);
        firsts += usize::from(r.first);
    }
    assert_eq!(firsts, 1);
    assert_eq!(d[0].runs(), vec![6]);
    assert_eq!(*seen.lock().unwrap(), vec![(6, 0)]);
}

/// An engine that runs at most 2 rows well (tract where larger sizes have no plan): batches
/// gather no more, whatever `max_batch_size` and the queue delay allow; a request of more
/// rows runs in parts of 2, its outputs joined in order.
#[test]
fn batches_gather_no_more_rows_than_the_engine_runs_well() {
    // One instance that runs a request at a time: one worker, runs in order.
    let (engine, d) = doubler(Duration::ZERO, false);
    drop(engine);
    let d = Arc::new(Doubler {
        rows_per_run: Some(2),
        ..Arc::into_inner(d).unwrap()
    });
    let engines: Instances = Arc::new(vec![Box::new(Handle(Arc::clone(&d)))]);
    let batcher = Batcher::start("t", engines, 8, &batching(100_000, 0), None).unwrap();
    let tickets: Vec<_> = [(0.0, 1), (10.0, 1), (20.0, 1), (30.0, 3), (100.0, 1)]
        .into_iter()
        .map(|(start, n)| {
            let t = batcher.submit(vec![rows(start, n)], n, Caller::Blocking, &NONE);
            (start, n, t.unwrap())
        })
        .collect();
    for (start, n, t) in tickets {
        let r = t.wait_blocking().unwrap();
        let want: Vec<f32> = (0..n * 2).map(|i| 2.0 * (start + i as f32)).collect();
        assert_eq!(doubled(&r.outputs[0]), want);
    }
    assert_eq!(d.runs(), vec![2, 1, 2, 1, 1]);
}

#[test]
fn a_full_queue_refuses_at_once_as_unavailable() {
    let (engines, _) = engines([doubler(Duration::from_millis(300), false)]);
    let batcher = Batcher::start("t", engines, 1, &batching(0, 1), None).unwrap();
    let first = batcher
        .submit(vec![rows(0.0, 1)], 1, Caller::Async, &NONE)
        .unwrap();
    // Wait until the worker took the first request, then fill the one queue slot.
    let deadline = Instant::now() + Duration::from_secs(5);
    while batcher.queued() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let second = batcher
        .submit(vec![rows(0.0, 1)], 1, Caller::Async, &NONE)
        .unwrap();
    let refused = batcher
        .submit(vec![rows(0.0, 1)], 1, Caller::Async, &NONE)
        .err()
        .expect("the third request finds the queue full");
    assert_eq!(refused.kind(), ErrorKind::Unavailable);
    assert!(
        refused.to_string().contains("max_queue_size 1"),
        "{refused}"
    );
    drop((first, second));
}

/// A batcher of one instance taking one row at a time, whose engine takes `delay` per run,
/// with `priority_levels` and `policy`.
fn one_at_a_time(
    delay: Duration,
    priority_levels: u32,
    policy: QueuePolicy,
) -> (Batcher, Arc<Doubler>) {
    let (engines, d) = engines([doubler(delay, false)]);
    let config = DynamicBatching {
        priority_levels,
        default_priority_level: priority_levels,
        queue_policy: policy,
        ..batching(0, 0)
    };
    let batcher = Batcher::start("t", engines, 1, &config, None).unwrap();
    (batcher, Arc::clone(&d[0]))
}

/// Waits for every ticket; the first input value of each engine run, in run order.
fn run_order(d: &Doubler, tickets: Vec<Ticket>) -> Vec<f32> {
    for t in tickets {
        assert!(t.wait_blocking().is_ok());
    }
    d.firsts.lock().unwrap().clone()
}

/// Submits a one-row request whose values start at `start` once the engine is busy.
fn submit(b: &Batcher, start: f32, priority: u32, timeout_ms: Option<u64>) -> Ticket {
    let options = RequestOptions {
        priority,
        timeout: timeout_ms.map(Duration::from_millis),
    };
    b.submit(vec![rows(start, 1)], 1, Caller::Async, &options)
        .unwrap()
}

fn wait_until_taken(b: &Batcher) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.queued() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn higher_priority_requests_run_first() {
    let (b, d) = one_at_a_time(Duration::from_millis(60), 2, QueuePolicy::default());
    let busy = submit(&b, 0.0, 0, None);
    wait_until_taken(&b);
    let low = submit(&b, 10.0, 2, None);
    let default = submit(&b, 20.0, 0, None);
    let high = submit(&b, 30.0, 1, None);
    // The busy run, then level 1, then level 2 oldest first (the default level is 2).
    assert_eq!(
        run_order(&d, vec![busy, low, default, high]),
        vec![0.0, 30.0, 10.0, 20.0]
    );
    let e = b
        .submit(
            vec![rows(0.0, 1)],
            1,
            Caller::Async,
            &RequestOptions {
                priority: 3,
                timeout: None,
            },
        )
        .err()
        .expect("priority 3 of 2 levels");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[test]
fn timed_out_requests_never_reach_the_engine() {
    let policy = QueuePolicy {
        timeout_action: TimeoutAction::Reject,
        default_timeout_us: 30_000,
        allow_timeout_override: false,
    };
    let (b, d) = one_at_a_time(Duration::from_millis(120), 0, policy);
    let busy = submit(&b, 0.0, 0, None);
    wait_until_taken(&b);
    // Waits behind the busy run (120 ms), past its 30 ms timeout; a longer timeout asked
    // for is not honoured without allow_timeout_override.
    let late = submit(&b, 10.0, 0, Some(10_000));
    assert!(busy.wait_blocking().is_ok());
    let e = late.wait_blocking().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.to_string().contains("timed out"), "{e}");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(d.runs().len(), 1, "the timed-out request ran");
}

#[test]
fn delayed_requests_go_behind_those_in_time() {
    let policy = QueuePolicy {
        timeout_action: TimeoutAction::Delay,
        default_timeout_us: 0,
        allow_timeout_override: true,
    };
    let (b, d) = one_at_a_time(Duration::from_millis(80), 0, policy);
    let busy = submit(&b, 0.0, 0, None);
    wait_until_taken(&b);
    let hurried = submit(&b, 10.0, 0, Some(5));
    let patient = submit(&b, 20.0, 0, None);
    // The hurried request expired while the first ran: it runs after the patient one.
    assert_eq!(
        run_order(&d, vec![busy, hurried, patient]),
        vec![0.0, 20.0, 10.0]
    );
}

/// Submits `n` one-row requests at once to a batcher of `engine` (max batch 4), checks every answer is exactly its own rows doubled, and returns the rows of each
/// engine run in order.
fn batch_runs(engine: (Box<dyn Engine>, Arc<Doubler>), n: usize) -> Vec<usize> {
    let (engines, d) = engines([engine]);
    // The queue delay lets the first batch fill; later ones find the queue full enough.
    let batcher = Batcher::start("t", engines, 4, &batching(50_000, 0), None).unwrap();
    let tickets: Vec<_> = (0..n)
        .map(|i| {
            let start = 10.0 * i as f32;
            let t = batcher.submit(vec![rows(start, 1)], 1, Caller::Blocking, &NONE);
            (start, t.unwrap())
        })
        .collect();
    for (start, t) in tickets {
        let r = t.wait_blocking().unwrap();
        assert_eq!(doubled(&r.outputs[0]), vec![2.0 * start, 2.0 * start + 2.0]);
        assert_eq!(r.outputs[0].shape(), &[1, 2]);
    }
    let runs = d[0].runs();
    assert_eq!(runs.iter().sum::<usize>(), n);
    runs
}

/// An engine whose batched runs cost more per row than single ones (as tract's batched
/// convolutions did): once measured, the batcher takes one row at a time.
#[test]
fn batches_that_cost_more_per_row_shrink_to_what_pays() {
    let runs = batch_runs(doubler_with(Duration::from_millis(2), true, false), 48);
    assert_eq!(runs[0], 4, "{runs:?}");
    assert!(runs[runs.len() - 8..].iter().all(|&r| r == 1), "{runs:?}");
}

/// An engine whose runs cost the same whatever their rows: batches stay at the maximum.
#[test]
fn batches_that_pay_per_row_stay_full() {
    let runs = batch_runs(doubler_with(Duration::from_millis(3), false, false), 48);
    let full = runs.iter().filter(|&&r| r == 4).count();
    assert!(full >= 9, "{runs:?}");
}

/// An idle batcher runs measured tiny work on the async caller's thread; queued work (or
/// work beside a running batch) goes to its workers.
#[tokio::test(flavor = "current_thread")]
async fn an_idle_batcher_runs_small_measured_work_inline() {
    let here = std::thread::current().id();
    let (instances, d) = engines([doubler(Duration::ZERO, true)]);
    let batcher = Batcher::start("t", instances, 4, &batching(0, 0), None).unwrap();
    for i in 0..40 {
        let r = batcher
            .submit(vec![rows(i as f32, 1)], 1, Caller::Async, &NONE)
            .unwrap()
            .wait()
            .await
            .unwrap();
        assert_eq!(
            doubled(&r.outputs[0]),
            vec![2.0 * i as f32, 2.0 * i as f32 + 2.0]
        );
    }
    let threads = d[0].threads.lock().unwrap().clone();
    assert!(
        threads[..32].iter().all(|t| *t != here),
        "unmeasured work ran inline"
    );
    assert_eq!(threads.last(), Some(&here), "measured small work is inline");
    // An engine that runs one request at a time runs it inline too when idle, never beside
    // a worker's run.
    let (instances, d) = engines([doubler(Duration::ZERO, false)]);
    let batcher = Batcher::start("t", instances, 4, &batching(0, 0), None).unwrap();
    for _ in 0..40 {
        let t = batcher.submit(vec![rows(1.0, 1)], 1, Caller::Async, &NONE);
        t.unwrap().wait().await.unwrap();
    }
    assert_eq!(d[0].threads.lock().unwrap().last(), Some(&here));
    assert_eq!(d[0].overlapped.load(Ordering::SeqCst), 0);
    // A queue delay asks requests to wait for company: none runs inline.
    let (instances, d) = engines([doubler(Duration::ZERO, true)]);
    let batcher = Batcher::start("t", instances, 4, &batching(200, 0), None).unwrap();
    for _ in 0..40 {
        let t = batcher.submit(vec![rows(1.0, 1)], 1, Caller::Async, &NONE);
        t.unwrap().wait().await.unwrap();
    }
    assert!(d[0].threads.lock().unwrap().iter().all(|t| *t != here));
}

/// Instances that run one request at a time: while a worker's run holds one, a measured
/// small request runs inline on another that is idle (never on the busy one); with every
/// instance busy it goes to the workers.
#[tokio::test(flavor = "current_thread")]
async fn a_request_runs_inline_on_an_idle_instance_beside_a_workers_run() {
    let here = std::thread::current().id();
    let (instances, d) = engines([
        doubler(Duration::ZERO, false),
        doubler(Duration::ZERO, false),
    ]);
    let batcher = Batcher::start("t", instances, 4, &batching(0, 0), None).unwrap();
    for _ in 0..40 {
        let t = batcher.submit(vec![rows(1.0, 1)], 1, Caller::Async, &NONE);
        t.unwrap().wait().await.unwrap();
    }
    let gates: Vec<_> = d.iter().map(|d| d.gate.lock().unwrap()).collect();
    // A blocking request that waits at the gate, once `n` runs are in progress with it.
    let gated = |value: f32, n: usize| {
        let t = batcher.submit(vec![rows(value, 1)], 1, Caller::Blocking, &NONE);
        while d
            .iter()
            .map(|d| d.running.load(Ordering::SeqCst))
            .sum::<usize>()
            < n
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        t.unwrap()
    };
    let held = gated(-1.0, 1);
    let inline = |d: &[Arc<Doubler>]| {
        d.iter()
            .flat_map(|d| d.threads.lock().unwrap().clone())
            .filter(|t| *t == here)
            .count()
    };
    let before: usize = d.iter().map(|d| d.threads.lock().unwrap().len()).sum();
    let inline_before = inline(&d);
    let r = batcher
        .submit(vec![rows(3.0, 1)], 1, Caller::Async, &NONE)
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(doubled(&r.outputs[0]), vec![6.0, 8.0]);
    let ran: Vec<_> = d
        .iter()
        .flat_map(|d| d.threads.lock().unwrap().clone())
        .collect();
    assert_eq!(ran.len(), before + 1);
    assert!(
        d.iter()
            .any(|d| d.threads.lock().unwrap().last() == Some(&here)),
        "ran inline on the idle instance"
    );
    // Both busy: the next one waits for a worker.
    let second = gated(-2.0, 2);
    let queued = batcher
        .submit(vec![rows(5.0, 1)], 1, Caller::Async, &NONE)
        .unwrap();
    drop(gates);
    let r = queued.wait().await.unwrap();
    assert_eq!(doubled(&r.outputs[0]), vec![10.0, 12.0]);
    for t in [held, second] {
        t.wait().await.unwrap();
    }
    assert!(d.iter().all(|d| d.overlapped.load(Ordering::SeqCst) == 0));
    assert_eq!(
        inline(&d),
        inline_before + 1,
        "only the one with an idle instance"
    );
}

/// A batcher of a concurrent doubler (max batch 4) whose measurements let requests of up to
/// 3 rows run inline (the largest batch, 4 rows, is never measured, so it always pays).
async fn warm_batcher(config: &DynamicBatching) -> (Batcher, Arc<Doubler>, usize) {
    let (instances, d) = engines([doubler(Duration::ZERO, true)]);
    let workers = threads_for(&instances);
    let batcher = Batcher::start("t", instances, 4, config, None).unwrap();
    for _ in 0..40 {
        let t = batcher.submit(vec![rows(1.0, 3)], 3, Caller::Async, &NONE);
        t.unwrap().wait().await.unwrap();
    }
    (batcher, d.into_iter().next().unwrap(), workers)
}

/// Makes every worker take one request that waits at `d`'s gate (held by the caller).
fn occupy_workers(batcher: &Batcher, d: &Doubler, workers: usize) -> Vec<Ticket> {
    (1..=workers)
        .map(|n| {
            let t = batcher.submit(vec![rows(-1.0, 1)], 1, Caller::Blocking, &NONE);
            while d.running.load(Ordering::SeqCst) < n {
                std::thread::sleep(Duration::from_millis(1));
            }
            t.unwrap()
        })
        .collect()
}

/// Queues `n` one-row requests from a blocking caller.
fn queue_ones(batcher: &Batcher, n: usize) -> Vec<Ticket> {
    (0..n)
        .map(|_| {
            batcher
                .submit(vec![rows(1.0, 1)], 1, Caller::Blocking, &NONE)
                .unwrap()
        })
        .collect()
}

async fn answered(tickets: Vec<Ticket>) {
    for t in tickets {
        t.wait().await.unwrap();
    }
}

/// An async caller that finds requests queued (every worker busy) and an instance free takes
/// them all into one batch with its own and runs it on its thread, when they fit the inline
/// budget; each answer is still exactly its own rows. When they do not fit, it runs its own
/// alone where instances run concurrently, but queues behind them where priorities order the
/// queue.
#[tokio::test(flavor = "current_thread")]
// The gate is held across awaits on purpose: the runs awaited meanwhile never take it.
#[allow(clippy::await_holding_lock)]
async fn an_async_caller_takes_queued_small_work_into_its_inline_batch() {
    let here = std::thread::current().id();
    let (batcher, d, workers) = warm_batcher(&batching(0, 0)).await;
    let gate = d.gate.lock().unwrap();
    let held = occupy_workers(&batcher, &d, workers);
    let queued: Vec<_> = (0..2)
        .map(|i| {
            let start = 100.0 * (i + 1) as f32;
            let t = batcher.submit(vec![rows(start, 1)], 1, Caller::Blocking, &NONE);
            (start, t.unwrap())
        })
        .collect();
    assert_eq!(batcher.queued(), 2);
    let own = batcher.submit(vec![rows(7.0, 1)], 1, Caller::Async, &NONE);
    assert_eq!(
        batcher.queued(),
        0,
        "the queued requests joined the inline batch"
    );
    let r = own.unwrap().wait().await.unwrap();
    assert_eq!(doubled(&r.outputs[0]), vec![14.0, 16.0]);
    assert_eq!(r.batch_rows, 3);
    assert_eq!(d.threads.lock().unwrap().last(), Some(&here));
    assert_eq!(d.runs().last(), Some(&3));
    for (start, t) in queued {
        let r = t.wait().await.unwrap();
        assert_eq!(doubled(&r.outputs[0]), vec![2.0 * start, 2.0 * start + 2.0]);
        assert_eq!(r.outputs[0].shape(), &[1, 2]);
    }
    drop(gate);
    answered(held).await;

    // More queued than one batch takes (the maximum is 4 rows): the caller's request runs
    // alone, overtaking them — the workers are free to run them. (A fresh batcher: the
    // gated runs above count as slow ones.)
    let (batcher, d, workers) = warm_batcher(&batching(0, 0)).await;
    let gate = d.gate.lock().unwrap();
    let held = occupy_workers(&batcher, &d, workers);
    let queued = queue_ones(&batcher, 4);
    let own = batcher.submit(vec![rows(7.0, 1)], 1, Caller::Async, &NONE);
    assert_eq!(batcher.queued(), 4);
    let r = own.unwrap().wait().await.unwrap();
    assert_eq!(
        (r.batch_rows, doubled(&r.outputs[0])),
        (1, vec![14.0, 16.0])
    );
    assert_eq!(d.threads.lock().unwrap().last(), Some(&here));
    drop(gate);
    answered(held).await;
    answered(queued).await;

    // With priority levels, running it would overtake requests of a higher priority: it is
    // queued behind them instead.
    let mut config = batching(0, 0);
    config.priority_levels = 2;
    let (batcher, d, workers) = warm_batcher(&config).await;
    let gate = d.gate.lock().unwrap();
    let held = occupy_workers(&batcher, &d, workers);
    let queued = queue_ones(&batcher, 4);
    let own = batcher.submit(vec![rows(7.0, 1)], 1, Caller::Async, &NONE);
    assert_eq!(batcher.queued(), 5);
    drop(gate);
    own.unwrap().wait().await.unwrap();
    answered(held).await;
    answered(queued).await;
}
