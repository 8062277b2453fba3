//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`: seeds and what fuzzing kept)
//! and every committed crash input (`fuzz/artifacts/<target>/`) through the library's fuzz
//! targets (`scoria::fuzzing`), the functions `scripts/fuzz` runs under libFuzzer. Each input
//! must be answered without a panic; the test names every file that panicked.

use scoria::fuzzing::{target, TARGETS};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(name: &str) {
    let run = target(name)
        .unwrap_or_else(|| panic!("no fuzz target '{name}' in scoria::fuzzing::TARGETS"))
        .run;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let corpus = files(&root.join("corpus").join(name));
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{name}/ is missing or empty: every target needs its seeds"
    );
    let artifacts = files(&root.join("artifacts").join(name));
    let mut panicked = Vec::new();
    for file in corpus.iter().chain(&artifacts) {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            panicked.push(
                file.strip_prefix(&root)
                    .unwrap_or(file)
                    .display()
                    .to_string(),
            );
        }
    }
    assert!(
        panicked.is_empty(),
        "{name}: {} of {} inputs panicked: {}",
        panicked.len(),
        corpus.len() + artifacts.len(),
        panicked.join(", ")
    );
}

macro_rules! replay_tests {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { replay(stringify!($name)); })*

        /// Every target has a replay test here (so none can be added without one).
        #[test]
        fn every_target_is_replayed() {
            let replayed = [$(stringify!($name)),*];
            for t in TARGETS {
                assert!(replayed.contains(&t.name), "add '{}' to replay_tests!", t.name);
            }
        }
    };
}

replay_tests!(
    v2_json,
    v2_binary,
    http_body,
    config_toml,
    meta_toml,
    mqtt_request,
    mqtt_desired,
    iothub,
    hook_tensors,
    onnx_tract,
    onnx_ort,
    onnx_opencl,
);
