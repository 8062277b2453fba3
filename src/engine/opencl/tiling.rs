//! The tiled GEMM's parameters: chosen per device when the program is built from source
//! (from the device's queried limits), read back from the program itself (the `abi` kernel)
//! so a prebuilt binary may carry its own, and the work-group size of the cache-tiled variant
//! picked by a short autotune whose result is cached next to the program binary.

use super::device::Selected;
use super::exec::Ctx;
use super::exec::Kernels;
use super::matmul::Tile;
use super::ops::Act;
use opencl3::command_queue::CommandQueue;
use opencl3::context::Context;
use opencl3::device::{CL_DEVICE_TYPE_CPU, CL_GLOBAL};
use opencl3::memory::{Buffer, ClMem, CL_MEM_READ_WRITE};
use opencl3::types::CL_BLOCKING;
use std::path::Path;
use std::ptr;
use std::time::{Duration, Instant};

/// The kernel ABI this runtime speaks (`SCORIA_ABI` in `targets/opencl/tiled.cl`).
pub const ABI: i32 = 3;

/// Compile-time parameters of `gemm_tile` / `im2col` plus the work-group size to run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    /// Rows of C per work-item.
    pub rm: usize,
    /// Columns of C per work-item (a vector width).
    pub rn: usize,
    /// Tiles staged in local memory (then the work-group is fixed at `wg`).
    pub local: bool,
    /// Work-group size (x over columns, y over rows).
    pub wg: [usize; 2],
}

/// Build options for `dev`: register blocks and, where local memory is real (GPUs, FPGAs),
/// local-memory tiles sized to the device's limits.
pub fn build_options(dev: &Selected) -> String {
    let d = &dev.device;
    let cpu = d.dev_type().is_ok_and(|t| t & CL_DEVICE_TYPE_CPU != 0);
    let local_is_global = d.local_mem_type().is_ok_and(|t| t == CL_GLOBAL);
    let max_wg = d.max_work_group_size().unwrap_or(1);
    let local_mem = d.local_mem_size().unwrap_or(0);
    if cpu || local_is_global {
        // CPUs: each work-item a block of 8 rows x one native float vector of columns (16
        // with AVX-512, 8 with AVX2) in registers; the caches do the tiling. Measured on
        // PoCL (AVX-512): 8 x 16 takes ResNet's device time from 21 to 16 ms against 8 x 8.
        let rn = match d.native_vector_width_float().unwrap_or(8) {
            w if w >= 16 => 16,
            w if w >= 8 => 8,
            _ => 4,
        };
        return format!("-D RM=8 -D RN={rn} -D TILE_LOCAL=0");
    }
    // GPUs and accelerators: 16x16 (else 8x8) work-groups of 4x4 blocks, 16-deep tiles.
    for (l, rm, rn) in [(16usize, 4usize, 4usize), (8, 4, 4)] {
        let bytes = 16 * (l * rm + l * rn) * 4;
        if l * l <= max_wg && bytes as u64 <= local_mem {
            return format!("-D RM={rm} -D RN={rn} -D TILE_LOCAL=1 -D LX={l} -D LY={l} -D TK=16");
        }
    }
    "-D RM=4 -D RN=4 -D TILE_LOCAL=0".to_string()
}

/// Reads the program's ABI version and parameters by running its `abi` kernel.
pub fn read(context: &Context, queue: &CommandQueue, kernels: &Kernels) -> Result<Tiling, String> {
    // SAFETY: no host pointer is passed.
    let buf = unsafe { Buffer::<i32>::create(context, CL_MEM_READ_WRITE, 8, ptr::null_mut()) }
        .map_err(|e| format!("OpenCL: allocating 32 bytes: {e}"))?;
    let k = kernels.get("abi")?;
    let mem: opencl3::types::cl_mem = buf.get();
    // SAFETY: `abi` takes one __global int* and writes 7 ints; the buffer holds 8.
    unsafe {
        k.set_arg(0, &mem)
            .map_err(|e| format!("kernel 'abi' argument 0: {e}"))?;
        queue.enqueue_nd_range_kernel(k.get(), 1, ptr::null(), [1usize].as_ptr(), ptr::null(), &[])
    }
    .map_err(|e| format!("running kernel 'abi': {e}"))?;
    let mut out = [0i32; 8];
    // SAFETY: blocking read into a live array of the buffer's size.
    unsafe { queue.enqueue_read_buffer(&buf, CL_BLOCKING, 0, &mut out, &[]) }
        .map_err(|e| format!("OpenCL: reading the kernel ABI: {e}"))?;
    let [abi, rm, rn, local, lx, ly, ..] = out;
    if abi != ABI {
        return Err(format!(
            "the kernel program speaks ABI {abi}, this runtime needs ABI {ABI}: rebuild the binary from targets/opencl/ of this version"
        ));
    }
    let ok = |v: i32, what: &str| -> Result<usize, String> {
        usize::try_from(v)
            .ok()
            .filter(|&v| (1..=64).contains(&v))
            .ok_or_else(|| format!("the kernel program reports {what} = {v}"))
    };
    let rn = ok(rn, "RN")?;
    if ![1, 2, 4, 8, 16].contains(&rn) {
        return Err(format!("the kernel program reports RN = {rn}"));
    }
    Ok(Tiling {
        rm: ok(rm, "RM")?,
        rn,
        local: local != 0,
        wg: [ok(lx, "LX")?, ok(ly, "LY")?],
    })
}

/// The work-group size of the cache-tiled variant when nothing better is known: 8 x 4, or
/// what fits the device's largest work-group.
pub fn default_wg(max_wg: usize) -> [usize; 2] {
    [[8, 4], [4, 4], [4, 2], [2, 2], [2, 1]]
        .into_iter()
        .find(|[x, y]| x * y <= max_wg)
        .unwrap_or([1, 1])
}

/// How long the work-group autotune may take at load.
pub const TUNE_BUDGET: Duration = Duration::from_millis(1500);

/// The work-group size of the cache-tiled `gemm_tile` on this device: from the autotune cache
/// file next to the program binary, else timed now (and cached). An autotune that fails, or
/// runs out of `budget` before timing any size, falls back to [`default_wg`] and says so in
/// the log.
pub fn choose_wg(
    ctx: &mut Ctx,
    max_wg: usize,
    cache: Option<&Path>,
    budget: Duration,
) -> [usize; 2] {
    let safe = default_wg(max_wg);
    if let Some(wg) = cache.and_then(|p| read_cached(p, max_wg)) {
        return wg;
    }
    match autotune(ctx, max_wg, budget) {
        Ok(wg) => {
            tracing::debug!("opencl: work-group autotune chose {}x{}", wg[0], wg[1]);
            if let Some(path) = cache {
                // The cache is an optimisation: failing to write it is not an error.
                let _ = path
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| {
                        crate::fsutil::atomic_write(
                            path,
                            format!("{}x{}\n", wg[0], wg[1]).as_bytes(),
                        )
                    });
            }
            wg
        }
        Err(why) => {
            tracing::warn!(
                "opencl: work-group autotune failed ({why}); using the safe size {}x{}",
                safe[0],
                safe[1]
            );
            safe
        }
    }
}

fn read_cached(path: &Path, max_wg: usize) -> Option<[usize; 2]> {
    let text = std::fs::read_to_string(path).ok()?;
    let (x, y) = text.trim().split_once('x')?;
    let wg = [x.parse().ok()?, y.parse().ok()?];
    (wg[0] >= 1 && wg[1] >= 1 && wg[0] * wg[1] <= max_wg).then_some(wg)
}

/// Times `gemm_tile` on a ResNet-layer-sized product (64 x 784 x 576) for each candidate
/// work-group size, in order of preference, until `budget` runs out; the fastest of those
/// timed wins (on a busy machine a slow device may time only the first few, which beats
/// timing them again at every load). Err when no candidate ran.
pub fn autotune(ctx: &mut Ctx, max_wg: usize, budget: Duration) -> Result<[usize; 2], String> {
    const CANDIDATES: [[usize; 2]; 6] = [[8, 4], [4, 4], [16, 2], [8, 8], [4, 8], [2, 2]];
    let started = Instant::now();
    let (m, n, k) = (64usize, 784usize, 576usize);
    let a = ctx.upload(vec![k, m], &vec![0.5; k * m])?;
    let b = ctx.upload(vec![k, n], &vec![0.25; k * n])?;
    let c = ctx.alloc(vec![m, n])?;
    let saved = ctx.tiling;
    let mut best: Option<([usize; 2], Duration)> = None;
    let mut last_err = None;
    for wg in CANDIDATES.into_iter().filter(|[x, y]| x * y <= max_wg) {
        if started.elapsed() > budget {
            break;
        }
        ctx.tiling.wg = wg;
        let tile = Tile {
            a: &a,
            b: &b,
            bias: None,
            res: None,
            c: &c,
            mnk: [m, n, k],
            a_layout: [0, 1, m, 0],
            b_layout: [0, n, 0],
            c_layout: [0, 0],
            batch: 1,
            alpha: 1.0,
            beta: 0.0,
            bias_strides: [0, 0],
            act: Act::None,
            nan_to_zero: false,
        };
        let run = |ctx: &Ctx, times: usize| -> Result<Duration, String> {
            let t0 = Instant::now();
            for _ in 0..times {
                ctx.gemm_tile(&tile)?;
            }
            ctx.queue
                .finish()
                .map_err(|e| format!("waiting for the device: {e}"))?;
            Ok(t0.elapsed())
        };
        // One warm-up launch, then the best of two.
        match run(ctx, 1).and_then(|_| Ok(run(ctx, 1)?.min(run(ctx, 1)?))) {
            Ok(t) if best.is_none_or(|(_, b)| t < b) => best = Some((wg, t)),
            Ok(_) => {}
            Err(e) => last_err = Some(format!("{}x{}: {e}", wg[0], wg[1])),
        }
    }
    ctx.tiling = saved;
    match best {
        Some((wg, _)) => {
            if started.elapsed() > budget {
                tracing::debug!(
                    "opencl: work-group autotune ran out of its {} ms; keeping the fastest \
                     of the sizes it timed",
                    budget.as_millis()
                );
            }
            Ok(wg)
        }
        None if started.elapsed() > budget => Err(format!(
            "timed out after {} ms, before any size was timed",
            started.elapsed().as_millis()
        )),
        None => Err(last_err.unwrap_or_else(|| "no work-group size fits the device".into())),
    }
}
