//! `--max-inflight`: a bound on inference requests in flight, refused at once beyond it.

use super::{ApiError, AppState};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How long a refused request's body is read (and dropped) before the answer.
const DRAIN_REFUSED: Duration = Duration::from_secs(1);

/// Counts one admitted request until dropped.
struct Admitted<'a>(&'a AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Inference and scoring requests (`POST …/infer`, `…/score`) beyond the server's
/// `max_inflight` are answered 503 with `Retry-After: 1` at once, without decoding their body,
/// instead of queueing without bound; health, metadata and metrics are never refused. The
/// refused body is read and dropped as it streams in (for at most a second), so a client that
/// sends its whole body before reading gets the 503 on a connection that stays usable rather
/// than a reset.
pub async fn admit(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(limit) = st.config.max_inflight else {
        return next.run(req).await;
    };
    let inference = req.method() == Method::POST
        && req
            .extensions()
            .get::<MatchedPath>()
            .is_some_and(|p| p.as_str().ends_with("/infer") || p.as_str().ends_with("/score"));
    if !inference {
        return next.run(req).await;
    }
    let before = st.admitted.fetch_add(1, Ordering::Relaxed);
    let admitted = Admitted(&st.admitted);
    if before >= limit {
        drop(admitted);
        let mut body = req.into_body();
        let discard = async { while let Some(Ok(_)) = body.frame().await {} };
        let _ = tokio::time::timeout(DRAIN_REFUSED, discard).await;
        let mut response = ApiError::Unavailable(format!(
            "the server is at its limit of {limit} inference requests in flight (--max-inflight); retry later"
        ))
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    let response = next.run(req).await;
    drop(admitted);
    response
}
