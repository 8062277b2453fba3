//! The sandbox: resource limits of a hook call and the engine settings that enforce them.
//!
//! Rhai itself bounds operations, call depth, expression depth and data sizes. Wall-clock time,
//! native stack use and tensor memory are per call, so they live in a thread-local [`CallGuard`]
//! that [`super::Hook`] enters around every script call and the engine's progress callback
//! checks: a call runs entirely on the thread that entered the guard.

use rhai::{Dynamic, Engine};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// Resource limits of one hook call (`init` at load, `run` per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookLimits {
    /// Wall-clock time of one call, including time spent in `model.predict`.
    pub time: Duration,
    /// Script operations (roughly: expressions evaluated) in one call.
    pub max_operations: u64,
    /// Nesting of script function calls.
    pub max_call_levels: usize,
    /// Native stack the script may use below `Hook::run`'s frame. The calling thread needs at
    /// least this much plus ~1 MiB (tokio's blocking threads have 2 MiB).
    pub max_stack_bytes: usize,
    /// Total bytes of the strings in one value (a string, or all strings inside an array/map).
    pub max_string_size: usize,
    /// Total elements of one array, counting nested arrays (the request included).
    pub max_array_size: usize,
    /// Total properties of one object map, counting nested maps (the request included).
    pub max_map_size: usize,
    /// Bytes of tensor data the script may create in one call (`tensor(...)`, model outputs,
    /// `softmax` of a tensor).
    pub max_tensor_bytes: usize,
    /// Expression nesting at top level / inside functions (checked when compiling).
    pub max_expr_depth: (usize, usize),
    /// Variables alive at once.
    pub max_variables: usize,
}

impl Default for HookLimits {
    fn default() -> Self {
        HookLimits {
            time: Duration::from_secs(5),
            max_operations: 100_000_000,
            max_call_levels: 64,
            max_stack_bytes: 768 * 1024,
            max_string_size: 4 * 1024 * 1024,
            max_array_size: 2_000_000,
            max_map_size: 100_000,
            max_tensor_bytes: 256 * 1024 * 1024,
            max_expr_depth: (64, 32),
            max_variables: 10_000,
        }
    }
}

/// Stack for threads that run score hooks (the serve and edge runtimes, `predict`). Rhai
/// walks nested arrays and maps recursively (its size checks after each operation, and
/// dropping them), deeper than [`HookLimits::max_stack_bytes`] accounts for; a script can
/// nest as deep as its time limit lets it, which in 5 s takes tens of MiB of stack. Only the
/// pages a thread touches are committed.
pub const HOOK_THREAD_STACK_BYTES: usize = 128 << 20;

/// What the progress callback returns to stop a script; mapped back by the error module.
pub(super) const TIME_UP: &str = "scoria:time-limit";
pub(super) const STACK_FULL: &str = "scoria:stack-limit";

/// How often (in operations) the wall clock is read.
const CLOCK_EVERY: u64 = 256;

#[derive(Clone, Copy)]
struct CallState {
    deadline: Instant,
    stack_base: usize,
    max_stack: usize,
    /// Operations counted here: Rhai's own count starts again inside closures called from
    /// native functions (a `sort` comparer, `map`), so it cannot pace the clock.
    ops: u64,
    next_clock_check: u64,
    tensor_bytes_left: usize,
}

thread_local! {
    static CALL: Cell<Option<CallState>> = const { Cell::new(None) };
}

/// Address of a local in the current frame: stacks grow downwards on every target scoria
/// supports, so `base - here` is the stack used since `base` was taken.
#[inline(never)]
fn stack_address() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

/// Limits of the call in progress on this thread; restores the previous state when dropped.
pub(super) struct CallGuard {
    previous: Option<CallState>,
}

impl CallGuard {
    pub(super) fn enter(limits: &HookLimits) -> CallGuard {
        let now = Instant::now();
        let state = CallState {
            deadline: now
                .checked_add(limits.time)
                .unwrap_or(now + Duration::from_secs(86_400)),
            stack_base: stack_address(),
            max_stack: limits.max_stack_bytes,
            ops: 0,
            next_clock_check: CLOCK_EVERY,
            tensor_bytes_left: limits.max_tensor_bytes,
        };
        CallGuard {
            previous: CALL.with(|c| c.replace(Some(state))),
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        CALL.with(|c| c.set(self.previous));
    }
}

/// Charges `bytes` of new tensor data to the call in progress; `Err` names the limit.
pub(super) fn charge_tensor_bytes(bytes: usize) -> Result<(), String> {
    CALL.with(|c| match c.get() {
        Some(mut s) => {
            let left = s.tensor_bytes_left.checked_sub(bytes).ok_or_else(|| {
                "tensors created in this call exceed the score hook's tensor memory limit"
                    .to_string()
            })?;
            s.tensor_bytes_left = left;
            c.set(Some(s));
            Ok(())
        }
        None => Ok(()),
    })
}

/// The engine's progress callback: stops the script when its call is out of time or stack.
fn progress(_rhai_ops: u64) -> Option<Dynamic> {
    CALL.with(|c| {
        let mut s = c.get()?;
        if s.stack_base.saturating_sub(stack_address()) > s.max_stack {
            return Some(Dynamic::from(STACK_FULL));
        }
        s.ops += 1;
        if s.ops >= s.next_clock_check {
            if Instant::now() >= s.deadline {
                return Some(Dynamic::from(TIME_UP));
            }
            s.next_clock_check = s.ops + CLOCK_EVERY;
        }
        c.set(Some(s));
        None
    })
}

/// An engine with the standard library, `limits` applied, and nothing that reaches outside
/// the process: `import` finds no module, `eval` does not parse, `sleep` fails; `print` and
/// `debug` go to the log, tagged with `file`.
pub(super) fn sandboxed_engine(limits: &HookLimits, file: &str) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new())
        .disable_symbol("eval")
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_max_expr_depths(limits.max_expr_depth.0, limits.max_expr_depth.1)
        .set_max_variables(limits.max_variables)
        .on_progress(progress);
    // `sleep` would block the thread where no progress check can stop it.
    engine.register_fn(
        "sleep",
        |_: rhai::INT| -> Result<(), Box<rhai::EvalAltResult>> {
            Err(super::failure::failure(
                "sleep is not available in score hooks",
            ))
        },
    );
    engine.register_fn(
        "sleep",
        |_: rhai::FLOAT| -> Result<(), Box<rhai::EvalAltResult>> {
            Err(super::failure::failure(
                "sleep is not available in score hooks",
            ))
        },
    );
    let tag = file.to_string();
    engine.on_print(move |s| tracing::info!(hook = %tag, "{s}"));
    let tag = file.to_string();
    engine.on_debug(move |s, _, pos| match pos.line() {
        Some(line) => tracing::debug!(hook = %tag, line, "{s}"),
        None => tracing::debug!(hook = %tag, "{s}"),
    });
    engine
}
