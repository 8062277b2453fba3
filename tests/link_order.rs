//! `link/expand-order`, the wrapper through which gcc runs the release link (build.rs): an
//! order entry stands for its function and every numbered copy fat LTO made of it, whatever
//! the copies' numbers, and the linker otherwise gets its arguments as they were.

use std::path::{Path, PathBuf};
use std::process::Command;

/// An object whose defined functions are `main`, `f` and its copies `f.12` and `f.40`,
/// `g.7` (a copy whose first one was inlined away) and `h`, assembled by `cc`.
fn object(dir: &Path) -> PathBuf {
    let source = dir.join("copies.s");
    std::fs::write(
        &source,
        ".text\n.globl main\nmain: ret\nf: ret\n\"f.12\": ret\n\"f.40\": ret\n\"g.7\": ret\nh: ret\n",
    )
    .expect("write the assembly");
    let object = dir.join("copies.o");
    let status = Command::new("cc")
        .arg("-c")
        .arg(&source)
        .arg("-o")
        .arg(&object)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc -c failed");
    object
}

/// Runs the wrapper around `sh -c SCRIPT` with `args`; returns its exit code.
fn run(script: &str, args: &[String], out: &Path) -> i32 {
    let wrapper = Path::new(env!("CARGO_MANIFEST_DIR")).join("link/expand-order");
    Command::new(&wrapper)
        .args(["sh", "-c", script, "linker"])
        .args(args)
        .env("OUT", out)
        .status()
        .expect("run link/expand-order")
        .code()
        .expect("an exit code")
}

#[test]
fn every_entry_stands_for_all_numbered_copies_of_its_function() {
    let dir = tempfile::tempdir().expect("temp dir");
    let object = object(dir.path());
    let order = dir.path().join("order.txt");
    // Numbers from an older build (g.3, f.99), a plain name, one nothing defines, and f again.
    std::fs::write(&order, "g.3\nf.99\nh\nmissing.5\n\nf\n").expect("write the order");
    let out = dir.path().join("seen.txt");
    let keep = r#"for a do case $a in --symbol-ordering-file=*) cp "${a#*=}" "$OUT";; esac; done"#;
    let args = [
        "-o".to_string(),
        "binary".to_string(),
        object.display().to_string(),
        format!("--symbol-ordering-file={}", order.display()),
    ];
    assert_eq!(run(keep, &args, &out), 0);
    let seen = std::fs::read_to_string(&out).expect("the linker saw an order file");
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        ["g", "g.7", "f", "f.12", "f.40", "h", "missing"]
    );
}

#[test]
fn the_linker_gets_its_arguments_and_its_exit_status_through() {
    let dir = tempfile::tempdir().expect("temp dir");
    let object = object(dir.path());
    let order = dir.path().join("order.txt");
    std::fs::write(&order, "f.1\n").expect("write the order");
    let out = dir.path().join("args.txt");
    let record = r#"for a do printf '%s\n' "$a"; done > "$OUT"; exit 3"#;
    let args = [
        "-o".to_string(),
        "a b".to_string(),
        object.display().to_string(),
        format!("--symbol-ordering-file={}", order.display()),
        "-lc".to_string(),
    ];
    assert_eq!(run(record, &args, &out), 3, "the linker's status");
    let seen = std::fs::read_to_string(&out).expect("the linker ran");
    let seen: Vec<&str> = seen.lines().collect();
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert_eq!(
        seen[..3],
        args[..3].iter().map(String::as_str).collect::<Vec<_>>()[..]
    );
    assert_eq!(seen[4], "-lc");
    let expanded = seen[3]
        .strip_prefix("--symbol-ordering-file=")
        .expect("the ordering argument stays in place");
    assert_ne!(Path::new(expanded), order, "a completed copy of the order");
    assert!(
        !Path::new(expanded).exists(),
        "the completed copy is removed once the linker is done"
    );

    // Without an ordering argument, nothing changes.
    let plain = ["-o".to_string(), "x".to_string()];
    assert_eq!(run(record, &plain, &out), 3);
    assert_eq!(std::fs::read_to_string(&out).expect("ran"), "-o\nx\n");
}
