//! Following a repository that lives in an object store (`serve --repository-poll`), as
//! Triton's poll mode: each poll is one listing of the store; models whose files or versions
//! changed are reloaded (the old versions serve until the new ones are ready), models gone
//! from the store are unloaded.

use super::ModelManager;
use crate::registry::store::SyncReport;
use std::sync::Arc;
use std::time::Duration;

/// Polls `models`' store every `every` on a background thread, for as long as the manager
/// lives. Does nothing when the repository is not in a store.
pub fn spawn(models: &Arc<ModelManager>, every: Duration) -> std::io::Result<()> {
    let weak = Arc::downgrade(models);
    std::thread::Builder::new()
        .name("repository-poll".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                std::thread::sleep(every);
                let Some(models) = weak.upgrade() else { return };
                let Some(store) = models.store().cloned() else {
                    return;
                };
                match store.sync() {
                    Ok(report) => {
                        if failing {
                            tracing::info!("store {} is reachable again", store.url());
                            failing = false;
                        }
                        models.apply_sync(&report);
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!("repository poll: {e}; what is loaded keeps serving");
                            failing = true;
                        }
                    }
                }
            }
        })?;
    Ok(())
}

impl ModelManager {
    /// Reloads the models a store sync changed and unloads the ones it removed.
    pub fn apply_sync(&self, report: &SyncReport) {
        for name in &report.changed {
            match self.reload_model(name) {
                Ok(()) => tracing::info!("repository poll: reloaded model '{name}'"),
                Err(e) => tracing::error!(
                    "repository poll: model '{name}': {e} (what was served before stays)"
                ),
            }
        }
        for name in &report.removed {
            if self.read().contains_key(name) && self.unload_model(name).is_ok() {
                tracing::info!("repository poll: model '{name}' is gone from the store");
            }
        }
    }
}
