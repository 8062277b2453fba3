//! CPU segments: runs of nodes the kernels do not cover, executed as a sub-model holding just
//! those nodes, their constants, and the values crossing the segment boundary.
//!
//! On tract (the default) the sub-model is parsed at load (so an op tract lacks fails the
//! load) and optimized per distinct set of input shapes on first use (tract optimizes
//! concrete shapes best). On ONNX Runtime (`[opencl] cpu_backend = "ort"`) it is encoded and
//! committed to a session at load, through the ort engine (library search, `[ort]` options).

use super::graph::{onnx_type, Graph};
use crate::engine::ort::OrtEngine;
use crate::engine::tract::{from_tract, to_tract};
use crate::engine::Engine;
use crate::engine::OrtConfig;
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tract_onnx::pb::{self, ModelProto};
use tract_onnx::prelude::{
    DatumType, Framework, InferenceModelExt, IntoRunnable, IntoTValue, TValue, TVec,
    TypedRunnableModel,
};

type Signature = Vec<(DatumType, Vec<usize>)>;

/// The engine CPU segments run on.
#[derive(Debug, Clone, Copy)]
pub enum Runner<'a> {
    Tract,
    /// ONNX Runtime with these session options.
    Ort(&'a OrtConfig),
}

impl Runner<'_> {
    pub fn name(self) -> &'static str {
        match self {
            Runner::Tract => "tract",
            Runner::Ort(_) => "ort",
        }
    }
}

enum Exec {
    Tract(Box<TractPlans>),
    Ort(Box<OrtEngine>),
}

/// The sub-model and its tract plans by input signature, made on first use.
struct TractPlans {
    proto: ModelProto,
    plans: Mutex<HashMap<Signature, Arc<TypedRunnableModel>>>,
}

pub struct CpuSegment {
    /// Values the segment reads from outside (in sub-model input order).
    pub inputs: Vec<String>,
    /// Values the segment produces that later nodes or the graph outputs need.
    pub outputs: Vec<String>,
    exec: Exec,
}

impl CpuSegment {
    /// A segment of `nodes` (indices into `g.nodes`); `needed_after` holds every value read
    /// after the segment, graph outputs included.
    pub fn new(
        g: &Graph,
        nodes: &[usize],
        needed_after: &HashSet<String>,
        runner: Runner,
    ) -> Result<CpuSegment, String> {
        let mut produced = HashSet::new();
        let mut inputs: Vec<String> = Vec::new();
        let mut initializers = Vec::new();
        let mut seen_const = HashSet::new();
        for &i in nodes {
            let n = &g.nodes[i];
            for v in n.input.iter().filter(|v| !v.is_empty()) {
                if produced.contains(v) {
                    continue;
                }
                if let Some((t, _)) = g.consts.get(v) {
                    if seen_const.insert(v.clone()) {
                        initializers.push(t.clone());
                    }
                } else if !inputs.contains(v) {
                    inputs.push(v.clone());
                }
            }
            produced.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
        }
        let outputs: Vec<String> = nodes
            .iter()
            .flat_map(|&i| g.nodes[i].output.iter())
            .filter(|o| !o.is_empty() && needed_after.contains(*o))
            .cloned()
            .collect();
        let graph = pb::GraphProto {
            node: nodes.iter().map(|&i| g.nodes[i].clone()).collect(),
            name: "cpu_segment".into(),
            initializer: initializers,
            input: inputs
                .iter()
                .map(|name| value_info(name, g.types.get(name).copied().unwrap_or(1), None))
                .collect(),
            output: outputs
                .iter()
                .map(|name| match (runner, g.types.get(name)) {
                    // ONNX Runtime checks declared output types; tract infers its own.
                    (Runner::Ort(_), Some(&t)) => value_info(name, t, None),
                    _ => pb::ValueInfoProto {
                        name: name.clone(),
                        ..Default::default()
                    },
                })
                .collect(),
            ..Default::default()
        };
        let proto = ModelProto {
            graph: Some(graph),
            ..g.proto.clone()
        };
        let exec = match runner {
            Runner::Tract => {
                // Plans are made per input shape on first use; what tract cannot run at all
                // (an op with the wrong number of outputs, say) must fail the load instead.
                tract_onnx::onnx()
                    .model_for_proto_model(&proto)
                    .and_then(|mut m| m.analyse(false).map(|_| ()))
                    .map_err(|e| format!("{e:#}"))?;
                Exec::Tract(Box::new(TractPlans {
                    proto,
                    plans: Mutex::new(HashMap::new()),
                }))
            }
            Runner::Ort(config) => {
                let engine = OrtEngine::load_from_memory(&proto.encode_to_vec(), config)
                    .map_err(|e| e.to_string())?;
                Exec::Ort(Box::new(engine))
            }
        };
        Ok(CpuSegment {
            inputs,
            outputs,
            exec,
        })
    }

    pub fn run(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>, String> {
        match &self.exec {
            Exec::Tract(plans) => plans.run(inputs),
            Exec::Ort(engine) => {
                let err = |e: anyhow::Error| format!("{e:#}");
                let tensors = inputs
                    .iter()
                    .map(from_tract)
                    .collect::<anyhow::Result<Vec<_>>>()
                    .map_err(err)?;
                engine
                    .run(tensors)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|t| to_tract(t).map(IntoTValue::into_tvalue))
                    .collect::<anyhow::Result<TVec<TValue>>>()
                    .map_err(err)
            }
        }
    }
}

impl TractPlans {
    fn run(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>, String> {
        let sig: Signature = inputs
            .iter()
            .map(|t| (t.datum_type(), t.shape().to_vec()))
            .collect();
        let cached = self
            .plans
            .lock()
            .map_err(|_| "a CPU segment's plan cache is poisoned (this is a bug)")?
            .get(&sig)
            .cloned();
        let plan = match cached {
            Some(p) => p,
            None => {
                let p = self.plan(&sig)?;
                if let Ok(mut plans) = self.plans.lock() {
                    plans.insert(sig, Arc::clone(&p));
                }
                p
            }
        };
        plan.run(inputs).map_err(|e| format!("{e:#}"))
    }

    fn plan(&self, sig: &Signature) -> Result<Arc<TypedRunnableModel>, String> {
        let mut proto = self.proto.clone();
        let graph = proto
            .graph
            .as_mut()
            .ok_or("segment without graph (this is a bug)")?;
        for (vi, (dt, shape)) in graph.input.iter_mut().zip(sig) {
            let code = onnx_type(*dt)
                .ok_or_else(|| format!("element type {dt:?} cannot enter a CPU segment"))?;
            *vi = value_info(&vi.name, code, Some(shape));
        }
        tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .and_then(|m| m.into_typed())
            .and_then(crate::engine::tract::optimize)
            .and_then(|m| m.into_runnable())
            .map_err(|e| format!("preparing a CPU segment: {e:#}"))
    }
}

fn value_info(name: &str, elem_type: i32, shape: Option<&[usize]>) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type,
                shape: shape.map(|s| pb::TensorShapeProto {
                    dim: s
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(Value::DimValue(d as i64)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
