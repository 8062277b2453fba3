//! Per-channel scales folded into convolution kernels before tract optimizes a model.
//!
//! An ONNX BatchNormalization after a convolution reaches tract's typed model as a `Mul` by
//! a per-channel constant (then an `Add`). tract's declutter folds that `Mul` into the
//! kernel by wiring `kernel × scale` and evaluating it as a constant, through its generic
//! broadcasting loop (ndarray's `Zip`, element by element, after copying the kernel): on
//! the resnet sample that was a third of the load, done again for every plan. [`scales`]
//! makes the same fold in one pass over each kernel, on the typed model that every plan
//! starts from, for exactly the convolutions tract's rule folds
//! (`Conv::declutter_channel_arithmetic_succ`): float, ungrouped, the `Mul` the
//! convolution's only consumer, the scale a constant of one value per output channel along
//! the channel axis. Products are the same single f32 multiplications, so plans answer bit
//! for bit as before. Convolutions that tract turns into a matrix product first (1×1,
//! undilated, unpadded) are left as they are, as tract leaves them.

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::Conv;
use tract_onnx::tract_core::ops::math::Mul;

/// Folds every per-channel constant `Mul` that follows a convolution in `model` into the
/// convolution's kernel and bias (see the module's documentation); the model answers as
/// before. Returns how many were folded.
pub(super) fn scales(model: &mut TypedModel) -> TractResult<usize> {
    let mut folded = 0;
    for id in 0..model.nodes().len() {
        if let Some(patch) = fold(model, model.node(id))? {
            patch.apply(model)?;
            folded += 1;
        }
    }
    if folded > 0 {
        // Drops the replaced kernels, which the typed model would otherwise keep.
        model.compact()?;
    }
    Ok(folded)
}

/// The patch folding the `Mul` after `node` into its kernel, when `node` is a convolution
/// that tract's own rule would fold so.
fn fold(model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
    let Some(conv) = node.op_as::<Conv>() else {
        return Ok(None);
    };
    if conv.q_params.is_some() || conv.group != 1 || node.inputs.len() != 3 {
        return Ok(None);
    }
    let [succ] = &*node.outputs[0].successors else {
        return Ok(None);
    };
    let mul = model.node(succ.node);
    match mul.op_as::<TypedBinOp>() {
        Some(bin) if bin.0.is::<Mul>() && bin.1.is_none() => {}
        _ => return Ok(None),
    }
    let input = model.outlet_fact(node.inputs[0])?;
    let input_shape = conv.pool_spec.data_format.shape(input.shape.to_tvec())?;
    if becomes_matrix_product(conv, input_shape.hw_dims()) {
        return Ok(None);
    }
    let channels = conv.output_channels();
    let mut per_channel = tvec!(1.to_dim(); input_shape.rank());
    per_channel[input_shape.c_axis()] = channels.to_dim();
    let scale = model.outlet_fact(mul.inputs[1 - succ.slot])?;
    let kernel = model.outlet_fact(node.inputs[1])?;
    let bias = model.outlet_fact(node.inputs[2])?;
    let (Some(scale_values), Some(kernel_values), Some(bias_values)) =
        (&scale.konst, &kernel.konst, &bias.konst)
    else {
        return Ok(None);
    };
    let f32s = [scale, kernel, bias]
        .iter()
        .all(|f| f.datum_type == f32::datum_type() && !f.is_exotic());
    if !f32s || *scale.shape != *per_channel {
        return Ok(None);
    }
    let scale = scale_values.try_as_plain_ram()?;
    let scale = scale.as_slice::<f32>()?;
    let Some(kernel) = scaled_kernel(conv, kernel_values, scale)? else {
        return Ok(None);
    };
    let Some(bias) = scaled_bias(bias_values, scale)? else {
        return Ok(None);
    };

    let mut patch = TypedModelPatch::new("fold channel scale into convolution");
    let input = patch.tap_model(model, node.inputs[0])?;
    let kernel = patch.add_const(format!("{}.{}.kernel", node.name, mul.name), kernel)?;
    let bias = patch.add_const(format!("{}.{}.bias", node.name, mul.name), bias)?;
    let wire = patch.wire_node(&node.name, conv.clone(), &[input, kernel, bias])?[0];
    patch.shunt_outside(model, succ.node.into(), wire)?;
    Ok(Some(patch))
}

/// Whether tract's declutter turns `conv` into a matrix product before it would fold a
/// scale into it (`declutter_stride_slice_to_downsample`, then `declutter_as_einsum`).
fn becomes_matrix_product(conv: &Conv, input_hw: &[TDim]) -> bool {
    conv.pool_spec.kernel_shape.iter().product::<usize>() == 1
        && conv.pool_spec.dilations().iter().all(|d| *d == 1)
        && conv
            .pool_spec
            .computed_padding(input_hw)
            .iter()
            .all(|pad| pad.pad_after.as_i64() == Some(0) && pad.pad_before.as_i64() == Some(0))
}

/// `kernel` with each output channel's weights multiplied by its `scale`; `None` when the
/// kernel does not hold one slice per scale along its output axis.
fn scaled_kernel(conv: &Conv, kernel: &Tensor, scale: &[f32]) -> TractResult<Option<Tensor>> {
    let shape = kernel.shape();
    let o_axis = conv.kernel_fmt.o_axis(shape);
    if shape.get(o_axis) != Some(&scale.len()) {
        return Ok(None);
    }
    let inner: usize = shape[o_axis + 1..].iter().product();
    let weights = kernel.try_as_plain_ram()?;
    let weights = weights.as_slice::<f32>()?;
    let mut scaled = Tensor::zero::<f32>(shape)?;
    let mut out = scaled.try_as_plain_ram_mut()?;
    let out = out.as_slice_mut::<f32>()?;
    if inner > 0 {
        let blocks = weights.chunks_exact(inner).zip(out.chunks_exact_mut(inner));
        for (block, (from, to)) in blocks.enumerate() {
            let s = scale[block % scale.len()];
            for (w, o) in from.iter().zip(to) {
                *o = w * s;
            }
        }
    }
    Ok(Some(scaled))
}

/// `bias` (one value per output channel, or one for all) multiplied by `scale`, one value
/// per channel; `None` for any other shape.
fn scaled_bias(bias: &Tensor, scale: &[f32]) -> TractResult<Option<Tensor>> {
    let values = bias.try_as_plain_ram()?;
    let values = values.as_slice::<f32>()?;
    let out: Vec<f32> = match values.len() {
        1 => scale.iter().map(|s| values[0] * s).collect(),
        n if n == scale.len() && bias.rank() == 1 => {
            values.iter().zip(scale).map(|(b, s)| b * s).collect()
        }
        _ => return Ok(None),
    };
    Ok(Some(Tensor::from_shape(&[scale.len()], &out)?))
}

#[cfg(test)]
mod tests;
