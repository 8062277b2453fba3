//! `--max-inflight` on the HTTP routes: inference requests beyond the server-wide bound
//! ([`crate::models::InflightLimit`]) are refused at once.

use super::ApiError;
use crate::models::InflightLimit;
use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Inference and scoring requests (`POST …/infer`, `…/score`) beyond the server's
/// in-flight limit are answered 503 with `Retry-After: 1` at once, without decoding their
/// body, instead of queueing without bound; health, metadata and metrics are never refused.
/// The refused body is read and dropped as it streams in ([`super::body::discard`]), so a client
/// that sends its whole body before reading gets the 503 on a connection that stays usable
/// rather than a reset. Part of [`super::front`], the one middleware of every route.
pub(super) async fn admit(inflight: &Arc<InflightLimit>, req: Request, next: Next) -> Response {
    if inflight.limit().is_none() {
        return next.run(req).await;
    }
    let inference = req.method() == Method::POST
        && req
            .extensions()
            .get::<MatchedPath>()
            .is_some_and(|p| p.as_str().ends_with("/infer") || p.as_str().ends_with("/score"));
    if !inference {
        return next.run(req).await;
    }
    match inflight.admit() {
        Ok(admitted) => {
            let response = next.run(req).await;
            drop(admitted);
            response
        }
        Err(refused) => {
            super::body::discard(req.into_body()).await;
            let mut response =
                ApiError::from_kind(refused.kind(), refused.to_string()).into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
    }
}
