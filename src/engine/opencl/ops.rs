//! The kernel registry: which ONNX ops (with which attributes) run on the device, parsed
//! into the parameters their kernels take. Anything not recognised here runs on the CPU.

use super::graph::{attr, attr_f, attr_i, attr_ints, attr_s, elements, Graph};
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::DatumType;

/// Ops whose kernels exist, as claimed in `targets/opencl/README.md`.
pub const SUPPORTED: &[&str] = &[
    "Conv",
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Clip",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "BatchNormalization",
    "Softmax",
    "Flatten",
    "Reshape",
    "Concat",
    "Identity",
];

/// ONNX `auto_pad`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoPad {
    NotSet,
    Valid,
    SameUpper,
    SameLower,
}

/// 2-D window geometry shared by Conv and the pools.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// `None`: taken from the weights (Conv only).
    pub kernel: Option<[usize; 2]>,
    pub strides: [usize; 2],
    /// top, left, bottom, right
    pub pads: [usize; 4],
    pub dilations: [usize; 2],
    pub auto_pad: AutoPad,
    pub ceil: bool,
}

/// An activation fused into the kernel that produces its input (the epilogue of `gemm_tile`;
/// the direct conv and untiled gemm kernels apply `Relu` themselves, the rest after them).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Act {
    #[default]
    None,
    Relu,
    Sigmoid,
    Tanh,
    Clip(f32, f32),
}

impl Act {
    /// The `act` code of `gemm_tile` (Relu: 1 keeps NaN, `nan_to_zero` gives 5, fmax).
    pub fn code(self, nan_to_zero: bool) -> i32 {
        match self {
            Act::None => 0,
            Act::Relu if nan_to_zero => 5,
            Act::Relu => 1,
            Act::Sigmoid => 2,
            Act::Tanh => 3,
            Act::Clip(..) => 4,
        }
    }

    pub fn bounds(self) -> (f32, f32) {
        match self {
            Act::Clip(lo, hi) => (lo, hi),
            _ => (0.0, 0.0),
        }
    }

    /// The `unary` kernel's op code for this activation applied on its own.
    pub fn unary_code(self) -> Option<i32> {
        match self {
            Act::None => None,
            Act::Relu => Some(0),
            Act::Sigmoid => Some(1),
            Act::Tanh => Some(2),
            Act::Clip(..) => Some(3),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Inputs: x, w, bias (or ""), then the residual when `residual`.
    Conv {
        win: Window,
        group: usize,
        act: Act,
        /// The weights (input 1) were transposed at load to K x M (K = C/group * KH * KW);
        /// the original M x C/group x KH x KW shape.
        wt: Option<[usize; 4]>,
        /// Input 3 is added to the output before `act` (a fused Add).
        residual: bool,
        /// `precision = "fp16"`: the transposed weights are stored as half, the columns too.
        half: bool,
    },
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
        act: Act,
        /// `precision = "fp16"`: B is a constant stored as half (K x N).
        half: bool,
    },
    MatMul {
        /// `precision = "fp16"`: B is a constant stored as half.
        half: bool,
    },
    /// 0 Add, 1 Sub, 2 Mul, 3 Div
    Binary {
        code: i32,
        relu: bool,
    },
    /// 0 Relu, 1 Sigmoid, 2 Tanh, 3 Clip, 4 copy
    Unary {
        code: i32,
        lo: f32,
        hi: f32,
    },
    Pool {
        win: Window,
        max: bool,
        count_pad: bool,
    },
    GlobalAvgPool,
    BatchNorm {
        eps: f32,
        relu: bool,
    },
    /// `legacy`: opset < 13, where the input is seen as 2-D at `axis`.
    Softmax {
        axis: i64,
        legacy: bool,
    },
    Flatten {
        axis: i64,
    },
    /// `shape`: `None` when read at run time from a host INT64 tensor.
    Reshape {
        shape: Option<Vec<i64>>,
        allowzero: bool,
    },
    Concat {
        axis: i64,
    },
}

/// The device op for `n`, or why it stays on the CPU.
pub fn device_op(n: &NodeProto, g: &Graph) -> Result<Op, String> {
    if !n.domain.is_empty() && n.domain != "ai.onnx" {
        return Err(format!("domain '{}' has no kernels", n.domain));
    }
    if !SUPPORTED.contains(&n.op_type.as_str()) {
        return Err(format!("{} has no kernel", n.op_type));
    }
    // Every data input must be FP32 (as far as the graph says); shape inputs are host-side.
    let data_inputs: Vec<&String> = match n.op_type.as_str() {
        "Reshape" => n.input.iter().take(1).collect(),
        "Clip" => n.input.iter().take(1).collect(),
        _ => n.input.iter().filter(|i| !i.is_empty()).collect(),
    };
    if let Some(i) = data_inputs.iter().find(|i| !g.is_f32(i)) {
        return Err(format!("input '{i}' is not known to be FP32"));
    }
    if n.output.len() != 1 {
        return Err(format!("{} with {} outputs", n.op_type, n.output.len()));
    }
    let op = match n.op_type.as_str() {
        "Conv" => {
            let win = window(n, g, true)?;
            if win.ceil {
                return Err("Conv has no ceil_mode".into());
            }
            Op::Conv {
                win,
                group: positive(attr_i(n, "group", 1), "group")?,
                act: Act::None,
                wt: None,
                residual: false,
                half: false,
            }
        }
        "Gemm" => Op::Gemm {
            alpha: attr_f(n, "alpha", 1.0),
            beta: attr_f(n, "beta", 1.0),
            trans_a: attr_i(n, "transA", 0) != 0,
            trans_b: attr_i(n, "transB", 0) != 0,
            act: Act::None,
            half: false,
        },
        "MatMul" => Op::MatMul { half: false },
        "Add" | "Sub" | "Mul" | "Div" => {
            if g.opset < 7 && attr(n, "broadcast").is_some() {
                return Err("legacy broadcast attribute".into());
            }
            let code = match n.op_type.as_str() {
                "Add" => 0,
                "Sub" => 1,
                "Mul" => 2,
                _ => 3,
            };
            Op::Binary { code, relu: false }
        }
        "Relu" => Op::Unary {
            code: 0,
            lo: 0.0,
            hi: 0.0,
        },
        "Sigmoid" => Op::Unary {
            code: 1,
            lo: 0.0,
            hi: 0.0,
        },
        "Tanh" => Op::Unary {
            code: 2,
            lo: 0.0,
            hi: 0.0,
        },
        "Identity" => Op::Unary {
            code: 4,
            lo: 0.0,
            hi: 0.0,
        },
        "Clip" => {
            let (mut lo, mut hi) = (f32::NEG_INFINITY, f32::INFINITY);
            if g.opset < 11 {
                lo = attr_f(n, "min", lo);
                hi = attr_f(n, "max", hi);
            } else {
                for (slot, bound) in [(1, &mut lo), (2, &mut hi)] {
                    match n.input.get(slot).filter(|s| !s.is_empty()) {
                        None => {}
                        // Bounds computed at run time are read then.
                        Some(name) if g.constant(name).is_none() && g.is_f32(name) => {}
                        Some(name) => *bound = scalar_f32(g, name)?,
                    }
                }
            }
            Op::Unary { code: 3, lo, hi }
        }
        "MaxPool" | "AveragePool" => {
            let max = n.op_type == "MaxPool";
            if attr_i(n, "storage_order", 0) != 0 {
                return Err("storage_order = 1".into());
            }
            let win = window(n, g, false)?;
            Op::Pool {
                win,
                max,
                count_pad: attr_i(n, "count_include_pad", 0) != 0,
            }
        }
        "GlobalAveragePool" => Op::GlobalAvgPool,
        "BatchNormalization" => {
            if attr_i(n, "training_mode", 0) != 0 {
                return Err("training_mode = 1".into());
            }
            if g.opset < 6 {
                return Err("BatchNormalization before opset 6".into());
            }
            Op::BatchNorm {
                eps: attr_f(n, "epsilon", 1e-5),
                relu: false,
            }
        }
        "Softmax" => {
            let legacy = g.opset < 13;
            Op::Softmax {
                axis: attr_i(n, "axis", if legacy { 1 } else { -1 }),
                legacy,
            }
        }
        "Flatten" => Op::Flatten {
            axis: attr_i(n, "axis", 1),
        },
        "Reshape" => {
            if g.opset < 5 {
                return Err("Reshape-1 (shape as attribute)".into());
            }
            let name = n.input.get(1).ok_or("Reshape without a shape input")?;
            let shape = match g.constant(name) {
                Some(t) if t.datum_type() == DatumType::I64 => {
                    Some(elements::<i64>(t).ok_or("shape is not readable")?.to_vec())
                }
                Some(_) => return Err("shape is not INT64".into()),
                None if g.types.get(name) == Some(&7) => None,
                None => return Err(format!("shape '{name}' is not known to be INT64")),
            };
            Op::Reshape {
                shape,
                allowzero: attr_i(n, "allowzero", 0) != 0,
            }
        }
        "Concat" => Op::Concat {
            axis: attr(n, "axis").map(|a| a.i).ok_or("Concat without axis")?,
        },
        other => return Err(format!("{other} has no kernel")),
    };
    Ok(op)
}

fn positive(v: i64, what: &str) -> Result<usize, String> {
    usize::try_from(v)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("{what} = {v}"))
}

fn pair(v: Option<Vec<i64>>, what: &str, default: usize) -> Result<[usize; 2], String> {
    match v {
        None => Ok([default, default]),
        Some(v) if v.len() == 2 => Ok([positive(v[0], what)?, positive(v[1], what)?]),
        Some(v) => Err(format!(
            "{what} of length {} (only 2-D has kernels)",
            v.len()
        )),
    }
}

fn window(n: &NodeProto, g: &Graph, conv: bool) -> Result<Window, String> {
    let kernel = match attr_ints(n, "kernel_shape") {
        Some(k) => Some(pair(Some(k), "kernel_shape", 1)?),
        None if conv => {
            // Without kernel_shape the weights decide; they must be 4-D.
            if let Some(w) = n.input.get(1).and_then(|w| g.constant(w)) {
                if w.rank() != 4 {
                    return Err(format!("{}-D weights (only 2-D has kernels)", w.rank()));
                }
            }
            None
        }
        None => return Err("pool without kernel_shape".into()),
    };
    let pads = match attr_ints(n, "pads") {
        None => [0; 4],
        Some(p) if p.len() == 4 && p.iter().all(|&x| x >= 0) => {
            [p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize]
        }
        Some(p) => return Err(format!("pads {p:?} (only 2-D, non-negative)")),
    };
    let auto_pad = match attr_s(n, "auto_pad").as_deref() {
        None | Some("NOTSET") | Some("") => AutoPad::NotSet,
        Some("VALID") => AutoPad::Valid,
        Some("SAME_UPPER") => AutoPad::SameUpper,
        Some("SAME_LOWER") => AutoPad::SameLower,
        Some(other) => return Err(format!("auto_pad = {other}")),
    };
    Ok(Window {
        kernel,
        strides: pair(attr_ints(n, "strides"), "strides", 1)?,
        pads,
        dilations: pair(attr_ints(n, "dilations"), "dilations", 1)?,
        auto_pad,
        ceil: attr_i(n, "ceil_mode", 0) != 0,
    })
}

fn scalar_f32(g: &Graph, name: &str) -> Result<f32, String> {
    let t = g
        .constant(name)
        .ok_or_else(|| format!("Clip bound '{name}' is not a constant"))?;
    if t.datum_type() != DatumType::F32 || t.len() != 1 {
        return Err(format!("Clip bound '{name}' is not an FP32 scalar"));
    }
    elements::<f32>(t)
        .and_then(|s| s.first().copied())
        .ok_or_else(|| format!("Clip bound '{name}' is not readable"))
}

impl Window {
    /// Output size and (top, left, bottom, right) pads for input `h x w` and kernel `k`.
    pub fn output(
        &self,
        h: usize,
        w: usize,
        k: [usize; 2],
    ) -> Result<([usize; 2], [usize; 4]), String> {
        let mut pads = self.pads;
        let mut out = [0usize; 2];
        for d in 0..2 {
            let input = [h, w][d];
            let s = self.strides[d];
            let ek = self.dilations[d] * (k[d] - 1) + 1;
            match self.auto_pad {
                AutoPad::NotSet => {
                    let span =
                        (input + pads[d] + pads[d + 2])
                            .checked_sub(ek)
                            .ok_or_else(|| {
                                format!(
                                    "window {ek} is larger than the padded input {}",
                                    input + pads[d] + pads[d + 2]
                                )
                            })?;
                    out[d] = if self.ceil {
                        span.div_ceil(s) + 1
                    } else {
                        span / s + 1
                    };
                    if self.ceil && (out[d] - 1) * s >= input + pads[d] {
                        // The last window must start inside the input or its left padding.
                        out[d] -= 1;
                    }
                }
                AutoPad::Valid => {
                    pads[d] = 0;
                    pads[d + 2] = 0;
                    let span = input
                        .checked_sub(ek)
                        .ok_or_else(|| format!("window {ek} is larger than the input {input}"))?;
                    out[d] = if self.ceil {
                        span.div_ceil(s) + 1
                    } else {
                        span / s + 1
                    };
                }
                AutoPad::SameUpper | AutoPad::SameLower => {
                    out[d] = input.div_ceil(s);
                    let total = ((out[d] - 1) * s + ek).saturating_sub(input);
                    let small = total / 2;
                    let big = total - small;
                    if self.auto_pad == AutoPad::SameUpper {
                        pads[d] = small;
                        pads[d + 2] = big;
                    } else {
                        pads[d] = big;
                        pads[d + 2] = small;
                    }
                }
            }
        }
        Ok((out, pads))
    }
}
