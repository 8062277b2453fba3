//! `POST /v2/models/{m}[/versions/{v}]/infer`.

use super::codec::{self, HEADER_LENGTH};
use super::ModelRef;
use crate::http::body::Body;
use crate::http::metrics::ServedBy;
use crate::http::{ApiError, AppState};
use crate::models::stats::Timings;
use crate::models::LoadedVersion;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Decodes the request, runs it through the serving core and encodes the outputs. The
/// response, error or not, names the version that served it for the metrics.
#[utoipa::path(post, path = "/v2/models/{model}/infer", tag = "v2", params(("model" = String, Path, description = "Model name")), request_body(content = crate::http::openapi::InferenceRequest, description = "JSON, or a JSON header of Inference-Header-Content-Length bytes followed by binary tensor data"), responses((status = 200, description = "Outputs", body = crate::http::openapi::InferenceResponse), (status = 400, description = "The request does not fit the model", body = crate::http::openapi::ErrorBody), (status = 413, description = "Body over the size limit", body = crate::http::openapi::ErrorBody), (status = 500, description = "Inference failed", body = crate::http::openapi::ErrorBody), (status = 404, description = "Unknown model or version", body = crate::http::openapi::ErrorBody), (status = 503, description = "The model cannot serve (loading, failed or unloaded)", body = crate::http::openapi::ErrorBody)))]
pub async fn infer(
    State(st): State<AppState>,
    r: ModelRef,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let loaded = st.models.get(&r.model, r.version.as_deref())?;
    let mut served = ServedBy {
        model: loaded.name().to_string(),
        version: loaded.version().to_string(),
        timings: None,
    };
    let mut response = match run(&loaded, &headers, &body).await {
        Ok((response, timings)) => {
            served.timings = Some(timings);
            response
        }
        Err(e) => e.into_response(),
    };
    response.extensions_mut().insert(served);
    Ok(response)
}

async fn run(
    loaded: &Arc<LoadedVersion>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Response, Timings), ApiError> {
    let request =
        codec::decode_request(body, headers.get(HEADER_LENGTH).map(HeaderValue::as_bytes))?;
    let inference = loaded.infer(request.inputs, request.outputs).await?;
    let version = loaded.version().to_string();
    let encoded = codec::encode_response(
        loaded.name(),
        &version,
        request.id,
        &inference.outputs,
        &request.binary,
    )?;
    let content_type = match encoded.header_length {
        None => "application/json",
        Some(_) => "application/octet-stream",
    };
    let mut response = (StatusCode::OK, encoded.body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(n) = encoded.header_length {
        h.insert(HEADER_LENGTH, HeaderValue::from(n));
    }
    Ok((response, inference.timings))
}
