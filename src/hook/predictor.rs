//! What a score hook calls as `model`: anything that can predict, so that the scripting layer
//! knows no serving core (and can be tested against a stand-in).

use crate::engine::TensorSpec;
use crate::tensor::{ErrorKind, NamedTensor};
use std::sync::Arc;

/// The model behind a hook's `model.predict(...)`. The serving core's loaded versions
/// implement it; calls come from hook threads (blocking, never executor workers).
pub trait Predictor: Send + Sync {
    /// The model's name, as the script reads `model.name`.
    fn name(&self) -> &str;
    /// The version being served, as the script reads `model.version`.
    fn version(&self) -> u64;
    /// The model's inputs, in the order it takes them.
    fn inputs(&self) -> &[TensorSpec];
    /// The model's outputs, in the order it produces them.
    fn outputs(&self) -> &[TensorSpec];
    /// Runs the model on the calling thread; `outputs` selects and orders the outputs
    /// returned (`None`: all, in model order).
    fn predict(
        &self,
        inputs: Vec<NamedTensor>,
        outputs: Option<&[String]>,
    ) -> Result<Vec<NamedTensor>, PredictError>;
}

/// Why a prediction failed: its kind (whose fault, whether to retry) and a one-line reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct PredictError {
    pub kind: ErrorKind,
    pub message: String,
}

/// The script's `model`: what `model.predict` runs.
#[derive(Clone)]
pub(super) struct ScriptModel(pub Arc<dyn Predictor>);
