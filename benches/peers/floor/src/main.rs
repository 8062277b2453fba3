//! The bare-HTTP floor for the peer comparison (`scripts/bench-peers`): an axum server that
//! answers Open Inference Protocol v2 requests with fixed, pre-built bodies and does no
//! inference, no decoding and no encoding. What perf_analyzer measures against it is the
//! cost of HTTP alone on this machine, the floor under scoria's serving overhead.
//!
//! ```sh
//! cargo run --release --manifest-path benches/peers/floor/Cargo.toml --target-dir target/floor \
//!     -- --http 127.0.0.1:9000 --spec floor.json
//! ```
//!
//! The spec file (written by `benches/peers/bench_peers.py` from a running scoria) holds the
//! JSON that the GET routes answer and, per model, the file with the exact infer response
//! body scoria gave to the same binary request, with its `Inference-Header-Content-Length`:
//!
//! ```json
//! {"server": {...GET /v2, without the "statistics" extension...},
//!  "models": {"digits": {"metadata": {...}, "config": {...},
//!                        "response": "digits.bin", "header_length": 183,
//!                        "content_type": "application/octet-stream"}}}
//! ```
//!
//! `POST /v2/models/{m}[/versions/{v}]/infer` reads the whole request body (as any server
//! must) and discards it; it answers the pre-built bytes. Accepted sockets get TCP_NODELAY, as
//! scoria's do. The process runs until it is killed.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::collections::HashMap;
use std::sync::Arc;

struct Model {
    metadata: Bytes,
    config: Bytes,
    body: Bytes,
    header_length: Option<HeaderValue>,
    content_type: HeaderValue,
}

struct Floor {
    server: Bytes,
    models: HashMap<String, Model>,
}

type Shared = Arc<Floor>;

fn usage() -> ! {
    eprintln!("usage: floor --http ADDR --spec FILE.json");
    std::process::exit(2);
}

fn fail(reason: impl std::fmt::Display) -> ! {
    eprintln!("floor: {reason}");
    std::process::exit(1);
}

fn json_bytes(v: &serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).expect("a JSON value serializes"))
}

fn load(spec_path: &std::path::Path) -> Floor {
    let text = std::fs::read_to_string(spec_path)
        .unwrap_or_else(|e| fail(format!("cannot read {}: {e}", spec_path.display())));
    let spec: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| fail(format!("{} is not JSON: {e}", spec_path.display())));
    let dir = spec_path.parent().unwrap_or(std::path::Path::new("."));
    let server = json_bytes(spec.get("server").unwrap_or(&serde_json::json!({
        "name": "floor", "version": "0", "extensions": []
    })));
    let mut models = HashMap::new();
    let entries = spec
        .get("models")
        .and_then(|m| m.as_object())
        .unwrap_or_else(|| fail("the spec has no \"models\" object"));
    for (name, m) in entries {
        let field = |key: &str| {
            m.get(key)
                .unwrap_or_else(|| fail(format!("model {name}: no \"{key}\"")))
        };
        let response = field("response")
            .as_str()
            .unwrap_or_else(|| fail(format!("model {name}: \"response\" is not a path")));
        let path = dir.join(response);
        let body = std::fs::read(&path)
            .unwrap_or_else(|e| fail(format!("model {name}: cannot read {}: {e}", path.display())));
        let header_length = m
            .get("header_length")
            .and_then(|v| v.as_u64())
            .map(HeaderValue::from);
        let content_type =
            m.get("content_type")
                .and_then(|v| v.as_str())
                .unwrap_or(if header_length.is_some() {
                    "application/octet-stream"
                } else {
                    "application/json"
                });
        let content_type = HeaderValue::from_str(content_type)
            .unwrap_or_else(|e| fail(format!("model {name}: bad content_type: {e}")));
        models.insert(
            name.clone(),
            Model {
                metadata: json_bytes(field("metadata")),
                config: json_bytes(field("config")),
                body: Bytes::from(body),
                header_length,
                content_type,
            },
        );
    }
    Floor { server, models }
}

fn json(body: Bytes) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn not_found(name: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        format!("{{\"error\":\"unknown model '{name}'\"}}"),
    )
        .into_response()
}

async fn server_metadata(State(f): State<Shared>) -> Response {
    json(f.server.clone())
}

async fn ready() -> Response {
    json(Bytes::from_static(b"{\"ready\":true}"))
}

async fn live() -> Response {
    json(Bytes::from_static(b"{\"live\":true}"))
}

async fn model_metadata(State(f): State<Shared>, Path(name): Path<String>) -> Response {
    match f.models.get(&name) {
        Some(m) => json(m.metadata.clone()),
        None => not_found(&name),
    }
}

async fn model_config(State(f): State<Shared>, Path(name): Path<String>) -> Response {
    match f.models.get(&name) {
        Some(m) => json(m.config.clone()),
        None => not_found(&name),
    }
}

async fn model_ready(State(f): State<Shared>, Path(name): Path<String>) -> Response {
    match f.models.get(&name) {
        Some(_) => json(Bytes::from_static(b"{\"ready\":true}")),
        None => not_found(&name),
    }
}

fn answer(f: &Floor, name: &str) -> Response {
    let Some(m) = f.models.get(name) else {
        return not_found(name);
    };
    let mut response = (StatusCode::OK, m.body.clone()).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, m.content_type.clone());
    if let Some(n) = &m.header_length {
        h.insert("inference-header-content-length", n.clone());
    }
    response
}

// The `Bytes` extractor reads the whole request body before the handler runs.
async fn infer(State(f): State<Shared>, Path(name): Path<String>, _body: Bytes) -> Response {
    answer(&f, &name)
}

async fn infer_version(
    State(f): State<Shared>,
    Path((name, _version)): Path<(String, String)>,
    _body: Bytes,
) -> Response {
    answer(&f, &name)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut addr, mut spec) = (None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--http" => addr = args.next(),
            "--spec" => spec = args.next(),
            _ => usage(),
        }
    }
    let (Some(addr), Some(spec)) = (addr, spec) else {
        usage()
    };
    let floor: Shared = Arc::new(load(std::path::Path::new(&spec)));
    let router = Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/ready", get(ready))
        .route("/v2/health/live", get(live))
        .route("/v2/models/{m}", get(model_metadata))
        .route("/v2/models/{m}/ready", get(model_ready))
        .route("/v2/models/{m}/config", get(model_config))
        .route("/v2/models/{m}/infer", post(infer))
        .route("/v2/models/{m}/versions/{v}/infer", post(infer_version))
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
        .with_state(floor);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format!("cannot start the async runtime: {e}")));
    runtime.block_on(async move {
        use axum::serve::ListenerExt;
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .unwrap_or_else(|e| fail(format!("cannot listen on {addr}: {e}")));
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        if let Err(e) = axum::serve(listener, router).await {
            fail(format!("server error: {e}"));
        }
    });
}
