//! The one classification of failures that every layer reports and every front end maps.

use std::fmt;

/// What kind of failure an error is, independent of any protocol. The serving core's errors
/// (models, batching, hooks, engines) each say their kind through a `kind()` method; each
/// front end maps a kind to its own status once (an HTTP code, a gRPC code, an MQTT error
/// result), so the same failure is answered alike on every route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No such model, version, input or route.
    NotFound,
    /// The request is malformed or does not fit the model (the client's fault).
    InvalidInput,
    /// The request is larger than a limit allows.
    TooLarge,
    /// The model cannot take the request now (loading, unloaded, failed, a full queue):
    /// worth retrying later.
    Unavailable,
    /// No valid credentials.
    Unauthenticated,
    /// Valid credentials whose role does not allow the call.
    PermissionDenied,
    /// The server, an engine or a score hook failed.
    Internal,
}

impl ErrorKind {
    /// A stable snake_case name (`"invalid_input"`), for machine-readable error payloads.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::Internal => "internal",
        }
    }

    /// The HTTP status code of this kind (also the status of IoT Hub direct method answers).
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::NotFound => 404,
            ErrorKind::InvalidInput => 400,
            ErrorKind::TooLarge => 413,
            ErrorKind::Unavailable => 503,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::Internal => 500,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
