//! API keys on the HTTP routes: `Authorization: Bearer <key>` on every route but health and
//! metrics. The key store itself (key files, roles, constant-time checks) is
//! [`crate::auth`], which the gRPC front end shares.

pub use crate::auth::{ApiKeys, AuthError, Role, MIN_KEY_LEN};

use super::ApiError;
use axum::extract::Request;
use axum::http::{header, Method};

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

/// Lets open routes through, and otherwise requires a key whose role allows the route: the
/// error to answer instead is 401 with `WWW-Authenticate: Bearer` without a valid key, 403
/// for a `score` key on an admin route. The caller's [`Role`] is added to the request's
/// extensions.
pub fn authorize(keys: &ApiKeys, req: &mut Request) -> Result<(), ApiError> {
    let Some(required) = required_role(req.method(), req.uri().path()) else {
        return Ok(());
    };
    match keys.check(req.headers().get(header::AUTHORIZATION)) {
        Ok(role) if role.allows(required) => {
            req.extensions_mut().insert(role);
            Ok(())
        }
        Ok(role) => {
            tracing::debug!(
                "403 for {} {}: a {role} key on an {required} route",
                req.method(),
                req.uri().path()
            );
            Err(ApiError::Forbidden(format!(
                "this route needs an {required} key; the key given has role {role}"
            )))
        }
        Err(e) => {
            tracing::debug!("401 for {} {}: {e}", req.method(), req.uri().path());
            Err(ApiError::Unauthorized(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests;
