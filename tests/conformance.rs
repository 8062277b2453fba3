//! One conformance suite for every engine: the same models and inputs through each engine,
//! compared with onnxruntime-Python's outputs stored in `tests/fixtures/conformance/*.json`
//! (written by `scripts/gen_conformance.py`).
//!
//! Tolerance: floats (FP32, FP64) pass when `|got - want| <= ATOL + RTOL * |want|` with
//! `RTOL = 1e-4`, `ATOL = 1e-5`; integers, BOOL and BYTES must be equal; shapes and datatypes
//! must be equal.
//!
//! Each (engine, model) pair is its own test, named `<engine>::<model>`
//! (`cargo test --test conformance ort::resnet`). An engine joins by adding a line to the
//! `engines` list at the bottom; a model by adding its reference file and a name to `models`.
//!
//! The ort half needs ONNX Runtime's library and is never skipped: the test command runs
//! `scripts/fetch-onnxruntime` first, which puts it in `<repo>/.cache/onnxruntime/`, where the
//! engine finds it (cargo runs tests in the repository root); `ORT_DYLIB_PATH` overrides that.

use scoria::engine::ort::LibrarySearch;
use scoria::engine::Backend;
use scoria::models::{LoadDefaults, LoadedVersion};
use scoria::registry::Repository;
use scoria::tensor::NamedTensor;
use scoria::tensor::{DataType, Tensor, TensorData};
use serde_json::Value;
use std::path::{Path, PathBuf};

const RTOL: f64 = 1e-4;
const ATOL: f64 = 1e-5;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Checks that `backend` can run at all, with a clear message where it cannot.
fn require(backend: Backend) {
    if backend == Backend::Ort {
        let search = LibrarySearch::from_process();
        if let Err(e) = search.find() {
            panic!(
                "the ort conformance tests need ONNX Runtime and are not skipped: {e} \
                 (scripts/test runs scripts/fetch-onnxruntime before cargo test)"
            );
        }
    }
}

/// Loads version 1 of `model` from `models/` or `tests/fixtures/models/` with `backend`.
fn load(backend: Backend, model: &str) -> LoadedVersion {
    let repo = ["models", "tests/fixtures/models"]
        .iter()
        .map(|d| root().join(d))
        .find(|d| d.join(model).is_dir())
        .unwrap_or_else(|| {
            panic!("no model folder '{model}' in models/ or tests/fixtures/models/")
        });
    let dir = Repository::open(&repo)
        .and_then(|r| r.model(model))
        .unwrap_or_else(|e| panic!("{model}: {e}"));
    // The engine alone: no auto-completed batcher in front of it.
    let defaults = LoadDefaults {
        backend,
        max_batch_size: 0,
    };
    LoadedVersion::load(&dir, 1, defaults)
        .unwrap_or_else(|e| panic!("{backend}/{model}: failed to load: {e}"))
}

fn reference(model: &str) -> Value {
    let path = root().join(format!("tests/fixtures/conformance/{model}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (generate it: .venv/bin/python scripts/gen_conformance.py {model})",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs every case of `model`'s reference through `backend` and compares the outputs.
fn check(backend: Backend, model: &str) {
    require(backend);
    let doc = reference(model);
    let model_file = root().join(str_field(&doc, "model_file"));
    let sha = sha256_hex(&model_file);
    assert_eq!(
        sha,
        str_field(&doc, "model_sha256"),
        "{} changed since its reference was generated; regenerate with \
         .venv/bin/python scripts/gen_conformance.py {model}",
        model_file.display()
    );
    let loaded = load(backend, model);
    assert_eq!(loaded.backend(), backend);
    let cases = doc["cases"].as_array().expect("cases");
    assert!(!cases.is_empty(), "{model}: no cases");
    for case in cases {
        let at = format!("{backend}/{model} case '{}'", str_field(case, "name"));
        let inputs = case["inputs"]
            .as_array()
            .expect("inputs")
            .iter()
            .map(|t| NamedTensor {
                name: str_field(t, "name").to_string(),
                tensor: tensor(t),
            })
            .collect();
        let got = loaded
            .infer_blocking(inputs, None)
            .unwrap_or_else(|e| panic!("{at}: inference failed: {e}"));
        let want = case["outputs"].as_array().expect("outputs");
        let got_names: Vec<&str> = got.outputs.iter().map(|o| o.name.as_str()).collect();
        let want_names: Vec<&str> = want.iter().map(|o| str_field(o, "name")).collect();
        assert_eq!(got_names, want_names, "{at}: output names");
        for (g, w) in got.outputs.iter().zip(want) {
            compare(&format!("{at} output '{}'", g.name), &g.tensor, &tensor(w));
        }
    }
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("reference field '{key}' missing in {v}"))
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A reference tensor: literal `data`, or the `fill` pattern of scripts/gen_conformance.py.
fn tensor(t: &Value) -> Tensor {
    let name = str_field(t, "name");
    let dtype = DataType::from_name(str_field(t, "datatype")).expect("datatype");
    let shape: Vec<usize> = t["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().expect("dimension") as usize)
        .collect();
    let len: usize = shape.iter().product();
    let data = if let Some(f) = t.get("fill") {
        assert_eq!(dtype, DataType::F32, "{name}: fill makes FP32 data");
        let int = |k: &str| f[k].as_u64().expect("fill integer");
        let (mul, add, modulus) = (int("mul"), int("add"), int("mod"));
        let offset = f["offset"].as_f64().expect("fill offset") as f32;
        TensorData::F32(
            (0..len as u64)
                .map(|i| ((i * mul + add) % modulus) as f32 / modulus as f32 - offset)
                .collect(),
        )
    } else {
        let values = t["data"].as_array().expect("data");
        macro_rules! ints {
            ($variant:ident, $t:ty) => {
                TensorData::$variant(
                    values
                        .iter()
                        .map(|v| {
                            v.as_i64()
                                .map(i128::from)
                                .or_else(|| v.as_u64().map(i128::from))
                                .and_then(|n| <$t>::try_from(n).ok())
                                .unwrap_or_else(|| panic!("{name}: {v} is not {}", dtype))
                        })
                        .collect(),
                )
            };
        }
        match dtype {
            DataType::F32 => TensorData::F32(
                values
                    .iter()
                    .map(|v| v.as_f64().expect("FP32") as f32)
                    .collect(),
            ),
            DataType::F64 => {
                TensorData::F64(values.iter().map(|v| v.as_f64().expect("FP64")).collect())
            }
            DataType::Bool => {
                TensorData::Bool(values.iter().map(|v| v.as_bool().expect("BOOL")).collect())
            }
            DataType::Bytes => TensorData::Bytes(
                values
                    .iter()
                    .map(|v| v.as_str().expect("BYTES").as_bytes().to_vec())
                    .collect(),
            ),
            DataType::I8 => ints!(I8, i8),
            DataType::I16 => ints!(I16, i16),
            DataType::I32 => ints!(I32, i32),
            DataType::I64 => ints!(I64, i64),
            DataType::U8 => ints!(U8, u8),
            DataType::U16 => ints!(U16, u16),
            DataType::U32 => ints!(U32, u32),
            DataType::U64 => ints!(U64, u64),
        }
    };
    Tensor::new(shape, data).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Compares `got` with `want` at the suite's tolerance, naming the worst element on failure.
fn compare(at: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dtype(), want.dtype(), "{at}: datatype");
    assert_eq!(got.shape(), want.shape(), "{at}: shape");
    let floats: Option<(Vec<f64>, Vec<f64>)> = match (got.data(), want.data()) {
        (TensorData::F32(g), TensorData::F32(w)) => Some((
            g.iter().map(|&v| f64::from(v)).collect(),
            w.iter().map(|&v| f64::from(v)).collect(),
        )),
        (TensorData::F64(g), TensorData::F64(w)) => Some((g.clone(), w.clone())),
        _ => None,
    };
    let Some((g, w)) = floats else {
        assert!(
            got.data() == want.data(),
            "{at}: values differ (exact match required)\n got: {:?}\nwant: {:?}",
            got.data(),
            want.data()
        );
        return;
    };
    let mut failures = 0;
    let mut worst: Option<(usize, f64)> = None;
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let excess = (a - b).abs() - (ATOL + RTOL * b.abs());
        if excess > 0.0 || a.is_nan() {
            failures += 1;
            if worst.is_none_or(|(_, e)| excess > e || excess.is_nan()) {
                worst = Some((i, excess));
            }
        }
    }
    if let Some((i, _)) = worst {
        panic!(
            "{at}: {failures} of {} elements outside |got - want| <= {ATOL:e} + {RTOL:e}*|want|; \
             worst at flat index {i}: got {}, want {}, |diff| {:e}",
            g.len(),
            g[i],
            w[i],
            (g[i] - w[i]).abs()
        );
    }
}

/// One test per (engine, model) pair, in a module per engine.
macro_rules! conformance {
    (engines: [$($engine:ident => $backend:expr),* $(,)?], models: $models:tt $(,)?) => {
        $(conformance!(@engine $engine => $backend, $models);)*
        const MODELS: &[&str] = &conformance!(@names $models);
    };
    (@engine $engine:ident => $backend:expr, [$($model:ident),* $(,)?]) => {
        mod $engine {
            $(
                #[test]
                fn $model() {
                    super::check($backend, stringify!($model));
                }
            )*
        }
    };
    (@names [$($model:ident),* $(,)?]) => { [$(stringify!($model)),*] };
}

conformance! {
    engines: [
        tract => scoria::engine::Backend::Tract,
        ort => scoria::engine::Backend::Ort,
        opencl => scoria::engine::Backend::Opencl,
    ],
    models: [digits, lenet, resnet, identity_all, add_fixed, identity_bytes],
}

/// Every reference file is run by the suite, and every model listed has one.
#[test]
fn every_reference_is_in_the_suite() {
    let dir = root().join("tests/fixtures/conformance");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".json").map(str::to_string)
        })
        .collect();
    files.sort();
    let mut listed: Vec<String> = MODELS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(
        files, listed,
        "tests/fixtures/conformance/*.json vs the suite's models"
    );
}
