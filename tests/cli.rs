//! Real-process tests of the `scoria` command line: model register/list/show/delete, offline
//! predict, usage errors and environment variables, in temporary workspaces.

mod common;

use common::{copy_dir, model_source, prepend_config, repo_with, run_cli, DIGIT_ZERO};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Output;
use tempfile::TempDir;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and returns stdout.
#[track_caller]
fn ok(out: Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "expected success\nstdout:\n{}\nstderr:\n{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Asserts a runtime failure: exit 1 and exactly one stderr line, `error: ...` containing
/// `needle`. Returns that line.
#[track_caller]
fn fails(out: Output, needle: &str) -> String {
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1\nstdout:\n{}\nstderr:\n{err}",
        stdout(&out)
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected a one-line error, got:\n{err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(needle), "{err:?} lacks {needle:?}");
    lines[0].to_string()
}

/// Asserts a usage error: exit 2 with a message on stderr.
#[track_caller]
fn usage_error(out: Output, needle: &str) {
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2\nstderr:\n{err}"
    );
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    assert!(out.stdout.is_empty(), "usage error printed to stdout");
}

/// A fresh, empty directory (not even `models/`) to use as a workspace and working directory.
fn workspace() -> TempDir {
    tempfile::Builder::new()
        .prefix("scoria-ws-")
        .tempdir()
        .unwrap()
}

/// Runs scoria with `--workspace WS` in `WS`.
fn scoria(ws: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--workspace", ws.to_str().unwrap()];
    all.extend_from_slice(args);
    run_cli(ws, &all, &[])
}

/// Runs scoria on the model repository `repo`, in a scratch directory.
fn scoria_repo(repo: &Path, args: &[&str]) -> Output {
    let cwd = workspace();
    let mut all = vec!["--models", repo.to_str().unwrap()];
    all.extend_from_slice(args);
    run_cli(cwd.path(), &all, &[])
}

fn digits_onnx() -> PathBuf {
    model_source("digits").join("1/model.onnx")
}

/// Entries of `dir`, sorted (empty when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn sha256sum(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "sha256sum failed");
    stdout(&out)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

#[test]
fn register_records_versions_and_metadata() {
    let ws = workspace();
    let src = digits_onnx();
    let out = ok(scoria(
        ws.path(),
        &[
            "model",
            "register",
            "mnist",
            "--path",
            src.to_str().unwrap(),
            "--tag",
            "k=v",
            "--tag",
            "a=b",
            "--description",
            "first cut",
        ],
    ));
    assert!(out.contains("mnist:1"), "{out}");
    let want_sha = sha256sum(&src);
    assert!(out.contains(&want_sha), "{out}");

    let model_dir = ws.path().join("models/mnist");
    let v1 = model_dir.join("1");
    assert_eq!(
        std::fs::read(v1.join("model.onnx")).unwrap(),
        std::fs::read(&src).unwrap(),
        "the registered copy differs from the source"
    );
    let meta: toml::Table = std::fs::read_to_string(v1.join("meta.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(meta["sha256"].as_str(), Some(want_sha.as_str()));
    assert_eq!(
        meta["size"].as_integer(),
        Some(std::fs::metadata(&src).unwrap().len() as i64)
    );
    let created = meta["created"].as_str().unwrap();
    assert!(
        created.len() == 20 && created.as_bytes()[10] == b'T' && created.ends_with('Z'),
        "created is not RFC 3339 UTC: {created}"
    );
    assert_eq!(meta["description"].as_str(), Some("first cut"));
    let tags = meta["tags"].as_table().unwrap();
    assert_eq!(tags.len(), 2, "{tags:?}");
    assert_eq!(tags["k"].as_str(), Some("v"));
    assert_eq!(tags["a"].as_str(), Some("b"));
    assert!(meta["source"].as_str().unwrap().ends_with("model.onnx"));

    // The second registration is version 2; no temporary folders are left behind.
    let out = ok(scoria(
        ws.path(),
        &[
            "model",
            "register",
            "mnist",
            "--path",
            src.to_str().unwrap(),
        ],
    ));
    assert!(out.contains("mnist:2"), "{out}");
    assert_eq!(entries(&model_dir), ["1", "2"]);
    let meta2: toml::Table = std::fs::read_to_string(model_dir.join("2/meta.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(meta2["sha256"].as_str(), Some(want_sha.as_str()));
    assert!(meta2.get("description").is_none(), "{meta2:?}");
    assert_eq!(meta2["tags"].as_table().map(|t| t.len()), Some(0));

    // The registered model lists, shows its record, and predicts.
    let list = ok(scoria(ws.path(), &["model", "list"]));
    let row = list.lines().find(|l| l.starts_with("mnist")).unwrap();
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["mnist", "1,2", "2", "tract", "ok"]
    );
    let show = ok(scoria(ws.path(), &["model", "show", "mnist:1", "--json"]));
    let show: Value = serde_json::from_str(&show).unwrap();
    assert_eq!(show["version"], 1);
    assert_eq!(show["registration"]["sha256"], want_sha.as_str());
    assert_eq!(show["registration"]["tags"], json!({"a": "b", "k": "v"}));
}

#[test]
fn register_rejects_non_onnx_files_and_writes_nothing() {
    let ws = workspace();
    let files = workspace();
    let garbage = files.path().join("garbage.onnx");
    std::fs::write(&garbage, b"\x08\x07\xff\xfe\x00garbage bytes\x9a\x9b\x9c").unwrap();
    let empty = files.path().join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    let text = files.path().join("notes.txt");
    std::fs::write(&text, "this is a text file,\nnot a model\n").unwrap();
    let dir = files.path().join("adir.onnx");
    std::fs::create_dir(&dir).unwrap();

    for path in [&garbage, &empty, &text] {
        let line = fails(
            scoria(
                ws.path(),
                &["model", "register", "m", "--path", path.to_str().unwrap()],
            ),
            "is not an ONNX model",
        );
        assert!(
            line.contains(path.file_name().unwrap().to_str().unwrap()),
            "{line}"
        );
        assert!(
            !ws.path().join("models/m").exists(),
            "a failed registration created the model folder"
        );
    }
    fails(
        scoria(
            ws.path(),
            &["model", "register", "m", "--path", dir.to_str().unwrap()],
        ),
        "not a regular file",
    );
    assert!(!ws.path().join("models/m").exists());

    // Against an existing model: the version count is unchanged, nothing temporary remains.
    let src = digits_onnx();
    ok(scoria(
        ws.path(),
        &["model", "register", "m", "--path", src.to_str().unwrap()],
    ));
    for path in [&garbage, &empty, &text] {
        fails(
            scoria(
                ws.path(),
                &["model", "register", "m", "--path", path.to_str().unwrap()],
            ),
            "is not an ONNX model",
        );
        assert_eq!(entries(&ws.path().join("models/m")), ["1"]);
    }
    assert_eq!(
        entries(&ws.path().join("models/m/1")),
        ["meta.toml", "model.onnx"]
    );
}

#[test]
fn register_rejects_bad_names_and_missing_paths() {
    let ws = workspace();
    let src = digits_onnx();
    for name in ["../x", "a/b", ".hidden", "", "a b", "x:1"] {
        usage_error(
            scoria(
                ws.path(),
                &["model", "register", name, "--path", src.to_str().unwrap()],
            ),
            "invalid model name",
        );
        assert!(
            entries(&ws.path().join("models")).is_empty(),
            "registering {name:?} wrote {:?}",
            entries(&ws.path().join("models"))
        );
        assert!(
            entries(ws.path()).iter().all(|e| e == "models"),
            "registering {name:?} wrote outside the repository: {:?}",
            entries(ws.path())
        );
    }
    let missing = ws.path().join("nowhere/model.onnx");
    fails(
        scoria(
            ws.path(),
            &[
                "model",
                "register",
                "m",
                "--path",
                missing.to_str().unwrap(),
            ],
        ),
        "nowhere/model.onnx",
    );
    assert!(!ws.path().join("models/m").exists());
    // A bad tag is a usage error.
    usage_error(
        scoria(
            ws.path(),
            &[
                "model",
                "register",
                "m",
                "--path",
                src.to_str().unwrap(),
                "--tag",
                "novalue",
            ],
        ),
        "KEY=VALUE",
    );
    assert!(!ws.path().join("models/m").exists());
}

#[test]
fn register_installs_a_checked_hook() {
    let ws = workspace();
    let files = workspace();
    let src = digits_onnx();
    let write = |name: &str, text: &str| {
        let p = files.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let syntax = write("syntax.rhai", "fn run(input) {\n  input +\n}\n");
    let no_run = write("norun.rhai", "fn predict(x) { x }\n");
    let first = write(
        "first.rhai",
        "fn run(input) { #{ hook: \"first\", rows: input.data.len() } }\n",
    );
    let second = write(
        "second.rhai",
        "fn run(input) { #{ hook: \"second\", label: model.predict(#{ input: tensor(input.data, \"FP32\") }).label.to_array() } }\n",
    );
    let register = |hook: &str| {
        scoria(
            ws.path(),
            &[
                "model",
                "register",
                "m",
                "--path",
                src.to_str().unwrap(),
                "--hook",
                hook,
            ],
        )
    };

    // A hook that does not compile or lacks `fn run` is refused before anything is written.
    let line = fails(register(&syntax), "syntax.rhai:");
    assert!(line.contains("not registered"), "{line}");
    fails(register(&no_run), "no `fn run(input)`");
    fails(register("/no/such/hook.rhai"), "hook.rhai");
    // An endless "file" is cut off, not read into memory.
    fails(register("/dev/zero"), "larger than 1048576 bytes");
    assert!(
        !ws.path().join("models/m").exists(),
        "a refused hook wrote something"
    );

    // Installed as score.rhai and named in a new config.toml; recorded with the version.
    let out = ok(register(&first));
    assert!(
        out.contains("registered m:1") && out.contains("hook score.rhai"),
        "{out}"
    );
    let model_dir = ws.path().join("models/m");
    assert_eq!(
        std::fs::read_to_string(model_dir.join("score.rhai")).unwrap(),
        std::fs::read_to_string(&first).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(model_dir.join("config.toml")).unwrap(),
        "hook = \"score.rhai\"\n"
    );
    let meta = std::fs::read_to_string(model_dir.join("1/meta.toml")).unwrap();
    assert!(meta.contains("hook = \"score.rhai\""), "{meta}");
    assert!(
        meta.contains(&format!(
            "hook_sha256 = \"{}\"",
            sha256sum(Path::new(&first))
        )),
        "{meta}"
    );
    let input = write(
        "in.json",
        r#"{"data": [[0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0]]}"#,
    );
    let out = ok(scoria(ws.path(), &["predict", "m", "--input", &input]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v, serde_json::json!({"hook": "first", "rows": 1}));
    fails(
        scoria(ws.path(), &["predict", "m", "--input", "/dev/zero"]),
        "cannot read /dev/zero: larger than",
    );

    // A config.toml that names no hook keeps its settings and gains the hook line; the next
    // registration replaces the script for every version.
    std::fs::write(
        model_dir.join("config.toml"),
        "description = \"digits again\"\n\n[tags]\nowner = \"ml\"\n",
    )
    .unwrap();
    ok(register(&second));
    let config = std::fs::read_to_string(model_dir.join("config.toml")).unwrap();
    assert_eq!(
        config,
        "hook = \"score.rhai\"\ndescription = \"digits again\"\n\n[tags]\nowner = \"ml\"\n"
    );
    let out = ok(scoria(ws.path(), &["predict", "m:1", "--input", &input]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["hook"], "second", "{out}");
    assert_eq!(v["label"], serde_json::json!([0]), "{out}");

    // A config.toml that names its own hook file: the script goes there, config untouched.
    std::fs::write(model_dir.join("config.toml"), "hook = \"custom.rhai\"\n").unwrap();
    let out = ok(register(&first));
    assert!(
        out.contains("registered m:3") && out.contains("hook custom.rhai"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(model_dir.join("custom.rhai")).unwrap(),
        std::fs::read_to_string(&first).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(model_dir.join("config.toml")).unwrap(),
        "hook = \"custom.rhai\"\n"
    );
    // No temporary files are left in the model folder.
    let left = entries(&model_dir);
    assert_eq!(
        left,
        ["1", "2", "3", "config.toml", "custom.rhai", "score.rhai"],
        "{left:?}"
    );
}

#[test]
fn list_shows_every_model_and_failures() {
    let repo = repo_with(&["digits", "lenet"]);
    let broken = repo.path().join("broken/1");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("model.onnx"), b"\xffgarbage\x00").unwrap();
    copy_dir(&model_source("lenet"), &repo.path().join("badconfig"));
    prepend_config(repo.path(), "badconfig", "instancez = 2");
    copy_dir(&model_source("lenet"), &repo.path().join("nohook"));
    std::fs::remove_file(repo.path().join("nohook/score.rhai")).unwrap();
    copy_dir(&model_source("lenet"), &repo.path().join("nopolicy"));
    prepend_config(
        repo.path(),
        "nopolicy",
        "version_policy = { specific = [7] }",
    );

    let table = ok(scoria_repo(repo.path(), &["model", "list"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "VERSIONS", "LATEST", "BACKEND", "STATUS"],
        "{table}"
    );
    assert_eq!(lines.len(), 7, "{table}");
    let row = |name: &str| -> &str {
        lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"))
    };
    for name in ["digits", "lenet"] {
        assert_eq!(
            row(name).split_whitespace().collect::<Vec<_>>(),
            [name, "1", "1", "tract", "ok"]
        );
    }
    let b = row("broken");
    assert!(
        b.contains("failed: version 1:") && b.contains("is not an ONNX model"),
        "{b}"
    );
    let c = row("badconfig");
    assert!(
        c.contains("failed:") && c.contains("config.toml") && c.contains("instancez"),
        "{c}"
    );
    // A hook that cannot load and a policy that selects nothing are failures too.
    let h = row("nohook");
    assert!(
        h.contains("failed: score hook") && h.contains("score.rhai"),
        "{h}"
    );
    let p = row("nopolicy");
    assert!(
        p.contains("failed: no version to serve: [version_policy]") && p.contains("(1)"),
        "{p}"
    );

    let json: Value =
        serde_json::from_str(&ok(scoria_repo(repo.path(), &["model", "list", "--json"]))).unwrap();
    let items = json.as_array().unwrap();
    let names: Vec<&str> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "badconfig",
            "broken",
            "digits",
            "lenet",
            "nohook",
            "nopolicy"
        ]
    );
    let item = |n: &str| items.iter().find(|i| i["name"] == n).unwrap();
    assert_eq!(item("digits")["status"], "ok");
    assert_eq!(item("digits")["versions"], json!([1]));
    assert_eq!(item("digits")["latest"], 1);
    assert_eq!(item("digits")["backend"], "tract");
    assert_eq!(item("broken")["status"], "failed");
    // predict picks the version `serve` would; a policy that selects none says so.
    fails(
        scoria_repo(repo.path(), &["predict", "nopolicy", "--input", "-"]),
        "has no version to serve",
    );
    assert!(item("broken")["error"]
        .as_str()
        .unwrap()
        .contains("is not an ONNX model"));
    assert!(item("badconfig")["error"]
        .as_str()
        .unwrap()
        .contains("instancez"));

    // An empty repository lists only the header; a missing one is a runtime error.
    let empty = workspace();
    let table = ok(scoria_repo(empty.path(), &["model", "list"]));
    assert_eq!(table.lines().count(), 1, "{table}");
    assert_eq!(
        serde_json::from_str::<Value>(&ok(scoria_repo(empty.path(), &["model", "list", "--json"])))
            .unwrap(),
        json!([])
    );
    fails(
        scoria_repo(&empty.path().join("missing"), &["model", "list"]),
        "cannot open the model repository",
    );
}

#[test]
fn show_prints_inputs_and_outputs() {
    let repo = repo_with(&["digits"]);
    for reference in ["digits", "digits:1"] {
        let text = ok(scoria_repo(repo.path(), &["model", "show", reference]));
        let line = |name: &str| {
            text.lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .unwrap_or_else(|| panic!("no line for {name}:\n{text}"))
                .to_string()
        };
        assert!(text.contains("name:         digits"), "{text}");
        assert!(
            text.contains("inputs:") && text.contains("outputs:"),
            "{text}"
        );
        let input = line("input");
        assert!(
            input.contains("FP32") && input.contains("[-1, 64]"),
            "{input}"
        );
        let probs = line("probabilities");
        assert!(
            probs.contains("FP32") && probs.contains("[-1, 10]"),
            "{probs}"
        );
        let label = line("label");
        assert!(label.contains("INT64") && label.contains("[-1]"), "{label}");
    }
    let json: Value = serde_json::from_str(&ok(scoria_repo(
        repo.path(),
        &["model", "show", "digits", "--json"],
    )))
    .unwrap();
    assert_eq!(json["name"], "digits");
    assert_eq!(json["version"], 1);
    assert_eq!(
        json["inputs"],
        json!([{"name": "input", "datatype": "FP32", "shape": [-1, 64]}])
    );
    assert_eq!(
        json["outputs"][1],
        json!({"name": "label", "datatype": "INT64", "shape": [-1]})
    );
    // The config as served: digits sets no max_batch_size and batches on dimension 0, so
    // auto-complete gives it the default and the dynamic batcher.
    assert_eq!(json["max_batch_size"], 4, "{json}");
    assert_eq!(json["dynamic_batching"]["max_queue_delay_us"], 0, "{json}");
    let text = ok(scoria_repo(repo.path(), &["model", "show", "digits"]));
    assert!(text.contains("max batch:    4"), "{text}");
    assert!(text.contains("batching:     dynamic"), "{text}");
    let off = |extra: &[&str]| -> Value {
        let mut args = vec!["model", "show", "digits", "--json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&ok(scoria_repo(repo.path(), &args))).unwrap()
    };
    let json = off(&["--default-max-batch-size", "0"]);
    assert_eq!(json["max_batch_size"], 0, "{json}");
    assert_eq!(json["dynamic_batching"], Value::Null, "{json}");
    assert_eq!(
        off(&["--default-max-batch-size", "32"])["max_batch_size"],
        32
    );

    fails(
        scoria_repo(repo.path(), &["model", "show", "digits:9"]),
        "model 'digits' has no version 9",
    );
    fails(
        scoria_repo(repo.path(), &["model", "show", "nope"]),
        "no model 'nope'",
    );
    usage_error(
        scoria_repo(repo.path(), &["model", "show", "digits:x"]),
        "version 'x' is not a positive integer",
    );
    usage_error(
        scoria_repo(repo.path(), &["model", "show", "../digits"]),
        "invalid model name",
    );
    usage_error(scoria_repo(repo.path(), &["model", "show"]), "NAME");
}

#[test]
fn delete_removes_one_version() {
    let ws = workspace();
    let src = digits_onnx();
    for _ in 0..2 {
        ok(scoria(
            ws.path(),
            &["model", "register", "m", "--path", src.to_str().unwrap()],
        ));
    }
    let model_dir = ws.path().join("models/m");
    assert_eq!(entries(&model_dir), ["1", "2"]);

    let out = ok(scoria(ws.path(), &["model", "delete", "m:1"]));
    assert!(out.contains("deleted m:1"), "{out}");
    assert_eq!(entries(&model_dir), ["2"], "delete left something behind");
    fails(
        scoria(ws.path(), &["model", "delete", "m:1"]),
        "model 'm' has no version 1",
    );
    usage_error(
        scoria(ws.path(), &["model", "delete", "m"]),
        "name the version to delete, as m:VERSION",
    );
    fails(
        scoria(ws.path(), &["model", "delete", "other:1"]),
        "no model 'other'",
    );
    usage_error(scoria(ws.path(), &["model", "delete", "m:x"]), "m:x");
    assert_eq!(entries(&model_dir), ["2"]);

    // The next registration continues after the highest version.
    let out = ok(scoria(
        ws.path(),
        &["model", "register", "m", "--path", src.to_str().unwrap()],
    ));
    assert!(out.contains("m:3"), "{out}");
    ok(scoria(ws.path(), &["model", "delete", "m:2"]));
    assert_eq!(entries(&model_dir), ["3"]);
}

#[test]
fn predict_runs_offline() {
    // The bare model, without a score hook or other settings: the hookless predict path.
    let repo = repo_with(&["digits"]);
    std::fs::write(repo.path().join("digits/config.toml"), "").unwrap();
    let _ = std::fs::remove_file(repo.path().join("digits/score.rhai"));
    let files = workspace();
    let write = |name: &str, body: &Value| -> String {
        let p = files.path().join(name);
        std::fs::write(&p, body.to_string()).unwrap();
        p.to_str().unwrap().to_string()
    };
    let one = write("one.json", &json!({"data": DIGIT_ZERO.to_vec()}));
    let out: Value = serde_json::from_str(&ok(scoria_repo(
        repo.path(),
        &["predict", "digits", "--input", &one],
    )))
    .unwrap();
    assert_eq!(out["label"], json!([0]), "{out}");
    let probs = out["probabilities"].as_array().unwrap();
    assert_eq!(probs.len(), 1);
    let p: Vec<f64> = probs[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(p.len(), 10);
    assert!(
        p[0] > 0.9 && (p.iter().sum::<f64>() - 1.0).abs() < 1e-3,
        "{p:?}"
    );

    // A named input with a batch of two rows; an explicit version.
    let two = write(
        "two.json",
        &json!({"inputs": {"input": [DIGIT_ZERO.to_vec(), DIGIT_ZERO.to_vec()]}}),
    );
    let out: Value = serde_json::from_str(&ok(scoria_repo(
        repo.path(),
        &["predict", "digits:1", "--input", &two],
    )))
    .unwrap();
    assert_eq!(out["label"], json!([0, 0]), "{out}");
    assert_eq!(out["probabilities"].as_array().unwrap().len(), 2);

    // Stdin.
    let mut cmd = common::scoria_command();
    cmd.args(["--models", repo.path().to_str().unwrap()])
        .args(["predict", "digits", "--input", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(json!({"data": DIGIT_ZERO.to_vec()}).to_string().as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    common::assert_no_panic(&stderr(&out));
    let out: Value = serde_json::from_str(&ok(out)).unwrap();
    assert_eq!(out["label"], json!([0]));

    // Bad inputs: one-line errors, exit 1.
    let mut bad_row = json!(DIGIT_ZERO.to_vec());
    bad_row[7] = json!("seven");
    let bad = write("bad.json", &json!({"data": bad_row}));
    fails(
        scoria_repo(repo.path(), &["predict", "digits", "--input", &bad]),
        "element 7: expected an FP32 number, found string \"seven\"",
    );
    let short = write("short.json", &json!({"data": DIGIT_ZERO[..10]}));
    fails(
        scoria_repo(repo.path(), &["predict", "digits", "--input", &short]),
        "does not fit the model's shape [-1, 64]",
    );
    let garbage = files.path().join("garbage.json");
    std::fs::write(&garbage, "{not json").unwrap();
    fails(
        scoria_repo(
            repo.path(),
            &["predict", "digits", "--input", garbage.to_str().unwrap()],
        ),
        "malformed scoring request",
    );
    let unknown = write(
        "unknown.json",
        &json!({"inputs": {"pixels": DIGIT_ZERO.to_vec()}}),
    );
    fails(
        scoria_repo(repo.path(), &["predict", "digits", "--input", &unknown]),
        "unknown input 'pixels'",
    );
    let missing = files.path().join("missing.json");
    fails(
        scoria_repo(
            repo.path(),
            &["predict", "digits", "--input", missing.to_str().unwrap()],
        ),
        "cannot read",
    );
    fails(
        scoria_repo(repo.path(), &["predict", "nope", "--input", &one]),
        "no model 'nope'",
    );
    fails(
        scoria_repo(repo.path(), &["predict", "digits:4", "--input", &one]),
        "model 'digits' has no version 4",
    );
    usage_error(scoria_repo(repo.path(), &["predict", "digits"]), "--input");
}

#[test]
fn usage_errors_and_help() {
    let ws = workspace();
    let p = ws.path();
    usage_error(run_cli(p, &["frobnicate"], &[]), "frobnicate");
    usage_error(run_cli(p, &["model", "frobnicate"], &[]), "frobnicate");
    usage_error(run_cli(p, &["model", "list", "--bogus"], &[]), "--bogus");
    // `serve` gets a missing repository too, so that a flag wrongly accepted makes it exit 1
    // instead of serving forever.
    let serve = |extra: &[&str]| {
        let mut args = vec![
            "serve",
            "--models",
            "/nonexistent/scoria",
            "--http",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        run_cli(p, &args, &[])
    };
    usage_error(serve(&["--bogus"]), "--bogus");
    usage_error(run_cli(p, &["--bogus", "model", "list"], &[]), "--bogus");
    usage_error(serve(&["--max-body-size", "lots"]), "not a size");
    usage_error(serve(&["--backend", "cuda"]), "unknown backend 'cuda'");
    // --default-max-batch-size: 0 (auto-complete off) to 65536.
    usage_error(
        serve(&["--default-max-batch-size=-1"]),
        "--default-max-batch-size",
    );
    // A negative value is named as out of range, not taken for an unknown flag.
    usage_error(
        serve(&["--default-max-batch-size", "-1"]),
        "-1 is not in 0..=65536",
    );
    usage_error(
        run_cli(p, &["bench", "--model", "digits", "-c", "-1"], &[]),
        "-1 is not in 1..=4096",
    );
    usage_error(
        serve(&["--default-max-batch-size", "65537"]),
        "65537 is not in 0..=65536",
    );
    usage_error(
        serve(&["--default-max-batch-size", "99999999999999999999"]),
        "--default-max-batch-size",
    );
    usage_error(
        serve(&["--default-max-batch-size", "four"]),
        "--default-max-batch-size",
    );
    usage_error(
        run_cli(
            p,
            &[
                "model",
                "show",
                "digits",
                "--default-max-batch-size",
                "70000",
            ],
            &[],
        ),
        "70000 is not in 0..=65536",
    );
    let none = run_cli(p, &[], &[]);
    assert_eq!(
        none.status.code(),
        Some(2),
        "no subcommand: {}",
        stderr(&none)
    );
    assert!(stderr(&none).contains("Usage"), "{}", stderr(&none));

    for cmd in [
        &["--help"][..],
        &["serve", "--help"],
        &["model", "--help"],
        &["model", "register", "--help"],
        &["model", "list", "--help"],
        &["model", "show", "--help"],
        &["model", "delete", "--help"],
        &["predict", "--help"],
        &["help", "model", "register"],
    ] {
        let out = run_cli(p, cmd, &[]);
        let text = ok(out);
        assert!(text.contains("Usage:"), "{cmd:?}:\n{text}");
        assert!(
            text.contains("[env: SCORIA_"),
            "{cmd:?} mentions no SCORIA_ variable:\n{text}"
        );
    }
    let serve = ok(run_cli(p, &["serve", "--help"], &[]));
    for var in ["SCORIA_HTTP", "SCORIA_MAX_BODY_SIZE", "SCORIA_MODELS"] {
        assert!(serve.contains(var), "serve --help lacks {var}:\n{serve}");
    }
    let version = ok(run_cli(p, &["--version"], &[]));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    assert!(entries(p).is_empty(), "usage errors wrote {:?}", entries(p));
}

#[test]
fn environment_variables_are_honoured() {
    let repo = repo_with(&["digits", "add_fixed"]);
    let cwd = workspace();
    let list = ok(run_cli(
        cwd.path(),
        &["model", "list"],
        &[("SCORIA_MODELS", repo.path().to_str().unwrap())],
    ));
    let names: Vec<&str> = list
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["add_fixed", "digits"], "{list}");

    // SCORIA_WORKSPACE: its models/ folder.
    let ws = workspace();
    copy_dir(&model_source("digits"), &ws.path().join("models/digits"));
    let list = ok(run_cli(
        cwd.path(),
        &["model", "list", "--json"],
        &[("SCORIA_WORKSPACE", ws.path().to_str().unwrap())],
    ));
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list[0]["name"], "digits");
    assert_eq!(list.as_array().unwrap().len(), 1);

    // A flag beats the variable.
    let list = ok(run_cli(
        cwd.path(),
        &["--models", repo.path().to_str().unwrap(), "model", "list"],
        &[(
            "SCORIA_MODELS",
            cwd.path().join("nowhere").to_str().unwrap(),
        )],
    ));
    assert!(list.contains("add_fixed"), "{list}");

    // The working directory is the default workspace.
    let list = ok(run_cli(ws.path(), &["model", "list"], &[]));
    assert!(list.contains("digits"), "{list}");
    assert!(!cwd.path().join("models").exists());
}

/// Runs scoria in `cwd`, killing it (and failing) if it runs longer than 60 s.
fn run_bounded(cwd: &Path, args: &[&str]) -> Output {
    let mut child = common::scoria_command()
        .current_dir(cwd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run scoria");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("scoria {args:?} did not exit:\n{}", stderr(&out));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    common::assert_no_panic(&stderr(&out));
    out
}

#[test]
fn serve_startup_errors() {
    let ws = workspace();
    fails(
        run_bounded(
            ws.path(),
            &[
                "serve",
                "--models",
                "/nonexistent/scoria",
                "--http",
                "127.0.0.1:0",
            ],
        ),
        "cannot open the model repository",
    );
    // The port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    std::fs::create_dir(ws.path().join("models")).unwrap();
    fails(
        run_bounded(
            ws.path(),
            &[
                "--workspace",
                ws.path().to_str().unwrap(),
                "serve",
                "--http",
                &addr,
            ],
        ),
        &format!("cannot listen on {addr}"),
    );
    usage_error(
        run_bounded(
            ws.path(),
            &[
                "--workspace",
                ws.path().to_str().unwrap(),
                "serve",
                "--http",
                "not-an-address",
            ],
        ),
        "'not-an-address' is not HOST:PORT",
    );
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let repo = repo_with(&["digits", "lenet"]);
    let mut child = common::scoria_command()
        .args([
            "--models",
            repo.path().to_str().unwrap(),
            "model",
            "show",
            "digits",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn scoria");
    // The reader hangs up before anything is written, as `| head -0` would.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("internal error"), "{stderr}");
    common::assert_no_panic(&stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        out.status
    );
}

/// `scoria model register` killed with SIGKILL at 100 points spread over its run (parsing,
/// copying, fsyncing, renaming): the repository never shows a half version — every numbered
/// folder holds the model and a record whose sha256 matches it — and the next register
/// succeeds and clears the dead processes' temporary folders.
#[test]
fn a_register_killed_anywhere_leaves_no_half_version() {
    let ws = workspace();
    let src = model_source("lenet").join("1/model.onnx");
    let args = ["model", "register", "big", "--path", src.to_str().unwrap()];
    let started = std::time::Instant::now();
    ok(scoria(ws.path(), &args));
    let full = started.elapsed();
    let model_dir = ws.path().join("models/big");
    let want = sha256sum(&src);
    let check = |when: &str| {
        let mut versions = 0;
        for name in entries(&model_dir) {
            if name.starts_with('.') {
                continue; // a dead process's temporary folder: invisible to readers
            }
            let Ok(_) = name.parse::<u64>() else {
                panic!(
                    "{when}: unexpected entry {name:?} in {}",
                    model_dir.display()
                );
            };
            let dir = model_dir.join(&name);
            assert_eq!(
                entries(&dir),
                ["meta.toml", "model.onnx"],
                "{when}: half version {name}"
            );
            assert_eq!(sha256sum(&dir.join("model.onnx")), want, "{when}: {name}");
            let meta = std::fs::read_to_string(dir.join("meta.toml")).unwrap();
            assert!(meta.contains(&want), "{when}: {name}: {meta}");
            versions += 1;
        }
        versions
    };
    let iterations: u32 = 100;
    for i in 0..iterations {
        // Delays from 0 to 1.1x a full run, visited out of order.
        let delay = full.mul_f64(f64::from((i * 37) % iterations) / f64::from(iterations) * 1.1);
        let mut child = common::scoria_command()
            .current_dir(ws.path())
            .arg("--workspace")
            .arg(ws.path())
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        check(&format!("after a kill at {delay:?}"));
    }
    let before = check("before the last register");
    let out = ok(scoria(ws.path(), &args));
    assert!(out.contains(&format!("big:{}", before + 1)), "{out}");
    assert_eq!(check("after the last register"), before + 1);
    let leftovers: Vec<String> = entries(&model_dir)
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary folders left: {leftovers:?}"
    );
    ok(scoria(ws.path(), &["model", "list"]));
}
