//! `scoria predict`: offline scoring of one JSON input file.

use super::GlobalArgs;
use crate::engine::Backend;
use crate::models::{score, Served};
use crate::registry::Repository;
use anyhow::Context;
use clap::Args;
use std::io::Read;
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
}

pub fn run(global: &GlobalArgs, args: PredictArgs) -> anyhow::Result<()> {
    let (name, version) = args.model;
    let body = if args.input.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read stdin")?;
        s
    } else {
        std::fs::read_to_string(&args.input)
            .with_context(|| format!("cannot read {}", args.input.display()))?
    };
    let repo = Repository::open(global.models_dir()).context("cannot open the model repository")?;
    let dir = repo.model(&name)?;
    let version = match version {
        Some(v) => v,
        None => *dir
            .served_versions()
            .last()
            .or(dir.versions.last())
            .with_context(|| format!("model '{name}' has no versions"))?,
    };
    if !dir.versions.contains(&version) {
        anyhow::bail!("model '{name}' has no version {version}");
    }
    let served = Served::load(&dir, version, args.backend).map_err(anyhow::Error::msg)?;
    let result = score::score_blocking(&served, body.as_bytes())
        .with_context(|| format!("{}", args.input.display()))?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}
