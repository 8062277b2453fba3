//! Partitioning: each node goes to the device when its op and attributes have a kernel,
//! else to the CPU; consecutive CPU nodes become one CPU segment. Then two rewrites on the
//! device side: BatchNormalization folded into the Conv before it (constant weights), and a
//! Relu fused into the Conv / Gemm / Add / BatchNormalization that feeds only it.

use super::cpu::{CpuSegment, Runner};
use super::graph::{elements, node_label, Graph, ONNX_FLOAT};
use super::ops::{device_op, Op};
use crate::engine::{Placement, PlacementSegment};
use std::collections::HashSet;
use std::sync::Arc;
use tract_onnx::prelude::{tract_ndarray::Array1, Tensor as TractTensor};

pub enum Step {
    Device {
        op: Op,
        /// Input value names (`""` for an absent optional input).
        inputs: Vec<String>,
        output: String,
    },
    Cpu(Box<CpuSegment>),
}

pub struct Partition {
    pub steps: Vec<Step>,
    pub placement: Placement,
    /// Constants made by folding (new Conv weights and biases), by value name.
    pub folded: Vec<(String, Arc<TractTensor>)>,
}

pub fn partition(
    g: &mut Graph,
    fallback: bool,
    device: &str,
    cpu: Runner,
) -> Result<Partition, String> {
    // 1. Placement, in topological order; a device output is FP32 for the nodes after it.
    let mut ops: Vec<Option<Op>> = Vec::with_capacity(g.nodes.len());
    for i in 0..g.nodes.len() {
        match device_op(&g.nodes[i], g) {
            Ok(op) => {
                let out = g.nodes[i].output[0].clone();
                g.types.insert(out, ONNX_FLOAT);
                ops.push(Some(op));
            }
            Err(why) if !fallback => {
                return Err(format!(
                    "node {} cannot run on the OpenCL device: {why} (set [opencl] fallback = true to run it on the CPU)",
                    node_label(&g.nodes[i])
                ))
            }
            Err(why) => {
                tracing::debug!("opencl: {} runs on the CPU: {why}", node_label(&g.nodes[i]));
                ops.push(None);
            }
        }
    }
    let placement = summarize(g, &ops, device, cpu.name());

    // 2. Steps: device nodes one by one, CPU nodes grouped.
    let mut steps = Vec::new();
    let mut i = 0;
    while i < ops.len() {
        if let Some(op) = ops[i].take() {
            let n = &g.nodes[i];
            steps.push(Step::Device {
                op,
                inputs: n.input.clone(),
                output: n.output[0].clone(),
            });
            i += 1;
            continue;
        }
        let start = i;
        while i < ops.len() && ops[i].is_none() {
            i += 1;
        }
        let members: Vec<usize> = (start..i).collect();
        let mut needed: HashSet<String> = g.nodes[i..]
            .iter()
            .flat_map(|n| n.input.iter().cloned())
            .collect();
        needed.extend(g.outputs.iter().map(|o| o.name.clone()));
        let seg = CpuSegment::new(g, &members, &needed, cpu).map_err(|e| {
            format!(
                "the CPU part from node {} cannot be loaded: {e}",
                node_label(&g.nodes[start])
            )
        })?;
        steps.push(Step::Cpu(Box::new(seg)));
    }

    let mut folded = Vec::new();
    fold_batchnorm(g, &mut steps, &mut folded);
    fuse_relu(g, &mut steps);
    Ok(Partition {
        steps,
        placement,
        folded,
    })
}

fn summarize(g: &Graph, ops: &[Option<Op>], device: &str, cpu_backend: &str) -> Placement {
    let mut segments: Vec<PlacementSegment> = Vec::new();
    for (n, op) in g.nodes.iter().zip(ops) {
        let on_device = op.is_some();
        let label = if n.name.is_empty() {
            n.output.first().cloned().unwrap_or_default()
        } else {
            n.name.clone()
        };
        match segments.last_mut() {
            Some(s) if s.on_device == on_device => {
                s.nodes += 1;
                s.last = label;
            }
            _ => segments.push(PlacementSegment {
                on_device,
                nodes: 1,
                first: label.clone(),
                last: label,
            }),
        }
    }
    let on_device = ops.iter().filter(|o| o.is_some()).count();
    Placement {
        device: device.to_string(),
        nodes_on_device: on_device,
        nodes_on_cpu: ops.len() - on_device,
        cpu_backend: cpu_backend.to_string(),
        segments,
    }
}

/// Readers of `value` among the steps (device inputs and CPU segment inputs), plus one when
/// it is a graph output.
fn uses(g: &Graph, steps: &[Step], value: &str) -> usize {
    let readers: usize = steps
        .iter()
        .map(|s| match s {
            Step::Device { inputs, .. } => inputs.iter().filter(|i| *i == value).count(),
            Step::Cpu(seg) => usize::from(seg.inputs.iter().any(|i| i == value)),
        })
        .sum();
    readers + usize::from(g.is_output(value))
}

/// Conv (constant weights) → BatchNormalization (constant parameters), where the Conv's
/// output feeds only the BatchNormalization: scale the weights per output channel and fold
/// the shift into the bias; the BatchNormalization step disappears.
fn fold_batchnorm(g: &Graph, steps: &mut Vec<Step>, folded: &mut Vec<(String, Arc<TractTensor>)>) {
    let mut i = 0;
    while i + 1 < steps.len() {
        let fold = match (&steps[i], &steps[i + 1]) {
            (
                Step::Device {
                    op: Op::Conv { .. },
                    inputs: ci,
                    output: co,
                },
                Step::Device {
                    op: Op::BatchNorm { eps, relu: false },
                    inputs: bi,
                    output: bo,
                },
            ) if bi.first() == Some(co) && uses(g, steps, co) == 1 => {
                fold_params(g, ci, bi, *eps).map(|(w, b)| (w, b, bo.clone()))
            }
            _ => None,
        };
        if let Some((w, b, bn_out)) = fold {
            if let Step::Device { inputs, output, .. } = &mut steps[i] {
                let wname = format!("{}::bn_folded", inputs[1]);
                let bname = format!("{}::bn_folded_bias", output);
                folded.push((wname.clone(), Arc::new(w)));
                folded.push((bname.clone(), Arc::new(b)));
                inputs.truncate(1);
                inputs.push(wname);
                inputs.push(bname);
                *output = bn_out;
            }
            steps.remove(i + 1);
        }
        i += 1;
    }
}

fn fold_params(
    g: &Graph,
    conv_in: &[String],
    bn_in: &[String],
    eps: f32,
) -> Option<(TractTensor, TractTensor)> {
    let f =
        |name: &str| -> Option<Vec<f32>> { elements::<f32>(g.constant(name)?).map(|c| c.to_vec()) };
    let w = g.constant(conv_in.get(1)?)?;
    let wv = elements::<f32>(w)?;
    let m = *w.shape().first()?;
    let bias = match conv_in.get(2).filter(|b| !b.is_empty()) {
        Some(b) => f(b)?,
        None => vec![0.0; m],
    };
    let (scale, shift, mean, var) = (f(&bn_in[1])?, f(&bn_in[2])?, f(&bn_in[3])?, f(&bn_in[4])?);
    if [bias.len(), scale.len(), shift.len(), mean.len(), var.len()]
        .iter()
        .any(|&l| l != m)
        || m == 0
    {
        return None;
    }
    let per = wv.len() / m;
    let mut nw = wv.to_vec();
    let mut nb = vec![0.0f32; m];
    for c in 0..m {
        let s = scale[c] / (var[c] + eps).sqrt();
        nw[c * per..(c + 1) * per].iter_mut().for_each(|x| *x *= s);
        nb[c] = (bias[c] - mean[c]) * s + shift[c];
    }
    let nw = TractTensor::from_shape(w.shape(), &nw).ok()?;
    Some((nw, Array1::from(nb).into()))
}

/// X → Relu, where X's output feeds only the Relu: X applies the ReLU itself.
fn fuse_relu(g: &Graph, steps: &mut Vec<Step>) {
    let mut i = 0;
    while i + 1 < steps.len() {
        let fuse = match (&steps[i], &steps[i + 1]) {
            (
                Step::Device { op, output: xo, .. },
                Step::Device {
                    op: Op::Unary { code: 0, .. },
                    inputs: ri,
                    output: ro,
                },
            ) if ri.first() == Some(xo)
                && uses(g, steps, xo) == 1
                && matches!(
                    op,
                    Op::Conv { relu: false, .. }
                        | Op::Gemm { relu: false, .. }
                        | Op::Binary { relu: false, .. }
                        | Op::BatchNorm { relu: false, .. }
                ) =>
            {
                Some(ro.clone())
            }
            _ => None,
        };
        if let Some(relu_out) = fuse {
            if let Step::Device { op, output, .. } = &mut steps[i] {
                match op {
                    Op::Conv { relu, .. }
                    | Op::Gemm { relu, .. }
                    | Op::Binary { relu, .. }
                    | Op::BatchNorm { relu, .. } => *relu = true,
                    _ => {}
                }
                *output = relu_out;
            }
            steps.remove(i + 1);
        }
        i += 1;
    }
}
