//! The model repository extension: listing what is on disk and loading, reloading and
//! unloading models while the server runs.
//!
//! A (re)load prepares every served version first and swaps them in with one write, so
//! requests keep being served by the old versions until then; requests already running hold
//! their own reference to the version they started on and finish on it.

use super::{ModelError, ModelManager, ModelStatus, VersionState};
use crate::registry::RegistryError;
use std::collections::BTreeMap;

/// One row of the repository index.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    pub name: String,
    /// The version the row is about; `None` for a model with no version loaded.
    pub version: Option<String>,
    pub state: IndexState,
    /// Why the model (version) is unavailable; empty otherwise.
    pub reason: String,
}

/// Where a model (version) of the index stands; front ends name it in their protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexState {
    Ready,
    Loading,
    Unavailable,
}

impl ModelManager {
    /// (Re)loads model `name` under its version policy: from the object store first when the
    /// repository mirrors one, else from disk. Blocks while the versions load; call it from a
    /// blocking thread. On failure what was served before stays.
    pub fn load_model(&self, name: &str) -> Result<(), ModelError> {
        if let Some(store) = self.store() {
            let report = store
                .sync_model(name)
                .map_err(|e| ModelError::LoadFailed(format!("cannot load model '{name}': {e}")))?;
            if let Some(why) = report.failed.get(name) {
                return Err(ModelError::LoadFailed(format!(
                    "cannot load model '{name}': {why}"
                )));
            }
        }
        self.reload_model(name)
    }

    /// (Re)loads model `name` from the repository on disk (the store's cache when it mirrors
    /// one), as [`ModelManager::load_model`] without re-reading the store.
    pub fn reload_model(&self, name: &str) -> Result<(), ModelError> {
        let _serial = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.repo.model(name).map_err(|e| match e {
            RegistryError::ModelNotFound(_) | RegistryError::InvalidName { .. } => {
                ModelError::ModelNotFound(name.to_string())
            }
            other => ModelError::LoadFailed(format!("cannot load model '{name}': {other}")),
        })?;
        if let Err(e) = &dir.config {
            return Err(ModelError::LoadFailed(format!(
                "cannot load model '{name}': {e}"
            )));
        }
        let served = dir.served_versions();
        if served.is_empty() {
            return Err(ModelError::LoadFailed(format!(
                "cannot load model '{name}': no version to serve"
            )));
        }
        let mut versions = BTreeMap::new();
        for v in served {
            let served = self.load_served(&dir, v).map_err(|e| {
                ModelError::LoadFailed(format!("cannot load model '{name}' version {v}: {e}"))
            })?;
            versions.insert(v, VersionState::Ready(served));
        }
        let status = ModelStatus {
            name: name.to_string(),
            error: None,
            unloaded: false,
            versions,
        };
        self.write().insert(name.to_string(), status);
        tracing::info!("loaded model '{name}' through the repository API");
        Ok(())
    }

    /// Stops serving model `name`. Requests already running finish; later ones get 503.
    pub fn unload_model(&self, name: &str) -> Result<(), ModelError> {
        let _serial = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        let mut models = self.write();
        let status = models
            .get_mut(name)
            .ok_or_else(|| ModelError::ModelNotFound(name.to_string()))?;
        status.versions.clear();
        status.error = None;
        status.unloaded = true;
        tracing::info!("unloaded model '{name}'");
        Ok(())
    }

    /// Every model folder on disk with the state of each of its served versions.
    pub fn index(&self) -> Result<Vec<IndexEntry>, ModelError> {
        let names = self
            .repo
            .model_names()
            .map_err(|e| ModelError::Internal(e.to_string()))?;
        let models = self.read();
        let mut out = Vec::new();
        for name in names {
            let entry = |version: Option<u64>, state, reason: String| IndexEntry {
                name: name.clone(),
                version: version.map(|v| v.to_string()),
                state,
                reason,
            };
            match models.get(&name) {
                None => out.push(entry(None, IndexState::Unavailable, "not loaded".into())),
                Some(s) if s.unloaded => {
                    out.push(entry(None, IndexState::Unavailable, "unloaded".into()))
                }
                Some(s) if s.versions.is_empty() => out.push(entry(
                    None,
                    IndexState::Unavailable,
                    s.error.clone().unwrap_or_default(),
                )),
                Some(s) => {
                    for (&v, state) in &s.versions {
                        out.push(match state {
                            VersionState::Ready(_) => {
                                entry(Some(v), IndexState::Ready, String::new())
                            }
                            VersionState::Loading => {
                                entry(Some(v), IndexState::Loading, String::new())
                            }
                            VersionState::Failed(e) => {
                                entry(Some(v), IndexState::Unavailable, e.clone())
                            }
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}
