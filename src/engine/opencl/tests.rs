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
