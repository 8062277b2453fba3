//! `scoria predict`: offline scoring of one JSON input file.

use super::GlobalArgs;
use crate::engine::Backend;
use crate::models::autocomplete::DEFAULT_MAX_BATCH_SIZE;
use crate::models::{score, LoadDefaults, Served};
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// NAME or NAME:VERSION (default: the latest version).
    #[arg(value_parser = super::model_reference, value_name = "NAME[:VERSION]")]
    pub model: (String, Option<u64>),

    /// Input JSON file (`-` for stdin): {"data": ...} for a single-input model, or
    /// {"inputs": {"name": ...}}; arrays may be nested (the shape follows the nesting).
    #[arg(long, env = "SCORIA_PREDICT_INPUT", value_name = "FILE.json")]
    pub input: PathBuf,

    /// Engine, when the model's config.toml names none.
    #[arg(long, env = "SCORIA_BACKEND", default_value = "tract", value_parser = super::backend)]
    pub backend: Backend,

    /// `max_batch_size` of a model whose config.toml sets none and whose every input and
    /// output has a dynamic first dimension (Triton's auto-complete, which also turns on the
    /// dynamic batcher); 0 turns auto-complete off.
    #[arg(long, env = "SCORIA_DEFAULT_MAX_BATCH_SIZE", default_value_t = DEFAULT_MAX_BATCH_SIZE, value_parser = super::default_max_batch_size(), value_name = "N")]
    pub default_max_batch_size: u32,
}

pub fn run(global: &GlobalArgs, args: PredictArgs) -> anyhow::Result<()> {
    let (name, version) = args.model;
    let limit = crate::http::DEFAULT_MAX_BODY as u64;
    let bytes = if args.input.as_os_str() == "-" {
        crate::fsutil::read_bounded(std::io::stdin().lock(), limit).context("cannot read stdin")?
    } else {
        std::fs::File::open(&args.input)
            .and_then(|f| crate::fsutil::read_bounded(f, limit))
            .with_context(|| format!("cannot read {}", args.input.display()))?
    };
    let body = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", args.input.display()))?;
    let (repo, _store) = super::store::open_repository(global)?;
    let dir = repo.model(&name)?;
    let version = match version {
        Some(v) => v,
        // The version `serve` would answer with; any version present can be named.
        None => match (dir.served_versions().last(), dir.versions.last()) {
            (Some(&v), _) => v,
            (None, None) => anyhow::bail!("model '{name}' has no versions"),
            (None, Some(_)) => anyhow::bail!(
                "model '{name}' has no version to serve (its config.toml is invalid or its [version_policy] selects none); name one as {name}:VERSION"
            ),
        },
    };
    if !dir.versions.contains(&version) {
        anyhow::bail!("model '{name}' has no version {version}");
    }
    let defaults = LoadDefaults {
        backend: args.backend,
        max_batch_size: args.default_max_batch_size,
    };
    let served = Served::load(&dir, version, defaults)?;
    // On a thread with the stack a score hook may need.
    let result = std::thread::Builder::new()
        .name("scoria-predict".into())
        .stack_size(crate::hook::HOOK_THREAD_STACK_BYTES)
        .spawn(move || score::score_blocking(&served, body.as_bytes()))
        .context("cannot start the scoring thread")?
        .join()
        .map_err(|_| anyhow::anyhow!("the scoring thread panicked"))?
        .with_context(|| format!("{}", args.input.display()))?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}
