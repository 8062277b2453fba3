//! Conversions between JSON and Rhai values (tensors included, as nested arrays).
//!
//! Rhai has one integer type (`INT` = i64) and one float type (`FLOAT` = f64). JSON numbers
//! become INT when they fit i64, else FLOAT. FP32 elements become the FLOAT nearest their
//! shortest decimal form, so JSON shows `0.1`, not `0.10000000149011612`.

use crate::tensor::{Tensor, TensorData};
use rhai::{Array, Dynamic, ImmutableString, Map};
use serde_json::{Number, Value};
use std::fmt::Write;

/// Deepest nesting converted; deeper values are refused rather than risk the stack.
pub(super) const MAX_DEPTH: usize = 64;

/// Sizes of a request as Rhai limits them: array elements, map properties and string bytes,
/// each summed over the whole value.
pub(crate) fn json_sizes(v: &Value) -> (usize, usize, usize) {
    let (mut arrays, mut maps, mut strings) = (0, 0, 0);
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(a) => {
                arrays += a.len();
                stack.extend(a);
            }
            Value::Object(o) => {
                maps += o.len();
                stack.extend(o.values());
            }
            Value::String(s) => strings += s.len(),
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
    (arrays, maps, strings)
}

pub(crate) fn json_to_dynamic(v: Value) -> Dynamic {
    match v {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => b.into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().map_or(Dynamic::UNIT, Dynamic::from),
        },
        Value::String(s) => s.into(),
        Value::Array(a) => Dynamic::from_array(a.into_iter().map(json_to_dynamic).collect()),
        Value::Object(o) => Dynamic::from_map(
            o.into_iter()
                .map(|(k, v)| (k.into(), json_to_dynamic(v)))
                .collect::<Map>(),
        ),
    }
}

/// The JSON form of a script's result; `Err` says what has none, and where.
pub(crate) fn to_json(v: &Dynamic) -> Result<Value, String> {
    to_json_at(v, 0).map_err(|(mut path, what)| {
        path.reverse();
        if path.is_empty() {
            what
        } else {
            format!("{what} at `{}`", path.concat())
        }
    })
}

type NotJson = (Vec<String>, String);

fn to_json_at(v: &Dynamic, depth: usize) -> Result<Value, NotJson> {
    let fail = |what: String| Err((Vec::new(), what));
    if depth > MAX_DEPTH {
        return fail(format!("nesting deeper than {MAX_DEPTH} levels"));
    }
    if v.is_shared() {
        return to_json_at(&v.flatten_clone(), depth);
    }
    let at = |(mut path, what): NotJson, seg: String| {
        path.push(seg);
        (path, what)
    };
    if v.is_unit() {
        Ok(Value::Null)
    } else if let Ok(b) = v.as_bool() {
        Ok(Value::Bool(b))
    } else if let Ok(i) = v.as_int() {
        Ok(Value::Number(i.into()))
    } else if let Ok(f) = v.as_float() {
        float_json(f).map_err(|what| (Vec::new(), what))
    } else if let Ok(c) = v.as_char() {
        Ok(Value::String(c.to_string()))
    } else if let Some(s) = v.read_lock::<ImmutableString>() {
        Ok(Value::String(s.to_string()))
    } else if let Ok(a) = v.as_array_ref() {
        a.iter()
            .enumerate()
            .map(|(i, e)| to_json_at(e, depth + 1).map_err(|e| at(e, format!("[{i}]"))))
            .collect::<Result<_, _>>()
            .map(Value::Array)
    } else if let Ok(b) = v.as_blob_ref() {
        Ok(Value::Array(b.iter().map(|&x| Value::from(x)).collect()))
    } else if let Ok(m) = v.as_map_ref() {
        m.iter()
            .map(|(k, e)| {
                Ok((
                    k.to_string(),
                    to_json_at(e, depth + 1).map_err(|e| at(e, format!(".{k}")))?,
                ))
            })
            .collect::<Result<_, _>>()
            .map(Value::Object)
    } else if let Some(t) = v.read_lock::<Tensor>() {
        tensor_to_json(&t).map_err(|what| (Vec::new(), what))
    } else {
        fail(describe_type(v))
    }
}

fn float_json(f: f64) -> Result<Value, String> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| format!("the number {f} (JSON has no NaN or infinity)"))
}

/// Widens FP32 values to the f64 nearest their shortest decimal form.
#[derive(Default)]
pub(super) struct Widen(String);

impl Widen {
    pub(super) fn f32(&mut self, x: f32) -> f64 {
        if !x.is_finite() {
            return f64::from(x);
        }
        self.0.clear();
        let _ = write!(self.0, "{x}");
        self.0.parse().unwrap_or(f64::from(x))
    }
}

fn tensor_to_json(t: &Tensor) -> Result<Value, String> {
    let mut w = Widen::default();
    let leaves: Vec<Value> = match t.data() {
        TensorData::Bool(v) => v.iter().map(|&b| Value::Bool(b)).collect(),
        TensorData::U8(v) => v.iter().map(|&x| Value::from(x)).collect(),
        TensorData::U16(v) => v.iter().map(|&x| Value::from(x)).collect(),
        TensorData::U32(v) => v.iter().map(|&x| Value::from(x)).collect(),
        TensorData::U64(v) => v.iter().map(|&x| Value::from(x)).collect(),
        TensorData::I8(v) => v.iter().map(|&x| Value::from(x)).collect(),
        TensorData::I16(v) => v.iter().map(|&x| Value::from(x)).collect(),
        TensorData::I32(v) => v.iter().map(|&x| Value::from(x)).collect(),
        TensorData::I64(v) => v.iter().map(|&x| Value::from(x)).collect(),
        TensorData::F32(v) => v
            .iter()
            .map(|&x| float_json(w.f32(x)))
            .collect::<Result<_, _>>()?,
        TensorData::F64(v) => v.iter().map(|&x| float_json(x)).collect::<Result<_, _>>()?,
        TensorData::Bytes(v) => v
            .iter()
            .map(|b| Value::String(String::from_utf8_lossy(b).into_owned()))
            .collect(),
    };
    Ok(nest(t.shape(), leaves, Value::Array).unwrap_or(Value::Null))
}

/// Groups row-major `leaves` into nested arrays following `shape`; `None` when `leaves` is
/// too short (never, for a tensor's own data).
pub(super) fn nest<T>(shape: &[usize], leaves: Vec<T>, wrap: impl Fn(Vec<T>) -> T) -> Option<T> {
    let mut level = leaves;
    for k in (0..shape.len()).rev() {
        let groups = crate::tensor::element_count(&shape[..k])?;
        let mut items = level.into_iter();
        level = (0..groups)
            .map(|_| {
                let group: Vec<T> = items.by_ref().take(shape[k]).collect();
                (group.len() == shape[k]).then(|| wrap(group))
            })
            .collect::<Option<_>>()?;
    }
    level.into_iter().next()
}

/// How a value's type reads in a message.
pub(super) fn describe_type(v: &Dynamic) -> String {
    let what = if v.is_unit() {
        "()"
    } else if v.is_map() {
        "an object map"
    } else if v.is_array() {
        "an array"
    } else if v.is_fnptr() {
        return format!("a function pointer ({v})");
    } else if v.is_timestamp() {
        "a timestamp"
    } else if v.is::<Tensor>() {
        "a tensor"
    } else if v.is::<super::predictor::ScriptModel>() {
        "the `model` object"
    } else if v.is::<super::failure::HelperFailure>() {
        "an error value"
    } else {
        let name = v.type_name();
        return format!(
            "a value of type {}",
            name.rsplit("::").next().unwrap_or(name)
        );
    };
    what.to_string()
}

pub(super) fn array_of<T: Into<Dynamic>>(items: impl IntoIterator<Item = T>) -> Array {
    items.into_iter().map(Into::into).collect()
}
