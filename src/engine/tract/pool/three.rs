//! A 3×3, stride-2 max pool with up to one row or column of padding on each side (ResNet's
//! stem pool), for f32 channel-first tensors.
//!
//! tract runs this pool tap by tap along strided rows, 5 % of resnet's CPU time. Max is
//! separable: each input row is reduced once to the max of every window's three columns,
//! and each output row folds the three reduced rows under it, so the work is done on
//! contiguous rows, in AVX2 code where the CPU has it. Every fold keeps the value it holds
//! unless a tap is greater (tract's `if o < v { v } else { o }`, from `f32::MIN`): the
//! result is the first greatest tap in row-major order either way, so both answer bit for bit
//! alike, NaN, -inf and signed zeros included.

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{OptMaxPool, PaddingSpec, PoolSpec};

/// Max over each 3×3 window at stride 2 of the last two axes, with padding rows above and
/// columns left of the input (taps there are skipped); the output size is the replaced
/// pool's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(in super::super) struct MaxPool3x3 {
    /// The replaced pool's spec, which gives the output facts.
    pool_spec: PoolSpec,
    pad: Before,
}

/// The padding before the input's rows and columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Before {
    /// (top, left), each 0 or 1.
    Explicit(usize, usize),
    /// ONNX's `SAME_UPPER` (`lower` false) or `SAME_LOWER`: the output is the input's size
    /// halved, rounded up, and the 1 or 2 elements of padding that takes are split evenly,
    /// the odd one after (upper) or before (lower).
    Same { lower: bool },
}

impl Before {
    /// Padding before an axis of `len` elements pooled into `out`.
    fn of(self, len: usize, out: usize, explicit: usize) -> usize {
        match self {
            Before::Explicit(..) => explicit,
            Before::Same { lower } => {
                let total = (2 * out.saturating_sub(1) + 3).saturating_sub(len);
                if lower {
                    total - total / 2
                } else {
                    total / 2
                }
            }
        }
    }
}

impl MaxPool3x3 {
    /// The replacement for `op`, when `op` is a 3×3, stride-2, undilated pool over
    /// channel-first data with at most one row or column of explicit padding on each side,
    /// rounding its output size down, and no index output.
    pub(super) fn replacing(op: &OptMaxPool) -> Option<MaxPool3x3> {
        if !super::square_at_stride_2(op, 3) {
            return None;
        }
        let spec = &op.pool_spec;
        let explicit = |before: &TVec<usize>, after: &TVec<usize>| {
            let small = before.iter().chain(after).all(|&p| p <= 1);
            (before.len() == 2 && after.len() == 2 && small)
                .then(|| Before::Explicit(before[0], before[1]))
        };
        // With a 3-wide window at stride 2, SAME pads 1 (even sizes) or 2 (odd): at most one
        // before and one after.
        let pad = match &spec.padding {
            PaddingSpec::Valid => Before::Explicit(0, 0),
            PaddingSpec::Explicit(before, after)
            | PaddingSpec::ExplicitOnnxPool(before, after, false) => explicit(before, after)?,
            PaddingSpec::SameUpper => Before::Same { lower: false },
            PaddingSpec::SameLower => Before::Same { lower: true },
            PaddingSpec::ExplicitOnnxPool(_, _, true) => return None,
        };
        Some(MaxPool3x3 {
            pool_spec: spec.clone(),
            pad,
        })
    }
}

impl Op for MaxPool3x3 {
    fn name(&self) -> StaticName {
        "MaxPool3x3".into()
    }

    op_as_typed_op!();
}

impl EvalOp for MaxPool3x3 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let facts = self.pool_spec.output_facts(&[&f32::fact(input.shape())])?;
        let out_shape = facts[0]
            .shape
            .as_concrete()
            .context("a concrete output shape")?
            .to_vec();
        let rank = input.rank();
        ensure!(
            rank >= 2 && out_shape.len() == rank,
            "a 3x3 pool needs two spatial axes, got shape {:?}",
            input.shape()
        );
        let (h, w) = (input.shape()[rank - 2], input.shape()[rank - 1]);
        let (oh, ow) = (out_shape[rank - 2], out_shape[rank - 1]);
        let (top, left) = match self.pad {
            Before::Explicit(top, left) => (top, left),
            same => (same.of(h, oh, 0), same.of(w, ow, 0)),
        };
        ensure!(top <= 1 && left <= 1, "3x3 pool padding {top}, {left}");
        // Every output window must start inside the padded input and end within one column
        // or row past it: checked here, so the loops below stay in bounds.
        ensure!(
            (oh == 0 || 2 * (oh - 1) < h + top) && (ow == 0 || 2 * (ow - 1) < w + left),
            "a {oh}x{ow} output does not fit a {h}x{w} input"
        );
        // SAFETY: every element is written below (filled, or pooled), or there is none.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        if h == 0 || w == 0 {
            // Windows over nothing but padding: the fold of no taps.
            output
                .try_as_plain_ram_mut()?
                .as_slice_mut::<f32>()?
                .fill(f32::MIN);
        } else if oh > 0 && ow > 0 {
            let input = input.try_as_plain_ram()?;
            let mut out = output.try_as_plain_ram_mut()?;
            let geometry = Geometry {
                h,
                w,
                oh,
                ow,
                top,
                left,
            };
            pool(
                &geometry,
                input.as_slice::<f32>()?,
                out.as_slice_mut::<f32>()?,
            );
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for MaxPool3x3 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs[0].datum_type == f32::datum_type(),
            "MaxPool3x3 takes f32, got {:?}",
            inputs[0].datum_type
        );
        self.pool_spec.output_facts(inputs)
    }

    as_op!();
}

/// One plane's input and output sizes and the padding before them.
struct Geometry {
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    top: usize,
    left: usize,
}

/// Pools every plane of `src` into `dst`.
fn pool(g: &Geometry, src: &[f32], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        unsafe { pool_avx2(g, src, dst) };
        return;
    }
    pool_planes(g, src, dst);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn pool_avx2(g: &Geometry, src: &[f32], dst: &mut [f32]) {
    pool_planes(g, src, dst);
}

/// Keeps `o` unless `v` is greater: tract's fold step.
#[inline(always)]
fn fold(o: f32, v: f32) -> f32 {
    if o < v {
        v
    } else {
        o
    }
}

#[inline(always)]
fn pool_planes(g: &Geometry, src: &[f32], dst: &mut [f32]) {
    let mut reduced = [vec![0f32; g.ow], vec![0f32; g.ow], vec![0f32; g.ow]];
    for (plane, out) in src
        .chunks_exact(g.h * g.w)
        .zip(dst.chunks_exact_mut(g.oh * g.ow))
    {
        // Which input row each slot of `reduced` holds.
        let mut held = [usize::MAX; 3];
        for (oy, row) in out.chunks_exact_mut(g.ow).enumerate() {
            row.fill(f32::MIN);
            for ky in 0..3 {
                let Some(iy) = (2 * oy + ky).checked_sub(g.top).filter(|&iy| iy < g.h) else {
                    continue;
                };
                let slot = iy % 3;
                if held[slot] != iy {
                    reduce_row(&plane[iy * g.w..][..g.w], g.left, &mut reduced[slot]);
                    held[slot] = iy;
                }
                for (o, &v) in row.iter_mut().zip(&reduced[slot]) {
                    *o = fold(*o, v);
                }
            }
        }
    }
}

/// `out[x]`: the fold of `row`'s columns `2x - left`, `2x + 1 - left` and `2x + 2 - left`
/// (those inside the row), from `f32::MIN`.
#[inline(always)]
fn reduce_row(row: &[f32], left: usize, out: &mut [f32]) {
    let w = row.len();
    let tap = |x: usize, kx: usize| (2 * x + kx).checked_sub(left).filter(|&i| i < w);
    // Outputs whose three taps are all inside the row, without checks: from `first`
    // (x with 2x >= left) while 2x + 2 - left < w.
    let first = left.div_ceil(2);
    let last = (w + left).saturating_sub(2).div_ceil(2).min(out.len());
    for (x, o) in out.iter_mut().enumerate() {
        if x >= first && x < last {
            continue;
        }
        *o = (0..3)
            .filter_map(|kx| tap(x, kx))
            .fold(f32::MIN, |o, i| fold(o, row[i]));
    }
    if first < last {
        let start = 2 * first - left;
        let inner = &row[start..start + 2 * (last - first) + 1];
        for (o, t) in out[first..last].iter_mut().zip(inner.windows(3).step_by(2)) {
            *o = fold(fold(fold(f32::MIN, t[0]), t[1]), t[2]);
        }
    }
}
