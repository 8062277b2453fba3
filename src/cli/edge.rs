//! `scoria edge`: the IoT edge module over MQTT.

use super::GlobalArgs;
use crate::edge::iothub::{ModuleIdentity, Signer};
use crate::edge::link::{LinkOptions, Protocol, Security};
use crate::edge::topics::Topics;
use crate::edge::{self, outbox, EdgeSettings};
use crate::engine::Backend;
use crate::models::autocomplete::DEFAULT_MAX_BATCH_SIZE;
use crate::models::{LoadDefaults, ModelManager};
use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod flags;
use flags::{
    broker_url, client_id, duplicate_model, parse_broker, session_expiry, share_group,
    telemetry_seconds, topic_prefix,
};

/// The session expiry of a sharing module without --session-expiry: long enough to ride out
/// a restart, short enough that a member gone for good stops collecting its share.
const SHARED_SESSION_EXPIRY: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    /// MQTT 3.1.1
    #[value(name = "3.1.1", alias = "3", alias = "4")]
    V311,
    /// MQTT 5
    #[value(name = "5")]
    V5,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// Azure IoT Hub / IoT Edge module topics, twin and credentials.
    Iothub,
}

#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// Broker URL: mqtt://HOST[:PORT] (default port 1883) or mqtts://HOST[:PORT] (TLS, 8883).
    /// With --preset iothub it defaults to the IoT Edge gateway or the hub, on 8883.
    #[arg(long, env = "SCORIA_BROKER", value_parser = broker_url, value_name = "URL")]
    pub broker: Option<String>,

    /// A model to serve, NAME or NAME:VERSION (repeatable; default version: the highest ready).
    #[arg(long = "model", env = "SCORIA_EDGE_MODELS", value_delimiter = ',', required = true, value_name = "NAME[:VER]", value_parser = super::model_reference)]
    pub model: Vec<(String, Option<u64>)>,

    /// MQTT protocol version [default: 3.1.1, or 5 with --share-group].
    #[arg(long, env = "SCORIA_MQTT_PROTOCOL", value_enum)]
    pub protocol: Option<ProtocolArg>,

    /// Share the request stream with the other modules of group NAME: subscribe to
    /// $share/NAME/PREFIX/in/MODEL (MQTT shared subscriptions), so each request goes to one
    /// member. Results, telemetry, status and desired configuration stay per module. Not with
    /// --preset iothub.
    #[arg(long, env = "SCORIA_SHARE_GROUP", value_name = "NAME", value_parser = share_group)]
    pub share_group: Option<String>,

    /// How long the broker keeps the session (and queues this module's share of requests)
    /// after the module is gone (MQTT 5) [default: 5m with --share-group, else never].
    #[arg(long, env = "SCORIA_SESSION_EXPIRY", value_name = "DURATION", value_parser = session_expiry)]
    pub session_expiry: Option<Duration>,

    /// MQTT client id; the broker keeps this module's session (and queued requests) under it.
    /// Default: scoria-HOSTNAME-MODELS.
    #[arg(long, env = "SCORIA_CLIENT_ID", value_name = "ID", value_parser = client_id)]
    pub client_id: Option<String>,

    /// Topic prefix: requests on PREFIX/in/MODEL, results on PREFIX/out/MODEL.
    #[arg(
        long,
        env = "SCORIA_TOPIC_PREFIX",
        default_value = "scoria",
        value_name = "PREFIX",
        value_parser = topic_prefix
    )]
    pub topic_prefix: String,

    /// MQTT keep-alive interval (e.g. 30s).
    #[arg(long, env = "SCORIA_KEEP_ALIVE", default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub keep_alive: Duration,

    /// Username for the broker.
    #[arg(long, env = "SCORIA_MQTT_USERNAME", value_name = "NAME")]
    pub username: Option<String>,

    /// Password for the broker.
    #[arg(
        long,
        env = "SCORIA_MQTT_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,

    /// PEM file of the CA certificate(s) that verify the broker (mqtts://); default: the
    /// system's roots, or under IoT Edge (--preset iothub with IOTEDGE_WORKLOADURI) the
    /// edge's trust bundle from the workload API.
    #[arg(long, env = "SCORIA_MQTT_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Directory of the durable outbox (results waiting for the broker). Default:
    /// WORKSPACE/outbox/CLIENT-ID.
    #[arg(long, env = "SCORIA_OUTBOX", value_name = "DIR")]
    pub outbox: Option<PathBuf>,

    /// Most results the outbox holds; when full, new requests are left unacknowledged at the
    /// broker (which keeps them) until delivered results make room. Nothing is dropped.
    #[arg(
        long,
        env = "SCORIA_OUTBOX_MAX",
        default_value_t = 100_000,
        value_name = "N"
    )]
    pub outbox_max: u64,

    /// Most bytes the outbox holds (same policy as --outbox-max).
    #[arg(long, env = "SCORIA_OUTBOX_MAX_BYTES", default_value = "256MiB", value_parser = super::serve::parse_size, value_name = "SIZE")]
    pub outbox_max_bytes: usize,

    /// Largest request payload; larger requests get an error result.
    #[arg(long, env = "SCORIA_MAX_MESSAGE_SIZE", default_value = "8MiB", value_parser = super::serve::parse_size, value_name = "SIZE")]
    pub max_message_size: usize,

    /// Seconds between telemetry messages (fractions allowed), from 0.1 to 86400.
    #[arg(long, env = "SCORIA_TELEMETRY_INTERVAL", default_value_t = 10.0, value_parser = telemetry_seconds, value_name = "SECONDS")]
    pub telemetry_interval: f64,

    /// Most results published and not yet acknowledged by the broker.
    #[arg(long, env = "SCORIA_MQTT_INFLIGHT", default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..), value_name = "N")]
    pub inflight: u16,

    /// Serve Prometheus metrics on http://ADDR/metrics.
    #[arg(long, env = "SCORIA_METRICS", value_name = "ADDR")]
    pub metrics: Option<String>,

    /// Engine for models whose config.toml names none.
    #[arg(long, env = "SCORIA_BACKEND", default_value = "tract", value_parser = super::backend)]
    pub backend: Backend,

    /// `max_batch_size` of a model whose config.toml sets none and whose every input and
    /// output has a dynamic first dimension (Triton's auto-complete, which also turns on the
    /// dynamic batcher); 0 turns auto-complete off.
    #[arg(long, env = "SCORIA_DEFAULT_MAX_BATCH_SIZE", default_value_t = DEFAULT_MAX_BATCH_SIZE, value_parser = super::default_max_batch_size(), value_name = "N")]
    pub default_max_batch_size: u32,

    /// Topic and credential preset: `iothub` for Azure IoT Hub / IoT Edge.
    #[arg(long, env = "SCORIA_EDGE_PRESET", value_enum)]
    pub preset: Option<Preset>,

    /// IoT Hub module connection string
    /// (HostName=...;DeviceId=...;ModuleId=...;SharedAccessKey=...), for --preset iothub.
    /// Without it the identity comes from IOTEDGE_* variables and --password is the SAS token.
    #[arg(
        long,
        env = "SCORIA_IOTHUB_CONNECTION_STRING",
        value_name = "STRING",
        hide_env_values = true
    )]
    pub iothub_connection_string: Option<String>,

    /// Lifetime of the SAS tokens generated from the connection string or signed by IoT
    /// Edge's workload API.
    #[arg(long, env = "SCORIA_SAS_TTL", default_value = "24h", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub sas_ttl: Duration,
}

pub fn run(global: &GlobalArgs, args: EdgeArgs) -> anyhow::Result<()> {
    if let Some(name) = duplicate_model(&args.model) {
        return Err(super::UsageError(format!(
            "--model {name} is given more than once (each model is served once, at one version)"
        ))
        .into());
    }
    let dir = global.models_dir();
    // A store is mirrored once here (or its cache used when it cannot be reached); the
    // module then serves from the cache.
    let (repo, _store) = super::store::open_repository(global)?;
    for (name, _) in &args.model {
        repo.model(name)
            .with_context(|| format!("--model '{name}' names no model in {}", dir.display()))?;
    }
    let mut settings = settings(global, &args)?;
    let runtime = super::server_runtime("scoria-edge").context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        let metrics = Arc::new(crate::telemetry::Metrics::new());
        let defaults = LoadDefaults {
            backend: args.backend,
            max_batch_size: args.default_max_batch_size,
        };
        let models = ModelManager::with_observers(repo, defaults, Arc::clone(&metrics) as _);
        crate::models::idle::spawn_trim(&models).context("cannot start the idle-memory thread")?;
        // Only the models this module serves are loaded (not the whole repository). A model
        // that cannot be served fails alone, as under `scoria serve`: the others are served
        // and its requests get error results saying why.
        for (name, version) in &settings.models {
            let (m, n) = (Arc::clone(&models), name.clone());
            let loaded = tokio::task::spawn_blocking(move || m.load_model(&n))
                .await
                .context("model loading task failed")?;
            let v = version.map(|v| v.to_string());
            let why = match loaded {
                Err(e) => Some(e.to_string()),
                Ok(()) => models
                    .get_served(name, v.as_deref())
                    .err()
                    .map(|e| e.to_string()),
            };
            if let Some(why) = why {
                tracing::error!("cannot serve --model {name}: {why}");
                settings.unavailable.insert(name.clone(), why);
            }
        }
        if settings.unavailable.len() == settings.models.len() {
            let reasons: Vec<String> = settings
                .unavailable
                .iter()
                .map(|(name, why)| format!("--model {name}: {why}"))
                .collect();
            bail!("no model can be served ({})", reasons.join("; "));
        }
        if let Some(addr) = &args.metrics {
            serve_metrics(addr, Arc::clone(&models), Arc::clone(&metrics)).await?;
        }
        edge::run(settings, models, &metrics, super::serve::shutdown_signal())
            .await
            .map_err(anyhow::Error::from)
    });
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

/// Serves `GET /metrics` (the same handler as `scoria serve`) on `addr` in the background.
async fn serve_metrics(
    addr: &str,
    models: Arc<ModelManager>,
    metrics: Arc<crate::telemetry::Metrics>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (--metrics)"))?;
    let bound = listener
        .local_addr()
        .context("cannot read the metrics address")?;
    let state = crate::http::AppState::new(models, metrics, crate::http::HttpConfig::default());
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(crate::http::metrics::metrics),
        )
        .with_state(state);
    tracing::info!("metrics on http://{bound}/metrics");
    tokio::spawn(async move {
        if let Err(e) = crate::http::serve(
            listener,
            app,
            crate::http::DEFAULT_CLIENT_TIMEOUT,
            std::future::pending(),
        )
        .await
        {
            tracing::error!("metrics server failed: {e}");
        }
    });
    Ok(())
}

/// Turns the flags (and IoT Edge's environment) into the module's settings.
fn settings(global: &GlobalArgs, args: &EdgeArgs) -> anyhow::Result<EdgeSettings> {
    if args.share_group.is_some() && args.preset == Some(Preset::Iothub) {
        return Err(super::UsageError(
            "--share-group does not work with --preset iothub (IoT Hub routes each message to one module, not to a group)".into(),
        )
        .into());
    }
    let identity = match args.preset {
        None => None,
        Some(Preset::Iothub) => Some(match &args.iothub_connection_string {
            Some(s) => ModuleIdentity::from_connection_string(s)
                .map_err(|e| anyhow::anyhow!("--iothub-connection-string: {e}"))?,
            None => ModuleIdentity::from_iotedge_env(|k| std::env::var(k).ok())
                .ok_or_else(|| {
                    anyhow::anyhow!("--preset iothub needs --iothub-connection-string or the IOTEDGE_IOTHUBHOSTNAME, IOTEDGE_DEVICEID and IOTEDGE_MODULEID variables")
                })?
                .map_err(anyhow::Error::msg)?,
        }),
    };
    let broker = match (&args.broker, &identity) {
        (Some(b), _) => b.clone(),
        (None, Some(id)) => {
            let host = std::env::var("IOTEDGE_GATEWAYHOSTNAME").unwrap_or_else(|_| id.hub.clone());
            format!("mqtts://{host}:8883")
        }
        (None, None) => {
            return Err(super::UsageError(
                "--broker is required (e.g. --broker mqtt://127.0.0.1:1883)".into(),
            )
            .into())
        }
    };
    let (tls, host, port) = parse_broker(&broker)?;
    let security = if tls {
        let ca = match (
            &args.ca_file,
            identity.as_ref().and_then(|id| id.signer.as_ref()),
        ) {
            (Some(f), _) => Some(
                std::fs::read(f)
                    .with_context(|| format!("cannot read --ca-file {}", f.display()))?,
            ),
            (None, Some(Signer::Workload(w))) => Some(
                w.trust_bundle()
                    .map_err(anyhow::Error::msg)
                    .context("cannot read the edge's trust bundle (or give --ca-file)")?
                    .into_bytes(),
            ),
            (None, _) => None,
        };
        Security::Tls { ca }
    } else {
        Security::Plain
    };
    let default_protocol = if args.share_group.is_some() {
        ProtocolArg::V5
    } else {
        ProtocolArg::V311
    };
    let protocol = match args.protocol.unwrap_or(default_protocol) {
        ProtocolArg::V311 => Protocol::V311,
        ProtocolArg::V5 => Protocol::V5,
    };
    if args.session_expiry.is_some() && protocol == Protocol::V311 {
        return Err(super::UsageError(
            "--session-expiry needs --protocol 5 (MQTT 3.1.1 sessions last until the broker's persistent_client_expiration)".into(),
        )
        .into());
    }
    let session_expiry = match (args.session_expiry, &args.share_group) {
        (Some(d), _) => Some(d),
        (None, Some(_)) => Some(SHARED_SESSION_EXPIRY),
        (None, None) => None,
    }
    .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
    let (client_id, credentials, topics) = match &identity {
        Some(id) => {
            if protocol == Protocol::V5 {
                bail!("IoT Hub speaks MQTT 3.1.1: drop --protocol 5 with --preset iothub");
            }
            let password = match (&args.password, &id.signer) {
                (Some(p), _) => p.clone(),
                (None, Some(_)) => id
                    .sas_token(unix_now() + args.sas_ttl.as_secs())
                    .map_err(anyhow::Error::msg)
                    .context("cannot make a SAS token")?,
                (None, None) => bail!(
                    "--preset iothub without a connection string or IoT Edge's workload API (IOTEDGE_WORKLOADURI) needs --password (a SAS token)"
                ),
            };
            (
                args.client_id.clone().unwrap_or_else(|| id.client_id()),
                Some((id.username(), password)),
                Topics::iothub(id),
            )
        }
        None => {
            let credentials = match (&args.username, &args.password) {
                (Some(u), p) => Some((u.clone(), p.clone().unwrap_or_default())),
                (None, Some(_)) => bail!("--password needs --username"),
                (None, None) => None,
            };
            let id = args
                .client_id
                .clone()
                .unwrap_or_else(|| default_client_id(&args.model));
            (
                id,
                credentials,
                Topics::plain(&args.topic_prefix).shared(args.share_group.clone()),
            )
        }
    };
    let outbox_dir = args.outbox.clone().unwrap_or_else(|| {
        let safe: String = client_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        global.workspace.join("outbox").join(safe)
    });
    let renew_credentials: Option<edge::CredentialSource> = match &identity {
        Some(id) if args.password.is_none() && id.signer.is_some() => {
            let (id, ttl) = (id.clone(), args.sas_ttl);
            Some(edge::CredentialSource(Arc::new(move || {
                let token = id.sas_token(unix_now() + ttl.as_secs())?;
                Ok((id.username(), token))
            })))
        }
        _ => None,
    };
    let (status_topic, status_retain) = topics.status();
    let will = edge::last_will(&client_id);
    Ok(EdgeSettings {
        link: LinkOptions {
            protocol,
            host,
            port,
            security,
            client_id,
            keep_alive: args.keep_alive,
            credentials,
            last_will: (status_topic, will, status_retain),
            inflight: args.inflight,
            session_expiry,
        },
        broker,
        topics,
        models: args.model.clone(),
        unavailable: Default::default(),
        outbox_dir,
        outbox_limits: outbox::Limits {
            max_messages: args.outbox_max.max(1),
            max_bytes: args.outbox_max_bytes as u64,
        },
        max_message: args.max_message_size,
        telemetry_interval: Duration::from_secs_f64(args.telemetry_interval),
        renew_credentials,
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn default_client_id(models: &[(String, Option<u64>)]) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into());
    let names: Vec<&str> = models.iter().map(|(m, _)| m.as_str()).collect();
    format!("scoria-{host}-{}", names.join("-"))
}
