//! Both schedulers against a stand-in engine: no model files, no metrics exporter.

use super::*;
use crate::engine::{Backend, Dim, Engine, TensorSpec};
use crate::registry::config::DynamicBatching;
use crate::tensor::{DataType, TensorData};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Doubles its one FP32 input; records the rows of each run; takes `delay` per run; runs one
/// request at a time when not `concurrent` (and then counts overlapping runs).
struct Doubler {
    specs: Vec<TensorSpec>,
    runs: Mutex<Vec<usize>>,
    delay: Duration,
    concurrent: bool,
    running: AtomicUsize,
    overlapped: AtomicUsize,
}

/// The engine as a scheduler holds it, sharing the [`Doubler`] with the test.
struct Handle(Arc<Doubler>);

fn doubler(delay: Duration, concurrent: bool) -> (Box<dyn Engine>, Arc<Doubler>) {
    let d = Arc::new(Doubler {
        specs: vec![TensorSpec {
            name: "x".into(),
            dtype: DataType::F32,
            shape: vec![Dim::Dynamic, Dim::Fixed(2)],
        }],
        runs: Mutex::new(Vec::new()),
        delay,
        concurrent,
        running: AtomicUsize::new(0),
        overlapped: AtomicUsize::new(0),
    });
    (Box::new(Handle(Arc::clone(&d))), d)
}

type Instances = Arc<Vec<Box<dyn Engine>>>;

fn engines(
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
}

impl Doubler {
    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
        if self.running.fetch_add(1, Ordering::SeqCst) > 0 && !self.concurrent {
            self.overlapped.fetch_add(1, Ordering::SeqCst);
        }
        std::thread::sleep(self.delay);
        let x = &inputs[0];
        self.runs.lock().unwrap().push(x.shape()[0]);
        let TensorData::F32(v) = x.data() else {
            return Err(EngineError::Run("not FP32".into()));
        };
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
    let direct = Direct::new(engines);
    let ticket = direct
        .submit(vec![rows(1.0, 2)], 2, Caller::Blocking)
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
    let direct = Direct::new(engines);
    let started = Instant::now();
    let tickets: Vec<_> = (0..4)
        .map(|i| {
            direct
                .submit(vec![rows(i as f32, 1)], 1, Caller::Async)
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

#[test]
fn direct_engine_failures_are_internal() {
    let direct = Direct::new(engines([doubler(Duration::ZERO, true)]).0);
    let nan = Tensor::new(vec![1, 2], TensorData::F32(vec![f32::NAN, 1.0])).unwrap();
    let e = direct
        .submit(vec![nan], 1, Caller::Blocking)
        .unwrap()
        .wait_blocking()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal);
    assert_eq!(e.to_string(), "inference failed: NaN refused");
}

fn batching(delay_us: u64, max_queue_size: u32) -> DynamicBatching {
    DynamicBatching {
        max_queue_delay_us: delay_us,
        preferred_batch_size: vec![],
        max_queue_size,
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
            let t = batcher.submit(vec![rows(start, n)], n, Caller::Blocking);
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

#[test]
fn a_full_queue_refuses_at_once_as_unavailable() {
    let (engines, _) = engines([doubler(Duration::from_millis(300), true)]);
    let batcher = Batcher::start("t", engines, 1, &batching(0, 1), None).unwrap();
    let first = batcher
        .submit(vec![rows(0.0, 1)], 1, Caller::Async)
        .unwrap();
    // Wait until the worker took the first request, then fill the one queue slot.
    let deadline = Instant::now() + Duration::from_secs(5);
    while batcher.queued() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let second = batcher
        .submit(vec![rows(0.0, 1)], 1, Caller::Async)
        .unwrap();
    let refused = batcher
        .submit(vec![rows(0.0, 1)], 1, Caller::Async)
        .err()
        .expect("the third request finds the queue full");
    assert_eq!(refused.kind(), ErrorKind::Unavailable);
    assert!(
        refused.to_string().contains("max_queue_size 1"),
        "{refused}"
    );
    drop((first, second));
}
