//! Engines: synchronous executors of one loaded model version.
//!
//! An engine is loaded once and then runs from many threads at a time. Engines never see HTTP,
//! hooks or batching; the serving core ([`crate::models`]) calls them from blocking threads,
//! never from the async executor's workers.

pub mod import;
pub mod onnx_file;
pub mod opencl;
mod options;
pub mod ort;
mod rows;
pub(crate) mod tract;

pub use options::{
    check_override, GraphOptimizationLevel, LoadOptions, OrtConfig, OverrideOf, TensorOverride,
};

use crate::tensor::{DataType, Tensor};
use std::fmt;
use std::path::Path;

/// A dimension of a tensor as the model declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    /// Any size at run time (symbolic in the model, `-1` in v2 metadata).
    Dynamic,
}

impl Dim {
    /// The v2 metadata form: the size, or `-1` for a dynamic dimension.
    pub fn as_i64(self) -> i64 {
        match self {
            Dim::Fixed(n) => i64::try_from(n).unwrap_or(i64::MAX),
            Dim::Dynamic => -1,
        }
    }

    /// Builds from the config/metadata form, where any negative value means dynamic.
    pub fn from_i64(v: i64) -> Dim {
        usize::try_from(v).map_or(Dim::Dynamic, Dim::Fixed)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Dynamic => f.write_str("-1"),
        }
    }
}

/// Name, element type and shape of a model input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DataType,
    pub shape: Vec<Dim>,
}

impl TensorSpec {
    /// The shape in v2 metadata form (`-1` for dynamic dimensions).
    pub fn dims(&self) -> Vec<i64> {
        self.shape.iter().map(|d| d.as_i64()).collect()
    }

    /// True when `declared` has this spec's rank and agrees on every dimension both fix
    /// (a config override may pin a dynamic dimension, never change a fixed one).
    pub fn compatible_with(&self, declared: &[Dim]) -> bool {
        declared.len() == self.shape.len()
            && declared.iter().zip(&self.shape).all(|(d, m)| match (d, m) {
                (Dim::Fixed(a), Dim::Fixed(b)) => a == b,
                _ => true,
            })
    }

    /// `[-1, 64]`-style rendering for messages and tables.
    pub fn shape_string(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(Dim::to_string).collect();
        format!("[{}]", dims.join(", "))
    }
}

/// The CPU or device runtime that executes a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Backend {
    /// tract: pure-Rust ONNX inference, always available.
    #[default]
    Tract,
    /// ONNX Runtime, loaded at run time from libonnxruntime.so (scripts/fetch-onnxruntime
    /// installs it; ORT_DYLIB_PATH names another).
    // The library search: crate::engine::ort::LibrarySearch (these lines are `--help` text).
    Ort,
    /// An OpenCL device (FPGA, GPU, CPU) for the nodes its kernels cover, tract or ONNX
    /// Runtime for the rest; OpenCL is loaded at run time.
    Opencl,
}

impl Backend {
    /// The name used in `config.toml` and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Tract => "tract",
            Backend::Ort => "ort",
            Backend::Opencl => "opencl",
        }
    }

    /// Parses a `config.toml` / CLI backend name.
    pub fn from_name(name: &str) -> Option<Backend> {
        match name {
            "tract" => Some(Backend::Tract),
            "ort" => Some(Backend::Ort),
            "opencl" => Some(Backend::Opencl),
            _ => None,
        }
    }

    /// Names of every backend this build has, for error messages.
    pub fn available() -> &'static str {
        "tract, ort, opencl"
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where an engine runs a model's nodes, for engines that split a model between a device
/// and the CPU (v2 metadata `parameters`, `scoria model show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The device, e.g. "pthread-haswell (Portable Computing Language)".
    pub device: String,
    pub nodes_on_device: usize,
    pub nodes_on_cpu: usize,
    /// The engine that runs the CPU nodes: "tract" or "ort" (`[opencl] cpu_backend`).
    pub cpu_backend: String,
    /// Maximal runs of consecutive nodes on one side, in graph order.
    pub segments: Vec<PlacementSegment>,
}

/// A run of consecutive nodes placed on the same side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementSegment {
    pub on_device: bool,
    pub nodes: usize,
    /// Names (or first output names) of the segment's first and last nodes.
    pub first: String,
    pub last: String,
}

impl Placement {
    /// One line, e.g. `device: 4 nodes [fc1..probabilities]; cpu: 1 node [label]`.
    pub fn summary(&self) -> String {
        self.segments
            .iter()
            .map(|s| {
                let side = if s.on_device { "device" } else { "cpu" };
                let nodes = if s.nodes == 1 { "node" } else { "nodes" };
                let span = if s.first == s.last {
                    s.first.clone()
                } else {
                    format!("{}..{}", s.first, s.last)
                };
                format!("{side}: {} {nodes} [{span}]", s.nodes)
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Failures of loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model file could not be read, parsed or prepared.
    #[error("{0}")]
    Load(String),
    /// Running the model failed.
    #[error("{0}")]
    Run(String),
}

/// A loaded model version, ready to run from many threads at once.
pub trait Engine: Send + Sync {
    /// The backend that runs this engine.
    fn backend(&self) -> Backend;

    /// The model's inputs, in the order [`Engine::run`] takes them.
    fn inputs(&self) -> &[TensorSpec];

    /// The model's outputs, in the order [`Engine::run`] returns them.
    fn outputs(&self) -> &[TensorSpec];

    /// Runs the model. `inputs` are in [`Engine::inputs`] order and already validated
    /// against the specs (type, rank, fixed dims); the result holds every output in
    /// [`Engine::outputs`] order. Blocks the calling thread for the whole computation.
    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError>;

    /// Which nodes run on a device and which on the CPU; `None` for engines that run the
    /// whole model in one place.
    fn placement(&self) -> Option<Placement> {
        None
    }

    /// Whether several threads' [`Engine::run`] calls proceed at once. Engines that take
    /// their runs one at a time (a session or command queue behind a lock) answer `false`,
    /// and the serving core then hands each request an idle instance, counting the wait for
    /// one as queue time rather than compute.
    fn concurrent(&self) -> bool {
        true
    }

    /// The most rows worth running at once where the caller may split its rows among runs
    /// (the dynamic batcher, [`Engine::run_rows`]): a run of more would cost more per row
    /// (tract, where batch 1's plan packs convolution patches image by image and a batched
    /// plan would materialise them), or memory out of proportion to its rows (tract: a plan
    /// of its own, the model's weights again, made where only smaller sizes have plans).
    /// `None`: no bound but the model's `max_batch_size`.
    fn rows_per_run(&self) -> Option<usize> {
        None
    }

    /// Runs `inputs` as [`Engine::run`] does, where their dimension 0 holds `rows` rows
    /// that the model computes independently of each other (a batched model, as Triton
    /// defines `max_batch_size` > 0): when that is more than [`Engine::rows_per_run`] and
    /// every output carries the batch dimension, as consecutive runs of at most that many
    /// rows, their outputs joined.
    fn run_rows(&self, inputs: Vec<Tensor>, rows: usize) -> Result<Vec<Tensor>, EngineError> {
        match self.rows_per_run() {
            Some(most) if rows > most && rows::all_batched(self.outputs()) => {
                rows::run_in_parts(|part| self.run(part), inputs, rows, most)
            }
            _ => self.run(inputs),
        }
    }
}

/// Loads `path` with `backend`.
pub fn load(
    backend: Backend,
    path: &Path,
    options: &LoadOptions,
) -> Result<Box<dyn Engine>, EngineError> {
    match backend {
        Backend::Tract => Ok(Box::new(tract::TractEngine::load(path, options)?)),
        Backend::Ort => Ok(Box::new(self::ort::OrtEngine::load(path, options)?)),
        Backend::Opencl => Ok(Box::new(opencl::OpenclEngine::load(path, options)?)),
    }
}

/// How many instances of the model at `path` to load when its `config.toml` sets none: for
/// ort, [`ort::small_model_instances`] on a small model whose `[ort]` leaves the threads to
/// scoria; otherwise 1 (tract's plans and OpenCL queues need no more to serve concurrency).
pub fn default_instances(backend: Backend, path: &Path, options: &LoadOptions) -> u32 {
    match backend {
        Backend::Ort if self::ort::runs_small(path, &options.ort) => {
            self::ort::small_model_instances()
        }
        _ => 1,
    }
}

/// Checks that `path` holds a parseable ONNX model with a graph, without preparing it to run.
/// Used by registration and listing, which must stay fast for large models.
pub fn check_onnx(path: &Path) -> Result<(), EngineError> {
    tract::check_onnx(path)
}
