//! Object keys of a listing, checked and sorted into models, model files and versions.
//!
//! Every key that becomes a path in the cache is checked segment by segment: no empty, `.`,
//! `..` or hidden segment, no `\`, NUL or other control character, model names as the
//! repository allows them, version folders that are positive integers. Keys that fail are
//! skipped with a warning, never written.

use crate::registry::name;
use std::collections::BTreeMap;

/// One object as listed: its key relative to the repository prefix, size and change tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The full key in the store.
    pub key: String,
    pub size: u64,
    /// The store's ETag, else the last-modified time: changes when the object does.
    pub tag: String,
}

impl Listed {
    /// What the cache remembers to tell whether the object changed.
    pub fn fingerprint(&self) -> String {
        format!("{}:{}", self.size, self.tag)
    }
}

/// A model as found in a listing.
#[derive(Debug, Default, Clone)]
pub struct RemoteModel {
    /// Files in the model folder (`config.toml`, hooks, labels), by relative path.
    pub files: BTreeMap<String, Listed>,
    /// Version folders, each with its files by path relative to the version folder. Only
    /// versions that hold a `meta.toml` (the completeness marker) are kept.
    pub versions: BTreeMap<u64, BTreeMap<String, Listed>>,
    /// Every version number seen, complete or not (for picking the next one to register).
    pub all_versions: Vec<u64>,
}

/// A listing sorted into models, with the keys that were skipped and why.
#[derive(Debug, Default)]
pub struct Sorted {
    pub models: BTreeMap<String, RemoteModel>,
    pub skipped: Vec<String>,
}

/// Checks one path segment that becomes a file or folder name in the cache.
pub fn check_segment(segment: &str) -> Result<(), String> {
    if segment.is_empty() {
        Err("empty segment".into())
    } else if segment == "." || segment == ".." {
        Err(format!("'{segment}' segment"))
    } else if segment.starts_with('.') {
        Err("hidden segment".into())
    } else if segment.len() > 255 {
        Err("segment longer than 255 bytes".into())
    } else if let Some(c) = segment.chars().find(|c| c.is_control() || *c == '\\') {
        Err(format!("{c:?} in a segment"))
    } else {
        Ok(())
    }
}

/// Sorts `objects` (full keys) found under `prefix` (without trailing `/`, may be empty).
pub fn sort(prefix: &str, objects: Vec<Listed>) -> Sorted {
    let mut out = Sorted::default();
    for obj in objects {
        let rel = if prefix.is_empty() {
            Some(obj.key.as_str())
        } else {
            obj.key
                .strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('/'))
        };
        let Some(rel) = rel else {
            out.skipped.push(format!("{}: outside the prefix", obj.key));
            continue;
        };
        let rel = rel.to_string();
        if let Err(Some(why)) = classify(&rel, obj, &mut out.models) {
            out.skipped.push(format!("{rel}: {why}"));
        }
    }
    for model in out.models.values_mut() {
        model.all_versions.sort_unstable();
        model.all_versions.dedup();
    }
    out.models
        .retain(|_, m| !m.files.is_empty() || !m.versions.is_empty());
    out
}

/// Files the listing ignores silently (hidden markers, e.g. registration claims; the
/// cache's own `.store-error` files are hidden too, so no object can overwrite them).
fn quiet(segment: &str) -> bool {
    segment.starts_with('.')
}

/// Puts one relative key into `models`. `Err(None)` skips it quietly, `Err(Some(why))` with
/// a warning.
fn classify(
    rel: &str,
    obj: Listed,
    models: &mut BTreeMap<String, RemoteModel>,
) -> Result<(), Option<String>> {
    let parts: Vec<&str> = rel.split('/').collect();
    if parts.len() < 2 {
        return Err(None); // files beside the models (a README) are not part of any model
    }
    for p in &parts {
        if quiet(p) && *p != "." && *p != ".." {
            continue;
        }
        check_segment(p).map_err(|why| Some(format!("unsafe key ({why})")))?;
    }
    if parts.iter().any(|p| quiet(p)) {
        return Err(None);
    }
    let model = parts[0];
    name::validate(model).map_err(|e| Some(e.to_string()))?;
    if parts.len() == 2 {
        models
            .entry(model.to_string())
            .or_default()
            .files
            .insert(parts[1].to_string(), obj);
        return Ok(());
    }
    let Some(version) = name::parse_version(parts[1]) else {
        return Err(Some(format!(
            "version folder '{}' is not a positive integer",
            parts[1]
        )));
    };
    let entry = models.entry(model.to_string()).or_default();
    entry.all_versions.push(version);
    entry
        .versions
        .entry(version)
        .or_default()
        .insert(parts[2..].join("/"), obj);
    Ok(())
}

/// Drops versions without their completeness marker (`meta.toml`).
pub fn complete_only(sorted: &mut Sorted, marker: &str) {
    for model in sorted.models.values_mut() {
        model.versions.retain(|_, files| files.contains_key(marker));
    }
    sorted
        .models
        .retain(|_, m| !m.files.is_empty() || !m.versions.is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str) -> Listed {
        Listed {
            key: key.to_string(),
            size: 1,
            tag: "e".into(),
        }
    }

    #[test]
    fn sorts_and_rejects_unsafe_keys() {
        let keys = [
            "p/digits/config.toml",
            "p/digits/score.rhai",
            "p/digits/1/model.onnx",
            "p/digits/1/meta.toml",
            "p/digits/2/model.onnx", // no meta.toml: invisible
            "p/digits/latest/model.onnx",
            "p/digits/01/model.onnx",
            "p/digits/3/../../../etc/passwd",
            "p/digits/3/a\u{0}b",
            "p/digits/3/a\\b",
            "p/digits//x",
            "p/digits/.claim",
            "p/digits/4/.claim",
            "p/.hidden/1/model.onnx",
            "p/bad name/1/model.onnx",
            "p/README.md",
            "other/digits/1/model.onnx",
            "p/lenet/1/sub/dir/file.bin",
            "p/lenet/1/meta.toml",
            "p/lenet/1/.store-error",
        ];
        let mut sorted = sort("p", keys.iter().map(|k| obj(k)).collect());
        let digits = &sorted.models["digits"];
        assert_eq!(
            digits.files.keys().collect::<Vec<_>>(),
            ["config.toml", "score.rhai"]
        );
        assert_eq!(digits.all_versions, vec![1, 2]);
        complete_only(&mut sorted, "meta.toml");
        let digits = &sorted.models["digits"];
        assert_eq!(digits.versions.keys().collect::<Vec<_>>(), [&1]);
        let lenet = &sorted.models["lenet"];
        assert_eq!(
            lenet.versions[&1].keys().collect::<Vec<_>>(),
            ["meta.toml", "sub/dir/file.bin"]
        );
        assert_eq!(sorted.models.len(), 2);
        let skipped = sorted.skipped.join("\n");
        for needle in [
            "latest",
            "'01'",
            "'..' segment",
            "'\\0'",
            "'\\\\'",
            "empty segment",
            "bad name",
            "outside the prefix",
        ] {
            assert!(skipped.contains(needle), "{needle} not in {skipped}");
        }
        assert!(!skipped.contains("README"));
    }

    #[test]
    fn empty_prefix() {
        let sorted = sort("", vec![obj("m/1/meta.toml")]);
        assert_eq!(sorted.models["m"].versions[&1].len(), 1);
    }
}
