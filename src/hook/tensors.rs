//! Rhai values to tensors and back, and the row view the numeric helpers work on.

use super::convert::{describe_type, nest, Widen, MAX_DEPTH};
use crate::tensor::{DataType, Tensor, TensorData};
use rhai::{Dynamic, ImmutableString, FLOAT, INT};

/// A tensor as Rhai values nested by its shape (a bare value for a scalar).
pub(crate) fn tensor_to_dynamic(t: &Tensor) -> Dynamic {
    fn ints<T: Copy + TryInto<INT> + Into<f64>>(v: &[T]) -> Vec<Dynamic> {
        v.iter()
            .map(|&x| {
                x.try_into()
                    .map_or_else(|_| Dynamic::from(x.into()), Dynamic::from)
            })
            .collect()
    }
    let mut w = Widen::default();
    let leaves = match t.data() {
        TensorData::Bool(v) => v.iter().map(|&b| Dynamic::from(b)).collect(),
        TensorData::U8(v) => ints(v),
        TensorData::U16(v) => ints(v),
        TensorData::U32(v) => ints(v),
        // u64 has no lossless f64 form; above i64::MAX it becomes the nearest FLOAT.
        TensorData::U64(v) => v
            .iter()
            .map(|&x| INT::try_from(x).map_or_else(|_| Dynamic::from(x as FLOAT), Dynamic::from))
            .collect(),
        TensorData::I8(v) => ints(v),
        TensorData::I16(v) => ints(v),
        TensorData::I32(v) => ints(v),
        TensorData::I64(v) => v.iter().map(|&x| Dynamic::from(x)).collect(),
        TensorData::F32(v) => v.iter().map(|&x| Dynamic::from(w.f32(x))).collect(),
        TensorData::F64(v) => v.iter().map(|&x| Dynamic::from(x)).collect(),
        TensorData::Bytes(v) => v
            .iter()
            .map(|b| match std::str::from_utf8(b) {
                Ok(s) => Dynamic::from(s.to_string()),
                Err(_) => Dynamic::from_blob(b.clone()),
            })
            .collect(),
    };
    nest(t.shape(), leaves, Dynamic::from_array).unwrap_or(Dynamic::UNIT)
}

/// One element on its way into a tensor.
#[derive(Clone, Copy)]
enum Scalar<'a> {
    Int(i128),
    Float(f64),
    Bool(bool),
    Bytes(&'a [u8]),
}

impl Scalar<'_> {
    fn int(self) -> Option<i128> {
        match self {
            Scalar::Int(x) => Some(x),
            Scalar::Float(x) if x.fract() == 0.0 && x.abs() < 1e38 => Some(x as i128),
            _ => None,
        }
    }

    fn float(self) -> Option<f64> {
        match self {
            Scalar::Int(x) => Some(x as f64),
            Scalar::Float(x) => Some(x),
            _ => None,
        }
    }

    fn describe(self) -> String {
        match self {
            Scalar::Int(x) => x.to_string(),
            Scalar::Float(x) => x.to_string(),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Bytes(b) => format!("string {:?}", String::from_utf8_lossy(b)),
        }
    }
}

/// Typed storage filled one element at a time, with the JSON decoder's error wording.
struct Builder(TensorData);

impl Builder {
    fn new(dtype: DataType) -> Builder {
        Builder(match dtype {
            DataType::Bool => TensorData::Bool(Vec::new()),
            DataType::U8 => TensorData::U8(Vec::new()),
            DataType::U16 => TensorData::U16(Vec::new()),
            DataType::U32 => TensorData::U32(Vec::new()),
            DataType::U64 => TensorData::U64(Vec::new()),
            DataType::I8 => TensorData::I8(Vec::new()),
            DataType::I16 => TensorData::I16(Vec::new()),
            DataType::I32 => TensorData::I32(Vec::new()),
            DataType::I64 => TensorData::I64(Vec::new()),
            DataType::F32 => TensorData::F32(Vec::new()),
            DataType::F64 => TensorData::F64(Vec::new()),
            DataType::Bytes => TensorData::Bytes(Vec::new()),
        })
    }

    fn push(&mut self, s: Scalar) -> Result<(), String> {
        let index = self.0.len();
        let dtype = self.0.dtype();
        let bad = || {
            let expected = match dtype {
                DataType::Bool => "a boolean".to_string(),
                DataType::F32 | DataType::F64 => format!("an {dtype} number"),
                DataType::Bytes => "a string".to_string(),
                _ => format!("an integer in the {dtype} range"),
            };
            format!(
                "element {index}: expected {expected}, found {}",
                s.describe()
            )
        };
        macro_rules! int {
            ($v:expr) => {
                $v.push(s.int().and_then(|x| x.try_into().ok()).ok_or_else(bad)?)
            };
        }
        match &mut self.0 {
            TensorData::Bool(v) => match s {
                Scalar::Bool(b) => v.push(b),
                _ => return Err(bad()),
            },
            TensorData::U8(v) => int!(v),
            TensorData::U16(v) => int!(v),
            TensorData::U32(v) => int!(v),
            TensorData::U64(v) => int!(v),
            TensorData::I8(v) => int!(v),
            TensorData::I16(v) => int!(v),
            TensorData::I32(v) => int!(v),
            TensorData::I64(v) => int!(v),
            TensorData::F32(v) => {
                let x = s.float().ok_or_else(bad)?;
                let narrowed = x as f32;
                // A finite number beyond FP32's range would become ±inf: refuse it, as the
                // v2 decoder does.
                if x.is_finite() && !narrowed.is_finite() {
                    return Err(bad());
                }
                v.push(narrowed)
            }
            TensorData::F64(v) => v.push(s.float().ok_or_else(bad)?),
            TensorData::Bytes(v) => match s {
                Scalar::Bytes(b) => v.push(b.to_vec()),
                _ => return Err(bad()),
            },
        }
        Ok(())
    }
}

/// Builds a `dtype` tensor from a tensor, a scalar or nested arrays of numbers, booleans or
/// strings. The shape is `shape` if given (any nesting, same element count), else the
/// nesting's, which must then be rectangular.
pub(crate) fn to_tensor(
    v: &Dynamic,
    dtype: DataType,
    shape: Option<Vec<usize>>,
) -> Result<Tensor, String> {
    let mut b = Builder::new(dtype);
    let nested = if let Some(t) = v.read_lock::<Tensor>() {
        push_tensor(&mut b, &t)?;
        Some(t.shape().to_vec())
    } else {
        let mut dims = Vec::new();
        let mut ragged = false;
        walk(v, &mut b, &mut dims, &mut ragged, 0)?;
        (!ragged).then(|| dims.into_iter().flatten().collect())
    };
    let shape = match (shape, nested) {
        (Some(s), _) | (None, Some(s)) => s,
        (None, None) => return Err("nested arrays are ragged (pass an explicit shape)".into()),
    };
    Tensor::new(shape, b.0).map_err(|e| e.to_string())
}

/// Pushes the leaves of `v` in row-major order, recording each depth's length in `dims`
/// (`None` past the leaves) and whether the nesting is ragged.
fn walk(
    v: &Dynamic,
    b: &mut Builder,
    dims: &mut Vec<Option<usize>>,
    ragged: &mut bool,
    depth: usize,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("arrays nested deeper than {MAX_DEPTH} levels"));
    }
    if v.is_shared() {
        return walk(&v.flatten_clone(), b, dims, ragged, depth);
    }
    let mut seen = |len: Option<usize>| {
        if dims.len() == depth {
            dims.push(len);
        } else if dims.len() < depth || dims[depth] != len {
            *ragged = true;
        }
    };
    if let Ok(a) = v.as_array_ref() {
        seen(Some(a.len()));
        for e in a.iter() {
            walk(e, b, dims, ragged, depth + 1)?;
        }
        return Ok(());
    }
    seen(None);
    let s;
    let scalar = if let Ok(i) = v.as_int() {
        Scalar::Int(i.into())
    } else if let Ok(f) = v.as_float() {
        Scalar::Float(f)
    } else if let Ok(x) = v.as_bool() {
        Scalar::Bool(x)
    } else if let Some(text) = v.read_lock::<ImmutableString>() {
        s = text.clone();
        Scalar::Bytes(s.as_bytes())
    } else {
        return Err(format!(
            "element {}: expected a number, boolean or string, found {}",
            b.0.len(),
            describe_type(v)
        ));
    };
    b.push(scalar)
}

fn push_tensor(b: &mut Builder, t: &Tensor) -> Result<(), String> {
    fn each<T: Copy>(
        b: &mut Builder,
        v: &[T],
        f: impl Fn(T) -> Scalar<'static>,
    ) -> Result<(), String> {
        v.iter().try_for_each(|&x| b.push(f(x)))
    }
    match t.data() {
        TensorData::Bool(v) => each(b, v, Scalar::Bool),
        TensorData::U8(v) => each(b, v, |x| Scalar::Int(x.into())),
        TensorData::U16(v) => each(b, v, |x| Scalar::Int(x.into())),
        TensorData::U32(v) => each(b, v, |x| Scalar::Int(x.into())),
        TensorData::U64(v) => each(b, v, |x| Scalar::Int(x.into())),
        TensorData::I8(v) => each(b, v, |x| Scalar::Int(x.into())),
        TensorData::I16(v) => each(b, v, |x| Scalar::Int(x.into())),
        TensorData::I32(v) => each(b, v, |x| Scalar::Int(x.into())),
        TensorData::I64(v) => each(b, v, |x| Scalar::Int(x.into())),
        TensorData::F32(v) => each(b, v, |x| Scalar::Float(x.into())),
        TensorData::F64(v) => each(b, v, Scalar::Float),
        TensorData::Bytes(v) => v.iter().try_for_each(|x| b.push(Scalar::Bytes(x))),
    }
}

/// Bytes of a tensor's elements, for the per-call tensor memory limit.
pub(crate) fn tensor_bytes(t: &Tensor) -> usize {
    match (t.data(), t.dtype().size()) {
        (TensorData::Bytes(v), _) => v.iter().map(Vec::len).sum(),
        (data, size) => data.len().saturating_mul(size.unwrap_or(1)),
    }
}

/// Values as the rows of their last axis: `(leading shape, row length, elements)`.
pub(crate) fn rows(v: &Dynamic) -> Result<(Vec<usize>, usize, Vec<f64>), String> {
    let t = to_tensor(v, DataType::F64, None)?;
    let (mut shape, data) = t.into_parts();
    let TensorData::F64(values) = data else {
        return Err("internal error: FP64 conversion built another type".into());
    };
    let row = shape
        .pop()
        .ok_or_else(|| "expected an array or tensor, found a single number".to_string())?;
    Ok((shape, row, values))
}

/// Nested arrays of `items`, one per row, following `leading` (a bare item for `[]`).
pub(super) fn nest_rows(leading: &[usize], items: Vec<Dynamic>) -> Dynamic {
    nest(leading, items, Dynamic::from_array).unwrap_or(Dynamic::UNIT)
}
