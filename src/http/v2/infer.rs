//! `POST /v2/models/{m}[/versions/{v}]/infer`.

use super::codec::{self, HEADER_LENGTH};
use super::ModelRef;
use crate::http::body::Incoming;
use crate::http::metrics::ServedBy;
use crate::http::{ApiError, AppState};
use crate::models::intake::Room;
use crate::models::stats::Timings;
use crate::models::LoadedVersion;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Requests with more JSON than this (or a larger body) are decoded on a blocking thread,
/// and responses with more output elements than [`OFFLOAD_ELEMENTS`] encoded there: parsing
/// or printing megabytes takes milliseconds that must not stall the executor's other
/// requests. Smaller ones stay put, where a thread handoff would cost more than the work.
const OFFLOAD_JSON_BYTES: usize = 64 << 10;
const OFFLOAD_BODY_BYTES: usize = 1 << 20;
const OFFLOAD_ELEMENTS: usize = 16 << 10;

/// Decodes the request, runs it through the serving core and encodes the outputs. The body
/// is read once the version has room for it, and the room held until the answer. The
/// response, error or not, names the version that served it for the metrics.
#[utoipa::path(post, path = "/v2/models/{model}/infer", tag = "v2", params(("model" = String, Path, description = "Model name")), request_body(content = crate::http::v2::wire::InferenceRequest, description = "JSON, or a JSON header of Inference-Header-Content-Length bytes followed by binary tensor data"), responses((status = 200, description = "Outputs", body = crate::http::v2::wire::InferenceResponse), (status = 400, description = "The request does not fit the model", body = crate::http::v2::wire::ErrorBody), (status = 413, description = "Body over the size limit", body = crate::http::v2::wire::ErrorBody), (status = 500, description = "Inference failed", body = crate::http::v2::wire::ErrorBody), (status = 404, description = "Unknown model or version", body = crate::http::v2::wire::ErrorBody), (status = 503, description = "The model cannot serve (loading, failed or unloaded)", body = crate::http::v2::wire::ErrorBody)))]
pub async fn infer(
    State(st): State<AppState>,
    r: ModelRef,
    HeaderLength(header_length): HeaderLength,
    req: Request,
) -> Result<Response, ApiError> {
    let incoming = Incoming::start(req, &st).await?;
    let loaded = match st.models.get(&r.model, r.version.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => return Err(incoming.refuse(e).await),
    };
    let (body, mut room) = incoming.read_within(loaded.intake(), &st).await?;
    let mut served = ServedBy {
        model: loaded.name().to_string(),
        version: loaded.version().to_string(),
        timings: None,
    };
    let mut response = match run(&loaded, header_length.as_ref(), body, &mut room).await {
        Ok((response, timings)) => {
            served.timings = Some(timings);
            response
        }
        Err(e) => e.into_response(),
    };
    response.extensions_mut().insert(served);
    Ok(response)
}

/// Takes the body by value: it is dropped once decoded, so a request waiting for an instance
/// holds its tensors but not also the bytes they came from, and its `room` shrinks to them.
async fn run(
    loaded: &Arc<LoadedVersion>,
    header_length: Option<&HeaderValue>,
    body: Bytes,
    room: &mut Room,
) -> Result<(Response, Timings), ApiError> {
    let header_length = header_length.map(HeaderValue::as_bytes);
    let json_bytes = header_length
        .and_then(|h| std::str::from_utf8(h).ok()?.trim().parse::<usize>().ok())
        .map_or(body.len(), |n| n.min(body.len()));
    let request = if json_bytes > OFFLOAD_JSON_BYTES || body.len() > OFFLOAD_BODY_BYTES {
        let header_length = header_length.map(<[u8]>::to_vec);
        off_executor(move || codec::decode_request(&body, header_length.as_deref())).await?
    } else {
        let request = codec::decode_request(&body, header_length)?;
        drop(body);
        request
    };
    room.shrink_to(request.inputs.iter().map(|t| t.tensor.data().bytes()).sum());
    let inference = loaded
        .infer_with(request.inputs, request.outputs, request.options)
        .await?;
    let version = loaded.version().to_string();
    let elements: usize = inference
        .outputs
        .iter()
        .map(|o| o.tensor.data().len())
        .sum();
    let timings = inference.timings;
    let encoded = if elements > OFFLOAD_ELEMENTS {
        let name = loaded.name().to_string();
        let (id, outputs, binary) = (request.id, inference.outputs, request.binary);
        off_executor(move || codec::encode_response(&name, &version, id, &outputs, &binary)).await?
    } else {
        codec::encode_response(
            loaded.name(),
            &version,
            request.id,
            &inference.outputs,
            &request.binary,
        )?
    };
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
    Ok((response, timings))
}

/// The request's `Inference-Header-Content-Length`, if any: the one header the handler reads,
/// taken alone rather than by copying the whole header map.
pub struct HeaderLength(Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for HeaderLength {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(HeaderLength(parts.headers.get(HEADER_LENGTH).cloned()))
    }
}

/// Runs `work` on a blocking-pool thread.
async fn off_executor<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal(format!("codec task failed: {e}")))?
}
