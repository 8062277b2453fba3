//! The request-body extractor: buffers up to the configured limit and answers violations
//! with the API's own error body (413 for an oversized body).

use super::{ApiError, AppState};
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use http_body_util::{BodyExt, Limited};

/// The whole request body, at most `HttpConfig::max_body_bytes` long.
pub struct Body(pub Bytes);

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.config.max_body_bytes;
        let too_large = || {
            ApiError::PayloadTooLarge(format!(
                "request body exceeds the limit of {limit} bytes (--max-body-size)"
            ))
        };
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        match Limited::new(req.into_body(), limit).collect().await {
            Ok(collected) => Ok(Body(collected.to_bytes())),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Err(e) => Err(ApiError::BadRequest(format!(
                "could not read the request body: {e}"
            ))),
        }
    }
}
