//! Model repositories given as store URLs (`--models az://...`, `model register --to URL`):
//! parsing them as flags, and opening the store's verified cache as the repository.

use super::GlobalArgs;
use crate::registry::store::{self, Store, StoreUrl};
use crate::registry::Repository;
use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// `--models DIR|URL`: a local path, or a store URL that must parse (else a usage error).
pub(crate) fn models_arg(s: &str) -> Result<PathBuf, String> {
    if store::looks_like_url(s) {
        StoreUrl::parse(s)?;
    }
    Ok(PathBuf::from(s))
}

/// `--to URL`: a store URL.
pub(crate) fn store_url(s: &str) -> Result<StoreUrl, String> {
    StoreUrl::parse(s)
}

/// The store `--models` names, if it names one.
pub(crate) fn models_url(global: &GlobalArgs) -> Option<StoreUrl> {
    let models = global.models.as_ref()?.to_str()?;
    if !store::looks_like_url(models) {
        return None;
    }
    StoreUrl::parse(models).ok()
}

/// Where the cache of `url` lives: the workspace's `.cache/store/`.
pub(crate) fn cache_dir(global: &GlobalArgs, url: &StoreUrl) -> PathBuf {
    global
        .workspace
        .join(".cache")
        .join("store")
        .join(url.cache_name())
}

/// A client for `url` with its cache in the workspace.
pub(crate) fn open_store(global: &GlobalArgs, url: &StoreUrl) -> anyhow::Result<Store> {
    Ok(Store::open(url.clone(), cache_dir(global, url))?)
}

/// The repository in effect: the local folder, or the store's cache brought up to date
/// (one listing, then only what changed). When the store cannot be read and a cache of it
/// exists, that cache is used and one log line says so; without a cache that is an error
/// naming the store.
pub(crate) fn open_repository(
    global: &GlobalArgs,
) -> anyhow::Result<(Repository, Option<Arc<Store>>)> {
    let Some(url) = models_url(global) else {
        let repo =
            Repository::open(global.models_dir()).context("cannot open the model repository")?;
        return Ok((repo, None));
    };
    let store = open_store(global, &url)?;
    let started = Instant::now();
    match store.sync() {
        Ok(report) => tracing::info!(
            "mirrored {url} into {} in {} ms ({} files, {} bytes downloaded)",
            store.cache().display(),
            started.elapsed().as_millis(),
            report.downloaded_files,
            report.downloaded_bytes
        ),
        Err(e) => match store.last_synced() {
            Some(when) => tracing::warn!(
                "{e}; starting from the cache in {} (last synced {when})",
                store.cache().display()
            ),
            None => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot read the model repository (no cache of it in {} yet)",
                    store.cache().display()
                )))
            }
        },
    }
    let repo = Repository::open(store.cache()).context("cannot open the store's cache")?;
    Ok((repo, Some(Arc::new(store))))
}
