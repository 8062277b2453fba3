//! The ort backend end to end, in real processes: with ONNX Runtime's library it serves and
//! predicts; without it (`ORT_DYLIB_PATH` naming a file that does not exist) each ort model
//! fails to load with one line naming the path and the command that installs the library,
//! while tract models in the same process keep serving.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tempfile::TempDir;

const MISSING: &str = "/nonexistent/scoria-test/libonnxruntime.so";

/// A repository with `digits` (tract, the default) and `digits_ort` (`backend = "ort"`).
fn repo() -> TempDir {
    let repo = repo_with(&["digits"]);
    copy_dir(&model_source("digits"), &repo.path().join("digits_ort"));
    prepend_config(repo.path(), "digits_ort", "backend = \"ort\"");
    repo
}

/// The library `scripts/fetch-onnxruntime` installed (the test command runs it first).
fn library() -> PathBuf {
    scoria::engine::ort::LibrarySearch {
        explicit: None,
        roots: vec![root()],
    }
    .find()
    .unwrap_or_else(|e| panic!("these tests run ONNX Runtime: {e}"))
}

fn input_file(dir: &Path) -> String {
    let path = dir.join("zero.json");
    std::fs::write(&path, json!({ "data": &DIGIT_ZERO[..] }).to_string()).expect("write input");
    path.to_string_lossy().into_owned()
}

fn predicted_label(stdout: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(stdout).expect("predict prints JSON");
    v["predictions"][0]["label"].clone()
}

#[test]
fn predict_without_the_library_fails_in_one_line() {
    let repo = repo();
    let work = tempfile::tempdir().expect("temp dir");
    let input = input_file(work.path());
    let models = repo.path().to_string_lossy().into_owned();
    let env = [("ORT_DYLIB_PATH", MISSING)];
    let predict = |args: &[&str]| {
        let mut all = vec!["--models", &models, "predict"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--input", &input]);
        run_cli(work.path(), &all, &env)
    };

    for args in [&["digits_ort"][..], &["digits", "--backend", "ort"][..]] {
        let out = predict(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: one error line:\n{stderr}");
        let line = errors[0];
        assert!(line.starts_with("error: "), "{line}");
        assert!(line.contains(MISSING), "names the path tried: {line}");
        assert!(line.contains("run scripts/fetch-onnxruntime"), "{line}");
    }

    // The tract model predicts under the very same settings.
    let out = predict(&["digits"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(predicted_label(&out.stdout), "0");
}

#[test]
fn server_keeps_serving_tract_models_without_the_library() {
    let repo = repo();
    let server = Server::start_at_with_env(
        repo.path(),
        &["--strict-readiness=false"],
        &[("ORT_DYLIB_PATH", MISSING)],
    );
    assert_eq!(server.get("/v2/health/ready").0, 200);
    assert_eq!(server.get("/v2/models/digits/ready").0, 200);
    let msg = assert_error(
        server.get("/v2/models/digits_ort/ready"),
        503,
        "run scripts/fetch-onnxruntime",
    );
    assert!(msg.contains(MISSING) && !msg.contains('\n'), "{msg}");

    let body = json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                                  "data": &DIGIT_ZERO[..]}]});
    let resp = server.infer_ok("digits", &body);
    assert_eq!(resp["outputs"][1]["data"], json!([0]), "{resp}");
    assert_error(
        server.post("/v2/models/digits_ort/infer", &body.to_string()),
        503,
        "ONNX Runtime",
    );
}

#[test]
fn ort_models_serve_and_predict() {
    let lib = library();
    let lib = lib.to_string_lossy();
    let repo = repo();
    let work = tempfile::tempdir().expect("temp dir");
    let input = input_file(work.path());
    let models = repo.path().to_string_lossy().into_owned();
    let out = run_cli(
        work.path(),
        &[
            "--models",
            &models,
            "predict",
            "digits_ort",
            "--input",
            &input,
        ],
        &[("ORT_DYLIB_PATH", &lib)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(predicted_label(&out.stdout), "0");

    // `--backend ort` makes ort the default for models whose config names none; the library
    // is found through SCORIA_ORT_LIBRARY too.
    let server = Server::start_at_with_env(
        repo.path(),
        &["--backend", "ort"],
        &[("SCORIA_ORT_LIBRARY", &lib)],
    );
    for model in ["digits", "digits_ort"] {
        let (status, meta) = server.get(&format!("/v2/models/{model}/config"));
        assert_eq!(status, 200, "{meta}");
        assert_eq!(meta["backend"], "ort", "{model}: {meta}");
        let body = json!({"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32",
                                      "data": [&DIGIT_ZERO[..], &DIGIT_ZERO[..]]}]});
        let resp = server.infer_ok(model, &body);
        assert_eq!(resp["outputs"][1]["data"], json!([0, 0]), "{model}: {resp}");
    }
}

#[test]
fn onnx_runtime_caches_inside_the_workspace() {
    let lib = library();
    let ws = tempfile::tempdir().expect("workspace");
    let home = tempfile::tempdir().expect("home");
    copy_dir(&model_source("digits"), &ws.path().join("models/digits"));
    prepend_config(&ws.path().join("models"), "digits", "backend = \"ort\"");
    let input = input_file(home.path());
    let out = scoria_command()
        .current_dir(ws.path())
        .args(["--workspace", ".", "predict", "digits", "--input", &input])
        .env_remove("XDG_CACHE_HOME")
        .env("HOME", home.path())
        .env("ORT_DYLIB_PATH", &lib)
        .output()
        .expect("run scoria");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&input).expect("remove input");
    let in_home: Vec<_> = std::fs::read_dir(home.path()).expect("home").collect();
    assert!(
        in_home.is_empty(),
        "ONNX Runtime wrote to $HOME: {in_home:?}"
    );
    // ONNX Runtime 1.31 may keep a device id under $XDG_CACHE_HOME/Microsoft (whether it does
    // depends on the machine); whatever it writes must be inside the workspace's `.cache`.
    let outside: Vec<_> = std::fs::read_dir(ws.path())
        .expect("workspace")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| n != "models" && n != ".cache")
        .collect();
    assert!(
        outside.is_empty(),
        "unexpected writes in the workspace: {outside:?}"
    );
}

/// ONNX Runtime takes one run at a time per session: concurrent requests to a one-instance
/// ort model wait for it, and Triton's statistics count that wait as queue time, not compute.
#[test]
fn waiting_for_a_busy_session_is_queue_time() {
    use std::io::{Read, Write};
    let lib = library();
    let repo = repo_with(&["resnet"]);
    // Unbatched (auto-complete would batch the 4 requests into one run).
    prepend_config(
        repo.path(),
        "resnet",
        "backend = \"ort\"\ninstances = 1\nmax_batch_size = 0",
    );
    append_config(repo.path(), "resnet", "[ort]\nintra_op_threads = 1");
    let lib = lib.to_string_lossy();
    let server = Server::start_at_with_env(repo.path(), &[], &[("ORT_DYLIB_PATH", &lib)]);
    // Binary tensor data: decoding takes no time, so the requests reach the session together.
    let header = json!({"inputs": [{"name": "input", "shape": [1, 3, 224, 224],
        "datatype": "FP32", "parameters": {"binary_data_size": 3 * 224 * 224 * 4}}]})
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(std::iter::repeat_n(0.5f32.to_le_bytes(), 3 * 224 * 224).flatten());
    let mut request = format!(
        "POST /v2/models/resnet/infer HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
         Inference-Header-Content-Length: {}\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        header.len(),
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let status_of = |mut conn: std::net::TcpStream| {
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).expect("read the answer");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    };
    // Every request but its last byte is on the server before any is complete, so the
    // requests reach the session together even on a loaded machine.
    let together = |clients: usize| {
        let (head, last) = request.split_at(request.len() - 1);
        let conns: Vec<_> = (0..clients)
            .map(|_| {
                let mut conn = std::net::TcpStream::connect(&server.addr).expect("connect");
                conn.write_all(head).expect("send");
                conn
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::thread::scope(|s| {
            for mut conn in conns {
                s.spawn(move || {
                    conn.write_all(last).expect("send");
                    status_of(conn);
                });
            }
        });
    };
    together(1);
    let stats = || {
        let (status, stats) = server.get("/v2/models/resnet/stats");
        assert_eq!(status, 200, "{stats}");
        let inference = stats["model_stats"][0]["inference_stats"].clone();
        let ns = |k: &str| inference[k]["ns"].as_u64().unwrap_or(0);
        let count = inference["success"]["count"].as_u64().unwrap_or(0);
        (count, ns("queue"), ns("compute_infer"), stats)
    };
    // Arriving together, 4 requests wait 0, 1, 2 and 3 runs: 1.5x their compute. Counting the
    // wait as compute leaves the queue near 0 in every round; a loaded machine may spread one
    // round's arrivals, so the best of three rounds decides.
    let clients = 4;
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let (count0, queue0, compute0, _) = stats();
        together(clients);
        let (count, queue, compute, stats) = stats();
        assert_eq!(count - count0, clients as u64, "{stats}");
        let (queue, compute) = (queue - queue0, compute - compute0);
        if queue * 4 >= compute {
            return;
        }
        rounds.push(format!("queue {queue} ns vs compute {compute} ns"));
    }
    panic!("waits were not counted as queue time: {rounds:?}");
}
