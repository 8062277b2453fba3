//! Azure-ML-style routes: `POST /score`, `POST /models/{m}/score` and `GET /` liveness.

use super::body::Incoming;
use super::metrics::ServedBy;
use super::{json_response, ApiError, AppState};
use crate::models::score::score_blocking;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// `GET /`: Azure ML's liveness answer; a browser (asking for HTML) is sent to the studio.
#[utoipa::path(get, path = "/", tag = "azure-ml", responses((status = 200, description = "Healthy", content_type = "text/plain"), (status = 303, description = "To the studio at /ui, for clients that accept text/html")))]
pub async fn healthy(headers: axum::http::HeaderMap) -> Response {
    if super::ui::wants_html(&headers) {
        return super::ui::redirect_to_studio();
    }
    "Healthy".into_response()
}

/// `POST /models/{m}/score`: the request through the model's score hook (or the default
/// `{"data"}` / `{"inputs"}` mapping without one).
#[utoipa::path(post, path = "/models/{model}/score", tag = "azure-ml", params(("model" = String, Path, description = "Model name")), request_body(content = Object, description = "Without a hook: {\"data\": ...} or {\"inputs\": {name: ...}}; with a hook, whatever it takes"), responses((status = 200, description = "The hook's result, or outputs by name"), (status = 400, description = "Rejected by the hook or not fitting the model", body = crate::http::v2::wire::ErrorBody), (status = 500, description = "The hook or inference failed", body = crate::http::v2::wire::ErrorBody), (status = 404, description = "Unknown model or version", body = crate::http::v2::wire::ErrorBody), (status = 503, description = "The model cannot serve (loading, failed or unloaded)", body = crate::http::v2::wire::ErrorBody)))]
pub async fn score_model(
    State(st): State<AppState>,
    r: crate::http::v2::ModelRef,
    req: Request,
) -> Result<Response, ApiError> {
    let incoming = Incoming::start(req, &st).await?;
    score(st, &r.model, incoming).await
}

/// `POST /score`: scores on the default model — `--default-model`, or the only model in the
/// repository.
#[utoipa::path(post, path = "/score", tag = "azure-ml", request_body(content = Object), responses((status = 200, description = "The hook's result, or outputs by name"), (status = 404, description = "No default model", body = crate::http::v2::wire::ErrorBody)))]
pub async fn score_default(State(st): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let incoming = Incoming::start(req, &st).await?;
    let model = match &st.config.default_model {
        Some(m) => m.clone(),
        None => match st.models.statuses().as_slice() {
            [only] => only.name.clone(),
            all => {
                let e = ApiError::NotFound(format!(
                    "POST /score needs a default model: {} models are served; use POST /models/{{model}}/score or start with --default-model",
                    all.len()
                ));
                return Err(incoming.refuse(e).await);
            }
        },
    };
    score(st, &model, incoming).await
}

/// Scores the body of `incoming` on `model`'s served version, reading it once the version
/// has room for it ([`crate::models::intake`]).
async fn score(st: AppState, model: &str, incoming: Incoming) -> Result<Response, ApiError> {
    let served = match st.models.get_served(model, None) {
        Ok(served) => served,
        Err(e) => return Err(incoming.refuse(e).await),
    };
    let (body, _room) = incoming.read_within(served.model.intake(), &st).await?;
    let label = ServedBy {
        model: served.model.name().to_string(),
        version: served.model.version().to_string(),
        timings: None,
    };
    let result = tokio::task::spawn_blocking(move || score_blocking(&served, &body))
        .await
        .map_err(|e| ApiError::Internal(format!("scoring task failed: {e}")))?;
    let mut response = match result {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err(e) => ApiError::from(e).into_response(),
    };
    response.extensions_mut().insert(label);
    Ok(response)
}
