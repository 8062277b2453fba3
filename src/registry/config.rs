//! `config.toml`: a model's optional settings, parsed strictly.
//!
//! Unknown keys and bad values are errors naming the file, the key and the reason; nothing
//! is silently ignored.

use super::RegistryError;
use crate::engine::Backend;
use crate::tensor::DataType;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// A model's settings; every field has a default when `config.toml` is absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelConfig {
    /// The engine; `None` means the server's default (`--backend`, else tract).
    pub backend: Option<Backend>,
    /// When > 0, dimension 0 of every input is a batch dimension of at most this size.
    pub max_batch_size: u32,
    pub version_policy: VersionPolicy,
    /// Type/shape overrides for model inputs.
    pub inputs: Vec<TensorOverride>,
    /// Type/shape declarations for model outputs, checked against the model at load.
    pub outputs: Vec<TensorOverride>,
    pub description: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// The score hook: a `.rhai` file name inside the model folder (see [`crate::hook`]).
    pub hook: Option<String>,
}

/// Which versions of a model are served (Triton's version policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The `n` highest versions.
    Latest(usize),
    All,
    Specific(Vec<u64>),
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest(1)
    }
}

impl VersionPolicy {
    /// The versions to serve out of those present, ascending.
    pub fn select(&self, present: &[u64]) -> Vec<u64> {
        let mut v: Vec<u64> = match self {
            VersionPolicy::Latest(n) => {
                let mut sorted = present.to_vec();
                sorted.sort_unstable();
                sorted.into_iter().rev().take(*n).collect()
            }
            VersionPolicy::All => present.to_vec(),
            VersionPolicy::Specific(wanted) => present
                .iter()
                .copied()
                .filter(|p| wanted.contains(p))
                .collect(),
        };
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// An `[[input]]` or `[[output]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorOverride {
    pub name: String,
    pub datatype: Option<DataType>,
    /// Dimensions; `-1` marks a dynamic one.
    pub dims: Option<Vec<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    backend: Option<String>,
    max_batch_size: Option<u32>,
    version_policy: Option<RawVersionPolicy>,
    #[serde(default)]
    input: Vec<RawTensor>,
    #[serde(default)]
    output: Vec<RawTensor>,
    description: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    hook: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVersionPolicy {
    latest: Option<usize>,
    all: Option<bool>,
    specific: Option<Vec<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTensor {
    name: String,
    datatype: Option<String>,
    dims: Option<Vec<i64>>,
}

impl ModelConfig {
    /// Reads `path`, or returns the defaults when it does not exist.
    pub fn load(path: &Path) -> Result<ModelConfig, RegistryError> {
        match std::fs::read_to_string(path) {
            Ok(text) => ModelConfig::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ModelConfig::default()),
            Err(e) => Err(RegistryError::io(path, e)),
        }
    }

    /// Parses `text`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<ModelConfig, RegistryError> {
        let err = |key: &str, why: String| RegistryError::Config {
            file: path.to_path_buf(),
            key: key.to_string(),
            why,
        };
        let de = toml::Deserializer::new(text);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let line = inner
                .span()
                .map(|s| 1 + text[..s.start.min(text.len())].matches('\n').count());
            let why = match line {
                Some(l) => format!("{} (line {l})", inner.message().trim_end()),
                None => inner.message().trim_end().to_string(),
            };
            err(if key == "." { "(top level)" } else { &key }, why)
        })?;

        let backend = raw
            .backend
            .map(|b| {
                Backend::from_name(&b).ok_or_else(|| {
                    err(
                        "backend",
                        format!(
                            "unknown backend '{b}' (available: {})",
                            Backend::available()
                        ),
                    )
                })
            })
            .transpose()?;

        let version_policy = match raw.version_policy {
            None => VersionPolicy::default(),
            Some(p) => match (p.latest, p.all, p.specific) {
                (Some(0), None, None) => {
                    return Err(err("version_policy.latest", "must be at least 1".into()))
                }
                (Some(n), None, None) => VersionPolicy::Latest(n),
                (None, Some(true), None) => VersionPolicy::All,
                (None, Some(false), None) => {
                    return Err(err(
                        "version_policy.all",
                        "only `all = true` is meaningful".into(),
                    ))
                }
                (None, None, Some(v)) if v.is_empty() || v.contains(&0) => {
                    return Err(err(
                        "version_policy.specific",
                        "must list one or more positive versions".into(),
                    ))
                }
                (None, None, Some(v)) => VersionPolicy::Specific(v),
                _ => {
                    return Err(err(
                        "version_policy",
                        "set exactly one of `latest`, `all` or `specific`".into(),
                    ))
                }
            },
        };

        let tensors =
            |section: &str, raw: Vec<RawTensor>| -> Result<Vec<TensorOverride>, RegistryError> {
                let mut seen = std::collections::HashSet::new();
                raw.into_iter()
                    .enumerate()
                    .map(|(i, t)| {
                        let key = |k: &str| format!("{section}[{i}].{k}");
                        if !seen.insert(t.name.clone()) {
                            return Err(err(&key("name"), format!("'{}' is listed twice", t.name)));
                        }
                        let datatype = t
                            .datatype
                            .map(|d| {
                                DataType::from_name(&d).ok_or_else(|| {
                                    err(
                                        &key("datatype"),
                                        format!("unknown datatype '{d}' (e.g. FP32, INT64, BOOL)"),
                                    )
                                })
                            })
                            .transpose()?;
                        if let Some(dims) = &t.dims {
                            if dims.iter().any(|&d| d < -1) {
                                return Err(err(
                                    &key("dims"),
                                    "dimensions must be >= 0, or -1 for dynamic".into(),
                                ));
                            }
                        }
                        Ok(TensorOverride {
                            name: t.name,
                            datatype,
                            dims: t.dims,
                        })
                    })
                    .collect()
            };

        if let Some(h) = &raw.hook {
            validate_hook_name(h).map_err(|why| err("hook", why))?;
        }

        Ok(ModelConfig {
            backend,
            max_batch_size: raw.max_batch_size.unwrap_or(0),
            version_policy,
            inputs: tensors("input", raw.input)?,
            outputs: tensors("output", raw.output)?,
            description: raw.description,
            tags: raw.tags,
            hook: raw.hook,
        })
    }
}

/// A hook is a plain `.rhai` file name in the model folder: no directories, nothing hidden.
fn validate_hook_name(name: &str) -> Result<(), String> {
    let plain = !name.contains(['/', '\\'])
        && name != ".."
        && !name.starts_with('.')
        && !name.chars().any(char::is_control);
    if !plain {
        return Err(format!(
            "'{name}' must be a plain file name in the model folder, e.g. \"score.rhai\""
        ));
    }
    if name.len() <= ".rhai".len() || !name.ends_with(".rhai") {
        return Err(format!("'{name}' must name a .rhai script"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ModelConfig, String> {
        ModelConfig::parse(text, Path::new("m/config.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_is_default() {
        assert_eq!(parse("").unwrap(), ModelConfig::default());
    }

    #[test]
    fn full_config() {
        let c = parse(
            r#"
            backend = "tract"
            max_batch_size = 8
            description = "digits"
            [version_policy]
            latest = 2
            [tags]
            team = "ml"
            [[input]]
            name = "x"
            datatype = "FP32"
            dims = [-1, 64]
            "#,
        )
        .unwrap();
        assert_eq!(c.backend, Some(Backend::Tract));
        assert_eq!(c.max_batch_size, 8);
        assert_eq!(c.version_policy, VersionPolicy::Latest(2));
        assert_eq!(c.tags["team"], "ml");
        assert_eq!(c.inputs[0].datatype, Some(DataType::F32));
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let e = parse("max_batch_size = 1\ninstancez = 2\n").unwrap_err();
        assert!(e.starts_with("m/config.toml: "), "{e}");
        assert!(e.contains("instancez"), "{e}");
        let e = parse("[version_policy]\nnewest = 1\n").unwrap_err();
        assert!(e.contains("version_policy") && e.contains("newest"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = parse("max_batch_size = \"eight\"\n").unwrap_err();
        assert!(e.contains("max_batch_size") && e.contains("line 1"), "{e}");
        let e = parse("max_batch_size = -1\n").unwrap_err();
        assert!(e.contains("max_batch_size"), "{e}");
        let e = parse("backend = \"cuda\"\n").unwrap_err();
        assert!(e.contains("backend") && e.contains("cuda"), "{e}");
        let e = parse("[[input]]\nname = \"x\"\ndatatype = \"FP8\"\n").unwrap_err();
        assert!(e.contains("input[0].datatype") && e.contains("FP8"), "{e}");
        let e = parse("[version_policy]\nlatest = 1\nall = true\n").unwrap_err();
        assert!(e.contains("exactly one"), "{e}");
        let e = parse("not toml at all").unwrap_err();
        assert!(e.starts_with("m/config.toml: "), "{e}");
    }

    #[test]
    fn hook_is_a_plain_rhai_file_name() {
        assert_eq!(parse("").unwrap().hook, None);
        let c = parse("hook = \"score.rhai\"\n").unwrap();
        assert_eq!(c.hook.as_deref(), Some("score.rhai"));
        for bad in [
            "../score.rhai",
            "sub/score.rhai",
            "/etc/x.rhai",
            "..",
            ".rhai",
            ".hidden.rhai",
            "score.py",
            "score.rhai.txt",
            "a\\b.rhai",
        ] {
            let e = parse(&format!("hook = {bad:?}\n")).unwrap_err();
            assert!(e.contains("key `hook`"), "{bad}: {e}");
        }
        let e = parse("hook = 3\n").unwrap_err();
        assert!(e.contains("hook"), "{e}");
    }

    #[test]
    fn version_policies_select() {
        let present = [1, 2, 3, 5];
        assert_eq!(VersionPolicy::Latest(1).select(&present), vec![5]);
        assert_eq!(VersionPolicy::Latest(2).select(&present), vec![3, 5]);
        assert_eq!(VersionPolicy::All.select(&present), vec![1, 2, 3, 5]);
        assert_eq!(
            VersionPolicy::Specific(vec![2, 4]).select(&present),
            vec![2]
        );
    }
}
