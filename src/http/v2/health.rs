//! Liveness and readiness of the server and of each model.

use super::wire::{Live, ModelReady, Ready};
use super::ModelRef;
use crate::http::{json_response, ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use std::borrow::Cow;

/// Live as long as the process answers.
#[utoipa::path(get, path = "/v2/health/live", tag = "v2", responses((status = 200, description = "The server is live")))]
pub async fn live() -> Response {
    json_response(StatusCode::OK, &Live { live: true })
}

/// Ready once every model has finished loading and, with strict readiness (the default, as
/// Triton's `--strict-readiness`), every model that should serve can: 503 with the reason
/// otherwise. Without strict readiness a failed model is reported by its own readiness
/// route, and the server is ready with the others.
#[utoipa::path(get, path = "/v2/health/ready", tag = "v2", responses((status = 200, description = "Every model has finished loading (and, with strict readiness, is ready)"), (status = 503, description = "Models are still loading, or (strict) a model is not ready", body = crate::http::v2::wire::ErrorBody)))]
pub async fn ready(State(st): State<AppState>) -> Result<Response, ApiError> {
    match st.models.not_ready_reason(st.config.strict_readiness) {
        None => Ok(json_response(StatusCode::OK, &Ready { ready: true })),
        Some(reason) => Err(ApiError::Unavailable(reason)),
    }
}

/// 200 when the model (version) can serve; 503 with the reason when it cannot.
#[utoipa::path(get, path = "/v2/models/{model}/ready", tag = "v2", params(("model" = String, Path, description = "Model name")), responses((status = 200, description = "The model can serve"), (status = 404, description = "Unknown model or version", body = crate::http::v2::wire::ErrorBody), (status = 503, description = "The model cannot serve (loading, failed or unloaded)", body = crate::http::v2::wire::ErrorBody)))]
pub async fn model_ready(State(st): State<AppState>, r: ModelRef) -> Result<Response, ApiError> {
    let loaded = st.models.get(&r.model, r.version.as_deref())?;
    Ok(json_response(
        StatusCode::OK,
        &ModelReady {
            name: Cow::Borrowed(loaded.name()),
            ready: true,
            version: Cow::Owned(loaded.version().to_string()),
        },
    ))
}
