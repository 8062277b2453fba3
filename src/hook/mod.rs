//! Score hooks: a model's optional Rhai script with Azure ML's `init()` / `run(input)` contract.
//!
//! `init()` (optional) runs once at load; `run(input)` gets the decoded JSON request and
//! returns a JSON-able value, calling the model through the global `model` object and the
//! helpers of [`api`]. If `init` returns a value other than `()`, scripts read it as the
//! global `state`. Top-level statements run before every call, so keep them to `const`s
//! (functions read them as `global::NAME`).
//!
//! Scripts are sandboxed: no files, modules, network, processes, `eval` or `sleep`, and every
//! call runs within [`HookLimits`]. A failed call leaves the hook usable for the next one.
//! One compiled [`Hook`] serves any number of threads at once: calls share the compiled
//! script and each gets its own scope.

mod api;
pub(crate) mod convert;
mod error;
mod failure;
mod limits;
mod predictor;
#[cfg(test)]
mod predictor_tests;
#[cfg(test)]
mod sandbox_tests;
pub(crate) mod tensors;
#[cfg(test)]
mod tests;

pub use error::HookError;
pub use limits::{HookLimits, HOOK_THREAD_STACK_BYTES};
pub use predictor::{PredictError, Predictor};

use limits::CallGuard;
use rhai::{Dynamic, Engine, Scope, AST};
use std::path::{Component, Path};
use std::sync::Arc;

/// Largest score hook script read: a megabyte of Rhai is far past any real hook.
const MAX_SCRIPT_BYTES: u64 = 1 << 20;

/// File name of a model's class labels, one per line, inside the model folder.
pub const LABELS_FILE: &str = "labels.txt";

/// A compiled score hook bound to one model (a [`Predictor`]).
pub struct Hook {
    engine: Engine,
    ast: AST,
    /// `<model folder>/<file>`, naming the hook in errors and logs.
    file: String,
    limits: HookLimits,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook").field("file", &self.file).finish()
    }
}

impl Hook {
    /// Compiles the script at `path` and runs its optional `fn init()` once. `model` is what
    /// the script's `model.predict(...)` runs; `labels` are the model folder's labels.txt lines.
    pub fn load(
        path: &Path,
        model: Arc<dyn Predictor>,
        labels: Option<Arc<Vec<String>>>,
    ) -> Result<Hook, HookError> {
        Hook::load_with_limits(path, model, labels, HookLimits::default())
    }

    /// [`Hook::load`] with limits other than the defaults.
    pub fn load_with_limits(
        path: &Path,
        model: Arc<dyn Predictor>,
        labels: Option<Arc<Vec<String>>>,
        limits: HookLimits,
    ) -> Result<Hook, HookError> {
        let file = display_name(path);
        let mut engine = limits::sandboxed_engine(&limits, &file);
        api::register(&mut engine, model, labels, &limits);
        let (ast, has_init) = compile(&engine, path, &file)?;

        // The top-level statements run here too, so a broken one fails the load.
        let state = {
            let _call = CallGuard::enter(&limits);
            if has_init {
                engine.call_fn::<Dynamic>(&mut Scope::new(), &ast, "init", ())
            } else {
                engine.run_ast(&ast).map(|()| Dynamic::UNIT)
            }
        }
        .map_err(|e| error::from_eval(&file, &limits, *e, true))?;
        if !state.is_unit() {
            let mut globals = rhai::Module::new();
            globals.set_var("state", state);
            engine.register_global_module(globals.into());
        }
        Ok(Hook {
            engine,
            ast,
            file,
            limits,
        })
    }

    /// Runs `fn run(input)` on the decoded JSON request, blocking the calling thread, within
    /// the per-call limits; returns the JSON-able result. The thread needs a stack of at least
    /// [`HookLimits::max_stack_bytes`] plus ~1 MiB (tokio's blocking threads qualify).
    pub fn run(&self, input: serde_json::Value) -> Result<serde_json::Value, HookError> {
        self.check_request(&input)?;
        let arg = convert::json_to_dynamic(input);
        let result = {
            let _call = CallGuard::enter(&self.limits);
            self.engine
                .call_fn::<Dynamic>(&mut Scope::new(), &self.ast, "run", (arg,))
        };
        let value = result.map_err(|e| error::from_eval(&self.file, &self.limits, *e, false))?;
        convert::to_json(&value).map_err(|reason| HookError::NotJson {
            file: self.file.clone(),
            reason,
        })
    }

    /// `<model folder>/<file>`, as errors and logs name the hook.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// A request larger than the script could hold fails before the script starts.
    fn check_request(&self, input: &serde_json::Value) -> Result<(), HookError> {
        let (arrays, maps, strings) = convert::json_sizes(input);
        let l = &self.limits;
        let over = [
            (arrays, l.max_array_size, "array elements"),
            (maps, l.max_map_size, "object properties"),
            (strings, l.max_string_size, "bytes of strings"),
        ]
        .into_iter()
        .find(|(n, max, _)| n > max);
        match over {
            Some((n, max, what)) => Err(HookError::RequestTooLarge {
                file: self.file.clone(),
                reason: format!("the request has {n} {what}, over the limit of {max}"),
            }),
            None => Ok(()),
        }
    }
}

/// Checks, without a model, that the script at `path` compiles and keeps the contract
/// (`fn run(input)`, optional `fn init()`); runs nothing. For registration, before the script
/// is installed.
pub fn check_script(path: &Path) -> Result<(), HookError> {
    let file = display_name(path);
    let engine = limits::sandboxed_engine(&HookLimits::default(), &file);
    compile(&engine, path, &file).map(|_| ())
}

/// Reads and compiles the script at `path` (named `file` in errors) and checks its functions'
/// signatures: the AST and whether it has `fn init()`.
fn compile(engine: &Engine, path: &Path, file: &str) -> Result<(AST, bool), HookError> {
    let read_err = |cause| HookError::Read {
        path: path.to_path_buf(),
        cause,
    };
    let bytes = std::fs::File::open(path)
        .and_then(|f| crate::fsutil::read_bounded(f, MAX_SCRIPT_BYTES))
        .map_err(read_err)?;
    let source =
        String::from_utf8(bytes).map_err(|_| read_err(std::io::Error::other("not UTF-8 text")))?;
    let mut ast = engine
        .compile(&source)
        .map_err(|e| error::compile(file, &e))?;
    ast.set_source(file);

    let arity = |name: &str| {
        ast.iter_functions()
            .find(|f| f.name == name)
            .map(|f| f.params.len())
    };
    let bad_signature = |message: &str| HookError::Contract {
        file: file.to_string(),
        message: message.to_string(),
    };
    match arity("run") {
        Some(1) => {}
        Some(_) => {
            return Err(bad_signature(
                "`fn run` must take one parameter (the request)",
            ))
        }
        None => return Err(bad_signature("the script defines no `fn run(input)`")),
    }
    let has_init = match arity("init") {
        None => false,
        Some(0) => true,
        Some(_) => return Err(bad_signature("`fn init` must take no parameters")),
    };
    Ok((ast, has_init))
}

/// The lines of `<model_dir>/labels.txt` (trailing blank lines dropped), or `None` when the
/// file does not exist.
pub fn read_labels(model_dir: &Path) -> Result<Option<Vec<String>>, HookError> {
    let path = model_dir.join(LABELS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(cause) => return Err(HookError::Read { path, cause }),
    };
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    Ok(Some(lines))
}

/// `digits/score.rhai` for `/srv/models/digits/score.rhai`.
fn display_name(path: &Path) -> String {
    let mut parts: Vec<String> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .take(2)
        .collect();
    parts.reverse();
    parts.join("/")
}
