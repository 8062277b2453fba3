//! What engines are loaded with: the options a model's `config.toml` sets for its engine.
//! The registry parses `config.toml` into these types; the engines own them.

use super::{opencl, Dim, TensorSpec};
use crate::tensor::DataType;

/// What an engine needs besides the model file.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `[[input]]` overrides from `config.toml`: type and shape facts for inputs the model
    /// leaves unspecified or that should be pinned.
    pub inputs: Vec<TensorOverride>,
    /// `[ort]` session options from `config.toml` (used by the ort engine only).
    pub ort: OrtConfig,
    /// Batch sizes worth preparing at load because the dynamic batcher forms them
    /// (its preferred sizes and `max_batch_size`). Engines that specialise plans per batch
    /// size (tract) prepare these eagerly; others ignore them.
    pub batch_sizes: Vec<usize>,
    /// Whether the model may be batched at other sizes too (it has a dynamic batcher, or may
    /// get one by auto-complete, which knows its sizes only after load): engines that
    /// specialise plans per batch size may then make more on first use.
    pub specialise_on_use: bool,
    /// `[opencl]` device selection and partitioning (used by the opencl engine only).
    pub opencl: opencl::OpenclConfig,
}

/// An `[[input]]` or `[[output]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorOverride {
    pub name: String,
    pub datatype: Option<DataType>,
    /// Dimensions; `-1` marks a dynamic one.
    pub dims: Option<Vec<i64>>,
}

/// `[ort]`: ONNX Runtime session options. Unset keys keep ONNX Runtime's defaults, except
/// `allow_spinning`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrtConfig {
    /// Threads that split the work of one operator (default: one per physical core).
    pub intra_op_threads: Option<u32>,
    /// Threads that run independent operators at once; more than 1 turns on ONNX Runtime's
    /// parallel execution mode.
    pub inter_op_threads: Option<u32>,
    pub graph_optimization_level: Option<GraphOptimizationLevel>,
    /// Whether ONNX Runtime's thread pools spin waiting for work (its `allow_spinning`).
    /// Unset means off, unlike ONNX Runtime's default: spinning threads burn the cores the
    /// server's own threads (HTTP, other models) need between runs.
    pub allow_spinning: Option<bool>,
}

/// ONNX Runtime's graph optimization levels (its default is `all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphOptimizationLevel {
    Disable,
    Basic,
    Extended,
    All,
}

impl GraphOptimizationLevel {
    /// Every level with its `config.toml` name.
    pub const NAMES: [(&'static str, GraphOptimizationLevel); 4] = [
        ("disable", GraphOptimizationLevel::Disable),
        ("basic", GraphOptimizationLevel::Basic),
        ("extended", GraphOptimizationLevel::Extended),
        ("all", GraphOptimizationLevel::All),
    ];

    /// The `config.toml` name.
    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, l)| *l == self)
            .map_or("all", |(n, _)| n)
    }

    pub fn from_name(name: &str) -> Option<GraphOptimizationLevel> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, l)| *l)
    }
}

/// Which model tensors a `config.toml` override section describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideOf {
    Input,
    Output,
}

/// Finds the spec a `[[input]]`/`[[output]]` entry names and checks the entry against it: the
/// declared datatype must be the model's, declared dims compatible with its fixed ones.
/// Returns the spec and the declared dims, for the caller to apply as its engine allows.
pub fn check_override<'a>(
    specs: &'a mut [TensorSpec],
    ov: &TensorOverride,
    of: OverrideOf,
) -> Result<(&'a mut TensorSpec, Option<Vec<Dim>>), String> {
    let (section, role, verb) = match of {
        OverrideOf::Input => ("input", "inputs", "takes"),
        OverrideOf::Output => ("output", "outputs", "produces"),
    };
    let names = specs
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let spec = specs
        .iter_mut()
        .find(|s| s.name == ov.name)
        .ok_or_else(|| {
            format!(
                "config.toml [[{section}]] names '{}', which is not a model {section} ({role}: {names})",
                ov.name
            )
        })?;
    if let Some(dt) = ov.datatype {
        if dt != spec.dtype {
            return Err(format!(
                "config.toml [[{section}]] '{}' declares {dt} but the model {verb} {}",
                ov.name, spec.dtype
            ));
        }
    }
    let declared = match &ov.dims {
        None => None,
        Some(dims) => {
            let declared: Vec<Dim> = dims.iter().map(|&d| Dim::from_i64(d)).collect();
            if !spec.compatible_with(&declared) {
                return Err(format!(
                    "config.toml [[{section}]] '{}' declares dims {dims:?}, incompatible with the model's {}",
                    ov.name,
                    spec.shape_string()
                ));
            }
            Some(declared)
        }
    };
    Ok((spec, declared))
}
