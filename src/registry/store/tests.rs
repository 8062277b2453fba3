//! The cache against object_store's in-memory store (the real servers are in tests/store.rs).

use super::*;
use crate::registry::Repository;
use object_store::memory::InMemory;

fn digits_onnx() -> Vec<u8> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    fs::read(root.join("models/digits/1/model.onnx")).unwrap()
}

struct Fixture {
    mem: Arc<InMemory>,
    store: Store,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mem = Arc::new(InMemory::new());
    let url = StoreUrl::parse("s3://bucket/repo").unwrap();
    let store = Store::with_client(url, Arc::clone(&mem) as _, dir.path().join("cache")).unwrap();
    Fixture {
        mem,
        store,
        _dir: dir,
    }
}

impl Fixture {
    fn put(&self, rel: &str, bytes: &[u8]) {
        let mem = Arc::clone(&self.mem);
        let path = ObjPath::parse(format!("repo/{rel}")).unwrap();
        let bytes = bytes.to_vec();
        self.store
            .block_on(async move { mem.put(&path, PutPayload::from(bytes)).await.unwrap() })
            .unwrap();
    }

    fn remove(&self, rel: &str) {
        let mem = Arc::clone(&self.mem);
        let path = ObjPath::parse(format!("repo/{rel}")).unwrap();
        self.store
            .block_on(async move { mem.delete(&path).await.unwrap() })
            .unwrap();
    }

    fn version(&self, model: &str, v: u64, onnx: &[u8], sha: &str) {
        self.put(&format!("{model}/{v}/model.onnx"), onnx);
        let meta = VersionMeta {
            sha256: sha.to_string(),
            size: onnx.len() as u64,
            created: "2026-01-01T00:00:00Z".into(),
            source: "test".into(),
            description: None,
            tags: BTreeMap::new(),
            hook: None,
            hook_sha256: None,
        };
        self.put(&format!("{model}/{v}/meta.toml"), meta.to_toml().as_bytes());
    }
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[test]
fn mirrors_verifies_and_follows_changes() {
    let f = fixture();
    let onnx = digits_onnx();
    f.put("digits/config.toml", b"[version_policy]\nall = true\n");
    f.version("digits", 1, &onnx, &sha(&onnx));
    f.version("digits", 2, &onnx, &"0".repeat(64)); // corrupted: sha256 mismatch
    f.put("digits/3/model.onnx", &onnx); // no meta.toml: invisible
    f.put("digits/x/model.onnx", &onnx); // not a version number: ignored

    let report = f.store.sync().unwrap();
    assert_eq!(report.changed.iter().collect::<Vec<_>>(), ["digits"]);
    let repo = Repository::open(f.store.cache()).unwrap();
    let dir = repo.model("digits").unwrap();
    assert_eq!(dir.versions, vec![1, 2]);
    assert!(dir.config.is_ok());
    assert_eq!(
        fs::read(dir.version_path(1).join(MODEL_FILE)).unwrap(),
        onnx
    );
    assert_eq!(dir.version_error(1), None);
    let why = dir.version_error(2).unwrap();
    assert!(why.contains("does not match"), "{why}");
    assert!(!dir.version_path(2).join(MODEL_FILE).exists());

    // Nothing changed: nothing downloaded.
    let report = f.store.sync().unwrap();
    assert!(
        report.changed.is_empty() && report.downloaded_files == 0,
        "{report:?}"
    );

    // A new version, a removed one, a changed config.
    f.version("digits", 4, &onnx, &sha(&onnx));
    f.remove("digits/1/meta.toml");
    f.put("digits/config.toml", b"[version_policy]\nlatest = 2\n");
    let report = f.store.sync().unwrap();
    assert_eq!(report.changed.iter().collect::<Vec<_>>(), ["digits"]);
    let dir = repo.model("digits").unwrap();
    assert_eq!(dir.versions, vec![2, 4]);
    assert_eq!(
        fs::read_to_string(dir.path.join(CONFIG_FILE)).unwrap(),
        "[version_policy]\nlatest = 2\n"
    );

    // A huge config.toml is refused with the reason; the model goes away with its objects.
    f.put(
        "digits/config.toml",
        &vec![b'#'; SMALL_FILE_LIMIT as usize + 1],
    );
    f.store.sync().unwrap();
    let err = repo
        .model("digits")
        .unwrap()
        .config
        .unwrap_err()
        .to_string();
    assert!(err.contains("limit"), "{err}");
    for rel in [
        "digits/config.toml",
        "digits/2/model.onnx",
        "digits/2/meta.toml",
    ] {
        f.remove(rel);
    }
    f.remove("digits/4/meta.toml");
    let report = f.store.sync().unwrap();
    assert_eq!(report.removed.iter().collect::<Vec<_>>(), ["digits"]);
    assert!(repo.model_names().unwrap().is_empty());
}

#[test]
fn sync_model_lists_one_model() {
    let f = fixture();
    let onnx = digits_onnx();
    f.version("digits", 1, &onnx, &sha(&onnx));
    f.version("digits2", 1, &onnx, &sha(&onnx));
    let report = f.store.sync_model("digits").unwrap();
    assert_eq!(report.changed.iter().collect::<Vec<_>>(), ["digits"]);
    let repo = Repository::open(f.store.cache()).unwrap();
    assert_eq!(repo.model_names().unwrap(), vec!["digits"]);
}

#[test]
fn concurrent_registers_get_distinct_versions() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.onnx");
    fs::write(&src, digits_onnx()).unwrap();
    let reg = Registration {
        name: "digits".into(),
        source: src,
        tags: BTreeMap::new(),
        description: Some("d".into()),
        hook: None,
    };
    // Separate clients (as separate processes would be) on one store.
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let store = Store::with_client(
                f.store.url().clone(),
                Arc::clone(&f.mem) as _,
                dir.path().join(format!("cache{i}")),
            )
            .unwrap();
            let reg = reg.clone();
            std::thread::spawn(move || store.register(&reg).unwrap().0)
        })
        .collect();
    let store = f.store;
    let mut versions: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    versions.sort_unstable();
    assert_eq!(versions, vec![1, 2, 3, 4]);
    store.sync().unwrap();
    let repo = Repository::open(store.cache()).unwrap();
    let dir = repo.model("digits").unwrap();
    assert_eq!(dir.versions, vec![1, 2, 3, 4]);
    assert!((1..=4).all(|v| dir.version_error(v).is_none()));
    store.delete("digits", 2).unwrap();
    store.sync().unwrap();
    assert_eq!(repo.model("digits").unwrap().versions, vec![1, 3, 4]);
    assert!(store.delete("digits", 2).is_err());
}
