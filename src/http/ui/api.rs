//! The JSON the studio reads besides the v2 routes and `/metrics`: the server's facts, every
//! model with what the v2 metadata does not carry (reasons, config, registration records,
//! the hook's source) and the workspace's run history. Nothing here changes anything.

use super::super::auth::Role;
use super::super::{json_response, ApiError, AppState};
use crate::engine::opencl::device;
use crate::engine::TensorSpec;
use crate::models::{ModelStatus, VersionState};
use crate::registry::config::VersionPolicy;
use crate::registry::runs::{self, Run};
use crate::registry::{ModelConfig, ModelDir, VersionMeta};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

/// The address the HTTP server listens on (`None` where the socket could not say), added to
/// every request by `http::serve`.
#[derive(Debug, Clone, Copy)]
pub struct ListenAddr(pub Option<SocketAddr>);

/// Largest hook source the models page shows.
const MAX_HOOK_BYTES: u64 = 256 << 10;
/// Most runs listed, newest first.
pub(super) const MAX_RUNS: usize = 500;

/// When the studio's routes were built: the server's start, for its uptime.
pub(super) fn started() -> (Instant, SystemTime) {
    static STARTED: OnceLock<(Instant, SystemTime)> = OnceLock::new();
    *STARTED.get_or_init(|| (Instant::now(), SystemTime::now()))
}

/// OpenCL's devices, listed once (loading a platform's driver is slow and its answer does
/// not change while the process runs).
fn opencl_devices() -> &'static Result<Vec<device::DeviceInfo>, String> {
    static DEVICES: OnceLock<Result<Vec<device::DeviceInfo>, String>> = OnceLock::new();
    DEVICES.get_or_init(|| device::list().map_err(|e| e.to_string()))
}

/// A folder as the page shows it: absolute, so `./runs` says where it is.
fn shown_path(path: &std::path::Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("studio task failed: {e}")))
}

/// `GET /ui/api/server`: version, uptime, engines, listen address, key mode and the
/// caller's role (what the page offers: admin actions only to admin keys).
pub(super) async fn server(
    State(st): State<AppState>,
    role: Option<Extension<Role>>,
    listen: Option<Extension<ListenAddr>>,
) -> Result<Response, ApiError> {
    let (since, started_at) = started();
    let keys = st.config.api_keys.is_some();
    // Without keys everyone may do everything.
    let role = match (keys, role) {
        (false, _) => Role::Admin,
        (true, Some(Extension(r))) => r,
        (true, None) => Role::Score,
    };
    let ort = crate::engine::ort::LibrarySearch::from_process().find();
    let opencl = blocking(opencl_devices).await?;
    let models = st.models.statuses();
    let ready = models.iter().filter(|m| m.latest_ready().is_some()).count();
    let body = json!({
        "name": "scoria",
        "version": env!("CARGO_PKG_VERSION"),
        "started": humantime::format_rfc3339_seconds(started_at).to_string(),
        "uptime_s": since.elapsed().as_secs_f64(),
        "listen": listen.and_then(|Extension(ListenAddr(a))| a).map(|a| vec![format!("http://{a}")]).unwrap_or_default(),
        "auth": {
            "keys": keys,
            "role": role.name(),
        },
        "ready": st.models.not_ready_reason(st.config.strict_readiness).is_none(),
        "not_ready_reason": st.models.not_ready_reason(st.config.strict_readiness),
        "strict_readiness": st.config.strict_readiness,
        "models": { "total": models.len(), "ready": ready },
        "repository": shown_path(st.models.repository().root()),
        "runs_dir": st.config.runs_dir.as_deref().map(shown_path),
        "default_model": st.config.default_model,
        "max_body_bytes": st.config.max_body_bytes,
        "engines": [
            {"name": "tract", "available": true, "detail": "built in (pure Rust)"},
            match &ort {
                Ok(path) => json!({"name": "ort", "available": true, "detail": format!("ONNX Runtime library {}", path.display())}),
                Err(why) => json!({"name": "ort", "available": false, "detail": why}),
            },
            match opencl {
                Ok(devices) => json!({
                    "name": "opencl",
                    "available": !devices.is_empty(),
                    "detail": format!("{} device{}", devices.len(), if devices.len() == 1 { "" } else { "s" }),
                    "devices": devices.iter().map(|d| json!({"platform": d.platform, "name": d.name, "kind": d.kind})).collect::<Vec<_>>(),
                }),
                Err(why) => json!({"name": "opencl", "available": false, "detail": why, "devices": []}),
            },
        ],
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /ui/api/models`: every model of the repository (loaded or not) with its versions.
pub(super) async fn models(State(st): State<AppState>) -> Result<Response, ApiError> {
    let body = blocking(move || {
        let statuses = st.models.statuses();
        let mut names: Vec<String> = statuses.iter().map(|s| s.name.clone()).collect();
        // Folders added since the server started are listed too ("not loaded").
        if let Ok(on_disk) = st.models.repository().model_names() {
            names.extend(on_disk);
        }
        names.sort();
        names.dedup();
        let models: Vec<Value> = names
            .iter()
            .map(|name| {
                let status = statuses.iter().find(|s| &s.name == name);
                let dir = st.models.repository().model(name);
                model_json(name, status, dir.as_ref().ok())
            })
            .collect();
        json!({ "models": models })
    })
    .await?;
    Ok(json_response(StatusCode::OK, &body))
}

fn tensors(specs: &[TensorSpec]) -> Vec<Value> {
    specs
        .iter()
        .map(|s| json!({"name": s.name, "datatype": s.dtype.name(), "shape": s.dims()}))
        .collect()
}

fn config_json(c: &ModelConfig) -> Value {
    let policy = match &c.version_policy {
        VersionPolicy::Latest(n) => json!({ "latest": n }),
        VersionPolicy::All => json!({ "all": true }),
        VersionPolicy::Specific(v) => json!({ "specific": v }),
    };
    json!({
        "backend": c.backend.map(|b| b.name()),
        // null for a config not loaded yet that leaves it to auto-complete.
        "max_batch_size": c.max_batch_size,
        // null for a config not loaded yet that leaves it to the engine.
        "instances": c.instances,
        "dynamic_batching": c.dynamic_batching.as_ref().map(|d| json!({
            "max_queue_delay_us": d.max_queue_delay_us,
            "preferred_batch_size": d.preferred_batch_size,
            "max_queue_size": d.max_queue_size,
        })),
        "version_policy": policy,
        "hook": c.hook,
    })
}

/// The hook's file and source (read-only), or why it cannot be read.
fn hook_json(dir: &ModelDir, file: &str) -> Value {
    let path = dir.path.join(file);
    let read = std::fs::File::open(&path)
        .and_then(|f| crate::fsutil::read_bounded(f, MAX_HOOK_BYTES))
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    match read {
        Ok(source) => json!({ "file": file, "source": source }),
        Err(e) => json!({ "file": file, "error": format!("cannot read {}: {e}", path.display()) }),
    }
}

fn meta_json(dir: &ModelDir, version: u64) -> (Value, Value) {
    match VersionMeta::load(&dir.version_path(version)) {
        Ok(Some(m)) => (
            json!({
                "sha256": m.sha256,
                "size": m.size,
                "created": m.created,
                "source": m.source,
                "description": m.description,
                "tags": m.tags,
                "hook": m.hook,
                "hook_sha256": m.hook_sha256,
            }),
            Value::Null,
        ),
        Ok(None) => (Value::Null, Value::Null),
        Err(e) => (Value::Null, Value::String(e.to_string())),
    }
}

fn model_json(name: &str, status: Option<&ModelStatus>, dir: Option<&ModelDir>) -> Value {
    let disk_config = dir.and_then(|d| d.config.as_ref().ok());
    let ready = status.and_then(ModelStatus::latest_ready);
    // The config the ready version was loaded with, else what is on disk now.
    let config = ready.map(|s| s.model.config()).or(disk_config);
    let (state, reason) = match status {
        None => ("UNAVAILABLE", Some("not loaded".to_string())),
        Some(s) if s.unloaded => (
            "UNLOADED",
            Some("unloaded through the repository API".to_string()),
        ),
        Some(_) if ready.is_some() => ("READY", None),
        Some(s) => match (&s.error, s.versions.values().next_back()) {
            (Some(e), _) => ("UNAVAILABLE", Some(e.clone())),
            (None, Some(VersionState::Loading)) => ("LOADING", None),
            (None, Some(VersionState::Failed(e))) => ("UNAVAILABLE", Some(e.clone())),
            _ => ("UNAVAILABLE", Some("no version to serve".to_string())),
        },
    };
    let config_error = dir.and_then(|d| d.config.as_ref().err().map(|e| e.to_string()));
    let mut versions: Vec<Value> = Vec::new();
    if let Some(s) = status {
        for (v, vs) in &s.versions {
            let mut o = Map::new();
            o.insert("version".into(), json!(v.to_string()));
            match vs {
                VersionState::Loading => {
                    o.insert("state".into(), json!("LOADING"));
                }
                VersionState::Failed(e) => {
                    o.insert("state".into(), json!("UNAVAILABLE"));
                    o.insert("reason".into(), json!(e));
                }
                VersionState::Ready(served) => {
                    let m = &served.model;
                    o.insert("state".into(), json!("READY"));
                    o.insert("backend".into(), json!(m.backend().name()));
                    o.insert("inputs".into(), json!(tensors(m.inputs())));
                    o.insert("outputs".into(), json!(tensors(m.outputs())));
                    o.insert("pending".into(), json!(m.pending()));
                    o.insert(
                        "hook".into(),
                        json!(served.hook.as_ref().map(|h| h.file().to_string())),
                    );
                    if let Some(p) = m.placement() {
                        o.insert(
                            "placement".into(),
                            json!({
                                "device": p.device,
                                "nodes_on_device": p.nodes_on_device,
                                "nodes_on_cpu": p.nodes_on_cpu,
                                "cpu_backend": p.cpu_backend,
                                "summary": p.summary(),
                            }),
                        );
                    }
                }
            }
            if let Some(d) = dir {
                let (meta, meta_error) = meta_json(d, *v);
                o.insert("meta".into(), meta);
                if !meta_error.is_null() {
                    o.insert("meta_error".into(), meta_error);
                }
            }
            versions.push(Value::Object(o));
        }
    }
    let hook = match (dir, config.and_then(|c| c.hook.as_deref())) {
        (Some(d), Some(file)) => hook_json(d, file),
        _ => Value::Null,
    };
    json!({
        "name": name,
        "state": state,
        "reason": reason,
        "config_error": config_error,
        "description": config.and_then(|c| c.description.clone()),
        "tags": config.map(|c| c.tags.clone()).unwrap_or_default(),
        "config": config.map(config_json),
        "on_disk": dir.map(|d| d.versions.iter().map(u64::to_string).collect::<Vec<_>>()).unwrap_or_default(),
        "hook": hook,
        "versions": versions,
    })
}

/// `GET /ui/api/runs`: the run history, newest first; a run folder that does not read back
/// is listed as unreadable with the reason, and the others as usual.
pub(super) async fn runs(State(st): State<AppState>) -> Result<Response, ApiError> {
    let Some(dir) = st.config.runs_dir.clone() else {
        return Ok(json_response(
            StatusCode::OK,
            &json!({ "dir": null, "runs": [], "total": 0 }),
        ));
    };
    let body = blocking(move || {
        let ids = runs::ids(&dir)
            .map_err(|e| ApiError::Internal(format!("cannot read {}: {e}", dir.display())))?;
        let total = ids.len();
        let listed: Vec<Value> = ids
            .iter()
            .rev()
            .take(MAX_RUNS)
            .map(|id| match Run::load(&dir, id) {
                Ok(run) => json!({
                    "id": run.id,
                    "readable": true,
                    "command": run.command,
                    "config": run.config,
                    "results": run.results,
                }),
                Err(e) => json!({ "id": id, "readable": false, "error": e }),
            })
            .collect();
        Ok::<_, ApiError>(json!({
            "dir": shown_path(&dir),
            "total": total,
            "runs": listed,
        }))
    })
    .await??;
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /ui/api/runs/{id}`: one run whole (environment and log included).
pub(super) async fn run(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound(format!("no run '{id}'"));
    let Some(dir) = st.config.runs_dir.clone() else {
        return Err(not_found());
    };
    if !runs::valid_id(&id) {
        return Err(not_found());
    }
    let wanted = id.clone();
    let loaded = blocking(move || {
        let known = runs::ids(&dir).unwrap_or_default();
        if !known.contains(&wanted) {
            return None;
        }
        Some(Run::load(&dir, &wanted))
    })
    .await?;
    match loaded {
        None => Err(not_found()),
        Some(Err(e)) => Err(ApiError::Internal(format!("run '{id}' is unreadable: {e}"))),
        Some(Ok(run)) => Ok(json_response(
            StatusCode::OK,
            &json!({
                "id": run.id,
                "command": run.command,
                "config": run.config,
                "environment": run.environment,
                "results": run.results,
                "log": run.log,
            }),
        )),
    }
}
