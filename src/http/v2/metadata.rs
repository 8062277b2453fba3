//! Server and model metadata.

use super::wire::{ModelMetadata, ServerMetadata, TensorMetadata};
use super::ModelRef;
use crate::engine::TensorSpec;
use crate::http::{json_response, ApiError, AppState};
use crate::models::VersionState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;
use std::borrow::Cow;

/// The platform name Triton and KServe use for ONNX models.
pub const PLATFORM: &str = "onnx_onnxv1";

/// Protocol extensions this server implements.
const EXTENSIONS: &[&str] = &[
    "binary_tensor_data",
    "model_configuration",
    "statistics",
    "model_repository",
];

#[utoipa::path(get, path = "/v2", tag = "v2", responses((status = 200, description = "Server name, version and extensions")))]
pub async fn server() -> Response {
    let meta = ServerMetadata {
        extensions: EXTENSIONS.iter().map(|&e| Cow::Borrowed(e)).collect(),
        name: Cow::Borrowed("scoria"),
        version: Cow::Borrowed(env!("CARGO_PKG_VERSION")),
    };
    json_response(StatusCode::OK, &meta)
}

fn tensor_metadata(s: &TensorSpec) -> TensorMetadata<'_> {
    TensorMetadata {
        name: Cow::Borrowed(&s.name),
        datatype: Cow::Borrowed(s.dtype.name()),
        shape: s.dims(),
    }
}

/// Metadata of the requested version, or of the latest ready one; `versions` lists every
/// version that is ready to serve.
#[utoipa::path(get, path = "/v2/models/{model}", tag = "v2", params(("model" = String, Path, description = "Model name")), responses((status = 200, description = "Model metadata", body = crate::http::v2::wire::ModelMetadata), (status = 404, description = "Unknown model or version", body = crate::http::v2::wire::ErrorBody), (status = 503, description = "The model cannot serve (loading, failed or unloaded)", body = crate::http::v2::wire::ErrorBody)))]
pub async fn model(State(st): State<AppState>, r: ModelRef) -> Result<Response, ApiError> {
    let loaded = st.models.get(&r.model, r.version.as_deref())?;
    let status = st.models.status(&r.model)?;
    let versions = status
        .versions
        .iter()
        .filter(|(_, s)| matches!(s, VersionState::Ready(_)))
        .map(|(v, _)| v.to_string())
        .collect();
    let meta = ModelMetadata {
        name: Cow::Borrowed(loaded.name()),
        versions,
        platform: Cow::Borrowed(PLATFORM),
        inputs: loaded.inputs().iter().map(tensor_metadata).collect(),
        outputs: loaded.outputs().iter().map(tensor_metadata).collect(),
        parameters: loaded.placement().map(|p| {
            json!({
                "backend": loaded.backend().name(),
                "device": p.device,
                "nodes_on_device": p.nodes_on_device,
                "nodes_on_cpu": p.nodes_on_cpu,
                "cpu_backend": p.cpu_backend,
                "segments_on_device": p.segments.iter().filter(|s| s.on_device).count(),
                "segments_on_cpu": p.segments.iter().filter(|s| !s.on_device).count(),
                "placement": p.summary(),
            })
        }),
    };
    Ok(json_response(StatusCode::OK, &meta))
}
