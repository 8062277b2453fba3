//! The serving core on its own: a batch observer that is no metrics exporter, and the error
//! kinds the front ends map.

use super::*;
use crate::batch::BatchObserver;
use crate::engine::Backend;
use crate::tensor::{NamedTensor, Tensor, TensorData};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Records every batch each model version's batcher reports.
#[derive(Default)]
struct Recorder(Arc<Mutex<Vec<(String, u64, usize)>>>);

impl BatchObservers for Recorder {
    fn observer(&self, model: &str, version: u64) -> BatchObserver {
        let (seen, model) = (Arc::clone(&self.0), model.to_string());
        Arc::new(move |rows, _depth| seen.lock().unwrap().push((model.clone(), version, rows)))
    }
}

/// A repository holding the sample digits model under `name` with `config`.
fn repository(name: &str, config: &str) -> (tempfile::TempDir, Repository) {
    let root = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/digits/1/model.onnx");
    let version = root.path().join(name).join("1");
    std::fs::create_dir_all(&version).unwrap();
    std::fs::copy(sample, version.join("model.onnx")).unwrap();
    std::fs::write(root.path().join(name).join("config.toml"), config).unwrap();
    let repo = Repository::open(root.path()).unwrap();
    (root, repo)
}

fn wait_loaded(models: &ModelManager) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !models.is_ready() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(models.is_ready());
}

fn zeros(rows: usize) -> Vec<NamedTensor> {
    vec![NamedTensor {
        name: "input".into(),
        tensor: Tensor::new(vec![rows, 64], TensorData::F32(vec![0.0; rows * 64])).unwrap(),
    }]
}

#[test]
fn batchers_report_to_the_observers_the_manager_was_given() {
    let config = "max_batch_size = 8\n[dynamic_batching]\nmax_queue_delay_us = 100\n";
    let (_root, repo) = repository("batched", config);
    let recorder = Recorder::default();
    let seen = Arc::clone(&recorder.0);
    let models =
        ModelManager::with_observers(repo, LoadDefaults::new(Backend::Tract), Arc::new(recorder));
    models.start_loading().unwrap();
    wait_loaded(&models);
    let model = models.get("batched", None).unwrap();
    let inference = model.infer_blocking(zeros(3), None).unwrap();
    assert_eq!(inference.outputs[0].tensor.shape()[0], 3);
    assert_eq!(*seen.lock().unwrap(), vec![("batched".to_string(), 1, 3)]);
    assert_eq!(model.stats().snapshot().execution_count, 1);
}

#[test]
fn errors_say_their_kind() {
    let (_root, repo) = repository("plain", "");
    let models = ModelManager::new(repo, LoadDefaults::new(Backend::Tract));
    models.start_loading().unwrap();
    wait_loaded(&models);
    let kind = |r: Result<Arc<LoadedVersion>, ModelError>| r.err().map(|e| e.kind());
    assert_eq!(kind(models.get("nope", None)), Some(ErrorKind::NotFound));
    assert_eq!(
        kind(models.get("plain", Some("9"))),
        Some(ErrorKind::NotFound)
    );
    let model = models.get("plain", None).unwrap();
    let bad = model.infer_blocking(vec![], None).unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::InvalidInput, "{bad}");
    let outputs = Some(&["nope".to_string()][..]);
    let bad = model.infer_blocking(zeros(1), outputs).unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::InvalidInput, "{bad}");
    models.unload_model("plain").unwrap();
    assert_eq!(
        kind(models.get("plain", None)),
        Some(ErrorKind::Unavailable)
    );
}

/// Loads every version of `repo` with auto-complete at `default_max_batch_size`.
fn manager(repo: Repository, default_max_batch_size: u32) -> Arc<ModelManager> {
    let defaults = LoadDefaults {
        backend: Backend::Tract,
        max_batch_size: default_max_batch_size,
    };
    let models = ModelManager::new(repo, defaults);
    models.start_loading().unwrap();
    wait_loaded(&models);
    models
}

#[test]
fn a_bare_batchable_model_is_auto_completed() {
    let (_root, repo) = repository("bare", "description = \"no batching settings\"\n");
    let model = manager(repo, 4).get("bare", None).unwrap();
    assert_eq!(model.config().max_batch_size, Some(4));
    let batching = model.config().dynamic_batching.as_ref().expect("batcher");
    assert_eq!(batching.max_queue_delay_us, 0);
    model.infer_blocking(zeros(4), None).unwrap();
    let e = model.infer_blocking(zeros(5), None).unwrap_err();
    assert!(e.to_string().contains("max_batch_size 4"), "{e}");

    let (_root, repo) = repository("bare", "");
    let model = manager(repo, 16).get("bare", None).unwrap();
    assert_eq!(model.config().max_batch_size, Some(16));
    model.infer_blocking(zeros(16), None).unwrap();
}

#[test]
fn explicit_settings_and_default_zero_keep_auto_complete_off() {
    let (_root, repo) = repository("off", "max_batch_size = 0\n");
    let model = manager(repo, 4).get("off", None).unwrap();
    assert_eq!(model.config().max_batch_size, Some(0));
    assert!(model.config().dynamic_batching.is_none());
    model.infer_blocking(zeros(64), None).unwrap();

    // max_batch_size without [dynamic_batching]: its choice, no batcher added.
    let (_root, repo) = repository("plain", "max_batch_size = 2\n");
    let model = manager(repo, 4).get("plain", None).unwrap();
    assert_eq!(model.config().max_batch_size, Some(2));
    assert!(model.config().dynamic_batching.is_none());

    let (_root, repo) = repository("bare", "");
    let model = manager(repo, 0).get("bare", None).unwrap();
    assert_eq!(model.config().max_batch_size, Some(0));
    assert!(model.config().dynamic_batching.is_none());
    model.infer_blocking(zeros(64), None).unwrap();
}

#[test]
fn a_model_with_a_fixed_first_dimension_is_not_auto_batched() {
    let root = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/add_fixed");
    let version = root.path().join("add_fixed").join("1");
    std::fs::create_dir_all(&version).unwrap();
    std::fs::copy(fixture.join("1/model.onnx"), version.join("model.onnx")).unwrap();
    let models = manager(Repository::open(root.path()).unwrap(), 4);
    let model = models.get("add_fixed", None).unwrap();
    assert_eq!(model.config().max_batch_size, Some(0));
    assert!(model.config().dynamic_batching.is_none());
}

/// What the idle-memory thread watches: when any served version last answered.
#[test]
fn the_manager_knows_when_a_request_was_last_answered() {
    let (_root, repo) = repository("plain", "");
    let models = Arc::new(ModelManager::new(repo, LoadDefaults::new(Backend::Tract)));
    models.start_loading().unwrap();
    wait_loaded(&models);
    assert_eq!(models.last_inference_ms(), 0, "nothing answered yet");
    idle::spawn_trim(&models).unwrap();
    let before = stats::now_ms();
    let model = models.get("plain", None).unwrap();
    model.infer_blocking(zeros(1), None).unwrap();
    let last = models.last_inference_ms();
    assert!(
        before <= last && last <= stats::now_ms(),
        "{before} <= {last}"
    );
}

/// An unset `instances` is the engine's default, which the loaded config reports.
#[test]
fn the_loaded_config_reports_the_instances_chosen() {
    let (_root, repo) = repository("plain", "");
    let (_root2, repo2) = repository("two", "instances = 2\n");
    for (repo, name, want) in [(repo, "plain", 1), (repo2, "two", 2)] {
        let models = ModelManager::new(repo, LoadDefaults::new(Backend::Tract));
        models.start_loading().unwrap();
        wait_loaded(&models);
        let model = models.get(name, None).unwrap();
        assert_eq!(model.config().instances, Some(want), "{name}");
    }
}
