//! The ONNX backend node tests (model.onnx + input/output .pb files shipped in the `onnx`
//! wheel) for every op the OpenCL kernels claim, run with `fallback = false` so every node
//! must run on the device.
//!
//! Tolerance: `|got - want| <= 1e-4 + 1e-3 * |want|` (the ONNX backend suite's rtol of 1e-3).
//!
//! The same node tests run again with `precision = "fp16"` (the `cl_khr_fp16` check skipped
//! by the test-only `fp16_unchecked`: PoCL lacks the extension, the kernels use core half
//! loads and stores), within FP16's tolerance `|got - want| <= 5e-3 * (1 + max |want|)` per
//! output. FP16 storage applies to constant weights only, and the node tests feed weights as
//! graph inputs, so for the ops with weights (Conv, Gemm, MatMul) the FP16 run first turns
//! every input but the first into an initializer (its value from `input_<i>.pb`): then Conv
//! (half weights and half im2col columns, `gemm_tile_h`), Gemm and MatMul (half B,
//! `gemm_tile_hb`) take the half path, which the test checks for each such case. The other
//! ops have no half path and must give their FP32 results within the same tolerance.

use prost::Message;
use scoria::engine::opencl::{OpenclConfig, OpenclEngine};
use scoria::engine::{Engine, LoadOptions};
use scoria::tensor::{Tensor, TensorData};
use std::path::{Path, PathBuf};
use tract_onnx::prelude::{DatumType, Tensor as TractTensor};

const RTOL: f32 = 1e-3;
const ATOL: f32 = 1e-4;
/// FP16's tolerance: `|got - want| <= FP16_TOL * (1 + max |want|)`.
const FP16_TOL: f32 = 5e-3;

/// Node-test folder prefixes of the ops whose weights FP16 stores as half (once constant).
const WEIGHTED: &[&str] = &["conv_", "gemm_", "matmul_"];

/// Node-test folders whose op the kernels claim but whose case they do not cover, and why.
/// Everything else whose name starts with a claimed op must pass on the device.
const EXCLUDED: &[(&str, &str)] = &[
    (
        "_uint8",
        "non-FP32 element type: CPU (the kernels are FP32)",
    ),
    ("_int8", "non-FP32 element type: CPU"),
    (
        "_expanded",
        "the op expanded into other ops (ReduceMax, Exp, ...), not the op itself",
    ),
    ("_1d_", "1-D window: the pooling kernels are 2-D"),
    ("_3d_", "3-D window: the pooling kernels are 2-D"),
    ("_training_mode", "BatchNormalization in training mode"),
    ("maxpool_with_argmax", "MaxPool's Indices output"),
    ("identity_opt", "optional type"),
    ("identity_sequence", "sequence type"),
];

/// Claimed op name → node-test folder prefix.
const OPS: &[&str] = &[
    "conv_",
    "gemm_",
    "matmul_",
    "add",
    "sub",
    "mul",
    "div",
    "relu",
    "sigmoid",
    "tanh",
    "clip",
    "maxpool_",
    "averagepool_",
    "globalaveragepool",
    "batchnorm_",
    "softmax_",
    "flatten_",
    "reshape_",
    "concat_",
    "identity",
];

pub fn node_data() -> PathBuf {
    let lib = super::root().join(".venv/lib");
    let dirs = std::fs::read_dir(&lib).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (scripts/setup-python creates .venv)",
            lib.display()
        )
    });
    for d in dirs.flatten() {
        let p = d.path().join("site-packages/onnx/backend/test/data/node");
        if p.is_dir() {
            return p;
        }
    }
    panic!(
        "no onnx/backend/test/data/node under {} (the onnx wheel ships it)",
        lib.display()
    );
}

fn claimed(name: &str) -> bool {
    let rest = name.strip_prefix("test_").unwrap_or(name);
    OPS.iter().any(|op| {
        rest.starts_with(op)
            && (op.ends_with('_') || rest.len() == op.len() || rest[op.len()..].starts_with('_'))
    })
}

fn load_pb(path: &Path) -> Tensor {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let proto = tract_onnx::tensor::proto_from_reader(file).expect("tensor proto");
    let t =
        tract_onnx::tensor::load_tensor(&tract_onnx::data_resolver::MmapDataResolver, &proto, None)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    to_scoria(&t)
}

fn to_scoria(t: &TractTensor) -> Tensor {
    let shape = t.shape().to_vec();
    let data = match t.datum_type() {
        DatumType::F32 => TensorData::F32(
            t.to_plain_array_view::<f32>()
                .unwrap()
                .iter()
                .copied()
                .collect(),
        ),
        DatumType::I64 => TensorData::I64(
            t.to_plain_array_view::<i64>()
                .unwrap()
                .iter()
                .copied()
                .collect(),
        ),
        other => panic!("node test tensor of type {other:?}"),
    };
    Tensor::new(shape, data).unwrap()
}

fn floats(t: &Tensor) -> Vec<f32> {
    match t.data() {
        TensorData::F32(v) => v.clone(),
        other => panic!("expected FP32, got {other:?}"),
    }
}

/// The precision a node test runs in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Fp32,
    /// `precision = "fp16"`; a Conv's, Gemm's or MatMul's inputs after the first are made
    /// constants so their weights are stored as half.
    Fp16,
}

/// `model` with the graph inputs after the first turned into initializers holding `values`.
fn with_constant_weights(model: &Path, values: &[PathBuf]) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(model).map_err(|e| format!("{}: {e}", model.display()))?;
    let mut proto = tract_onnx::pb::ModelProto::decode(bytes.as_slice())
        .map_err(|e| format!("{}: {e}", model.display()))?;
    let graph = proto.graph.as_mut().ok_or("model without graph")?;
    let inputs: Vec<String> = graph.input.iter().map(|i| i.name.clone()).collect();
    for (name, path) in inputs.iter().skip(1).zip(values) {
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut t = tract_onnx::tensor::proto_from_reader(file)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        t.name = name.clone();
        graph.initializer.push(t);
    }
    graph.input.truncate(1);
    Ok(proto.encode_to_vec())
}

/// Runs one node test in `precision`; the error says what differs. Ok: the ops that read
/// half weights.
pub fn run_case(dir: &Path, precision: Precision) -> Result<Vec<&'static str>, String> {
    let fp16 = precision == Precision::Fp16;
    let options = LoadOptions {
        opencl: OpenclConfig {
            fallback: false,
            fp16,
            fp16_unchecked: fp16,
            ..OpenclConfig::default()
        },
        ..LoadOptions::default()
    };
    let data = dir.join("test_data_set_0");
    let count = |prefix: &str| {
        (0..)
            .take_while(|i| data.join(format!("{prefix}_{i}.pb")).is_file())
            .count()
    };
    let input_files: Vec<PathBuf> = (0..count("input"))
        .map(|i| data.join(format!("input_{i}.pb")))
        .collect();
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    let weighted = name.as_deref().is_some_and(|n| {
        let rest = n.strip_prefix("test_").unwrap_or(n);
        WEIGHTED.iter().any(|p| rest.starts_with(p))
    });
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (model, fed) = if fp16 && weighted && input_files.len() > 1 {
        let path = tmp.path().join("model.onnx");
        let bytes = with_constant_weights(&dir.join("model.onnx"), &input_files[1..])?;
        std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
        (path, &input_files[..1])
    } else {
        (dir.join("model.onnx"), &input_files[..])
    };
    let engine = OpenclEngine::load(&model, &options).map_err(|e| e.to_string())?;
    let inputs: Vec<Tensor> = fed.iter().map(|p| load_pb(p)).collect();
    let want: Vec<Tensor> = (0..count("output"))
        .map(|i| load_pb(&data.join(format!("output_{i}.pb"))))
        .collect();
    let got = engine.run(inputs).map_err(|e| e.to_string())?;
    if got.len() != want.len() {
        return Err(format!("{} outputs, expected {}", got.len(), want.len()));
    }
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        if g.shape() != w.shape() {
            return Err(format!(
                "output {i}: shape {:?}, expected {:?}",
                g.shape(),
                w.shape()
            ));
        }
        let (g, w) = (floats(g), floats(w));
        let scale = w
            .iter()
            .filter(|v| v.is_finite())
            .fold(0f32, |m, v| m.max(v.abs()));
        for (k, (a, b)) in g.iter().zip(&w).enumerate() {
            let ok = match precision {
                Precision::Fp32 => (a - b).abs() <= ATOL + RTOL * b.abs(),
                Precision::Fp16 => (a - b).abs() <= FP16_TOL * (1.0 + scale),
            };
            if !(ok || a == b || (a.is_nan() && b.is_nan())) {
                return Err(format!("output {i}[{k}]: {a}, expected {b}"));
            }
        }
    }
    let half = engine.half_ops();
    if fp16 && weighted && half.is_empty() {
        return Err("no op read half weights".into());
    }
    Ok(half)
}

/// The node tests of the claimed ops, minus the excluded cases.
fn selected(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| claimed(n) && !EXCLUDED.iter().any(|(pat, _)| n.contains(pat)))
        .collect();
    names.sort();
    // Guard against a selection that silently shrinks.
    assert!(
        names.len() >= 100,
        "only {} node tests selected",
        names.len()
    );
    names
}

#[test]
fn node_tests_of_every_claimed_op_pass_on_the_device() {
    let root = node_data();
    let names = selected(&root);
    let failures: Vec<String> = names
        .iter()
        .filter_map(|n| {
            run_case(&root.join(n), Precision::Fp32)
                .err()
                .map(|e| format!("{n}: {e}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} node tests failed:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n")
    );
    eprintln!("{} node tests passed on the device", names.len());
}

/// The same node tests with `precision = "fp16"` (see the module's doc): every case within
/// FP16's tolerance, and every Conv, Gemm and MatMul case on half weights.
#[test]
fn node_tests_of_every_claimed_op_pass_with_fp16_storage() {
    let root = node_data();
    let names = selected(&root);
    let mut failures = Vec::new();
    let mut half_cases = Vec::new();
    for n in &names {
        match run_case(&root.join(n), Precision::Fp16) {
            Ok(ops) if !ops.is_empty() => half_cases.push(format!("{n} {ops:?}")),
            Ok(_) => {}
            Err(e) => failures.push(format!("{n}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} node tests failed with fp16:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n")
    );
    let weighted = names
        .iter()
        .filter(|n| WEIGHTED.iter().any(|p| n["test_".len()..].starts_with(p)))
        .count();
    assert_eq!(
        half_cases.len(),
        weighted,
        "cases on half weights: {half_cases:?}"
    );
    assert!(weighted >= 18, "only {weighted} Conv/Gemm/MatMul cases");
    eprintln!(
        "{} node tests passed with fp16, {} of them on half weights:\n{}",
        names.len(),
        half_cases.len(),
        half_cases.join("\n")
    );
}
