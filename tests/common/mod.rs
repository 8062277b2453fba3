//! Helpers shared by the real-process integration suites (`tests/server.rs`, `tests/cli.rs`):
//! temporary model repositories, a `scoria serve` child process with its captured log, and a
//! small HTTP client that only ever talks to 127.0.0.1.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long a server may take to print its address and report ready.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

/// The scoria binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_scoria")
}

/// The repository root (where `models/` and `tests/fixtures/` live).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where a named model folder comes from: the sample repository, else the test fixtures.
pub fn model_source(name: &str) -> PathBuf {
    let sample = root().join("models").join(name);
    if sample.is_dir() {
        return sample;
    }
    let fixture = root().join("tests/fixtures/models").join(name);
    assert!(
        fixture.is_dir(),
        "no model folder '{name}' in models/ or tests/fixtures/models/"
    );
    fixture
}

/// Copies `src` into `dest` recursively (creating `dest`).
pub fn copy_dir(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap_or_else(|e| panic!("create {}: {e}", dest.display()));
    for entry in std::fs::read_dir(src).unwrap_or_else(|e| panic!("read {}: {e}", src.display())) {
        let entry = entry.unwrap();
        let to = dest.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to)
                .unwrap_or_else(|e| panic!("copy {}: {e}", entry.path().display()));
        }
    }
}

/// A temporary model repository holding copies of the named model folders (from `models/`
/// or `tests/fixtures/models/`).
pub fn repo_with(models: &[&str]) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("scoria-repo-")
        .tempdir()
        .expect("temp dir");
    for name in models {
        copy_dir(&model_source(name), &dir.path().join(name));
    }
    dir
}

/// Puts `text` at the top of `<repo>/<model>/config.toml` (creating it), so top-level keys
/// stay top-level even when the file ends inside a table such as `[tags]`.
pub fn prepend_config(repo: &Path, model: &str, text: &str) {
    let path = repo.join(model).join("config.toml");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, format!("{text}\n{old}"))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Appends `text` (e.g. a `[table]`) to `model`'s config.toml in `repo`.
pub fn append_config(repo: &Path, model: &str, text: &str) {
    let path = repo.join(model).join("config.toml");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, format!("{old}\n{text}\n")).expect("write config.toml");
}

/// Removes terminal colour/style escapes (`ESC [ ... letter`) from a log line.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A `Command` for the scoria binary with no `SCORIA_*` settings inherited from the
/// environment the tests run in.
pub fn scoria_command() -> Command {
    let mut cmd = Command::new(bin());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SCORIA_") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("RUST_BACKTRACE");
    cmd
}

/// Asserts that a process's stderr shows no panic or backtrace.
pub fn assert_no_panic(stderr: &str) {
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "the process panicked:\n{stderr}"
    );
}

/// A `scoria serve` child process on 127.0.0.1 with an ephemeral port (HTTP, and gRPC
/// unless `extra` gives its own `--grpc`).
pub struct Server {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The gRPC `127.0.0.1:PORT`, when the server serves gRPC.
    pub grpc_addr: Option<String>,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
    client: reqwest::blocking::Client,
    repo: Option<TempDir>,
}

impl Server {
    /// Serves `repo` (kept alive as long as the server) with `extra` arguments.
    pub fn start(repo: TempDir, extra: &[&str]) -> Server {
        let path = repo.path().to_path_buf();
        let mut server = Server::start_at(&path, extra);
        server.repo = Some(repo);
        server
    }

    /// Serves the repository directory `models` with `extra` arguments, and waits until the
    /// server reports ready.
    pub fn start_at(models: &Path, extra: &[&str]) -> Server {
        Server::start_at_with_env(models, extra, &[])
    }

    /// [`Server::start_at`] with extra environment variables for the server process.
    pub fn start_at_with_env(models: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::spawn(models, extra, env, "/v2/health/ready")
    }

    /// Serves `repo` with `extra` arguments and waits only until the server is live, not
    /// ready (for readiness tests).
    pub fn start_live(repo: TempDir, extra: &[&str]) -> Server {
        let mut server = Server::spawn(repo.path(), extra, &[], "/v2/health/live");
        server.repo = Some(repo);
        server
    }

    /// Starts the server and waits until `GET wait_for` answers 200.
    fn spawn(models: &Path, extra: &[&str], env: &[(&str, &str)], wait_for: &str) -> Server {
        let mut cmd = scoria_command();
        cmd.envs(env.iter().copied());
        cmd.arg("serve")
            .arg("--models")
            .arg(models)
            .args(["--http", "127.0.0.1:0"]);
        // Every test server takes its own ephemeral gRPC port rather than the default 8001.
        if !extra.iter().any(|a| a.starts_with("--grpc")) {
            cmd.args(["--grpc", "127.0.0.1:0"]);
        }
        cmd.args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn scoria serve");
        let pipe = child.stderr.take().expect("stderr pipe");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let lines = Arc::clone(&stderr);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let line = strip_ansi(&line);
                if let Some(rest) = line.split("serving gRPC on grpc://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send((true, addr));
                }
                if let Some(rest) = line.split(" on http://").nth(1) {
                    if line.contains("serving ") {
                        let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                        let _ = tx.send((false, addr));
                    }
                }
                lines.lock().unwrap().push(line);
            }
        });
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let mut server = Server {
            child,
            addr: String::new(),
            grpc_addr: None,
            stderr,
            reader: Some(reader),
            client,
            repo: None,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                // The gRPC line comes first, when there is one.
                Ok((true, addr)) => server.grpc_addr = Some(addr),
                Ok((false, addr)) => {
                    server.addr = addr;
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    server.fail("exited before printing its address")
                }
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                // Let the reader drain what is left.
                std::thread::sleep(Duration::from_millis(200));
                server.fail(&format!("exited with {status} before printing its address"));
            }
            if Instant::now() > deadline {
                server.fail("printed no `serving ... on http://ADDR` line in time");
            }
        }
        assert!(
            server.addr.starts_with("127.0.0.1:"),
            "unexpected address {:?}",
            server.addr
        );
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                server.fail(&format!("exited with {status} while loading"));
            }
            if let Ok(r) = server.client.get(server.url(wait_for)).send() {
                if r.status().as_u16() == 200 {
                    break;
                }
            }
            if Instant::now() > deadline {
                server.fail("did not become ready in time");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the server process.
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) with the pid of our own child process.
        let r = unsafe { libc::kill(pid, signal) };
        assert_eq!(r, 0, "kill({pid}, {signal}) failed");
    }

    /// Waits up to `timeout` for the server to exit; its exit code (`None` if it is still
    /// running or was killed by a signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn fail(&self, why: &str) -> ! {
        panic!("scoria serve {why}; its stderr:\n{}", self.stderr());
    }

    /// Every line the server has logged so far (colour escapes removed).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// The model repository directory, when the server owns a temporary one.
    pub fn repo(&self) -> Option<&Path> {
        self.repo.as_ref().map(TempDir::path)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends a request; returns the status and the body parsed as JSON, or the body as a JSON
    /// string when it is not JSON.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<reqwest::blocking::Body>,
        content_type: Option<&str>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(method.clone(), self.url(path));
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let resp = req
            .send()
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\nserver stderr:\n{}", self.stderr()));
        let status = resp.status().as_u16();
        let text = resp.text().expect("response body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    /// POSTs `body` as `application/json`; returns the status and the raw response text.
    pub fn post_text(&self, path: &str, body: &str) -> (u16, String) {
        let resp = self
            .client
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .unwrap_or_else(|e| panic!("POST {path}: {e}\nserver stderr:\n{}", self.stderr()));
        (resp.status().as_u16(), resp.text().expect("response body"))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None, None)
    }

    /// POSTs `body` as `application/json`.
    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        self.request(
            "POST",
            path,
            Some(body.to_string().into()),
            Some("application/json"),
        )
    }

    /// POSTs raw bytes with no Content-Type header.
    pub fn post_bytes(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        self.request("POST", path, Some(body.into()), None)
    }

    /// POSTs a JSON value; asserts 200 and returns the response.
    pub fn infer_ok(&self, model: &str, body: &Value) -> Value {
        let (status, resp) = self.post(&format!("/v2/models/{model}/infer"), &body.to_string());
        assert_eq!(status, 200, "infer on {model} failed: {resp}");
        resp
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        if !std::thread::panicking() {
            assert_no_panic(&self.stderr());
        }
    }
}

/// Asserts a v2 error reply: the status, and a body that is exactly `{"error": "..."}` whose
/// message contains `needle`. Returns the message.
#[track_caller]
pub fn assert_error((status, body): (u16, Value), want: u16, needle: &str) -> String {
    assert_eq!(status, want, "expected {want}, got {status}: {body}");
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("error body is not a JSON object: {body}"));
    assert_eq!(obj.len(), 1, "error body has more than `error`: {body}");
    let msg = obj
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("error body has no string `error`: {body}"));
    assert!(
        msg.contains(needle),
        "error message {msg:?} does not contain {needle:?}"
    );
    msg.to_string()
}

/// Runs the scoria CLI with `args` in `cwd`, with extra environment `env`; asserts that it did
/// not panic.
pub fn run_cli(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = scoria_command();
    cmd.current_dir(cwd).args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run scoria");
    assert_no_panic(&String::from_utf8_lossy(&out.stderr));
    out
}

/// The first row of scikit-learn's `load_digits()` (a 0).
pub const DIGIT_ZERO: [u8; 64] = [
    0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0, 0,
    8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6,
    13, 10, 0, 0, 0,
];
