//! Router tests without a socket: requests go through the full router with `oneshot`.

use super::{router, HttpConfig};
use crate::engine::Backend;
use crate::models::{LoadDefaults, ModelManager};
use crate::registry::Repository;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use tower::ServiceExt;

fn fixture_router(max_body_bytes: usize) -> axum::Router {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    let models = ModelManager::new(
        Repository::open(root).unwrap(),
        LoadDefaults::new(Backend::Tract),
    );
    models.start_loading().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !models.is_ready() {
        assert!(Instant::now() < deadline, "fixture models did not load");
        std::thread::sleep(Duration::from_millis(10));
    }
    router(
        models,
        Default::default(),
        HttpConfig {
            max_body_bytes,
            ..HttpConfig::default()
        },
    )
}

async fn call(app: &axum::Router, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn add_request(a: Value) -> String {
    json!({"inputs": [
        {"name": "a", "shape": [2, 2], "datatype": "FP32", "data": a},
        {"name": "b", "shape": [2, 2], "datatype": "FP32", "data": [10, 20, 30, 40]}
    ]})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metadata_and_infer() {
    let app = fixture_router(1 << 20);
    assert_eq!(
        call(&app, "GET", "/v2/health/live", "").await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, "GET", "/v2/health/ready", "").await.0,
        StatusCode::OK
    );
    let (s, v) = call(&app, "GET", "/v2", "").await;
    assert_eq!((s, v["name"].as_str()), (StatusCode::OK, Some("scoria")));

    let (s, v) = call(&app, "GET", "/v2/models/add_fixed/versions/1", "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["platform"], "onnx_onnxv1");
    assert_eq!(
        v["inputs"][0],
        json!({"name": "a", "datatype": "FP32", "shape": [2, 2]})
    );

    let (s, v) = call(
        &app,
        "POST",
        "/v2/models/add_fixed/infer",
        &add_request(json!([[1, 2], [3, 4]])),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["outputs"][0]["data"], json!([11.0, 22.0, 33.0, 44.0]));
    assert_eq!(v["outputs"][0]["shape"], json!([2, 2]));
    assert!(v.get("id").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_map_to_statuses() {
    let app = fixture_router(1 << 10);
    let cases = [
        (
            "POST",
            "/v2/models/add_fixed/infer",
            "{not json".to_string(),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            "POST",
            "/v2/models/add_fixed/infer",
            add_request(json!([1, 2, 3])),
            StatusCode::BAD_REQUEST,
            "holds 4 elements",
        ),
        (
            "POST",
            "/v2/models/nope/infer",
            add_request(json!([1, 2, 3, 4])),
            StatusCode::NOT_FOUND,
            "unknown model 'nope'",
        ),
        (
            "GET",
            "/v2/models/add_fixed/versions/7",
            String::new(),
            StatusCode::NOT_FOUND,
            "no version '7'",
        ),
        (
            "GET",
            "/v2/nothing",
            String::new(),
            StatusCode::NOT_FOUND,
            "no route",
        ),
        (
            "DELETE",
            "/v2/models/add_fixed",
            String::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "not allowed",
        ),
        (
            "POST",
            "/v2/models/add_fixed/infer",
            "x".repeat(2048),
            StatusCode::PAYLOAD_TOO_LARGE,
            "exceeds the limit",
        ),
    ];
    for (method, uri, body, status, needle) in cases {
        let (s, v) = call(&app, method, uri, &body).await;
        assert_eq!(s, status, "{method} {uri}: {v}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{method} {uri}: {msg}");
    }
    // Errors are counted by route and outcome.
    let (s, _) = call(&app, "GET", "/metrics", "").await;
    assert_eq!(s, StatusCode::OK);
    // Still serving after every error above.
    let (s, _) = call(
        &app,
        "POST",
        "/v2/models/add_fixed/infer",
        &add_request(json!([1, 2, 3, 4])),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}
