//! Im2colRuns against tract's own lazy im2col.

use super::*;
use crate::engine::tract::tests::values;
use tract_onnx::prelude::IntoRunnable;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// One f32 NCHW convolution of `input` (`[1, c, h, w]`) to `out` channels.
fn conv_model(input: &[usize], out: usize, kernel: usize, stride: usize, pad: usize) -> TypedModel {
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact(input)).expect("a source");
    let c = input[1];
    let weights = Tensor::from_shape(
        &[out, c, kernel, kernel],
        &values(out * c * kernel * kernel, 3),
    )
    .expect("weights");
    let w = model.add_const("w", weights).expect("weights");
    let b = model
        .add_const(
            "b",
            Tensor::from_shape(&[out], &values(out, 5)).expect("bias"),
        )
        .expect("bias");
    let spec = PoolSpec {
        data_format: DataFormat::NCHW,
        kernel_shape: tvec![kernel, kernel],
        padding: PaddingSpec::Explicit(tvec![pad, pad], tvec![pad, pad]),
        dilations: None,
        strides: Some(tvec![stride, stride]),
        input_channels: c,
        output_channels: out,
    };
    let conv = Conv {
        pool_spec: spec,
        kernel_fmt: KernelFormat::OIHW,
        group: 1,
        q_params: None,
    };
    let y = model.wire_node("conv", conv, &[x, w, b]).expect("a conv");
    model.select_output_outlets(&y).expect("an output");
    model
}

fn bits(v: &TValue) -> Vec<u32> {
    let plain = v.try_as_plain_ram().expect("plain");
    plain
        .as_slice::<f32>()
        .expect("f32")
        .iter()
        .map(|f| f.to_bits())
        .collect()
}

/// (input shape, output channels, kernel, stride, padding): lenet's and resnet's
/// convolutions, and rows whose width is no multiple of any panel's.
const GEOMETRIES: [(&[usize], usize, usize, usize, usize); 7] = [
    (&[1, 1, 28, 28], 6, 5, 1, 2),
    (&[1, 6, 14, 14], 16, 5, 1, 0),
    (&[1, 3, 30, 30], 8, 7, 2, 3),
    (&[1, 8, 17, 13], 16, 3, 1, 1),
    (&[1, 8, 17, 13], 16, 3, 2, 1),
    (&[1, 4, 9, 31], 5, 3, 1, 0),
    (&[1, 2, 7, 7], 3, 3, 1, 1),
];

#[test]
fn answers_bit_for_bit_as_tracts_lazy_im2col() {
    for (i, &(input, out, kernel, stride, pad)) in GEOMETRIES.iter().enumerate() {
        let model = conv_model(input, out, kernel, stride, pad);
        let tracts = model.clone().into_optimized().expect("tract's plan");
        assert!(
            tracts.nodes().iter().any(|n| n.op.name() == LAZY_IM2COL),
            "{input:?} k{kernel} s{stride}: tract no longer lowers it lazily"
        );
        let ours = crate::engine::tract::optimize(model).expect("our plan");
        assert!(
            ours.nodes().iter().any(|n| n.op_is::<Im2colRuns>()),
            "{input:?} k{kernel} s{stride} p{pad} was not replaced"
        );
        assert!(!ours.nodes().iter().any(|n| n.op.name() == LAZY_IM2COL));
        let len = input.iter().product();
        let x = Tensor::from_shape(input, &values(len, i as u64 + 11)).expect("x");
        let expected = tracts
            .into_runnable()
            .and_then(|p| p.run(tvec![x.clone().into_tvalue()]))
            .expect("tract's conv runs");
        let got = ours
            .into_runnable()
            .and_then(|p| p.run(tvec![x.into_tvalue()]))
            .expect("our conv runs");
        assert_eq!(expected[0].shape(), got[0].shape());
        assert_eq!(
            bits(&expected[0]),
            bits(&got[0]),
            "{input:?} k{kernel} s{stride} p{pad}"
        );
    }
}

#[test]
fn an_input_shorter_than_its_patches_is_an_error() {
    let ours =
        crate::engine::tract::optimize(conv_model(&[1, 2, 7, 7], 3, 3, 1, 0)).expect("our plan");
    let node = ours
        .nodes()
        .iter()
        .find(|n| n.op_is::<Im2colRuns>())
        .expect("replaced");
    let short = Tensor::from_shape(&[1, 2, 7, 6], &values(84, 1)).expect("x");
    let err = node
        .op
        .eval_out_of_plan(tvec![short.into_tvalue()])
        .expect_err("an error, not a read past the input");
    assert!(err.to_string().contains("its patches read"), "{err}");
}
