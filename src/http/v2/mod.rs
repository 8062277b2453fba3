//! Open Inference Protocol v2 routes (KServe / Triton REST).

pub mod codec;
pub(in crate::http) mod health;
pub(in crate::http) mod infer;
pub(in crate::http) mod metadata;
pub(in crate::http) mod repository;
pub(in crate::http) mod triton;
pub mod wire;

use super::{ApiError, AppState};
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

/// The v2 routes; every model route exists with and without `/versions/{version}`.
pub fn routes() -> Router<AppState> {
    const M: &str = "/v2/models/{model}";
    const MV: &str = "/v2/models/{model}/versions/{version}";
    let mut router = Router::new()
        .route("/v2", get(metadata::server))
        .route("/v2/health/live", get(health::live))
        .route("/v2/health/ready", get(health::ready))
        .route("/v2/models/stats", get(triton::all_stats))
        .route("/v2/repository/index", post(repository::index))
        .route("/v2/repository/models/{model}/load", post(repository::load))
        .route(
            "/v2/repository/models/{model}/unload",
            post(repository::unload),
        );
    for base in [M, MV] {
        router = router
            .route(base, get(metadata::model))
            .route(&format!("{base}/ready"), get(health::model_ready))
            .route(&format!("{base}/infer"), post(infer::infer))
            .route(&format!("{base}/config"), get(triton::config))
            .route(&format!("{base}/stats"), get(triton::stats));
    }
    router
}

/// The `{model}` and optional `{version}` of a model route.
#[derive(Deserialize)]
pub struct ModelRef {
    pub(crate) model: String,
    #[serde(default)]
    pub(crate) version: Option<String>,
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
