//! Scales folded before tract optimizes against tract's own fold.

use super::*;
use crate::engine::tract::tests::values;
use std::path::PathBuf;
use tract_onnx::prelude::IntoRunnable;
use tract_onnx::tract_core::ops::cnn::{KernelFormat, PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::math::add;
use tract_onnx::tract_core::ops::nn::DataFormat;

/// How the model around the convolution is built.
#[derive(Clone, Copy)]
struct Shape {
    kernel: usize,
    pad: usize,
    group: usize,
    /// The scale's shape: one per channel (`[1, out, 1, 1]`) or one for all.
    per_channel: bool,
    /// The bias: one per channel, or one for all (`[]`).
    bias_per_channel: bool,
    /// The convolution's output also feeds a second op.
    shared: bool,
    kernel_fmt: KernelFormat,
}

const PLAIN: Shape = Shape {
    kernel: 3,
    pad: 1,
    group: 1,
    per_channel: true,
    bias_per_channel: true,
    shared: false,
    kernel_fmt: KernelFormat::OIHW,
};

const C: usize = 4;
const OUT: usize = 6;

/// `[1, 4, 9, 7]` → conv to 6 channels → `Mul` by a constant → `Add` of a constant: a
/// BatchNormalization after a convolution, as tract's importer wires it.
fn model(shape: Shape) -> TypedModel {
    let mut model = TypedModel::default();
    let x = model
        .add_source("x", f32::fact([1, C, 9, 7]))
        .expect("a source");
    let k = shape.kernel;
    let kernel_shape = match shape.kernel_fmt {
        KernelFormat::OIHW => [OUT, C / shape.group, k, k],
        KernelFormat::HWIO => [k, k, C / shape.group, OUT],
        KernelFormat::OHWI => [OUT, k, k, C / shape.group],
    };
    let w = Tensor::from_shape(&kernel_shape, &values(kernel_shape.iter().product(), 3)).unwrap();
    let w = model.add_const("w", w).unwrap();
    let b = if shape.bias_per_channel {
        Tensor::from_shape(&[OUT], &values(OUT, 5)).unwrap()
    } else {
        tensor0(0.25f32)
    };
    let b = model.add_const("b", b).unwrap();
    let conv = Conv {
        pool_spec: PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec![k, k],
            padding: PaddingSpec::Explicit(
                tvec![shape.pad, shape.pad],
                tvec![shape.pad, shape.pad],
            ),
            dilations: None,
            strides: None,
            input_channels: C,
            output_channels: OUT,
        },
        kernel_fmt: shape.kernel_fmt,
        group: shape.group,
        q_params: None,
    };
    let y = model.wire_node("conv", conv, &[x, w, b]).unwrap()[0];
    let scale_shape = if shape.per_channel {
        [1, OUT, 1, 1]
    } else {
        [1, 1, 1, 1]
    };
    let scale = values(scale_shape.iter().product(), 7)
        .iter()
        .map(|v| v * 3.0)
        .collect::<Vec<f32>>();
    let scale = model
        .add_const(
            "bn.slope",
            Tensor::from_shape(&scale_shape, &scale).unwrap(),
        )
        .unwrap();
    let inter = Tensor::from_shape(&[1, OUT, 1, 1], &values(OUT, 11)).unwrap();
    let inter = model.add_const("bn.inter", inter).unwrap();
    let scaled = model
        .wire_node(
            "bn.mul",
            tract_onnx::tract_core::ops::math::mul(),
            &[scale, y],
        )
        .unwrap()[0];
    let mut outputs = model.wire_node("bn", add(), &[inter, scaled]).unwrap();
    if shape.shared {
        outputs.extend(model.wire_node("other", add(), &[inter, y]).unwrap());
    }
    model.select_output_outlets(&outputs).unwrap();
    model
}

/// The model's outputs' bits, optimized as scoria optimizes plans.
fn answer(model: TypedModel) -> Vec<Vec<u32>> {
    let input = Tensor::from_shape(&[1, C, 9, 7], &values(C * 9 * 7, 13)).unwrap();
    let plan = crate::engine::tract::optimize(model)
        .unwrap()
        .into_runnable()
        .unwrap();
    plan.run(tvec![input.into_tvalue()])
        .unwrap()
        .iter()
        .map(|v| {
            let plain = v.try_as_plain_ram().unwrap();
            plain
                .as_slice::<f32>()
                .unwrap()
                .iter()
                .map(|f| f.to_bits())
                .collect()
        })
        .collect()
}

/// How many `Mul`s take a convolution's output.
fn muls(model: &TypedModel) -> usize {
    model
        .nodes()
        .iter()
        .filter(|n| n.op_as::<TypedBinOp>().is_some_and(|b| b.0.is::<Mul>()))
        .filter(|n| n.inputs.iter().any(|i| model.node(i.node).op_is::<Conv>()))
        .count()
}

#[test]
fn a_scale_folded_before_tract_answers_bit_for_bit_as_tract_s_fold() {
    for (shape, folds) in [
        (PLAIN, 1),
        (
            Shape {
                bias_per_channel: false,
                ..PLAIN
            },
            1,
        ),
        (
            Shape {
                kernel_fmt: KernelFormat::HWIO,
                ..PLAIN
            },
            1,
        ),
        (
            Shape {
                kernel_fmt: KernelFormat::OHWI,
                ..PLAIN
            },
            1,
        ),
        // Left to tract, which leaves them as they are or folds them as it would have.
        (
            Shape {
                kernel: 1,
                pad: 0,
                ..PLAIN
            },
            0,
        ),
        (Shape { group: 2, ..PLAIN }, 0),
        (
            Shape {
                per_channel: false,
                ..PLAIN
            },
            0,
        ),
        (
            Shape {
                shared: true,
                ..PLAIN
            },
            0,
        ),
    ] {
        let original = model(shape);
        let mut folded = original.clone();
        assert_eq!(scales(&mut folded).unwrap(), folds);
        assert_eq!(muls(&folded), 1 - folds);
        assert_eq!(answer(folded), answer(original));
    }
}

/// The resnet sample's BatchNormalizations reach the typed model folded into their
/// convolutions, all but those after its 1×1 shortcut convolutions.
#[test]
fn the_resnet_sample_s_batch_norms_are_folded_at_import() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/resnet/1/model.onnx");
    let typed = crate::engine::tract::read_typed(&path, &Default::default())
        .unwrap()
        .model;
    let convs = typed.nodes().iter().filter(|n| n.op_is::<Conv>()).count();
    assert_eq!(convs, 20);
    assert_eq!(muls(&typed), 3);
}
