//! Model repositories in object storage (`az://`, `s3://`, `gs://`), mirrored into a
//! verified local cache that is itself a plain [`Repository`](super::Repository) layout.
//!
//! - **Visibility**: a version exists in a store once its `meta.toml` is there (registration
//!   uploads it last). Versions without it are not mirrored.
//! - **Verification**: every object is streamed to a temporary file, checked against the
//!   listed size, and renamed into place; a version is assembled in a hidden staging folder
//!   and renamed whole, so a killed process never leaves a file or version that looks
//!   complete. Where `meta.toml` records a sha256, `model.onnx` must match, else the version
//!   is mirrored as a folder holding only `.store-error` with the reason: that version fails
//!   to load, the others serve.
//! - **Change detection**: the cache remembers each object's size and ETag in
//!   `.store-manifest.json`; a sync is one listing, and downloads only what changed.
//! - **Safety**: keys are checked segment by segment before they become paths (see
//!   [`keys`]); `config.toml` and `meta.toml` larger than [`SMALL_FILE_LIMIT`] are refused.

mod client;
pub mod keys;
mod url;

pub use url::{looks_like_url, Scheme, StoreUrl};

use super::config::ModelConfig;
use super::meta::META_FILE;
use super::register::{HookInstall, Registration};
use super::{name, RegistryError, VersionMeta, CONFIG_FILE, MODEL_FILE};
use crate::fsutil;
use futures_util::StreamExt;
use keys::Listed;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Marker file in a cached model or version folder: why it cannot be used.
pub const ERROR_FILE: &str = ".store-error";
/// What the cache remembers of each object (size and ETag), beside the models.
const MANIFEST_FILE: &str = ".store-manifest.json";
/// Largest `config.toml` / `meta.toml` accepted from a store.
pub const SMALL_FILE_LIMIT: u64 = 1 << 20;
/// Model files up to this size are uploaded in one request; larger ones in parts.
const SINGLE_PUT_LIMIT: u64 = 32 << 20;
const PART_SIZE: usize = 16 << 20;
const STAGE_PREFIX: &str = "store";
const TRASH_PREFIX: &str = "store-trash";

/// Failures of reaching or mirroring a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store answered with an error or could not be reached.
    #[error("store {url}: {what}: {why}")]
    Remote {
        url: String,
        what: String,
        why: String,
    },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Registry(#[from] RegistryError),
}

impl StoreError {
    fn io(path: &Path, source: io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What a sync changed in the cache.
#[derive(Debug, Default, Clone)]
pub struct SyncReport {
    /// Models that are new or whose files or versions changed.
    pub changed: BTreeSet<String>,
    /// Models no longer in the store (removed from the cache).
    pub removed: BTreeSet<String>,
    /// Models that could not be brought up to date, with why (their cache is left as it was).
    pub failed: BTreeMap<String, String>,
    pub downloaded_bytes: u64,
    pub downloaded_files: usize,
}

/// A repository in object storage and its local cache.
pub struct Store {
    inner: Arc<Inner>,
    runtime: Option<tokio::runtime::Runtime>,
}

struct Inner {
    url: StoreUrl,
    object: Arc<dyn ObjectStore>,
    cache: PathBuf,
    /// One sync or upload at a time.
    lock: tokio::sync::Mutex<()>,
    /// Keys already warned about (a poll does not repeat the warning).
    warned: Mutex<HashSet<String>>,
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Store({} -> {})",
            self.inner.url,
            self.inner.cache.display()
        )
    }
}

impl Store {
    /// A client for `url` with its cache in `cache` (created). Nothing is read from the
    /// store yet.
    pub fn open(url: StoreUrl, cache: PathBuf) -> Result<Store, StoreError> {
        let object = client::build(&url).map_err(|why| StoreError::Remote {
            url: url.to_string(),
            what: "cannot configure the client".into(),
            why,
        })?;
        Store::with_client(url, object, cache)
    }

    fn with_client(
        url: StoreUrl,
        object: Arc<dyn ObjectStore>,
        cache: PathBuf,
    ) -> Result<Store, StoreError> {
        fs::create_dir_all(&cache).map_err(|e| StoreError::io(&cache, e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("scoria-store")
            .build()
            .map_err(|e| StoreError::io(&cache, e))?;
        Ok(Store {
            inner: Arc::new(Inner {
                url,
                object,
                cache,
                lock: tokio::sync::Mutex::new(()),
                warned: Mutex::new(HashSet::new()),
            }),
            runtime: Some(runtime),
        })
    }

    pub fn url(&self) -> &StoreUrl {
        &self.inner.url
    }

    /// The local repository the store is mirrored into.
    pub fn cache(&self) -> &Path {
        &self.inner.cache
    }

    /// When the cache was last brought up to date from the store, if ever.
    pub fn last_synced(&self) -> Option<String> {
        Manifest::load(&self.inner.cache).map(|m| m.synced)
    }

    /// Brings the whole cache up to date with one listing of the store.
    pub fn sync(&self) -> Result<SyncReport, StoreError> {
        let inner = Arc::clone(&self.inner);
        self.block_on(async move { inner.sync(None).await })?
    }

    /// Brings one model's cache up to date (one listing of its folder).
    pub fn sync_model(&self, model: &str) -> Result<SyncReport, StoreError> {
        name::validate(model)?;
        let inner = Arc::clone(&self.inner);
        let model = model.to_string();
        self.block_on(async move { inner.sync(Some(&model)).await })?
    }

    /// Uploads a new version of `reg.name`: the model file first, `meta.toml` last; the
    /// version number is claimed with a conditional create, so concurrent registrations get
    /// distinct versions.
    pub fn register(&self, reg: &Registration) -> Result<(u64, VersionMeta), StoreError> {
        name::validate(&reg.name)?;
        let meta = fs::metadata(&reg.source).map_err(|e| StoreError::io(&reg.source, e))?;
        if !meta.is_file() {
            return Err(StoreError::io(
                &reg.source,
                io::Error::other("not a regular file"),
            ));
        }
        crate::engine::check_onnx(&reg.source)
            .map_err(|e| RegistryError::NotOnnx(e.to_string()))?;
        let inner = Arc::clone(&self.inner);
        let reg = reg.clone();
        self.block_on(async move { inner.register(&reg).await })?
    }

    /// Removes `model:version` from the store: `meta.toml` first (the version disappears for
    /// readers at once), then its other objects.
    pub fn delete(&self, model: &str, version: u64) -> Result<(), StoreError> {
        name::validate(model)?;
        let inner = Arc::clone(&self.inner);
        let model = model.to_string();
        self.block_on(async move { inner.delete(&model, version).await })?
    }

    /// Runs `fut` on the store's runtime and waits for it; callable from any thread that may
    /// block (not from an async task).
    fn block_on<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let stopped = || StoreError::Remote {
            url: self.inner.url.to_string(),
            what: "client".into(),
            why: "the store's runtime has stopped".into(),
        };
        let rt = self.runtime.as_ref().ok_or_else(stopped)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| stopped())
    }
}

impl Inner {
    fn remote(&self, what: impl Into<String>, e: &object_store::Error) -> StoreError {
        StoreError::Remote {
            url: self.url.to_string(),
            what: what.into(),
            why: client::describe(e),
        }
    }

    /// The store key of `rel` (a path relative to the repository prefix).
    fn key(&self, rel: &str) -> String {
        if self.url.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.url.prefix)
        }
    }

    fn path(&self, rel: &str) -> Result<ObjPath, StoreError> {
        let key = self.key(rel);
        ObjPath::parse(&key).map_err(|e| StoreError::Remote {
            url: self.url.to_string(),
            what: format!("key '{key}'"),
            why: e.to_string(),
        })
    }

    /// Lists every object under `rel` (one listing; the client follows its pages).
    async fn list(&self, rel: Option<&str>) -> Result<Vec<Listed>, StoreError> {
        let prefix = match rel {
            Some(rel) => Some(self.path(rel)?),
            None if self.url.prefix.is_empty() => None,
            None => Some(self.path("")?),
        };
        let prefix = prefix.filter(|p| !p.as_ref().is_empty());
        let mut stream = self.object.list(prefix.as_ref());
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            let meta = item.map_err(|e| self.remote("cannot list the repository", &e))?;
            let tag = meta
                .e_tag
                .clone()
                .unwrap_or_else(|| meta.last_modified.to_rfc3339());
            out.push(Listed {
                key: meta.location.as_ref().to_string(),
                size: meta.size,
                tag,
            });
        }
        Ok(out)
    }

    async fn sync(&self, scope: Option<&str>) -> Result<SyncReport, StoreError> {
        let _guard = self.lock.lock().await;
        let started = Instant::now();
        // object_store lists by whole path segments: "p/digits" never matches "p/digits2".
        let listed = self.list(scope).await?;
        let mut sorted = keys::sort(&self.url.prefix, listed);
        self.warn_skipped(&sorted.skipped);
        keys::complete_only(&mut sorted, META_FILE);
        if let Some(m) = scope {
            sorted.models.retain(|name, _| name == m);
        }
        let mut manifest = Manifest::load(&self.cache).unwrap_or_default();
        let mut report = SyncReport::default();
        for (name, remote) in &sorted.models {
            match self
                .apply_model(name, remote, &mut manifest, &mut report)
                .await
            {
                Ok(true) => {
                    report.changed.insert(name.clone());
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!("cannot update model '{name}' from the store: {e}");
                    report.failed.insert(name.clone(), e.to_string());
                }
            }
        }
        let local = local_dirs(&self.cache).map_err(|e| StoreError::io(&self.cache, e))?;
        for name in local {
            if name::validate(&name).is_err() || sorted.models.contains_key(&name) {
                continue;
            }
            if scope.is_some_and(|m| m != name) {
                continue;
            }
            remove_dir_atomically(&self.cache, &self.cache.join(&name))?;
            manifest.forget_model(&name);
            report.removed.insert(name);
        }
        manifest.url = self.url.to_string();
        manifest.synced =
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        manifest.save(&self.cache)?;
        tracing::debug!(
            "synced {} in {} ms: {} changed, {} removed, {} files ({} bytes) downloaded",
            self.url,
            started.elapsed().as_millis(),
            report.changed.len(),
            report.removed.len(),
            report.downloaded_files,
            report.downloaded_bytes
        );
        Ok(report)
    }

    fn warn_skipped(&self, skipped: &[String]) {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        for s in skipped {
            if warned.insert(s.clone()) {
                tracing::warn!("store {}: ignoring {s}", self.url);
            }
        }
    }

    /// Brings one model folder of the cache up to date; true when anything changed.
    async fn apply_model(
        &self,
        name: &str,
        remote: &keys::RemoteModel,
        manifest: &mut Manifest,
        report: &mut SyncReport,
    ) -> Result<bool, StoreError> {
        let dir = self.cache.join(name);
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        fsutil::remove_stale_temps(&dir, &[STAGE_PREFIX, TRASH_PREFIX]);
        let mut changed = false;
        let mut problems = Vec::new();
        // Model-level files: config.toml, hooks, labels.
        for (file, obj) in &remote.files {
            let key = format!("{name}/{file}");
            let local = dir.join(file);
            if file == CONFIG_FILE && obj.size > SMALL_FILE_LIMIT {
                problems.push(format!(
                    "{CONFIG_FILE} in the store is {} bytes, more than the {SMALL_FILE_LIMIT}-byte limit",
                    obj.size
                ));
                if local.exists() {
                    let _ = fs::remove_file(&local);
                    changed = true;
                }
                manifest.entries.remove(&key);
                continue;
            }
            if manifest.entries.get(&key) == Some(&obj.fingerprint()) && local.is_file() {
                continue;
            }
            self.download(obj, &local, report).await?;
            manifest.entries.insert(key, obj.fingerprint());
            changed = true;
        }
        for file in local_files(&dir).map_err(|e| StoreError::io(&dir, e))? {
            if !remote.files.contains_key(&file) {
                let _ = fs::remove_file(dir.join(&file));
                manifest.entries.remove(&format!("{name}/{file}"));
                changed = true;
            }
        }
        let problem = (!problems.is_empty()).then(|| problems.join("; "));
        changed |= set_error(&dir, problem.as_deref())?;

        // Versions: staged whole, verified, renamed into place.
        for (&version, files) in &remote.versions {
            let key = format!("{name}/{version}");
            let fp = version_fingerprint(files);
            let vdir = dir.join(version.to_string());
            if manifest.entries.get(&key) == Some(&fp) && vdir.is_dir() {
                continue;
            }
            let stage = fsutil::temp_path(&dir, STAGE_PREFIX);
            fs::create_dir(&stage).map_err(|e| StoreError::io(&stage, e))?;
            let staged = self.stage_version(files, &stage, report).await;
            let problem = match staged {
                Ok(problem) => problem,
                Err(e) => {
                    let _ = fs::remove_dir_all(&stage);
                    return Err(e);
                }
            };
            if let Some(why) = &problem {
                tracing::error!("{name}:{version} from {}: {why}", self.url);
                let _ = fs::remove_dir_all(&stage);
                fs::create_dir(&stage).map_err(|e| StoreError::io(&stage, e))?;
                write_file(&stage.join(ERROR_FILE), why.as_bytes())?;
            }
            fsutil::fsync_dir(&stage).map_err(|e| StoreError::io(&stage, e))?;
            if vdir.exists() {
                remove_dir_atomically(&dir, &vdir)?;
            }
            fs::rename(&stage, &vdir).map_err(|e| StoreError::io(&vdir, e))?;
            fsutil::fsync_dir(&dir).map_err(|e| StoreError::io(&dir, e))?;
            manifest.entries.insert(key, fp);
            changed = true;
        }
        for entry in local_dirs(&dir).map_err(|e| StoreError::io(&dir, e))? {
            if let Some(v) = name::parse_version(&entry) {
                if !remote.versions.contains_key(&v) {
                    remove_dir_atomically(&dir, &dir.join(&entry))?;
                    manifest.entries.remove(&format!("{name}/{v}"));
                    changed = true;
                }
            }
        }
        Ok(changed)
    }

    /// Downloads a version's files into `stage`; `Ok(Some(why))` when they are not a valid
    /// version (sha256 or size mismatch, unreadable `meta.toml`).
    async fn stage_version(
        &self,
        files: &BTreeMap<String, Listed>,
        stage: &Path,
        report: &mut SyncReport,
    ) -> Result<Option<String>, StoreError> {
        if let Some(meta) = files.get(META_FILE) {
            if meta.size > SMALL_FILE_LIMIT {
                return Ok(Some(format!(
                    "{META_FILE} is {} bytes, more than the {SMALL_FILE_LIMIT}-byte limit",
                    meta.size
                )));
            }
        }
        let mut model_sha = None;
        for (rel, obj) in files {
            let dest = stage.join(rel);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, e))?;
            }
            let sha = self.download(obj, &dest, report).await?;
            if rel == MODEL_FILE {
                model_sha = Some(sha);
            }
        }
        let meta = match VersionMeta::load(stage) {
            Ok(Some(meta)) => meta,
            Ok(None) => return Ok(Some(format!("no {META_FILE}"))),
            Err(e) => return Ok(Some(format!("unreadable {META_FILE}: {e}"))),
        };
        if meta.sha256.is_empty() {
            return Ok(None);
        }
        match (model_sha, files.get(MODEL_FILE)) {
            (Some(sha), Some(obj)) => {
                if !sha.eq_ignore_ascii_case(&meta.sha256) {
                    return Ok(Some(format!(
                        "{MODEL_FILE} does not match its {META_FILE}: sha256 {sha}, expected {} (not loaded; the other versions serve)",
                        meta.sha256
                    )));
                }
                if obj.size != meta.size {
                    return Ok(Some(format!(
                        "{MODEL_FILE} is {} bytes, {META_FILE} records {}",
                        obj.size, meta.size
                    )));
                }
                Ok(None)
            }
            _ => Ok(Some(format!(
                "{META_FILE} records a sha256 but the version has no {MODEL_FILE}"
            ))),
        }
    }

    /// Streams one object to a temporary file beside `dest`, checks its size against the
    /// listing, fsyncs and renames it into place. Returns its hex sha256.
    async fn download(
        &self,
        obj: &Listed,
        dest: &Path,
        report: &mut SyncReport,
    ) -> Result<String, StoreError> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        let tmp = fsutil::temp_path(dir, STAGE_PREFIX);
        let result = self.download_to(obj, &tmp).await;
        match result {
            Ok((sha, n)) => {
                if let Err(e) = fs::rename(&tmp, dest) {
                    let _ = fs::remove_file(&tmp);
                    return Err(StoreError::io(dest, e));
                }
                report.downloaded_bytes += n;
                report.downloaded_files += 1;
                Ok(sha)
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    async fn download_to(&self, obj: &Listed, tmp: &Path) -> Result<(String, u64), StoreError> {
        let path = ObjPath::parse(&obj.key).map_err(|e| StoreError::Remote {
            url: self.url.to_string(),
            what: format!("key '{}'", obj.key),
            why: e.to_string(),
        })?;
        let what = || format!("cannot read {}", obj.key);
        let got = self
            .object
            .get(&path)
            .await
            .map_err(|e| self.remote(what(), &e))?;
        let mut stream = got.into_stream();
        let mut file = fs::File::create(tmp).map_err(|e| StoreError::io(tmp, e))?;
        let mut hasher = Sha256::new();
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.remote(what(), &e))?;
            n += chunk.len() as u64;
            if n > obj.size {
                return Err(StoreError::Remote {
                    url: self.url.to_string(),
                    what: what(),
                    why: format!("more than the {} bytes listed", obj.size),
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).map_err(|e| StoreError::io(tmp, e))?;
        }
        if n != obj.size {
            return Err(StoreError::Remote {
                url: self.url.to_string(),
                what: what(),
                why: format!("got {n} bytes, {} listed", obj.size),
            });
        }
        file.sync_all().map_err(|e| StoreError::io(tmp, e))?;
        Ok((hex::encode(hasher.finalize()), n))
    }

    /// Reads a small object whole (bounded), `None` if it does not exist.
    async fn get_small(&self, rel: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(rel)?;
        match self.object.get(&path).await {
            Ok(got) => {
                if got.meta.size > SMALL_FILE_LIMIT {
                    return Err(StoreError::Remote {
                        url: self.url.to_string(),
                        what: format!("cannot read {rel}"),
                        why: format!(
                            "{} bytes, more than the {SMALL_FILE_LIMIT}-byte limit",
                            got.meta.size
                        ),
                    });
                }
                let bytes = got
                    .bytes()
                    .await
                    .map_err(|e| self.remote(format!("cannot read {rel}"), &e))?;
                Ok(Some(bytes.to_vec()))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.remote(format!("cannot read {rel}"), &e)),
        }
    }

    async fn put(&self, rel: &str, bytes: Vec<u8>, mode: PutMode) -> Result<(), StoreError> {
        let path = self.path(rel)?;
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        self.object
            .put_opts(&path, PutPayload::from(bytes), opts)
            .await
            .map(|_| ())
            .map_err(|e| self.remote(format!("cannot write {rel}"), &e))
    }

    async fn register(&self, reg: &Registration) -> Result<(u64, VersionMeta), StoreError> {
        let _guard = self.lock.lock().await;
        let name = &reg.name;
        let (sha256, size) = hash_file(&reg.source)?;
        // The hook and its name in config.toml, as a local registration installs it.
        let hook = match &reg.hook {
            None => None,
            Some(path) => {
                let bytes = fs::read(path).map_err(|e| StoreError::io(path, e))?;
                let config_rel = format!("{name}/{CONFIG_FILE}");
                let text = match self.get_small(&config_rel).await? {
                    Some(b) => String::from_utf8(b).map_err(|_| StoreError::Remote {
                        url: self.url.to_string(),
                        what: format!("cannot read {config_rel}"),
                        why: "not UTF-8".into(),
                    })?,
                    None => String::new(),
                };
                let config = ModelConfig::parse(&text, Path::new(&config_rel))?;
                let install = HookInstall::new(bytes, &config);
                let new_config = install.naming_config(&text, &config);
                Some((install, new_config))
            }
        };
        let meta = reg.meta(sha256, size, hook.as_ref().map(|h| &h.0));

        // Claim a version number: a conditional create of a hidden marker, so two
        // registrations never write into one version. Claims stay (listings ignore them): a
        // removed claim would let a registration that listed before this one finished claim
        // the same number again.
        let listed = self.list(Some(name)).await?;
        let sorted = keys::sort(&self.url.prefix, listed);
        let mut version = sorted
            .models
            .get(name)
            .and_then(|m| m.all_versions.last().copied())
            .map_or(1, |v| v.saturating_add(1));
        let claim_body = format!(
            "pid {} at {}\n",
            std::process::id(),
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        );
        loop {
            let claim = format!("{name}/{version}/.claim");
            match self
                .put(&claim, claim_body.clone().into_bytes(), PutMode::Create)
                .await
            {
                // A version completed without a claim left (by an older scoria) is taken too.
                Ok(()) if !self.exists(&format!("{name}/{version}/{META_FILE}")).await => break,
                Ok(()) => {
                    tracing::debug!("version {version} of '{name}' exists; trying the next");
                    version = next_version(&self.url, version)?;
                }
                Err(_) if self.exists(&format!("{name}/{version}/.claim")).await => {
                    tracing::debug!("version {version} of '{name}' is taken; trying the next");
                    version = next_version(&self.url, version)?;
                }
                Err(e) => return Err(e),
            }
        }

        if let Some((install, new_config)) = &hook {
            let file = &install.file;
            self.put(
                &format!("{name}/{file}"),
                install.bytes.clone(),
                PutMode::Overwrite,
            )
            .await?;
            if let Some(text) = new_config {
                self.put(
                    &format!("{name}/{CONFIG_FILE}"),
                    text.clone().into_bytes(),
                    PutMode::Overwrite,
                )
                .await?;
            }
        }
        self.upload_file(&reg.source, &format!("{name}/{version}/{MODEL_FILE}"), size)
            .await?;
        // Last: the completeness marker. A create, so nothing ever replaces a version.
        self.put(
            &format!("{name}/{version}/{META_FILE}"),
            meta.to_toml().into_bytes(),
            PutMode::Create,
        )
        .await?;
        Ok((version, meta))
    }

    async fn exists(&self, rel: &str) -> bool {
        match self.path(rel) {
            Ok(p) => self.object.head(&p).await.is_ok(),
            Err(_) => false,
        }
    }

    /// Uploads a local file: in one request, or in parts when large.
    async fn upload_file(&self, src: &Path, rel: &str, size: u64) -> Result<(), StoreError> {
        if size <= SINGLE_PUT_LIMIT {
            let bytes = fs::read(src).map_err(|e| StoreError::io(src, e))?;
            return self.put(rel, bytes, PutMode::Overwrite).await;
        }
        let path = self.path(rel)?;
        let err = |e: &object_store::Error| self.remote(format!("cannot write {rel}"), e);
        let mut upload = self
            .object
            .put_multipart(&path)
            .await
            .map_err(|e| err(&e))?;
        let mut file = fs::File::open(src).map_err(|e| StoreError::io(src, e))?;
        loop {
            let mut buf = Vec::with_capacity(PART_SIZE);
            let n =
                io::Read::read_to_end(&mut io::Read::take(&mut file, PART_SIZE as u64), &mut buf)
                    .map_err(|e| StoreError::io(src, e))?;
            if n == 0 {
                break;
            }
            if let Err(e) = upload.put_part(PutPayload::from(buf)).await {
                let _ = upload.abort().await;
                return Err(err(&e));
            }
        }
        upload.complete().await.map(|_| ()).map_err(|e| err(&e))
    }

    async fn delete(&self, model: &str, version: u64) -> Result<(), StoreError> {
        let _guard = self.lock.lock().await;
        let meta = format!("{model}/{version}/{META_FILE}");
        if !self.exists(&meta).await {
            return Err(RegistryError::VersionNotFound {
                name: model.to_string(),
                version,
            }
            .into());
        }
        let path = self.path(&meta)?;
        self.object
            .delete(&path)
            .await
            .map_err(|e| self.remote(format!("cannot delete {meta}"), &e))?;
        for obj in self.list(Some(&format!("{model}/{version}"))).await? {
            if let Ok(p) = ObjPath::parse(&obj.key) {
                if let Err(e) = self.object.delete(&p).await {
                    tracing::warn!(
                        "store {}: cannot delete {}: {}",
                        self.url,
                        obj.key,
                        client::describe(&e)
                    );
                }
            }
        }
        Ok(())
    }
}

fn version_fingerprint(files: &BTreeMap<String, Listed>) -> String {
    files
        .iter()
        .map(|(rel, o)| format!("{rel}={}", o.fingerprint()))
        .collect::<Vec<_>>()
        .join(";")
}

fn hash_file(path: &Path) -> Result<(String, u64), StoreError> {
    let mut f = fs::File::open(path).map_err(|e| StoreError::io(path, e))?;
    let mut hasher = Sha256::new();
    let n = io::copy(&mut f, &mut hasher).map_err(|e| StoreError::io(path, e))?;
    Ok((hex::encode(hasher.finalize()), n))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    fsutil::atomic_write(path, bytes).map_err(|e| StoreError::io(path, e))
}

/// Writes (or removes, with `None`) a folder's `.store-error`; true when that changed it.
fn set_error(dir: &Path, why: Option<&str>) -> Result<bool, StoreError> {
    let path = dir.join(ERROR_FILE);
    let current = fs::read_to_string(&path).ok();
    match (why, current.as_deref()) {
        (None, None) => Ok(false),
        (None, Some(_)) => {
            fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
            Ok(true)
        }
        (Some(w), Some(c)) if w == c => Ok(false),
        (Some(w), _) => {
            tracing::error!("{}: {w}", dir.display());
            write_file(&path, w.as_bytes())?;
            Ok(true)
        }
    }
}

/// Why a cached model or version folder cannot be used, as the store sync recorded it.
pub fn folder_error(dir: &Path) -> Option<String> {
    let f = fs::File::open(dir.join(ERROR_FILE)).ok()?;
    let bytes = fsutil::read_bounded(f, 64 << 10).ok()?;
    Some(String::from_utf8_lossy(&bytes).trim().to_string())
}

/// Renames `path` to a hidden trash name in `parent` (so it vanishes at once), then deletes it.
fn remove_dir_atomically(parent: &Path, path: &Path) -> Result<(), StoreError> {
    let trash = fsutil::temp_path(parent, TRASH_PREFIX);
    fs::rename(path, &trash).map_err(|e| StoreError::io(path, e))?;
    let _ = fsutil::fsync_dir(parent);
    let _ = fs::remove_dir_all(&trash);
    Ok(())
}

fn entries(dir: &Path, want_dirs: bool) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let is_dir = entry.file_type()?.is_dir();
        if is_dir != want_dirs {
            continue;
        }
        if let Ok(name) = entry.file_name().into_string() {
            if !name.starts_with('.') {
                out.push(name);
            }
        }
    }
    Ok(out)
}

fn local_dirs(dir: &Path) -> io::Result<Vec<String>> {
    entries(dir, true)
}

fn local_files(dir: &Path) -> io::Result<Vec<String>> {
    entries(dir, false)
}

/// What the cache remembers: per model file `NAME/FILE` and per version `NAME/VERSION`, the
/// size and ETag of what was mirrored.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Manifest {
    url: String,
    synced: String,
    entries: BTreeMap<String, String>,
}

impl Manifest {
    fn load(cache: &Path) -> Option<Manifest> {
        let f = fs::File::open(cache.join(MANIFEST_FILE)).ok()?;
        let bytes = fsutil::read_bounded(f, 64 << 20).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn save(&self, cache: &Path) -> Result<(), StoreError> {
        let path = cache.join(MANIFEST_FILE);
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| StoreError::io(&path, io::Error::other(e)))?;
        write_file(&path, &text)
    }

    fn forget_model(&mut self, name: &str) {
        let prefix = format!("{name}/");
        self.entries.retain(|k, _| !k.starts_with(&prefix));
    }
}

/// The version number after `version`, or the error when none is left.
fn next_version(url: &StoreUrl, version: u64) -> Result<u64, StoreError> {
    version.checked_add(1).ok_or_else(|| StoreError::Remote {
        url: url.to_string(),
        what: "cannot register".into(),
        why: "no version number left".into(),
    })
}

#[cfg(test)]
mod tests;
