//! Liveness and readiness of the server and of each model.

use super::ModelRef;
use crate::http::{json_response, ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

/// Live as long as the process answers.
pub async fn live() -> Response {
    json_response(StatusCode::OK, &json!({ "live": true }))
}

/// Ready once every model has finished loading (successfully or not; a failed model is
/// reported by its own readiness route, and the others serve).
pub async fn ready(State(st): State<AppState>) -> Result<Response, ApiError> {
    if st.models.is_ready() {
        Ok(json_response(StatusCode::OK, &json!({ "ready": true })))
    } else {
        Err(ApiError::Unavailable("models are still loading".into()))
    }
}

/// 200 when the model (version) can serve; 503 with the reason when it cannot.
pub async fn model_ready(State(st): State<AppState>, r: ModelRef) -> Result<Response, ApiError> {
    let loaded = st.models.get(&r.model, r.version.as_deref())?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "name": loaded.name(), "version": loaded.version().to_string(), "ready": true }),
    ))
}
