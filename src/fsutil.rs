//! Durable file-system helpers: every write that must survive a crash goes through here.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Flushes a directory's entries (new names, renames) to disk.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A unique hidden name in `dir` for a temporary entry, recognisable by `prefix` and the
/// writer's pid so that leftovers of a killed process can be found and removed later.
pub fn temp_path(dir: &Path, prefix: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    dir.join(format!(".{prefix}-{}-{nanos}", std::process::id()))
}

/// The pid embedded by [`temp_path`], if `name` is such a temporary entry of `prefix`.
pub fn temp_owner(name: &str, prefix: &str) -> Option<u32> {
    let rest = name
        .strip_prefix('.')?
        .strip_prefix(prefix)?
        .strip_prefix('-')?;
    rest.split('-').next()?.parse().ok()
}

/// True when a process with `pid` is running on this machine.
pub fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Best-effort removal of the [`temp_path`] entries (folders or files) of any of
/// `prefixes` in `dir` whose process is gone: what killed writers left behind.
pub fn remove_stale_temps(dir: &Path, prefixes: &[&str]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let owner = prefixes.iter().find_map(|p| temp_owner(&name, p));
        if owner.is_some_and(|pid| !process_alive(pid)) {
            let path = entry.path();
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
    }
}

/// Reads `reader` to its end, failing once more than `limit` bytes came (so `/dev/zero` or a
/// runaway pipe cannot take all memory).
pub fn read_bounded(reader: impl io::Read, limit: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    reader.take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(io::Error::other(format!("larger than {limit} bytes")));
    }
    Ok(out)
}

/// Writes `bytes` to `path` atomically: a reader sees the old content or the new, never a
/// part, even if the process is killed or the machine loses power mid-way. The file gets
/// the default mode (0666 less the umask) and replaces any file at `path`.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    atomic_write_with(path, bytes, AtomicWrite::default())
}

/// How [`atomic_write_with`] creates and places the file.
#[derive(Debug, Clone, Copy)]
pub struct AtomicWrite {
    /// The file's permission bits, exactly (the umask does not apply); `None` for the
    /// default, 0666 less the umask. Set before any byte is written.
    pub mode: Option<u32>,
    /// Replace a file at `path` (the default). When false, a file at `path`, even one
    /// created while this write runs, is left alone and the write fails with
    /// [`io::ErrorKind::AlreadyExists`].
    pub replace: bool,
}

impl Default for AtomicWrite {
    fn default() -> Self {
        AtomicWrite {
            mode: None,
            replace: true,
        }
    }
}

/// Writes `bytes` to `path` atomically as [`atomic_write`] does, the file created and placed
/// as `options` say: the content goes to a new hidden file beside `path`, is fsynced, then
/// renamed (or, not replacing, hard-linked) to `path`, and the directory is fsynced. On an
/// error nothing is left behind but what was at `path` before.
pub fn atomic_write_with(path: &Path, bytes: &[u8], options: AtomicWrite) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = temp_path(dir, "write");
    let result = (|| {
        let mut open = OpenOptions::new();
        open.write(true).create_new(true);
        if let Some(mode) = options.mode {
            open.mode(mode);
        }
        let mut f = open.open(&tmp)?;
        if let Some(mode) = options.mode {
            // The umask can only clear bits; make the mode exactly what was asked.
            f.set_permissions(Permissions::from_mode(mode))?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        if options.replace {
            fs::rename(&tmp, path)?;
        } else {
            // A hard link fails if `path` exists, where a rename would replace it.
            fs::hard_link(&tmp, path)?;
            fs::remove_file(&tmp)?;
        }
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn atomic_write_with_a_mode_and_without_replacing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let private = AtomicWrite {
            mode: Some(0o600),
            replace: false,
        };
        atomic_write_with(&p, b"one", private).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let e = atomic_write_with(&p, b"two", private).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn temp_names_carry_the_pid() {
        let p = temp_path(Path::new("/x"), "tmp");
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(temp_owner(name, "tmp"), Some(std::process::id()));
        assert_eq!(temp_owner("digits", "tmp"), None);
        assert!(process_alive(std::process::id()));
    }
}
