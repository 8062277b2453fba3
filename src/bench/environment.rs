//! What a run ran on, for its record: scoria's version and build, the OS, the CPU, the
//! host and the workspace's git commit. Every probe is best effort; what cannot be read is
//! `null`.

use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};

/// The environment of this process, with `workspace`'s git commit.
pub fn collect(workspace: &Path) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    json!({
        "scoria": {
            "version": env!("CARGO_PKG_VERSION"),
            "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        },
        "os": {
            "family": std::env::consts::OS,
            "arch": std::env::consts::ARCH,
            "name": os_release(),
            "kernel": read_trimmed("/proc/sys/kernel/osrelease"),
        },
        "cpu": {
            "count": std::thread::available_parallelism().map(|n| n.get()).ok(),
            "model": cpu_model(&cpuinfo),
        },
        "memory_bytes": mem_total(),
        "hostname": read_trimmed("/proc/sys/kernel/hostname")
            .or_else(|| read_trimmed("/etc/hostname")),
        "git": git(workspace),
    })
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// `PRETTY_NAME` from /etc/os-release, e.g. "Debian GNU/Linux 13 (trixie)".
fn os_release() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
}

/// The first `model name` (x86) or `Model`/`CPU part` style line of /proc/cpuinfo.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "Model", "cpu model", "Processor"]
        .iter()
        .find_map(|key| {
            cpuinfo.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_string())
            })
        })
}

fn mem_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// `{"commit": ..., "dirty": bool}` of the git checkout holding `dir`, or `null`.
fn git(dir: &Path) -> Value {
    let run = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    match run(&["rev-parse", "HEAD"]) {
        Some(commit) if !commit.is_empty() => {
            let dirty =
                run(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
            json!({ "commit": commit, "dirty": dirty })
        }
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_model_from_cpuinfo() {
        let x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel\t\t: 85\nmodel name\t: Intel(R) Xeon(R) CPU\n";
        assert_eq!(cpu_model(x86).as_deref(), Some("Intel(R) Xeon(R) CPU"));
        assert_eq!(cpu_model("processor : 0\n"), None);
    }

    #[test]
    fn collects_without_failing() {
        let env = collect(Path::new("/nonexistent"));
        assert_eq!(env["scoria"]["version"], env!("CARGO_PKG_VERSION"));
        assert!(env["git"].is_null());
    }
}
