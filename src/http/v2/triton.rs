//! Triton's extensions: model configuration and statistics.

use super::ModelRef;
use crate::engine::{Dim, TensorSpec};
use crate::http::{json_response, ApiError, AppState};
use crate::models::stats::StatsSnapshot;
use crate::models::{LoadedVersion, VersionState};
use crate::registry::config::{TimeoutAction, VersionPolicy};
use crate::tensor::DataType;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::{json, Value};

/// Triton's `TYPE_*` name of a datatype.
fn triton_type(dt: DataType) -> &'static str {
    match dt {
        DataType::Bool => "TYPE_BOOL",
        DataType::U8 => "TYPE_UINT8",
        DataType::U16 => "TYPE_UINT16",
        DataType::U32 => "TYPE_UINT32",
        DataType::U64 => "TYPE_UINT64",
        DataType::I8 => "TYPE_INT8",
        DataType::I16 => "TYPE_INT16",
        DataType::I32 => "TYPE_INT32",
        DataType::I64 => "TYPE_INT64",
        DataType::F32 => "TYPE_FP32",
        DataType::F64 => "TYPE_FP64",
        DataType::Bytes => "TYPE_STRING",
    }
}

/// A tensor in Triton's config form: with `max_batch_size > 0` the batch dimension is
/// implicit and left out of `dims`.
fn config_tensor(spec: &TensorSpec, batched: bool) -> Value {
    let dims: Vec<i64> = spec
        .shape
        .iter()
        .skip(usize::from(batched))
        .map(|d| d.as_i64())
        .collect();
    json!({ "name": spec.name, "data_type": triton_type(spec.dtype), "dims": dims })
}

/// `GET /v2/models/{m}[/versions/{v}]/config`: the model configuration in Triton's JSON form,
/// which perf_analyzer and tritonclient read.
#[utoipa::path(get, path = "/v2/models/{model}/config", tag = "triton", params(("model" = String, Path, description = "Model name")), responses((status = 200, description = "Triton-style model configuration"), (status = 404, description = "Unknown model or version", body = crate::http::v2::wire::ErrorBody), (status = 503, description = "The model cannot serve (loading, failed or unloaded)", body = crate::http::v2::wire::ErrorBody)))]
pub async fn config(State(st): State<AppState>, r: ModelRef) -> Result<Response, ApiError> {
    let loaded = st.models.get(&r.model, r.version.as_deref())?;
    Ok(json_response(StatusCode::OK, &model_config(&loaded)))
}

fn model_config(loaded: &LoadedVersion) -> Value {
    let config = loaded.config();
    let max_batch_size = config.max_batch_size.unwrap_or(0);
    // Only a model whose every tensor leads with a dynamic dimension can batch.
    let batched = max_batch_size > 0
        && loaded
            .inputs()
            .iter()
            .chain(loaded.outputs())
            .all(|s| s.shape.first() == Some(&Dim::Dynamic));
    let version_policy = match &config.version_policy {
        VersionPolicy::Latest(n) => json!({ "latest": { "num_versions": n } }),
        VersionPolicy::All => json!({ "all": {} }),
        VersionPolicy::Specific(v) => json!({ "specific": { "versions": v } }),
    };
    let mut config_json = json!({
        "name": loaded.name(),
        "platform": "onnxruntime_onnx",
        "backend": loaded.backend().name(),
        "version_policy": version_policy,
        "max_batch_size": if batched { max_batch_size } else { 0 },
        "input": loaded.inputs().iter().map(|s| config_tensor(s, batched)).collect::<Vec<_>>(),
        "output": loaded.outputs().iter().map(|s| config_tensor(s, batched)).collect::<Vec<_>>(),
        "instance_group": [{ "name": format!("{}_0", loaded.name()), "kind": "KIND_CPU", "count": config.instances.unwrap_or(1) }],
        "parameters": {},
    });
    if let Some(b) = &config.dynamic_batching {
        config_json["dynamic_batching"] = json!({
            "preferred_batch_size": b.preferred_batch_size,
            "max_queue_delay_microseconds": b.max_queue_delay_us,
            "priority_levels": b.priority_levels,
            "default_priority_level": b.default_priority_level,
            "default_queue_policy": {
                "max_queue_size": b.max_queue_size,
                "timeout_action": match b.queue_policy.timeout_action {
                    TimeoutAction::Reject => "REJECT",
                    TimeoutAction::Delay => "DELAY",
                },
                "default_timeout_microseconds": b.queue_policy.default_timeout_us,
                "allow_timeout_override": b.queue_policy.allow_timeout_override,
            },
        });
    }
    config_json
}

#[derive(Serialize)]
struct ModelStats {
    name: String,
    version: String,
    #[serde(flatten)]
    stats: StatsSnapshot,
}

/// `GET /v2/models/stats`: every ready version's statistics.
#[utoipa::path(get, path = "/v2/models/stats", tag = "triton", responses((status = 200, description = "Triton-style statistics of every model")))]
pub async fn all_stats(State(st): State<AppState>) -> Result<Response, ApiError> {
    model_stats(st, None)
}

/// `GET /v2/models/{m}[/versions/{v}]/stats`.
#[utoipa::path(get, path = "/v2/models/{model}/stats", tag = "triton", params(("model" = String, Path, description = "Model name")), responses((status = 200, description = "Triton-style statistics of the model"), (status = 404, description = "Unknown model or version", body = crate::http::v2::wire::ErrorBody), (status = 503, description = "The model cannot serve (loading, failed or unloaded)", body = crate::http::v2::wire::ErrorBody)))]
pub async fn stats(State(st): State<AppState>, r: ModelRef) -> Result<Response, ApiError> {
    model_stats(st, Some(r))
}

fn model_stats(st: AppState, r: Option<ModelRef>) -> Result<Response, ApiError> {
    let statuses = match &r {
        None => st.models.statuses(),
        Some(r) => vec![st.models.status(&r.model)?],
    };
    let wanted = match r.as_ref().and_then(|r| r.version.as_deref()) {
        None => None,
        Some(v) => {
            let name = r.as_ref().map(|r| r.model.as_str()).unwrap_or_default();
            Some(st.models.get(name, Some(v))?.version())
        }
    };
    let mut model_stats = Vec::new();
    for status in statuses {
        for (&v, state) in &status.versions {
            if wanted.is_some_and(|w| w != v) {
                continue;
            }
            if let VersionState::Ready(served) = state {
                model_stats.push(ModelStats {
                    name: status.name.clone(),
                    version: v.to_string(),
                    stats: served.model.stats().snapshot(),
                });
            }
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "model_stats": model_stats }),
    ))
}
