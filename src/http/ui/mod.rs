//! The workspace studio: `GET /ui`, a web page served from the binary.
//!
//! The page (HTML, CSS, JavaScript and the vendored uPlot chart library, all under
//! `src/http/ui/assets/` and embedded at build time by [`assets`]) shows the server, its
//! models and versions, live charts drawn from `/metrics`, the workspace's benchmark run
//! history, a try-it form and, for admin keys, load/unload through the v2 repository API.
//! It makes no request to any other origin, and every response under `/ui` carries a
//! Content-Security-Policy that forbids them (and inline scripts).
//!
//! Routes: `/ui` (the page) and `/ui/assets/{file}` are open, like `/`, so a browser can
//! load the page and ask for a key; the JSON the page reads, `/ui/api/server`,
//! `/ui/api/models`, `/ui/api/runs` and `/ui/api/runs/{id}` ([`api`]), needs a key (any
//! role) when the server has keys, as every data route does.

mod api;
mod assets;

pub(super) use api::ListenAddr;

use super::AppState;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The page's own path.
pub const PATH: &str = "/ui";

/// Content-Security-Policy of every `/ui` response: this origin only, no inline script or
/// style, no plugins, not framed by other sites.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The studio's routes (paths start with [`PATH`]).
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(assets::index))
        .route("/ui/", get(assets::index))
        .route("/ui/assets/{file}", get(assets::file))
        .route("/ui/api/server", get(api::server))
        .route("/ui/api/models", get(api::models))
        .route("/ui/api/runs", get(api::runs))
        .route("/ui/api/runs/{id}", get(api::run))
}

/// Adds the studio's security headers (see [`CSP`]) to a response.
pub(super) fn add_security_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// True for the paths whose responses (errors, 401s and 404s included) carry the studio's
/// security headers.
pub(super) fn is_studio_path(path: &str) -> bool {
    path == PATH || path.starts_with("/ui/")
}

/// True when the client asks for an HTML page (a browser), not a probe that reads `Healthy`.
pub(super) fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            let mut parts = media.split(';');
            let kind = parts.next().unwrap_or("").trim();
            // `text/html;q=0` refuses HTML.
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (kind.eq_ignore_ascii_case("text/html")
                || kind.eq_ignore_ascii_case("application/xhtml+xml"))
                && !refused
        })
}

/// `GET /` for a browser: 303 to the studio, with a link for clients that do not follow.
pub(super) fn redirect_to_studio() -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, HeaderValue::from_static(PATH)),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
        ],
        "<!doctype html><title>scoria</title><p>Healthy. The studio is at <a href=\"/ui\">/ui</a>.</p>\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests;
