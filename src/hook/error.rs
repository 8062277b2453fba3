//! Hook failures, and how a Rhai error becomes one.

use super::failure::HelperFailure;
use super::limits::{HookLimits, STACK_FULL, TIME_UP};
use crate::tensor::ErrorKind;
use rhai::{EvalAltResult, Position};
use std::path::PathBuf;

/// Why a hook could not be loaded or a call failed. Only [`HookError::Thrown`] is the client's
/// fault; every other kind is the hook's or the server's.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    // `cause`, not `source`: the message already says it, and a `source` would repeat it in
    // error chains.
    #[error("score hook {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("score hook {file}:{line}:{column}: {message}")]
    Compile {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// The script lacks `fn run(input)`, or `run`/`init` take the wrong parameters.
    #[error("score hook {file}: {message}")]
    Contract { file: String, message: String },
    /// `init()` failed (whatever the reason, a `throw` included): the hook cannot load.
    #[error("score hook {file}{}: init() failed: {reason}", at_line(*line))]
    Init {
        file: String,
        line: Option<usize>,
        reason: String,
    },
    /// The script rejected the request with `throw`; the message is the thrown value.
    #[error("{0}")]
    Thrown(String),
    /// A helper refused the request's data: values that do not convert to the tensor type, or
    /// a tensor the model does not take (HTTP 400).
    #[error("score hook {file}{}: {reason}", at_line(*line))]
    BadInput {
        file: String,
        line: Option<usize>,
        reason: String,
    },
    /// `model.predict` found the model unable to serve now: a full queue, a model unloading
    /// (HTTP 503, as the same condition on the v2 routes).
    #[error("score hook {file}{}: {reason}", at_line(*line))]
    Unavailable {
        file: String,
        line: Option<usize>,
        reason: String,
    },
    /// The request is larger than the script may hold (HTTP 413).
    #[error("score hook {file}: {reason}")]
    RequestTooLarge { file: String, reason: String },
    /// A runtime error in the script or in a helper it called.
    #[error("score hook {file}{}: {reason}", at_line(*line))]
    Runtime {
        file: String,
        line: Option<usize>,
        reason: String,
    },
    /// The call hit a sandbox limit (time, operations, call depth, stack, data size).
    #[error("score hook {file}{}: {reason}", at_line(*line))]
    Limit {
        file: String,
        line: Option<usize>,
        reason: String,
    },
    /// `run` returned something with no JSON form.
    #[error("score hook {file}: run() returned a value that is not JSON: {reason}")]
    NotJson { file: String, reason: String },
}

impl HookError {
    /// A script's `throw` and data a helper could not take are the request's fault
    /// ([`ErrorKind::InvalidInput`]); a request too large for the script is
    /// [`ErrorKind::TooLarge`]; a model that cannot take `model.predict` now is
    /// [`ErrorKind::Unavailable`]; every other failure is the hook's or the server's.
    pub fn kind(&self) -> ErrorKind {
        match self {
            HookError::Thrown(_) | HookError::BadInput { .. } => ErrorKind::InvalidInput,
            HookError::RequestTooLarge { .. } => ErrorKind::TooLarge,
            HookError::Unavailable { .. } => ErrorKind::Unavailable,
            HookError::Read { .. }
            | HookError::Compile { .. }
            | HookError::Contract { .. }
            | HookError::Init { .. }
            | HookError::Runtime { .. }
            | HookError::Limit { .. }
            | HookError::NotJson { .. } => ErrorKind::Internal,
        }
    }

    /// True when the request was rejected ([`HookError::kind`] is invalid input).
    pub fn is_client_error(&self) -> bool {
        self.kind() == ErrorKind::InvalidInput
    }
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" line {l}")).unwrap_or_default()
}

/// Maps the error of a call to `file`'s script. `in_init` turns every failure into
/// [`HookError::Init`].
pub(super) fn from_eval(
    file: &str,
    limits: &HookLimits,
    err: EvalAltResult,
    in_init: bool,
) -> HookError {
    // The innermost error is the real one; callers wrap it once per script function.
    let mut err = err;
    let mut line = None;
    let mut via = Vec::new();
    loop {
        line = err.position().line().or(line);
        match err {
            EvalAltResult::ErrorInFunctionCall(name, _, inner, _) => {
                via.push(name);
                err = *inner;
            }
            EvalAltResult::ErrorInModule(_, inner, _) => err = *inner,
            _ => break,
        }
    }
    let limit = |reason: String| (true, reason);
    let mut fault = ErrorKind::Internal;
    let (is_limit, mut reason) = match err {
        EvalAltResult::ErrorRuntime(value, _) => {
            if let Some(h) = value.read_lock::<HelperFailure>() {
                fault = h.1;
                (false, h.0.clone())
            } else {
                let message = thrown_message(&value);
                if !in_init {
                    return HookError::Thrown(message);
                }
                (false, format!("threw {message:?}"))
            }
        }
        EvalAltResult::ErrorTerminated(token, _) if token.to_string() == TIME_UP => limit(format!(
            "exceeded the time limit of {}",
            humantime::format_duration(limits.time)
        )),
        EvalAltResult::ErrorTerminated(token, _) if token.to_string() == STACK_FULL => {
            limit(format!(
                "exceeded the stack limit of {} KiB (recursion too deep)",
                limits.max_stack_bytes / 1024
            ))
        }
        EvalAltResult::ErrorTooManyOperations(_) => limit(format!(
            "exceeded the limit of {} operations",
            limits.max_operations
        )),
        EvalAltResult::ErrorStackOverflow(_) => limit(format!(
            "function calls nested deeper than the limit of {} levels",
            limits.max_call_levels
        )),
        EvalAltResult::ErrorDataTooLarge(what, _) => limit(match what.as_str() {
            "Length of string" => format!(
                "a string grew past the limit of {} bytes",
                limits.max_string_size
            ),
            "Size of object map" => format!(
                "an object map grew past the limit of {} properties",
                limits.max_map_size
            ),
            _ => format!(
                "an array grew past the limit of {} elements",
                limits.max_array_size
            ),
        }),
        EvalAltResult::ErrorTooManyVariables(_) => limit(format!(
            "more than the limit of {} variables",
            limits.max_variables
        )),
        EvalAltResult::ErrorModuleNotFound(path, _) => (
            false,
            format!("import {path:?} refused: score hooks cannot load modules or files"),
        ),
        mut other => {
            let _ = other.take_position();
            (false, other.to_string())
        }
    };
    if let Some(name) = via.last().filter(|n| !matches!(n.as_str(), "run" | "init")) {
        reason = format!("in {name}(): {reason}");
    }
    let file = file.to_string();
    match (in_init, is_limit, fault) {
        (true, _, _) => HookError::Init { file, line, reason },
        (false, true, _) => HookError::Limit { file, line, reason },
        (false, false, ErrorKind::Unavailable) => HookError::Unavailable { file, line, reason },
        (false, false, ErrorKind::Internal) => HookError::Runtime { file, line, reason },
        (false, false, _) => HookError::BadInput { file, line, reason },
    }
}

/// The message of `throw value`: a string as is, anything else as Rhai prints it.
fn thrown_message(value: &rhai::Dynamic) -> String {
    match value.read_lock::<rhai::ImmutableString>() {
        Some(s) => s.to_string(),
        None if value.is_unit() => "request rejected by the score hook".to_string(),
        None => value.to_string(),
    }
}

/// A compile error of `file`.
pub(super) fn compile(file: &str, err: &rhai::ParseError) -> HookError {
    let pos: Position = err.position();
    HookError::Compile {
        file: file.to_string(),
        line: pos.line().unwrap_or(0),
        column: pos.position().unwrap_or(0),
        message: err.0.to_string(),
    }
}
