//! The model repository extension: index, load and unload.

use super::wire::{RepositoryIndexRequest, RepositoryModel, RepositoryState};
use super::ModelRef;
use crate::http::body::Body;
use crate::http::{json_response, ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

/// `POST /v2/repository/index`: every model on disk and its state; `{"ready": true}` keeps
/// only the ready ones.
#[utoipa::path(post, path = "/v2/repository/index", tag = "repository", responses((status = 200, description = "Models on disk and their states")))]
pub async fn index(State(st): State<AppState>, Body(body): Body) -> Result<Response, ApiError> {
    let req: RepositoryIndexRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RepositoryIndexRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("malformed index request: {e}")))?
    };
    let models = st.models.clone();
    let entries = tokio::task::spawn_blocking(move || models.index())
        .await
        .map_err(|e| ApiError::Internal(format!("index task failed: {e}")))??;
    let entries: Vec<RepositoryModel> = entries
        .into_iter()
        .map(RepositoryModel::from)
        .filter(|e| !req.ready || e.state == RepositoryState::Ready)
        .collect();
    Ok(json_response(StatusCode::OK, &entries))
}

/// `POST /v2/repository/models/{m}/load`: (re)loads the model from disk; the old versions
/// serve until the new ones are ready.
#[utoipa::path(post, path = "/v2/repository/models/{model}/load", tag = "repository", params(("model" = String, Path, description = "Model name")), responses((status = 200, description = "Loaded"), (status = 400, description = "The model failed to load; what was served stays", body = crate::http::v2::wire::ErrorBody), (status = 404, description = "No such model on disk", body = crate::http::v2::wire::ErrorBody)))]
pub async fn load(
    State(st): State<AppState>,
    ModelRef { model, .. }: ModelRef,
    Body(body): Body,
) -> Result<Response, ApiError> {
    refuse_load_parameters(&body)?;
    let models = st.models.clone();
    let name = model.clone();
    tokio::task::spawn_blocking(move || models.load_model(&name))
        .await
        .map_err(|e| ApiError::Internal(format!("load task failed: {e}")))??;
    Ok(json_response(
        StatusCode::OK,
        &RepositoryModel {
            name: model,
            version: None,
            state: RepositoryState::Ready,
            reason: String::new(),
        },
    ))
}

/// `POST /v2/repository/models/{m}/unload`.
#[utoipa::path(post, path = "/v2/repository/models/{model}/unload", tag = "repository", params(("model" = String, Path, description = "Model name")), responses((status = 200, description = "Unloaded"), (status = 404, description = "Unknown model", body = crate::http::v2::wire::ErrorBody)))]
pub async fn unload(
    State(st): State<AppState>,
    ModelRef { model, .. }: ModelRef,
) -> Result<Response, ApiError> {
    st.models.unload_model(&model)?;
    Ok(json_response(
        StatusCode::OK,
        &RepositoryModel {
            name: model,
            version: None,
            state: RepositoryState::Unavailable,
            reason: String::new(),
        },
    ))
}

/// Triton's load request may carry `parameters` (a JSON model config, file overrides); scoria
/// loads what is on disk, so any parameter is refused rather than silently ignored.
fn refuse_load_parameters(body: &[u8]) -> Result<(), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let doc: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("malformed load request: {e}")))?;
    let serde_json::Value::Object(doc) = doc else {
        return Err(ApiError::BadRequest(
            "malformed load request: expected a JSON object".into(),
        ));
    };
    if let Some(k) = doc.keys().find(|k| k.as_str() != "parameters") {
        return Err(ApiError::BadRequest(format!(
            "malformed load request: unknown key '{k}'"
        )));
    }
    match doc.get("parameters") {
        None | Some(serde_json::Value::Null) => Ok(()),
        Some(serde_json::Value::Object(p)) if p.is_empty() => Ok(()),
        Some(serde_json::Value::Object(p)) => Err(ApiError::BadRequest(format!(
            "load parameters are not supported ({}): scoria loads the model's files and config.toml from the repository",
            p.keys().cloned().collect::<Vec<_>>().join(", ")
        ))),
        Some(_) => Err(ApiError::BadRequest(
            "malformed load request: parameters must be an object".into(),
        )),
    }
}
