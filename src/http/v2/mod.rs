//! Open Inference Protocol v2 routes (KServe / Triton REST).

pub mod codec;
mod health;
mod infer;
mod metadata;

use super::{ApiError, AppState};
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

/// The v2 routes; every model route exists with and without `/versions/{version}`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2", get(metadata::server))
        .route("/v2/health/live", get(health::live))
        .route("/v2/health/ready", get(health::ready))
        .route("/v2/models/{model}", get(metadata::model))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(metadata::model),
        )
        .route("/v2/models/{model}/ready", get(health::model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(health::model_ready),
        )
        .route("/v2/models/{model}/infer", post(infer::infer))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(infer::infer),
        )
}

/// The `{model}` and optional `{version}` of a model route.
#[derive(Deserialize)]
pub struct ModelRef {
    model: String,
    #[serde(default)]
    version: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ModelRef {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<ModelRef>::from_request_parts(parts, state)
            .await
            .map(|Path(r)| r)
            .map_err(|e| ApiError::BadRequest(format!("invalid model path: {e}")))
    }
}
