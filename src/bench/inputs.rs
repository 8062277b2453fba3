//! The request a benchmark sends over and over: deterministic synthetic data shaped by the
//! model's input specs, or the tensors of a `predict`-style JSON file.

use crate::engine::{Dim, TensorSpec};
use crate::http::v2::wire::ModelMetadata;
use crate::models::score;
use crate::tensor::NamedTensor;
use crate::tensor::{DataType, Tensor, TensorData};
use serde_json::{json, Value};
use std::path::Path;

/// One tensor per model input, filled deterministically: dynamic dimensions are `batch` for
/// the first and 1 for the others; floats lie in [0, 1), integers in 0..8.
pub fn synthetic(specs: &[TensorSpec], batch: usize) -> Result<Vec<NamedTensor>, String> {
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let shape: Vec<usize> = spec
                .shape
                .iter()
                .enumerate()
                .map(|(axis, d)| match d {
                    Dim::Fixed(n) => *n,
                    Dim::Dynamic if axis == 0 => batch,
                    Dim::Dynamic => 1,
                })
                .collect();
            let count = crate::tensor::element_count(&shape)
                .filter(|&n| n <= 1 << 30)
                .ok_or_else(|| {
                    format!(
                        "input '{}': shape {shape:?} is too large to synthesize",
                        spec.name
                    )
                })?;
            let mut rng = XorShift::new(0x5c0_41a + i as u64);
            let data = fill(spec.dtype, count, &mut rng);
            let tensor =
                Tensor::new(shape, data).map_err(|e| format!("input '{}': {e}", spec.name))?;
            Ok(NamedTensor {
                name: spec.name.clone(),
                tensor,
            })
        })
        .collect()
}

fn fill(dtype: DataType, n: usize, rng: &mut XorShift) -> TensorData {
    macro_rules! ints {
        ($variant:ident, $t:ty) => {
            TensorData::$variant((0..n).map(|_| (rng.next() % 8) as $t).collect())
        };
    }
    match dtype {
        DataType::F32 => TensorData::F32((0..n).map(|_| rng.unit() as f32).collect()),
        DataType::F64 => TensorData::F64((0..n).map(|_| rng.unit()).collect()),
        DataType::Bool => TensorData::Bool((0..n).map(|_| rng.next() & 1 == 1).collect()),
        DataType::U8 => ints!(U8, u8),
        DataType::U16 => ints!(U16, u16),
        DataType::U32 => ints!(U32, u32),
        DataType::U64 => ints!(U64, u64),
        DataType::I8 => ints!(I8, i8),
        DataType::I16 => ints!(I16, i16),
        DataType::I32 => ints!(I32, i32),
        DataType::I64 => ints!(I64, i64),
        DataType::Bytes => TensorData::Bytes(
            (0..n)
                .map(|_| format!("s{}", rng.next() % 8).into_bytes())
                .collect(),
        ),
    }
}

/// xorshift64*: small, fast and the same on every platform.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The tensors of a JSON file as `scoria predict` takes it (`{"data": ...}` or
/// `{"inputs": {name: ...}}`, nested arrays), for a model with `specs` inputs.
pub fn from_file(path: &Path, specs: &[TensorSpec]) -> anyhow::Result<Vec<NamedTensor>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    score::decode_request(&text, specs).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The batch size of a request: the first dimension of its first input (1 for scalars).
pub fn batch_size(inputs: &[NamedTensor]) -> u64 {
    inputs
        .first()
        .and_then(|t| t.tensor.shape().first().copied())
        .unwrap_or(1) as u64
}

/// The model's inputs from v2 model metadata (`GET /v2/models/{m}`).
pub fn specs_from_metadata(meta: &ModelMetadata) -> Result<Vec<TensorSpec>, String> {
    meta.inputs
        .iter()
        .map(|i| {
            let name = &i.name;
            let dtype = DataType::from_name(&i.datatype)
                .ok_or_else(|| format!("input '{name}': unsupported datatype '{}'", i.datatype))?;
            Ok(TensorSpec {
                name: name.to_string(),
                dtype,
                shape: i.shape.iter().map(|&d| Dim::from_i64(d)).collect(),
            })
        })
        .collect()
}

/// What a run sends, for its record: each input's name, datatype and shape.
pub fn describe(inputs: &[NamedTensor]) -> Value {
    inputs
        .iter()
        .map(|t| json!({"name": t.name, "datatype": t.tensor.dtype().name(), "shape": t.tensor.shape()}))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, dtype: DataType, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype,
            shape: shape.iter().map(|&d| Dim::from_i64(d)).collect(),
        }
    }

    #[test]
    fn synthetic_shapes_and_determinism() {
        let specs = [
            spec("x", DataType::F32, &[-1, 3, -1]),
            spec("k", DataType::I64, &[2]),
        ];
        let a = synthetic(&specs, 4).unwrap();
        assert_eq!(a[0].tensor.shape(), &[4, 3, 1]);
        assert_eq!(a[1].tensor.shape(), &[2]);
        assert_eq!(a, synthetic(&specs, 4).unwrap());
        let TensorData::F32(v) = a[0].tensor.data() else {
            panic!("not FP32")
        };
        assert!(v.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(v.windows(2).any(|w| w[0] != w[1]));
        assert_eq!(batch_size(&a), 4);
        assert!(synthetic(&[spec("big", DataType::U8, &[1 << 20, 1 << 20])], 1).is_err());
    }

    #[test]
    fn specs_from_v2_metadata() {
        let parse = |v: Value| {
            serde_json::from_value::<ModelMetadata>(v)
                .map_err(|e| e.to_string())
                .and_then(|m| specs_from_metadata(&m))
        };
        let meta = json!({"name": "m", "versions": ["1"], "platform": "onnx_onnxv1", "outputs": [],
                          "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]});
        assert_eq!(
            parse(meta.clone()).unwrap(),
            vec![spec("input", DataType::F32, &[-1, 64])]
        );
        let mut bad = meta;
        bad["inputs"][0]["datatype"] = "FP8".into();
        assert!(parse(bad).unwrap_err().contains("FP8"));
        assert!(parse(json!({})).is_err());
    }
}
