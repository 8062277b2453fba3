//! Request instrumentation and the `/metrics` route.
//!
//! Handlers that serve a model attach a [`ServedBy`] to their response; [`Tracker`], in the
//! one middleware of every route, turns every response into a [`RequestRecord`], so counting
//! happens in exactly one place.

use super::AppState;
use crate::models::stats::Timings;
use crate::telemetry::{InFlight, Metrics, RequestRecord};
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// A request body that counts the data bytes read through it (a chunked body has no length
/// up front).
struct Counted {
    inner: Body,
    read: Arc<AtomicU64>,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.read.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The model version that served a response, and where its time went.
#[derive(Debug, Clone)]
pub struct ServedBy {
    pub model: String,
    pub version: String,
    pub timings: Option<Timings>,
}

/// One request being counted, from its arrival ([`Tracker::start`]) to its response
/// ([`Tracker::finish`]); part of [`super::front`], the one middleware of every route.
pub(super) struct Tracker {
    started: Instant,
    _in_flight: InFlight,
    route: Option<MatchedPath>,
    read: Arc<AtomicU64>,
}

impl Tracker {
    /// Counts `req` as in flight and its body's bytes as the handler reads them.
    pub(super) fn start(metrics: &Metrics, req: Request) -> (Tracker, Request) {
        let read = Arc::new(AtomicU64::new(0));
        let tracker = Tracker {
            started: Instant::now(),
            _in_flight: metrics.in_flight(),
            route: req.extensions().get::<MatchedPath>().cloned(),
            read: Arc::clone(&read),
        };
        let req = req.map(|inner| Body::new(Counted { inner, read }));
        (tracker, req)
    }

    /// Records the request in `metrics` with its `response`.
    pub(super) fn finish(self, metrics: &Metrics, response: &Response) {
        // What the handler read; a body it never read counts as nothing received.
        let request_bytes = self.read.load(Ordering::Relaxed);
        let status = response.status();
        let outcome = if status.is_server_error() {
            "server_error"
        } else if status.is_client_error() {
            "client_error"
        } else {
            "success"
        };
        let served = response.extensions().get::<ServedBy>();
        metrics.record(&RequestRecord {
            model: served.map_or("", |s| &s.model),
            version: served.map_or("", |s| &s.version),
            route: self.route.as_ref().map_or("unmatched", MatchedPath::as_str),
            outcome,
            total: self.started.elapsed(),
            timings: served.and_then(|s| s.timings),
            request_bytes,
            response_bytes: response.body().size_hint().exact().unwrap_or(0),
        });
    }
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
