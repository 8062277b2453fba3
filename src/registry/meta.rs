//! `meta.toml`: what registration recorded about one version.

use super::RegistryError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// File name of the registration record inside a version folder.
pub const META_FILE: &str = "meta.toml";

/// Registration record of one version. Versions copied in by hand have none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionMeta {
    /// Hex sha256 of `model.onnx`.
    pub sha256: String,
    /// Size of `model.onnx` in bytes.
    pub size: u64,
    /// RFC 3339 UTC time of registration.
    pub created: String,
    /// The file it was registered from.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The score hook installed with this version (`--hook`): its file name in the model
    /// folder and the hex sha256 of what was installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_sha256: Option<String>,
}

impl VersionMeta {
    /// Reads the record in `version_dir`, `None` if there is none.
    pub fn load(version_dir: &Path) -> Result<Option<VersionMeta>, RegistryError> {
        let path = version_dir.join(META_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => VersionMeta::parse(&text, &path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RegistryError::io(&path, e)),
        }
    }

    /// Parses the text of a record; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<VersionMeta, RegistryError> {
        toml::from_str(text).map_err(|e| RegistryError::Config {
            file: path.to_path_buf(),
            key: "(record)".into(),
            // One line, whatever the parser's message spans.
            why: e.message().split_whitespace().collect::<Vec<_>>().join(" "),
        })
    }

    /// The TOML text of this record.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a VersionMeta always serializes; this is a bug")
    }
}
