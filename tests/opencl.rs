//! The OpenCL engine on a real OpenCL device (PoCL in CI: `scripts/install-system-deps`
//! installs it). Nothing here is skipped: without an OpenCL platform these tests fail.

mod common;
#[path = "opencl/nodes.rs"]
mod nodes;

use std::path::PathBuf;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

use common::{append_config, assert_error, prepend_config, repo_with, run_cli, Server};
use scoria::engine::opencl::{build_program_binary, CpuBackend, OpenclConfig};
use scoria::engine::{self, Backend, LoadOptions};
use scoria::tensor::{Tensor, TensorData};
use serde_json::json;

/// Sample models through REST vs tract in-process: `|got - want| <= 1e-4 + 1e-3 * |want|`
/// (the device sums in another order than tract; ResNet's logits are O(1..100)).
const RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-4;

/// Appends a table to `<repo>/<model>/config.toml` (after whatever table the file ends in).
fn model_path(name: &str) -> PathBuf {
    root().join("models").join(name).join("1/model.onnx")
}

fn opencl(cfg: OpenclConfig) -> LoadOptions {
    LoadOptions {
        opencl: cfg,
        ..LoadOptions::default()
    }
}

/// Deterministic inputs in [0, 1) for `shape`.
fn pattern(shape: &[usize], seed: u32) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % 10_000) as f32 / 10_000.0
        })
        .collect()
}

fn tract_outputs(model: &str, shape: &[usize], data: &[f32]) -> Vec<Tensor> {
    let e = engine::load(Backend::Tract, &model_path(model), &LoadOptions::default()).unwrap();
    let t = Tensor::new(shape.to_vec(), TensorData::F32(data.to_vec())).unwrap();
    e.run(vec![t]).unwrap()
}

fn close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= ATOL + RTOL * w.abs(),
            "{what}[{i}]: {g} vs tract {w}"
        );
    }
}

fn as_f64(t: &Tensor) -> Vec<f64> {
    match t.data() {
        TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
        other => panic!("unexpected output {other:?}"),
    }
}

/// Runs `model` over REST on one FP32 input; returns its first output as f64.
fn infer_f64(server: &Server, model: &str, shape: &[usize], data: &[f32]) -> Vec<f64> {
    let body =
        json!({"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": data}]});
    let resp = server.infer_ok(model, &body);
    resp["outputs"][0]["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{model}: no output data: {resp}"))
        .iter()
        .map(|v| v.as_f64().unwrap_or(f64::NAN))
        .collect()
}

/// (model, input shape at batch 2)
const SAMPLES: &[(&str, &[usize])] = &[
    ("digits", &[2, 64]),
    ("lenet", &[2, 1, 28, 28]),
    ("resnet", &[2, 3, 224, 224]),
];

#[test]
fn sample_models_over_rest_match_tract() {
    let names: Vec<&str> = SAMPLES.iter().map(|(m, _)| *m).collect();
    let server = Server::start(repo_with(&names), &["--backend", "opencl"]);
    for (i, (model, shape)) in SAMPLES.iter().enumerate() {
        let data = pattern(shape, i as u32 + 1);
        let body = json!({"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": data}]});
        let resp = server.infer_ok(model, &body);
        let want = tract_outputs(model, shape, &data);
        let outputs = resp["outputs"].as_array().expect("outputs");
        assert_eq!(outputs.len(), want.len(), "{model}: {resp}");
        for (o, w) in outputs.iter().zip(&want) {
            let got: Vec<f64> = o["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            close(&got, &as_f64(w), &format!("{model}/{}", o["name"]));
        }
        // The placement is reported in the v2 metadata.
        let (status, meta) = server.get(&format!("/v2/models/{model}"));
        assert_eq!(status, 200);
        let p = &meta["parameters"];
        assert_eq!(p["backend"], "opencl", "{meta}");
        assert!(p["nodes_on_device"].as_u64().unwrap() > 0, "{meta}");
    }
    // digits' ArgMax has no kernel: it runs on the CPU, after the device segment.
    let (_, meta) = server.get("/v2/models/digits");
    let p = &meta["parameters"];
    assert_eq!(p["nodes_on_cpu"], 1, "{meta}");
    assert_eq!(p["nodes_on_device"], 4, "{meta}");
    assert_eq!(p["segments_on_cpu"], 1, "{meta}");
    assert!(
        p["placement"].as_str().unwrap().contains("cpu: 1 node"),
        "{meta}"
    );
    // lenet and resnet run entirely on the device.
    for model in ["lenet", "resnet"] {
        let (_, meta) = server.get(&format!("/v2/models/{model}"));
        assert_eq!(meta["parameters"]["nodes_on_cpu"], 0, "{meta}");
    }
}

/// A model with an unsupported op in the middle: device → CPU → device, matching tract.
#[test]
fn partitioned_execution_matches_tract() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    let status = std::process::Command::new(root().join(".venv/bin/python"))
        .arg(root().join("tests/opencl/make_partitioned.py"))
        .arg(&path)
        .status()
        .expect("run .venv/bin/python");
    assert!(status.success(), "make_partitioned.py failed");
    let shape = [3, 8];
    let data: Vec<f32> = pattern(&shape, 7).iter().map(|x| x * 4.0 - 2.0).collect();
    let t = Tensor::new(shape.to_vec(), TensorData::F32(data.clone())).unwrap();
    let tract = engine::load(Backend::Tract, &path, &LoadOptions::default()).unwrap();
    let want = tract.run(vec![t.clone()]).unwrap();
    // The CPU segment on tract (the default) and on ONNX Runtime.
    for cpu_backend in [CpuBackend::Tract, CpuBackend::Ort] {
        let cfg = OpenclConfig {
            cpu_backend,
            ..OpenclConfig::default()
        };
        let e = engine::load(Backend::Opencl, &path, &opencl(cfg))
            .unwrap_or_else(|e| panic!("cpu_backend {cpu_backend:?}: {e}"));
        let p = e.placement().expect("placement");
        assert!(p.nodes_on_cpu >= 1 && p.nodes_on_device >= 2, "{p:?}");
        assert_eq!(p.cpu_backend, cpu_backend.name(), "{p:?}");
        let sides: Vec<bool> = p.segments.iter().map(|s| s.on_device).collect();
        assert_eq!(sides, [true, false, true], "{}", p.summary());
        let got = e.run(vec![t.clone()]).unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.shape(), w.shape());
            close(
                &as_f64(g),
                &as_f64(w),
                &format!("partitioned, {cpu_backend:?}"),
            );
        }
    }
    // Without fallback the same model does not load, naming the node.
    let err = engine::load(
        Backend::Opencl,
        &path,
        &opencl(OpenclConfig {
            fallback: false,
            ..OpenclConfig::default()
        }),
    )
    .err()
    .expect("fallback = false must refuse the model")
    .to_string();
    assert!(
        err.contains("'mid_abs' (Abs)") && err.contains("fallback"),
        "{err}"
    );
}

/// The ONNX Runtime library the tests use: `ORT_DYLIB_PATH`, else `<repo>/.cache/onnxruntime/`
/// (`scripts/fetch-onnxruntime` installs it).
fn ort_library() -> String {
    scoria::engine::ort::LibrarySearch {
        explicit: std::env::var_os("ORT_DYLIB_PATH")
            .filter(|v| !v.is_empty())
            .map(|v| ("ORT_DYLIB_PATH".to_string(), PathBuf::from(v))),
        roots: vec![root()],
    }
    .find()
    .unwrap_or_else(|e| panic!("this test runs ONNX Runtime: {e}"))
    .to_string_lossy()
    .into_owned()
}

/// `[opencl] cpu_backend = "ort"`: digits' ArgMax runs on ONNX Runtime after the device
/// segment, over REST, matching tract; the metadata and `model show` say so. Without the
/// library the model fails to load in one line and the other models keep serving.
#[test]
fn cpu_backend_ort_runs_the_cpu_segments() {
    let repo = repo_with(&["digits", "lenet"]);
    append_config(repo.path(), "digits", "[opencl]\ncpu_backend = \"ort\"\n");
    let lib = ort_library();
    let server = Server::start_at_with_env(
        repo.path(),
        &["--backend", "opencl"],
        &[("ORT_DYLIB_PATH", &lib)],
    );
    let shape = [3usize, 64];
    let data = pattern(&shape, 11);
    let body =
        json!({"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": data}]});
    let resp = server.infer_ok("digits", &body);
    let want = tract_outputs("digits", &shape, &data);
    let outputs = resp["outputs"].as_array().expect("outputs");
    assert_eq!(outputs.len(), want.len(), "{resp}");
    for (o, w) in outputs.iter().zip(&want) {
        let got: Vec<f64> = o["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        close(
            &got,
            &as_f64(w),
            &format!("digits (cpu on ort)/{}", o["name"]),
        );
    }
    let (_, meta) = server.get("/v2/models/digits");
    let p = &meta["parameters"];
    assert_eq!(p["cpu_backend"], "ort", "{meta}");
    assert_eq!(p["nodes_on_cpu"], 1, "{meta}");
    let (_, meta) = server.get("/v2/models/lenet");
    assert_eq!(meta["parameters"]["cpu_backend"], "tract", "{meta}");
    drop(server);

    let models = repo.path().to_str().unwrap();
    let show_digits = |library: &str| {
        let args = [
            "model",
            "show",
            "digits",
            "--backend",
            "opencl",
            "--models",
            models,
        ];
        run_cli(repo.path(), &args, &[("ORT_DYLIB_PATH", library)])
    };
    let out = show_digits(&lib);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("cpu backend:  ort"), "{stdout}");

    // Without the library: digits does not load, in one line; lenet (no CPU segment) serves.
    const MISSING: &str = "/nonexistent/scoria-test/libonnxruntime.so";
    let out = show_digits(MISSING);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains(MISSING) && lines[0].contains("run scripts/fetch-onnxruntime"),
        "{stderr}"
    );
    let server = Server::start_at_with_env(
        repo.path(),
        &["--backend", "opencl", "--strict-readiness=false"],
        &[("ORT_DYLIB_PATH", MISSING)],
    );
    let msg = assert_error(
        server.get("/v2/models/digits/ready"),
        503,
        "run scripts/fetch-onnxruntime",
    );
    assert!(msg.contains(MISSING) && !msg.contains('\n'), "{msg}");
    let shape = [1usize, 1, 28, 28];
    let data = pattern(&shape, 5);
    let got = infer_f64(&server, "lenet", &shape, &data);
    close(
        &got,
        &as_f64(&tract_outputs("lenet", &shape, &data)[0]),
        "lenet beside a model without ONNX Runtime",
    );
}

#[test]
fn fallback_false_names_the_first_unsupported_node() {
    let cfg = OpenclConfig {
        fallback: false,
        ..OpenclConfig::default()
    };
    let err = engine::load(Backend::Opencl, &model_path("digits"), &opencl(cfg))
        .err()
        .expect("digits has ArgMax, which has no kernel")
        .to_string();
    assert!(
        err.contains("ArgMax") && err.contains("cannot run on the OpenCL device"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn device_selection() {
    let load =
        |cfg: OpenclConfig| engine::load(Backend::Opencl, &model_path("lenet"), &opencl(cfg));
    // PoCL's device is a CPU device: explicit `cpu`, `any` and the default all find it.
    for device in [None, Some("cpu"), Some("any")] {
        let cfg = OpenclConfig {
            device: device
                .map(|d| scoria::engine::opencl::device::DeviceKind::from_name(d).unwrap()),
            platform: Some("portable".into()),
            ..OpenclConfig::default()
        };
        let e = load(cfg).unwrap_or_else(|e| panic!("device {device:?}: {e}"));
        let p = e.placement().unwrap();
        assert!(
            p.device.contains("Portable Computing Language"),
            "{}",
            p.device
        );
    }
    let err = load(OpenclConfig {
        platform: Some("no-such-vendor".into()),
        ..OpenclConfig::default()
    })
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("no platform matches") && err.contains("Portable Computing Language"),
        "{err}"
    );
    let err = load(OpenclConfig {
        device: Some(scoria::engine::opencl::device::DeviceKind::Accelerator),
        platform: Some("portable".into()),
        ..OpenclConfig::default()
    })
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("no accelerator device"), "{err}");
}

/// `scoria model show lenet` in a repository whose lenet config ends with `opencl`.
fn show_lenet(opencl: &str) -> std::process::Output {
    let repo = repo_with(&["lenet"]);
    prepend_config(repo.path(), "lenet", "backend = \"opencl\"");
    append_config(repo.path(), "lenet", opencl);
    let models = repo.path().to_str().unwrap();
    run_cli(
        repo.path(),
        &["model", "show", "lenet", "--models", models],
        &[],
    )
}

#[test]
fn config_selects_device_and_rejects_bad_values() {
    let out = show_lenet("[opencl]\ndevice = \"cpu\"\nplatform = \"Portable\"\nfallback = false\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("backend:      opencl"), "{stdout}");
    assert!(
        stdout.contains("placement:    12 nodes on device, 0 on CPU"),
        "{stdout}"
    );

    for (config, reason) in [
        ("device = \"fpga\"", "unknown device 'fpga'"),
        (
            "cpu_backend = \"cuda\"",
            "unknown CPU backend 'cuda' (one of: tract, ort)",
        ),
    ] {
        let out = show_lenet(&format!("[opencl]\n{config}\n"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let key = format!("opencl.{}", config.split(' ').next().unwrap_or_default());
        assert!(!out.status.success(), "{config} was accepted");
        assert!(
            stderr.contains("config.toml") && stderr.contains(&key) && stderr.contains(reason),
            "{config}: {stderr}"
        );
    }
}

/// The FPGA flow on PoCL: a program binary built from the sources, saved, and loaded through
/// `[opencl] binary` (clCreateProgramWithBinary); a binary for another device is refused.
#[test]
fn prebuilt_binary_loads_and_a_foreign_one_is_refused() {
    let bin = build_program_binary(&OpenclConfig::default()).expect("build binary");
    let repo = repo_with(&["lenet"]);
    std::fs::write(repo.path().join("lenet/kernels.bin"), &bin).unwrap();
    prepend_config(repo.path(), "lenet", "backend = \"opencl\"");
    append_config(repo.path(), "lenet", "[opencl]\nbinary = \"kernels.bin\"\n");
    let server = Server::start(repo, &[]);
    let shape = [1usize, 1, 28, 28];
    let data = pattern(&shape, 3);
    let got = infer_f64(&server, "lenet", &shape, &data);
    close(
        &got,
        &as_f64(&tract_outputs("lenet", &shape, &data)[0]),
        "lenet via binary",
    );
    drop(server);

    // Not a program for this device (an AMD/Xilinx .xclbin, an Intel .aocx ELF, text): a
    // load error that names the file and asks whether it was built for this device.
    // (A *truncated* PoCL binary is not among them: PoCL reads past its end.)
    let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
    elf.resize(4096, 0);
    for junk in [
        b"xclbin2\0 not for this device".to_vec(),
        elf,
        b"__kernel void f() {}".to_vec(),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kernels.aocx");
        std::fs::write(&path, &junk).unwrap();
        let err = engine::load(
            Backend::Opencl,
            &model_path("lenet"),
            &opencl(OpenclConfig {
                binary: Some(path),
                ..OpenclConfig::default()
            }),
        )
        .err()
        .expect("a foreign binary must not load")
        .to_string();
        assert!(
            err.contains("kernels.aocx") && err.contains("was it built for this device"),
            "{err}"
        );
    }
}

/// A program binary built for the previous kernel ABI (the direct-convolution kernels, no
/// `abi` / `gemm_tile` / `im2col`) is refused at load in one line naming the missing kernel.
#[test]
fn a_binary_of_the_old_kernel_abi_names_the_missing_kernel() {
    use opencl3::context::Context;
    use opencl3::device::{get_all_devices, Device, CL_DEVICE_TYPE_ALL};
    use opencl3::program::Program;
    let old: String = ["conv", "gemm", "elementwise", "pool"]
        .iter()
        .map(|f| std::fs::read_to_string(root().join(format!("targets/opencl/{f}.cl"))).unwrap())
        .collect();
    let id = *get_all_devices(CL_DEVICE_TYPE_ALL)
        .expect("an OpenCL device")
        .first()
        .expect("an OpenCL device");
    let context = Context::from_device(&Device::new(id)).unwrap();
    let program = Program::create_and_build_from_source(&context, &old, "-cl-std=CL1.2")
        .expect("the old kernels build");
    let bin = program.get_binaries().unwrap().remove(0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kernels.bin");
    std::fs::write(&path, &bin).unwrap();
    let err = engine::load(
        Backend::Opencl,
        &model_path("lenet"),
        &opencl(OpenclConfig {
            binary: Some(path),
            ..OpenclConfig::default()
        }),
    )
    .err()
    .expect("an old-ABI binary must not load")
    .to_string();
    assert!(
        err.contains("kernels.bin")
            && err.contains("no kernel 'abi'")
            && err.contains("gemm_tile")
            && err.contains("older kernel ABI")
            && !err.contains('\n'),
        "{err}"
    );
}

/// With no OpenCL platform installed, asking for the backend fails in one line.
#[test]
fn no_platform_is_one_line() {
    let empty = tempfile::tempdir().unwrap();
    let repo = repo_with(&["digits"]);
    let out = run_cli(
        repo.path(),
        &[
            "model",
            "show",
            "digits",
            "--backend",
            "opencl",
            "--models",
            repo.path().to_str().unwrap(),
        ],
        &[("OCL_ICD_VENDORS", empty.path().to_str().unwrap())],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("no OpenCL platform is installed"),
        "{stderr}"
    );
    // Other backends are unaffected.
    let out = run_cli(
        repo.path(),
        &[
            "model",
            "show",
            "digits",
            "--models",
            repo.path().to_str().unwrap(),
        ],
        &[("OCL_ICD_VENDORS", empty.path().to_str().unwrap())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A request whose tensors outgrow what the device can hold fails with the reason; the model
/// stays loaded and serves the next request.
#[test]
fn a_request_too_big_for_the_device_fails_and_the_model_stays() {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path().join("outer/1");
    std::fs::create_dir_all(&dir).unwrap();
    let status = std::process::Command::new(root().join(".venv/bin/python"))
        .arg(root().join("tests/opencl/make_outer.py"))
        .arg(dir.join("model.onnx"))
        .status()
        .expect("run .venv/bin/python");
    assert!(status.success(), "make_outer.py failed");
    let server = Server::start(repo, &["--backend", "opencl"]);
    let body = |n: usize| {
        json!({"inputs": [
            {"name": "a", "shape": [n, 1], "datatype": "FP32", "data": vec![1.0f32; n]},
            {"name": "b", "shape": [1, n], "datatype": "FP32", "data": vec![2.0f32; n]},
        ]})
        .to_string()
    };
    // 60000 x 60000 floats: 14.4 GB, beyond one OpenCL buffer.
    let (status, resp) = server.post("/v2/models/outer/infer", &body(60_000));
    assert_eq!(status, 500, "{resp}");
    let msg = resp["error"].as_str().unwrap_or_default();
    assert!(msg.contains("y: size 3600000000 is beyond"), "{resp}");
    let resp = server.infer_ok("outer", &serde_json::from_str(&body(3)).unwrap());
    assert_eq!(
        resp["outputs"][0]["data"],
        json!([2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0])
    );
}

/// Dynamic batching and two instances (each with its own command queue) under concurrent
/// requests: every reply matches tract's for its own input.
#[test]
fn batching_and_instances_under_concurrency() {
    let repo = repo_with(&["lenet"]);
    prepend_config(
        repo.path(),
        "lenet",
        "backend = \"opencl\"\nmax_batch_size = 8\ninstances = 2",
    );
    append_config(
        repo.path(),
        "lenet",
        "[dynamic_batching]\nmax_queue_delay_us = 2000\n",
    );
    let server = std::sync::Arc::new(Server::start(repo, &[]));
    let shape = [1usize, 1, 28, 28];
    let threads: Vec<_> = (0..8u32)
        .map(|i| {
            let server = std::sync::Arc::clone(&server);
            std::thread::spawn(move || {
                let mut replies = Vec::new();
                for k in 0..3u32 {
                    let data = pattern(&shape, 100 + i * 10 + k);
                    let got = infer_f64(&server, "lenet", &shape, &data);
                    replies.push((data, got));
                }
                replies
            })
        })
        .collect();
    let tract = engine::load(
        Backend::Tract,
        &model_path("lenet"),
        &LoadOptions::default(),
    )
    .unwrap();
    for t in threads {
        for (data, got) in t.join().expect("client thread") {
            let input = Tensor::new(shape.to_vec(), TensorData::F32(data)).unwrap();
            let want = tract.run(vec![input]).unwrap();
            close(&got, &as_f64(&want[0]), "lenet under concurrency");
        }
    }
}

/// Programs built from source are cached on disk under `$XDG_CACHE_HOME/scoria/opencl/`,
/// one file per device and source hash; a corrupt entry is rebuilt, not trusted.
#[test]
fn program_binaries_are_cached_per_device_and_source() {
    let cache = tempfile::tempdir().unwrap();
    let repo = repo_with(&["lenet"]);
    let env = [("XDG_CACHE_HOME", cache.path().to_str().unwrap())];
    let args = [
        "model",
        "show",
        "lenet",
        "--backend",
        "opencl",
        "--models",
        repo.path().to_str().unwrap(),
    ];
    let entries = || -> Vec<PathBuf> {
        std::fs::read_dir(cache.path().join("scoria/opencl"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let out = run_cli(repo.path(), &args, &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The program binary and, next to it, the work-group autotune's choice (e.g. "8x4").
    let mut files = entries();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.len() == 64 + 4 && name.ends_with(".bin"), "{name}");
    assert!(std::fs::metadata(&files[0]).unwrap().len() > 0);
    assert_eq!(files[1], files[0].with_extension("tune"));
    let tune = std::fs::read_to_string(&files[1]).unwrap();
    let (x, y) = tune.trim().split_once('x').expect("LXxLY");
    assert!(x.parse::<usize>().unwrap() >= 1 && y.parse::<usize>().unwrap() >= 1);

    std::fs::write(&files[0], b"not a program binary").unwrap();
    let out = run_cli(repo.path(), &args, &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rebuilt = std::fs::read(&files[0]).unwrap();
    assert_ne!(
        rebuilt, b"not a program binary",
        "the corrupt entry was not replaced"
    );
}

#[test]
fn nan_inputs_give_nan_outputs_as_on_the_cpu() {
    // Relu, Clip and fused activations must keep NaN (fmax would turn it into 0 and a
    // corrupt input into a confident answer).
    for (model, shape) in [("digits", vec![2, 64]), ("lenet", vec![1, 1, 28, 28])] {
        let mut data = pattern(&shape, 9);
        data[3] = f32::NAN;
        let device = engine::load(
            Backend::Opencl,
            &model_path(model),
            &opencl(OpenclConfig::default()),
        )
        .unwrap();
        let t = Tensor::new(shape.clone(), TensorData::F32(data.clone())).unwrap();
        let got = device.run(vec![t]).unwrap();
        let want = tract_outputs(model, &shape, &data);
        let (g, w) = (as_f64(&got[0]), as_f64(&want[0]));
        // digits (Gemm + Relu) carries NaN through; lenet's MaxPool absorbs one NaN pixel on
        // tract, and the device must agree either way.
        if model == "digits" {
            assert!(w.iter().any(|x| x.is_nan()), "{model}: tract keeps no NaN");
        }
        let nan_at = |v: &[f64]| -> Vec<usize> {
            v.iter()
                .enumerate()
                .filter(|(_, x)| x.is_nan())
                .map(|(i, _)| i)
                .collect()
        };
        assert_eq!(
            nan_at(&g),
            nan_at(&w),
            "{model}: NaN positions differ from tract"
        );
        let finite =
            |v: &[f64]| -> Vec<f64> { v.iter().copied().filter(|x| !x.is_nan()).collect() };
        close(&finite(&g), &finite(&w), model);
    }
}

/// Defects found from outside (ONNX node test `test_clip_min_greater_than_max`, and the
/// `batchnorm_*_training_mode` ones): Clip with min > max gives max everywhere on the device,
/// as ONNX and tract say; a BatchNormalization in training mode, which nothing in the OpenCL
/// engine can run, fails at load with the reason instead of failing every request.
#[test]
fn clip_min_above_max_and_training_batchnorm() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(root().join(".venv/bin/python"))
        .arg(root().join("tests/opencl/make_defects.py"))
        .arg(dir.path())
        .status()
        .expect("run .venv/bin/python");
    assert!(status.success(), "make_defects.py failed");

    let clip = dir.path().join("clip_min_gt_max.onnx");
    let data = vec![-3.0f32, 0.0, 0.7, 2.0, 0.5, 1.0, 0.75, -0.25];
    let x = Tensor::new(vec![2, 4], TensorData::F32(data)).unwrap();
    let device = engine::load(
        Backend::Opencl,
        &clip,
        &opencl(OpenclConfig {
            fallback: false,
            ..OpenclConfig::default()
        }),
    )
    .unwrap();
    let got = as_f64(&device.run(vec![x.clone()]).unwrap()[0]);
    assert_eq!(got, vec![0.5; 8]);
    let tract = engine::load(Backend::Tract, &clip, &LoadOptions::default()).unwrap();
    assert_eq!(got, as_f64(&tract.run(vec![x]).unwrap()[0]));

    // On tract's CPU segments: refused at load, naming the node.
    let bn = dir.path().join("batchnorm_training.onnx");
    let err = engine::load(Backend::Opencl, &bn, &opencl(OpenclConfig::default()))
        .err()
        .expect("a training-mode BatchNormalization loaded on tract's CPU segment")
        .to_string();
    assert!(
        err.contains("'bn'") && err.contains("BatchNormalization") && !err.contains('\n'),
        "{err}"
    );
    // ONNX Runtime runs it: loaded, it answers every request.
    let ort = engine::load(
        Backend::Opencl,
        &bn,
        &opencl(OpenclConfig {
            cpu_backend: CpuBackend::Ort,
            ..OpenclConfig::default()
        }),
    )
    .unwrap();
    let x = Tensor::new(vec![2, 3, 2, 2], TensorData::F32(pattern(&[2, 3, 2, 2], 5))).unwrap();
    let out = ort.run(vec![x]).unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].shape(), &[2, 3, 2, 2]);
}

/// Chains fused into the kernel that produces them (Conv+Relu, Conv+Add+Relu, Conv+Clip,
/// Conv+broadcast Add+Relu, Gemm+Sigmoid) give what the unfused kernels give
/// (`[opencl] fusion = false`) and what tract gives; a value that is also a model output is
/// not fused away (Gemm -> Tanh where the Gemm's output is an output). With
/// `precision = "fp16"` (half Conv, Gemm and MatMul weights) the same chains stay within
/// FP16's tolerance.
#[test]
fn fused_chains_equal_the_unfused_kernels() {
    use scoria::engine::opencl::OpenclEngine;
    use scoria::engine::Engine;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fused.onnx");
    let status = std::process::Command::new(root().join(".venv/bin/python"))
        .arg(root().join("tests/opencl/make_fused.py"))
        .arg(&path)
        .status()
        .expect("run .venv/bin/python");
    assert!(status.success(), "make_fused.py failed");
    let load = |fusion: bool| {
        OpenclEngine::load(
            &path,
            &opencl(OpenclConfig {
                fallback: false,
                fusion,
                ..OpenclConfig::default()
            }),
        )
        .unwrap_or_else(|e| panic!("fusion = {fusion}: {e}"))
    };
    let (fused, unfused) = (load(true), load(false));
    // FP16 storage on the same chains (the cl_khr_fp16 check skipped: PoCL lacks it).
    let half = OpenclEngine::load(
        &path,
        &opencl(OpenclConfig {
            fallback: false,
            fp16: true,
            fp16_unchecked: true,
            ..OpenclConfig::default()
        }),
    )
    .unwrap();
    // Every Conv's weights in half, and the Gemms' (fc1's transposed B, fc2's B) and the
    // MatMul's constant B.
    assert_eq!(
        half.half_ops(),
        ["Conv", "Conv", "Conv", "Conv", "Gemm", "Gemm", "MatMul"],
        "half ops"
    );
    assert_eq!(half.half_constants(), 7);
    // 17 nodes; fused away: r1, the Add a1 and r2, k3, a4 and r4, sig.
    assert_eq!(unfused.device_kernels(), 17);
    assert_eq!(fused.device_kernels(), 17 - 7);
    let tract = engine::load(Backend::Tract, &path, &LoadOptions::default()).unwrap();
    for batch in [1usize, 3] {
        let shape = [batch, 3, 11, 11];
        let data: Vec<f32> = pattern(&shape, 5).iter().map(|x| x * 2.0 - 1.0).collect();
        let t = Tensor::new(shape.to_vec(), TensorData::F32(data)).unwrap();
        let f = fused.run(vec![t.clone()]).unwrap();
        let u = unfused.run(vec![t.clone()]).unwrap();
        let h = half.run(vec![t.clone()]).unwrap();
        let w = tract.run(vec![t]).unwrap();
        assert_eq!(f.len(), 3);
        // FP16's tolerance: |a - b| <= 5e-3 * (1 + max |b|) per output.
        for (h, u) in h.iter().zip(&u) {
            let (hv, uv) = (as_f64(h), as_f64(u));
            let scale = uv.iter().fold(0f64, |m, x| m.max(x.abs()));
            for (a, b) in hv.iter().zip(&uv) {
                assert!(
                    (a - b).abs() <= 5e-3 * (1.0 + scale),
                    "fp16 {a} vs fp32 {b}"
                );
            }
        }
        for ((f, u), w) in f.iter().zip(&u).zip(&w) {
            assert_eq!(f.shape(), u.shape());
            // Same products summed in the same order: equal within rounding of the epilogue.
            let (fv, uv) = (as_f64(f), as_f64(u));
            for (a, b) in fv.iter().zip(&uv) {
                assert!(
                    (a - b).abs() <= 1e-6 + 1e-5 * b.abs(),
                    "fused {a} vs unfused {b}"
                );
            }
            close(&fv, &as_f64(w), "fused vs tract");
        }
    }
}

/// `placement = "auto"`: digits (4.7 K multiply-adds per sample) stays on the CPU, resnet
/// (483 M) goes to the device; the placement is reported as for `device`.
#[test]
fn placement_auto_keeps_small_models_on_the_cpu() {
    use scoria::engine::opencl::PlacementMode;
    let auto = || {
        opencl(OpenclConfig {
            placement: PlacementMode::Auto,
            ..OpenclConfig::default()
        })
    };
    let digits = engine::load(Backend::Opencl, &model_path("digits"), &auto()).unwrap();
    let p = digits.placement().expect("placement");
    assert_eq!(p.nodes_on_device, 0, "{}", p.summary());
    assert!(p.nodes_on_cpu >= 5, "{}", p.summary());
    assert!(p.summary().starts_with("cpu: "), "{}", p.summary());
    let shape = [2usize, 64];
    let data = pattern(&shape, 4);
    let t = Tensor::new(shape.to_vec(), TensorData::F32(data.clone())).unwrap();
    close(
        &as_f64(&digits.run(vec![t]).unwrap()[0]),
        &as_f64(&tract_outputs("digits", &shape, &data)[0]),
        "digits on auto",
    );
    let resnet = engine::load(Backend::Opencl, &model_path("resnet"), &auto()).unwrap();
    let p = resnet.placement().expect("placement");
    assert_eq!(p.nodes_on_cpu, 0, "{}", p.summary());
    assert!(p.nodes_on_device > 20, "{}", p.summary());
    // The default places every node with a kernel on the device, digits too.
    let p = engine::load(
        Backend::Opencl,
        &model_path("digits"),
        &opencl(OpenclConfig::default()),
    )
    .unwrap()
    .placement()
    .expect("placement");
    assert!(p.nodes_on_device >= 4, "{}", p.summary());
}

/// Intermediate buffers are reused across the nodes of a run (liveness): a ResNet run (24
/// kernel steps, most of them Conv with an im2col buffer each: 44 buffers without reuse)
/// takes about half as many device buffers as it has steps (13 on PoCL), and a second run
/// takes no new one. Exactly two of them are host-visible (`CL_MEM_ALLOC_HOST_PTR`, mapped
/// by the host): the input, written in place, and the output (the final Gemm's), read in
/// place.
#[test]
fn intermediate_buffers_are_reused_within_a_run() {
    use scoria::engine::opencl::OpenclEngine;
    use scoria::engine::Engine;
    let e = OpenclEngine::load(&model_path("resnet"), &opencl(OpenclConfig::default())).unwrap();
    let shape = [1usize, 3, 224, 224];
    let t = Tensor::new(shape.to_vec(), TensorData::F32(pattern(&shape, 2))).unwrap();
    e.run(vec![t.clone()]).unwrap();
    let after_one = e.pooled_buffers();
    assert!(
        after_one * 3 < e.device_kernels() * 2,
        "{after_one} buffers for {} kernel steps",
        e.device_kernels()
    );
    assert_eq!(e.pooled_host_buffers(), 2, "the input's and the output's");
    e.run(vec![t]).unwrap();
    assert_eq!(e.pooled_buffers(), after_one);
    assert_eq!(e.pooled_host_buffers(), 2);
}

/// `precision = "fp16"` on a device without cl_khr_fp16 (PoCL) is a one-line load error
/// naming the extension and the device.
#[test]
fn fp16_without_the_extension_is_a_load_error_naming_it() {
    let err = engine::load(
        Backend::Opencl,
        &model_path("lenet"),
        &opencl(OpenclConfig {
            fp16: true,
            ..OpenclConfig::default()
        }),
    )
    .err()
    .expect("fp16 must not load without cl_khr_fp16")
    .to_string();
    assert!(
        err.contains("cl_khr_fp16") && err.contains("precision") && !err.contains('\n'),
        "{err}"
    );
}
