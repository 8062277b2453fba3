//! Request instrumentation and the `/metrics` route.
//!
//! Handlers that serve a model attach a [`ServedBy`] to their response; one middleware turns
//! every response into a [`RequestRecord`], so counting happens in exactly one place.

use super::AppState;
use crate::models::stats::Timings;
use crate::telemetry::RequestRecord;
use axum::body::HttpBody;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Instant;

/// The model version that served a response, and where its time went.
#[derive(Debug, Clone)]
pub struct ServedBy {
    pub model: String,
    pub version: String,
    pub timings: Option<Timings>,
}

/// Middleware: records every request in the metrics registry.
pub async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let request_bytes = req.body().size_hint().exact().unwrap_or(0);
    let response = next.run(req).await;
    let status = response.status();
    let outcome = if status.is_server_error() {
        "server_error"
    } else if status.is_client_error() {
        "client_error"
    } else {
        "success"
    };
    let served = response.extensions().get::<ServedBy>();
    st.metrics.record(&RequestRecord {
        model: served.map_or("", |s| &s.model),
        version: served.map_or("", |s| &s.version),
        route: &route,
        outcome,
        total: started.elapsed(),
        timings: served.and_then(|s| s.timings),
        request_bytes,
        response_bytes: response.body().size_hint().exact().unwrap_or(0),
    });
    response
}

/// `GET /metrics`: the Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(st): State<AppState>) -> Response {
    let text = st.metrics.render(&st.models);
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
