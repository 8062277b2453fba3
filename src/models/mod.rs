//! The serving core: which model versions are loaded, in what state, and the one path through
//! which every front end runs inference ([`LoadedVersion::infer`]).

mod admission;
pub mod autocomplete;
pub mod idle;
pub mod intake;
mod loaded;
pub mod poll;
mod repository;
pub mod score;
pub mod stats;
#[cfg(test)]
mod tests;
mod validate;

pub use admission::{Admitted, AtLimit, InflightLimit};
pub use loaded::{Inference, LoadDefaults, LoadedVersion};
pub use repository::{IndexEntry, IndexState};

use crate::batch::{BatchObservers, SchedulerError};
use crate::engine::EngineError;
use crate::hook::{self, Hook, HookError, Predictor};
use crate::registry::{name, ModelDir, RegistryError, Repository};
use crate::tensor::ErrorKind;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// Failures of the serving core; [`ModelError::kind`] classifies each for the front ends.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unknown model '{0}'")]
    ModelNotFound(String),
    #[error("model '{name}' has no version '{version}'")]
    VersionNotFound { name: String, version: String },
    /// The model or version exists but cannot serve (still loading, or failed to load).
    #[error("{0}")]
    NotReady(String),
    /// The request does not fit the model.
    #[error("{0}")]
    InvalidInput(String),
    /// The scheduler refused the request (a full queue) or its engine run failed.
    #[error("{0}")]
    Scheduler(#[from] SchedulerError),
    /// The score hook rejected the request (`throw`) or failed.
    #[error("{0}")]
    Hook(#[from] HookError),
    /// A repository load request failed; what was served before stays.
    #[error("{0}")]
    LoadFailed(String),
    #[error("{0}")]
    Internal(String),
}

impl ModelError {
    /// The kind of failure, which each front end maps to its own status.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ModelError::ModelNotFound(_) | ModelError::VersionNotFound { .. } => {
                ErrorKind::NotFound
            }
            ModelError::NotReady(_) => ErrorKind::Unavailable,
            ModelError::InvalidInput(_) | ModelError::LoadFailed(_) => ErrorKind::InvalidInput,
            ModelError::Scheduler(e) => e.kind(),
            ModelError::Hook(e) => e.kind(),
            ModelError::Internal(_) => ErrorKind::Internal,
        }
    }
}

/// Why a model version could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The model's `config.toml` is invalid.
    #[error("{0}")]
    Config(String),
    #[error("{} is missing", .0.display())]
    MissingModel(PathBuf),
    // `cause`, not `source`: the message already says it.
    #[error("{}: {cause}", path.display())]
    Engine { path: PathBuf, cause: EngineError },
    /// The config and the model disagree (overrides, batch dimensions).
    #[error("{0}")]
    Invalid(String),
    #[error("cannot start a batching thread: {0}")]
    Threads(std::io::Error),
    #[error("{0}")]
    Hook(#[from] HookError),
}

/// A ready model version and its score hook, if its config names one.
#[derive(Clone)]
pub struct Served {
    pub model: Arc<LoadedVersion>,
    pub hook: Option<Arc<Hook>>,
}

impl Served {
    /// Loads `version` of the model in `dir` (see [`LoadedVersion::load`]) and then the hook
    /// its config names (with the model folder's labels, running the hook's `init`).
    pub fn load(dir: &ModelDir, version: u64, defaults: LoadDefaults) -> Result<Served, LoadError> {
        Served::load_with(dir, version, defaults, None)
    }

    /// [`Served::load`] with the batcher reporting to `observers`.
    pub fn load_with(
        dir: &ModelDir,
        version: u64,
        defaults: LoadDefaults,
        observers: Option<&dyn BatchObservers>,
    ) -> Result<Served, LoadError> {
        let observer = observers.map(|o| o.observer(&dir.name, version));
        let model = Arc::new(LoadedVersion::load_with(dir, version, defaults, observer)?);
        let hook = match &model.config().hook {
            None => None,
            Some(file) => {
                let labels = hook::read_labels(&dir.path)?.map(Arc::new);
                let predictor: Arc<dyn Predictor> = Arc::clone(&model) as Arc<dyn Predictor>;
                Some(Arc::new(Hook::load(
                    &dir.path.join(file),
                    predictor,
                    labels,
                )?))
            }
        };
        Ok(Served { model, hook })
    }
}

/// Load state of one model version.
#[derive(Clone)]
pub enum VersionState {
    Loading,
    Ready(Served),
    Failed(String),
}

/// A model as the server knows it.
#[derive(Clone)]
pub struct ModelStatus {
    pub name: String,
    /// Why the model as a whole cannot be served (a bad `config.toml`, no versions).
    pub error: Option<String>,
    /// Unloaded through the repository API.
    pub unloaded: bool,
    /// The versions the version policy selects, ascending.
    pub versions: BTreeMap<u64, VersionState>,
}

impl ModelStatus {
    /// The highest ready version.
    pub fn latest_ready(&self) -> Option<&Served> {
        self.versions.values().rev().find_map(|s| match s {
            VersionState::Ready(v) => Some(v),
            _ => None,
        })
    }

    /// Why no version can serve, for a model with no ready version.
    fn unavailable_reason(&self) -> String {
        if self.unloaded {
            return format!("model '{}' is unloaded", self.name);
        }
        if let Some(e) = &self.error {
            return format!("model '{}' failed to load: {e}", self.name);
        }
        match self.versions.iter().next_back() {
            Some((v, VersionState::Loading)) => {
                format!("model '{}' version {v} is still loading", self.name)
            }
            Some((v, VersionState::Failed(e))) => {
                format!("model '{}' version {v} failed to load: {e}", self.name)
            }
            _ => format!("model '{}' has no version to serve", self.name),
        }
    }
}

/// Every model of a repository and the state of each served version.
pub struct ModelManager {
    repo: Repository,
    defaults: LoadDefaults,
    models: RwLock<BTreeMap<String, ModelStatus>>,
    loading: AtomicUsize,
    /// Serializes repository load/unload requests.
    ops: std::sync::Mutex<()>,
    /// Where batchers report batch sizes and queue depth.
    observers: Option<Arc<dyn BatchObservers>>,
    /// The object store the repository mirrors, when it lives in one: repository load
    /// requests re-read the model from it first.
    store: std::sync::OnceLock<Arc<crate::registry::store::Store>>,
}

impl ModelManager {
    /// A manager for `repo`; what a model's config leaves out comes from `defaults` (its
    /// engine, auto-completed batching). Nothing is loaded until
    /// [`ModelManager::start_loading`].
    pub fn new(repo: Repository, defaults: LoadDefaults) -> Arc<ModelManager> {
        ModelManager::build(repo, defaults, None)
    }

    /// [`ModelManager::new`] whose batchers report to `observers` (the process's metrics).
    pub fn with_observers(
        repo: Repository,
        defaults: LoadDefaults,
        observers: Arc<dyn BatchObservers>,
    ) -> Arc<ModelManager> {
        ModelManager::build(repo, defaults, Some(observers))
    }

    fn build(
        repo: Repository,
        defaults: LoadDefaults,
        observers: Option<Arc<dyn BatchObservers>>,
    ) -> Arc<ModelManager> {
        Arc::new(ModelManager {
            repo,
            defaults,
            models: RwLock::new(BTreeMap::new()),
            loading: AtomicUsize::new(0),
            ops: std::sync::Mutex::new(()),
            observers,
            store: std::sync::OnceLock::new(),
        })
    }

    /// Names the object store the repository mirrors (see [`crate::registry::store`]).
    pub fn set_store(&self, store: Arc<crate::registry::store::Store>) {
        let _ = self.store.set(store);
    }

    /// The object store the repository mirrors, if any.
    pub fn store(&self) -> Option<&Arc<crate::registry::store::Store>> {
        self.store.get()
    }

    /// Loads `version` of the model in `dir` as this manager serves it.
    fn load_served(&self, dir: &ModelDir, version: u64) -> Result<Served, LoadError> {
        if let Some(why) = dir.version_error(version) {
            return Err(LoadError::Invalid(why));
        }
        Served::load_with(dir, version, self.defaults, self.observers.as_deref())
    }

    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// Scans the repository and loads every served version on background threads. A model
    /// that fails is recorded as failed with its reason; the others load regardless.
    pub fn start_loading(self: &Arc<Self>) -> Result<(), RegistryError> {
        let dirs = self.repo.models()?;
        let mut jobs = Vec::new();
        {
            let mut models = self.write();
            for dir in dirs {
                let status = initial_status(&dir);
                for (&version, state) in &status.versions {
                    if matches!(state, VersionState::Loading) {
                        jobs.push((dir.name.clone(), version));
                    }
                }
                if let Some(e) = &status.error {
                    tracing::error!("model '{}' cannot be served: {e}", dir.name);
                }
                models.insert(dir.name.clone(), status);
            }
            self.loading.fetch_add(jobs.len(), Ordering::SeqCst);
        }
        for (name, version) in jobs {
            let this = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name(format!("load-{name}-{version}"))
                .spawn(move || this.load_version(&name, version));
            if let Err(e) = spawned {
                self.loading.fetch_sub(1, Ordering::SeqCst);
                return Err(RegistryError::io(self.repo.root(), e));
            }
        }
        Ok(())
    }

    fn load_version(&self, name: &str, version: u64) {
        let started = Instant::now();
        let state = match self
            .repo
            .model(name)
            .map_err(|e| e.to_string())
            .and_then(|dir| self.load_served(&dir, version).map_err(|e| e.to_string()))
        {
            Ok(served) => {
                tracing::info!(
                    "loaded {name}:{version} ({}{}) in {} ms",
                    served.model.backend(),
                    served
                        .hook
                        .as_ref()
                        .map_or(String::new(), |h| format!(", hook {}", h.file())),
                    started.elapsed().as_millis()
                );
                if let Some(room) = served.model.intake().bytes() {
                    tracing::debug!(
                        "{name}:{version} reads at most {:.1} MiB of request bodies at once",
                        room as f64 / f64::from(1 << 20)
                    );
                }
                VersionState::Ready(served)
            }
            Err(e) => {
                tracing::error!("model '{name}' version {version} failed to load: {e}");
                VersionState::Failed(e)
            }
        };
        if let Some(status) = self.write().get_mut(name) {
            status.versions.insert(version, state);
        }
        // Loading (parsing, typing, optimizing) frees far more than it keeps.
        crate::alloc::release_freed_memory();
        self.loading.fetch_sub(1, Ordering::SeqCst);
    }

    /// True once every load started by [`ModelManager::start_loading`] has finished, whether
    /// it succeeded or failed.
    pub fn is_ready(&self) -> bool {
        self.loading.load(Ordering::SeqCst) == 0
    }

    /// Why the server is not ready to serve every model it should, or `None` when it is:
    /// models still loading, or (with `strict`, as Triton's `--strict-readiness`) a model
    /// that failed, or a version of it that is not ready. Models unloaded through the
    /// repository API are not expected to serve. A reload keeps the old version serving
    /// until the new one is ready, so it never makes a ready server unready.
    pub fn not_ready_reason(&self, strict: bool) -> Option<String> {
        if !self.is_ready() {
            return Some("models are still loading".to_string());
        }
        if !strict {
            return None;
        }
        self.read()
            .values()
            .filter(|s| !s.unloaded)
            .find(|s| {
                s.error.is_some()
                    || s.versions.is_empty()
                    || s
                        .versions
                        .values()
                        .any(|v| !matches!(v, VersionState::Ready(_)))
            })
            .map(|s| {
                let failed = s.versions.iter().find_map(|(v, state)| match state {
                    VersionState::Failed(e) => Some(format!(
                        "model '{}' version {v} failed to load: {e}",
                        s.name
                    )),
                    VersionState::Loading => {
                        Some(format!("model '{}' version {v} is still loading", s.name))
                    }
                    VersionState::Ready(_) => None,
                });
                let reason = failed.unwrap_or_else(|| s.unavailable_reason());
                format!("{reason} (start with --strict-readiness=false to be ready with the models that did load)")
            })
    }

    /// A snapshot of one model's status.
    pub fn status(&self, name: &str) -> Result<ModelStatus, ModelError> {
        self.read()
            .get(name)
            .cloned()
            .ok_or_else(|| ModelError::ModelNotFound(name.to_string()))
    }

    /// A snapshot of every model's status, by name.
    pub fn statuses(&self) -> Vec<ModelStatus> {
        self.read().values().cloned().collect()
    }

    /// The version to serve for a request: `version` if given (as in a URL path), else the
    /// highest ready one.
    pub fn get(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<Arc<LoadedVersion>, ModelError> {
        self.get_served(model, version).map(|s| s.model)
    }

    /// Like [`ModelManager::get`], with the version's score hook.
    pub fn get_served(&self, model: &str, version: Option<&str>) -> Result<Served, ModelError> {
        let models = self.read();
        let status = models
            .get(model)
            .ok_or_else(|| ModelError::ModelNotFound(model.to_string()))?;
        let Some(version) = version else {
            return status
                .latest_ready()
                .cloned()
                .ok_or_else(|| ModelError::NotReady(status.unavailable_reason()));
        };
        if status.error.is_some() || status.unloaded {
            return Err(ModelError::NotReady(status.unavailable_reason()));
        }
        let not_found = || ModelError::VersionNotFound {
            name: model.to_string(),
            version: version.to_string(),
        };
        let v = name::parse_version(version).ok_or_else(not_found)?;
        match status.versions.get(&v).ok_or_else(not_found)? {
            VersionState::Ready(served) => Ok(served.clone()),
            VersionState::Loading => Err(ModelError::NotReady(format!(
                "model '{model}' version {v} is still loading"
            ))),
            VersionState::Failed(e) => Err(ModelError::NotReady(format!(
                "model '{model}' version {v} failed to load: {e}"
            ))),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, ModelStatus>> {
        // A panic while holding the lock cannot leave the map half-updated (every write is a
        // single insert), so a poisoned lock is still consistent.
        self.models.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, ModelStatus>> {
        self.models.write().unwrap_or_else(|p| p.into_inner())
    }
}

fn initial_status(dir: &ModelDir) -> ModelStatus {
    let mut status = ModelStatus {
        name: dir.name.clone(),
        error: None,
        unloaded: false,
        versions: BTreeMap::new(),
    };
    match &dir.config {
        Err(e) => status.error = Some(e.to_string()),
        Ok(_) => {
            let served = dir.served_versions();
            if served.is_empty() {
                status.error = Some(if dir.versions.is_empty() {
                    "no version folders (expected <model>/<version>/model.onnx)".to_string()
                } else {
                    "the version policy selects none of the versions present".to_string()
                });
            }
            status.versions = served
                .into_iter()
                .map(|v| (v, VersionState::Loading))
                .collect();
        }
    }
    status
}
