//! Real-process tests of `scoria bench` and `scoria runs`: in-process runs on the sample
//! digits model, `--url` runs against a real `scoria serve` on 127.0.0.1 (JSON and binary),
//! the run history read back, and the failures (unreachable URL, bad input, usage).

mod common;

use common::{assert_no_panic, copy_dir, repo_with, root, scoria_command, Server};
use serde_json::Value;
use std::io::Read;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Longest any one bench command here may take (debug build, busy machine).
const COMMAND_LIMIT: Duration = Duration::from_secs(120);

fn workspace() -> TempDir {
    tempfile::Builder::new()
        .prefix("scoria-bench-ws-")
        .tempdir()
        .expect("temp dir")
}

/// Runs scoria with `args` under a time limit (killed past it); asserts it did not panic.
fn scoria(args: &[&str], limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = scoria_command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn scoria");
    let mut pipes = (child.stdout.take(), child.stderr.take());
    let read = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out_reader = read(pipes.0.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err_reader = read(pipes.1.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for scoria") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("scoria {args:?} ran past {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let out = Output {
        status,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    };
    assert_no_panic(&String::from_utf8_lossy(&out.stderr));
    (out, elapsed)
}

/// Asserts exit 0 and returns stdout.
#[track_caller]
fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "expected success\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Asserts exit 1 with exactly one stderr line, `error: ...` containing `needle`.
#[track_caller]
fn fails(out: &Output, needle: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1; stderr:\n{err}"
    );
    assert_eq!(err.lines().count(), 1, "expected one line:\n{err}");
    assert!(
        err.starts_with("error: ") && err.contains(needle),
        "{err:?} lacks {needle:?}"
    );
    err
}

fn json_of(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

/// `--workspace WS --models <repo>/models` and then `rest`.
fn in_workspace<'a>(ws: &'a Path, models: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let ws = ws.to_str().expect("utf-8 temp path");
    let mut args = vec!["--workspace", ws, "--models", models];
    args.extend_from_slice(rest);
    args
}

/// Checks one `bench --json` result and returns its run id.
#[track_caller]
fn check_result(v: &Value, requests: u64, mode: &str) -> String {
    let r = &v["results"];
    assert_eq!(r["requests"], requests, "{v:#}");
    assert_eq!(r["errors"], 0, "{v:#}");
    assert_eq!(r["inferences"], requests, "{v:#}");
    assert!(
        r["throughput"]["requests_per_s"].as_f64().unwrap() > 0.0,
        "{v:#}"
    );
    assert!(r["throughput"]["inferences_per_s"].as_f64().unwrap() > 0.0);
    let lat = &r["latency_ms"];
    let p = |k: &str| lat[k].as_f64().unwrap_or(-1.0);
    assert!(0.0 < p("p50") && p("p50") <= p("p90") && p("p90") <= p("p99") && p("p99") <= p("max"));
    assert_eq!(v["config"]["mode"], mode);
    assert_eq!(v["config"]["model"], "digits");
    assert_eq!(v["config"]["version"], 1);
    v["run_id"].as_str().expect("a run id").to_string()
}

#[test]
fn in_process_run_is_recorded_and_read_back() {
    let ws = workspace();
    let models = root().join("models");
    let models = models.to_str().unwrap();
    let bench = [
        "bench",
        "--model",
        "digits",
        "--requests",
        "50",
        "--concurrency",
        "2",
        "--warmup",
        "200ms",
        "--json",
    ];
    let (out, _) = scoria(&in_workspace(ws.path(), models, &bench), COMMAND_LIMIT);
    let v = json_of(&ok(&out));
    let id = check_result(&v, 50, "in-process");
    assert_eq!(v["config"]["concurrency"], 2);
    assert_eq!(v["config"]["backend"], "tract");
    assert_eq!(
        v["config"]["inputs"][0]["shape"],
        serde_json::json!([1, 64])
    );

    let run_dir = ws.path().join("runs").join(&id);
    for file in [
        "command.txt",
        "config.json",
        "environment.json",
        "results.json",
        "log.txt",
    ] {
        assert!(
            run_dir.join(file).is_file(),
            "{file} missing in {}",
            run_dir.display()
        );
    }
    // Only the run folder: nothing temporary left behind.
    assert_eq!(
        std::fs::read_dir(ws.path().join("runs")).unwrap().count(),
        1
    );

    let (out, _) = scoria(
        &in_workspace(ws.path(), models, &["runs", "list"]),
        COMMAND_LIMIT,
    );
    let table = ok(&out);
    let row = table
        .lines()
        .find(|l| l.starts_with(&id))
        .expect("the run's row");
    assert!(
        row.contains("digits:1") && row.contains("in-process"),
        "{table}"
    );
    assert!(table.lines().next().unwrap().contains("P99"), "{table}");

    let (out, _) = scoria(
        &in_workspace(ws.path(), models, &["runs", "list", "--json"]),
        COMMAND_LIMIT,
    );
    let list = json_of(&ok(&out));
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list:#}");
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["requests"], 50);

    let (out, _) = scoria(
        &in_workspace(ws.path(), models, &["runs", "show", &id, "--json"]),
        COMMAND_LIMIT,
    );
    let shown = json_of(&ok(&out));
    assert_eq!(shown["id"], id.as_str());
    assert_eq!(shown["results"], v["results"]);
    assert_eq!(shown["config"], v["config"]);
    assert!(shown["command"]
        .as_str()
        .unwrap()
        .contains("bench --model digits"));
    assert!(shown["environment"]["cpu"]["count"].as_u64().unwrap() >= 1);
    assert_eq!(
        shown["environment"]["scoria"]["version"],
        env!("CARGO_PKG_VERSION")
    );
    assert!(shown["log"].as_str().unwrap().contains("loaded digits:1"));
    assert!(shown["config"]["model_config"]["config.toml"]
        .as_str()
        .unwrap()
        .contains("score.rhai"));

    let (out, _) = scoria(
        &in_workspace(ws.path(), models, &["runs", "show", "latest"]),
        COMMAND_LIMIT,
    );
    assert!(ok(&out).contains(&id));
    // Newer folders that are not readable runs (empty, or a record that is not an object)
    // are skipped by `latest`, as `runs list` skips them.
    let runs = ws.path().join("runs");
    std::fs::create_dir(runs.join("zz-not-a-run")).unwrap();
    copy_dir(&runs.join(&id), &runs.join("zz-not-a-run-either"));
    std::fs::write(runs.join("zz-not-a-run-either/results.json"), "[]").unwrap();
    let (out, _) = scoria(
        &in_workspace(ws.path(), models, &["runs", "show", "latest"]),
        COMMAND_LIMIT,
    );
    assert!(ok(&out).contains(&id));
    let (out, _) = scoria(
        &in_workspace(ws.path(), models, &["runs", "list", "--json"]),
        COMMAND_LIMIT,
    );
    assert_eq!(json_of(&ok(&out)).as_array().unwrap().len(), 1);
    let (out, _) = scoria(
        &in_workspace(ws.path(), models, &["runs", "show", "nope"]),
        COMMAND_LIMIT,
    );
    fails(&out, "no run 'nope'");
}

#[test]
fn url_runs_against_a_real_server_in_json_and_binary() {
    let server = Server::start(repo_with(&["digits"]), &[]);
    let url = server.url("");
    let ws = workspace();
    let models = root().join("models");
    let models = models.to_str().unwrap();
    let mut ids = Vec::new();
    for protocol in ["json", "binary"] {
        let bench = [
            "bench",
            "--model",
            "digits",
            "--url",
            &url,
            "--protocol",
            protocol,
            "--requests",
            "30",
            "--concurrency",
            "3",
            "--warmup",
            "0s",
            "--json",
        ];
        let (out, _) = scoria(&in_workspace(ws.path(), models, &bench), COMMAND_LIMIT);
        let v = json_of(&ok(&out));
        ids.push(check_result(&v, 30, "http"));
        assert_eq!(v["config"]["protocol"], protocol);
        assert_eq!(v["config"]["url"], url.as_str());
        assert_eq!(v["config"]["backend"], "tract");
        assert_eq!(v["config"]["model_config"]["server"]["name"], "digits");
    }
    // The traffic reached the server: 2 × (30 measured + 1 probe) inferences at least.
    let (status, stats) = server.get("/v2/models/digits/stats");
    assert_eq!(status, 200);
    let count = stats["model_stats"][0]["inference_count"].as_u64().unwrap();
    assert!(count >= 62, "{stats}");

    let (out, _) = scoria(
        &in_workspace(ws.path(), models, &["runs", "list"]),
        COMMAND_LIMIT,
    );
    let table = ok(&out);
    assert!(
        table.contains("http/json") && table.contains("http/binary"),
        "{table}"
    );
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert!(
        rows[0].starts_with(&ids[0]) && rows[1].starts_with(&ids[1]),
        "{table}"
    );
}

/// `--url grpc://` drives the gRPC front end (raw and typed contents) with one connection per
/// worker; the server's metrics see the calls on the gRPC route, and the run lists as
/// `grpc/<protocol>`. A gRPC URL with a path is a usage error; an unreachable one fails fast.
#[test]
fn grpc_url_runs_against_a_real_server() {
    let server = Server::start(repo_with(&["digits"]), &[]);
    let url = format!(
        "grpc://{}",
        server.grpc_addr.as_deref().expect("gRPC address")
    );
    let ws = workspace();
    let models = root().join("models");
    let models = models.to_str().unwrap();
    for protocol in ["binary", "json"] {
        let bench = [
            "bench",
            "--model",
            "digits",
            "--url",
            &url,
            "--protocol",
            protocol,
            "--requests",
            "25",
            "--concurrency",
            "2",
            "--warmup",
            "0s",
            "--json",
        ];
        let (out, _) = scoria(&in_workspace(ws.path(), models, &bench), COMMAND_LIMIT);
        let v = json_of(&ok(&out));
        check_result(&v, 25, "grpc");
        assert_eq!(v["config"]["protocol"], protocol);
        assert_eq!(v["config"]["backend"], "tract");
        assert_eq!(v["config"]["model_config"]["server"]["backend"], "tract");
    }
    let metrics = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let calls: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("scoria_requests_total") && l.contains(r#"route="grpc/ModelInfer""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        calls >= 52.0,
        "2 × (25 measured + 1 probe) gRPC calls expected:\n{metrics}"
    );
    let (out, _) = scoria(
        &in_workspace(ws.path(), models, &["runs", "list"]),
        COMMAND_LIMIT,
    );
    let table = ok(&out);
    assert!(
        table.contains("grpc/binary") && table.contains("grpc/json"),
        "{table}"
    );

    let (out, _) = scoria(
        &["bench", "--model", "digits", "--url", &format!("{url}/v2")],
        COMMAND_LIMIT,
    );
    let usage = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{usage}");
    assert!(
        usage.contains("grpc://HOST[:PORT], with no path"),
        "{usage}"
    );
    let (out, elapsed) = scoria(
        &[
            "bench",
            "--model",
            "digits",
            "--url",
            "grpc://127.0.0.1:1",
            "--requests",
            "5",
            "--no-record",
        ],
        Duration::from_secs(30),
    );
    fails(&out, "127.0.0.1:1");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
}

#[test]
fn url_errors_are_counted_with_their_messages() {
    let server = Server::start(repo_with(&["digits"]), &[]);
    let url = server.url("");
    let ws = workspace();
    let ws_path = ws.path().to_str().unwrap().to_string();
    let bench = std::thread::spawn(move || {
        let args = [
            "--workspace",
            &ws_path,
            "bench",
            "--model",
            "digits",
            "--url",
            &url,
            "--duration",
            "4s",
            "--warmup",
            "0s",
            "--json",
            "--no-record",
        ];
        scoria(&args, COMMAND_LIMIT).0
    });
    // Once the bench is under way, unload the model: the rest of its requests get 503.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, stats) = server.get("/v2/models/digits/stats");
        if stats["model_stats"][0]["inference_count"]
            .as_u64()
            .unwrap_or(0)
            >= 5
        {
            break;
        }
        assert!(Instant::now() < deadline, "the bench sent no requests");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, body) = server.post("/v2/repository/models/digits/unload", "");
    assert_eq!(status, 200, "{body}");
    let out = bench.join().expect("bench thread");
    let v = json_of(&ok(&out));
    let r = &v["results"];
    assert!(r["errors"].as_u64().unwrap() > 0, "{v:#}");
    assert!(
        r["requests"].as_u64().unwrap() > r["errors"].as_u64().unwrap(),
        "{v:#}"
    );
    let first = r["error_messages"][0]["message"].as_str().unwrap();
    assert!(
        first.starts_with("HTTP 503") && first.contains("unloaded"),
        "{first}"
    );
    assert!(v["run_id"].is_null());
    assert!(!ws.path().join("runs").exists());
}

#[test]
fn unreachable_url_fails_fast_in_one_line() {
    let ws = workspace();
    let ws_path = ws.path().to_str().unwrap();
    let args = [
        "--workspace",
        ws_path,
        "bench",
        "--model",
        "digits",
        "--url",
        "http://127.0.0.1:1",
        "--requests",
        "5",
    ];
    let (out, elapsed) = scoria(&args, Duration::from_secs(30));
    fails(&out, "127.0.0.1:1");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert!(
        !ws.path().join("runs").exists(),
        "a failed bench recorded a run"
    );
}

#[test]
fn bad_input_and_usage_errors() {
    let ws = workspace();
    let models = root().join("models");
    let models = models.to_str().unwrap();
    let input = ws.path().join("bad.json");
    std::fs::write(&input, r#"{"data": [1, 2, 3]}"#).unwrap();
    let bench = [
        "bench",
        "--model",
        "digits",
        "--requests",
        "5",
        "--input",
        input.to_str().unwrap(),
    ];
    let (out, _) = scoria(&in_workspace(ws.path(), models, &bench), COMMAND_LIMIT);
    fails(&out, "does not fit");
    let bench = ["bench", "--model", "nope", "--requests", "5"];
    let (out, _) = scoria(&in_workspace(ws.path(), models, &bench), COMMAND_LIMIT);
    fails(&out, "nope");
    assert!(!ws.path().join("runs").exists());

    for usage in [
        &[
            "bench",
            "--model",
            "digits",
            "--requests",
            "5",
            "--duration",
            "1s",
        ][..],
        &["bench", "--model", "digits", "--concurrency", "0"],
        &["bench", "--model", "digits", "--duration", "0s"],
        &[
            "bench",
            "--model",
            "digits",
            "--url",
            "http://127.0.0.1:1",
            "--protocol",
            "xml",
        ],
        &["bench", "--requests", "5"],
        &["runs", "show"],
    ] {
        let (out, _) = scoria(&in_workspace(ws.path(), models, usage), COMMAND_LIMIT);
        assert_eq!(out.status.code(), Some(2), "{usage:?}");
    }
}

#[test]
fn a_killed_bench_leaves_no_run() {
    let ws = workspace();
    let models = root().join("models");
    let mut child = scoria_command()
        .arg("--workspace")
        .arg(ws.path())
        .arg("--models")
        .arg(&models)
        .args([
            "bench",
            "--model",
            "digits",
            "--duration",
            "60s",
            "--warmup",
            "0s",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn scoria bench");
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().expect("kill the bench");
    let _ = child.wait();
    let models = models.to_str().unwrap();
    let (out, _) = scoria(
        &in_workspace(ws.path(), models, &["runs", "list", "--json"]),
        COMMAND_LIMIT,
    );
    assert_eq!(json_of(&ok(&out)), serde_json::json!([]));
}
