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
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    use axum::Router;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    const PRIMARY: &str = "primary-key-0123456789abcdef";
    const SECONDARY: &str = "secondary-key-0123456789abcdef";
    const SCORER: &str = "score-only-key-0123456789abcdef";

    fn keys() -> ApiKeys {
        let text = format!("# test keys\n{PRIMARY}\n\n{SECONDARY} admin\n{SCORER} score\n");
        ApiKeys::parse(&text, Path::new("keys.txt")).unwrap()
    }

    fn bearer(key: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {key}")).unwrap()
    }

    fn parse_err(text: &str) -> String {
        ApiKeys::parse(text, Path::new("k.txt"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn parses_roles_comments_and_blank_lines() {
        let k = keys();
        assert_eq!(k.len(), 3);
        assert_eq!(k.check(Some(&bearer(PRIMARY))).unwrap(), Role::Admin);
        assert_eq!(k.check(Some(&bearer(SECONDARY))).unwrap(), Role::Admin);
        assert_eq!(k.check(Some(&bearer(SCORER))).unwrap(), Role::Score);

        let k = ApiKeys::parse(
            &format!("  {SCORER}\tscore   # trailing comment\n# {PRIMARY}\n"),
            Path::new("k"),
        )
        .unwrap();
        assert_eq!(k.len(), 1);
        assert_eq!(k.check(Some(&bearer(SCORER))).unwrap(), Role::Score);
        assert!(k.check(Some(&bearer(PRIMARY))).is_err());
    }

    #[test]
    fn rejects_bad_files_without_printing_keys() {
        let e = parse_err(&format!("# c\n{PRIMARY} root\n"));
        assert_eq!(
            e,
            "k.txt:2: unknown role after the key (expected `score` or `admin`)"
        );
        let e = parse_err("short admin\n");
        assert_eq!(e, "k.txt:1: the key is shorter than 16 characters");
        let e = parse_err(&format!("{PRIMARY}\n{SECONDARY}\n{PRIMARY} score\n"));
        assert_eq!(e, "k.txt:3: duplicate key (same as line 1)");
        let e = parse_err(&format!("{PRIMARY} admin extra\n"));
        assert!(
            e.starts_with("k.txt:1: expected `KEY [score|admin]`"),
            "{e}"
        );
        let e = parse_err("key-with-ümlaut-0123456789\n");
        assert!(e.starts_with("k.txt:1: the key has characters"), "{e}");
        assert_eq!(parse_err(""), "k.txt: the API key file has no keys");
        assert_eq!(
            parse_err("# only\n\n   \n"),
            "k.txt: the API key file has no keys"
        );
        for e in [
            parse_err(&format!("{PRIMARY} root\n")),
            parse_err(&format!("{PRIMARY}\n{PRIMARY}\n")),
        ] {
            assert!(!e.contains(PRIMARY), "{e}");
        }
    }

    #[test]
    fn load_reads_a_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, format!("{PRIMARY}\n{SCORER} score\n")).unwrap();
        assert_eq!(ApiKeys::load(&path).unwrap().len(), 2);
        let missing = dir.path().join("nope");
        let e = ApiKeys::load(&missing).unwrap_err().to_string();
        assert!(e.starts_with("cannot read API key file"), "{e}");
        assert!(e.contains("nope"), "{e}");
        assert!(!format!("{:?}", ApiKeys::load(&path).unwrap()).contains(PRIMARY));
    }

    #[test]
    fn check_accepts_bearer_in_any_case_and_rejects_the_rest() {
        let k = keys();
        for h in [
            format!("bearer {PRIMARY}"),
            format!("BEARER {SECONDARY}"),
            format!("Bearer   {PRIMARY}  "),
        ] {
            let h = HeaderValue::from_str(&h).unwrap();
            assert_eq!(k.check(Some(&h)).unwrap(), Role::Admin);
        }
        assert!(matches!(k.check(None), Err(AuthError::MissingHeader)));
        assert!(matches!(
            k.check(Some(&bearer("not-a-key-0123456789abcdef"))),
            Err(AuthError::InvalidKey)
        ));
        // A prefix or extension of a real key is not that key.
        assert!(k.check(Some(&bearer(&PRIMARY[..20]))).is_err());
        assert!(k.check(Some(&bearer(&format!("{PRIMARY}x")))).is_err());
        for h in [
            format!("Basic {PRIMARY}"),
            PRIMARY.to_string(),
            "Bearer".into(),
            "Bearer    ".into(),
            String::new(),
        ] {
            let h = HeaderValue::from_str(&h).unwrap();
            assert!(
                matches!(k.check(Some(&h)), Err(AuthError::MalformedHeader)),
                "{h:?}"
            );
        }
        let opaque = HeaderValue::from_bytes(b"Bearer \xff\xfe-0123456789abcdef").unwrap();
        assert!(matches!(
            k.check(Some(&opaque)),
            Err(AuthError::MalformedHeader)
        ));
    }

    #[test]
    fn routes_are_classified() {
        let get = Method::GET;
        let post = Method::POST;
        for p in ["/", "/v2/health/live", "/v2/health/ready", "/metrics"] {
            assert_eq!(required_role(&get, p), None, "{p}");
            assert_eq!(required_role(&Method::HEAD, p), None, "{p}");
        }
        for p in [
            "/v2",
            "/v2/models/m",
            "/v2/models/m/ready",
            "/v2/models/m/config",
            "/v2/models/m/stats",
            "/v2/models/stats",
            "/v2/models/m/versions/1",
            "/v2/models/m/versions/1/ready",
            "/swagger.json",
        ] {
            assert_eq!(required_role(&get, p), Some(Role::Score), "{p}");
        }
        for p in [
            "/v2/models/m/infer",
            "/v2/models/m/versions/2/infer",
            "/score",
            "/models/digits/score",
        ] {
            assert_eq!(required_role(&post, p), Some(Role::Score), "{p}");
        }
        for p in [
            "/v2/repository/index",
            "/v2/repository/models/m/load",
            "/v2/repository/models/m/unload",
            "/v2/models/m/versions/1/unload",
            "/v2/models//infer",
            "/v2/models",
            "/models/score",
            "/unknown",
            "//v2/health/live",
            "",
        ] {
            assert_eq!(required_role(&post, p), Some(Role::Admin), "{p}");
        }
        // Only reads are open.
        assert_eq!(required_role(&post, "/"), Some(Role::Admin));
        assert_eq!(required_role(&post, "/metrics"), Some(Role::Admin));
    }

    fn app() -> Router {
        Router::new()
            .route("/", get(|| async { "Healthy" }))
            .route("/v2/health/live", get(|| async { "live" }))
            .route("/v2/health/ready", get(|| async { "ready" }))
            .route("/metrics", get(|| async { "metrics" }))
            .route("/v2/models/{m}/infer", post(|| async { "inferred" }))
            .route("/score", post(|| async { "scored" }))
            .route("/v2/repository/index", post(|| async { "index" }))
            .route(
                "/v2/repository/models/{m}/load",
                post(|req: Request| async move {
                    // The middleware hands the caller's role to handlers.
                    format!("{:?}", req.extensions().get::<Role>())
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(keys()),
                require_key,
            ))
    }

    async fn call(
        method: &str,
        uri: &str,
        auth: Option<&str>,
    ) -> (StatusCode, Option<String>, String) {
        let mut req = axum::http::Request::builder().method(method).uri(uri);
        if let Some(auth) = auth {
            req = req.header(header::AUTHORIZATION, auth);
        }
        let resp = app()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let www = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_string());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, www, String::from_utf8(body.to_vec()).unwrap())
    }

    fn error_of(body: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["error"].as_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn router_enforces_the_auth_matrix() {
        let primary = format!("Bearer {PRIMARY}");
        let secondary = format!("Bearer {SECONDARY}");
        let scorer = format!("Bearer {SCORER}");
        let wrong = "Bearer wrong-key-0123456789abcdef";

        // Open routes need no key.
        for p in ["/", "/v2/health/live", "/v2/health/ready", "/metrics"] {
            let (s, _, _) = call("GET", p, None).await;
            assert_eq!(s, StatusCode::OK, "{p}");
        }

        // No key, a wrong key, another scheme: 401 with a challenge and a reason.
        let (s, www, body) = call("POST", "/v2/models/m/infer", None).await;
        assert_eq!(
            (s, www.as_deref()),
            (StatusCode::UNAUTHORIZED, Some("Bearer"))
        );
        assert!(error_of(&body).contains("missing `Authorization: Bearer <key>`"));
        let (s, www, body) = call("POST", "/score", Some(wrong)).await;
        assert_eq!(
            (s, www.as_deref()),
            (StatusCode::UNAUTHORIZED, Some("Bearer"))
        );
        assert_eq!(error_of(&body), "invalid API key");
        assert!(!body.contains("wrong-key"));
        let (s, www, _) = call("POST", "/score", Some("Basic dXNlcjpwYXNz")).await;
        assert_eq!(
            (s, www.as_deref()),
            (StatusCode::UNAUTHORIZED, Some("Bearer"))
        );
        // Unknown routes are closed too: no 404 without a key.
        let (s, _, _) = call("GET", "/nothing-here", None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);

        // Primary and secondary keys both work, everywhere.
        for key in [&primary, &secondary] {
            let (s, _, body) = call("POST", "/v2/models/m/infer", Some(key)).await;
            assert_eq!((s, body.as_str()), (StatusCode::OK, "inferred"));
            let (s, _, body) = call("POST", "/v2/repository/index", Some(key)).await;
            assert_eq!((s, body.as_str()), (StatusCode::OK, "index"));
        }
        let (s, _, body) = call("POST", "/v2/repository/models/m/load", Some(&primary)).await;
        assert_eq!((s, body.as_str()), (StatusCode::OK, "Some(Admin)"));
        // With a valid key, unknown routes reach the router's own 404.
        let (s, _, _) = call("GET", "/nothing-here", Some(&primary)).await;
        assert_eq!(s, StatusCode::NOT_FOUND);

        // A score key scores, but is forbidden on admin routes.
        let (s, _, body) = call("POST", "/score", Some(&scorer)).await;
        assert_eq!((s, body.as_str()), (StatusCode::OK, "scored"));
        let (s, www, body) = call("POST", "/v2/repository/models/m/load", Some(&scorer)).await;
        assert_eq!((s, www), (StatusCode::FORBIDDEN, None));
        assert!(error_of(&body).contains("needs an admin key"), "{body}");
        assert!(!body.contains(SCORER));

        // Open routes still work with any header, even a wrong one.
        let (s, _, _) = call("GET", "/metrics", Some(wrong)).await;
        assert_eq!(s, StatusCode::OK);
    }
}
