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

async fn call(method: &str, uri: &str, auth: Option<&str>) -> (StatusCode, Option<String>, String) {
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
