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

/// A temporary directory with the object, an order file holding `order` and the path of the
/// file the linker's script writes.
fn link(order: &str) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let object = object(dir.path());
    let order_file = dir.path().join("order.txt");
    std::fs::write(&order_file, order).expect("write the order");
    let out = dir.path().join("out.txt");
    (dir, object, order_file, out)
}

/// A link's arguments: an output (a name with a space), `object`, the ordering file `order`
/// and a library.
fn link_args(object: &Path, order: &Path) -> Vec<String> {
    vec![
        "-o".to_string(),
        "a b".to_string(),
        object.display().to_string(),
        format!("--symbol-ordering-file={}", order.display()),
        "-lc".to_string(),
    ]
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
    // Numbers from an older build (g.3, f.99), a plain name, one nothing defines, and f again.
    let (_dir, object, order, out) = link("g.3\nf.99\nh\nmissing.5\n\nf\n");
    let keep = r#"for a do case $a in --symbol-ordering-file=*) cp "${a#*=}" "$OUT";; esac; done"#;
    assert_eq!(run(keep, &link_args(&object, &order), &out), 0);
    let seen = std::fs::read_to_string(&out).expect("the linker saw an order file");
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        ["g", "g.7", "f", "f.12", "f.40", "h", "missing"]
    );
}

#[test]
fn the_linker_gets_its_arguments_and_its_exit_status_through() {
    let (_dir, object, order, out) = link("f.1\n");
    let record = r#"for a do printf '%s\n' "$a"; done > "$OUT"; exit 3"#;
    let args = link_args(&object, &order);
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

/// `symbol_order_note` of `benches/memory/bench_memory.py` (what the memory and peer benches
/// warn with) for the object and an order file holding `order`.
fn order_note(order: &str) -> String {
    let (_dir, object, order_file, _out) = link(order);
    let benches = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/memory");
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys; from pathlib import Path; import bench_memory as b; \
             print(b.symbol_order_note(Path(sys.argv[1]), Path(sys.argv[2])))",
        )
        .arg(&object)
        .arg(&order_file)
        .env("PYTHONPATH", &benches)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .trim()
        .to_string()
}

#[test]
fn the_benches_warn_when_the_binary_has_few_of_the_orders_names() {
    // Every name found, copies matched whatever their numbers: no warning.
    assert_eq!(order_note("f.99\ng.3\nh\nmain\n"), "None");
    // 9 of 10 found: the threshold (90 %) is met.
    let nine = "f\ng\nh\nmain\nf.1\ng.2\nh.3\nmain.4\nf.5\nrenamed_17habc\n";
    assert_eq!(order_note(nine), "None");
    // 4 of 6 found: stale.
    let note = order_note("f\ng\nh\nmain\nrenamed_17habc\nrenamed_17hdef\n");
    assert!(
        note.starts_with("warning: ") && note.contains("only 67% of "),
        "{note}"
    );
}
