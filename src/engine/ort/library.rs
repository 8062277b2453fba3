//! Finding and loading ONNX Runtime's shared library, once per process.
//!
//! The library is not linked at build time (the `ort` crate's `load-dynamic`): it is looked
//! for when the first ort model loads, so a process without it still serves tract models, and
//! each ort model that cannot load says why in one line with the command that installs it.
//!
//! Lookup order: `ORT_DYLIB_PATH`, then `SCORIA_ORT_LIBRARY` (either, when set, is the only
//! candidate: a wrong explicit path is an error, not a reason to look elsewhere), then
//! `<workspace>/.cache/onnxruntime/<version>/libonnxruntime.so`, then the same under the
//! current directory. [`LibrarySearch`] holds the candidates explicitly so the lookup can be
//! tested without touching the process environment.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

/// The ONNX Runtime release whose C API the `ort` crate is built against (`api-31`), and the
/// one `scripts/fetch-onnxruntime` installs.
pub const ORT_VERSION: &str = "1.31.1";

/// The command that installs the library, for messages.
pub const INSTALL_COMMAND: &str = "scripts/fetch-onnxruntime";

/// File name of the library inside a cache version folder.
const LIBRARY_FILE: &str = "libonnxruntime.so";

/// The workspace recorded by [`prepare_process`], searched before the current directory.
static WORKSPACE: OnceLock<PathBuf> = OnceLock::new();

/// The ONNX Runtime environment, created by the first ort model that loads.
static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);

struct Runtime {
    environment: ::ort::environment::Environment,
    library: PathBuf,
}

/// Prepares the process for ONNX Runtime. Call first thing in `main`, while the process has a
/// single thread (it may set an environment variable):
/// - sets `XDG_CACHE_HOME` to `<workspace>/.cache` when it is unset, so whatever ONNX Runtime
///   caches stays inside the workspace rather than the user's home;
/// - records `workspace` as the first place to look for the library.
pub fn prepare_process(workspace: &Path) {
    let workspace = std::path::absolute(workspace).unwrap_or_else(|_| workspace.to_path_buf());
    if std::env::var_os("XDG_CACHE_HOME").is_none_or(|v| v.is_empty()) {
        std::env::set_var("XDG_CACHE_HOME", workspace.join(".cache"));
    }
    let _ = WORKSPACE.set(workspace);
}

/// Where to look for the ONNX Runtime library, most specific first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LibrarySearch {
    /// A library named explicitly, with the setting that named it (for messages). When set it
    /// is the only candidate.
    pub explicit: Option<(String, PathBuf)>,
    /// Folders whose `.cache/onnxruntime/<version>/libonnxruntime.so` may hold the library.
    pub roots: Vec<PathBuf>,
}

impl LibrarySearch {
    /// The process's search: `ORT_DYLIB_PATH`, `SCORIA_ORT_LIBRARY`, the workspace given to
    /// [`prepare_process`], the current directory.
    pub fn from_process() -> LibrarySearch {
        let explicit = ["ORT_DYLIB_PATH", "SCORIA_ORT_LIBRARY"]
            .into_iter()
            .find_map(|var| match std::env::var_os(var) {
                Some(v) if !v.is_empty() => Some((var.to_string(), PathBuf::from(v))),
                _ => None,
            });
        let mut roots: Vec<PathBuf> = WORKSPACE.get().cloned().into_iter().collect();
        if let Ok(cwd) = std::env::current_dir() {
            if !roots.contains(&cwd) {
                roots.push(cwd);
            }
        }
        LibrarySearch { explicit, roots }
    }

    /// The library to load, or a one-line reason naming every place tried and the command
    /// that installs it.
    pub fn find(&self) -> Result<PathBuf, String> {
        if let Some((origin, path)) = &self.explicit {
            return if path.is_file() {
                Ok(absolute(path))
            } else {
                Err(format!(
                    "ONNX Runtime library not found: {origin}={} does not exist; run \
                     {INSTALL_COMMAND} to install ONNX Runtime {ORT_VERSION} and point {origin} \
                     at it, or unset {origin}",
                    path.display()
                ))
            };
        }
        for root in &self.roots {
            if let Some(found) = cached_library(&root.join(".cache/onnxruntime")) {
                return Ok(absolute(&found));
            }
        }
        let tried: Vec<String> = self
            .roots
            .iter()
            .map(|r| {
                r.join(".cache/onnxruntime/*")
                    .join(LIBRARY_FILE)
                    .display()
                    .to_string()
            })
            .collect();
        Err(format!(
            "ONNX Runtime library not found (tried {}); run {INSTALL_COMMAND} to install \
             ONNX Runtime {ORT_VERSION}, or set ORT_DYLIB_PATH to a libonnxruntime.so",
            if tried.is_empty() {
                "no locations".to_string()
            } else {
                tried.join(", ")
            }
        ))
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `<dir>/<version>/libonnxruntime.so` for the version `ort` is built for, else the highest
/// version present.
fn cached_library(dir: &Path) -> Option<PathBuf> {
    let preferred = dir.join(ORT_VERSION).join(LIBRARY_FILE);
    if preferred.is_file() {
        return Some(preferred);
    }
    let mut found: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.to_string();
            let version: Vec<u64> = name
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            let lib = entry.path().join(LIBRARY_FILE);
            lib.is_file().then_some((version, lib))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, lib)| lib)
}

/// The process's ONNX Runtime environment, loading the library that `search` finds on first
/// use. The library is looked up on every call, so a model whose library is missing fails
/// the same way whether or not another model loaded ONNX Runtime before; once loaded, the
/// first library serves the whole process (ONNX Runtime cannot be loaded twice).
pub(super) fn environment(
    search: &LibrarySearch,
) -> Result<::ort::environment::Environment, String> {
    let library = search.find()?;
    let mut runtime = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(rt) = runtime.as_ref() {
        if rt.library != library {
            tracing::debug!(
                loaded = %rt.library.display(),
                requested = %library.display(),
                "ONNX Runtime is already loaded; using the loaded library"
            );
        }
        return Ok(rt.environment.clone());
    }
    let environment = ::ort::init_from(&library)
        .map_err(|e| {
            format!(
                "cannot load ONNX Runtime: {e}; run {INSTALL_COMMAND} to install ONNX Runtime \
                 {ORT_VERSION}"
            )
        })?
        .with_name("scoria")
        .with_telemetry(false)
        .build()
        .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", library.display()))?;
    tracing::info!(library = %library.display(), "ONNX Runtime loaded");
    *runtime = Some(Runtime {
        environment: environment.clone(),
        library,
    });
    Ok(environment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"not really a library").unwrap();
    }

    #[test]
    fn explicit_path_is_the_only_candidate() {
        let dir = tempfile::tempdir().unwrap();
        touch(
            &dir.path()
                .join(".cache/onnxruntime/1.31.1/libonnxruntime.so"),
        );
        let missing = dir.path().join("nowhere/libonnxruntime.so");
        let search = LibrarySearch {
            explicit: Some(("ORT_DYLIB_PATH".into(), missing.clone())),
            roots: vec![dir.path().to_path_buf()],
        };
        let e = search.find().unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        assert!(
            e.contains(&format!("ORT_DYLIB_PATH={}", missing.display())),
            "{e}"
        );
        assert!(e.contains("scripts/fetch-onnxruntime"), "{e}");

        let lib = dir.path().join("lib/libonnxruntime.so");
        touch(&lib);
        let search = LibrarySearch {
            explicit: Some(("SCORIA_ORT_LIBRARY".into(), lib.clone())),
            roots: vec![],
        };
        assert_eq!(search.find().unwrap(), lib);
    }

    #[test]
    fn cache_folders_prefer_the_built_for_version_then_the_highest() {
        let ws = tempfile::tempdir().unwrap();
        let cwd = tempfile::tempdir().unwrap();
        let search = LibrarySearch {
            explicit: None,
            roots: vec![ws.path().to_path_buf(), cwd.path().to_path_buf()],
        };
        let e = search.find().unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        for root in [ws.path(), cwd.path()] {
            let pattern = root.join(".cache/onnxruntime/*/libonnxruntime.so");
            assert!(e.contains(&pattern.display().to_string()), "{e}");
        }
        assert!(e.contains("run scripts/fetch-onnxruntime"), "{e}");

        // The current directory's cache is used when the workspace has none.
        let in_cwd = cwd
            .path()
            .join(".cache/onnxruntime/1.30.0/libonnxruntime.so");
        touch(&in_cwd);
        assert_eq!(search.find().unwrap(), in_cwd);

        // In the workspace: the highest version, and the built-for version before any other.
        let cache = ws.path().join(".cache/onnxruntime");
        touch(&cache.join("1.9.0/libonnxruntime.so"));
        touch(&cache.join("1.32.0/libonnxruntime.so"));
        std::fs::create_dir_all(cache.join("not-a-version")).unwrap();
        std::fs::create_dir_all(cache.join("1.40.0")).unwrap(); // no library inside
        assert_eq!(
            search.find().unwrap(),
            cache.join("1.32.0/libonnxruntime.so")
        );
        touch(&cache.join(ORT_VERSION).join("libonnxruntime.so"));
        assert_eq!(
            search.find().unwrap(),
            cache.join(ORT_VERSION).join("libonnxruntime.so")
        );
    }

    #[test]
    fn no_roots_still_says_what_to_run() {
        let e = LibrarySearch::default().find().unwrap_err();
        assert!(
            e.contains("tried no locations") && e.contains(INSTALL_COMMAND),
            "{e}"
        );
    }
}
