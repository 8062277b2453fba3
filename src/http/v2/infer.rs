//! `POST /v2/models/{m}[/versions/{v}]/infer`.

use super::codec::{self, InferResponse};
use super::ModelRef;
use crate::http::body::Body;
use crate::http::{json_response, ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

/// Decodes the request, runs it through the serving core and encodes the outputs.
pub async fn infer(
    State(st): State<AppState>,
    r: ModelRef,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let loaded = st.models.get(&r.model, r.version.as_deref())?;
    let request = codec::decode_request(&body)?;
    let outputs = loaded.infer(request.inputs, request.outputs).await?;
    let response = InferResponse {
        model_name: loaded.name(),
        model_version: loaded.version().to_string(),
        id: request.id,
        outputs: outputs.iter().map(Into::into).collect(),
    };
    Ok(json_response(StatusCode::OK, &response))
}
