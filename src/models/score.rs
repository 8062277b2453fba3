//! Azure-ML-style scoring: the request goes to the version's score hook when it has one;
//! without a hook the body is `{"data": ...}` for a single-input model or
//! `{"inputs": {name: ...}}`, with shapes taken from the nesting, and the result maps output
//! names to data nested by shape.

use super::{ModelError, Served};
use crate::engine::{Dim, TensorSpec};
use crate::tensor::{decode_json, element_count, NamedTensor, NestedData, Tensor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreBody<'a> {
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    inputs: Option<BTreeMap<String, &'a RawValue>>,
}

/// Scores one request body on the calling (blocking) thread: through the hook's `run` when
/// the version has a hook, else by [`decode_request`] → inference → [`encode_response`].
pub fn score_blocking(served: &Served, body: &[u8]) -> Result<serde_json::Value, ModelError> {
    let malformed = |e: &dyn std::fmt::Display| {
        ModelError::InvalidInput(format!("malformed scoring request: {e}"))
    };
    match &served.hook {
        Some(hook) => {
            let input: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| malformed(&e))?;
            Ok(hook.run(input)?)
        }
        None => {
            let text = std::str::from_utf8(body).map_err(|e| malformed(&e))?;
            let inputs = decode_request(text, served.model.inputs())?;
            let inference = served.model.infer_blocking(inputs, None)?;
            Ok(encode_response(&inference.outputs))
        }
    }
}

/// Decodes a scoring body into named input tensors for a model with `specs` inputs.
pub fn decode_request(body: &str, specs: &[TensorSpec]) -> Result<Vec<NamedTensor>, ModelError> {
    let bad = ModelError::InvalidInput;
    let body: ScoreBody =
        serde_json::from_str(body).map_err(|e| bad(format!("malformed scoring request: {e}")))?;
    let pairs: Vec<(&str, &RawValue)> = match (body.data, &body.inputs) {
        (Some(data), None) => match specs {
            [only] => vec![(only.name.as_str(), data)],
            _ => {
                return Err(bad(format!(
                    "the model has {} inputs; send {{\"inputs\": {{name: data}}}} instead of {{\"data\": ...}}",
                    specs.len()
                )))
            }
        },
        (None, Some(inputs)) => inputs.iter().map(|(k, v)| (k.as_str(), *v)).collect(),
        (Some(_), Some(_)) => return Err(bad("send either \"data\" or \"inputs\", not both".into())),
        (None, None) => return Err(bad("the request has neither \"data\" nor \"inputs\"".into())),
    };
    pairs
        .into_iter()
        .map(|(name, raw)| {
            let spec = specs
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| bad(format!("unknown input '{name}'")))?;
            let decoded = decode_json(spec.dtype, raw.get())
                .map_err(|e| bad(format!("input '{name}': {e}")))?;
            let nested = decoded
                .nested_shape
                .ok_or_else(|| bad(format!("input '{name}': nested arrays are ragged")))?;
            let shape = fit_shape(spec, nested, decoded.data.len()).ok_or_else(|| {
                bad(format!(
                    "input '{name}': data does not fit the model's shape {}",
                    spec.shape_string()
                ))
            })?;
            let tensor = Tensor::new(shape, decoded.data)
                .map_err(|e| bad(format!("input '{name}': {e}")))?;
            Ok(NamedTensor {
                name: name.to_string(),
                tensor,
            })
        })
        .collect()
}

/// The shape to give data whose nesting is `nested`, the first that fits the model of:
/// the nesting itself; one unbatched sample with a leading batch of 1; flat data split into
/// samples of the model's fixed trailing dimensions.
fn fit_shape(spec: &TensorSpec, nested: Vec<usize>, len: usize) -> Option<Vec<usize>> {
    let fits = |shape: &[usize]| {
        shape.len() == spec.shape.len()
            && shape.iter().zip(&spec.shape).all(|(&n, d)| match d {
                Dim::Fixed(m) => n == *m,
                Dim::Dynamic => true,
            })
    };
    let mut candidates = vec![nested.clone()];
    candidates.push(std::iter::once(1).chain(nested.iter().copied()).collect());
    let trailing: Option<Vec<usize>> = spec
        .shape
        .iter()
        .skip(1)
        .map(|d| match d {
            Dim::Fixed(n) => Some(*n),
            Dim::Dynamic => None,
        })
        .collect();
    if let Some(rest) = trailing.filter(|_| nested.len() == 1 && !spec.shape.is_empty()) {
        if let Some(per) = element_count(&rest).filter(|&p| p > 0 && len.is_multiple_of(p)) {
            candidates.push(std::iter::once(len / per).chain(rest).collect());
        }
    }
    candidates.into_iter().find(|c| fits(c))
}

/// Encodes outputs as `{name: nested data}`.
pub fn encode_response(outputs: &[NamedTensor]) -> serde_json::Value {
    let map = outputs
        .iter()
        .map(|o| {
            let nested = NestedData {
                shape: o.tensor.shape(),
                data: o.tensor.data(),
            };
            let value = serde_json::to_value(nested).unwrap_or(serde_json::Value::Null);
            (o.name.clone(), value)
        })
        .collect();
    serde_json::Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DataType;

    fn specs() -> Vec<TensorSpec> {
        vec![TensorSpec {
            name: "x".into(),
            dtype: DataType::F32,
            shape: vec![Dim::Dynamic, Dim::Fixed(2)],
        }]
    }

    #[test]
    fn shapes_from_nesting() {
        let t = decode_request(r#"{"data": [[1, 2], [3, 4]]}"#, &specs()).unwrap();
        assert_eq!(t[0].tensor.shape(), &[2, 2]);
        let t = decode_request(r#"{"data": [1, 2]}"#, &specs()).unwrap();
        assert_eq!(t[0].tensor.shape(), &[1, 2]);
        let t = decode_request(r#"{"inputs": {"x": [1, 2, 3, 4, 5, 6]}}"#, &specs()).unwrap();
        assert_eq!(t[0].tensor.shape(), &[3, 2]);
    }

    #[test]
    fn rejects_what_does_not_fit() {
        for (body, want) in [
            (r#"{"data": [1, 2, 3]}"#, "does not fit"),
            (r#"{"data": [[1, 2], [3]]}"#, "ragged"),
            (r#"{"inputs": {"y": [1, 2]}}"#, "unknown input 'y'"),
            (r#"{}"#, "neither"),
            (r#"{"data": [1, 2], "inputs": {}}"#, "not both"),
            (r#"{"data": ["a", 2]}"#, "element 0"),
            (r#"{"data": [1, 2], "extra": 1}"#, "unknown field"),
            (r#"[1, 2]"#, "malformed"),
        ] {
            let e = decode_request(body, &specs()).unwrap_err().to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn encodes_by_name_nested() {
        let t = Tensor::new(vec![1, 2], crate::tensor::TensorData::I64(vec![3, 4])).unwrap();
        let v = encode_response(&[NamedTensor {
            name: "y".into(),
            tensor: t,
        }]);
        assert_eq!(v, serde_json::json!({"y": [[3, 4]]}));
    }
}
