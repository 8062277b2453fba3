//! The page's files, embedded in the binary at build time (no npm, nothing fetched at run
//! time). `assets/vendor/` holds uPlot 1.6.32 (MIT, its LICENSE beside it) as published on
//! npm.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// One embedded file.
pub(super) struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $path:literal, $type:literal) => {
        Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!($path),
        }
    };
}

/// Every file under `/ui/assets/`, by name.
pub(super) const ASSETS: &[Asset] = &[
    asset!("studio.css", "assets/studio.css", "text/css; charset=utf-8"),
    asset!(
        "studio.js",
        "assets/studio.js",
        "text/javascript; charset=utf-8"
    ),
    asset!(
        "uPlot.iife.min.js",
        "assets/vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8"
    ),
    asset!(
        "uPlot.min.css",
        "assets/vendor/uPlot.min.css",
        "text/css; charset=utf-8"
    ),
    asset!(
        "uPlot.LICENSE.txt",
        "assets/vendor/uPlot.LICENSE",
        "text/plain; charset=utf-8"
    ),
    asset!("favicon.svg", "assets/favicon.svg", "image/svg+xml"),
];

/// The page itself.
pub(super) const INDEX: Asset = asset!(
    "index.html",
    "assets/index.html",
    "text/html; charset=utf-8"
);

/// Strong ETags of every asset (and the page), computed once.
fn etag(asset: &Asset) -> HeaderValue {
    static TAGS: OnceLock<Vec<(&'static str, HeaderValue)>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .chain(std::iter::once(&INDEX))
            .map(|a| {
                let digest = Sha256::digest(a.bytes);
                let tag = format!("\"{}\"", hex::encode(&digest[..12]));
                let value = HeaderValue::from_str(&tag)
                    .expect("a quoted hex digest is a valid header value; this is a bug");
                (a.name, value)
            })
            .collect()
    });
    tags.iter()
        .find(|(name, _)| *name == asset.name)
        .map_or_else(|| HeaderValue::from_static("\"\""), |(_, v)| v.clone())
}

/// The asset as a response: 304 when the client's copy is current. Browsers revalidate
/// each time (`no-cache`), so a new binary's page is never mixed with old scripts.
fn respond(asset: &Asset, headers: &HeaderMap) -> Response {
    let tag = etag(asset);
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == tag.as_bytes());
    let common = [
        (header::ETAG, tag),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    if cached {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        StatusCode::OK,
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.bytes,
    )
        .into_response()
}

/// `GET /ui`: the page.
pub(super) async fn index(headers: HeaderMap) -> Response {
    respond(&INDEX, &headers)
}

/// `GET /ui/assets/{file}`.
pub(super) async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => respond(asset, &headers),
        None => {
            super::super::ApiError::NotFound(format!("no studio asset '{name}'")).into_response()
        }
    }
}
