//! `scoria model register | list | show | delete`.

use super::GlobalArgs;
use crate::engine::{self, Backend, TensorSpec};
use crate::models::autocomplete::DEFAULT_MAX_BATCH_SIZE;
use crate::models::{LoadDefaults, LoadedVersion};
use crate::registry::{self, Registration, Repository, VersionMeta, MODEL_FILE};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Copy an ONNX file into the next version of a model (created if new).
    Register(RegisterArgs),
    /// List the models: name, versions, latest version, backend and status.
    List(ListArgs),
    /// Show a model version: registration record, settings, inputs and outputs.
    Show(ShowArgs),
    /// Delete one version of a model.
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// Model name: letters, digits, '_', '.', '-'.
    #[arg(value_parser = super::model_name)]
    pub name: String,
    /// The ONNX file to register.
    #[arg(long, env = "SCORIA_MODEL_PATH", value_name = "FILE.onnx")]
    pub path: PathBuf,
    /// A tag to record with the version, as key=value (repeatable; the env var holds one).
    #[arg(long = "tag", env = "SCORIA_MODEL_TAGS", value_parser = parse_tag, value_name = "KEY=VALUE")]
    pub tags: Vec<(String, String)>,
    /// A description to record with the version.
    #[arg(long, env = "SCORIA_MODEL_DESCRIPTION", value_name = "TEXT")]
    pub description: Option<String>,
    /// A score hook (Rhai script with `fn run(input)`, optional `fn init()`) to install as the
    /// model's hook, used by all its versions: checked first, then written to the model folder
    /// under the name its config.toml gives (else score.rhai, named in config.toml).
    #[arg(long, env = "SCORIA_MODEL_HOOK", value_name = "FILE.rhai")]
    pub hook: Option<PathBuf>,
    /// Upload the version to this object store (az://CONTAINER/PREFIX, s3://BUCKET/PREFIX,
    /// gs://BUCKET/PREFIX) instead of the local repository (also done when --models is a
    /// store URL): files first, meta.toml last, so readers never see a half version.
    #[arg(long, env = "SCORIA_MODEL_TO", value_parser = super::store::store_url, value_name = "URL")]
    pub to: Option<crate::registry::store::StoreUrl>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long, env = "SCORIA_JSON")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// NAME or NAME:VERSION (default: the latest version).
    #[arg(value_parser = super::model_reference, value_name = "NAME[:VERSION]")]
    pub model: (String, Option<u64>),
    /// Print JSON instead of text.
    #[arg(long, env = "SCORIA_JSON")]
    pub json: bool,
    /// Load with this backend when the model's config names none (default: tract); with
    /// opencl the placement of nodes on device and CPU is shown.
    #[arg(long, value_enum, env = "SCORIA_BACKEND")]
    pub backend: Option<Backend>,
    /// Show the config as `serve --default-max-batch-size N` completes it (see there); 0:
    /// as config.toml sets it.
    #[arg(long, env = "SCORIA_DEFAULT_MAX_BATCH_SIZE", default_value_t = DEFAULT_MAX_BATCH_SIZE, value_parser = super::default_max_batch_size(), value_name = "N")]
    pub default_max_batch_size: u32,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// NAME:VERSION to delete.
    #[arg(value_parser = super::versioned_reference, value_name = "NAME:VERSION")]
    pub model: (String, u64),
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("'{s}' is not KEY=VALUE")),
    }
}

pub fn run(global: &GlobalArgs, cmd: ModelCommand) -> anyhow::Result<()> {
    let dir = global.models_dir();
    match cmd {
        ModelCommand::Register(args) => {
            if let Some(hook) = &args.hook {
                crate::hook::check_script(hook)
                    .with_context(|| format!("hook {} not registered", hook.display()))?;
            }
            let reg = Registration {
                name: args.name,
                source: args.path,
                tags: args.tags.into_iter().collect(),
                description: args.description,
                hook: args.hook,
            };
            let (version, meta) = match args.to.or_else(|| super::store::models_url(global)) {
                Some(url) => super::store::open_store(global, &url)?
                    .register(&reg)
                    .with_context(|| format!("{} not registered", reg.name))?,
                None => {
                    let repo =
                        Repository::create(&dir).context("cannot open the model repository")?;
                    registry::register(&repo, &reg)?
                }
            };
            println!(
                "registered {}:{version} ({} bytes, sha256 {}){}",
                reg.name,
                meta.size,
                meta.sha256,
                meta.hook.map(|h| format!(", hook {h}")).unwrap_or_default()
            );
            Ok(())
        }
        ModelCommand::List(args) => list(&super::store::open_repository(global)?.0, args.json),
        ModelCommand::Show(args) => show(&super::store::open_repository(global)?.0, args),
        ModelCommand::Delete(args) => {
            let (name, version) = args.model;
            if let Some(url) = super::store::models_url(global) {
                super::store::open_store(global, &url)?.delete(&name, version)?;
                println!("deleted {name}:{version} from {url}");
                return Ok(());
            }
            let repo = Repository::open(&dir).context("cannot open the model repository")?;
            registry::delete(&repo, &name, version)?;
            println!("deleted {name}:{version}");
            Ok(())
        }
    }
}

/// One `model list` row. The status check parses each served version's file (no engine
/// preparation), so listing stays fast for large models.
fn list(repo: &Repository, as_json: bool) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for dir in repo.models()? {
        let backend = dir
            .config
            .as_ref()
            .ok()
            .and_then(|c| c.backend)
            .unwrap_or_default();
        let status = match &dir.config {
            Err(e) => Err(e.to_string()),
            Ok(config) => {
                let served = dir.served_versions();
                if dir.versions.is_empty() {
                    Err("no version to serve: no version folder (1/model.onnx, ...)".to_string())
                } else if served.is_empty() {
                    Err(format!(
                        "no version to serve: [version_policy] in config.toml selects none of the versions present ({})",
                        dir.versions.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                    ))
                } else {
                    served
                        .iter()
                        .map(|&v| {
                            let path = dir.version_path(v).join(MODEL_FILE);
                            engine::check_onnx(&path).map_err(|e| format!("version {v}: {e}"))
                        })
                        .collect::<Result<Vec<()>, _>>()
                        .and_then(|_| match &config.hook {
                            Some(h) => crate::hook::check_script(&dir.path.join(h))
                                .map_err(|e| e.to_string()),
                            None => Ok(()),
                        })
                }
            }
        }
        // Parser messages may span lines; a table row holds one.
        .map_err(|e| e.split_whitespace().collect::<Vec<_>>().join(" "));
        rows.push((dir.name, dir.versions, backend, status));
    }
    if as_json {
        let items: Vec<_> = rows
            .iter()
            .map(|(name, versions, backend, status)| {
                json!({
                    "name": name,
                    "versions": versions,
                    "latest": versions.last(),
                    "backend": backend.name(),
                    "status": if status.is_ok() { "ok" } else { "failed" },
                    "error": status.as_ref().err(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    let table: Vec<[String; 5]> = rows
        .into_iter()
        .map(|(name, versions, backend, status)| {
            let list = versions
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let latest = versions.last().map_or("-".to_string(), u64::to_string);
            let status = match status {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("failed: {e}"),
            };
            [name, list, latest, backend.name().to_string(), status]
        })
        .collect();
    print_table(&["NAME", "VERSIONS", "LATEST", "BACKEND", "STATUS"], &table);
    Ok(())
}

fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i + 1 == N {
                    c.to_string()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        println!("{}", parts.join("  "));
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn show(repo: &Repository, args: ShowArgs) -> anyhow::Result<()> {
    let (name, version) = args.model;
    let dir = repo.model(&name)?;
    let version = match version {
        Some(v) if dir.versions.contains(&v) => v,
        Some(v) => bail!("model '{name}' has no version {v}"),
        None => *dir
            .versions
            .last()
            .with_context(|| format!("model '{name}' has no versions"))?,
    };
    let meta = VersionMeta::load(&dir.version_path(version))?;
    let defaults = LoadDefaults {
        backend: args.backend.unwrap_or_default(),
        max_batch_size: args.default_max_batch_size,
    };
    let loaded = LoadedVersion::load(&dir, version, defaults)?;
    let config = loaded.config();
    if args.json {
        let specs = |s: &[TensorSpec]| -> Vec<_> {
            s.iter()
                .map(|t| json!({"name": t.name, "datatype": t.dtype.name(), "shape": t.dims()}))
                .collect()
        };
        let out = json!({
            "name": name,
            "version": version,
            "versions": dir.versions,
            "path": dir.version_path(version).join(MODEL_FILE),
            "backend": loaded.backend().name(),
            "max_batch_size": config.max_batch_size.unwrap_or(0),
            "dynamic_batching": config.dynamic_batching.as_ref().map(|b| json!({
                "max_queue_delay_us": b.max_queue_delay_us,
                "preferred_batch_size": b.preferred_batch_size,
                "max_queue_size": b.max_queue_size,
            })),
            "hook": config.hook,
            "description": config.description,
            "tags": config.tags,
            "registration": meta,
            "inputs": specs(loaded.inputs()),
            "outputs": specs(loaded.outputs()),
            "placement": loaded.placement().map(|p| json!({
                "device": p.device,
                "nodes_on_device": p.nodes_on_device,
                "nodes_on_cpu": p.nodes_on_cpu,
                "cpu_backend": p.cpu_backend,
                "summary": p.summary(),
            })),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let versions = dir
        .versions
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    println!("name:         {name}");
    println!("version:      {version} (present: {versions})");
    println!(
        "path:         {}",
        dir.version_path(version).join(MODEL_FILE).display()
    );
    println!("backend:      {}", loaded.backend());
    if let Some(p) = loaded.placement() {
        println!("device:       {}", p.device);
        println!(
            "placement:    {} nodes on device, {} on CPU: {}",
            p.nodes_on_device,
            p.nodes_on_cpu,
            p.summary()
        );
        println!("cpu backend:  {}", p.cpu_backend);
    }
    if let Some(max) = config.max_batch_size.filter(|&n| n > 0) {
        println!("max batch:    {max}");
    }
    if let Some(b) = &config.dynamic_batching {
        println!(
            "batching:     dynamic, queue delay {} µs{}",
            b.max_queue_delay_us,
            if b.preferred_batch_size.is_empty() {
                String::new()
            } else {
                format!(", preferred {:?}", b.preferred_batch_size)
            }
        );
    }
    if let Some(h) = &config.hook {
        println!("hook:         {h}");
    }
    if let Some(d) = &config.description {
        println!("description:  {d}");
    }
    if !config.tags.is_empty() {
        println!("tags:         {}", tags(&config.tags));
    }
    match &meta {
        Some(m) => {
            println!("registered:   {} from {}", m.created, m.source);
            println!("sha256:       {}", m.sha256);
            println!("size:         {} bytes", m.size);
            if let Some(d) = &m.description {
                println!("version note: {d}");
            }
            if !m.tags.is_empty() {
                println!("version tags: {}", tags(&m.tags));
            }
            if let (Some(h), Some(sha)) = (&m.hook, &m.hook_sha256) {
                println!("version hook: {h} at registration (sha256 {sha})");
            }
        }
        None => println!("registered:   no (copied in by hand; no meta.toml)"),
    }
    for (title, specs) in [("inputs:", loaded.inputs()), ("outputs:", loaded.outputs())] {
        println!("{title}");
        let width = specs.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for s in specs {
            println!(
                "  {:<width$}  {:<6}  {}",
                s.name,
                s.dtype.name(),
                s.shape_string()
            );
        }
    }
    Ok(())
}

fn tags(tags: &BTreeMap<String, String>) -> String {
    tags.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
