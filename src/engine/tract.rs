//! The tract engine: pure-Rust ONNX inference.
//!
//! The model is typed and optimized once at load, keeping a symbolic batch dimension where
//! the model declares one. Because tract optimizes a concrete shape much better than a
//! symbolic one, plans specialised to one batch size are optimized too: batch 1 (the common
//! request) always, and for models behind the dynamic batcher the sizes it forms (at load)
//! and other sizes (on first use, when [`LoadOptions::specialise_on_use`]). Each plan holds its own packed weights (about the model's
//! size), so their number is bounded by bytes: [`PLAN_BYTES`](plans::PLAN_BYTES) over the model's weight bytes
//! (at most [`MAX_SPECIALISED`](plans::MAX_SPECIALISED)); a model too large for one more plan runs its general plan
//! only, and the unoptimized model is kept only while more plans may be made. Where
//! specialised plans exist, the general plan is optimized on first use (a request of
//! another size), not at load; when no more specialised plans may be made, the typed model is
//! not kept for it either (it is about the weights' size again): the general plan's first use
//! reads the model file anew, refusing a file that changed since load.
//! Plans are immutable and shared: each run spawns its own state, so any number of threads
//! can run them at once.

use super::{import, onnx_file, Backend, Dim, Engine, EngineError, LoadOptions, TensorSpec};
use crate::tensor::{DataType, Tensor, TensorData};
use crate::with_tensor_data;
use plans::{
    plans_within, weight_bytes, General, ModelFile, Plan, Source, Specialised, Stamp, PLAN_BYTES,
};
use std::path::Path;
use std::sync::Arc;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::{
    DatumType, InferenceFact, InferenceModel, InferenceModelExt, IntoTValue, TDim, TValue,
    Tensor as TractTensor, TractResult, TypedFact, TypedModel,
};
use tract_onnx::tract_hir::infer::Factoid;

/// A model optimized by tract, runnable concurrently.
pub struct TractEngine {
    /// The general plan: symbolic batch dimension where the model has one.
    general: General,
    /// Plans with the batch symbol fixed, when the model has a symbolic batch.
    specialised: Option<Specialised>,
    /// Where no more specialised plans may be made (the weights' bound, or batch 1's plan
    /// packs convolution patches image by image) and the general plan would read the model
    /// again: the sizes up to which every size has its plan (see [`Engine::rows_per_run`]).
    rows_per_run: Option<usize>,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
}

impl TractEngine {
    /// Parses, types and optimizes the model at `path`, applying `options.inputs` overrides.
    pub fn load(path: &Path, options: &LoadOptions) -> Result<TractEngine, EngineError> {
        // tract's import is not hardened against every malformed model: a panic left in it
        // refuses the model rather than taking the server down.
        import::contain("tract", || {
            TractEngine::load_unguarded(path, options, PLAN_BYTES)
        })
    }

    /// As [`TractEngine::load`], specialised plans bounded by `plan_bytes`.
    fn load_unguarded(
        path: &Path,
        options: &LoadOptions,
        plan_bytes: u64,
    ) -> Result<TractEngine, EngineError> {
        let load = |e: anyhow::Error| EngineError::Load(format!("{e:#}"));
        // Before the read: a change after it then shows as a different stamp.
        let stamp = Stamp::of(path).map_err(|e| load(e.into()))?;
        let Typed {
            model: typed,
            input_names,
            output_names,
        } = read_typed(path, options)?;
        let inputs = specs(&input_names, |i| typed.input_fact(i).cloned().map_err(load))?;
        let outputs = specs(&output_names, |i| {
            typed.output_fact(i).cloned().map_err(load)
        })?;
        let batch_symbol = typed
            .input_outlets()
            .map_err(load)?
            .iter()
            .filter_map(|o| typed.outlet_fact(*o).ok())
            .find_map(|f| match f.shape.iter().next() {
                Some(TDim::Sym(s)) => Some(s.clone()),
                _ => None,
            });
        let limit = plans_within(weight_bytes(&typed), plan_bytes);
        let plans = match batch_symbol {
            Some(symbol) if limit > 0 => Ok(Specialised::new(
                typed,
                symbol,
                &options.batch_sizes,
                options.specialise_on_use,
                limit,
            )
            .map_err(load)?),
            _ => Err(typed),
        };
        let (general, specialised, rows_per_run) = match plans {
            Err(typed) => (
                General::ready(Plan::optimized(typed).map_err(load)?),
                None,
                None,
            ),
            Ok(s) => match &s.model {
                Some(typed) => (General::on_use(Source::Typed(typed.clone())), Some(s), None),
                None => {
                    let rows_per_run = Some(s.sizes_from_one());
                    let file = ModelFile {
                        path: path.to_path_buf(),
                        options: options.clone(),
                        stamp,
                    };
                    (General::on_use(Source::File(file)), Some(s), rows_per_run)
                }
            },
        };
        Ok(TractEngine {
            general,
            specialised,
            rows_per_run,
            inputs,
            outputs,
        })
    }
}

/// A model read and typed, with its inputs' and outputs' names.
struct Typed {
    model: TypedModel,
    input_names: Vec<String>,
    output_names: Vec<String>,
}

/// Parses and types the model at `path`, applying `options.inputs` overrides, with
/// per-channel scales folded into convolutions ([`fold::scales`]).
fn read_typed(path: &Path, options: &LoadOptions) -> Result<Typed, EngineError> {
    let load = |e: anyhow::Error| EngineError::Load(format!("{e:#}"));
    let proto = onnx_file::read(path).map_err(load)?;
    import::check_graph(&proto).map_err(EngineError::Load)?;
    let mut model = parse(&proto, path).map_err(load)?;
    drop(proto);

    let input_names: Vec<String> = model
        .input_outlets()
        .map_err(load)?
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect();
    for ov in &options.inputs {
        let ix = input_names
            .iter()
            .position(|n| *n == ov.name)
            .ok_or_else(|| {
                EngineError::Load(format!(
                    "config.toml [[input]] names '{}', which is not a model input (inputs: {})",
                    ov.name,
                    input_names.join(", ")
                ))
            })?;
        let mut fact = model.input_fact(ix).map_err(load)?.clone();
        if let Some(dtype) = ov.datatype {
            fact = fact.with_datum_type(datum_type(dtype));
        }
        if let Some(dims) = &ov.dims {
            let shape: Vec<TDim> = dims
                .iter()
                .enumerate()
                .map(|(i, &d)| match Dim::from_i64(d) {
                    Dim::Fixed(n) => TDim::from(n),
                    Dim::Dynamic => model.symbols.sym(&format!("{}_{i}", ov.name)).into(),
                })
                .collect();
            let dt = fact.datum_type.concretize().unwrap_or(DatumType::F32);
            fact = InferenceFact::dt_shape(dt, shape);
        }
        model.set_input_fact(ix, fact).map_err(load)?;
    }

    let output_names: Vec<String> = model
        .output_outlets()
        .map_err(load)?
        .iter()
        .map(|&o| {
            model
                .outlet_label(o)
                .map_or_else(|| model.node(o.node).name.clone(), str::to_string)
        })
        .collect();

    let mut typed = model.into_typed().map_err(load)?;
    fold::scales(&mut typed).map_err(load)?;
    Ok(Typed {
        model: typed,
        input_names,
        output_names,
    })
}

fn specs(
    names: &[String],
    fact: impl Fn(usize) -> Result<TypedFact, EngineError>,
) -> Result<Vec<TensorSpec>, EngineError> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let fact = fact(i)?;
            let dtype = data_type(fact.datum_type).ok_or_else(|| {
                EngineError::Load(format!(
                    "tensor '{name}' has element type {:?}, which scoria does not serve yet",
                    fact.datum_type
                ))
            })?;
            let shape = fact
                .shape
                .iter()
                .map(|d| match d.as_i64() {
                    Some(n) if n >= 0 => Dim::Fixed(n as usize),
                    _ => Dim::Dynamic,
                })
                .collect();
            Ok(TensorSpec {
                name: name.clone(),
                dtype,
                shape,
            })
        })
        .collect()
}

impl Engine for TractEngine {
    fn backend(&self) -> Backend {
        Backend::Tract
    }

    fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    fn rows_per_run(&self) -> Option<usize> {
        self.rows_per_run
    }

    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
        let run = |e: anyhow::Error| EngineError::Run(format!("{e:#}"));
        let batch = inputs.first().and_then(|t| t.shape().first().copied());
        let specialised = match (&self.specialised, batch) {
            (Some(s), Some(n)) if inputs.iter().all(|t| t.shape().first() == Some(&n)) => s.plan(n),
            _ => None,
        };
        let values: tract_onnx::prelude::TVec<TValue> = inputs
            .into_iter()
            .map(|t| to_tract(t).map(IntoTValue::into_tvalue))
            .collect::<Result<_, _>>()
            .map_err(run)?;
        // The plan holds the only reference to the inputs, so each is freed (or reused in
        // place) once its last op has run, not kept to the end of the run. A plan specialised
        // to batch `n` answers whatever the general plan would: the general plan resolves the
        // batch symbol to the same `n`, from the same first dimension.
        let plan = match specialised {
            Some(plan) => plan,
            None => self.general.get().map_err(run)?,
        };
        let outputs = plan.run(values).map_err(run)?;
        outputs.iter().map(|v| from_tract(v).map_err(run)).collect()
    }
}

pub(super) fn to_tract(t: Tensor) -> anyhow::Result<TractTensor> {
    let (shape, data) = t.into_parts();
    with_tensor_data!(data, v => TractTensor::from_shape(&shape, &v), b => {
        let strings = b
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                String::from_utf8(e)
                    .map_err(|_| anyhow::anyhow!("BYTES element {i} is not UTF-8 text, which tract's string tensors require"))
            })
            .collect::<anyhow::Result<Vec<String>>>()?;
        Ok(tract_onnx::prelude::tract_ndarray::ArrayD::from_shape_vec(shape, strings)?.into())
    })
}

pub(super) fn from_tract(v: &TValue) -> anyhow::Result<Tensor> {
    macro_rules! take {
        ($variant:ident, $t:ty) => {{
            let view = v.to_plain_array_view::<$t>()?;
            let data = match view.as_slice() {
                Some(s) => s.to_vec(),
                None => view.iter().copied().collect(),
            };
            TensorData::$variant(data)
        }};
    }
    let dt = v.datum_type();
    let data = match data_type(dt) {
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
            let view = v.to_plain_array_view::<String>()?;
            TensorData::Bytes(view.iter().map(|s| s.as_bytes().to_vec()).collect())
        }
        None => anyhow::bail!("model produced element type {dt:?}, which scoria does not serve"),
    };
    Ok(Tensor::new(v.shape().to_vec(), data)?)
}

fn data_type(dt: DatumType) -> Option<DataType> {
    Some(match dt.unquantized() {
        DatumType::Bool => DataType::Bool,
        DatumType::U8 => DataType::U8,
        DatumType::U16 => DataType::U16,
        DatumType::U32 => DataType::U32,
        DatumType::U64 => DataType::U64,
        DatumType::I8 => DataType::I8,
        DatumType::I16 => DataType::I16,
        DatumType::I32 => DataType::I32,
        DatumType::I64 => DataType::I64,
        DatumType::F32 => DataType::F32,
        DatumType::F64 => DataType::F64,
        DatumType::String => DataType::Bytes,
        _ => return None,
    })
}

fn datum_type(dt: DataType) -> DatumType {
    match dt {
        DataType::Bool => DatumType::Bool,
        DataType::U8 => DatumType::U8,
        DataType::U16 => DatumType::U16,
        DataType::U32 => DatumType::U32,
        DataType::U64 => DatumType::U64,
        DataType::I8 => DatumType::I8,
        DataType::I16 => DatumType::I16,
        DataType::I32 => DatumType::I32,
        DataType::I64 => DatumType::I64,
        DataType::F32 => DatumType::F32,
        DataType::F64 => DatumType::F64,
        DataType::Bytes => DatumType::String,
    }
}

/// See [`super::check_onnx`].
pub fn check_onnx(path: &Path) -> Result<(), EngineError> {
    import::contain("tract", || check_onnx_unguarded(path)).map_err(|e| match e {
        EngineError::Load(why) if !why.contains(" is not an ONNX model: ") => {
            EngineError::Load(format!("{} is not an ONNX model: {why}", path.display()))
        }
        e => e,
    })
}

fn check_onnx_unguarded(path: &Path) -> Result<(), EngineError> {
    let bad =
        |why: String| EngineError::Load(format!("{} is not an ONNX model: {why}", path.display()));
    let proto = onnx_file::read(path).map_err(|e| bad(format!("{e:#}")))?;
    import::check_graph(&proto).map_err(bad)?;
    if proto.ir_version <= 0 {
        return Err(bad("no IR version".into()));
    }
    let graph = proto.graph.as_ref().ok_or_else(|| bad("no graph".into()))?;
    if graph.output.is_empty() {
        return Err(bad("the graph has no outputs".into()));
    }
    parse(&proto, path).map_err(|e| bad(format!("{e:#}")))?;
    Ok(())
}

/// The graph of `proto`, read from the model file at `path`, whose external data (see
/// [`onnx_file`]) lies in its directory, as `model_for_path` reads it — through a buffered
/// read rather than a map of the whole file per tensor. Refuses a graph that reads values
/// nothing defines.
fn parse(proto: &ModelProto, path: &Path) -> anyhow::Result<InferenceModel> {
    let mut onnx = tract_onnx::onnx();
    onnx.provider = Arc::new(onnx_file::WholeReads);
    let parsed = onnx.parse(proto, path.parent().and_then(Path::to_str))?;
    if !parsed.unresolved_inputs.is_empty() {
        anyhow::bail!(
            "the graph reads values nothing defines: {}",
            parsed.unresolved_inputs.join(", ")
        );
    }
    Ok(parsed.model)
}

/// `model` optimized by tract for running, with scoria's own kernels in place of tract's
/// where they are faster and answer alike (see [`pool`] and [`im2col`]), and the ops
/// between tract's matrix kernels clearing the vector registers' upper halves first (see
/// [`upper`]).
pub(crate) fn optimize(mut model: TypedModel) -> TractResult<TypedModel> {
    // tract's `into_optimized`, its weights packed a few at a time (see [`codegen`]).
    model.declutter()?;
    model.optimize_with_session(&mut codegen::optimizer().session())?;
    pool::substitute(&mut model)?;
    im2col::substitute(&mut model)?;
    upper::wrap(&mut model);
    Ok(model)
}

mod codegen;
mod fold;
mod im2col;
mod plans;
mod pool;
#[cfg(test)]
mod tests;
mod threads;
mod upper;
