//! Setting up what the workers drive: the model version loaded in-process, or a server's
//! model found through its v2 metadata; either way one request is checked before the run.

use super::{grpc, http, inputs, load, BenchOptions, Log};
use crate::engine::{Dim, TensorSpec};
use crate::http::v2::wire::ModelMetadata;
use crate::models::Served;
use crate::registry::{Repository, CONFIG_FILE};
use crate::tensor::NamedTensor;
use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// What a target was set up with, for the run's configuration record.
pub(super) struct Setup {
    pub version: Option<u64>,
    pub backend: Option<String>,
    pub inputs: Vec<NamedTensor>,
    pub model_config: Value,
}

/// Loads the model version as the server does and checks one request against it.
pub(super) fn in_process(
    opts: &BenchOptions,
    models_dir: &Path,
    log: &mut Log,
) -> anyhow::Result<(load::Target, Setup)> {
    let repo = Repository::open(models_dir).context("cannot open the model repository")?;
    let dir = repo.model(&opts.model)?;
    let name = &opts.model;
    let version = match opts.version {
        Some(v) if dir.versions.contains(&v) => v,
        Some(v) => bail!("model '{name}' has no version {v}"),
        None => *dir
            .served_versions()
            .last()
            .or(dir.versions.last())
            .with_context(|| format!("model '{name}' has no versions"))?,
    };
    let t = Instant::now();
    let served = Served::load(&dir, version, opts.defaults)?;
    let model = served.model;
    log.info(&format!(
        "loaded {name}:{version} ({}) in {} ms",
        model.backend(),
        t.elapsed().as_millis()
    ));
    let inputs = make_inputs(opts, model.inputs(), log)?;
    probe(&model, &inputs)
        .with_context(|| format!("{name}:{version} rejects the benchmark request"))?;
    let config_toml = std::fs::read_to_string(dir.path.join(CONFIG_FILE)).ok();
    let setup = Setup {
        version: Some(version),
        backend: Some(model.backend().name().to_string()),
        inputs: inputs.clone(),
        model_config: json!({ "config.toml": config_toml }),
    };
    Ok((load::Target::InProcess { model, inputs }, setup))
}

/// One inference on the calling thread, so a request the model rejects fails the run at once
/// instead of being counted as N errors.
fn probe(
    model: &Arc<crate::models::LoadedVersion>,
    inputs: &[NamedTensor],
) -> Result<(), crate::models::ModelError> {
    model.infer_blocking(inputs.to_vec(), None).map(drop)
}

/// Reads the model's metadata and configuration from the server (over HTTP, or gRPC for a
/// `grpc://` URL) and checks one request.
pub(super) async fn remote(
    opts: &BenchOptions,
    url: &str,
    log: &mut Log,
) -> anyhow::Result<(load::Target, Setup)> {
    if url.starts_with("grpc://") {
        return remote_grpc(opts, url, log).await;
    }
    let endpoint =
        Arc::new(http::Endpoint::parse(url, opts.api_key.clone()).map_err(anyhow::Error::msg)?);
    let mut client = http::Client::new(Arc::clone(&endpoint));
    let name = &opts.model;
    let model_path = match opts.version {
        Some(v) => format!("/v2/models/{name}/versions/{v}"),
        None => format!("/v2/models/{name}"),
    };
    let timeout = opts.timeout;
    let timed_out = || anyhow::anyhow!("{url} did not answer within {timeout:?}");
    let meta = tokio::time::timeout(timeout, client.get_json(&model_path))
        .await
        .map_err(|_| timed_out())?
        .map_err(anyhow::Error::msg)?;
    let meta = ModelMetadata::deserialize(&meta).map_err(|e| {
        anyhow::anyhow!("{url}: model '{name}': the reply is not v2 model metadata: {e}")
    })?;
    let specs = inputs::specs_from_metadata(&meta)
        .map_err(|e| anyhow::anyhow!("{url}: model '{name}': {e}"))?;
    let version = opts.version.or_else(|| latest(&meta));
    let config_path = format!("{model_path}/config");
    let config = match tokio::time::timeout(timeout, client.get_json(&config_path)).await {
        Ok(Ok(config)) => config,
        Ok(Err(e)) => {
            log.warn(&format!("no model configuration: {e}"));
            Value::Null
        }
        Err(_) => Value::Null,
    };
    let backend = config
        .get("backend")
        .and_then(Value::as_str)
        .map(str::to_string);
    let inputs = make_inputs(opts, &specs, log)?;
    let request = http::InferRequest::new(&endpoint, &model_path, &inputs, opts.protocol)
        .map_err(anyhow::Error::msg)?;
    first_request(opts, url, request.send(&mut client), log).await?;
    let setup = Setup {
        version,
        backend,
        inputs,
        model_config: json!({ "server": config }),
    };
    let target = load::Target::Http {
        endpoint,
        request: Arc::new(request),
        timeout,
    };
    Ok((target, setup))
}

async fn remote_grpc(
    opts: &BenchOptions,
    url: &str,
    log: &mut Log,
) -> anyhow::Result<(load::Target, Setup)> {
    let endpoint = Arc::new(
        grpc::GrpcEndpoint::parse(url, opts.api_key.as_deref()).map_err(anyhow::Error::msg)?,
    );
    let timeout = opts.timeout;
    let timed_out = || anyhow::anyhow!("{url} did not answer within {timeout:?}");
    let mut client = tokio::time::timeout(timeout, grpc::GrpcClient::connect(&endpoint))
        .await
        .map_err(|_| timed_out())?
        .map_err(anyhow::Error::msg)?;
    let name = &opts.model;
    let meta = tokio::time::timeout(timeout, client.metadata(name, opts.version))
        .await
        .map_err(|_| timed_out())?
        .map_err(anyhow::Error::msg)?;
    let specs = inputs::specs_from_metadata(&meta)
        .map_err(|e| anyhow::anyhow!("{url}: model '{name}': {e}"))?;
    let version = opts.version.or_else(|| latest(&meta));
    let (backend, config) =
        match tokio::time::timeout(timeout, client.config(name, opts.version)).await {
            Ok(Ok(config)) => (
                config["backend"]
                    .as_str()
                    .filter(|b| !b.is_empty())
                    .map(str::to_string),
                config,
            ),
            Ok(Err(e)) => {
                log.warn(&format!("no model configuration: {e}"));
                (None, Value::Null)
            }
            Err(_) => (None, Value::Null),
        };
    let inputs = make_inputs(opts, &specs, log)?;
    let request = grpc::infer_request(name, opts.version, &inputs, opts.protocol);
    first_request(opts, url, client.infer(&request), log).await?;
    let setup = Setup {
        version,
        backend,
        inputs,
        model_config: json!({ "server": config }),
    };
    let target = load::Target::Grpc {
        endpoint,
        request: Arc::new(request),
        timeout,
    };
    Ok((target, setup))
}

/// The newest version the server's metadata lists.
fn latest(meta: &ModelMetadata) -> Option<u64> {
    meta.versions
        .iter()
        .filter_map(|v| v.parse::<u64>().ok())
        .max()
}

/// Sends the run's request once, so a request the server rejects fails the run at once.
async fn first_request(
    opts: &BenchOptions,
    url: &str,
    send: impl std::future::Future<Output = Result<(), String>>,
    log: &mut Log,
) -> anyhow::Result<()> {
    let (name, timeout) = (&opts.model, opts.timeout);
    tokio::time::timeout(timeout, send)
        .await
        .map_err(|_| anyhow::anyhow!("{url} did not answer within {timeout:?}"))?
        .map_err(|e| anyhow::anyhow!("{url}: {name} rejects the benchmark request: {e}"))?;
    log.info(&format!(
        "{url}: {name} answers; metadata and configuration read"
    ));
    Ok(())
}

fn make_inputs(
    opts: &BenchOptions,
    specs: &[TensorSpec],
    log: &mut Log,
) -> anyhow::Result<Vec<NamedTensor>> {
    if let Some(path) = &opts.input {
        return inputs::from_file(path, specs);
    }
    if opts.batch > 1 {
        for s in specs {
            if let Some(Dim::Fixed(n)) = s.shape.first() {
                log.warn(&format!(
                    "input '{}' has a fixed first dimension ({n}); --batch {} does not apply to it",
                    s.name, opts.batch
                ));
            }
        }
    }
    inputs::synthetic(specs, opts.batch).map_err(anyhow::Error::msg)
}
