//! API keys and roles: `Authorization: Bearer <key>` on every route but health and metrics.
//!
//! Keys come from a key file, one per line, optionally followed by a role:
//! ```text
//! # comments and blank lines are ignored
//! 3f9c...e1 admin     # everything, including model repository load/unload
//! 77ab...0c score     # inference, scoring, metadata, stats
//! 5d21...9a           # no role means admin
//! ```
//! Invariants: a key is never logged, echoed or printed in an error; a presented key is
//! compared against every key in constant time, over SHA-256 digests so that neither the
//! content nor the length of a stored key leaks through timing.

use super::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

/// Shortest key accepted from a key file.
pub const MIN_KEY_LEN: usize = 16;

/// What a key may do. `Admin` includes everything `Score` may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Inference, scoring, model metadata and statistics.
    Score,
    /// Everything, including model repository index, load and unload.
    Admin,
}

impl Role {
    /// Parses a role as written in a key file or on the command line: `score` or `admin`.
    pub fn from_name(name: &str) -> Option<Role> {
        match name {
            "score" => Some(Role::Score),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The role's name as written in a key file.
    pub fn name(self) -> &'static str {
        match self {
            Role::Score => "score",
            Role::Admin => "admin",
        }
    }

    /// True when a key of this role may use a route that requires `required`.
    pub fn allows(self, required: Role) -> bool {
        self >= required
    }

    fn to_bits(self) -> u8 {
        match self {
            Role::Score => 1,
            Role::Admin => 2,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A key file that cannot be used, or a request that does not authenticate.
/// No variant carries or prints a key.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read API key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A bad line in a key file (line numbers start at 1).
    #[error("{path}:{line}: {reason}")]
    Invalid {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path}: the API key file has no keys")]
    NoKeys { path: PathBuf },
    /// The request has no `Authorization` header.
    #[error("missing `Authorization: Bearer <key>` header")]
    MissingHeader,
    /// The `Authorization` header is not `Bearer <key>` (e.g. `Basic ...`).
    #[error("malformed Authorization header: expected `Authorization: Bearer <key>`")]
    MalformedHeader,
    /// The bearer token matches no key.
    #[error("invalid API key")]
    InvalidKey,
}

/// One stored key: only its digest is kept.
struct Entry {
    digest: [u8; 32],
    role: Role,
}

/// The API keys the server accepts, loaded from a key file.
pub struct ApiKeys {
    entries: Vec<Entry>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys")
            .field("keys", &self.entries.len())
            .finish()
    }
}

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

impl ApiKeys {
    /// Reads and validates a key file. Warns when the file is readable by group or others.
    pub fn load(path: &Path) -> Result<ApiKeys, AuthError> {
        let io_err = |source| AuthError::Io {
            path: path.to_path_buf(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(io_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(io_err)?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "API key file {} is accessible by group or others (mode {:04o}); \
                     restrict it with `chmod 600`",
                    path.display(),
                    mode & 0o7777
                );
            }
        }
        Self::parse(&text, path)
    }

    /// Parses key file text; `path` only names the file in errors.
    fn parse(text: &str, path: &Path) -> Result<ApiKeys, AuthError> {
        let invalid = |line: usize, reason: String| AuthError::Invalid {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let mut entries = Vec::new();
        let mut seen: HashMap<[u8; 32], usize> = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            // A field starting with '#' begins a comment that runs to the end of the line.
            let fields: Vec<&str> = raw
                .split_whitespace()
                .take_while(|f| !f.starts_with('#'))
                .collect();
            let (key, role) = match fields.as_slice() {
                [] => continue,
                [key] => (*key, Role::Admin),
                [key, role] => match Role::from_name(role) {
                    Some(role) => (*key, role),
                    None => {
                        return Err(invalid(
                            line,
                            "unknown role after the key (expected `score` or `admin`)".into(),
                        ))
                    }
                },
                _ => {
                    return Err(invalid(
                        line,
                        format!(
                            "expected `KEY [score|admin]`, found {} fields",
                            fields.len()
                        ),
                    ))
                }
            };
            if !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid(
                    line,
                    "the key has characters that cannot be sent in an HTTP header \
                     (use printable ASCII)"
                        .into(),
                ));
            }
            if key.len() < MIN_KEY_LEN {
                return Err(invalid(
                    line,
                    format!("the key is shorter than {MIN_KEY_LEN} characters"),
                ));
            }
            let digest = digest(key.as_bytes());
            if let Some(first) = seen.insert(digest, line) {
                return Err(invalid(
                    line,
                    format!("duplicate key (same as line {first})"),
                ));
            }
            entries.push(Entry { digest, role });
        }
        if entries.is_empty() {
            return Err(AuthError::NoKeys {
                path: path.to_path_buf(),
            });
        }
        Ok(ApiKeys { entries })
    }

    /// Number of keys loaded (at least one).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: a loaded key file has at least one key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Authenticates an `Authorization` header value: `Bearer <key>` (scheme in any case).
    /// The key is compared against every stored key, in constant time.
    pub fn check(&self, header: Option<&HeaderValue>) -> Result<Role, AuthError> {
        let header = header.ok_or(AuthError::MissingHeader)?;
        let value = header.to_str().map_err(|_| AuthError::MalformedHeader)?;
        let value = value.trim();
        let (scheme, token) = value
            .split_once(|c: char| c.is_ascii_whitespace())
            .ok_or(AuthError::MalformedHeader)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(AuthError::MalformedHeader);
        }
        let presented = digest(token.as_bytes());
        let mut found = Choice::from(0);
        let mut role_bits = 0u8;
        for entry in &self.entries {
            let eq = entry.digest[..].ct_eq(&presented[..]);
            role_bits = u8::conditional_select(&role_bits, &entry.role.to_bits(), eq);
            found |= eq;
        }
        if !bool::from(found) {
            return Err(AuthError::InvalidKey);
        }
        match role_bits {
            1 => Ok(Role::Score),
            2 => Ok(Role::Admin),
            _ => unreachable!("a matched key always has a role; this is a bug"),
        }
    }
}

/// The role a request needs: `None` for the open routes (liveness, readiness, metrics),
/// `Some(Score)` for inference, scoring, metadata and statistics, and `Some(Admin)` for the
/// model repository and anything not listed here (closed by default: a new route that a
/// `score` key should reach must be added here).
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    let Some(rest) = path.strip_prefix('/') else {
        return Some(Role::Admin);
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let read = *method == Method::GET || *method == Method::HEAD;
    match segments.as_slice() {
        [""] | ["v2", "health", "live" | "ready"] | ["metrics"] if read => None,
        // The studio's page and files (not its data: /ui/api/* needs a key).
        ["ui"] | ["ui", ""] | ["ui", "assets", _] if read => None,
        ["ui", "api", ..] if read => Some(Role::Score),
        ["v2"] | ["score"] | ["swagger.json"] => Some(Role::Score),
        ["models", m, "score"] if !m.is_empty() => Some(Role::Score),
        ["v2", "models", model_route @ ..] if is_model_route(model_route) => Some(Role::Score),
        _ => Some(Role::Admin),
    }
}

/// The segments after `/v2/models/`: `stats`, `{m}[/versions/{v}][/ready|infer|config|stats]`.
fn is_model_route(segments: &[&str]) -> bool {
    let leaf = |s: &&str| matches!(*s, "ready" | "infer" | "config" | "stats");
    match segments {
        ["stats"] => true,
        [m, rest @ ..] if !m.is_empty() => match rest {
            [] => true,
            [op] => leaf(op),
            ["versions", v] => !v.is_empty(),
            ["versions", v, op] => !v.is_empty() && leaf(op),
            _ => false,
        },
        _ => false,
    }
}

/// Axum middleware: lets open routes through, and otherwise requires a key whose role
/// allows the route (401 with `WWW-Authenticate: Bearer` without a valid key, 403 for a
/// `score` key on an admin route). The caller's [`Role`] is added to the request's
/// extensions. Apply with `axum::middleware::from_fn_with_state(keys, require_key)`.
pub async fn require_key(
    State(keys): State<Arc<ApiKeys>>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(required) = required_role(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    match keys.check(req.headers().get(header::AUTHORIZATION)) {
        Ok(role) if role.allows(required) => {
            req.extensions_mut().insert(role);
            next.run(req).await
        }
        Ok(role) => {
            tracing::debug!(
                "403 for {} {}: a {role} key on an {required} route",
                req.method(),
                req.uri().path()
            );
            ApiError::Forbidden(format!(
                "this route needs an {required} key; the key given has role {role}"
            ))
            .into_response()
        }
        Err(e) => {
            tracing::debug!("401 for {} {}: {e}", req.method(), req.uri().path());
            ApiError::Unauthorized(e.to_string()).into_response()
        }
    }
}

#[cfg(test)]
mod tests;
