//! The kernel program: built from the embedded OpenCL C sources (cached on disk as a program
//! binary keyed by device and source hash), or loaded from a prebuilt binary (`[opencl]
//! binary`, the FPGA flow: `.aocx` / `.xclbin` files compiled offline from the same sources).

use super::device::Selected;
use opencl3::context::Context;
use opencl3::program::Program;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Every kernel source under `targets/opencl/`, in one program.
pub const SOURCE: &str = concat!(
    include_str!("../../../targets/opencl/tiled.cl"),
    include_str!("../../../targets/opencl/conv.cl"),
    include_str!("../../../targets/opencl/gemm.cl"),
    include_str!("../../../targets/opencl/elementwise.cl"),
    include_str!("../../../targets/opencl/pool.cl"),
);

/// The kernels the runtime creates and how many arguments each takes; a prebuilt binary must
/// define all of them with these signatures (see `targets/opencl/README.md`).
pub const KERNELS: &[(&str, u32)] = &[
    ("abi", 1),
    ("gemm_tile", 26),
    ("im2col", 17),
    ("gemm_tile_h", 26),
    ("gemm_tile_hb", 26),
    ("im2col_h", 17),
    ("conv2d", 22),
    ("conv2d_b4x4", 22),
    ("gemm", 18),
    ("gemm_rows", 18),
    ("unary", 6),
    ("binary_same", 6),
    ("binary_bcast", 8),
    ("batchnorm", 11),
    ("copy_rows", 8),
    ("pool2d", 19),
    ("global_avg", 4),
    ("softmax", 5),
];

/// Build options: strict IEEE single precision, no fast-math shortcuts; the device's tile
/// parameters follow (`tiling::build_options`).
const OPTIONS: &str = "-cl-std=CL1.2";

/// The full build options for `dev`.
pub fn options(dev: &Selected) -> String {
    format!("{OPTIONS} {}", super::tiling::build_options(dev))
}

/// Where the program came from, for placement reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Source,
    Cache,
    Binary,
}

impl Origin {
    pub fn name(self) -> &'static str {
        match self {
            Origin::Source => "built from source",
            Origin::Cache => "cached binary",
            Origin::Binary => "prebuilt binary",
        }
    }
}

/// The program for `dev`: from `binary` when given, else from the on-disk cache, else built
/// from source (and then cached).
/// Also returns where the work-group autotune of this program on this device is cached (the
/// program cache's file with `.tune`, or one keyed by the prebuilt binary's bytes).
pub fn load(
    context: &Context,
    dev: &Selected,
    binary: Option<&Path>,
) -> Result<(Program, Origin, Option<PathBuf>), String> {
    let ids = [dev.device.id()];
    if let Some(path) = binary {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read kernel binary {}: {e}", path.display()))?;
        let program = from_binary(context, &ids, &bytes).map_err(|e| match e {
            BinaryError::OldAbi(e) => format!("kernel binary {}: {e}", path.display()),
            BinaryError::Other(e) => format!(
                "kernel binary {} does not load on device '{}' ({}): {e}; was it built for this device?",
                path.display(),
                dev.device_name,
                dev.platform_name
            ),
        })?;
        let tune = cache_file(dev, &[&bytes], "tune");
        return Ok((program, Origin::Binary, tune));
    }
    let cache = cache_path(dev);
    let tune = cache.as_ref().map(|p| p.with_extension("tune"));
    if let Some(path) = &cache {
        if let Ok(bytes) = std::fs::read(path) {
            // A stale or corrupt cache entry is rebuilt from source below.
            if let Ok(p) = from_binary(context, &ids, &bytes) {
                return Ok((p, Origin::Cache, tune));
            }
        }
    }
    let program = build_from_source(context, dev)?;
    if let (Some(path), Ok(binaries)) = (&cache, program.get_binaries()) {
        if let Some(bin) = binaries.first().filter(|b| !b.is_empty()) {
            if let Some(dir) = path.parent() {
                // The cache is an optimisation: failing to write it is not an error.
                let _ = std::fs::create_dir_all(dir)
                    .and_then(|()| crate::fsutil::atomic_write(path, bin));
            }
        }
    }
    Ok((program, Origin::Source, tune))
}

/// Builds the program from source and returns its binary for `dev` (what `[opencl] binary`
/// loads): the GPU/CPU stand-in for an offline FPGA compile.
/// A binary built for an older kernel ABI lacks the newer kernels: its load error names the
/// first missing one.
pub fn build_binary(context: &Context, dev: &Selected) -> Result<Vec<u8>, String> {
    let program = build_from_source(context, dev)?;
    let binaries = program
        .get_binaries()
        .map_err(|e| format!("reading the program binary: {e}"))?;
    binaries
        .into_iter()
        .next()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| "the OpenCL driver returned no program binary".to_string())
}

fn build_from_source(context: &Context, dev: &Selected) -> Result<Program, String> {
    build_with(context, dev, &options(dev))
}

/// The program built from source with `options` (tests build other tile variants).
pub(super) fn build_with(
    context: &Context,
    dev: &Selected,
    options: &str,
) -> Result<Program, String> {
    let mut program = Program::create_from_source(context, SOURCE)
        .map_err(|e| format!("creating the kernel program: {e}"))?;
    let id = dev.device.id();
    if let Err(e) = program.build(&[id], options) {
        let log = program.get_build_log(id).unwrap_or_default();
        let first = log.lines().find(|l| l.contains("error")).unwrap_or("");
        return Err(format!("building the kernels failed: {e}: {first}"));
    }
    Ok(program)
}

/// Why a program binary does not load.
enum BinaryError {
    /// It is a program for this device, of an older kernel ABI (kernels missing or with
    /// other arguments).
    OldAbi(String),
    /// Not a program for this device.
    Other(String),
}

fn from_binary(
    context: &Context,
    ids: &[opencl3::types::cl_device_id],
    bytes: &[u8],
) -> Result<Program, BinaryError> {
    // SAFETY: `ids` holds the one device `context` was created for.
    let mut program = unsafe { Program::create_from_binary(context, ids, &[bytes]) }
        .map_err(|e| BinaryError::Other(e.to_string()))?;
    program
        .build(ids, OPTIONS)
        .map_err(|e| BinaryError::Other(e.to_string()))?;
    let old = |why: String| {
        BinaryError::OldAbi(format!(
            "{why}: it was built for an older kernel ABI; rebuild it from targets/opencl/ of this version (see targets/opencl/README.md)"
        ))
    };
    let names = program.kernel_names();
    let missing: Vec<&str> = KERNELS
        .iter()
        .map(|&(n, _)| n)
        .filter(|n| !names.split(';').any(|k| k == *n))
        .collect();
    // A program with none of the runtime's kernels is not one of its programs at all.
    if missing.len() == KERNELS.len() {
        return Err(BinaryError::Other(format!(
            "none of the runtime's kernels (e.g. '{}') is in it",
            KERNELS[0].0
        )));
    }
    if let Some(first) = missing.first() {
        return Err(old(format!(
            "it has no kernel '{first}'{}",
            if missing.len() > 1 {
                format!(" (nor {})", missing[1..].join(", "))
            } else {
                String::new()
            }
        )));
    }
    for &(name, args) in KERNELS {
        let k = opencl3::kernel::Kernel::create(&program, name)
            .map_err(|e| BinaryError::Other(format!("kernel '{name}' is not usable ({e})")))?;
        match k.num_args() {
            Ok(n) if n == args => {}
            Ok(n) => {
                return Err(old(format!(
                    "its kernel '{name}' takes {n} arguments, the runtime passes {args}"
                )))
            }
            Err(e) => return Err(BinaryError::Other(format!("kernel '{name}': {e}"))),
        }
    }
    Ok(program)
}

/// `$XDG_CACHE_HOME/scoria/opencl/<sha256 of device identity, options and source>.bin`
/// (`XDG_CACHE_HOME` is the workspace's `.cache` under `scoria`), else `.cache/...` here.
fn cache_path(dev: &Selected) -> Option<PathBuf> {
    cache_file(dev, &[options(dev).as_bytes(), SOURCE.as_bytes()], "bin")
}

/// `$XDG_CACHE_HOME/scoria/opencl/<sha256 of device identity and parts>.<ext>`.
fn cache_file(dev: &Selected, parts: &[&[u8]], ext: &str) -> Option<PathBuf> {
    let root = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".cache"));
    let mut h = Sha256::new();
    h.update(dev.identity.as_bytes());
    for p in parts {
        h.update([0]);
        h.update(p);
    }
    let key = hex::encode(h.finalize());
    Some(
        root.join("scoria")
            .join("opencl")
            .join(format!("{key}.{ext}")),
    )
}
