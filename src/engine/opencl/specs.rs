//! The model's input and output specs, from the graph's declarations and `[[input]]`
//! overrides.

use super::graph::Graph;
use crate::engine::{check_override, Dim, EngineError, LoadOptions, OverrideOf, TensorSpec};
use crate::tensor::DataType;

fn load_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Load(e.to_string())
}

/// Input and output specs from the graph's declarations, with `[[input]]` overrides.
pub(crate) fn specs(
    g: &Graph,
    options: &LoadOptions,
) -> Result<(Vec<TensorSpec>, Vec<TensorSpec>), EngineError> {
    let spec = |v: &tract_onnx::pb::ValueInfoProto| -> Result<TensorSpec, EngineError> {
        use tract_onnx::pb::{tensor_shape_proto::dimension::Value as D, type_proto::Value as T};
        let Some(T::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
            return Err(load_err(format!(
                "tensor '{}' has no tensor type in the model",
                v.name
            )));
        };
        let dtype = data_type(t.elem_type).ok_or_else(|| {
            load_err(format!(
                "tensor '{}' has ONNX element type {}, which scoria does not serve",
                v.name, t.elem_type
            ))
        })?;
        let shape = t
            .shape
            .as_ref()
            .ok_or_else(|| {
                load_err(format!(
                    "tensor '{}' has no shape in the model; the OpenCL engine needs its rank",
                    v.name
                ))
            })?
            .dim
            .iter()
            .map(|d| match d.value {
                Some(D::DimValue(n)) if n >= 0 => Dim::Fixed(n as usize),
                _ => Dim::Dynamic,
            })
            .collect();
        Ok(TensorSpec {
            name: v.name.clone(),
            dtype,
            shape,
        })
    };
    let mut inputs: Vec<TensorSpec> = g.inputs.iter().map(spec).collect::<Result<_, _>>()?;
    let outputs = g.outputs.iter().map(spec).collect::<Result<_, _>>()?;
    for ov in &options.inputs {
        let (spec, declared) =
            check_override(&mut inputs, ov, OverrideOf::Input).map_err(EngineError::Load)?;
        for (s, d) in spec.shape.iter_mut().zip(declared.into_iter().flatten()) {
            if *s == Dim::Dynamic {
                *s = d;
            }
        }
    }
    Ok((inputs, outputs))
}

fn data_type(code: i32) -> Option<DataType> {
    Some(match code {
        1 => DataType::F32,
        2 => DataType::U8,
        3 => DataType::I8,
        4 => DataType::U16,
        5 => DataType::I16,
        6 => DataType::I32,
        7 => DataType::I64,
        8 => DataType::Bytes,
        9 => DataType::Bool,
        11 => DataType::F64,
        12 => DataType::U32,
        13 => DataType::U64,
        _ => return None,
    })
}
