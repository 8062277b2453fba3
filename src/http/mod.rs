//! The HTTP front end: Open Inference Protocol v2 over REST (axum).
//!
//! Handlers decode requests, call the serving core ([`crate::models`]) and encode results;
//! they never run inference themselves.

mod admission;
pub mod auth;
pub(crate) mod body;
mod error;
mod front;
pub mod metrics;
mod openapi;
mod score;
mod ui;
pub mod v2;

#[cfg(test)]
mod tests;

pub use error::ApiError;

use crate::models::{InflightLimit, ModelManager};
use crate::telemetry::Metrics;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tower::Layer;

/// Default request body limit: 64 MiB.
pub const DEFAULT_MAX_BODY: usize = 64 << 20;

/// HTTP server settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest accepted request body in bytes; larger ones are answered 413.
    pub max_body_bytes: usize,
    /// When set, every route but `/`, `/v2/health/*` and `/metrics` needs one of these keys.
    pub api_keys: Option<Arc<auth::ApiKeys>>,
    /// The model `POST /score` scores on; `None` means the only model served.
    pub default_model: Option<String>,
    /// How long a client may take to send a request's headers, or go silent mid-body.
    pub client_timeout: Duration,
    /// `/v2/health/ready` waits for every model to be ready, not only to finish loading.
    pub strict_readiness: bool,
    /// Inference requests allowed in flight at once, shared with the gRPC front end; more
    /// are refused with 503 at once.
    pub inflight: Arc<InflightLimit>,
    /// The workspace's run history (`<workspace>/runs`) the studio lists; `None` lists none.
    pub runs_dir: Option<std::path::PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: DEFAULT_MAX_BODY,
            api_keys: None,
            default_model: None,
            client_timeout: DEFAULT_CLIENT_TIMEOUT,
            strict_readiness: true,
            inflight: Arc::default(),
            runs_dir: None,
        }
    }
}

/// What every handler can reach (through `Deref` to [`Shared`]): one allocation, so that the
/// clone axum makes of it per request and per middleware is one reference count to update
/// rather than one per field (their atomic updates from every core showed in the profile).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The fields of [`AppState`].
pub struct Shared {
    pub models: Arc<ModelManager>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<HttpConfig>,
}

impl AppState {
    /// The state of a server of `models` recording into `metrics`, configured by `config`.
    pub fn new(models: Arc<ModelManager>, metrics: Arc<Metrics>, config: HttpConfig) -> AppState {
        AppState(Arc::new(Shared {
            models,
            metrics,
            config: Arc::new(config),
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The complete router, without a socket (tests drive it with `oneshot`).
/// Every route, fallbacks included, goes through [`front::front`]: with API keys configured,
/// authentication comes first, so unknown paths reveal nothing to unauthenticated callers
/// and no body is read before the check.
pub fn router(models: Arc<ModelManager>, metrics: Arc<Metrics>, config: HttpConfig) -> Router {
    let state = AppState::new(models, metrics, config);
    v2::routes()
        .route("/metrics", get(metrics::metrics))
        .route("/", get(score::healthy))
        .route("/swagger.json", get(openapi::swagger))
        .route("/score", post(score::score_default))
        .route("/models/{model}/score", post(score::score_model))
        .merge(ui::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            front::front,
        ))
        .with_state(state)
}

async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

/// Default [`HttpConfig::client_timeout`]: 30 s.
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The most a connection's read buffer grows to (hyper's default is 400 KiB), which also
/// bounds a request's header block (larger ones get 431, as uvicorn's and Node's 16 KiB
/// limits answer). hyper keeps a connection's buffer at the largest size its reads needed,
/// and a connection whose body waits for its model's room keeps it: with 16 clients sending
/// 600 KB tensors the default held 6 MiB of buffers besides the requests themselves (resnet
/// at concurrency 16: jemalloc's live bytes 36 → 27 MiB, peak RSS 81 → 69 MiB), 64 KiB still
/// 0.5–1 MiB (three sample models, resnet's JSON at c16: peak 45.3–46.3 → 43.6–44.3 MiB;
/// `bench_memory.py`'s samples: 46.1–46.4 → 45.5–45.6), throughput unchanged either time.
/// A larger body arrives in more reads.
const READ_BUFFER_BYTES: usize = 16 << 10;

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and drains
/// in-flight requests. A client that takes over `client_timeout` to send a request's headers
/// (an idle keep-alive connection counts as a request not yet sent) is disconnected, so
/// half-sent requests cannot pile up and take every file descriptor; the body extractor
/// applies the same timeout to a stalled body. Accepted sockets get TCP_NODELAY: responses
/// are written in one piece, so there is nothing to coalesce and Nagle would only add latency.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    client_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(client_timeout)
        .max_buf_size(READ_BUFFER_BYTES);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // The studio's server page shows where the server listens. Added once in front of the
    // router rather than with `Router::layer`, which would wrap (and box) every route.
    let listen = ui::ListenAddr(listener.local_addr().ok());
    tokio::pin!(shutdown);
    loop {
        let (tcp, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was taken:
                    // wait a little rather than spin, and go on serving.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("could not set TCP_NODELAY: {e}");
        }
        let service = hyper_util::service::TowerToHyperService::new(
            axum::Extension(listen).layer(router.clone()),
        );
        let connection = http.serve_connection(TokioIo::new(tcp), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A JSON response serialized into one buffer.
pub(crate) fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "application/json")],
            format!("{{\"error\":\"response could not be encoded: {e}\"}}"),
        )
            .into_response(),
    }
}
