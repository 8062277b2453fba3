//! `ModelInferRequest` → the core's tensors, and outputs → `ModelInferResponse`.
//!
//! An input's elements come either in its typed `contents` (`fp32_contents`, `int_contents`,
//! ...) or, for every input at once, in the request's `raw_input_contents` (one entry per
//! input, in order, laid out as the binary tensor data extension lays them out: little-endian,
//! BOOL one byte, BYTES 4-byte-length-prefixed). Outputs always go back as
//! `raw_output_contents`, as Triton sends them. Nothing is allocated from a size the client
//! declares: element counts are checked against the data actually sent first.

use super::proto::inference::{
    infer_parameter::ParameterChoice, model_infer_request::InferInputTensor,
    model_infer_response::InferOutputTensor, InferParameter, InferTensorContents,
    ModelInferRequest, ModelInferResponse,
};
use crate::batch::RequestOptions;
use crate::tensor::{
    decode_binary, element_count, encode_binary, DataType, NamedTensor, Tensor, TensorData,
};
use bytes::Bytes;
use std::collections::HashMap;
use std::time::Duration;

/// A decoded inference request.
#[derive(Debug)]
pub struct Decoded {
    pub inputs: Vec<NamedTensor>,
    /// Requested outputs, in order; `None` for all.
    pub outputs: Option<Vec<String>>,
    /// The `priority` and `timeout` (µs) request parameters, as over HTTP.
    pub options: RequestOptions,
}

/// A non-negative integer request parameter `name`, if present.
fn unsigned(
    parameters: &HashMap<String, InferParameter>,
    name: &str,
) -> Result<Option<u64>, String> {
    let Some(p) = parameters.get(name) else {
        return Ok(None);
    };
    match &p.parameter_choice {
        Some(ParameterChoice::Uint64Param(v)) => Ok(Some(*v)),
        Some(ParameterChoice::Int64Param(v)) if *v >= 0 => Ok(Some(*v as u64)),
        _ => Err(format!("parameters.{name} must be a non-negative integer")),
    }
}

/// The scheduling options a request's parameters ask for.
fn options(parameters: &HashMap<String, InferParameter>) -> Result<RequestOptions, String> {
    let priority = match unsigned(parameters, "priority")? {
        None => 0,
        Some(p) => u32::try_from(p)
            .map_err(|_| format!("parameters.priority: {p} is not a priority level"))?,
    };
    Ok(RequestOptions {
        priority,
        timeout: unsigned(parameters, "timeout")?.map(Duration::from_micros),
    })
}

/// Decodes the tensors and requested outputs of `req`; the error says what is wrong, for an
/// INVALID_ARGUMENT status.
pub fn decode_request(req: &mut ModelInferRequest) -> Result<Decoded, String> {
    let raw = std::mem::take(&mut req.raw_input_contents);
    if !raw.is_empty() && raw.len() != req.inputs.len() {
        return Err(format!(
            "raw_input_contents has {} entries but the request has {} inputs (one entry per input, or none)",
            raw.len(),
            req.inputs.len()
        ));
    }
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for (i, input) in std::mem::take(&mut req.inputs).into_iter().enumerate() {
        let name = input.name.clone();
        let err = |why: String| format!("input '{name}': {why}");
        let raw = raw.get(i);
        inputs.push(decode_input(input, raw).map_err(err)?);
    }
    let outputs: Vec<String> = std::mem::take(&mut req.outputs)
        .into_iter()
        .map(|o| o.name)
        .collect();
    Ok(Decoded {
        inputs,
        // An empty list asks for nothing in particular: all outputs, as over HTTP.
        outputs: (!outputs.is_empty()).then_some(outputs),
        options: options(&req.parameters)?,
    })
}

fn decode_input(input: InferInputTensor, raw: Option<&Bytes>) -> Result<NamedTensor, String> {
    let dtype = DataType::from_name(&input.datatype)
        .ok_or_else(|| format!("unsupported datatype '{}'", input.datatype))?;
    let shape = input
        .shape
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| format!("shape {:?} has a negative dimension", input.shape))
        })
        .collect::<Result<Vec<usize>, _>>()?;
    let count = element_count(&shape).ok_or_else(|| format!("shape {shape:?} overflows"))?;
    let data =
        match (raw, input.contents) {
            (Some(_), Some(c)) if !is_empty(&c) => {
                return Err("has both contents and raw_input_contents".into())
            }
            (Some(raw), _) => {
                if let Some(size) = dtype.size() {
                    let need = count.checked_mul(size);
                    if need != Some(raw.len()) {
                        return Err(format!(
                        "raw_input_contents has {} bytes but shape {shape:?} of {dtype} needs {}",
                        raw.len(),
                        need.map_or_else(|| "more than memory holds".to_string(), |n| n.to_string())
                    ));
                    }
                }
                decode_binary(dtype, raw, count)?
            }
            (None, contents) => typed(dtype, contents.unwrap_or_default())?,
        };
    if data.len() != count {
        return Err(format!(
            "shape {shape:?} holds {count} elements but {} has {}",
            field_of(dtype),
            data.len()
        ));
    }
    let tensor = Tensor::new(shape, data).map_err(|e| e.to_string())?;
    Ok(NamedTensor {
        name: input.name,
        tensor,
    })
}

/// The `InferTensorContents` field that carries elements of `dtype`.
fn field_of(dtype: DataType) -> &'static str {
    match dtype {
        DataType::Bool => "bool_contents",
        DataType::I8 | DataType::I16 | DataType::I32 => "int_contents",
        DataType::I64 => "int64_contents",
        DataType::U8 | DataType::U16 | DataType::U32 => "uint_contents",
        DataType::U64 => "uint64_contents",
        DataType::F32 => "fp32_contents",
        DataType::F64 => "fp64_contents",
        DataType::Bytes => "bytes_contents",
    }
}

/// The names of the non-empty fields of `c`.
fn filled(c: &InferTensorContents) -> Vec<&'static str> {
    [
        (!c.bool_contents.is_empty(), "bool_contents"),
        (!c.int_contents.is_empty(), "int_contents"),
        (!c.int64_contents.is_empty(), "int64_contents"),
        (!c.uint_contents.is_empty(), "uint_contents"),
        (!c.uint64_contents.is_empty(), "uint64_contents"),
        (!c.fp32_contents.is_empty(), "fp32_contents"),
        (!c.fp64_contents.is_empty(), "fp64_contents"),
        (!c.bytes_contents.is_empty(), "bytes_contents"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect()
}

fn is_empty(c: &InferTensorContents) -> bool {
    filled(c).is_empty()
}

/// Elements from the typed field of `dtype`; narrower integers are range-checked.
fn typed(dtype: DataType, c: InferTensorContents) -> Result<TensorData, String> {
    let field = field_of(dtype);
    if let Some(other) = filled(&c).into_iter().find(|f| *f != field) {
        return Err(format!(
            "{dtype} elements go in {field}, but the request has {other}"
        ));
    }
    fn narrow<T: TryFrom<W>, W: Copy + std::fmt::Display>(
        values: Vec<W>,
        dtype: DataType,
    ) -> Result<Vec<T>, String> {
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                T::try_from(v).map_err(|_| format!("element {i} ({v}) is out of range for {dtype}"))
            })
            .collect()
    }
    Ok(match dtype {
        DataType::Bool => TensorData::Bool(c.bool_contents),
        DataType::I8 => TensorData::I8(narrow(c.int_contents, dtype)?),
        DataType::I16 => TensorData::I16(narrow(c.int_contents, dtype)?),
        DataType::I32 => TensorData::I32(c.int_contents),
        DataType::I64 => TensorData::I64(c.int64_contents),
        DataType::U8 => TensorData::U8(narrow(c.uint_contents, dtype)?),
        DataType::U16 => TensorData::U16(narrow(c.uint_contents, dtype)?),
        DataType::U32 => TensorData::U32(c.uint_contents),
        DataType::U64 => TensorData::U64(c.uint64_contents),
        DataType::F32 => TensorData::F32(c.fp32_contents),
        DataType::F64 => TensorData::F64(c.fp64_contents),
        DataType::Bytes => TensorData::Bytes(c.bytes_contents),
    })
}

/// The response carrying `outputs` as `raw_output_contents`.
pub fn encode_response(
    model_name: &str,
    model_version: &str,
    id: String,
    outputs: &[NamedTensor],
) -> ModelInferResponse {
    let mut tensors = Vec::with_capacity(outputs.len());
    let mut raw = Vec::with_capacity(outputs.len());
    for t in outputs {
        let mut bytes = Vec::new();
        encode_binary(t.tensor.data(), &mut bytes);
        raw.push(Bytes::from(bytes));
        tensors.push(InferOutputTensor {
            name: t.name.clone(),
            datatype: t.tensor.dtype().name().to_string(),
            shape: t.tensor.shape().iter().map(|&d| d as i64).collect(),
            ..Default::default()
        });
    }
    ModelInferResponse {
        model_name: model_name.to_string(),
        model_version: model_version.to_string(),
        id,
        outputs: tensors,
        raw_output_contents: raw,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(
        name: &str,
        dt: &str,
        shape: &[i64],
        contents: InferTensorContents,
    ) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: dt.into(),
            shape: shape.to_vec(),
            contents: Some(contents),
            ..Default::default()
        }
    }

    fn fp32(v: &[f32]) -> InferTensorContents {
        InferTensorContents {
            fp32_contents: v.to_vec(),
            ..Default::default()
        }
    }

    fn err(mut req: ModelInferRequest) -> String {
        decode_request(&mut req).unwrap_err()
    }

    #[test]
    fn typed_and_raw_contents() {
        let mut req = ModelInferRequest {
            inputs: vec![input("x", "FP32", &[1, 2], fp32(&[1.0, 2.0]))],
            outputs: vec![Default::default()],
            ..Default::default()
        };
        req.outputs[0].name = "y".into();
        let d = decode_request(&mut req).unwrap();
        assert_eq!(d.inputs[0].tensor.data(), &TensorData::F32(vec![1.0, 2.0]));
        assert_eq!(d.outputs, Some(vec!["y".to_string()]));

        let raw: Vec<u8> = [3i8, -4].iter().map(|v| *v as u8).collect();
        let mut req = ModelInferRequest {
            inputs: vec![InferInputTensor {
                name: "x".into(),
                datatype: "INT8".into(),
                shape: vec![2],
                ..Default::default()
            }],
            raw_input_contents: vec![Bytes::from(raw)],
            ..Default::default()
        };
        let d = decode_request(&mut req).unwrap();
        assert_eq!(d.inputs[0].tensor.data(), &TensorData::I8(vec![3, -4]));
        assert_eq!(d.outputs, None);
    }

    #[test]
    fn precise_errors() {
        let one = |i: InferInputTensor| ModelInferRequest {
            inputs: vec![i],
            ..Default::default()
        };
        let e = err(one(input("x", "FP16", &[1], fp32(&[1.0]))));
        assert!(e.contains("input 'x': unsupported datatype 'FP16'"), "{e}");
        let e = err(one(input("x", "FP32", &[-1], fp32(&[1.0]))));
        assert!(e.contains("negative dimension"), "{e}");
        let big = 1i64 << 32;
        let e = err(one(input("x", "FP32", &[big, big, big], fp32(&[1.0]))));
        assert!(e.contains("overflows"), "{e}");
        let e = err(one(input("x", "FP32", &[3], fp32(&[1.0]))));
        assert!(
            e.contains("holds 3 elements but fp32_contents has 1"),
            "{e}"
        );
        let c = InferTensorContents {
            int_contents: vec![1],
            ..Default::default()
        };
        let e = err(one(input("x", "FP32", &[1], c)));
        assert!(
            e.contains("FP32 elements go in fp32_contents, but the request has int_contents"),
            "{e}"
        );
        let c = InferTensorContents {
            uint_contents: vec![256],
            ..Default::default()
        };
        let e = err(one(input("x", "UINT8", &[1], c)));
        assert!(
            e.contains("element 0 (256) is out of range for UINT8"),
            "{e}"
        );

        let raw_input = InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![2],
            ..Default::default()
        };
        let mut req = one(raw_input.clone());
        req.raw_input_contents = vec![Bytes::from(vec![0u8; 7])];
        let e = err(req);
        assert!(
            e.contains("raw_input_contents has 7 bytes but shape [2] of FP32 needs 8"),
            "{e}"
        );
        let mut req = one(raw_input.clone());
        req.raw_input_contents = vec![Bytes::new(), Bytes::new()];
        assert!(err(req).contains("2 entries but the request has 1 inputs"));
        let mut req = one(input("x", "FP32", &[2], fp32(&[1.0, 2.0])));
        req.raw_input_contents = vec![Bytes::from(vec![0u8; 8])];
        assert!(err(req).contains("both contents and raw_input_contents"));
        let mut huge = raw_input;
        huge.shape = vec![1 << 61, 4];
        let mut req = one(huge);
        req.raw_input_contents = vec![Bytes::from(vec![0u8; 8])];
        assert!(err(req).contains("needs more than memory holds"));
    }

    #[test]
    fn outputs_go_back_raw() {
        let t = NamedTensor {
            name: "y".into(),
            tensor: Tensor::new(vec![1, 2], TensorData::I64(vec![1, -1])).unwrap(),
        };
        let r = encode_response("m", "1", "id-1".into(), &[t]);
        assert_eq!((r.model_name.as_str(), r.id.as_str()), ("m", "id-1"));
        assert_eq!(r.outputs[0].datatype, "INT64");
        assert_eq!(r.outputs[0].shape, [1, 2]);
        assert_eq!(r.raw_output_contents[0].len(), 16);
        assert_eq!(
            decode_binary(DataType::I64, &r.raw_output_contents[0], 2).unwrap(),
            TensorData::I64(vec![1, -1])
        );
    }
}
