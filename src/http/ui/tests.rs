//! The studio's routes through the whole router (`oneshot`): open page and assets, keyed
//! data, security headers, `GET /` for browsers, the models and runs JSON.

use super::assets::{ASSETS, INDEX};
use crate::engine::Backend;
use crate::http::{auth::ApiKeys, router, HttpConfig};
use crate::models::{LoadDefaults, ModelManager};
use crate::registry::runs::{Run, RUNS_DIR};
use crate::registry::Repository;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

const ADMIN: &str = "studio-admin-key-0123456789";
const SCORER: &str = "studio-score-key-0123456789";

fn manager() -> Arc<ModelManager> {
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
    models
}

fn app(keys: Option<&Path>, runs_dir: Option<PathBuf>) -> axum::Router {
    router(
        manager(),
        Default::default(),
        HttpConfig {
            api_keys: keys.map(|p| Arc::new(ApiKeys::load(p).unwrap())),
            runs_dir,
            ..HttpConfig::default()
        },
    )
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn call(app: &axum::Router, method: &str, uri: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

fn key_file(dir: &Path) -> PathBuf {
    let path = dir.join("keys.txt");
    std::fs::write(&path, format!("{ADMIN} admin\n{SCORER} score\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

#[test]
fn embedded_assets_stay_within_300_kb() {
    let total: usize = ASSETS.iter().map(|a| a.bytes.len()).sum::<usize>() + INDEX.bytes.len();
    assert!(total <= 300 * 1024, "{total} bytes of studio assets");
}

#[test]
fn the_page_has_no_inline_script_or_style_and_no_other_origin() {
    let html = std::str::from_utf8(INDEX.bytes).unwrap();
    // Every <script> has a src on this origin; no event-handler or style attributes.
    for (i, _) in html.match_indices("<script") {
        let tag = &html[i..i + html[i..].find('>').unwrap()];
        assert!(tag.contains("src=\"/ui/assets/"), "inline script: {tag}");
    }
    assert!(!html.contains("<style"), "inline <style>");
    assert!(!html.contains(" style="), "style attribute");
    // No event-handler attribute (` onclick=`, ` onload=` ...).
    let handler = html.match_indices(" on").find(|(i, _)| {
        let rest = &html[i + 3..];
        let name_len = rest.find(|c: char| !c.is_ascii_lowercase()).unwrap_or(0);
        name_len > 0 && rest[name_len..].starts_with('=')
    });
    assert!(handler.is_none(), "event-handler attribute at {handler:?}");
    // The page's own files name no other origin (the vendored library's requests are
    // checked by the browser tests' network log).
    for name in ["studio.js", "studio.css"] {
        let asset = ASSETS.iter().find(|a| a.name == name).unwrap();
        let text = std::str::from_utf8(asset.bytes).unwrap();
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{name} names another origin"
        );
    }
    assert!(!html.contains("http://") && !html.contains("https://"));
    let js =
        std::str::from_utf8(ASSETS.iter().find(|a| a.name == "studio.js").unwrap().bytes).unwrap();
    for sink in [
        ".innerHTML",
        ".outerHTML",
        "insertAdjacentHTML",
        "document.write",
    ] {
        assert!(
            !js.contains(sink),
            "studio.js must build the DOM with textContent, not {sink}"
        );
    }
    assert!(!js.contains("eval("));
}

#[test]
fn browsers_are_told_apart_from_probes() {
    let h = |accept: &str| {
        let mut m = HeaderMap::new();
        m.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        super::wants_html(&m)
    };
    assert!(h(
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    ));
    assert!(h("TEXT/HTML"));
    assert!(!h("*/*"));
    assert!(!h("application/json"));
    assert!(!h("text/html;q=0, */*"));
    assert!(!super::wants_html(&HeaderMap::new()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_and_assets_carry_the_security_policy() {
    let app = app(None, None);
    let page = call(&app, "GET", "/ui", &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.header(header::CONTENT_TYPE),
        Some("text/html; charset=utf-8")
    );
    assert!(page.text().contains("/ui/assets/studio.js"));
    let csp = page.header(header::CONTENT_SECURITY_POLICY).unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(
        csp.contains("script-src 'self';") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(page.header(header::X_CONTENT_TYPE_OPTIONS), Some("nosniff"));
    for a in ASSETS {
        let r = call(&app, "GET", &format!("/ui/assets/{}", a.name), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", a.name);
        assert_eq!(r.header(header::CONTENT_TYPE), Some(a.content_type));
        assert_eq!(r.body, a.bytes);
        assert!(r.header(header::CONTENT_SECURITY_POLICY).is_some());
        // Revalidation answers 304 with the same ETag.
        let tag = r.header(header::ETAG).unwrap().to_string();
        let again = call(
            &app,
            "GET",
            &format!("/ui/assets/{}", a.name),
            &[("if-none-match", &tag)],
        )
        .await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    }
    let missing = call(&app, "GET", "/ui/assets/../../Cargo.toml", &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let missing = call(&app, "GET", "/ui/assets/nope.js", &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.header(header::CONTENT_SECURITY_POLICY).is_some());
    // Other routes are left alone.
    let v2 = call(&app, "GET", "/v2", &[]).await;
    assert!(v2.header(header::CONTENT_SECURITY_POLICY).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_sends_browsers_to_the_studio_and_probes_get_healthy() {
    let app = app(None, None);
    let probe = call(&app, "GET", "/", &[]).await;
    assert_eq!(
        (probe.status, probe.text().as_str()),
        (StatusCode::OK, "Healthy")
    );
    let probe = call(&app, "GET", "/", &[("accept", "*/*")]).await;
    assert_eq!(probe.text(), "Healthy");
    let browser = call(&app, "GET", "/", &[("accept", "text/html,*/*;q=0.8")]).await;
    assert_eq!(browser.status, StatusCode::SEE_OTHER);
    assert_eq!(browser.header(header::LOCATION), Some("/ui"));
    assert!(browser.text().contains("href=\"/ui\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_guard_the_data_not_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(Some(&key_file(dir.path())), None);
    let admin = format!("Bearer {ADMIN}");
    let scorer = format!("Bearer {SCORER}");
    for open in [
        "/ui",
        "/ui/",
        "/ui/assets/studio.js",
        "/ui/assets/uPlot.iife.min.js",
    ] {
        assert_eq!(
            call(&app, "GET", open, &[]).await.status,
            StatusCode::OK,
            "{open}"
        );
    }
    // A browser is still redirected without a key (the page then asks for one).
    let browser = call(&app, "GET", "/", &[("accept", "text/html")]).await;
    assert_eq!(browser.status, StatusCode::SEE_OTHER);
    for data in [
        "/ui/api/server",
        "/ui/api/models",
        "/ui/api/runs",
        "/ui/api/runs/x",
    ] {
        let r = call(&app, "GET", data, &[]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{data}");
        assert!(r.header(header::CONTENT_SECURITY_POLICY).is_some());
        let r = call(
            &app,
            "GET",
            data,
            &[("authorization", "Bearer wrong-key-0123456789")],
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{data}");
    }
    let who = |r: Answer| (r.status, r.json()["auth"].clone());
    assert_eq!(
        who(call(&app, "GET", "/ui/api/server", &[("authorization", &scorer)]).await),
        (StatusCode::OK, json!({"keys": true, "role": "score"}))
    );
    assert_eq!(
        who(call(&app, "GET", "/ui/api/server", &[("authorization", &admin)]).await),
        (StatusCode::OK, json!({"keys": true, "role": "admin"}))
    );
    assert_eq!(
        call(&app, "GET", "/ui/api/models", &[("authorization", &scorer)])
            .await
            .status,
        StatusCode::OK
    );
    // The admin actions the page offers admin keys are refused to a score key by the server.
    for action in ["load", "unload"] {
        let r = call(
            &app,
            "POST",
            &format!("/v2/repository/models/add_fixed/{action}"),
            &[("authorization", &scorer)],
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{action}");
    }
    // Only reads: the studio's routes take no POST, even with a key.
    let r = call(
        &app,
        "POST",
        "/ui/api/models",
        &[("authorization", &scorer)],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_and_models_describe_what_is_served() {
    let app = app(None, None);
    let server = call(&app, "GET", "/ui/api/server", &[]).await.json();
    assert_eq!(server["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(server["auth"], json!({"keys": false, "role": "admin"}));
    let engines: Vec<&str> = server["engines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(engines, ["tract", "ort", "opencl"]);
    assert!(server["uptime_s"].as_f64().unwrap() >= 0.0);
    let models = call(&app, "GET", "/ui/api/models", &[]).await.json();
    let list = models["models"].as_array().unwrap();
    let add = list.iter().find(|m| m["name"] == "add_fixed").unwrap();
    assert_eq!(add["state"], "READY", "{add}");
    let v = &add["versions"][0];
    assert_eq!(v["state"], "READY");
    assert_eq!(v["backend"], "tract");
    assert!(v["inputs"].as_array().is_some_and(|i| !i.is_empty()), "{v}");
    assert_eq!(add["config"]["instances"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_list_newest_first_with_broken_records_marked() {
    let dir = tempfile::tempdir().unwrap();
    let runs_dir = dir.path().join(RUNS_DIR);
    for (id, rps) in [
        ("20240101T000000.000Z-aaaaaa", 10.0),
        ("20240102T000000.000Z-bbbbbb", 20.0),
    ] {
        Run {
            id: id.into(),
            command: "scoria bench --model digits".into(),
            config: json!({"model": "digits", "<script>": "\"quoted\""}),
            environment: json!({}),
            results: json!({"throughput": {"requests_per_s": rps}}),
            log: String::new(),
        }
        .save(&runs_dir)
        .unwrap();
    }
    // A run folder whose results.json is not JSON.
    let broken = runs_dir.join("20240103T000000.000Z-cccccc");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("results.json"), "{not json").unwrap();
    let app = app(None, Some(runs_dir.clone()));
    let list = call(&app, "GET", "/ui/api/runs", &[]).await.json();
    assert_eq!(list["total"], 3);
    let ids: Vec<&str> = list["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "20240103T000000.000Z-cccccc",
            "20240102T000000.000Z-bbbbbb",
            "20240101T000000.000Z-aaaaaa"
        ]
    );
    assert_eq!(list["runs"][0]["readable"], false);
    assert!(
        list["runs"][0]["error"]
            .as_str()
            .unwrap()
            .contains("cannot read"),
        "{list}"
    );
    assert_eq!(
        list["runs"][1]["results"]["throughput"]["requests_per_s"],
        20.0
    );
    let one = call(&app, "GET", "/ui/api/runs/20240101T000000.000Z-aaaaaa", &[]).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json()["command"], "scoria bench --model digits");
    for bad in ["nope", "..", ".hidden", "20240103T000000.000Z-cccccc"] {
        let r = call(&app, "GET", &format!("/ui/api/runs/{bad}"), &[]).await;
        assert!(
            r.status.is_client_error() || r.status.is_server_error(),
            "{bad}: {}",
            r.status
        );
        assert_ne!(r.status, StatusCode::OK, "{bad}");
    }
    // No run history configured: an empty list, not an error.
    let none = call(&self::app(None, None), "GET", "/ui/api/runs", &[])
        .await
        .json();
    assert_eq!(none["runs"], json!([]));
}
