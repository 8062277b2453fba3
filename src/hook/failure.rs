//! Failures of the native helpers a script calls, kept apart from the script's own `throw`.

use crate::tensor::ErrorKind;
use rhai::{Dynamic, EvalAltResult, Position};

/// A helper's failure and its kind, carried as the value of a Rhai runtime error so that it
/// keeps the script position Rhai fills in, yet stays distinct from a script's own `throw`.
/// The kind says whose fault it is: the request's data ([`ErrorKind::InvalidInput`] and the
/// other client kinds), nobody's ([`ErrorKind::Unavailable`]: the model cannot take the
/// request now), or the script's or server's ([`ErrorKind::Internal`]).
#[derive(Debug, Clone)]
pub(super) struct HelperFailure(pub String, pub ErrorKind);

/// A helper's error, distinct from a script's `throw`.
pub(super) fn failure(msg: impl Into<String>) -> Box<EvalAltResult> {
    helper_error(msg, ErrorKind::Internal)
}

/// A helper's error caused by the request's data (HTTP 400 unless the script catches it).
pub(super) fn bad_input(msg: impl Into<String>) -> Box<EvalAltResult> {
    helper_error(msg, ErrorKind::InvalidInput)
}

pub(super) fn helper_error(msg: impl Into<String>, kind: ErrorKind) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(
        Dynamic::from(HelperFailure(msg.into(), kind)),
        Position::NONE,
    )
    .into()
}
