//! The fixture hooks of `tests/fixtures/hooks/`: each failure is contained, precise, and
//! leaves the hooks working.

use super::tests::{assert_zero, digits, digits_hook, script, DIGIT_ZERO};
use super::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn fixture(name: &str, limits: HookLimits) -> Result<Hook, HookError> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hooks")
        .join(name);
    Hook::load_with_limits(&path, digits(), None, limits)
}

/// Runs `name` twice (the second call proves the hook survived the first) and returns the
/// error, after checking the digits hook still works.
fn fails(name: &str, limits: HookLimits) -> HookError {
    let hook = fixture(name, limits).unwrap();
    let first = hook.run(json!({})).unwrap_err();
    let second = hook.run(json!({})).unwrap_err();
    assert_eq!(first.to_string(), second.to_string());
    assert_zero(&digits_hook().run(json!({ "data": [DIGIT_ZERO] })).unwrap());
    first
}

/// Limit errors carry no line: Rhai moves them to the outermost call site, which is ours.
fn assert_limit(e: &HookError, reason: &str) {
    let HookError::Limit {
        line, reason: r, ..
    } = e
    else {
        panic!("expected a limit error, got {e:?}");
    };
    assert_eq!((*line, r.as_str()), (None, reason), "{e}");
    assert!(!e.is_client_error());
}

#[test]
fn endless_loop_hits_the_time_limit() {
    let limits = HookLimits {
        time: Duration::from_millis(200),
        max_operations: u64::MAX,
        ..HookLimits::default()
    };
    let started = Instant::now();
    let e = fails("loop.rhai", limits);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_limit(&e, "exceeded the time limit of 200ms");
    assert_eq!(
        e.to_string(),
        "score hook hooks/loop.rhai: exceeded the time limit of 200ms"
    );
}

#[test]
fn endless_loop_hits_the_operation_limit() {
    let limits = HookLimits {
        max_operations: 10_000,
        ..HookLimits::default()
    };
    let e = fails("loop.rhai", limits);
    assert_limit(&e, "exceeded the limit of 10000 operations");
}

#[test]
fn unbounded_recursion_is_stopped() {
    let shallow = HookLimits {
        max_call_levels: 6,
        ..HookLimits::default()
    };
    let e = fails("recursion.rhai", shallow);
    assert_limit(
        &e,
        "function calls nested deeper than the limit of 6 levels",
    );
    // With the default limits the stack guard or the depth limit stops it, whichever is first
    // (debug builds use far more stack per level), on a thread with tokio's 2 MiB stack.
    let e = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| fails("recursion.rhai", HookLimits::default()))
        .unwrap()
        .join()
        .unwrap();
    let HookError::Limit { reason, .. } = &e else {
        panic!("{e:?}")
    };
    assert!(
        reason.contains("stack limit") || reason.contains("levels"),
        "{e}"
    );
}

#[test]
fn giant_string_hits_the_size_limit() {
    let e = fails("giant_string.rhai", HookLimits::default());
    assert_limit(&e, "a string grew past the limit of 4194304 bytes");
}

#[test]
fn imports_cannot_reach_files() {
    let e = fails("file_access.rhai", HookLimits::default());
    assert!(
        matches!(e, HookError::Runtime { line: Some(3), .. }),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "score hook hooks/file_access.rhai line 3: import \"/etc/passwd\" refused: score hooks \
         cannot load modules or files"
    );
}

#[test]
fn eval_and_sleep_are_unavailable() {
    let e = script(
        "eval.rhai",
        "fn run(x) {\n  eval(\"1\")\n}",
        HookLimits::default(),
    )
    .unwrap_err();
    assert!(matches!(e, HookError::Compile { line: 2, .. }), "{e:?}");
    assert!(e.to_string().contains("eval"), "{e}");
    let hook = script(
        "sleep.rhai",
        "fn run(x) { sleep(10) }",
        HookLimits::default(),
    )
    .unwrap();
    let e = hook.run(json!(null)).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("line 1: sleep is not available in score hooks"),
        "{e}"
    );
}

#[test]
fn throw_is_the_clients_error() {
    let hook = fixture("throw.rhai", HookLimits::default()).unwrap();
    let e = hook.run(json!({})).unwrap_err();
    assert!(e.is_client_error());
    assert_eq!(e.to_string(), "missing \"data\" (got 0 keys)");
    let e = hook.run(json!({"kind": "map"})).unwrap_err();
    assert!(matches!(e, HookError::Thrown(_)));
    assert_eq!(e.to_string(), "#{\"code\": 7, \"reason\": \"bad\"}");
}

#[test]
fn syntax_errors_name_file_line_and_column() {
    let e = fixture("bad_syntax.rhai", HookLimits::default()).unwrap_err();
    let HookError::Compile { line, column, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!((*line, *column), (3, 16));
    assert!(
        e.to_string()
            .starts_with("score hook hooks/bad_syntax.rhai:3:16: "),
        "{e}"
    );
    let e = script("none.rhai", "fn other(x) { x }", HookLimits::default()).unwrap_err();
    assert!(matches!(e, HookError::Contract { .. }), "{e:?}");
    assert!(e.to_string().ends_with("defines no `fn run(input)`"), "{e}");
    let e = script("arity.rhai", "fn run() { 1 }", HookLimits::default()).unwrap_err();
    assert!(e.to_string().contains("one parameter"), "{e}");
}

#[test]
fn failing_init_fails_the_load() {
    let e = fixture("init_fails.rhai", HookLimits::default()).unwrap_err();
    assert!(matches!(e, HookError::Init { line: Some(4), .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("score hook hooks/init_fails.rhai line 4: init() failed: "),
        "{e}"
    );
    let e = script(
        "t.rhai",
        "fn init() { throw \"no\" }\nfn run(x) { x }",
        HookLimits::default(),
    )
    .unwrap_err();
    assert!(!e.is_client_error());
    assert!(
        e.to_string().ends_with("init() failed: threw \"no\""),
        "{e}"
    );
}

#[test]
fn results_must_be_json() {
    let hook = fixture("not_json.rhai", HookLimits::default()).unwrap();
    let ok = hook.run(json!({"kind": "ok"})).unwrap();
    let want = json!({"ok": true, "unit": null, "t": [[1, 2], [3, 4]], "f": [0.1]});
    assert_eq!(ok, want);
    for (kind, reason) in [
        ("fn", "a function pointer (Fn(run)) at `.result[1]`"),
        ("model", "the `model` object at `.m`"),
        (
            "nan",
            "the number NaN (JSON has no NaN or infinity) at `.value`",
        ),
    ] {
        let e = hook.run(json!({ "kind": kind })).unwrap_err();
        assert!(matches!(e, HookError::NotJson { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "score hook hooks/not_json.rhai: run() returned a value that is not JSON: {reason}"
            )
        );
    }
}

#[test]
fn requests_and_tensors_are_bounded() {
    let limits = HookLimits {
        max_array_size: 100,
        max_tensor_bytes: 64,
        ..HookLimits::default()
    };
    let hook = script("id.rhai", "fn run(x) { tensor(x, \"FP32\") }", limits).unwrap();
    assert_eq!(hook.run(json!([1, 2])).unwrap(), json!([1.0, 2.0]));
    let e = hook.run(json!(vec![0; 101])).unwrap_err();
    assert!(e
        .to_string()
        .ends_with("the request has 101 array elements, over the limit of 100"));
    assert!(matches!(e, HookError::RequestTooLarge { .. }), "{e:?}");
    // A finite number beyond FP32 would become inf: refused like any bad element (400).
    let e = hook.run(json!([1, 1e39])).unwrap_err();
    assert!(e.is_client_error(), "{e:?}");
    assert!(
        e.to_string().contains(
            "element 1: expected an FP32 number, found 1000000000000000000000000000000000000000"
        ),
        "{e}"
    );
    let e = hook.run(json!(vec![0; 17])).unwrap_err();
    assert!(e.to_string().contains("tensor memory limit"), "{e}");
}

#[test]
fn data_the_model_refuses_is_the_clients_error() {
    let source = "fn run(x) {\n  model.predict(#{ input: tensor(x, \"FP32\") })\n}";
    let hook = script("pass.rhai", source, HookLimits::default()).unwrap();
    // Rows of 64 pass; rows of 3, or one more level of nesting, do not fit [-1, 64].
    assert!(hook.run(json!([DIGIT_ZERO])).is_ok());
    for input in [json!([[1, 2, 3]]), json!([[[1]]])] {
        let e = hook.run(input.clone()).unwrap_err();
        assert!(
            matches!(e, HookError::BadInput { line: Some(2), .. }) && e.is_client_error(),
            "{input}: {e:?}"
        );
        assert!(
            e.to_string().contains("model.predict: input 'input'"),
            "{e}"
        );
    }
    // A script's own mistake stays a server error.
    let hook = script(
        "typo.rhai",
        "fn run(x) { model.predikt(x) }",
        HookLimits::default(),
    )
    .unwrap();
    assert!(!hook.run(json!(1)).unwrap_err().is_client_error());
}

#[test]
fn zero_length_dimensions_cannot_make_unbounded_arrays() {
    let source = "fn run(x) {\n  tensor([], \"FP32\", [1000000000000, 0]).to_array()\n}";
    let hook = script("zero.rhai", source, HookLimits::default()).unwrap();
    let started = Instant::now();
    let e = hook.run(json!(null)).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        e.to_string()
            .contains("nested arrays, over the array limit"),
        "{e}"
    );
}

#[test]
fn deeply_nested_values_do_not_overflow_a_hook_threads_stack() {
    // Rhai checks and drops nested values recursively; on a thread with the stack hooks run
    // with, nesting as deep as a script can build is contained (the process used to abort).
    let source = "fn run(x) {\n  let a = #{};\n  for i in 0..x { a = #{x: a}; }\n  let b = [];\n  for i in 0..x { b = [b]; }\n  1\n}";
    let hook = script("deep.rhai", source, HookLimits::default()).unwrap();
    let out = std::thread::Builder::new()
        .stack_size(crate::hook::HOOK_THREAD_STACK_BYTES)
        .spawn(move || hook.run(json!(5000)))
        .unwrap()
        .join()
        .expect("the hook thread survived");
    // Done, or stopped by a limit: either way an answer, not an abort.
    if let Err(e) = out {
        assert!(!e.is_client_error(), "{e}");
    }
}

#[test]
fn a_sort_comparer_out_of_time_stops_the_sort() {
    let limits = HookLimits {
        time: Duration::from_millis(300),
        ..HookLimits::default()
    };
    let source = "fn run(x) {\n  let a = [];\n  a.pad(200000, 1);\n  a.sort(|p, q| { let s = 0; for i in 0..500 { s += i; } p - q });\n  a.len()\n}";
    let hook = script("sort.rhai", source, limits).unwrap();
    let started = Instant::now();
    let e = hook.run(json!(null)).unwrap_err();
    assert!(e.to_string().contains("time limit"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // A well-behaved comparer still sorts.
    let hook = script(
        "sorted.rhai",
        "fn run(x) { let a = [3, 1, 2]; a.sort(|p, q| p - q); a }",
        HookLimits::default(),
    )
    .unwrap();
    assert_eq!(hook.run(json!(null)).unwrap(), json!([1, 2, 3]));
}
