//! Partitioning: each node goes to the device when its op and attributes have a kernel,
//! else to the CPU; consecutive CPU nodes become one CPU segment. Then rewrites on the
//! device side: BatchNormalization folded into the Conv before it (constant weights); with
//! `[opencl] fusion` (default on) an Add fused into the Conv that feeds only it (a residual)
//! and an activation (Relu, Sigmoid, Tanh, Clip) into the Conv / Gemm that feeds only it (a
//! Relu also into Add / Sub / Mul / Div / BatchNormalization); constant weights transposed
//! into the layout the tiled GEMM reads.

use super::cpu::{CpuSegment, Runner};
use super::graph::{elements, node_label, Graph, ONNX_FLOAT};
use super::ops::{device_op, Act, Op};
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
    fusion: bool,
    auto: bool,
    fp16: bool,
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
    if auto {
        match macs_per_sample(g, &ops) {
            Some(macs) if macs < AUTO_MIN_MACS => {
                tracing::info!(
                    "opencl: placement = \"auto\" keeps the model on the CPU: {macs} multiply-adds per sample, below {AUTO_MIN_MACS}"
                );
                ops.iter_mut().for_each(|o| *o = None);
            }
            Some(macs) => tracing::debug!("opencl: {macs} multiply-adds per sample: on the device"),
            None => tracing::debug!("opencl: work per sample unknown: on the device"),
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
    if fusion {
        fuse_add(g, &mut steps);
        fuse_act(g, &mut steps);
    }
    transpose_weights(g, &mut steps, &mut folded, fp16);
    Ok(Partition {
        steps,
        placement,
        folded,
    })
}

/// Below this many multiply-adds per sample in the device's Conv/Gemm/MatMul nodes,
/// `placement = "auto"` keeps a model on the CPU. A device round trip costs a fixed ~0.1 ms
/// (launches, transfers, the final wait: digits on an H200 takes 0.117 ms whatever its
/// batch), which is ~2 M multiply-adds of tract's time (~20 G/s on one core); at 10 M the
/// fixed cost is at most a fifth of what the CPU would spend. lenet (0.42 M, 0.90x on the
/// H200 at batch 1) and digits (4.7 K) stay on the CPU, resnet (483 M) goes to the device.
pub const AUTO_MIN_MACS: u64 = 10_000_000;

/// Multiply-adds per sample of the Conv, Gemm and MatMul nodes placed on the device, from
/// their weights' and outputs' shapes; `None` when a shape is unknown.
fn macs_per_sample(g: &Graph, ops: &[Option<Op>]) -> Option<u64> {
    let shape = |name: &str| -> Option<Vec<Option<usize>>> {
        match g.constant(name) {
            Some(t) => Some(t.shape().iter().map(|&d| Some(d)).collect()),
            None => g.shapes.get(name).cloned(),
        }
    };
    let product = |dims: &[Option<usize>]| -> Option<u64> {
        dims.iter()
            .try_fold(1u64, |acc, d| d.map(|d| acc.saturating_mul(d as u64)))
    };
    let mut total = 0u64;
    for (n, op) in g.nodes.iter().zip(ops) {
        let macs = match op {
            Some(Op::Conv { .. }) => {
                let w = shape(n.input.get(1)?)?;
                let out = shape(n.output.first()?)?;
                product(&w)?.saturating_mul(product(out.get(2..)?)?)
            }
            Some(Op::Gemm { .. }) => product(&shape(n.input.get(1)?)?)?,
            Some(Op::MatMul { .. }) => {
                let (a, b) = (shape(n.input.first()?)?, shape(n.input.get(1)?)?);
                let kn = product(b.get(b.len().checked_sub(2)?..)?)?;
                // Rows per sample: A's dimensions but the first (batch) and last (K).
                let rows = match a.len() {
                    0..=2 => 1,
                    r => product(&a[1..r - 1])?,
                };
                kn.saturating_mul(rows)
            }
            _ => 0,
        };
        total = total.saturating_add(macs);
    }
    Some(total)
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

/// The step after `i` that reads `value`, when it is the only reader (and `value` is not a
/// graph output).
fn sole_reader(g: &Graph, steps: &[Step], i: usize, value: &str) -> Option<usize> {
    if uses(g, steps, value) != 1 {
        return None;
    }
    (i + 1..steps.len()).find(|&j| match &steps[j] {
        Step::Device { inputs, .. } => inputs.iter().any(|n| n == value),
        Step::Cpu(seg) => seg.inputs.iter().any(|n| n == value),
    })
}

/// The activation a device step computes on its own, when its bounds are known at load.
fn activation(g: &Graph, op: &Op, inputs: &[String]) -> Option<Act> {
    match op {
        Op::Unary { code: 0, .. } => Some(Act::Relu),
        Op::Unary { code: 1, .. } => Some(Act::Sigmoid),
        Op::Unary { code: 2, .. } => Some(Act::Tanh),
        // Bounds computed at run time are read then: not fusable.
        Op::Unary { code: 3, lo, hi }
            if inputs
                .iter()
                .skip(1)
                .all(|b| b.is_empty() || g.constant(b).is_some()) =>
        {
            Some(Act::Clip(*lo, *hi))
        }
        _ => None,
    }
}

/// Conv (group 1) → Add, where the Conv's output feeds only the Add: the Conv adds the Add's
/// other operand in its epilogue (`gemm_tile`'s residual) and takes the Add's place.
fn fuse_add(g: &Graph, steps: &mut Vec<Step>) {
    let mut i = 0;
    while i < steps.len() {
        let found = match &steps[i] {
            Step::Device {
                op:
                    Op::Conv {
                        group: 1,
                        act: Act::None,
                        residual: false,
                        ..
                    },
                output,
                ..
            } => sole_reader(g, steps, i, output).and_then(|j| match &steps[j] {
                Step::Device {
                    op: Op::Binary { code: 0, relu },
                    inputs,
                    output: add_out,
                } if inputs.len() == 2 && (inputs[0] == *output) != (inputs[1] == *output) => {
                    let other = if inputs[0] == *output {
                        &inputs[1]
                    } else {
                        &inputs[0]
                    };
                    Some((j, other.clone(), add_out.clone(), *relu))
                }
                _ => None,
            }),
            _ => None,
        };
        let Some((j, other, add_out, relu)) = found else {
            i += 1;
            continue;
        };
        let mut conv = steps.remove(i);
        if let Step::Device { op, inputs, output } = &mut conv {
            if let Op::Conv { act, residual, .. } = op {
                *residual = true;
                if relu {
                    *act = Act::Relu;
                }
            }
            inputs.resize(3, String::new());
            inputs.push(other);
            *output = add_out;
        }
        // The Add (now at j - 1) is replaced by the fused Conv, where the residual exists.
        steps[j - 1] = conv;
    }
}

/// X → activation, where X's output feeds only the activation: X applies it in its epilogue
/// (Conv and Gemm: Relu, Sigmoid, Tanh, Clip with constant bounds; Add/Sub/Mul/Div and
/// BatchNormalization: Relu).
fn fuse_act(g: &Graph, steps: &mut Vec<Step>) {
    let mut i = 0;
    while i < steps.len() {
        let found = match &steps[i] {
            Step::Device { op, output, .. } => sole_reader(g, steps, i, output).and_then(|j| {
                let Step::Device {
                    op: next,
                    inputs,
                    output: act_out,
                } = &steps[j]
                else {
                    return None;
                };
                if inputs.first() != Some(output) {
                    return None;
                }
                let a = activation(g, next, inputs)?;
                let ok = match op {
                    Op::Conv { act: Act::None, .. } | Op::Gemm { act: Act::None, .. } => true,
                    Op::Binary { relu: false, .. } | Op::BatchNorm { relu: false, .. } => {
                        a == Act::Relu
                    }
                    _ => false,
                };
                ok.then(|| (j, a, act_out.clone()))
            }),
            Step::Cpu(_) => None,
        };
        let Some((j, a, act_out)) = found else {
            i += 1;
            continue;
        };
        if let Step::Device { op, output, .. } = &mut steps[i] {
            match op {
                Op::Conv { act, .. } | Op::Gemm { act, .. } => *act = a,
                Op::Binary { relu, .. } | Op::BatchNorm { relu, .. } => *relu = true,
                _ => {}
            }
            *output = act_out;
        }
        // The activation reads only X's output, so X may compute it where X was.
        steps.remove(j);
    }
}

/// Constant weights in the layouts `gemm_tile` reads fastest: a Conv's (group 1) as K x M
/// (K = C * KH * KW), a Gemm's transposed B as K x N. With `fp16` these and a MatMul's
/// constant B are named `...::f16` and uploaded as half (`gemm_tile_h` / `gemm_tile_hb`).
fn transpose_weights(
    g: &Graph,
    steps: &mut [Step],
    folded: &mut Vec<(String, Arc<TractTensor>)>,
    fp16: bool,
) {
    for step in steps.iter_mut() {
        let Step::Device { op, inputs, .. } = step else {
            continue;
        };
        let Some(wname) = inputs.get(1).cloned() else {
            continue;
        };
        let w = match folded.iter().find(|(n, _)| *n == wname) {
            Some((_, t)) => Arc::clone(t),
            None => match g.constant(&wname) {
                Some(t) => Arc::clone(t),
                None => continue,
            },
        };
        let Some(data) = elements::<f32>(&w) else {
            continue;
        };
        match op {
            Op::Conv {
                group: 1, wt: None, ..
            } if w.rank() == 4 => {
                let s = w.shape();
                let (m, k) = (s[0], s[1] * s[2] * s[3]);
                let name = format!("{wname}::kxm{}", if fp16 { "::f16" } else { "" });
                if !folded.iter().any(|(n, _)| *n == name) {
                    let t = transpose(&data, m, k, &[k, m]);
                    let Some(t) = t else { continue };
                    folded.push((name.clone(), Arc::new(t)));
                }
                if let Op::Conv { wt, half, .. } = op {
                    *wt = Some([s[0], s[1], s[2], s[3]]);
                    *half = fp16;
                }
                inputs[1] = name;
            }
            Op::Gemm { trans_b, .. } if w.rank() == 2 && (*trans_b || fp16) => {
                let s = w.shape();
                let tb = *trans_b;
                let name = format!(
                    "{wname}{}{}",
                    if tb { "::kxn" } else { "" },
                    if fp16 { "::f16" } else { "" }
                );
                if !folded.iter().any(|(n, _)| *n == name) {
                    let t = if tb {
                        transpose(&data, s[0], s[1], &[s[1], s[0]])
                    } else {
                        Some(w.as_ref().clone())
                    };
                    let Some(t) = t else { continue };
                    folded.push((name.clone(), Arc::new(t)));
                }
                if let Op::Gemm { trans_b, half, .. } = op {
                    *trans_b = false;
                    *half = fp16;
                }
                inputs[1] = name;
            }
            // MatMul's constant B as it is, stored as half.
            Op::MatMul { .. } if fp16 && w.rank() >= 1 => {
                let name = format!("{wname}::f16");
                if !folded.iter().any(|(n, _)| *n == name) {
                    folded.push((name.clone(), Arc::clone(&w)));
                }
                if let Op::MatMul { half } = op {
                    *half = true;
                }
                inputs[1] = name;
            }
            _ => {}
        }
    }
}

/// The `rows x cols` row-major matrix `data`, transposed, with shape `shape`.
fn transpose(data: &[f32], rows: usize, cols: usize, shape: &[usize]) -> Option<TractTensor> {
    if data.len() != rows * cols {
        return None;
    }
    let mut t = vec![0f32; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = data[r * cols + c];
        }
    }
    TractTensor::from_shape(shape, &t).ok()
}
