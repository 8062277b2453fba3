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

/// Ready once every model has finished loading (successfully or not; a failed model is
/// reported by its own readiness route, and the others serve).
#[utoipa::path(get, path = "/v2/health/ready", tag = "v2", responses((status = 200, description = "Every model has finished loading"), (status = 503, description = "Models are still loading", body = crate::http::v2::wire::ErrorBody)))]
pub async fn ready(State(st): State<AppState>) -> Result<Response, ApiError> {
    if st.models.is_ready() {
        Ok(json_response(StatusCode::OK, &Ready { ready: true }))
    } else {
        Err(ApiError::Unavailable("models are still loading".into()))
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
