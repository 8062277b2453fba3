//! The ONNX backend node tests (model.onnx + input/output .pb files shipped in the `onnx`
//! wheel) for every op the OpenCL kernels claim, run with `fallback = false` so every node
//! must run on the device.
//!
//! Tolerance: `|got - want| <= 1e-4 + 1e-3 * |want|` (the ONNX backend suite's rtol of 1e-3).

use scoria::engine::opencl::OpenclConfig;
use scoria::engine::{self, Backend, LoadOptions};
use scoria::tensor::{Tensor, TensorData};
use std::path::{Path, PathBuf};
use tract_onnx::prelude::{DatumType, Tensor as TractTensor};

const RTOL: f32 = 1e-3;
const ATOL: f32 = 1e-4;

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

/// Runs one node test; the error says what differs.
pub fn run_case(dir: &Path) -> Result<(), String> {
    let options = LoadOptions {
        opencl: OpenclConfig {
            fallback: false,
            ..OpenclConfig::default()
        },
        ..LoadOptions::default()
    };
    let engine = engine::load(Backend::Opencl, &dir.join("model.onnx"), &options)
        .map_err(|e| e.to_string())?;
    let data = dir.join("test_data_set_0");
    let count = |prefix: &str| {
        (0..)
            .take_while(|i| data.join(format!("{prefix}_{i}.pb")).is_file())
            .count()
    };
    let inputs: Vec<Tensor> = (0..count("input"))
        .map(|i| load_pb(&data.join(format!("input_{i}.pb"))))
        .collect();
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
        for (k, (a, b)) in g.iter().zip(&w).enumerate() {
            if !((a - b).abs() <= ATOL + RTOL * b.abs() || (a.is_nan() && b.is_nan())) {
                return Err(format!("output {i}[{k}]: {a}, expected {b}"));
            }
        }
    }
    Ok(())
}

#[test]
fn node_tests_of_every_claimed_op_pass_on_the_device() {
    let root = node_data();
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| claimed(n) && !EXCLUDED.iter().any(|(pat, _)| n.contains(pat)))
        .collect();
    names.sort();
    let failures: Vec<String> = names
        .iter()
        .filter_map(|n| run_case(&root.join(n)).err().map(|e| format!("{n}: {e}")))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} node tests failed:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n")
    );
    // Guard against a selection that silently shrinks.
    assert!(
        names.len() >= 100,
        "only {} node tests selected",
        names.len()
    );
    eprintln!("{} node tests passed on the device", names.len());
}
