//! The sample hooks on the real sample models, the script API, and concurrency.

use super::*;
use crate::engine::Backend;
use crate::models::{LoadDefaults, LoadedVersion, Served};
use crate::registry::Repository;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The first row of scikit-learn's digits data set: a 0.
pub(super) const DIGIT_ZERO: &[u8] = &[
    0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0, 0,
    8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6,
    13, 10, 0, 0, 0,
];

pub(super) fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn load_model(name: &str) -> Arc<LoadedVersion> {
    let dir = Repository::open(models_dir()).unwrap().model(name).unwrap();
    Arc::new(LoadedVersion::load(&dir, 1, LoadDefaults::new(Backend::Tract)).unwrap())
}

/// The digits model, loaded once for every test.
pub(super) fn digits() -> Arc<LoadedVersion> {
    static MODEL: OnceLock<Arc<LoadedVersion>> = OnceLock::new();
    Arc::clone(MODEL.get_or_init(|| load_model("digits")))
}

/// The hook of sample model `name`, as model loading sets it up.
fn sample_hook(name: &str) -> Arc<Hook> {
    let dir = Repository::open(models_dir()).unwrap().model(name).unwrap();
    Served::load(&dir, 1, LoadDefaults::new(Backend::Tract))
        .unwrap()
        .hook
        .expect("the sample model's config.toml names a hook")
}

/// The sample digits hook, as model loading sets it up.
pub(super) fn digits_hook() -> Arc<Hook> {
    sample_hook("digits")
}

/// Asserts that `out` is the digits hook's answer for one DIGIT_ZERO row.
pub(super) fn assert_zero(out: &Value) {
    let p = &out["predictions"];
    assert_eq!(p.as_array().map(Vec::len), Some(1), "{out}");
    assert_eq!(p[0]["label"], "0", "{out}");
    assert_eq!(p[0]["class"], 0, "{out}");
    let probs: Vec<f64> = p[0]["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(probs.len(), 10);
    assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-3, "{out}");
    assert_eq!(p[0]["probability"].as_f64(), Some(probs[0]));
    assert!(probs[0] > 0.5, "{out}");
}

/// A hook from `source`, written to a temporary `<dir>/<name>`.
pub(super) fn script(name: &str, source: &str, limits: HookLimits) -> Result<Hook, HookError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, source).unwrap();
    Hook::load_with_limits(&path, digits(), Some(Arc::new(vec!["zero".into()])), limits)
}

#[test]
fn digits_hook_labels_a_zero() {
    let hook = digits_hook();
    assert_eq!(hook.file(), "digits/score.rhai");
    assert_zero(&hook.run(json!({ "data": [DIGIT_ZERO] })).unwrap());
    // A single flat row is one sample too.
    assert_zero(&hook.run(json!({ "data": DIGIT_ZERO })).unwrap());
    let two = hook
        .run(json!({ "data": [DIGIT_ZERO, DIGIT_ZERO] }))
        .unwrap();
    assert_eq!(two["predictions"].as_array().unwrap().len(), 2);
    // Bad requests are the client's error, with the script's message.
    for bad in [json!({}), json!({"data": [[1, 2]]}), json!([1])] {
        let e = hook.run(bad.clone()).unwrap_err();
        assert!(e.is_client_error(), "{bad}: {e:?}");
    }
    let e = hook.run(json!({"data": [[1, 2]]})).unwrap_err();
    assert_eq!(
        e.to_string(),
        "each row of \"data\" must hold 64 pixel values"
    );
}

#[test]
fn lenet_hook_returns_top_5() {
    let hook = sample_hook("lenet");
    let image: Vec<Vec<f64>> = (0..28)
        .map(|r| (0..28).map(|c| ((r * 28 + c) % 17) as f64 / 17.0).collect())
        .collect();
    let out = hook.run(json!({ "data": image })).unwrap();
    let top = out["predictions"][0]["top_k"].as_array().unwrap();
    assert_eq!(top.len(), 5, "{out}");
    let probs: Vec<f64> = top
        .iter()
        .map(|e| e["probability"].as_f64().unwrap())
        .collect();
    assert!(probs.windows(2).all(|w| w[0] >= w[1]), "{out}");
    assert!(probs.iter().sum::<f64>() <= 1.0 + 1e-6, "{out}");
    let mut classes: Vec<i64> = top.iter().map(|e| e["class"].as_i64().unwrap()).collect();
    classes.sort_unstable();
    classes.dedup();
    assert!(
        classes.len() == 5 && classes.iter().all(|c| (0..10).contains(c)),
        "{out}"
    );
    // A batch of two 1x28x28 images gives two answers; a wrong shape is the client's error.
    let out = hook.run(json!({ "data": [[image], [image]] })).unwrap();
    assert_eq!(out["predictions"].as_array().unwrap().len(), 2);
    let e = hook.run(json!({ "data": [[1, 2]] })).unwrap_err();
    assert!(
        e.is_client_error() && e.to_string().contains("28x28"),
        "{e}"
    );
    let e = hook.run(json!({ "data": [["a"]] })).unwrap_err();
    assert!(
        e.is_client_error() && e.to_string().contains("invalid \"data\""),
        "{e}"
    );
}

#[test]
fn resnet_hook_compiles() {
    // Its model is too slow for a debug-build unit test; the script runs against digits'.
    let path = models_dir().join("resnet/score.rhai");
    let hook = Hook::load(&path, digits(), None).unwrap();
    let e = hook.run(json!({ "data": [1, 2] })).unwrap_err();
    assert!(
        e.is_client_error() && e.to_string().contains("3x224x224"),
        "{e}"
    );
}

#[test]
fn script_api() {
    let source = r#"
        fn run(x) {
            let t = tensor([[1.5, 2], [3, 4]], "FP32");
            let i = tensor([1, 2, 3, 4, 5, 6], "int64", [2, 3]);
            #{
                shape: t.shape, dtype: t.dtype, len: t.len(), nested: i.to_array(),
                cast: tensor(tensor([[1.0, 2], [3, 4]], "FP32"), "INT32").to_array(), tensor: i, fp32: tensor([0.1], "FP32"),
                softmax: softmax([1.0, 1.0]), softmax_t: softmax(t).dtype,
                argmax: argmax([[1, 5, 2], [9, 0, 1]]), argmax_t: argmax(tensor([3, 7], "FP32")),
                top: top_k([0.1, 0.7, 0.2], 2), top_all: top_k([[1], [2]], 5),
                label: label(0), labels: labels(), inputs: model.inputs, outputs: model.outputs,
                predicted: model.predict(#{ input: [x.row] }, ["label"]).label.to_array(),
                echo: x,
            }
        }
    "#;
    let hook = script("api.rhai", source, HookLimits::default()).unwrap();
    let out = hook
        .run(json!({"row": DIGIT_ZERO, "big": u64::MAX, "f": 0.5, "s": "é", "n": null}))
        .unwrap();
    let want = json!({
        "shape": [2, 2], "dtype": "FP32", "len": 4, "nested": [[1, 2, 3], [4, 5, 6]],
        "cast": [[1, 2], [3, 4]], "tensor": [[1, 2, 3], [4, 5, 6]], "fp32": [0.1],
        "softmax": [0.5, 0.5], "softmax_t": "FP32", "argmax": [1, 0], "argmax_t": 1,
        "top": [{"index": 1, "value": 0.7}, {"index": 2, "value": 0.2}],
        "top_all": [[{"index": 0, "value": 1.0}], [{"index": 0, "value": 2.0}]],
        "label": "zero", "labels": ["zero"], "inputs": ["input"],
        "outputs": ["probabilities", "label"], "predicted": [0],
        "echo": {"row": DIGIT_ZERO, "big": u64::MAX as f64, "f": 0.5, "s": "é", "n": null},
    });
    assert_eq!(out, want);
}

#[test]
fn tensor_conversion_errors_name_the_element() {
    let source = "fn run(x) {\n  tensor(x, \"UINT8\").to_array()\n}";
    let hook = script("cast.rhai", source, HookLimits::default()).unwrap();
    assert_eq!(hook.run(json!([[1, 2.0]])).unwrap(), json!([[1, 2]]));
    for (input, want) in [
        (
            json!([[1, 2], [3, 300]]),
            "tensor(): element 3: expected an integer in the UINT8 range, found 300",
        ),
        (
            json!([0.5]),
            "tensor(): element 0: expected an integer in the UINT8 range, found 0.5",
        ),
        (
            json!([1, "a"]),
            "tensor(): element 1: expected an integer in the UINT8 range, found string \"a\"",
        ),
        (
            json!([[1], [2, 3]]),
            "tensor(): nested arrays are ragged (pass an explicit shape)",
        ),
        (
            json!([{"a": 1}]),
            "tensor(): element 0: expected a number, boolean or string, found an object map",
        ),
    ] {
        // The request's data is at fault: a 400 naming the hook and line.
        let e = hook.run(input.clone()).unwrap_err();
        assert!(
            matches!(e, HookError::BadInput { line: Some(2), .. }) && e.is_client_error(),
            "{input}: {e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!("score hook {}/cast.rhai line 2: {want}", dir_of(&hook))
        );
    }
}

/// The temporary folder name a [`script`] hook's file is shown under.
fn dir_of(hook: &Hook) -> &str {
    hook.file().split('/').next().unwrap_or_default()
}

#[test]
fn init_state_and_constants_reach_run() {
    let source = "const SCALE = 3;\nfn init() { print(\"init\"); #{ offset: 1 } }\n\
                  fn run(x) { debug(x); x * global::SCALE + state.offset }";
    let hook = script("state.rhai", source, HookLimits::default()).unwrap();
    assert_eq!(hook.run(json!(2)).unwrap(), json!(7));
}

#[test]
fn runs_concurrently() {
    let hook = digits_hook();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    for _ in 0..5 {
                        assert_zero(&hook.run(json!({ "data": [DIGIT_ZERO] })).unwrap());
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
    });
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Hook>();
}

#[test]
fn labels_file_lines() {
    let labels = read_labels(&models_dir().join("digits")).unwrap().unwrap();
    assert_eq!(labels, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
    assert_eq!(read_labels(&models_dir().join("lenet")).unwrap(), None);
    assert_eq!(display_name(Path::new("/srv/m/x.rhai")), "m/x.rhai");
    assert_eq!(display_name(Path::new("x.rhai")), "x.rhai");
}
