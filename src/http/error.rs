//! The HTTP layer's error: every failure a route can answer, and the one place that maps
//! each to a status code. The body is always `{"error": "<reason>"}`.

use crate::models::ModelError;
use crate::tensor::ErrorKind;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or does not fit the model.
    #[error("{0}")]
    BadRequest(String),
    /// No such route, model or version.
    #[error("{0}")]
    NotFound(String),
    /// No valid API key (answered with `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthorized(String),
    /// A valid key whose role does not allow the route.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The client stopped sending its request body.
    #[error("{0}")]
    RequestTimeout(String),
    /// A `Content-Encoding` the server cannot decode.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The model exists but cannot serve now.
    #[error("{0}")]
    Unavailable(String),
    /// Inference or the server itself failed.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl ApiError {
    /// The error answered for a failure of `kind` with the one-line `message`: the one place
    /// where the core's kinds become HTTP statuses.
    pub fn from_kind(kind: ErrorKind, message: String) -> ApiError {
        match kind {
            ErrorKind::NotFound => ApiError::NotFound(message),
            ErrorKind::InvalidInput => ApiError::BadRequest(message),
            ErrorKind::TooLarge => ApiError::PayloadTooLarge(message),
            ErrorKind::Unavailable => ApiError::Unavailable(message),
            ErrorKind::Unauthenticated => ApiError::Unauthorized(message),
            ErrorKind::PermissionDenied => ApiError::Forbidden(message),
            ErrorKind::Internal => ApiError::Internal(message),
        }
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        ApiError::from_kind(e.kind(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // 503s (loading, unloaded, failed models) are expected answers, not faults.
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!("{status}: {self}");
        } else {
            tracing::debug!("{status}: {self}");
        }
        let mut response =
            super::json_response(status, &serde_json::json!({ "error": self.to_string() }));
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
