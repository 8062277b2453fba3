//! Unit tests of the ort engine: type mapping both ways, session options, input overrides,
//! and a missing library. Tests that run ONNX Runtime use the library that
//! `scripts/fetch-onnxruntime` put in `<repo>/.cache/onnxruntime/` (or `ORT_DYLIB_PATH`).

use super::*;
use crate::engine::{self, Backend};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model(name: &str) -> PathBuf {
    let sample = root().join("models").join(name).join("1/model.onnx");
    if sample.is_file() {
        return sample;
    }
    root()
        .join("tests/fixtures/models")
        .join(name)
        .join("1/model.onnx")
}

/// The search the test process uses: `ORT_DYLIB_PATH`, else the repository's cache.
fn search() -> LibrarySearch {
    let search = LibrarySearch {
        explicit: std::env::var_os("ORT_DYLIB_PATH")
            .filter(|v| !v.is_empty())
            .map(|v| ("ORT_DYLIB_PATH".to_string(), PathBuf::from(v))),
        roots: vec![root()],
    };
    if let Err(e) = search.find() {
        panic!("these tests run ONNX Runtime: {e}");
    }
    search
}

fn load_with(name: &str, options: &LoadOptions) -> Result<OrtEngine, EngineError> {
    OrtEngine::load_with(&model(name), options, &search())
}

fn load(name: &str) -> OrtEngine {
    load_with(name, &LoadOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn tensor(shape: &[usize], data: TensorData) -> Tensor {
    Tensor::new(shape.to_vec(), data).unwrap()
}

#[test]
fn every_datatype_maps_both_ways() {
    let engine = load("identity_all");
    assert_eq!(engine.backend(), Backend::Ort);
    let inputs: Vec<Tensor> = engine
        .inputs()
        .iter()
        .map(|spec| {
            assert_eq!(
                spec.shape,
                vec![Dim::Dynamic, Dim::Fixed(3)],
                "{}",
                spec.name
            );
            let data = match spec.dtype {
                DataType::Bool => TensorData::Bool(vec![true, false, true, false, false, true]),
                DataType::U8 => TensorData::U8(vec![0, 1, u8::MAX, 3, 4, 5]),
                DataType::U16 => TensorData::U16(vec![0, 1, u16::MAX, 3, 4, 5]),
                DataType::U32 => TensorData::U32(vec![0, 1, u32::MAX, 3, 4, 5]),
                DataType::U64 => TensorData::U64(vec![0, 1, u64::MAX, 3, 4, 5]),
                DataType::I8 => TensorData::I8(vec![i8::MIN, 0, i8::MAX, 1, 2, 3]),
                DataType::I16 => TensorData::I16(vec![i16::MIN, 0, i16::MAX, 1, 2, 3]),
                DataType::I32 => TensorData::I32(vec![i32::MIN, 0, i32::MAX, 1, 2, 3]),
                DataType::I64 => TensorData::I64(vec![i64::MIN, 0, i64::MAX, 1, 2, 3]),
                DataType::F32 => TensorData::F32(vec![-1.5, 0.0, f32::MAX, f32::NAN, -7.0, 1e6]),
                DataType::F64 => TensorData::F64(vec![-1.5, 0.0, f64::MIN, 1e-300, -7.0, 1e6]),
                DataType::Bytes => unreachable!("identity_all has no BYTES input"),
            };
            tensor(&[2, 3], data)
        })
        .collect();
    let dtypes: Vec<DataType> = engine.inputs().iter().map(|s| s.dtype).collect();
    assert_eq!(dtypes.len(), 11, "every numeric type and BOOL");
    let out_dtypes: Vec<DataType> = engine.outputs().iter().map(|s| s.dtype).collect();
    assert_eq!(out_dtypes, dtypes);

    let outputs = engine.run(inputs.clone()).unwrap();
    assert_eq!(outputs.len(), inputs.len());
    for (i, (o, x)) in outputs.iter().zip(&inputs).enumerate() {
        assert_eq!(o.shape(), x.shape(), "output {i}");
        match (o.data(), x.data()) {
            // NaN != NaN: compare bit patterns.
            (TensorData::F32(a), TensorData::F32(b)) => assert_eq!(
                a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            ),
            (a, b) => assert_eq!(a, b, "output {i}"),
        }
    }
}

#[test]
fn bytes_are_string_tensors() {
    let engine = load("identity_bytes");
    assert_eq!(engine.inputs()[0].dtype, DataType::Bytes);
    assert_eq!(engine.outputs()[0].dtype, DataType::Bytes);
    let text: Vec<Vec<u8>> = ["hello", "", "grüße 日本", "a b"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    let out = engine
        .run(vec![tensor(&[2, 2], TensorData::Bytes(text.clone()))])
        .unwrap();
    assert_eq!(out[0].shape(), &[2, 2]);
    assert_eq!(out[0].data(), &TensorData::Bytes(text));

    let nul = vec![b"ok".to_vec(), b"a\0b".to_vec()];
    let e = engine
        .run(vec![tensor(&[1, 2], TensorData::Bytes(nul))])
        .unwrap_err();
    assert!(matches!(e, EngineError::Run(_)), "{e:?}");
    assert!(
        e.to_string().contains("input 'text'") && e.to_string().contains("NUL"),
        "{e}"
    );
}

#[test]
fn specs_come_from_the_session() {
    let digits = load("digits");
    let spec = |s: &TensorSpec| (s.name.clone(), s.dtype, s.dims());
    assert_eq!(
        digits.inputs().iter().map(spec).collect::<Vec<_>>(),
        vec![("input".to_string(), DataType::F32, vec![-1, 64])]
    );
    assert_eq!(
        digits.outputs().iter().map(spec).collect::<Vec<_>>(),
        vec![
            ("probabilities".to_string(), DataType::F32, vec![-1, 10]),
            ("label".to_string(), DataType::I64, vec![-1]),
        ]
    );
    let add = load("add_fixed");
    assert_eq!(add.inputs()[1].dims(), vec![2, 2]);
}

#[test]
fn runs_from_many_threads() {
    let engine = load("add_fixed");
    std::thread::scope(|s| {
        for t in 0..8 {
            let engine = &engine;
            s.spawn(move || {
                for i in 0..20 {
                    let k = (t * 100 + i) as f32;
                    let a = tensor(&[2, 2], TensorData::F32(vec![k, 1.0, 2.0, 3.0]));
                    let b = tensor(&[2, 2], TensorData::F32(vec![1.0, k, 1.0, 1.0]));
                    let out = engine.run(vec![a, b]).unwrap();
                    assert_eq!(
                        out[0].data(),
                        &TensorData::F32(vec![k + 1.0, k + 1.0, 3.0, 4.0])
                    );
                }
            });
        }
    });
}

#[test]
fn session_options_from_the_ort_table() {
    let input = || {
        let data = (0..2 * 64).map(|i| (i % 17) as f32).collect();
        vec![tensor(&[2, 64], TensorData::F32(data))]
    };
    let reference = load("digits").run(input()).unwrap();
    for level in [
        GraphOptimizationLevel::Disable,
        GraphOptimizationLevel::Basic,
        GraphOptimizationLevel::Extended,
        GraphOptimizationLevel::All,
    ] {
        let options = LoadOptions {
            ort: OrtConfig {
                intra_op_threads: Some(1),
                inter_op_threads: Some(2),
                graph_optimization_level: Some(level),
                allow_spinning: Some(level == GraphOptimizationLevel::All),
            },
            ..LoadOptions::default()
        };
        let engine = load_with("digits", &options).unwrap_or_else(|e| panic!("{level:?}: {e}"));
        let out = engine.run(input()).unwrap();
        assert_eq!(out[1], reference[1], "{level:?}: labels");
        let (TensorData::F32(a), TensorData::F32(b)) = (out[0].data(), reference[0].data()) else {
            panic!("probabilities are FP32");
        };
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-5 + 1e-4 * y.abs(),
                "{level:?}: {x} vs {y}"
            );
        }
    }
    assert_eq!(
        optimization_level(GraphOptimizationLevel::Disable),
        OrtLevel::Disable
    );
    assert_eq!(
        optimization_level(GraphOptimizationLevel::All),
        OrtLevel::All
    );
}

#[test]
fn input_overrides_check_and_pin() {
    let ov = |name: &str, datatype: Option<DataType>, dims: Option<Vec<i64>>| LoadOptions {
        inputs: vec![TensorOverride {
            name: name.into(),
            datatype,
            dims,
        }],
        ..LoadOptions::default()
    };
    let pinned = load_with(
        "digits",
        &ov("input", Some(DataType::F32), Some(vec![4, -1])),
    )
    .unwrap();
    assert_eq!(pinned.inputs()[0].dims(), vec![4, 64]);

    for (options, needle) in [
        (ov("nope", None, None), "not a model input (inputs: input)"),
        (
            ov("input", Some(DataType::F64), None),
            "declares FP64 but the model takes FP32",
        ),
        (
            ov("input", None, Some(vec![-1, 32])),
            "incompatible with the model's [-1, 64]",
        ),
        (ov("input", None, Some(vec![-1])), "incompatible"),
    ] {
        let e = load_with("digits", &options).err().expect(needle);
        assert!(
            matches!(e, EngineError::Load(_)) && e.to_string().contains(needle),
            "{e}"
        );
    }
}

#[test]
fn bad_runs_are_errors_not_panics() {
    let engine = load("add_fixed");
    // The serving core validates shapes; the engine itself must still fail cleanly.
    let a = tensor(&[3, 2], TensorData::F32(vec![0.0; 6]));
    let b = tensor(&[2, 2], TensorData::F32(vec![0.0; 4]));
    let e = engine.run(vec![a, b]).unwrap_err();
    assert!(matches!(e, EngineError::Run(_)), "{e:?}");
    assert!(e.to_string().starts_with("ONNX Runtime: "), "{e}");
}

#[test]
fn missing_library_fails_the_model_not_the_process() {
    let missing = root().join("target/no-such-dir/libonnxruntime.so");
    let nowhere = LibrarySearch {
        explicit: Some(("ORT_DYLIB_PATH".to_string(), missing.clone())),
        roots: vec![root()],
    };
    // Whether or not another test loaded ONNX Runtime already, the lookup fails first.
    for _ in 0..2 {
        let e = OrtEngine::load_with(&model("digits"), &LoadOptions::default(), &nowhere)
            .err()
            .expect("no library");
        let msg = e.to_string();
        assert!(matches!(e, EngineError::Load(_)), "{e:?}");
        assert!(!msg.contains('\n'), "one line: {msg}");
        assert!(msg.contains(&missing.display().to_string()), "{msg}");
        assert!(msg.contains("run scripts/fetch-onnxruntime"), "{msg}");
        let _ = load("digits");
    }
    // The tract engine is unaffected.
    let tract = engine::load(Backend::Tract, &model("digits"), &LoadOptions::default()).unwrap();
    assert_eq!(tract.backend(), Backend::Tract);

    // A file that is not a library fails to load, also in one line.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libonnxruntime.so");
    std::fs::write(&fake, b"not a library").unwrap();
    let fake_search = LibrarySearch {
        explicit: Some(("SCORIA_ORT_LIBRARY".to_string(), fake)),
        roots: vec![],
    };
    // (Only observable before the first load; afterwards the loaded library serves.)
    if let Err(e) = OrtEngine::load_with(&model("digits"), &LoadOptions::default(), &fake_search) {
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}

#[test]
fn small_models_run_one_thread_per_session_and_an_instance_per_core() {
    let (digits, resnet) = (model("digits"), model("resnet"));
    let unset = OrtConfig::default();
    assert!(runs_small(&digits, &unset));
    assert!(!runs_small(&resnet, &unset), "12 MB is not small");
    assert!(!runs_small(&root().join("no-such.onnx"), &unset));
    for set in [
        OrtConfig {
            intra_op_threads: Some(2),
            ..OrtConfig::default()
        },
        OrtConfig {
            inter_op_threads: Some(1),
            ..OrtConfig::default()
        },
    ] {
        assert!(
            !runs_small(&digits, &set),
            "{set:?} leaves threads to the user"
        );
    }
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(small_model_instances() as usize, cores.min(4));
    let options = LoadOptions::default();
    assert_eq!(
        engine::default_instances(Backend::Ort, &digits, &options),
        small_model_instances()
    );
    assert_eq!(
        engine::default_instances(Backend::Ort, &resnet, &options),
        1
    );
    assert_eq!(
        engine::default_instances(Backend::Tract, &digits, &options),
        1
    );
    // The session answers as one with ONNX Runtime's default threads.
    let input = || vec![tensor(&[1, 64], TensorData::F32(vec![3.0; 64]))];
    let threads = OrtConfig {
        intra_op_threads: Some(2),
        ..OrtConfig::default()
    };
    let reference = load_with(
        "digits",
        &LoadOptions {
            ort: threads,
            ..LoadOptions::default()
        },
    )
    .unwrap()
    .run(input())
    .unwrap();
    assert_eq!(load("digits").run(input()).unwrap()[1], reference[1]);
}
