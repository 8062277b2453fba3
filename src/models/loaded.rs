//! A loaded model version: its engine, its effective tensor specs and the inference path.

use super::stats::{Stats, Timings};
use super::{validate, ModelError};
use crate::engine::{self, Backend, Dim, Engine, LoadOptions, TensorSpec};
use crate::registry::config::TensorOverride;
use crate::registry::{ModelConfig, ModelDir, MODEL_FILE};
use crate::tensor::Tensor;
use std::sync::Arc;
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

/// One model version, loaded and ready to run.
pub struct LoadedVersion {
    name: String,
    version: u64,
    config: ModelConfig,
    engine: Box<dyn Engine>,
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
        let config = dir.config.as_ref().map_err(|e| e.to_string())?.clone();
        let path = dir.version_path(version).join(MODEL_FILE);
        if !path.is_file() {
            return Err(format!("{} is missing", path.display()));
        }
        let backend = config.backend.unwrap_or(default_backend);
        let options = LoadOptions {
            inputs: config.inputs.clone(),
        };
        let engine = engine::load(backend, &path, &options)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let inputs = engine.inputs().to_vec();
        let outputs = apply_output_overrides(engine.outputs(), &config.outputs)?;
        if config.max_batch_size > 0 {
            if let Some(s) = inputs.iter().find(|s| s.shape.is_empty()) {
                return Err(format!(
                    "max_batch_size is set but input '{}' is a scalar with no batch dimension",
                    s.name
                ));
            }
        }
        Ok(LoadedVersion {
            name: dir.name.clone(),
            version,
            config,
            engine,
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
        self.engine.backend()
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

    /// Runs the model on a blocking-pool thread, never on the async executor's workers.
    /// `outputs` selects and orders the outputs returned; `None` returns all in model order.
    pub async fn infer(
        self: &Arc<Self>,
        inputs: Vec<NamedTensor>,
        outputs: Option<Vec<String>>,
    ) -> Result<Inference, ModelError> {
        let this = Arc::clone(self);
        let enqueued = Instant::now();
        tokio::task::spawn_blocking(move || {
            this.run(inputs, outputs.as_deref(), enqueued.elapsed())
        })
        .await
        .map_err(|e| ModelError::Internal(format!("inference task failed: {e}")))?
    }

    /// [`LoadedVersion::infer`] on the calling thread, for offline use (CLI, hooks, benches).
    pub fn infer_blocking(
        &self,
        inputs: Vec<NamedTensor>,
        outputs: Option<&[String]>,
    ) -> Result<Inference, ModelError> {
        self.run(inputs, outputs, Duration::ZERO)
    }

    fn run(
        &self,
        inputs: Vec<NamedTensor>,
        outputs: Option<&[String]>,
        queue: Duration,
    ) -> Result<Inference, ModelError> {
        let started = Instant::now();
        let result = self.run_timed(inputs, outputs, queue);
        match &result {
            Ok(inference) => {
                let batch = inference
                    .outputs
                    .first()
                    .and_then(|o| o.tensor.shape().first().copied())
                    .unwrap_or(1);
                self.stats.success(batch as u64, &inference.timings);
            }
            Err(_) => self.stats.failure(queue + started.elapsed()),
        }
        result
    }

    fn run_timed(
        &self,
        inputs: Vec<NamedTensor>,
        outputs: Option<&[String]>,
        queue: Duration,
    ) -> Result<Inference, ModelError> {
        let t0 = Instant::now();
        let selected = validate::outputs(&self.outputs, outputs)?;
        let ordered = validate::inputs(&self.inputs, self.config.max_batch_size, inputs)?;
        let t1 = Instant::now();
        let mut produced: Vec<Option<Tensor>> =
            self.engine.run(ordered)?.into_iter().map(Some).collect();
        let t2 = Instant::now();
        let outputs = selected
            .into_iter()
            .map(|i| {
                let tensor = produced.get_mut(i).and_then(Option::take).ok_or_else(|| {
                    ModelError::Internal(format!(
                        "engine returned {} outputs, expected {}",
                        produced.len(),
                        self.outputs.len()
                    ))
                })?;
                Ok(NamedTensor {
                    name: self.outputs[i].name.clone(),
                    tensor,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let timings = Timings {
            queue,
            compute_input: t1 - t0,
            compute_infer: t2 - t1,
            compute_output: t2.elapsed(),
        };
        Ok(Inference { outputs, timings })
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
        let names = model
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let spec = specs
            .iter_mut()
            .find(|s| s.name == ov.name)
            .ok_or_else(|| {
                format!(
                    "config [[output]] names '{}', which is not a model output (outputs: {names})",
                    ov.name
                )
            })?;
        if let Some(dt) = ov.datatype {
            if dt != spec.dtype {
                return Err(format!(
                    "config [[output]] '{}' declares {dt} but the model produces {}",
                    ov.name, spec.dtype
                ));
            }
        }
        if let Some(dims) = &ov.dims {
            let declared: Vec<Dim> = dims.iter().map(|&d| Dim::from_i64(d)).collect();
            let compatible = declared.len() == spec.shape.len()
                && declared.iter().zip(&spec.shape).all(|(d, m)| match (d, m) {
                    (Dim::Fixed(a), Dim::Fixed(b)) => a == b,
                    _ => true,
                });
            if !compatible {
                return Err(format!(
                    "config [[output]] '{}' declares dims {dims:?}, incompatible with the model's {}",
                    ov.name,
                    spec.shape_string()
                ));
            }
            spec.shape = declared;
        }
    }
    Ok(specs)
}
