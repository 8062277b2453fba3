//! The load generator: N workers, each sending one request at a time (closed loop), first
//! through a warm-up period that is not measured, then until the duration ends or the request
//! count is reached.
//!
//! A request is measured when it starts after the warm-up; the measured time runs from the
//! end of the warm-up to the last measured completion, so in-flight requests at the end
//! count in full.

use super::grpc::{GrpcClient, GrpcEndpoint};
use super::http::{Client, InferRequest};
use super::stats::{ErrorTally, Latencies};
use crate::grpc::proto::inference as pb;
use crate::models::LoadedVersion;
use crate::tensor::NamedTensor;
use indicatif::ProgressBar;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// When the measured part of a run ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    Duration(Duration),
    Requests(u64),
}

/// What the workers call.
pub enum Target {
    /// [`LoadedVersion::infer`], the path the server's requests take after decoding.
    InProcess {
        model: Arc<LoadedVersion>,
        inputs: Vec<NamedTensor>,
    },
    /// A v2 server, with the timeout after which a request counts as failed.
    Http {
        endpoint: Arc<super::http::Endpoint>,
        request: Arc<InferRequest>,
        timeout: Duration,
    },
    /// A server's `inference.GRPCInferenceService`, with the same timeout.
    Grpc {
        endpoint: Arc<GrpcEndpoint>,
        request: Arc<pb::ModelInferRequest>,
        timeout: Duration,
    },
}

/// How hard and how long to drive the target.
#[derive(Debug, Clone)]
pub struct Plan {
    pub concurrency: usize,
    pub warmup: Duration,
    pub stop: Stop,
}

/// What the workers measured.
#[derive(Debug, Default)]
pub struct Measured {
    /// Latencies of the measured requests that succeeded.
    pub latencies: Latencies,
    /// Failures of measured requests.
    pub errors: ErrorTally,
    /// Failures during the warm-up.
    pub warmup_errors: ErrorTally,
    pub warmup_requests: u64,
    /// From the end of the warm-up to the last measured completion.
    pub elapsed: Duration,
}

enum Worker {
    InProcess {
        model: Arc<LoadedVersion>,
        inputs: Vec<NamedTensor>,
    },
    Http {
        client: Client,
        request: Arc<InferRequest>,
        timeout: Duration,
    },
    Grpc {
        client: GrpcClient,
        request: Arc<pb::ModelInferRequest>,
        timeout: Duration,
    },
}

impl Target {
    /// A worker, connected already for HTTP and gRPC so connecting is not measured.
    async fn worker(&self) -> Result<Worker, String> {
        Ok(match self {
            Target::InProcess { model, inputs } => Worker::InProcess {
                model: Arc::clone(model),
                inputs: inputs.clone(),
            },
            Target::Http {
                endpoint,
                request,
                timeout,
            } => {
                let mut client = Client::new(Arc::clone(endpoint));
                client.connect().await?;
                Worker::Http {
                    client,
                    request: Arc::clone(request),
                    timeout: *timeout,
                }
            }
            Target::Grpc {
                endpoint,
                request,
                timeout,
            } => Worker::Grpc {
                client: GrpcClient::connect(endpoint).await?,
                request: Arc::clone(request),
                timeout: *timeout,
            },
        })
    }
}

impl Worker {
    async fn call(&mut self) -> Result<(), String> {
        match self {
            Worker::InProcess { model, inputs } => model
                .infer(inputs.clone(), None)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Worker::Http {
                client,
                request,
                timeout,
            } => match tokio::time::timeout(*timeout, request.send(client)).await {
                Ok(result) => result,
                Err(_) => {
                    client.reset();
                    Err(no_response(*timeout))
                }
            },
            Worker::Grpc {
                client,
                request,
                timeout,
            } => tokio::time::timeout(*timeout, client.infer(request))
                .await
                .unwrap_or_else(|_| Err(no_response(*timeout))),
        }
    }
}

fn no_response(timeout: Duration) -> String {
    format!("no response within {}", humantime::format_duration(timeout))
}

struct Shared {
    measure_start: Instant,
    deadline: Option<Instant>,
    /// Measured requests not yet claimed (`--requests`).
    unclaimed: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<ErrorTally>,
    warmup_errors: Mutex<ErrorTally>,
}

#[derive(Default)]
struct WorkerResult {
    latencies: Latencies,
    warmup_requests: u64,
    last: Option<Instant>,
}

/// Runs the plan against the target; the bar shows progress (hide it to draw nothing).
pub async fn drive(target: &Target, plan: &Plan, bar: &ProgressBar) -> Result<Measured, String> {
    let mut workers = Vec::with_capacity(plan.concurrency);
    for _ in 0..plan.concurrency {
        workers.push(target.worker().await?);
    }
    let start = Instant::now();
    let measure_start = start + plan.warmup;
    let shared = Arc::new(Shared {
        measure_start,
        deadline: match plan.stop {
            Stop::Duration(d) => Some(measure_start + d),
            Stop::Requests(_) => None,
        },
        unclaimed: AtomicU64::new(match plan.stop {
            Stop::Requests(n) => n,
            Stop::Duration(_) => 0,
        }),
        completed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        errors: Mutex::default(),
        warmup_errors: Mutex::default(),
    });
    let handles: Vec<_> = workers
        .into_iter()
        .map(|w| tokio::spawn(run_worker(w, Arc::clone(&shared))))
        .collect();
    let ticker = tokio::spawn(tick(Arc::clone(&shared), plan.clone(), bar.clone()));
    let mut measured = Measured::default();
    let mut last = measure_start;
    for handle in handles {
        let r = handle
            .await
            .map_err(|e| format!("a benchmark worker failed: {e} (this is a bug)"))?;
        measured.latencies.extend(r.latencies);
        measured.warmup_requests += r.warmup_requests;
        last = last.max(r.last.unwrap_or(measure_start));
    }
    ticker.abort();
    measured.elapsed = last - measure_start;
    measured.errors = take(&shared.errors);
    measured.warmup_errors = take(&shared.warmup_errors);
    Ok(measured)
}

fn take(tally: &Mutex<ErrorTally>) -> ErrorTally {
    std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()))
}

async fn run_worker(mut worker: Worker, shared: Arc<Shared>) -> WorkerResult {
    let mut out = WorkerResult::default();
    loop {
        let now = Instant::now();
        let measuring = now >= shared.measure_start;
        if measuring {
            let more = match shared.deadline {
                Some(deadline) => now < deadline,
                None => shared
                    .unclaimed
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok(),
            };
            if !more {
                break;
            }
        }
        let started = Instant::now();
        let result = worker.call().await;
        let done = Instant::now();
        if !measuring {
            out.warmup_requests += 1;
            if let Err(e) = result {
                lock(&shared.warmup_errors).record(&e);
            }
            continue;
        }
        match result {
            Ok(()) => out.latencies.push(done - started),
            Err(e) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                lock(&shared.errors).record(&e);
            }
        }
        shared.completed.fetch_add(1, Ordering::Relaxed);
        out.last = Some(done);
    }
    out
}

fn lock(m: &Mutex<ErrorTally>) -> std::sync::MutexGuard<'_, ErrorTally> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Updates the progress bar ten times a second until aborted.
async fn tick(shared: Arc<Shared>, plan: Plan, bar: ProgressBar) {
    let mut interval = tokio::time::interval(Duration::from_millis(100));
    loop {
        interval.tick().await;
        let now = Instant::now();
        let done = shared.completed.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        if now < shared.measure_start {
            let left = shared.measure_start - now;
            bar.set_message(format!("{:.1} s left", left.as_secs_f64()));
            bar.set_prefix("warm-up");
            bar.set_length(plan.warmup.as_millis().max(1) as u64);
            bar.set_position((plan.warmup.saturating_sub(left)).as_millis() as u64);
            continue;
        }
        let secs = (now - shared.measure_start).as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        bar.set_message(format!("{done} req, {failed} err, {rate:.0} req/s"));
        bar.set_prefix("measure");
        match plan.stop {
            Stop::Requests(n) => {
                bar.set_length(n);
                bar.set_position(done);
            }
            Stop::Duration(d) => {
                bar.set_length(d.as_millis().max(1) as u64);
                bar.set_position((secs * 1000.0) as u64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Backend;
    use crate::models::{LoadDefaults, Served};
    use crate::registry::Repository;

    fn digits() -> Target {
        let repo = Repository::open(concat!(env!("CARGO_MANIFEST_DIR"), "/models")).unwrap();
        let served = Served::load(
            &repo.model("digits").unwrap(),
            1,
            LoadDefaults::new(Backend::Tract),
        )
        .unwrap();
        let inputs = super::super::inputs::synthetic(served.model.inputs(), 2).unwrap();
        Target::InProcess {
            model: served.model,
            inputs,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exactly_the_requested_count_across_workers() {
        let plan = Plan {
            concurrency: 4,
            warmup: Duration::from_millis(50),
            stop: Stop::Requests(37),
        };
        let m = drive(&digits(), &plan, &ProgressBar::hidden())
            .await
            .unwrap();
        assert_eq!(m.latencies.len(), 37);
        assert_eq!(m.errors.total(), 0);
        assert!(m.warmup_requests > 0);
        assert!(m.elapsed > Duration::ZERO);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_duration_run_stops_after_the_duration() {
        let plan = Plan {
            concurrency: 2,
            warmup: Duration::ZERO,
            stop: Stop::Duration(Duration::from_millis(300)),
        };
        let m = drive(&digits(), &plan, &ProgressBar::hidden())
            .await
            .unwrap();
        assert!(m.elapsed >= Duration::from_millis(300), "{:?}", m.elapsed);
        assert!(m.elapsed < Duration::from_secs(10), "{:?}", m.elapsed);
        assert!(m.latencies.len() > 2);
        assert_eq!(m.warmup_requests, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failures_are_tallied_not_fatal() {
        let Target::InProcess { model, .. } = digits() else {
            unreachable!()
        };
        let wrong = crate::tensor::Tensor::new(vec![1], crate::tensor::TensorData::F32(vec![0.0]));
        let target = Target::InProcess {
            model,
            inputs: vec![NamedTensor {
                name: "input".into(),
                tensor: wrong.unwrap(),
            }],
        };
        let plan = Plan {
            concurrency: 2,
            warmup: Duration::ZERO,
            stop: Stop::Requests(10),
        };
        let m = drive(&target, &plan, &ProgressBar::hidden()).await.unwrap();
        assert_eq!((m.latencies.len(), m.errors.total()), (0, 10));
        assert_eq!(m.errors.messages().len(), 1);
    }
}
