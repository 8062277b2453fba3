//! `POST /v2/models/{m}[/versions/{v}]/infer`.

use super::codec::{self, HEADER_LENGTH};
use super::ModelRef;
use crate::http::body::Body;
use crate::http::{ApiError, AppState};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Decodes the request, runs it through the serving core and encodes the outputs.
pub async fn infer(
    State(st): State<AppState>,
    r: ModelRef,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let loaded = st.models.get(&r.model, r.version.as_deref())?;
    let request =
        codec::decode_request(&body, headers.get(HEADER_LENGTH).map(HeaderValue::as_bytes))?;
    let outputs = loaded.infer(request.inputs, request.outputs).await?.outputs;
    let version = loaded.version().to_string();
    let encoded = codec::encode_response(
        loaded.name(),
        &version,
        request.id,
        &outputs,
        &request.binary,
    )?;
    let mut response = (StatusCode::OK, encoded.body).into_response();
    let h = response.headers_mut();
    match encoded.header_length {
        None => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        Some(n) => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(HEADER_LENGTH, HeaderValue::from(n));
        }
    }
    Ok(response)
}
