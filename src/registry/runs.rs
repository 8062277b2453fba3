//! The workspace's run history: `runs/<id>/` with `command.txt`, `config.json`,
//! `environment.json`, `results.json` and `log.txt`.
//!
//! A run folder is assembled under a hidden temporary name, each file written atomically,
//! and renamed into place whole: a reader (or a bench killed mid-way) only ever sees no run
//! or a complete one. Temporary folders of dead processes are removed on the next write.
//! Ids are a UTC timestamp and a random suffix, so sorting them by name sorts runs by time.

use crate::fsutil;
use serde_json::Value;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The run history's folder inside a workspace.
pub const RUNS_DIR: &str = "runs";
const TMP_PREFIX: &str = "tmp";

pub const COMMAND_FILE: &str = "command.txt";
pub const CONFIG_FILE: &str = "config.json";
pub const ENVIRONMENT_FILE: &str = "environment.json";
pub const RESULTS_FILE: &str = "results.json";
pub const LOG_FILE: &str = "log.txt";

/// A new run id for `now`: `20250611T142233.123Z-3f9a1c`.
pub fn new_id(now: SystemTime) -> String {
    let stamp: String = humantime::format_rfc3339_millis(now)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let mut suffix = [0u8; 3];
    if getrandom::fill(&mut suffix).is_err() {
        // No randomness: the pid and the clock's nanoseconds still separate two runs.
        let nanos = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        suffix = (std::process::id() ^ nanos).to_le_bytes()[..3]
            .try_into()
            .expect("three bytes of four");
    }
    format!("{stamp}-{}", hex::encode(suffix))
}

/// True for names a run id may have (and a temporary folder never has).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// One recorded run.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub id: String,
    /// The command line, one line.
    pub command: String,
    pub config: Value,
    pub environment: Value,
    pub results: Value,
    pub log: String,
}

impl Run {
    /// Writes the run as `runs_dir/<id>/`, atomically as a whole; returns that folder.
    pub fn save(&self, runs_dir: &Path) -> io::Result<PathBuf> {
        if !valid_id(&self.id) {
            return Err(io::Error::other(format!("'{}' is not a run id", self.id)));
        }
        fs::create_dir_all(runs_dir)?;
        fsutil::remove_stale_temps(runs_dir, &[TMP_PREFIX]);
        let json = |v: &Value| serde_json::to_vec_pretty(v).map_err(io::Error::other);
        let files: [(&str, Vec<u8>); 5] = [
            (COMMAND_FILE, format!("{}\n", self.command).into_bytes()),
            (CONFIG_FILE, json(&self.config)?),
            (ENVIRONMENT_FILE, json(&self.environment)?),
            (RESULTS_FILE, json(&self.results)?),
            (LOG_FILE, self.log.clone().into_bytes()),
        ];
        let tmp = fsutil::temp_path(runs_dir, TMP_PREFIX);
        let dest = runs_dir.join(&self.id);
        let result = (|| {
            fs::create_dir(&tmp)?;
            for (name, bytes) in &files {
                fsutil::atomic_write(&tmp.join(name), bytes)?;
            }
            if dest.exists() {
                return Err(io::Error::other(format!("{} exists", dest.display())));
            }
            fs::rename(&tmp, &dest)?;
            fsutil::fsync_dir(runs_dir)
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result.map(|()| dest)
    }

    /// Reads run `id` from `runs_dir`.
    pub fn load(runs_dir: &Path, id: &str) -> Result<Run, String> {
        let dir = runs_dir.join(id);
        let text = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let json = |name: &str| -> Result<Value, String> {
            let path = dir.join(name);
            match serde_json::from_str(&text(name)?) {
                Ok(v @ Value::Object(_)) => Ok(v),
                Ok(_) => Err(format!("{}: not a JSON object", path.display())),
                Err(e) => Err(format!("{}: {e}", path.display())),
            }
        };
        Ok(Run {
            id: id.to_string(),
            command: text(COMMAND_FILE)?.trim_end().to_string(),
            config: json(CONFIG_FILE)?,
            environment: json(ENVIRONMENT_FILE)?,
            results: json(RESULTS_FILE)?,
            log: text(LOG_FILE)?,
        })
    }
}

/// The ids of every run folder in `runs_dir`, oldest first (none when it does not exist).
pub fn ids(runs_dir: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(runs_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if valid_id(&name) && entry.file_type().is_ok_and(|t| t.is_dir()) {
            ids.push(name);
        }
    }
    ids.sort();
    Ok(ids)
}

/// The id `query` names: an id, a prefix of exactly one id, or `latest`.
pub fn resolve(runs_dir: &Path, query: &str) -> Result<String, String> {
    let ids = ids(runs_dir).map_err(|e| format!("cannot read {}: {e}", runs_dir.display()))?;
    if query == "latest" {
        return ids
            .last()
            .cloned()
            .ok_or_else(|| format!("no runs recorded in {}", runs_dir.display()));
    }
    if ids.iter().any(|id| id == query) {
        return Ok(query.to_string());
    }
    let matching: Vec<&String> = if valid_id(query) {
        ids.iter().filter(|id| id.starts_with(query)).collect()
    } else {
        Vec::new()
    };
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(format!(
            "no run '{query}' in {} (see `scoria runs list`)",
            runs_dir.display()
        )),
        many => Err(format!(
            "'{query}' matches {} runs ({} ...); give more of the id",
            many.len(),
            many.first().map_or("", |s| s.as_str())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn run(id: &str) -> Run {
        Run {
            id: id.to_string(),
            command: "scoria bench --model digits".into(),
            config: json!({"model": "digits", "concurrency": 2}),
            environment: json!({"cpu": {"count": 2}}),
            results: json!({"requests": 50, "errors": 0}),
            log: "warning: debug build\n".into(),
        }
    }

    #[test]
    fn ids_sort_by_time_and_are_unique() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let times = [
            t0,
            t0 + Duration::from_millis(1),
            t0 + Duration::from_secs(9),
            t0 + Duration::from_secs(10),
            t0 + Duration::from_secs(86_400 * 400),
        ];
        let ids: Vec<String> = times.iter().map(|&t| new_id(t)).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert!(ids[0].starts_with("20231114T221320.000Z-"), "{}", ids[0]);
        assert!(ids
            .iter()
            .all(|id| valid_id(id) && id.len() == ids[0].len()));
        assert_ne!(new_id(t0), new_id(t0));
        for bad in ["", ".tmp-1-2", "../x", "a/b", "a b"] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn saves_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join(RUNS_DIR);
        let a = run("20240101T000000.000Z-aaaaaa");
        let b = run("20240102T000000.000Z-bbbbbb");
        let path = b.save(&runs).unwrap();
        assert_eq!(path, runs.join(&b.id));
        a.save(&runs).unwrap();
        assert!(a.save(&runs).is_err(), "an existing run is not overwritten");
        assert_eq!(Run::load(&runs, &a.id).unwrap(), a);
        assert_eq!(ids(&runs).unwrap(), vec![a.id.clone(), b.id.clone()]);
        // Only the run folders are left: no temporary files or folders.
        assert_eq!(fs::read_dir(&runs).unwrap().count(), 2);
        assert_eq!(fs::read_dir(runs.join(&a.id)).unwrap().count(), 5);
        assert!(run("../escape").save(&runs).is_err());
    }

    #[test]
    fn resolves_ids_prefixes_and_latest() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join(RUNS_DIR);
        assert!(resolve(&runs, "latest").unwrap_err().contains("no runs"));
        for id in [
            "20240101T000000.000Z-aa",
            "20240101T000000.000Z-ab",
            "20240202T000000.000Z-cc",
        ] {
            run(id).save(&runs).unwrap();
        }
        assert_eq!(resolve(&runs, "latest").unwrap(), "20240202T000000.000Z-cc");
        assert_eq!(resolve(&runs, "202402").unwrap(), "20240202T000000.000Z-cc");
        assert_eq!(
            resolve(&runs, "20240101T000000.000Z-aa").unwrap(),
            "20240101T000000.000Z-aa"
        );
        assert!(resolve(&runs, "20240101")
            .unwrap_err()
            .contains("matches 2 runs"));
        assert!(resolve(&runs, "nope")
            .unwrap_err()
            .contains("no run 'nope'"));
        assert!(resolve(&runs, "../x").unwrap_err().contains("no run"));
    }

    #[test]
    fn ignores_and_cleans_temporary_folders() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join(RUNS_DIR);
        fs::create_dir_all(&runs).unwrap();
        // A half-written run of a process that no longer exists (pid beyond pid_max).
        let stale = runs.join(format!(".{TMP_PREFIX}-4294967295-1"));
        fs::create_dir(&stale).unwrap();
        assert!(ids(&runs).unwrap().is_empty());
        run("20240101T000000.000Z-aa").save(&runs).unwrap();
        assert!(!stale.exists());
    }
}
