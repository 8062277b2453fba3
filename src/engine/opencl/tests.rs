//! Unit tests: shape rules and window geometry (device-independent); the work-group
//! autotune on the OpenCL device (PoCL in CI).

use super::ops::{AutoPad, Window};
use super::shapes::{broadcast, reshape};

fn window(auto_pad: AutoPad, ceil: bool, pads: [usize; 4], strides: [usize; 2]) -> Window {
    Window {
        kernel: Some([3, 3]),
        strides,
        pads,
        dilations: [1, 1],
        auto_pad,
        ceil,
    }
}

#[test]
fn broadcasting_follows_numpy() {
    assert_eq!(broadcast(&[2, 3, 4], &[4]), Some(vec![2, 3, 4]));
    assert_eq!(broadcast(&[2, 1, 4], &[3, 1]), Some(vec![2, 3, 4]));
    assert_eq!(broadcast(&[], &[5]), Some(vec![5]));
    assert_eq!(broadcast(&[2, 3], &[4, 3]), None);
}

#[test]
fn reshape_copies_zeros_and_infers_one_dimension() {
    assert_eq!(reshape(&[2, 3, 4], &[0, -1], false).unwrap(), vec![2, 12]);
    assert_eq!(
        reshape(&[2, 3, 4], &[4, 0, 2], false).unwrap(),
        vec![4, 3, 2]
    );
    assert_eq!(reshape(&[0, 3], &[3, 0], true).unwrap(), vec![3, 0]);
    assert!(reshape(&[2, 3], &[4, -1], false).is_err());
    assert!(reshape(&[2, 3], &[-1, -1], false).is_err());
    assert!(reshape(&[2, 3], &[7], false).is_err());
}

#[test]
fn window_output_sizes() {
    // 5x5, 3x3 kernel, stride 2, no pads: 2x2; ceil_mode: 2x2 too (the extra window would
    // start in the right padding only).
    let w = window(AutoPad::NotSet, false, [0; 4], [2, 2]);
    assert_eq!(w.output(5, 5, [3, 3]).unwrap().0, [2, 2]);
    let w = window(AutoPad::NotSet, true, [0; 4], [2, 2]);
    assert_eq!(w.output(6, 6, [3, 3]).unwrap().0, [3, 3]);
    // SAME_UPPER puts the odd padding at the end.
    let w = window(AutoPad::SameUpper, false, [0; 4], [2, 2]);
    let (out, pads) = w.output(6, 6, [3, 3]).unwrap();
    assert_eq!(out, [3, 3]);
    assert_eq!(pads, [0, 0, 1, 1]);
    let w = window(AutoPad::SameLower, false, [0; 4], [2, 2]);
    assert_eq!(w.output(6, 6, [3, 3]).unwrap().1, [1, 1, 0, 0]);
    // A window larger than the input is an error, not a panic.
    let w = window(AutoPad::NotSet, false, [0; 4], [1, 1]);
    assert!(w.output(2, 2, [3, 3]).is_err());
}

/// The work-group autotune on the OpenCL device (PoCL in CI): it picks a size that fits the
/// device; out of time it fails, and `choose_wg` then uses the safe size and says so in
/// the log.
#[test]
fn autotune_out_of_time_falls_back_to_the_safe_size_with_a_log_line() {
    use super::buffers::Pool;
    use super::exec::{Ctx, Kernels};
    use super::{device, program, tiling};
    use opencl3::command_queue::CommandQueue;
    use opencl3::context::Context;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    // Device setup and program builds are not thread-safe in every driver: take turns.
    let _turn = super::LOAD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let dev = device::select(None, None).expect("an OpenCL device (PoCL in CI)");
    let context = Context::from_device(&dev.device).unwrap();
    let (program, ..) = program::load(&context, &dev, None).unwrap();
    let kernels = Kernels::create(&program).unwrap();
    // SAFETY: the device belongs to the context.
    let queue =
        unsafe { CommandQueue::create_with_properties(&context, dev.device.id(), 0, 0) }.unwrap();
    let tiling = tiling::read(&context, &queue, &kernels).unwrap();
    let dummy = super::upload_slice(&context, &[0.0]).unwrap();
    let mut pool = Pool::new(u64::MAX);
    let mut ctx = Ctx {
        context: &context,
        queue: &queue,
        kernels: &kernels,
        pool: &mut pool,
        used: Vec::new(),
        meta: Vec::new(),
        dummy: &dummy,
        tiling,
        host_out: false,
    };
    let wg = tiling::autotune(&mut ctx, 64, Duration::from_secs(60)).unwrap();
    assert!(wg[0] * wg[1] <= 64, "{wg:?}");
    let err = tiling::autotune(&mut ctx, 64, Duration::ZERO).unwrap_err();
    assert!(err.contains("timed out"), "{err}");

    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Log {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let wg = tracing::subscriber::with_default(subscriber, || {
        tiling::choose_wg(&mut ctx, 64, None, Duration::ZERO)
    });
    assert_eq!(wg, tiling::default_wg(64));
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("autotune failed (timed out") && text.contains("using the safe size 8x4"),
        "{text}"
    );
}

/// `gemm_tile` in both variants — cache-tiled (CPUs) and local-memory tiles (GPUs, FPGAs),
/// each built here with its own options — against a product computed on the host, with
/// odd sizes (edges of every block), transposed A, a bias row, a residual and each epilogue
/// activation; and im2col + `gemm_tile` (the Conv path) against a direct convolution.
#[test]
fn gemm_tile_variants_match_the_host() {
    use super::buffers::Pool;
    use super::exec::{Ctx, Kernels};
    use super::matmul::Tile;
    use super::ops::Act;
    use super::{device, program, tiling};
    use opencl3::command_queue::CommandQueue;
    use opencl3::context::Context;
    use opencl3::types::CL_BLOCKING;

    // Device setup and program builds are not thread-safe in every driver: take turns.
    let _turn = super::LOAD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let dev = device::select(None, None).expect("an OpenCL device (PoCL in CI)");
    let context = Context::from_device(&dev.device).unwrap();
    // SAFETY: the device belongs to the context.
    let queue =
        unsafe { CommandQueue::create_with_properties(&context, dev.device.id(), 0, 0) }.unwrap();
    let dummy = super::upload_slice(&context, &[0.0]).unwrap();
    let (m, n, k) = (37usize, 53usize, 29usize);
    let val = |i: usize, s: usize| ((i * 7919 + s * 104_729) % 201) as f32 / 100.0 - 1.0;
    let a: Vec<f32> = (0..k * m).map(|i| val(i, 1)).collect(); // K x M: A' transposed
    let b: Vec<f32> = (0..k * n).map(|i| val(i, 2)).collect(); // K x N
    let bias: Vec<f32> = (0..n).map(|i| val(i, 3)).collect(); // one row, broadcast
    let res: Vec<f32> = (0..m * n).map(|i| val(i, 4)).collect();
    let acts = [
        Act::None,
        Act::Relu,
        Act::Sigmoid,
        Act::Tanh,
        Act::Clip(-0.5, 0.25),
    ];
    let host = |act: Act| -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f32;
                for kk in 0..k {
                    s += a[kk * m + i] * b[kk * n + j];
                }
                let v = 0.5 * s + 2.0 * bias[j] + res[i * n + j];
                c[i * n + j] = match act {
                    Act::None => v,
                    Act::Relu => v.max(0.0),
                    Act::Sigmoid => 1.0 / (1.0 + (-v).exp()),
                    Act::Tanh => v.tanh(),
                    Act::Clip(lo, hi) => v.max(lo).min(hi),
                };
            }
        }
        c
    };
    for options in [
        "-cl-std=CL1.2 -D RM=8 -D RN=16 -D TILE_LOCAL=0",
        "-cl-std=CL1.2 -D RM=8 -D RN=8 -D TILE_LOCAL=0",
        "-cl-std=CL1.2 -D RM=4 -D RN=4 -D TILE_LOCAL=1 -D LX=8 -D LY=8 -D TK=16",
        "-cl-std=CL1.2 -D RM=4 -D RN=4 -D TILE_LOCAL=1 -D LX=16 -D LY=16 -D TK=16",
    ] {
        let program = program::build_with(&context, &dev, options).unwrap();
        let kernels = Kernels::create(&program).unwrap();
        let mut tl = tiling::read(&context, &queue, &kernels).unwrap();
        assert_eq!(tl.local, options.contains("TILE_LOCAL=1"), "{options}");
        if !tl.local {
            tl.wg = [4, 2];
        }
        let mut pool = Pool::new(u64::MAX);
        let mut ctx = Ctx {
            context: &context,
            queue: &queue,
            kernels: &kernels,
            pool: &mut pool,
            used: Vec::new(),
            meta: Vec::new(),
            dummy: &dummy,
            tiling: tl,
            host_out: false,
        };
        let da = ctx.upload(vec![k, m], &a).unwrap();
        let db = ctx.upload(vec![k, n], &b).unwrap();
        let dbias = ctx.upload(vec![n], &bias).unwrap();
        let dres = ctx.upload(vec![m, n], &res).unwrap();
        for act in acts {
            let c = ctx.alloc(vec![m, n]).unwrap();
            ctx.gemm_tile(&Tile {
                a: &da,
                b: &db,
                bias: Some(&dbias),
                res: Some(&dres),
                c: &c,
                mnk: [m, n, k],
                a_layout: [0, 1, m, 0],
                b_layout: [0, n, 0],
                c_layout: [0, 0],
                batch: 1,
                alpha: 0.5,
                beta: 2.0,
                bias_strides: [0, 1],
                act,
                nan_to_zero: false,
            })
            .unwrap();
            let mut got = vec![0f32; m * n];
            // SAFETY: blocking read into a live slice of the tensor's size.
            unsafe { queue.enqueue_read_buffer(c.buf.get(), CL_BLOCKING, 0, &mut got, &[]) }
                .unwrap();
            for (i, (g, w)) in got.iter().zip(host(act)).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5 + 1e-4 * w.abs(),
                    "{options} {act:?} at {i}: {g} vs {w}"
                );
            }
        }
    }
}

/// `precision = "fp16"` (half Conv weights and columns, half Gemm weights, FP32
/// accumulation) on PoCL, which
/// lacks cl_khr_fp16: the check is skipped by the test-only `fp16_unchecked` (the kernels use
/// core half loads and stores). lenet and resnet against FP32 on the same
/// device, within the FP16 tolerance `|a - b| <= 5e-3 * (1 + max |b|)` (measured: 1.5e-3 on
/// lenet, 4.6e-4 on resnet, outputs of magnitude 1.6 and 1.3); the Conv and Gemm nodes
/// really take the half path (their weights are half constants: lenet's 2 Conv and 3 Gemm,
/// resnet's 20 Conv and its Gemm).
#[test]
fn fp16_storage_is_within_its_tolerance_of_fp32() {
    use super::{OpenclConfig, OpenclEngine};
    use crate::engine::{Engine, LoadOptions};
    use crate::tensor::{Tensor, TensorData};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (model, shape, convs, gemms) in [
        ("lenet", vec![2, 1, 28, 28], 2, 3),
        ("resnet", vec![1, 3, 224, 224], 20, 1),
    ] {
        let path = root.join("models").join(model).join("1/model.onnx");
        let load = |fp16: bool| {
            OpenclEngine::load(
                &path,
                &LoadOptions {
                    opencl: OpenclConfig {
                        fp16,
                        fp16_unchecked: fp16,
                        ..OpenclConfig::default()
                    },
                    ..LoadOptions::default()
                },
            )
            .unwrap()
        };
        let (half, full) = (load(true), load(false));
        let ops = half.half_ops();
        let count = |op: &str| ops.iter().filter(|o| **o == op).count();
        assert_eq!(
            (count("Conv"), count("Gemm")),
            (convs, gemms),
            "{model}: half ops {ops:?}"
        );
        assert_eq!(half.half_constants(), convs + gemms);
        assert_eq!(full.half_constants(), 0);
        assert!(full.half_ops().is_empty());
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
            .collect();
        let t = Tensor::new(shape.clone(), TensorData::F32(data)).unwrap();
        let h = half.run(vec![t.clone()]).unwrap();
        let f = full.run(vec![t]).unwrap();
        let (TensorData::F32(h), TensorData::F32(f)) = (h[0].data(), f[0].data()) else {
            panic!("FP32 outputs");
        };
        let scale = f.iter().fold(0f32, |m, x| m.max(x.abs()));
        let worst = h
            .iter()
            .zip(f)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("{model}: fp16 worst |a - b| {worst} (max |b| {scale})");
        assert!(
            worst <= 5e-3 * (1.0 + scale),
            "{model}: {worst} vs scale {scale}"
        );
        assert!(worst > 0.0, "{model}: fp16 gave exactly the fp32 result");
    }
}
