//! The gRPC front end: Triton's `inference.GRPCInferenceService` (the superset of KServe's v2
//! gRPC protocol) and `grpc.health.v1.Health`, over tonic.
//!
//! Like the HTTP routes, calls decode their message, call the serving core
//! ([`crate::models`]) and encode the result; they never run inference themselves. The same
//! keys ([`crate::auth`]), limits and metrics apply. [`guard`] admits a call before its
//! message is read: its key, the concurrent-call limit, the message size limit. The core's
//! error kinds become gRPC codes in one place, [`status::from_kind`].

mod codec;
mod guard;
mod health;
pub mod proto;
mod service;
pub mod status;
mod stream;
mod triton;

use crate::auth::ApiKeys;
use crate::models::{InflightLimit, ModelManager};
use crate::telemetry::Metrics;
use proto::health::health_server::HealthServer;
use proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Default [`GrpcConfig::max_message_bytes`]: 64 MiB, as HTTP's body limit.
pub const DEFAULT_MAX_MESSAGE: usize = 64 << 20;

/// Default [`GrpcConfig::max_streams`].
pub const DEFAULT_MAX_STREAMS: u32 = 1024;

/// gRPC server settings.
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    /// Largest accepted message in bytes (`--max-body-size`); a larger one fails its call
    /// with RESOURCE_EXHAUSTED.
    pub max_message_bytes: usize,
    /// When set, every call but the health checks needs one of these keys.
    pub api_keys: Option<Arc<ApiKeys>>,
    /// Calls (streams included) open at once, over all connections; more are refused with
    /// RESOURCE_EXHAUSTED. Health checks are not counted.
    pub max_streams: usize,
    /// How often an idle connection is pinged, and how long a ping may go unanswered before
    /// the connection is dropped.
    pub keepalive: Duration,
    /// `ServerReady` and the health service also need every model loaded (Triton's
    /// `--strict-readiness`), as `GET /v2/health/ready` does.
    pub strict_readiness: bool,
    /// The server-wide bound on inference requests in flight (`--max-inflight`), shared with
    /// HTTP: a `ModelInfer` call, or a request of a stream, beyond it is refused at once
    /// with UNAVAILABLE.
    pub inflight: Arc<InflightLimit>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            max_message_bytes: DEFAULT_MAX_MESSAGE,
            api_keys: None,
            max_streams: DEFAULT_MAX_STREAMS as usize,
            keepalive: Duration::from_secs(30),
            strict_readiness: true,
            inflight: Arc::default(),
        }
    }
}

/// Serves gRPC on `listener` until `shutdown` resolves, then stops accepting, lets open
/// calls finish (streams stop taking requests and end with UNAVAILABLE once the requests
/// they took are answered) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    models: Arc<ModelManager>,
    metrics: Arc<Metrics>,
    config: GrpcConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let shared = Arc::new(service::Shared {
        models,
        metrics,
        stopping,
        strict_readiness: config.strict_readiness,
        inflight: Arc::clone(&config.inflight),
    });
    let inference = GrpcInferenceServiceServer::new(service::Inference {
        shared: Arc::clone(&shared),
    })
    .max_decoding_message_size(config.max_message_bytes)
    .max_encoding_message_size(usize::MAX);
    let health = HealthServer::new(health::HealthService { shared });
    let guard = guard::Guard::new(
        config.api_keys,
        config.max_streams,
        config.max_message_bytes,
        config.inflight,
    );
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    // Past the global limit, so that one connection's extra calls get RESOURCE_EXHAUSTED from
    // the guard (and health checks still pass) instead of waiting in the client's queue.
    let streams_per_connection =
        u32::try_from(config.max_streams.saturating_add(16)).unwrap_or(u32::MAX);
    let mut server = tonic::transport::Server::builder()
        .max_concurrent_streams(streams_per_connection)
        .http2_keepalive_interval(Some(config.keepalive))
        .http2_keepalive_timeout(Some(config.keepalive))
        .layer(guard);
    server
        .add_service(inference)
        .add_service(health)
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            // Streams that look after the sender is gone still see `true`.
            let _ = stopping_tx.send(true);
        })
        .await
}
