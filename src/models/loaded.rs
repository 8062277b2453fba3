//! A loaded model version: its engine instances, its effective tensor specs, its scheduler
//! and the one inference route: validate → submit → wait → select outputs.

use super::intake::{self, Intake};
use super::stats::{Stats, Timings};
use super::{autocomplete, validate, LoadError, ModelError};
use crate::batch::{
    BatchObserver, BatchResult, Batcher, Caller, Direct, RequestOptions, Scheduler, SchedulerError,
};
use crate::engine::{
    self, check_override, Backend, Dim, Engine, LoadOptions, OverrideOf, TensorOverride, TensorSpec,
};
use crate::hook::{PredictError, Predictor};
use crate::registry::{ModelConfig, ModelDir, MODEL_FILE};
use crate::tensor::{NamedTensor, Tensor};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the server chooses for settings a model's `config.toml` leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadDefaults {
    /// The engine of models whose config names none (`--backend`).
    pub backend: Backend,
    /// The `max_batch_size` that auto-complete gives a batchable model whose config sets
    /// none (`--default-max-batch-size`); 0 turns auto-complete off.
    pub max_batch_size: u32,
}

impl LoadDefaults {
    /// `backend`, with auto-complete at [`autocomplete::DEFAULT_MAX_BATCH_SIZE`].
    pub fn new(backend: Backend) -> LoadDefaults {
        LoadDefaults {
            backend,
            max_batch_size: autocomplete::DEFAULT_MAX_BATCH_SIZE,
        }
    }
}

impl Default for LoadDefaults {
    /// tract, with auto-complete at [`autocomplete::DEFAULT_MAX_BATCH_SIZE`].
    fn default() -> Self {
        LoadDefaults::new(Backend::default())
    }
}

/// The outputs of one request and where its time went.
#[derive(Debug)]
pub struct Inference {
    pub outputs: Vec<NamedTensor>,
    pub timings: Timings,
}

/// One model version, loaded and ready to run: `instances` engines behind a scheduler (the
/// dynamic batcher when the config asks for it, else [`Direct`]).
pub struct LoadedVersion {
    name: String,
    version: u64,
    config: ModelConfig,
    engines: Arc<Vec<Box<dyn Engine>>>,
    scheduler: Box<dyn Scheduler>,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    stats: Stats,
    /// Requests between arrival and answer (queued or executing).
    pending: AtomicUsize,
    /// Room for request bodies ([`intake`]).
    intake: Intake,
}

/// Counts a request as pending until dropped, also when its caller goes away mid-request.
struct PendingGuard<'a>(&'a AtomicUsize);

impl<'a> PendingGuard<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        PendingGuard(count)
    }
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request handed to the scheduler: the outputs it selected (by model index) and the time
/// its validation took.
struct Prepared {
    selected: Vec<usize>,
    validated: Duration,
}

impl LoadedVersion {
    /// Loads `version` of the model in `dir` with the backend its config names, else
    /// `defaults.backend`, and its config auto-completed with `defaults.max_batch_size` (see
    /// [`autocomplete::complete`]; [`LoadedVersion::config`] is the completed config).
    pub fn load(
        dir: &ModelDir,
        version: u64,
        defaults: LoadDefaults,
    ) -> Result<LoadedVersion, LoadError> {
        LoadedVersion::load_with(dir, version, defaults, None)
    }

    /// [`LoadedVersion::load`], reporting each formed batch to `observer` (metrics).
    pub fn load_with(
        dir: &ModelDir,
        version: u64,
        defaults: LoadDefaults,
        observer: Option<BatchObserver>,
    ) -> Result<LoadedVersion, LoadError> {
        let mut config = dir
            .config
            .as_ref()
            .map_err(|e| LoadError::Config(e.to_string()))?
            .clone();
        let path = dir.version_path(version).join(MODEL_FILE);
        if !path.is_file() {
            return Err(LoadError::MissingModel(path));
        }
        let backend = config.backend.unwrap_or(defaults.backend);
        let options = LoadOptions {
            inputs: config.inputs.clone(),
            ort: config.ort.clone(),
            batch_sizes: batch_sizes(&config),
            // An auto-completed batcher's sizes are only known once the model's specs are:
            // the engine prepares those on first use.
            specialise_on_use: config.dynamic_batching.is_some()
                || (config.max_batch_size.is_none() && defaults.max_batch_size > 0),
            opencl: config.opencl.clone(),
        };
        let instances = *config
            .instances
            .get_or_insert_with(|| engine::default_instances(backend, &path, &options));
        let engines = (0..instances.max(1))
            .map(|_| {
                engine::load(backend, &path, &options).map_err(|cause| LoadError::Engine {
                    path: path.clone(),
                    cause,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let inputs = engines[0].inputs().to_vec();
        let outputs = apply_output_overrides(engines[0].outputs(), &config.outputs)
            .map_err(LoadError::Invalid)?;
        autocomplete::complete(
            &mut config,
            &dir.name,
            &inputs,
            &outputs,
            defaults.max_batch_size,
        );
        let max_batch_size = config.max_batch_size.unwrap_or(0);
        if max_batch_size > 0 {
            if let Some(s) = inputs.iter().find(|s| s.shape.is_empty()) {
                return Err(LoadError::Invalid(format!(
                    "max_batch_size is set but input '{}' is a scalar with no batch dimension",
                    s.name
                )));
            }
        }
        let batch_rows = crate::batch::batch_rows(&engines, max_batch_size);
        let room = intake::room_bytes(
            &config,
            &inputs,
            crate::batch::threads_for(&engines),
            batch_rows,
        );
        let engines = Arc::new(engines);
        let name = format!("{}-{version}", dir.name);
        let scheduler: Box<dyn Scheduler> = match &config.dynamic_batching {
            None => Box::new(Direct::new(&name, Arc::clone(&engines), max_batch_size > 0)),
            Some(batching) => {
                let fixed = inputs
                    .iter()
                    .chain(&outputs)
                    .find(|s| s.shape.first() != Some(&Dim::Dynamic));
                if let Some(s) = fixed {
                    return Err(LoadError::Invalid(format!(
                        "dynamic_batching needs a batch dimension, but tensor '{}' has shape {} (its first dimension is not dynamic)",
                        s.name,
                        s.shape_string()
                    )));
                }
                if batch_rows > 1 || batching.shapes_queue() {
                    Box::new(
                        Batcher::start(
                            &name,
                            Arc::clone(&engines),
                            max_batch_size,
                            batching,
                            observer,
                        )
                        .map_err(LoadError::Threads)?,
                    )
                } else {
                    // A batch of one row is full as it arrives: there is nothing to wait
                    // for or gather, and no queue policy to apply.
                    tracing::info!(
                        "{name}: dynamic batches would hold one row (max_batch_size \
                         {max_batch_size}; the engine gains nothing from running more rows at \
                         once): requests run as they arrive, a request of more rows in parts"
                    );
                    Box::new(Direct::new(&name, Arc::clone(&engines), max_batch_size > 0))
                }
            }
        };
        Ok(LoadedVersion {
            name: dir.name.clone(),
            version,
            config,
            engines,
            scheduler,
            inputs,
            outputs,
            stats: Stats::default(),
            pending: AtomicUsize::new(0),
            intake: Intake::new(room),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// The model's config as served: `config.toml` auto-completed (its `max_batch_size` is
    /// always `Some`).
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

    /// Requests waiting for an engine instance now (in the batching queue, or for an idle
    /// instance).
    pub fn queue_depth(&self) -> usize {
        self.scheduler.queued()
    }

    /// Room for request bodies: a front end that reads bodies itself takes a request's room
    /// ([`Intake::admit`]) before reading its body and holds it until the answer.
    pub fn intake(&self) -> &Intake {
        &self.intake
    }

    /// Requests queued or executing now, on every route.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Runs the model off the async executor (on the scheduler's threads). `outputs` selects
    /// and orders the outputs returned; `None` returns all in model order.
    pub async fn infer(
        &self,
        inputs: Vec<NamedTensor>,
        outputs: Option<Vec<String>>,
    ) -> Result<Inference, ModelError> {
        self.infer_with(inputs, outputs, RequestOptions::default())
            .await
    }

    /// [`LoadedVersion::infer`] with a priority and a queue timeout (for models whose
    /// dynamic batching has priority levels or a queue policy).
    pub async fn infer_with(
        &self,
        inputs: Vec<NamedTensor>,
        outputs: Option<Vec<String>>,
        options: RequestOptions,
    ) -> Result<Inference, ModelError> {
        let started = Instant::now();
        let _pending = PendingGuard::enter(&self.pending);
        let submitted = self.submit(inputs, outputs.as_deref(), Caller::Async, &options, started);
        let result = match submitted {
            Ok((prepared, ticket)) => self.finish(prepared, ticket.wait().await),
            Err(e) => Err(e),
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
        let _pending = PendingGuard::enter(&self.pending);
        let result = self
            .submit(
                inputs,
                outputs,
                Caller::Blocking,
                &RequestOptions::default(),
                started,
            )
            .and_then(|(prepared, ticket)| self.finish(prepared, ticket.wait_blocking()));
        self.record(&result, started);
        result
    }

    /// Validates a request and hands it to the scheduler.
    fn submit(
        &self,
        inputs: Vec<NamedTensor>,
        outputs: Option<&[String]>,
        caller: Caller,
        options: &RequestOptions,
        started: Instant,
    ) -> Result<(Prepared, crate::batch::Ticket), ModelError> {
        let selected = validate::outputs(&self.outputs, outputs)?;
        let max_batch_size = self.config.max_batch_size.unwrap_or(0);
        let ordered = validate::inputs(&self.inputs, max_batch_size, inputs)?;
        let rows = ordered
            .first()
            .and_then(|t| t.shape().first().copied())
            .unwrap_or(1);
        let prepared = Prepared {
            selected,
            validated: started.elapsed(),
        };
        let ticket = self.scheduler.submit(ordered, rows, caller, options)?;
        Ok((prepared, ticket))
    }

    fn finish(
        &self,
        prepared: Prepared,
        reply: Result<BatchResult, SchedulerError>,
    ) -> Result<Inference, ModelError> {
        let r = reply?;
        if r.first {
            self.stats.executed(r.batch_rows as u64);
        }
        let t = Instant::now();
        let outputs = self.select(prepared.selected, r.outputs)?;
        let timings = Timings {
            queue: r.queue,
            compute_input: prepared.validated,
            compute_infer: r.compute,
            compute_output: t.elapsed(),
        };
        Ok(Inference { outputs, timings })
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

impl Predictor for LoadedVersion {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> u64 {
        self.version
    }

    fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    fn predict(
        &self,
        inputs: Vec<NamedTensor>,
        outputs: Option<&[String]>,
    ) -> Result<Vec<NamedTensor>, PredictError> {
        self.infer_blocking(inputs, outputs)
            .map(|inference| inference.outputs)
            .map_err(|e| PredictError {
                kind: e.kind(),
                message: e.to_string(),
            })
    }
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
        .chain(config.max_batch_size.map(|n| n as usize))
        .filter(|&n| n > 1)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}
