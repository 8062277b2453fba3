//! `scoria keys generate`: writes an API key file for `scoria serve --api-key-file`.

use super::GlobalArgs;
use crate::fsutil;
use crate::http::auth::Role;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Random bytes per key (hex-encoded to 64 characters).
const KEY_BYTES: usize = 32;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Write a new API key file with a primary and a secondary key, readable only by its
    /// owner (mode 0600). Either key is accepted, so keys can be rotated one at a time.
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The key file to write.
    #[arg(env = "SCORIA_API_KEY_FILE", value_name = "FILE")]
    pub file: PathBuf,

    /// Replace FILE if it already exists.
    #[arg(long, env = "SCORIA_KEYS_FORCE")]
    pub force: bool,

    /// Role of both keys: `score` (inference, scoring, metadata, stats) or `admin`
    /// (everything, including model repository load and unload).
    #[arg(long, env = "SCORIA_KEYS_ROLE", default_value = "admin", value_parser = parse_role, value_name = "ROLE")]
    pub role: Role,

    /// Print the two keys on stdout (one per line); otherwise they are only in FILE.
    #[arg(long, env = "SCORIA_KEYS_PRINT")]
    pub print: bool,
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::from_name(s).ok_or_else(|| format!("unknown role '{s}' (expected score or admin)"))
}

pub fn run(_global: &GlobalArgs, cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Generate(args) => {
            let keys = generate(&args.file, args.role, args.force)?;
            let note = format!(
                "wrote a primary and a secondary {} key to {}",
                args.role,
                args.file.display()
            );
            if args.print {
                eprintln!("{note}");
                println!("{}\n{}", keys[0], keys[1]);
            } else {
                println!("{note}");
            }
            Ok(())
        }
    }
}

/// Writes a key file with two fresh keys of `role` and returns them (primary, secondary).
/// Refuses to replace an existing `path` unless `force`.
fn generate(path: &Path, role: Role, force: bool) -> anyhow::Result<[String; 2]> {
    if !force && fs::symlink_metadata(path).is_ok() {
        bail!("{} exists (use --force to replace it)", path.display());
    }
    let keys = [random_key()?, random_key()?];
    let text = format!(
        "# scoria API keys: one per line, `KEY [score|admin]`; either key is accepted.\n\
         # Rotate by replacing one key at a time. Keep this file private (mode 0600).\n\
         # primary\n{} {role}\n# secondary\n{} {role}\n",
        keys[0], keys[1]
    );
    write_private(path, text.as_bytes(), force)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(keys)
}

/// A key of [`KEY_BYTES`] bytes from the OS random number generator, hex-encoded.
fn random_key() -> anyhow::Result<String> {
    let mut bytes = [0u8; KEY_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot read the OS random number generator: {e}"))?;
    Ok(hex::encode(bytes))
}

/// Writes the key file atomically with mode 0600; unless `replace`, an existing `path` is
/// never overwritten (not even one created meanwhile).
fn write_private(path: &Path, bytes: &[u8], replace: bool) -> io::Result<()> {
    let options = fsutil::AtomicWrite {
        mode: Some(0o600),
        replace,
    };
    fsutil::atomic_write_with(path, bytes, options).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            io::Error::new(e.kind(), "the file exists (use --force to replace it)")
        } else {
            e
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::auth::ApiKeys;
    use axum::http::HeaderValue;
    use std::os::unix::fs::PermissionsExt;

    fn bearer(key: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {key}")).unwrap()
    }

    #[test]
    fn generated_file_loads_with_two_distinct_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.txt");
        let [a, b] = generate(&path, Role::Admin, false).unwrap();
        assert_ne!(a, b);
        assert!(a.len() >= 40 && b.len() >= 40);

        let keys = ApiKeys::load(&path).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.check(Some(&bearer(&a))).unwrap(), Role::Admin);
        assert_eq!(keys.check(Some(&bearer(&b))).unwrap(), Role::Admin);

        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Only the key file is left: no temporary files.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains(&format!("\n{a} admin\n")), "{text}");
    }

    #[test]
    fn refuses_to_overwrite_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.txt");
        generate(&path, Role::Admin, false).unwrap();
        let before = fs::read(&path).unwrap();

        let e = generate(&path, Role::Admin, false).unwrap_err().to_string();
        assert!(e.contains("exists (use --force"), "{e}");
        assert_eq!(fs::read(&path).unwrap(), before);
        // The race-free path: the file appeared after the first check.
        let e = write_private(&path, b"x", false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

        let [a, _] = generate(&path, Role::Score, true).unwrap();
        assert_ne!(fs::read(&path).unwrap(), before);
        let keys = ApiKeys::load(&path).unwrap();
        assert_eq!(keys.check(Some(&bearer(&a))).unwrap(), Role::Score);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn roles_parse_for_clap() {
        assert_eq!(parse_role("score"), Ok(Role::Score));
        assert_eq!(parse_role("admin"), Ok(Role::Admin));
        assert!(parse_role("root").is_err());
    }
}
