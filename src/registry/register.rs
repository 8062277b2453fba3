//! Registering and deleting versions, atomically.
//!
//! A new version is assembled in a hidden temporary folder beside the versions, fsynced,
//! then renamed into place: readers and a killed process only ever see no version or a
//! complete one. Leftover temporary folders of dead processes are removed on the next write.
//! A score hook registered with a version is installed in the model folder (written
//! atomically, and named in `config.toml`) just before the version appears.

use super::config::ModelConfig;
use super::meta::{VersionMeta, META_FILE};
use super::{name, RegistryError, Repository, CONFIG_FILE, MODEL_FILE};
use crate::fsutil;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

const TMP_PREFIX: &str = "tmp";
const TRASH_PREFIX: &str = "trash";

/// What to register.
#[derive(Debug, Clone)]
pub struct Registration {
    pub name: String,
    pub source: PathBuf,
    pub tags: BTreeMap<String, String>,
    pub description: Option<String>,
    /// A score hook to install for the model (the caller has checked that it compiles).
    pub hook: Option<PathBuf>,
}

/// File name a registered hook gets when the model's `config.toml` names none.
pub const DEFAULT_HOOK_FILE: &str = "score.rhai";

/// A hook about to be installed: its bytes, their sha256, and its file name in the model folder.
pub(crate) struct HookInstall {
    pub bytes: Vec<u8>,
    pub sha256: String,
    pub file: String,
}

impl HookInstall {
    /// The hook `bytes`, under the name the model's `config` gives, else [`DEFAULT_HOOK_FILE`].
    pub fn new(bytes: Vec<u8>, config: &ModelConfig) -> HookInstall {
        HookInstall {
            sha256: hex::encode(Sha256::digest(&bytes)),
            file: config
                .hook
                .clone()
                .unwrap_or_else(|| DEFAULT_HOOK_FILE.to_string()),
            bytes,
        }
    }

    /// The model's `config.toml` text naming this hook, when `config` (parsed from `text`)
    /// names none; `None` when it already does.
    pub fn naming_config(&self, text: &str, config: &ModelConfig) -> Option<String> {
        // Top-level keys must precede every table: the first line is always a valid place.
        config
            .hook
            .is_none()
            .then(|| format!("hook = \"{}\"\n{text}", self.file))
    }
}

impl Registration {
    /// The record of this registration's new version: the model file's `sha256` and `size`,
    /// and the hook installed with it.
    pub(crate) fn meta(
        &self,
        sha256: String,
        size: u64,
        hook: Option<&HookInstall>,
    ) -> VersionMeta {
        VersionMeta {
            sha256,
            size,
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            source: self.source.display().to_string(),
            description: self.description.clone(),
            tags: self.tags.clone(),
            hook: hook.map(|h| h.file.clone()),
            hook_sha256: hook.map(|h| h.sha256.clone()),
        }
    }
}

/// Copies `reg.source` into the next version of model `reg.name` and returns that version
/// and its record. The file must parse as an ONNX model; otherwise nothing is written. With
/// `reg.hook`, the script is installed as the model's score hook (used by all its versions):
/// under the name `config.toml` gives, else as `score.rhai`, added to `config.toml`.
pub fn register(
    repo: &Repository,
    reg: &Registration,
) -> Result<(u64, VersionMeta), RegistryError> {
    name::validate(&reg.name)?;
    let source_meta = fs::metadata(&reg.source).map_err(|e| RegistryError::io(&reg.source, e))?;
    if !source_meta.is_file() {
        return Err(RegistryError::io(
            &reg.source,
            io::Error::other("not a regular file"),
        ));
    }
    crate::engine::check_onnx(&reg.source).map_err(|e| RegistryError::NotOnnx(e.to_string()))?;

    let model_dir = repo.root().join(&reg.name);
    let hook = reg
        .hook
        .as_deref()
        .map(|path| prepare_hook(&model_dir, path))
        .transpose()?;
    fs::create_dir_all(&model_dir).map_err(|e| RegistryError::io(&model_dir, e))?;
    fsutil::remove_stale_temps(&model_dir, &[TMP_PREFIX, TRASH_PREFIX]);

    let tmp = fsutil::temp_path(&model_dir, TMP_PREFIX);
    let staged = stage(&tmp, reg, hook.as_ref()).and_then(|meta| {
        if let Some(h) = &hook {
            install_hook(&model_dir, h)?;
        }
        Ok(meta)
    });
    let meta = match staged {
        Ok(meta) => meta,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };

    // Another registration may take a version number between the scan and the rename;
    // rename onto an existing (non-empty) version folder fails, so try the next number.
    let mut version = next_version(repo, &reg.name)?;
    loop {
        let dest = model_dir.join(version.to_string());
        match fs::rename(&tmp, &dest) {
            Ok(()) => break,
            Err(e) if dest.exists() && version < u64::MAX => {
                tracing::debug!("version {version} taken ({e}); trying the next");
                version += 1;
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(RegistryError::io(&dest, e));
            }
        }
    }
    fsutil::fsync_dir(&model_dir).map_err(|e| RegistryError::io(&model_dir, e))?;
    Ok((version, meta))
}

fn next_version(repo: &Repository, name: &str) -> Result<u64, RegistryError> {
    Ok(repo
        .model(name)?
        .versions
        .last()
        .map_or(1, |v| v.saturating_add(1)))
}

/// Fills the temporary folder: the model copy (hashed while copying) and its record.
fn stage(
    tmp: &Path,
    reg: &Registration,
    hook: Option<&HookInstall>,
) -> Result<VersionMeta, RegistryError> {
    fs::create_dir(tmp).map_err(|e| RegistryError::io(tmp, e))?;
    let dest = tmp.join(MODEL_FILE);
    let (sha256, size) = copy_hashed(&reg.source, &dest)?;
    let meta = reg.meta(sha256, size, hook);
    let meta_path = tmp.join(META_FILE);
    fsutil::atomic_write(&meta_path, meta.to_toml().as_bytes())
        .map_err(|e| RegistryError::io(&meta_path, e))?;
    fsutil::fsync_dir(tmp).map_err(|e| RegistryError::io(tmp, e))?;
    Ok(meta)
}

/// Reads the hook at `path` and picks its file name from the model's `config.toml` (which
/// must be valid).
fn prepare_hook(model_dir: &Path, path: &Path) -> Result<HookInstall, RegistryError> {
    let bytes = fs::read(path).map_err(|e| RegistryError::io(path, e))?;
    let config = ModelConfig::load(&model_dir.join(CONFIG_FILE))?;
    Ok(HookInstall::new(bytes, &config))
}

/// Writes the hook into the model folder and, when `config.toml` names no hook, names it
/// there (first line); each file is replaced atomically.
fn install_hook(model_dir: &Path, hook: &HookInstall) -> Result<(), RegistryError> {
    let script = model_dir.join(&hook.file);
    fsutil::atomic_write(&script, &hook.bytes).map_err(|e| RegistryError::io(&script, e))?;
    let config_path = model_dir.join(CONFIG_FILE);
    let text = match fs::read_to_string(&config_path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(RegistryError::io(&config_path, e)),
    };
    let config = ModelConfig::parse(&text, &config_path)?;
    if let Some(text) = hook.naming_config(&text, &config) {
        fsutil::atomic_write(&config_path, text.as_bytes())
            .map_err(|e| RegistryError::io(&config_path, e))?;
    }
    Ok(())
}

fn copy_hashed(src: &Path, dest: &Path) -> Result<(String, u64), RegistryError> {
    let mut input = File::open(src).map_err(|e| RegistryError::io(src, e))?;
    let mut output = File::create(dest).map_err(|e| RegistryError::io(dest, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = input
            .read(&mut buf)
            .map_err(|e| RegistryError::io(src, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output
            .write_all(&buf[..n])
            .map_err(|e| RegistryError::io(dest, e))?;
        size += n as u64;
    }
    output.sync_all().map_err(|e| RegistryError::io(dest, e))?;
    Ok((hex::encode(hasher.finalize()), size))
}

/// Removes `model:version` from disk. The folder is first renamed out of the version
/// namespace, so the version disappears atomically even if the removal is interrupted.
pub fn delete(repo: &Repository, model: &str, version: u64) -> Result<(), RegistryError> {
    let dir = repo.model(model)?;
    if !dir.versions.contains(&version) {
        return Err(RegistryError::VersionNotFound {
            name: model.to_string(),
            version,
        });
    }
    fsutil::remove_stale_temps(&dir.path, &[TMP_PREFIX, TRASH_PREFIX]);
    let trash = fsutil::temp_path(&dir.path, TRASH_PREFIX);
    let src = dir.version_path(version);
    fs::rename(&src, &trash).map_err(|e| RegistryError::io(&src, e))?;
    fsutil::fsync_dir(&dir.path).map_err(|e| RegistryError::io(&dir.path, e))?;
    fs::remove_dir_all(&trash).map_err(|e| RegistryError::io(&trash, e))
}
