//! `scoria serve`.

use super::GlobalArgs;
use crate::engine::Backend;
use crate::grpc::{self, GrpcConfig};
use crate::http::{self, HttpConfig};
use crate::models::autocomplete::DEFAULT_MAX_BATCH_SIZE;
use crate::models::{InflightLimit, LoadDefaults, ModelManager};
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (use 0.0.0.0:8000 to accept connections from other hosts).
    #[arg(
        long,
        env = "SCORIA_HTTP",
        default_value = "127.0.0.1:8000",
        value_parser = super::listen_address,
        value_name = "ADDR"
    )]
    pub http: String,

    /// gRPC address (Triton's GRPCInferenceService and grpc.health.v1), or `none` to serve
    /// no gRPC.
    #[arg(
        long,
        env = "SCORIA_GRPC",
        default_value = "127.0.0.1:8001",
        value_parser = grpc_address,
        value_name = "ADDR|none"
    )]
    pub grpc: String,

    /// gRPC calls (streams included) open at once, over all connections; more are refused
    /// with RESOURCE_EXHAUSTED. Health checks do not count.
    #[arg(long, env = "SCORIA_GRPC_MAX_STREAMS", default_value_t = grpc::DEFAULT_MAX_STREAMS, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub grpc_max_streams: u32,

    /// Engine for models whose config.toml names none.
    #[arg(long, env = "SCORIA_BACKEND", default_value = "tract", value_parser = super::backend)]
    pub backend: Backend,

    /// `max_batch_size` of a model whose config.toml sets none and whose every input and
    /// output has a dynamic first dimension (Triton's auto-complete, which also turns on the
    /// dynamic batcher); 0 turns auto-complete off.
    #[arg(long, env = "SCORIA_DEFAULT_MAX_BATCH_SIZE", default_value_t = DEFAULT_MAX_BATCH_SIZE, value_parser = super::default_max_batch_size(), value_name = "N")]
    pub default_max_batch_size: u32,

    /// Largest accepted request body (bytes, or with a KiB/MiB/GiB suffix); larger requests
    /// are answered 413.
    #[arg(long, env = "SCORIA_MAX_BODY_SIZE", default_value = "64MiB", value_parser = parse_size, value_name = "SIZE")]
    pub max_body_size: usize,

    /// API key file: one key per line, optionally followed by a role (`score` or `admin`,
    /// the default). With keys, every route but `/`, `/v2/health/*` and `/metrics` needs
    /// `Authorization: Bearer <key>`. Create one with `scoria keys generate`.
    #[arg(long, env = "SCORIA_API_KEY_FILE", value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,

    /// On SIGINT/SIGTERM, how long to let in-flight requests finish before exiting anyway
    /// (e.g. 30s, 2m).
    #[arg(long, env = "SCORIA_DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub drain_timeout: Duration,

    /// How long a client may take to send a request's headers, or go silent in the middle of
    /// its body (then 408); idle keep-alive connections are closed after it too.
    #[arg(long, env = "SCORIA_CLIENT_TIMEOUT", default_value = "30s", value_parser = super::positive_duration, value_name = "DURATION")]
    pub client_timeout: Duration,

    /// The model `POST /score` scores on (default: the only model, when one is served).
    #[arg(long, env = "SCORIA_DEFAULT_MODEL", value_name = "NAME")]
    pub default_model: Option<String>,

    /// Readiness as Triton's `--strict-readiness`: with `true` (the default),
    /// `/v2/health/ready` answers 200 only when every model that should serve is ready (a
    /// model that failed to load keeps the server unready, so a rollout stops); with `false`,
    /// once loading has finished, whatever failed.
    #[arg(long, env = "SCORIA_STRICT_READINESS", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub strict_readiness: bool,

    /// Inference and scoring requests allowed in flight at once (all models, HTTP and gRPC
    /// together; each request of a gRPC stream counts); beyond it, requests are refused at
    /// once — HTTP 503 with `Retry-After: 1`, gRPC UNAVAILABLE — instead of queueing without
    /// bound. Default: unbounded.
    #[arg(long, env = "SCORIA_MAX_INFLIGHT", value_parser = clap::value_parser!(u32).range(1..=1_000_000), value_name = "N")]
    pub max_inflight: Option<u32>,

    /// With a repository in an object store (`--models az://...|s3://...`), list it every
    /// DURATION (one listing per poll) and load new versions, unload removed ones and reload
    /// models whose config.toml or hook changed, as Triton's poll mode; requests keep being
    /// served throughout.
    #[arg(long, env = "SCORIA_REPOSITORY_POLL", value_parser = super::positive_duration, value_name = "DURATION")]
    pub repository_poll: Option<Duration>,
}

pub fn run(global: &GlobalArgs, args: ServeArgs) -> anyhow::Result<()> {
    let dir = global.models_dir();
    if args.repository_poll.is_some() && super::store::models_url(global).is_none() {
        return Err(super::UsageError(
            "--repository-poll follows a repository in an object store: give --models az://...|s3://...|gs://...".into(),
        )
        .into());
    }
    let (repo, store) = super::store::open_repository(global)?;
    if let Some(name) = &args.default_model {
        repo.model(name).with_context(|| {
            format!(
                "--default-model '{name}' names no model in {}",
                dir.display()
            )
        })?;
    }
    let api_keys = match &args.api_key_file {
        Some(path) => Some(Arc::new(crate::auth::ApiKeys::load(path)?)),
        None => None,
    };
    let runtime = super::server_runtime("scoria-http").context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.http)
            .await
            .with_context(|| format!("cannot listen on {}", args.http))?;
        let addr = listener
            .local_addr()
            .context("cannot read the listening address")?;
        // gRPC binds second, so that a taken HTTP port is the error a user sees first.
        let grpc_listener = match args.grpc.as_str() {
            "none" => None,
            addr => {
                let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                    format!("cannot listen on {addr} (gRPC; --grpc none turns it off)")
                })?;
                let local = listener
                    .local_addr()
                    .context("cannot read the gRPC listening address")?;
                Some((listener, local))
            }
        };
        let metrics = Arc::new(crate::telemetry::Metrics::new());
        let defaults = LoadDefaults {
            backend: args.backend,
            max_batch_size: args.default_max_batch_size,
        };
        let models = ModelManager::with_observers(repo, defaults, Arc::clone(&metrics) as _);
        if let Some(store) = store {
            models.set_store(store);
        }
        models
            .start_loading()
            .context("cannot scan the model repository")?;
        if let Some(every) = args.repository_poll {
            crate::models::poll::spawn(&models, every)
                .context("cannot start the repository poll")?;
        }
        crate::models::idle::spawn_trim(&models).context("cannot start the idle-memory thread")?;
        let inflight = InflightLimit::new(args.max_inflight.map(|n| n as usize));
        let router = http::router(
            Arc::clone(&models),
            Arc::clone(&metrics),
            HttpConfig {
                max_body_bytes: args.max_body_size,
                api_keys: api_keys.clone(),
                default_model: args.default_model,
                client_timeout: args.client_timeout,
                strict_readiness: args.strict_readiness,
                inflight: Arc::clone(&inflight),
                runs_dir: Some(global.workspace.join(crate::registry::runs::RUNS_DIR)),
            },
        );
        // Set once on SIGINT/SIGTERM; every server drains when it turns true.
        let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        // The gRPC line first: once the HTTP one is out, both addresses are known.
        if let Some((_, local)) = &grpc_listener {
            tracing::info!("serving gRPC on grpc://{local}");
        }
        tracing::info!("serving {} on http://{addr}", dir.display());
        let grpc_server = async {
            let Some((listener, _)) = grpc_listener else {
                return Ok(());
            };
            let config = GrpcConfig {
                max_message_bytes: args.max_body_size,
                api_keys,
                max_streams: args.grpc_max_streams as usize,
                keepalive: args.client_timeout,
                strict_readiness: args.strict_readiness,
                inflight,
            };
            grpc::serve(listener, models, metrics, config, stopped(stopping.clone()))
                .await
                .context("gRPC server failed")
        };
        let http_server = async {
            http::serve(
                listener,
                router,
                args.client_timeout,
                stopped(stopping.clone()),
            )
            .await
            .context("server failed")
        };
        let drain = args.drain_timeout;
        tokio::select! {
            result = async { tokio::try_join!(http_server, grpc_server) } => {
                result?;
            }
            () = async move {
                shutdown_signal().await;
                let _ = stopping_tx.send(true);
                tokio::time::sleep(drain).await;
            } => {
                anyhow::bail!(
                    "requests were still running when the drain timeout ({}) expired",
                    humantime::format_duration(drain)
                );
            }
        }
        tracing::info!("shut down");
        Ok(())
    });
    // Inference still running on blocking threads after the drain timeout must not hold
    // the process: give the runtime a moment, then leave those threads behind.
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

/// Resolves on SIGINT or SIGTERM.
pub(super) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}

/// `--grpc`: `HOST:PORT`, or `none`.
fn grpc_address(s: &str) -> Result<String, String> {
    if s == "none" {
        return Ok(s.to_string());
    }
    super::listen_address(s).map_err(|e| format!("{e}, or none"))
}

/// Parses `1048576`, `512KiB`, `64MiB`, `1GiB` (also KB/MB/GB as powers of 1000).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 1048576, 64MiB)"))?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        u => {
            return Err(format!(
                "unknown size unit '{u}' (use B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2KB"), Ok(2000));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("5XB").is_err());
    }
}
