//! Max pools for f32 channel-first tensors, put in place of tract's `OptMaxPool` once a
//! model is optimized: 2×2 at stride 2 (here) and 3×3 at stride 2 ([`three`]).
//!
//! tract's 2×2 pool has a vector path for stride 1 only; at stride 2 it walks every output
//! through per-tap bounds checks, which on lenet was 15 % of the model's CPU time. An
//! unpadded, non-overlapping window needs no check: each output is the max of two adjacent
//! pairs. Taps fold in tract's order, from `f32::MIN` with `f32::max`, so both ops answer
//! bit for bit alike, NaN and -inf included.

use three::MaxPool3x3;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{OptMaxPool, PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

mod three;

/// Max over each non-overlapping 2×2 window of the last two axes; an odd last row or
/// column is left out, as an unpadded pool does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct MaxPool2x2 {
    /// The replaced pool's spec, which still gives the output facts.
    pool_spec: PoolSpec,
}

impl MaxPool2x2 {
    /// The replacement for `op`, when `op` is a 2×2, stride-2, undilated, unpadded pool
    /// over channel-first data with no index output.
    fn replacing(op: &OptMaxPool) -> Option<MaxPool2x2> {
        let spec = &op.pool_spec;
        let unpadded = match &spec.padding {
            PaddingSpec::Valid => true,
            PaddingSpec::Explicit(before, after) => before.iter().chain(after).all(|&p| p == 0),
            PaddingSpec::ExplicitOnnxPool(before, after, ceil) => {
                !ceil && before.iter().chain(after).all(|&p| p == 0)
            }
            PaddingSpec::SameUpper | PaddingSpec::SameLower => false,
        };
        (square_at_stride_2(op, 2) && unpadded).then(|| MaxPool2x2 {
            pool_spec: spec.clone(),
        })
    }
}

/// Whether `op` pools `kernel`×`kernel` windows at stride 2, undilated, over channel-first
/// data, with no index output: what both of scoria's pools replace, padding aside.
fn square_at_stride_2(op: &OptMaxPool, kernel: usize) -> bool {
    let spec = &op.pool_spec;
    let ones = |v: &Option<TVec<usize>>| v.as_ref().is_none_or(|v| v.iter().all(|&d| d == 1));
    op.with_index_outputs.is_none()
        && matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW)
        && spec.kernel_shape[..] == [kernel, kernel]
        && spec.strides.as_deref() == Some(&[2, 2][..])
        && ones(&spec.dilations)
}

impl Op for MaxPool2x2 {
    fn name(&self) -> StaticName {
        "MaxPool2x2".into()
    }

    op_as_typed_op!();
}

impl EvalOp for MaxPool2x2 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape = input.shape();
        let rank = shape.len();
        ensure!(
            rank >= 2,
            "a 2x2 pool needs two spatial axes, got shape {shape:?}"
        );
        let (h, w) = (shape[rank - 2], shape[rank - 1]);
        let (oh, ow) = (h / 2, w / 2);
        let mut out_shape: TVec<usize> = shape.into();
        out_shape[rank - 2] = oh;
        out_shape[rank - 1] = ow;
        // SAFETY: every element is written below, or there is none.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        if oh > 0 && ow > 0 {
            let input = input.try_as_plain_ram()?;
            let mut out = output.try_as_plain_ram_mut()?;
            pool(input.as_slice::<f32>()?, out.as_slice_mut::<f32>()?, h, w);
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for MaxPool2x2 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs[0].datum_type == f32::datum_type(),
            "MaxPool2x2 takes f32, got {:?}",
            inputs[0].datum_type
        );
        self.pool_spec.output_facts(inputs)
    }

    as_op!();
}

/// Pools `src`, planes of `h` rows of `w` elements, into `dst`, planes of `h / 2` rows of
/// `w / 2` elements; `h` and `w` are at least 2.
fn pool(src: &[f32], dst: &mut [f32], h: usize, w: usize) {
    let (oh, ow) = (h / 2, w / 2);
    for (plane, out) in src.chunks_exact(h * w).zip(dst.chunks_exact_mut(oh * ow)) {
        for (oy, row) in out.chunks_exact_mut(ow).enumerate() {
            let top = &plane[2 * oy * w..][..2 * ow];
            let bottom = &plane[(2 * oy + 1) * w..][..2 * ow];
            for ((o, t), b) in row
                .iter_mut()
                .zip(top.chunks_exact(2))
                .zip(bottom.chunks_exact(2))
            {
                *o = f32::MIN.max(t[0]).max(t[1]).max(b[0]).max(b[1]);
            }
        }
    }
}

/// Puts a [`MaxPool2x2`] or [`MaxPool3x3`] in place of every f32 `OptMaxPool` it can stand
/// for in `model`, an optimized model.
pub(super) fn substitute(model: &mut TypedModel) -> TractResult<()> {
    for id in 0..model.nodes().len() {
        let node = model.node(id);
        let Some(pool) = node.op_as::<OptMaxPool>() else {
            continue;
        };
        let op: Box<dyn TypedOp> = match (MaxPool2x2::replacing(pool), MaxPool3x3::replacing(pool))
        {
            (Some(op), _) => Box::new(op),
            (None, Some(op)) => Box::new(op),
            (None, None) => continue,
        };
        if model.outlet_fact(node.inputs[0])?.datum_type == f32::datum_type() {
            model.node_mut(id).op = op;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::IntoRunnable;
    use tract_onnx::tract_core::ops::cnn::MaxPool;

    fn pool_model(shape: &[usize], strides: usize, padding: PaddingSpec) -> TypedModel {
        pool_model_k(shape, 2, strides, padding)
    }

    fn pool_model_k(
        shape: &[usize],
        kernel: usize,
        strides: usize,
        padding: PaddingSpec,
    ) -> TypedModel {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact(shape)).expect("a source");
        let spec = PoolSpec {
            data_format: if shape.len() == 4 {
                DataFormat::NCHW
            } else {
                DataFormat::CHW
            },
            kernel_shape: tvec![kernel, kernel],
            padding,
            dilations: None,
            strides: Some(tvec![strides, strides]),
            input_channels: shape[shape.len() - 3],
            output_channels: shape[shape.len() - 3],
        };
        let y = model
            .wire_node("pool", MaxPool::new(spec, None), &[x])
            .expect("a pool");
        model.select_output_outlets(&y).expect("an output");
        model
    }

    /// Values that reach every branch of a max: NaN, both infinities, both zeros, ties.
    fn input(shape: &[usize], seed: u64) -> Tensor {
        let mut state = seed;
        let len: usize = shape.iter().product();
        let values: Vec<f32> = (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                match (state >> 33) % 16 {
                    0 => f32::NAN,
                    1 => f32::NEG_INFINITY,
                    2 => f32::INFINITY,
                    3 => -0.0,
                    4 => 0.0,
                    5 => 1.0,
                    r => ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * r as f32,
                }
            })
            .collect();
        // The first plane's first window all NaN, its second all -inf (where it has them).
        let mut values = values;
        let w = shape[shape.len() - 1];
        if shape[shape.len() - 2] >= 2 && w >= 4 {
            for (x, fill) in [(0, f32::NAN), (2, f32::NEG_INFINITY)] {
                for at in [x, x + 1, w + x, w + x + 1] {
                    values[at] = fill;
                }
            }
        }
        Tensor::from_shape(shape, &values).expect("a tensor")
    }

    fn bits(v: &TValue) -> Vec<u32> {
        let plain = v.try_as_plain_ram().expect("plain");
        let values = plain.as_slice::<f32>().expect("f32");
        values.iter().map(|f| f.to_bits()).collect()
    }

    #[test]
    fn answers_bit_for_bit_as_tracts_pool_on_every_shape_it_replaces() {
        let shapes: [&[usize]; 5] = [
            &[1, 6, 28, 28],
            &[3, 16, 10, 10],
            &[2, 3, 7, 9],
            &[1, 1, 2, 2],
            &[4, 5, 3],
        ];
        for (i, shape) in shapes.iter().enumerate() {
            for padding in [
                PaddingSpec::Valid,
                PaddingSpec::Explicit(tvec![0, 0], tvec![0, 0]),
                PaddingSpec::ExplicitOnnxPool(tvec![0, 0], tvec![0, 0], false),
            ] {
                let what = format!("{shape:?} {padding:?}");
                let model = pool_model(shape, 2, padding);
                assert_alike(model, "MaxPool2x2", input(shape, i as u64 + 1), &what);
            }
        }
    }

    /// Runs `model` through tract's plan and ours (which must contain `replaced`) and
    /// compares every output bit.
    fn assert_alike(model: TypedModel, replaced: &str, x: Tensor, what: &str) {
        let tracts = model.clone().into_optimized().expect("tract's plan");
        let ours = crate::engine::tract::optimize(model).expect("our plan");
        // By name: the plan's ops may be wrapped (`upper::ZeroUpper`).
        assert!(
            ours.nodes().iter().any(|n| n.op.name() == replaced),
            "{what} was not replaced"
        );
        let expected = tracts
            .into_runnable()
            .and_then(|p| p.run(tvec![x.clone().into_tvalue()]))
            .expect("tract's pool runs");
        let got = ours
            .into_runnable()
            .and_then(|p| p.run(tvec![x.into_tvalue()]))
            .expect("our pool runs");
        assert_eq!(expected[0].shape(), got[0].shape(), "{what}");
        let (expected, got) = (bits(&expected[0]), bits(&got[0]));
        let differs = expected.iter().zip(&got).position(|(e, g)| e != g);
        assert_eq!(differs, None, "{what}: first differing output");
    }

    /// ResNet's stem pool and its neighbours: odd and even sizes, padding on any side.
    #[test]
    fn three_by_three_answers_bit_for_bit_as_tracts_pool() {
        let shapes: [&[usize]; 6] = [
            &[1, 4, 112, 112],
            &[2, 3, 9, 10],
            &[1, 2, 10, 9],
            &[1, 1, 3, 3],
            &[1, 1, 4, 5],
            &[3, 7, 8],
        ];
        for (i, shape) in shapes.iter().enumerate() {
            for padding in [
                PaddingSpec::Valid,
                PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]),
                PaddingSpec::ExplicitOnnxPool(tvec![1, 1], tvec![1, 1], false),
                PaddingSpec::ExplicitOnnxPool(tvec![0, 1], tvec![1, 0], false),
                PaddingSpec::ExplicitOnnxPool(tvec![1, 0], tvec![0, 0], false),
                PaddingSpec::SameUpper,
                PaddingSpec::SameLower,
            ] {
                let what = format!("{shape:?} {padding:?}");
                let model = pool_model_k(shape, 3, 2, padding);
                assert_alike(model, "MaxPool3x3", input(shape, i as u64 + 11), &what);
            }
        }
    }

    /// A plane of no rows pools to no rows (tract's output size), without reading it.
    #[test]
    fn three_by_three_over_an_empty_plane_answers_nothing() {
        let padding = PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]);
        let model = pool_model_k(&[1, 2, 0, 4], 3, 2, padding);
        let plan = crate::engine::tract::optimize(model).expect("a plan");
        assert!(plan.nodes().iter().any(|n| n.op.name() == "MaxPool3x3"));
        let x = Tensor::zero::<f32>(&[1, 2, 0, 4]).expect("a tensor");
        let out = plan
            .into_runnable()
            .and_then(|p| p.run(tvec![x.into_tvalue()]))
            .expect("an answer");
        assert_eq!(out[0].shape(), &[1, 2, 0, 2]);
    }

    #[test]
    fn three_by_three_leaves_other_strides_and_paddings_to_tract() {
        for (strides, padding) in [
            (1, PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1])),
            (2, PaddingSpec::Explicit(tvec![2, 2], tvec![2, 2])),
            (
                2,
                PaddingSpec::ExplicitOnnxPool(tvec![1, 1], tvec![1, 1], true),
            ),
        ] {
            // 10 wide: ceil mode gives 6 outputs where any other padding here gives 5.
            let model = pool_model_k(&[1, 3, 10, 10], 3, strides, padding.clone());
            let ours = crate::engine::tract::optimize(model).expect("a plan");
            assert!(
                !ours.nodes().iter().any(|n| n.op.name() == "MaxPool3x3"),
                "stride {strides} {padding:?} was replaced"
            );
        }
    }

    /// tract's own pool panics here (a zero-length chunk); this one answers the empty
    /// tensor ONNX specifies.
    #[test]
    fn a_plane_smaller_than_the_window_pools_to_nothing() {
        let model = pool_model(&[1, 2, 1, 8], 2, PaddingSpec::Valid);
        let out = crate::engine::tract::optimize(model)
            .and_then(|m| m.into_runnable())
            .and_then(|p| p.run(tvec![input(&[1, 2, 1, 8], 7).into_tvalue()]))
            .expect("an empty answer");
        assert_eq!(out[0].shape(), &[1, 2, 0, 4]);
    }

    #[test]
    fn leaves_strided_1_padded_and_ceil_mode_pools_to_tract() {
        for (strides, padding) in [
            (1, PaddingSpec::Valid),
            (2, PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1])),
            (
                2,
                PaddingSpec::ExplicitOnnxPool(tvec![0, 0], tvec![0, 0], true),
            ),
            (2, PaddingSpec::SameUpper),
        ] {
            let model = pool_model(&[1, 3, 9, 9], strides, padding.clone());
            let ours = crate::engine::tract::optimize(model).expect("a plan");
            assert!(
                !ours.nodes().iter().any(|n| n.op.name() == "MaxPool2x2"),
                "stride {strides} {padding:?} was replaced"
            );
        }
    }
}
