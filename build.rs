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
/// binutils ≥ 2.38): the position-independent binary's ~72,000 relative relocations take
/// ~30 KiB instead of 1.7 MB, which the loader reads in full at every start and which stayed
/// in the resident set.
fn pack_relative_relocations() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Stops the build with one line saying why.
fn fail(why: &str) -> ! {
    eprintln!("error: {why}");
    println!("cargo:warning={why}");
    std::process::exit(1);
}
