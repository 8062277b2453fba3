//! The one middleware of every route: what each request meets before its handler.

use super::metrics::Tracker;
use super::{admission, auth, ui, AppState};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// In order: with API keys configured, [`auth::authorize`] (a refused request is answered
/// at once and not counted in the metrics); [`Tracker`] (metrics); [`admission::admit`]
/// (`--max-inflight`); the handler. Responses under `/ui`, refusals included, get the
/// studio's security headers. One middleware rather than one per concern: each layer of a
/// router boxes and clones its inner service and boxes a future on every request, which the
/// profile showed as a few percent of a small model's request.
pub(super) async fn front(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let studio = ui::is_studio_path(req.uri().path());
    let authorized = match &st.config.api_keys {
        Some(keys) => auth::authorize(keys, &mut req),
        None => Ok(()),
    };
    let mut response = match authorized {
        Ok(()) => {
            let (tracker, req) = Tracker::start(&st.metrics, req);
            let response = admission::admit(&st.config.inflight, req, next).await;
            tracker.finish(&st.metrics, &response);
            response
        }
        Err(refused) => refused.into_response(),
    };
    if studio {
        ui::add_security_headers(response.headers_mut());
    }
    response
}
