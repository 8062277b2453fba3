//! The OpenCL engine on a real OpenCL device (PoCL in CI: `scripts/install-system-deps`
//! installs it). Nothing here is skipped: without an OpenCL platform these tests fail.

mod common;
#[path = "opencl/nodes.rs"]
mod nodes;

use std::path::PathBuf;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
