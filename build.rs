//! Generates the gRPC front end's messages and services from the vendored protos in
//! `proto/triton/` (Triton's `grpc_service.proto`, `model_config.proto`, `health.proto`).
//!
//! protoc is the one `protoc-bin-vendored` carries (no system package, no network), or the
//! one `PROTOC` names.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/triton/grpc_service.proto",
    "proto/triton/model_config.proto",
    "proto/triton/health.proto",
];

fn main() {
    pack_relative_relocations();
    order_symbols();
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-env-changed=PROTOC");
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => match protoc_bin_vendored::protoc_bin_path() {
            Ok(path) => path,
            Err(e) => fail(&format!(
                "no protoc for this platform in protoc-bin-vendored ({e}); install one \
                 (Debian: apt-get install protobuf-compiler) and set PROTOC=/usr/bin/protoc"
            )),
        },
    };
    if !protoc.is_file() {
        fail(&format!(
            "protoc not found at {} (set PROTOC to a protoc binary, e.g. /usr/bin/protoc from \
             Debian's protobuf-compiler)",
            protoc.display()
        ));
    }
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", &protoc) };
    let result = tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        // Triton's comments are Sphinx markup (`//@@ .. cpp:var::`): as rustdoc they would be
        // broken links and indented blocks run as doctests.
        .disable_comments(["."])
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .compile_protos(PROTOS, &["proto/triton"]);
    if let Err(e) = result {
        fail(&format!(
            "cannot generate the gRPC code from proto/triton/ with {}: {e}",
            protoc.display()
        ));
    }
}

/// Links the `scoria` binary with packed relative relocations (`DT_RELR`, glibc ≥ 2.36,
/// binutils ≥ 2.38, rust-lld): the position-independent binary's ~72,000 relative
/// relocations take ~20 KB instead of 1.7 MB, which the loader reads in full at every start
/// and which stayed in the resident set.
fn pack_relative_relocations() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Lays the release binary's code out in the order `link/symbol-order.txt` gives: the
/// functions that starting, loading the sample models and serving them execute (as recorded
/// by `scripts/symbol-order`), hottest first, then everything else. The kernel maps code in
/// 64 KiB blocks around each page touched, so touched functions scattered over the 31 MB of
/// code kept most of it resident; packed together they fill a few MiB.
///
/// Only for release builds on x86_64 Linux with Rust ≥ 1.90, whose default linker is
/// rust-lld (GNU ld has no symbol ordering), and not where a linker is configured
/// (`RUSTC_LINKER`, or `linker`/`fuse-ld` in the rustflags). Names the file lacks, or names it
/// has that a build lacks, only leave those functions where the linker would put them anyway;
/// where `cc` is gcc, `link/expand-order` matches fat LTO's numbered copies of a function
/// whatever their numbers, so that code changes since the file was made leave it valid.
fn order_symbols() {
    const ORDER: &str = "link/symbol-order.txt";
    const EXPAND: &str = "link/expand-order";
    println!("cargo:rerun-if-changed={ORDER}");
    println!("cargo:rerun-if-changed={EXPAND}");
    let target = std::env::var("TARGET").unwrap_or_default();
    let profile = std::env::var("PROFILE").unwrap_or_default();
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let own_linker = std::env::var_os("RUSTC_LINKER").is_some()
        || flags.contains("linker")
        || flags.contains("fuse-ld");
    if target != "x86_64-unknown-linux-gnu"
        || profile != "release"
        || own_linker
        || !rustc_links_with_lld()
    {
        return;
    }
    let Ok(dir) = std::env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let order = dir.join(ORDER);
    if order.is_file() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        // gcc runs the linker through link/expand-order, which completes the order with the
        // numbered copies fat LTO gives this build's functions (their numbers change with
        // any code change; the file's would go stale).
        let wrapper = dir.join(EXPAND);
        let path = wrapper.to_string_lossy();
        if cc_is_gcc() && wrapper.is_file() && !path.contains(',') {
            println!("cargo:rustc-link-arg-bins=-wrapper");
            println!("cargo:rustc-link-arg-bins={path}");
        }
    }
}

/// Whether `cc`, the linker driver rustc runs for this target, is gcc: only gcc has
/// `-wrapper`.
fn cc_is_gcc() -> bool {
    let Ok(output) = std::process::Command::new("cc").arg("-v").output() else {
        return false;
    };
    String::from_utf8_lossy(&output.stderr).contains("gcc version")
}

/// Whether the compiler is Rust 1.90 or later, which links x86_64 Linux binaries with its
/// bundled rust-lld by default.
fn rustc_links_with_lld() -> bool {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(output) = std::process::Command::new(rustc).arg("-vV").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let Some(release) = text.lines().find_map(|l| l.strip_prefix("release: ")) else {
        return false;
    };
    let mut parts = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}

/// Stops the build with one line saying why.
fn fail(why: &str) -> ! {
    eprintln!("error: {why}");
    println!("cargo:warning={why}");
    std::process::exit(1);
}
