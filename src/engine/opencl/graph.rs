//! Graph import: the ONNX protobuf as a list of nodes in topological order, the constants
//! (initializers and `Constant` nodes) loaded once, and element types where they are known.

use crate::engine::import::{self, check_graph};
use crate::engine::EngineError;
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use tract_onnx::pb::{self, ModelProto, NodeProto, TensorProto};
use tract_onnx::prelude::{Datum, DatumType, Framework, Tensor as TractTensor};

/// ONNX's TensorProto.DataType FLOAT.
pub const ONNX_FLOAT: i32 = 1;

/// An imported model.
pub struct Graph {
    /// The model as parsed (opset imports and IR version for CPU sub-models).
    pub proto: ModelProto,
    pub nodes: Vec<NodeProto>,
    /// Constants by value name: their protobuf (for CPU sub-models) and their tensor.
    pub consts: HashMap<String, (TensorProto, Arc<TractTensor>)>,
    /// Graph inputs that are not initializers, in order.
    pub inputs: Vec<pb::ValueInfoProto>,
    pub outputs: Vec<pb::ValueInfoProto>,
    /// The default-domain opset version.
    pub opset: i64,
    /// Known element types (ONNX codes) by value name.
    pub types: HashMap<String, i32>,
    /// Shapes tract's inference finds, by value name (`None`: a symbolic dimension).
    pub shapes: HashMap<String, Vec<Option<usize>>>,
}

impl Graph {
    pub fn load(path: &Path) -> Result<Graph, String> {
        let proto = tract(|| {
            let proto = tract_onnx::onnx()
                .proto_model_for_path(path)
                .map_err(|e| format!("{e:#}"))?;
            check_graph(&proto)?;
            Ok(proto)
        })?;
        let g = proto.graph.clone().ok_or("the model has no graph")?;
        let dir = path.parent().and_then(Path::to_str).map(str::to_string);
        let resolver = tract_onnx::data_resolver::MmapDataResolver;
        let load = |t: &TensorProto| -> Result<Arc<TractTensor>, String> {
            check_loadable(t)?;
            tract(|| {
                tract_onnx::tensor::load_tensor(&resolver, t, dir.as_deref())
                    .map(Arc::new)
                    .map_err(|e| format!("initializer '{}': {e:#}", t.name))
            })
        };
        let mut consts = HashMap::new();
        let mut types = HashMap::new();
        for t in &g.initializer {
            types.insert(t.name.clone(), t.data_type);
            consts.insert(t.name.clone(), (t.clone(), load(t)?));
        }
        let mut nodes = Vec::with_capacity(g.node.len());
        for n in g.node {
            if n.op_type == "Constant" && n.domain.is_empty() && n.output.len() == 1 {
                if let Some(t) = n
                    .attribute
                    .iter()
                    .find(|a| a.name == "value")
                    .and_then(|a| a.t.clone())
                {
                    let mut t = t;
                    t.name = n.output[0].clone();
                    types.insert(t.name.clone(), t.data_type);
                    consts.insert(t.name.clone(), (t.clone(), load(&t)?));
                    continue;
                }
            }
            nodes.push(n);
        }
        let inputs: Vec<pb::ValueInfoProto> = g
            .input
            .into_iter()
            .filter(|i| !consts.contains_key(&i.name))
            .collect();
        for v in inputs.iter().chain(&g.output).chain(&g.value_info) {
            if let Some(t) = elem_type(v) {
                types.insert(v.name.clone(), t);
            }
        }
        let mut shapes = HashMap::new();
        // Best effort: a panic in tract's inference leaves the types it did not find unknown.
        let _ = tract(|| {
            infer_types(&proto, &mut types, &mut shapes);
            Ok(())
        });
        let opset = proto
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map_or(1, |o| o.version);
        Ok(Graph {
            nodes,
            consts,
            inputs,
            outputs: g.output,
            opset,
            types,
            shapes,
            proto,
        })
    }

    /// The constant named `name`, when it is one.
    pub fn constant(&self, name: &str) -> Option<&Arc<TractTensor>> {
        self.consts.get(name).map(|(_, t)| t)
    }

    pub fn is_output(&self, value: &str) -> bool {
        self.outputs.iter().any(|o| o.name == value)
    }

    /// True when `value` is known to hold FP32.
    pub fn is_f32(&self, value: &str) -> bool {
        self.types.get(value) == Some(&ONNX_FLOAT)
    }
}

/// Runs a tract step of the import (see [`crate::engine::import`]): a panic in it is an error.
fn tract<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    import::contain("tract", || f().map_err(EngineError::Load)).map_err(|e| e.to_string())
}

/// The elements of `t` when they are of type `T`, without a copy where they are contiguous.
pub fn elements<T: Datum + Clone>(t: &TractTensor) -> Option<Cow<'_, [T]>> {
    let view = t.to_plain_array_view::<T>().ok()?;
    if view.as_slice().is_some() {
        // Re-borrow with the tensor's lifetime.
        let view = t.to_plain_array_view::<T>().ok()?;
        let s = view.to_slice()?;
        return Some(Cow::Borrowed(s));
    }
    Some(Cow::Owned(view.iter().cloned().collect()))
}

/// Adds the element types (and shapes) tract's inference finds (for values the model does not declare,
/// such as the outputs of nodes that run on the CPU). Best effort: what it cannot type stays
/// unknown, and unknown inputs keep a node off the device.
fn infer_types(
    proto: &ModelProto,
    types: &mut HashMap<String, i32>,
    shapes: &mut HashMap<String, Vec<Option<usize>>>,
) {
    use tract_onnx::prelude::{InferenceModelExt, OutletId};
    use tract_onnx::tract_hir::infer::Factoid;
    let Ok(mut model) = tract_onnx::onnx().model_for_proto_model(proto) else {
        return;
    };
    let _ = model.analyse(true);
    for node in model.nodes() {
        for slot in 0..node.outputs.len() {
            let outlet = OutletId::new(node.id, slot);
            let (Some(label), Ok(fact)) = (model.outlet_label(outlet), model.outlet_fact(outlet))
            else {
                continue;
            };
            if let Some(code) = fact.datum_type.concretize().and_then(onnx_type) {
                types.entry(label.to_string()).or_insert(code);
            }
            if !fact.shape.is_open() {
                let dims = fact
                    .shape
                    .dims()
                    .map(|d| {
                        d.concretize()
                            .and_then(|d| d.as_i64())
                            .and_then(|d| usize::try_from(d).ok())
                    })
                    .collect();
                shapes.insert(label.to_string(), dims);
            }
        }
    }
}

/// The element type a value info declares.
pub fn elem_type(v: &pb::ValueInfoProto) -> Option<i32> {
    match v.r#type.as_ref()?.value.as_ref()? {
        pb::type_proto::Value::TensorType(t) => Some(t.elem_type),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// tract's tensor loader stops the process on element types it does not know; refuse them first.
fn check_loadable(t: &TensorProto) -> Result<(), String> {
    let ok = pb::tensor_proto::DataType::try_from(t.data_type)
        .ok()
        .and_then(|dt| DatumType::try_from(dt).ok())
        .is_some_and(|dt| {
            matches!(
                dt,
                DatumType::Bool
                    | DatumType::U8
                    | DatumType::U16
                    | DatumType::U32
                    | DatumType::U64
                    | DatumType::I8
                    | DatumType::I16
                    | DatumType::I32
                    | DatumType::I64
                    | DatumType::F16
                    | DatumType::F32
                    | DatumType::F64
                    | DatumType::String
            )
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "constant '{}' has element type {}, which the OpenCL engine cannot load",
            t.name, t.data_type
        ))
    }
}

/// Attribute helpers.
pub fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

pub fn attr_i(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map_or(default, |a| a.i)
}

pub fn attr_f(n: &NodeProto, name: &str, default: f32) -> f32 {
    attr(n, name).map_or(default, |a| a.f)
}

pub fn attr_ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}

pub fn attr_s(n: &NodeProto, name: &str) -> Option<String> {
    attr(n, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

/// A node's name for messages: its name, else its first output, else its op.
pub fn node_label(n: &NodeProto) -> String {
    if !n.name.is_empty() {
        format!("'{}' ({})", n.name, n.op_type)
    } else if let Some(o) = n.output.first().filter(|o| !o.is_empty()) {
        format!("producing '{o}' ({})", n.op_type)
    } else {
        format!("({})", n.op_type)
    }
}

/// ONNX TensorProto.DataType of a tract element type.
pub(super) fn onnx_type(dt: DatumType) -> Option<i32> {
    Some(match dt {
        DatumType::F32 => 1,
        DatumType::U8 => 2,
        DatumType::I8 => 3,
        DatumType::U16 => 4,
        DatumType::I16 => 5,
        DatumType::I32 => 6,
        DatumType::I64 => 7,
        DatumType::String => 8,
        DatumType::Bool => 9,
        DatumType::F16 => 10,
        DatumType::F64 => 11,
        DatumType::U32 => 12,
        DatumType::U64 => 13,
        _ => return None,
    })
}
