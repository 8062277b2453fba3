//! The model repository on disk: `<root>/<name>/<version>/model.onnx`, with an optional
//! `<root>/<name>/config.toml` and per-version registration metadata (`meta.toml`).
//!
//! Both front ends and the CLI read models through this module; only [`register`] writes.
//! [`runs`] is the workspace's benchmark run history beside it (written by `scoria bench`,
//! read by `scoria runs` and the studio).

pub mod config;
mod meta;
pub mod name;
mod register;
pub mod runs;
pub mod store;

pub use config::ModelConfig;
pub use meta::VersionMeta;
pub use register::{delete, register, Registration};

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// File name of a version's model inside its version folder.
pub const MODEL_FILE: &str = "model.onnx";
/// File name of a model's settings inside its folder.
pub const CONFIG_FILE: &str = "config.toml";

/// Failures of reading or changing the repository.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("invalid model name '{name}': {why}")]
    InvalidName { name: String, why: String },
    #[error("invalid model reference '{reference}': {why}")]
    InvalidReference { reference: String, why: String },
    #[error("{}: key `{key}`: {why}", file.display())]
    Config {
        file: PathBuf,
        key: String,
        why: String,
    },
    #[error("no model '{0}' in the repository")]
    ModelNotFound(String),
    #[error("model '{name}' has no version {version}")]
    VersionNotFound { name: String, version: u64 },
    #[error("{0}")]
    NotOnnx(String),
}

impl RegistryError {
    pub(crate) fn io(path: &Path, source: io::Error) -> RegistryError {
        RegistryError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A model repository rooted at a directory.
#[derive(Debug, Clone)]
pub struct Repository {
    root: PathBuf,
}

/// One model folder as found on disk.
#[derive(Debug)]
pub struct ModelDir {
    pub name: String,
    pub path: PathBuf,
    /// The parsed `config.toml`, or why it could not be used.
    pub config: Result<ModelConfig, RegistryError>,
    /// Every version folder present, ascending.
    pub versions: Vec<u64>,
}

impl ModelDir {
    /// Folder of `version`.
    pub fn version_path(&self, version: u64) -> PathBuf {
        self.path.join(version.to_string())
    }

    /// Why `version` cannot be used although its folder is there (a store object that failed
    /// verification; see [`store`]), if so.
    pub fn version_error(&self, version: u64) -> Option<String> {
        store::folder_error(&self.version_path(version))
    }

    /// The versions the config's policy selects (none when the config is broken).
    pub fn served_versions(&self) -> Vec<u64> {
        match &self.config {
            Ok(c) => c.version_policy.select(&self.versions),
            Err(_) => Vec::new(),
        }
    }
}

impl Repository {
    /// Opens an existing repository directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Repository, RegistryError> {
        let root = root.into();
        match fs::metadata(&root) {
            Ok(m) if m.is_dir() => Ok(Repository { root }),
            Ok(_) => Err(RegistryError::io(
                &root,
                io::Error::other("not a directory"),
            )),
            Err(e) => Err(RegistryError::io(&root, e)),
        }
    }

    /// Opens the repository, creating its directory first if needed (for registration).
    pub fn create(root: impl Into<PathBuf>) -> Result<Repository, RegistryError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| RegistryError::io(&root, e))?;
        Repository::open(root)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Names of all model folders, sorted. Hidden entries and names that are not valid
    /// model names are skipped.
    pub fn model_names(&self) -> Result<Vec<String>, RegistryError> {
        let mut names: Vec<String> = read_dir(&self.root)?
            .into_iter()
            .filter(|(name, is_dir)| *is_dir && name::validate(name).is_ok())
            .map(|(name, _)| name)
            .collect();
        names.sort();
        Ok(names)
    }

    /// Reads one model folder.
    pub fn model(&self, model: &str) -> Result<ModelDir, RegistryError> {
        name::validate(model)?;
        let path = self.root.join(model);
        if !path.is_dir() {
            return Err(RegistryError::ModelNotFound(model.to_string()));
        }
        let mut versions: Vec<u64> = read_dir(&path)?
            .into_iter()
            .filter(|(_, is_dir)| *is_dir)
            .filter_map(|(n, _)| name::parse_version(&n))
            .collect();
        versions.sort_unstable();
        let config = match store::folder_error(&path) {
            // A model mirrored from a store whose files could not be used.
            Some(why) => Err(RegistryError::Config {
                file: path.join(CONFIG_FILE),
                key: "(store)".into(),
                why,
            }),
            None => ModelConfig::load(&path.join(CONFIG_FILE)),
        };
        Ok(ModelDir {
            name: model.to_string(),
            path,
            config,
            versions,
        })
    }

    /// Reads every model folder.
    pub fn models(&self) -> Result<Vec<ModelDir>, RegistryError> {
        self.model_names()?.iter().map(|n| self.model(n)).collect()
    }
}

/// `(file name, is directory)` of each UTF-8-named entry of `dir`; a link to a directory
/// counts as one (as in Triton's repositories, whose model folders are often links).
fn read_dir(dir: &Path) -> Result<Vec<(String, bool)>, RegistryError> {
    let entries = fs::read_dir(dir).map_err(|e| RegistryError::io(dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| RegistryError::io(dir, e))?;
        let is_dir = match entry.file_type() {
            Ok(t) if t.is_symlink() => entry.path().is_dir(),
            Ok(t) => t.is_dir(),
            Err(_) => false,
        };
        if let Ok(name) = entry.file_name().into_string() {
            out.push((name, is_dir));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_models_and_versions() {
        let dir = tempfile::tempdir().unwrap();
        for p in ["a/1", "a/3", "a/.tmp-1-2", "a/x", "b", ".hidden/1"] {
            fs::create_dir_all(dir.path().join(p)).unwrap();
        }
        fs::write(
            dir.path().join("a/config.toml"),
            "[version_policy]\nall = true\n",
        )
        .unwrap();
        fs::write(dir.path().join("b/config.toml"), "bogus = 1\n").unwrap();
        fs::write(dir.path().join("file.txt"), "x").unwrap();
        let repo = Repository::open(dir.path()).unwrap();
        assert_eq!(repo.model_names().unwrap(), vec!["a", "b"]);
        let a = repo.model("a").unwrap();
        assert_eq!(a.versions, vec![1, 3]);
        assert_eq!(a.served_versions(), vec![1, 3]);
        let b = repo.model("b").unwrap();
        assert!(b.config.is_err());
        assert!(b.served_versions().is_empty());
        assert!(matches!(
            repo.model("c"),
            Err(RegistryError::ModelNotFound(_))
        ));
        assert!(matches!(
            repo.model("../a"),
            Err(RegistryError::InvalidName { .. })
        ));
        // Links to folders are folders: a linked model and a linked version are served; a
        // link to a file or to nothing is not.
        let elsewhere = tempfile::tempdir().unwrap();
        fs::create_dir_all(elsewhere.path().join("linked/2")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path().join("linked"), dir.path().join("c")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path().join("linked/2"), dir.path().join("a/4"))
            .unwrap();
        std::os::unix::fs::symlink(dir.path().join("file.txt"), dir.path().join("d")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("nothing"), dir.path().join("e")).unwrap();
        assert_eq!(repo.model_names().unwrap(), vec!["a", "b", "c"]);
        assert_eq!(repo.model("c").unwrap().versions, vec![2]);
        assert_eq!(repo.model("a").unwrap().versions, vec![1, 3, 4]);
    }

    #[test]
    fn open_requires_a_directory() {
        assert!(Repository::open("/nonexistent/scoria").is_err());
    }
}
