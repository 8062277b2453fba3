//! The gRPC front end's one map from the core's [`ErrorKind`] to a gRPC status code, and from
//! a status code to the `outcome` label of the request metrics.

use crate::models::ModelError;
use crate::tensor::ErrorKind;
use tonic::{Code, Status};

/// The status answered for a failure of `kind` with the one-line `message`: the one place
/// where the core's kinds become gRPC codes. Internal failures are logged as errors, the
/// others (expected answers) at debug level.
pub fn from_kind(kind: ErrorKind, message: impl Into<String>) -> Status {
    let code = match kind {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::InvalidInput => Code::InvalidArgument,
        ErrorKind::TooLarge => Code::ResourceExhausted,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Internal => Code::Internal,
    };
    let message = message.into();
    if code == Code::Internal {
        tracing::error!("gRPC {code:?}: {message}");
    } else {
        tracing::debug!("gRPC {code:?}: {message}");
    }
    Status::new(code, message)
}

/// A request the client got wrong (INVALID_ARGUMENT).
pub fn invalid(message: impl Into<String>) -> Status {
    from_kind(ErrorKind::InvalidInput, message)
}

/// A failure inside the server (INTERNAL).
pub fn internal(message: impl Into<String>) -> Status {
    from_kind(ErrorKind::Internal, message)
}

impl From<ModelError> for Status {
    fn from(e: ModelError) -> Status {
        from_kind(e.kind(), e.to_string())
    }
}

/// `success`, `client_error` or `server_error`, as the HTTP front end labels its statuses.
pub fn outcome(code: Code) -> &'static str {
    match code {
        Code::Ok => "success",
        Code::Cancelled
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::ResourceExhausted
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unauthenticated => "client_error",
        Code::Unknown
        | Code::DeadlineExceeded
        | Code::Unimplemented
        | Code::Internal
        | Code::Unavailable
        | Code::DataLoss => "server_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_code() {
        let cases = [
            (ErrorKind::NotFound, Code::NotFound),
            (ErrorKind::InvalidInput, Code::InvalidArgument),
            (ErrorKind::TooLarge, Code::ResourceExhausted),
            (ErrorKind::Unavailable, Code::Unavailable),
            (ErrorKind::Unauthenticated, Code::Unauthenticated),
            (ErrorKind::PermissionDenied, Code::PermissionDenied),
            (ErrorKind::Internal, Code::Internal),
        ];
        for (kind, code) in cases {
            let s = from_kind(kind, "why");
            assert_eq!(s.code(), code, "{kind}");
            assert_eq!(s.message(), "why");
        }
        let s = Status::from(ModelError::ModelNotFound("m".into()));
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.message(), "unknown model 'm'");
        assert_eq!(outcome(Code::Ok), "success");
        assert_eq!(outcome(Code::InvalidArgument), "client_error");
        assert_eq!(outcome(Code::Unavailable), "server_error");
    }
}
