//! The ONNX Runtime engine (`backend = "ort"`), through the `ort` crate.
//!
//! ONNX Runtime is loaded at run time from `libonnxruntime.so` ([`library`]); without it an
//! ort model fails to load with a one-line reason and the other models are unaffected.
//! A session runs one request at a time (`Session::run` takes `&mut self`), so each engine
//! holds its session behind a mutex; parallelism comes from loading several instances, each
//! with its own session. Session options come from the model's `[ort]` table; a small model
//! that sets no threads gets one intra-op thread and an instance per core ([`runs_small`]).

mod library;

pub use library::{prepare_process, LibrarySearch, INSTALL_COMMAND, ORT_VERSION};

use super::{
    check_override, Backend, Dim, Engine, EngineError, LoadOptions, OverrideOf, TensorSpec,
};
use crate::engine::{GraphOptimizationLevel, OrtConfig, TensorOverride};
use crate::tensor::{DataType, Tensor, TensorData};
use ::ort::session::builder::{GraphOptimizationLevel as OrtLevel, SessionBuilder};
use ::ort::session::{Session, SessionInputValue};
use ::ort::value::{DynValue, Outlet, Tensor as OrtTensor, TensorElementType, Utf8Data, ValueType};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

/// A model loaded into an ONNX Runtime session.
pub struct OrtEngine {
    session: Mutex<Session>,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
}

impl OrtEngine {
    /// Loads the model at `path`, finding ONNX Runtime through the process's search
    /// ([`LibrarySearch::from_process`]).
    pub fn load(path: &Path, options: &LoadOptions) -> Result<OrtEngine, EngineError> {
        OrtEngine::load_with(path, options, &LibrarySearch::from_process())
    }

    /// Loads the model at `path`, finding ONNX Runtime with `search`.
    pub fn load_with(
        path: &Path,
        options: &LoadOptions,
        search: &LibrarySearch,
    ) -> Result<OrtEngine, EngineError> {
        let mut config = options.ort.clone();
        if runs_small(path, &config) {
            config.intra_op_threads = Some(1);
        }
        let session = session(search, &config, |b| b.commit_from_file(path))?;
        OrtEngine::from_session(session, &options.inputs)
    }

    /// Loads an encoded ONNX `ModelProto` held in memory (the OpenCL engine's CPU segments),
    /// finding ONNX Runtime through the process's search and applying the `[ort]` options.
    pub(crate) fn load_from_memory(
        model: &[u8],
        config: &OrtConfig,
    ) -> Result<OrtEngine, EngineError> {
        let search = LibrarySearch::from_process();
        let session = session(&search, config, |b| b.commit_from_memory(model))?;
        OrtEngine::from_session(session, &[])
    }

    fn from_session(
        session: Session,
        overrides: &[TensorOverride],
    ) -> Result<OrtEngine, EngineError> {
        let inputs = specs("input", session.inputs())?;
        let inputs = apply_input_overrides(inputs, overrides)?;
        let outputs = specs("output", session.outputs())?;
        Ok(OrtEngine {
            session: Mutex::new(session),
            inputs,
            outputs,
        })
    }
}

/// Model files up to this size (their weights, near enough) run as small models: see
/// [`runs_small`].
pub const SMALL_MODEL_BYTES: u64 = 1 << 20;

/// Whether the model at `path` is small (at most [`SMALL_MODEL_BYTES`]) and its `[ort]` sets
/// neither thread count. Such a model's session runs each operator on one thread, and
/// [`small_model_instances`] sessions serve concurrency instead: splitting a small model's
/// operators over ONNX Runtime's intra-op pool costs more in wake-ups than it saves, and one
/// session runs one request at a time. Measured over HTTP (perf_analyzer, 2 cores): lenet
/// 1.26× / 1.21× / 1.11× the throughput of ONNX Runtime's default threads with one session at
/// concurrency 1 / 4 / 16, digits 1.02× / 1.02× / 0.97×, for under 1 MiB more memory.
pub fn runs_small(path: &Path, config: &OrtConfig) -> bool {
    config.intra_op_threads.is_none()
        && config.inter_op_threads.is_none()
        && std::fs::metadata(path).is_ok_and(|m| m.len() <= SMALL_MODEL_BYTES)
}

/// Instances of a small model (see [`runs_small`]) when its `config.toml` sets none: one per
/// core, at most 4.
pub fn small_model_instances() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4) as u32)
}

/// A session from the ONNX Runtime environment `search` finds, configured with `config` and
/// committed by `commit`.
fn session(
    search: &LibrarySearch,
    config: &OrtConfig,
    commit: impl FnOnce(&mut SessionBuilder) -> ::ort::Result<Session>,
) -> Result<Session, EngineError> {
    let environment = library::environment(search).map_err(EngineError::Load)?;
    let load = |e: ::ort::Error| EngineError::Load(format!("ONNX Runtime: {e}"));
    let builder = Session::builder(&environment).map_err(load)?;
    commit(&mut configure(builder, config)?).map_err(load)
}

/// Applies the `[ort]` session options.
fn configure(mut b: SessionBuilder, config: &OrtConfig) -> Result<SessionBuilder, EngineError> {
    let bad = |key: &str, e: ::ort::Error<SessionBuilder>| {
        EngineError::Load(format!("ONNX Runtime rejected [ort] {key}: {e}"))
    };
    if let Some(n) = config.intra_op_threads {
        b = b
            .with_intra_threads(n as usize)
            .map_err(|e| bad("intra_op_threads", e))?;
    }
    if let Some(n) = config.inter_op_threads {
        // Inter-op threads only run independent nodes concurrently in parallel mode.
        b = b
            .with_inter_threads(n as usize)
            .map_err(|e| bad("inter_op_threads", e))?
            .with_parallel_execution(n > 1)
            .map_err(|e| bad("inter_op_threads", e))?;
    }
    let spinning = config.allow_spinning.unwrap_or(false);
    b = b
        .with_intra_op_spinning(spinning)
        .map_err(|e| bad("allow_spinning", e))?
        .with_inter_op_spinning(spinning)
        .map_err(|e| bad("allow_spinning", e))?;
    if let Some(level) = config.graph_optimization_level {
        b = b
            .with_optimization_level(optimization_level(level))
            .map_err(|e| bad("graph_optimization_level", e))?;
    }
    Ok(b)
}

fn optimization_level(level: GraphOptimizationLevel) -> OrtLevel {
    match level {
        GraphOptimizationLevel::Disable => OrtLevel::Disable,
        GraphOptimizationLevel::Basic => OrtLevel::Level1,
        GraphOptimizationLevel::Extended => OrtLevel::Level2,
        GraphOptimizationLevel::All => OrtLevel::All,
    }
}

/// Tensor specs from the session's metadata; symbolic dimensions become [`Dim::Dynamic`].
fn specs(kind: &str, outlets: &[Outlet]) -> Result<Vec<TensorSpec>, EngineError> {
    outlets
        .iter()
        .map(|o| match o.dtype() {
            ValueType::Tensor { ty, shape, .. } => {
                let dtype = data_type(*ty).ok_or_else(|| {
                    EngineError::Load(format!(
                        "{kind} '{}' has element type {ty}, which scoria does not serve yet",
                        o.name()
                    ))
                })?;
                Ok(TensorSpec {
                    name: o.name().to_string(),
                    dtype,
                    shape: shape.iter().map(|&d| Dim::from_i64(d)).collect(),
                })
            }
            other => Err(EngineError::Load(format!(
                "{kind} '{}' is {other:?}, not a tensor; scoria serves tensors only",
                o.name()
            ))),
        })
        .collect()
}

/// Applies `[[input]]` entries: each must name a model input; a datatype must match the
/// model's (ONNX Runtime cannot retype an input); dims must agree with the model's fixed
/// dims and pin the dynamic ones, so requests are checked before they reach the session.
fn apply_input_overrides(
    mut specs: Vec<TensorSpec>,
    overrides: &[TensorOverride],
) -> Result<Vec<TensorSpec>, EngineError> {
    for ov in overrides {
        let (spec, declared) =
            check_override(&mut specs, ov, OverrideOf::Input).map_err(EngineError::Load)?;
        // A dimension fixed by either side is fixed.
        for (s, d) in spec.shape.iter_mut().zip(declared.into_iter().flatten()) {
            if *s == Dim::Dynamic {
                *s = d;
            }
        }
    }
    Ok(specs)
}

impl Engine for OrtEngine {
    fn backend(&self) -> Backend {
        Backend::Ort
    }

    fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    /// One run at a time per session (`Session::run` takes `&mut`).
    fn concurrent(&self) -> bool {
        false
    }

    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
        let run = |e: ::ort::Error| EngineError::Run(format!("ONNX Runtime: {e}"));
        let values = inputs
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let name = self.inputs.get(i).map_or("?", |s| s.name.as_str());
                to_ort(t).map_err(|why| EngineError::Run(format!("input '{name}': {why}")))
            })
            .collect::<Result<Vec<SessionInputValue<'static>>, EngineError>>()?;
        let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        let outputs = session.run(values.as_slice()).map_err(run)?;
        outputs
            .values()
            .zip(&self.outputs)
            .map(|(v, spec)| {
                from_ort(&v)
                    .map_err(|why| EngineError::Run(format!("output '{}': {why}", spec.name)))
            })
            .collect()
    }
}

/// A BYTES element as ONNX Runtime string data: passed through as is (ONNX Runtime does not
/// check UTF-8), which only requires that it holds no NUL byte.
#[derive(Clone)]
struct RawString(Vec<u8>);

impl Utf8Data for RawString {
    fn as_utf8_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Moves a tensor into an ONNX Runtime value; numeric data is handed over without a copy.
fn to_ort(t: Tensor) -> Result<SessionInputValue<'static>, String> {
    let (shape, data) = t.into_parts();
    let owned = |r: ::ort::Result<DynValue>| r.map(SessionInputValue::Owned);
    macro_rules! tensor {
        ($v:expr) => {
            owned(OrtTensor::from_array((shape, $v)).map(|t| t.into_dyn()))
        };
    }
    let value = match data {
        TensorData::Bool(v) => tensor!(v),
        TensorData::U8(v) => tensor!(v),
        TensorData::U16(v) => tensor!(v),
        TensorData::U32(v) => tensor!(v),
        TensorData::U64(v) => tensor!(v),
        TensorData::I8(v) => tensor!(v),
        TensorData::I16(v) => tensor!(v),
        TensorData::I32(v) => tensor!(v),
        TensorData::I64(v) => tensor!(v),
        TensorData::F32(v) => tensor!(v),
        TensorData::F64(v) => tensor!(v),
        TensorData::Bytes(b) => {
            if let Some(i) = b.iter().position(|e| e.contains(&0)) {
                return Err(format!(
                    "BYTES element {i} contains a NUL byte, which ONNX Runtime's string \
                     tensors cannot hold"
                ));
            }
            let strings: Vec<RawString> = b.into_iter().map(RawString).collect();
            owned(OrtTensor::from_string_array((shape, strings.as_slice())).map(|t| t.into_dyn()))
        }
    };
    value.map_err(|e| e.to_string())
}

/// Copies an ONNX Runtime output into a tensor.
fn from_ort(v: &DynValue) -> Result<Tensor, String> {
    let err = |e: ::ort::Error| e.to_string();
    let ty = match v.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => return Err(format!("the model produced {other:?}, not a tensor")),
    };
    macro_rules! take {
        ($variant:ident, $t:ty) => {{
            let (shape, data) = v.try_extract_tensor::<$t>().map_err(err)?;
            (shape, TensorData::$variant(data.to_vec()))
        }};
    }
    let (shape, data) = match data_type(ty) {
        Some(DataType::Bool) => take!(Bool, bool),
        Some(DataType::U8) => take!(U8, u8),
        Some(DataType::U16) => take!(U16, u16),
        Some(DataType::U32) => take!(U32, u32),
        Some(DataType::U64) => take!(U64, u64),
        Some(DataType::I8) => take!(I8, i8),
        Some(DataType::I16) => take!(I16, i16),
        Some(DataType::I32) => take!(I32, i32),
        Some(DataType::I64) => take!(I64, i64),
        Some(DataType::F32) => take!(F32, f32),
        Some(DataType::F64) => take!(F64, f64),
        Some(DataType::Bytes) => {
            let (shape, strings) = v.try_extract_strings().map_err(|e| {
                format!("{e} (scoria reads ONNX Runtime string outputs as UTF-8 text)")
            })?;
            let bytes = strings.into_iter().map(String::into_bytes).collect();
            (shape, TensorData::Bytes(bytes))
        }
        None => {
            return Err(format!(
                "the model produced element type {ty}, which scoria does not serve"
            ))
        }
    };
    let dims = shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d} in {shape}")))
        .collect::<Result<Vec<usize>, String>>()?;
    Tensor::new(dims, data).map_err(|e| e.to_string())
}

fn data_type(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::U8,
        TensorElementType::Uint16 => DataType::U16,
        TensorElementType::Uint32 => DataType::U32,
        TensorElementType::Uint64 => DataType::U64,
        TensorElementType::Int8 => DataType::I8,
        TensorElementType::Int16 => DataType::I16,
        TensorElementType::Int32 => DataType::I32,
        TensorElementType::Int64 => DataType::I64,
        TensorElementType::Float32 => DataType::F32,
        TensorElementType::Float64 => DataType::F64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
