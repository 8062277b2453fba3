//! What a hook script can call: the `model` object, tensors and the numeric helpers.
//!
//! Helpers fail with a [`HelperFailure`] runtime error (a server error naming the script line),
//! never with a plain `throw`, which is reserved for the script rejecting a request.

use super::convert::array_of;
use super::failure::{bad_input, failure, helper_error, HelperFailure};
use super::limits::{self, HookLimits};
use super::predictor::{Predictor, ScriptModel};
use super::tensors::{self, nest_rows, rows};
use crate::engine::TensorSpec;
use crate::tensor::{DataType, NamedTensor, Tensor, TensorData};
use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map, INT};
use std::sync::Arc;

type Res<T> = Result<T, Box<EvalAltResult>>;

/// Registers the script API on `engine`.
pub(super) fn register(
    engine: &mut Engine,
    model: Arc<dyn Predictor>,
    labels: Option<Arc<Vec<String>>>,
    limits: &HookLimits,
) {
    engine
        .register_type_with_name::<HelperFailure>("Error")
        .register_fn("to_string", |e: &mut HelperFailure| e.0.clone())
        .register_fn("to_debug", |e: &mut HelperFailure| e.0.clone())
        .register_get("message", |e: &mut HelperFailure| e.0.clone());

    let max_array = limits.max_array_size;
    engine
        .register_type_with_name::<Tensor>("Tensor")
        .register_get("shape", |t: &mut Tensor| {
            array_of(t.shape().iter().map(|&d| d as INT))
        })
        .register_get("dtype", |t: &mut Tensor| t.dtype().name().to_string())
        .register_fn("len", |t: &mut Tensor| t.data().len() as INT)
        .register_fn("to_string", describe_tensor)
        .register_fn("to_debug", describe_tensor)
        .register_fn("to_array", move |t: &mut Tensor| -> Res<Dynamic> {
            if t.data().len() > max_array {
                return Err(failure(format!(
                    "to_array(): {} elements exceed the array limit of {max_array}",
                    t.data().len()
                )));
            }
            Ok(tensors::tensor_to_dynamic(t))
        })
        .register_fn("tensor", move |data: Dynamic, dtype: &str| {
            make_tensor(&data, dtype, None, max_array)
        })
        .register_fn("tensor", move |data: Dynamic, dtype: &str, shape: Array| {
            make_tensor(&data, dtype, Some(shape), max_array)
        })
        .register_fn("sort", sort_with)
        .register_fn("sort_by", sort_with)
        .register_fn("softmax", softmax)
        .register_fn("argmax", argmax)
        .register_fn("top_k", top_k);

    let label_list: Arc<Array> = Arc::new(array_of(labels.iter().flat_map(|l| l.iter().cloned())));
    let all = Arc::clone(&label_list);
    engine.register_fn("labels", move || (*all).clone());
    engine.register_fn("label", move |i: INT| -> Res<Dynamic> {
        if label_list.is_empty() {
            return Ok(i.to_string().into());
        }
        usize::try_from(i)
            .ok()
            .and_then(|i| label_list.get(i).cloned())
            .ok_or_else(|| {
                failure(format!(
                    "label({i}): labels.txt has {} lines",
                    label_list.len()
                ))
            })
    });

    engine
        .register_type_with_name::<ScriptModel>("Model")
        .register_get("name", |m: &mut ScriptModel| m.0.name().to_string())
        .register_get("version", |m: &mut ScriptModel| m.0.version() as INT)
        .register_get("inputs", |m: &mut ScriptModel| names(m.0.inputs()))
        .register_get("outputs", |m: &mut ScriptModel| names(m.0.outputs()))
        .register_fn("to_string", |m: &mut ScriptModel| {
            describe_model(m.0.as_ref())
        })
        .register_fn("to_debug", |m: &mut ScriptModel| {
            describe_model(m.0.as_ref())
        })
        .register_fn("predict", |m: &mut ScriptModel, inputs: Map| {
            predict(m.0.as_ref(), inputs, None)
        })
        .register_fn(
            "predict",
            |m: &mut ScriptModel, inputs: Map, outputs: Array| {
                let outputs = outputs
                    .iter()
                    .map(|o| {
                        o.read_lock::<ImmutableString>()
                            .map(|s| s.to_string())
                            .ok_or_else(|| failure("model.predict: output names must be strings"))
                    })
                    .collect::<Res<Vec<_>>>()?;
                predict(m.0.as_ref(), inputs, Some(outputs))
            },
        )
        .register_fn("predict", |m: &mut ScriptModel, input: Tensor| {
            predict_single(m.0.as_ref(), Dynamic::from(input))
        })
        .register_fn("predict", |m: &mut ScriptModel, input: Array| {
            predict_single(m.0.as_ref(), Dynamic::from_array(input))
        });

    let mut globals = rhai::Module::new();
    globals.set_var("model", ScriptModel(model));
    engine.register_global_module(globals.into());
}

fn names(specs: &[TensorSpec]) -> Array {
    array_of(specs.iter().map(|s| s.name.clone()))
}

fn describe_tensor(t: &mut Tensor) -> String {
    format!("Tensor({}, {:?})", t.dtype(), t.shape())
}

fn describe_model(m: &dyn Predictor) -> String {
    format!("Model({}:{})", m.name(), m.version())
}

fn charge(t: &Tensor) -> Res<()> {
    limits::charge_tensor_bytes(tensors::tensor_bytes(t)).map_err(failure)
}

/// `array.sort(comparer)` that stops at the comparer's first error (the time limit, a
/// `throw`) and returns it: Rhai's own treats a failing comparison as "equal" and goes on,
/// so a script out of time kept sorting for minutes.
fn sort_with(ctx: rhai::NativeCallContext, array: &mut Array, comparer: rhai::FnPtr) -> Res<()> {
    use std::cmp::Ordering;
    let mut failed: Option<Box<EvalAltResult>> = None;
    let sorted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        array.sort_by(|x, y| {
            if failed.is_some() {
                return Ordering::Equal;
            }
            match comparer.call_raw(&ctx, None, [x.clone(), y.clone()]) {
                Ok(v) => match v
                    .as_int()
                    .or_else(|_| v.as_bool().map(|b| if b { -1 } else { 1 }))
                {
                    Ok(n) => n.cmp(&0),
                    Err(_) => x.type_id().cmp(&y.type_id()),
                },
                Err(e) => {
                    failed = Some(e);
                    Ordering::Equal
                }
            }
        });
    }));
    if let Some(e) = failed {
        return Err(e);
    }
    // `slice::sort_by` may panic when the comparer is not a total order.
    sorted.map_err(|_| failure("sort(): the comparer is not a consistent order"))
}

/// Arrays a tensor of `shape` becomes as nested arrays (the outer one included): with a
/// zero-length dimension a tensor holds no element, yet its leading dimensions still make
/// arrays, so element limits alone do not bound them.
fn nested_arrays(shape: &[usize]) -> usize {
    let mut total = 1usize;
    let mut level = 1usize;
    for &d in shape.iter().take(shape.len().saturating_sub(1)) {
        level = level.saturating_mul(d);
        total = total.saturating_add(level);
    }
    total
}

fn make_tensor(data: &Dynamic, dtype: &str, shape: Option<Array>, max_array: usize) -> Res<Tensor> {
    let dt = DataType::from_name(&dtype.to_ascii_uppercase()).ok_or_else(|| {
        failure(format!(
            "tensor(): unknown dtype {dtype:?} (use FP32, FP64, INT64, INT32, UINT8, BOOL, ...)"
        ))
    })?;
    let shape = shape
        .map(|dims| {
            dims.iter()
                .map(|d| d.as_int().ok().and_then(|i| usize::try_from(i).ok()))
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| failure("tensor(): a shape is an array of integers >= 0"))
        })
        .transpose()?;
    let t = tensors::to_tensor(data, dt, shape).map_err(|e| bad_input(format!("tensor(): {e}")))?;
    let arrays = nested_arrays(t.shape());
    if arrays > max_array {
        return Err(failure(format!(
            "tensor(): shape {:?} makes {arrays} nested arrays, over the array limit of {max_array}",
            t.shape()
        )));
    }
    charge(&t)?;
    Ok(t)
}

/// The model input `spec` from a tensor (cast when its type differs) or nested arrays; one
/// sample without the leading batch dimension gets a batch of 1.
fn input_tensor(spec: &TensorSpec, value: &Dynamic) -> Res<Tensor> {
    if let Some(t) = value
        .read_lock::<Tensor>()
        .filter(|t| t.dtype() == spec.dtype)
    {
        return Ok(t.clone());
    }
    let fail = |e: String| bad_input(format!("model.predict: input '{}': {e}", spec.name));
    let t = tensors::to_tensor(value, spec.dtype, None).map_err(fail)?;
    if t.shape().len() + 1 != spec.shape.len() {
        return Ok(t);
    }
    let (shape, data) = t.into_parts();
    let batched = std::iter::once(1).chain(shape).collect();
    Tensor::new(batched, data).map_err(|e| fail(e.to_string()))
}

fn predict(model: &dyn Predictor, inputs: Map, outputs: Option<Vec<String>>) -> Res<Map> {
    let mut named = Vec::with_capacity(inputs.len());
    for (name, value) in inputs {
        let spec = model
            .inputs()
            .iter()
            .find(|s| s.name == name.as_str())
            .ok_or_else(|| {
                let all: Vec<&str> = model.inputs().iter().map(|s| s.name.as_str()).collect();
                failure(format!(
                    "model.predict: the model has no input '{name}' (inputs: {})",
                    all.join(", ")
                ))
            })?;
        let tensor = input_tensor(spec, &value)?;
        named.push(NamedTensor {
            name: name.to_string(),
            tensor,
        });
    }
    let produced = model
        .predict(named, outputs.as_deref())
        .map_err(|e| helper_error(format!("model.predict: {e}"), e.kind))?;
    produced
        .into_iter()
        .map(|o| {
            charge(&o.tensor)?;
            Ok((o.name.into(), Dynamic::from(o.tensor)))
        })
        .collect()
}

fn predict_single(model: &dyn Predictor, input: Dynamic) -> Res<Map> {
    match model.inputs() {
        [only] => predict(model, Map::from([(only.name.as_str().into(), input)]), None),
        specs => Err(failure(format!(
            "model.predict: the model has {} inputs; pass a map #{{name: tensor, ...}}",
            specs.len()
        ))),
    }
}

/// Ranking order of a value: NaN below everything.
fn rank(x: f64) -> f64 {
    if x.is_nan() {
        f64::NEG_INFINITY
    } else {
        x
    }
}

/// `softmax(x)` over the last axis of nested arrays (→ arrays) or a tensor (→ a tensor, FP32
/// for FP32 input, else FP64).
fn softmax(x: Dynamic) -> Res<Dynamic> {
    let dtype = x.read_lock::<Tensor>().map(|t| t.dtype());
    let (mut shape, n, mut values) = rows(&x).map_err(|e| failure(format!("softmax(): {e}")))?;
    for row in values.chunks_mut(n.max(1)) {
        let max = row
            .iter()
            .copied()
            .map(rank)
            .fold(f64::NEG_INFINITY, f64::max);
        row.iter_mut().for_each(|v| *v = (*v - max).exp());
        let sum: f64 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= sum);
    }
    shape.push(n);
    match dtype {
        Some(dt) => {
            let data = match dt {
                DataType::F32 => TensorData::F32(values.iter().map(|&v| v as f32).collect()),
                _ => TensorData::F64(values),
            };
            let t = Tensor::new(shape, data).map_err(|e| failure(format!("softmax(): {e}")))?;
            charge(&t)?;
            Ok(Dynamic::from(t))
        }
        None => Ok(nest_rows(
            &shape,
            values.into_iter().map(Dynamic::from).collect(),
        )),
    }
}

/// `argmax(x)`: the index of the largest value along the last axis (NaN never wins).
fn argmax(x: Dynamic) -> Res<Dynamic> {
    let (shape, n, values) = rows(&x).map_err(|e| failure(format!("argmax(): {e}")))?;
    if n == 0 {
        return Err(failure("argmax(): the array is empty"));
    }
    let best = values.chunks(n).map(|row| {
        let mut best = 0;
        for (i, &v) in row.iter().enumerate() {
            if rank(v) > rank(row[best]) {
                best = i;
            }
        }
        Dynamic::from(best as INT)
    });
    Ok(nest_rows(&shape, best.collect()))
}

/// `top_k(x, k)`: the `k` largest values along the last axis, each `#{index, value}`, largest
/// first (ties by lower index).
fn top_k(x: Dynamic, k: INT) -> Res<Dynamic> {
    let k = usize::try_from(k).map_err(|_| failure(format!("top_k(): k = {k} is negative")))?;
    let (shape, n, values) = rows(&x).map_err(|e| failure(format!("top_k(): {e}")))?;
    let count = crate::tensor::element_count(&shape).unwrap_or(0);
    let items = (0..count)
        .map(|r| {
            let row = &values[r * n..(r + 1) * n];
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| rank(row[b]).total_cmp(&rank(row[a])));
            let entries = order.into_iter().take(k).map(|i| {
                Dynamic::from_map(Map::from([
                    ("index".into(), Dynamic::from(i as INT)),
                    ("value".into(), Dynamic::from(row[i])),
                ]))
            });
            Dynamic::from_array(entries.collect())
        })
        .collect();
    Ok(nest_rows(&shape, items))
}
