//! The hook layer on its own: scripts against a stand-in [`Predictor`] (no model files, no
//! serving core), so the contract between scripts and models is tested apart from both.

use super::*;
use crate::engine::{Dim, TensorSpec};
use crate::tensor::{DataType, ErrorKind, NamedTensor, Tensor, TensorData};
use serde_json::json;
use std::sync::Mutex;

/// The input names and requested outputs of one prediction.
type Call = (Vec<String>, Option<Vec<String>>);

/// Doubles its FP32 input `x` into output `y` and sums it into `sum`; records each call.
/// `fail` makes every prediction fail with that kind.
struct Doubler {
    calls: Mutex<Vec<Call>>,
    fail: Option<ErrorKind>,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
}

fn spec(name: &str) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        dtype: DataType::F32,
        shape: vec![Dim::Dynamic, Dim::Fixed(2)],
    }
}

fn doubler(fail: Option<ErrorKind>) -> Arc<Doubler> {
    Arc::new(Doubler {
        calls: Mutex::new(Vec::new()),
        fail,
        inputs: vec![spec("x")],
        outputs: vec![spec("y"), spec("sum")],
    })
}

impl Predictor for Doubler {
    fn name(&self) -> &str {
        "doubler"
    }

    fn version(&self) -> u64 {
        7
    }

    fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    fn predict(
        &self,
        inputs: Vec<NamedTensor>,
        outputs: Option<&[String]>,
    ) -> Result<Vec<NamedTensor>, PredictError> {
        self.calls.lock().unwrap().push((
            inputs.iter().map(|t| t.name.clone()).collect(),
            outputs.map(<[String]>::to_vec),
        ));
        if let Some(kind) = self.fail {
            return Err(PredictError {
                kind,
                message: format!("the stand-in fails as {kind}"),
            });
        }
        let x = &inputs[0].tensor;
        let TensorData::F32(values) = x.data() else {
            panic!("the hook passed {:?}, not FP32", x.dtype());
        };
        let y = Tensor::new(
            x.shape().to_vec(),
            TensorData::F32(values.iter().map(|v| v * 2.0).collect()),
        )
        .unwrap();
        let sum = Tensor::new(vec![1], TensorData::F32(vec![values.iter().sum()])).unwrap();
        let all = [("y", y), ("sum", sum)];
        let wanted: Vec<String> =
            outputs.map_or_else(|| vec!["y".into(), "sum".into()], <[String]>::to_vec);
        Ok(wanted
            .into_iter()
            .filter_map(|w| {
                all.iter().find(|(n, _)| *n == w).map(|(n, t)| NamedTensor {
                    name: n.to_string(),
                    tensor: t.clone(),
                })
            })
            .collect())
    }
}

fn hook_on(model: Arc<Doubler>, source: &str) -> (tempfile::TempDir, Result<Hook, HookError>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("score.rhai");
    std::fs::write(&path, source).unwrap();
    let labels = Some(Arc::new(vec!["cat".to_string(), "dog".to_string()]));
    let hook = Hook::load(&path, model, labels);
    (dir, hook)
}

#[test]
fn the_script_sees_the_predictor_and_its_answers() {
    let model = doubler(None);
    let source = r#"
        fn run(input) {
            let out = model.predict(#{ x: input.rows });
            #{ name: model.name, version: model.version, inputs: model.inputs,
               outputs: model.outputs, y: out.y.to_array(), sum: out.sum.to_array(),
               only: model.predict(#{ x: input.rows }, ["sum"]).keys(),
               single: model.predict(input.rows).y.to_array(), label: label(1) }
        }
    "#;
    let (_dir, hook) = hook_on(Arc::clone(&model), source);
    let out = hook
        .unwrap()
        .run(json!({"rows": [[1, 2], [3, 4.5]]}))
        .unwrap();
    assert_eq!(
        out,
        json!({"name": "doubler", "version": 7, "inputs": ["x"], "outputs": ["y", "sum"],
               "y": [[2.0, 4.0], [6.0, 9.0]], "sum": [10.5], "only": ["sum"],
               "single": [[2.0, 4.0], [6.0, 9.0]], "label": "dog"})
    );
    let calls = model.calls.lock().unwrap();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0], (vec!["x".to_string()], None));
    assert_eq!(
        calls[1],
        (vec!["x".to_string()], Some(vec!["sum".to_string()]))
    );
}

#[test]
fn a_single_sample_gets_a_batch_dimension() {
    let model = doubler(None);
    let (_dir, hook) = hook_on(
        Arc::clone(&model),
        "fn run(input) { model.predict(#{ x: input }).y.shape }",
    );
    assert_eq!(hook.unwrap().run(json!([1, 2])).unwrap(), json!([1, 2]));
}

#[test]
fn prediction_failures_keep_their_kind() {
    for (kind, want) in [
        (ErrorKind::InvalidInput, ErrorKind::InvalidInput),
        (ErrorKind::Unavailable, ErrorKind::Unavailable),
        (ErrorKind::Internal, ErrorKind::Internal),
        (ErrorKind::NotFound, ErrorKind::InvalidInput),
    ] {
        let (_dir, hook) = hook_on(
            doubler(Some(kind)),
            "fn run(input) {\n  model.predict(#{ x: [[1.0, 2.0]] })\n}",
        );
        let e = hook.unwrap().run(json!({})).unwrap_err();
        assert_eq!(e.kind(), want, "{kind}: {e:?}");
        assert!(
            e.to_string().ends_with(&format!(
                "line 2: model.predict: the stand-in fails as {kind}"
            )),
            "{e}"
        );
    }
}

#[test]
fn unknown_inputs_are_refused_before_the_predictor_runs() {
    let model = doubler(None);
    let (_dir, hook) = hook_on(
        Arc::clone(&model),
        "fn run(input) { model.predict(#{ nope: [1.0] }) }",
    );
    let e = hook.unwrap().run(json!({})).unwrap_err();
    assert!(
        e.to_string()
            .contains("the model has no input 'nope' (inputs: x)"),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::Internal);
    assert!(model.calls.lock().unwrap().is_empty());
}

#[test]
fn thrown_errors_are_the_clients_and_init_failures_fail_the_load() {
    let (_dir, hook) = hook_on(doubler(None), "fn run(input) { throw \"no cats\"; }");
    let e = hook.unwrap().run(json!({})).unwrap_err();
    assert_eq!(
        (e.kind(), e.to_string().as_str()),
        (ErrorKind::InvalidInput, "no cats")
    );

    let (_dir, hook) = hook_on(
        doubler(Some(ErrorKind::Unavailable)),
        "fn init() { model.predict(#{ x: [[1.0, 2.0]] }) }\nfn run(input) { 1 }",
    );
    let e = hook.unwrap_err();
    assert!(matches!(e, HookError::Init { .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Internal);
}
