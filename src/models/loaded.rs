//! A loaded model version: its engine, its effective tensor specs and the inference path.

use super::stats::{Stats, Timings};
use super::{validate, ModelError};
use crate::batch::{BatchObserver, BatchResult, Batcher};
use crate::engine::{
    self, check_override, Backend, Dim, Engine, LoadOptions, OverrideOf, TensorSpec,
};
use crate::registry::config::TensorOverride;
use crate::registry::{ModelConfig, ModelDir, MODEL_FILE};
use crate::tensor::Tensor;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A tensor with the name of the model input or output it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub tensor: Tensor,
}

/// The outputs of one request and where its time went.
#[derive(Debug)]
pub struct Inference {
    pub outputs: Vec<NamedTensor>,
    pub timings: Timings,
}

/// One model version, loaded and ready to run: `instances` engines, and a batcher in
/// front of them when the config asks for dynamic batching.
pub struct LoadedVersion {
    name: String,
    version: u64,
    config: ModelConfig,
    engines: Arc<Vec<Box<dyn Engine>>>,
    /// Round-robin cursor over `engines` for unbatched requests.
    next: AtomicUsize,
    /// One per engine, held while an unbatched request runs on an engine that takes its runs
    /// one at a time ([`Engine::concurrent`] is false), so requests go to idle instances.
    busy: Vec<Mutex<()>>,
    batcher: Option<Batcher>,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    stats: Stats,
}

impl LoadedVersion {
    /// Loads `version` of the model in `dir` with the backend its config names, else
    /// `default_backend`. The error is a one-line reason.
    pub fn load(
        dir: &ModelDir,
        version: u64,
        default_backend: Backend,
    ) -> Result<LoadedVersion, String> {
        LoadedVersion::load_with(dir, version, default_backend, None)
    }

    /// [`LoadedVersion::load`], reporting each formed batch to `observer` (metrics).
    pub fn load_with(
        dir: &ModelDir,
        version: u64,
        default_backend: Backend,
        observer: Option<BatchObserver>,
    ) -> Result<LoadedVersion, String> {
        let config = dir.config.as_ref().map_err(|e| e.to_string())?.clone();
        let path = dir.version_path(version).join(MODEL_FILE);
        if !path.is_file() {
            return Err(format!("{} is missing", path.display()));
        }
        let backend = config.backend.unwrap_or(default_backend);
        let options = LoadOptions {
            inputs: config.inputs.clone(),
            ort: config.ort.clone(),
            batch_sizes: batch_sizes(&config),
            opencl: config.opencl.clone(),
        };
        let engines = (0..config.instances.max(1))
            .map(|_| {
                engine::load(backend, &path, &options)
                    .map_err(|e| format!("{}: {e}", path.display()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let inputs = engines[0].inputs().to_vec();
        let outputs = apply_output_overrides(engines[0].outputs(), &config.outputs)?;
        if config.max_batch_size > 0 {
            if let Some(s) = inputs.iter().find(|s| s.shape.is_empty()) {
                return Err(format!(
                    "max_batch_size is set but input '{}' is a scalar with no batch dimension",
                    s.name
                ));
            }
        }
        let engines = Arc::new(engines);
        let batcher = match &config.dynamic_batching {
            None => None,
            Some(batching) => {
                let fixed = inputs
                    .iter()
                    .chain(&outputs)
                    .find(|s| s.shape.first() != Some(&Dim::Dynamic));
                if let Some(s) = fixed {
                    return Err(format!(
                        "dynamic_batching needs a batch dimension, but tensor '{}' has shape {} (its first dimension is not dynamic)",
                        s.name,
                        s.shape_string()
                    ));
                }
                let name = format!("{}-{version}", dir.name);
                let max = config.max_batch_size;
                Some(Batcher::start(
                    &name,
                    Arc::clone(&engines),
                    max,
                    batching,
                    observer,
                )?)
            }
        };
        Ok(LoadedVersion {
            name: dir.name.clone(),
            version,
            config,
            busy: (0..engines.len()).map(|_| Mutex::new(())).collect(),
            engines,
            next: AtomicUsize::new(0),
            batcher,
            inputs,
            outputs,
            stats: Stats::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn backend(&self) -> Backend {
        self.engines[0].backend()
    }

    /// Where the engine runs the model's nodes (device vs CPU), for split engines.
    pub fn placement(&self) -> Option<crate::engine::Placement> {
        self.engines[0].placement()
    }

    /// The model's inputs, in the order it takes them.
    pub fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    /// The model's outputs, in the order it produces them.
    pub fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    /// Statistics of the requests served so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Requests waiting in the batcher's queue (0 without dynamic batching).
    pub fn queue_depth(&self) -> usize {
        self.batcher.as_ref().map_or(0, Batcher::depth)
    }

    /// Runs the model off the async executor: through the batcher when the config enables
    /// dynamic batching, else on a blocking-pool thread. `outputs` selects and orders the
    /// outputs returned; `None` returns all in model order.
    pub async fn infer(
        self: &Arc<Self>,
        inputs: Vec<NamedTensor>,
        outputs: Option<Vec<String>>,
    ) -> Result<Inference, ModelError> {
        let started = Instant::now();
        let result = match &self.batcher {
            Some(batcher) => {
                // Validation is a cheap pass over shapes; the copying and computing happen
                // on the batcher's threads.
                match self.prepare(inputs, outputs.as_deref()) {
                    Ok((selected, ordered, rows)) => match batcher.submit(ordered, rows) {
                        Ok(rx) => {
                            let t1 = Instant::now();
                            let reply = rx.await.map_err(|_| stopped());
                            self.finish_batched(selected, reply, t1 - started)
                        }
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                }
            }
            None => {
                let this = Arc::clone(self);
                tokio::task::spawn_blocking(move || {
                    this.run_direct(inputs, outputs.as_deref(), started.elapsed())
                })
                .await
                .map_err(|e| ModelError::Internal(format!("inference task failed: {e}")))
                .and_then(|r| r)
            }
        };
        self.record(&result, started);
        result
    }

    /// [`LoadedVersion::infer`] on the calling thread (which must not be an async executor
    /// worker), for offline use (CLI, hooks, benches).
    pub fn infer_blocking(
        &self,
        inputs: Vec<NamedTensor>,
        outputs: Option<&[String]>,
    ) -> Result<Inference, ModelError> {
        let started = Instant::now();
        let result = match &self.batcher {
            Some(batcher) => self
                .prepare(inputs, outputs)
                .and_then(|(selected, ordered, rows)| {
                    let rx = batcher.submit(ordered, rows)?;
                    let t1 = Instant::now();
                    self.finish_batched(
                        selected,
                        rx.blocking_recv().map_err(|_| stopped()),
                        t1 - started,
                    )
                }),
            None => self.run_direct(inputs, outputs, Duration::ZERO),
        };
        self.record(&result, started);
        result
    }

    fn record(&self, result: &Result<Inference, ModelError>, started: Instant) {
        match result {
            Ok(inference) => {
                let rows = inference
                    .outputs
                    .first()
                    .and_then(|o| o.tensor.shape().first().copied())
                    .unwrap_or(1);
                self.stats.success(rows as u64, &inference.timings);
            }
            Err(_) => self.stats.failure(started.elapsed()),
        }
    }

    /// Validates a request: the indices of the requested outputs, the inputs in model order,
    /// and the request's rows (its batch size).
    fn prepare(
        &self,
        inputs: Vec<NamedTensor>,
        outputs: Option<&[String]>,
    ) -> Result<(Vec<usize>, Vec<Tensor>, usize), ModelError> {
        let selected = validate::outputs(&self.outputs, outputs)?;
        let ordered = validate::inputs(&self.inputs, self.config.max_batch_size, inputs)?;
        let rows = ordered
            .first()
            .and_then(|t| t.shape().first().copied())
            .unwrap_or(1);
        Ok((selected, ordered, rows))
    }

    fn finish_batched(
        &self,
        selected: Vec<usize>,
        reply: Result<Result<BatchResult, ModelError>, ModelError>,
        compute_input: Duration,
    ) -> Result<Inference, ModelError> {
        let r = reply??;
        if r.first {
            self.stats.executed(r.batch_rows as u64);
        }
        let t = Instant::now();
        let outputs = self.select(selected, r.outputs)?;
        let timings = Timings {
            queue: r.queue,
            compute_input,
            compute_infer: r.compute,
            compute_output: t.elapsed(),
        };
        Ok(Inference { outputs, timings })
    }

    fn run_direct(
        &self,
        inputs: Vec<NamedTensor>,
        outputs: Option<&[String]>,
        queue: Duration,
    ) -> Result<Inference, ModelError> {
        let t0 = Instant::now();
        let (selected, ordered, rows) = self.prepare(inputs, outputs)?;
        let prepared = Instant::now();
        let (engine, _busy) = self.instance();
        let t1 = Instant::now();
        let produced = engine.run(ordered)?;
        self.stats.executed(rows as u64);
        let t2 = Instant::now();
        let outputs = self.select(selected, produced)?;
        let timings = Timings {
            queue: queue + (t1 - prepared),
            compute_input: prepared - t0,
            compute_infer: t2 - t1,
            compute_output: t2.elapsed(),
        };
        Ok(Inference { outputs, timings })
    }

    /// The engine an unbatched request runs on, taken in turn. Engines that run one request
    /// at a time are held (the guard) for the run: an idle one is preferred, else the caller
    /// waits for the one whose turn it is.
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

    /// Picks the `selected` outputs (by model index) out of all `produced` ones.
    fn select(
        &self,
        selected: Vec<usize>,
        produced: Vec<Tensor>,
    ) -> Result<Vec<NamedTensor>, ModelError> {
        let count = produced.len();
        let mut produced: Vec<Option<Tensor>> = produced.into_iter().map(Some).collect();
        selected
            .into_iter()
            .map(|i| {
                let tensor = produced.get_mut(i).and_then(Option::take).ok_or_else(|| {
                    ModelError::Internal(format!(
                        "engine returned {count} outputs, expected {}",
                        self.outputs.len()
                    ))
                })?;
                Ok(NamedTensor {
                    name: self.outputs[i].name.clone(),
                    tensor,
                })
            })
            .collect()
    }
}

fn stopped() -> ModelError {
    ModelError::Internal("the batching thread stopped before answering".into())
}

/// Applies `[[output]]` declarations: each must name a real output with its actual type;
/// declared dims replace the model's where compatible (e.g. `-1` for a batch dimension).
fn apply_output_overrides(
    model: &[TensorSpec],
    overrides: &[TensorOverride],
) -> Result<Vec<TensorSpec>, String> {
    let mut specs = model.to_vec();
    for ov in overrides {
        let (spec, declared) = check_override(&mut specs, ov, OverrideOf::Output)?;
        if let Some(declared) = declared {
            spec.shape = declared;
        }
    }
    Ok(specs)
}

/// The batch sizes the dynamic batcher forms most: its preferred sizes and `max_batch_size`.
fn batch_sizes(config: &ModelConfig) -> Vec<usize> {
    let Some(batching) = &config.dynamic_batching else {
        return Vec::new();
    };
    let mut sizes: Vec<usize> = batching
        .preferred_batch_size
        .iter()
        .map(|&p| p as usize)
        .chain((config.max_batch_size > 0).then_some(config.max_batch_size as usize))
        .filter(|&n| n > 1)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}
