use super::*;
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use std::path::Path;
use std::sync::Arc;
use tower::ServiceExt;

const PRIMARY: &str = "primary-key-0123456789abcdef";
const SECONDARY: &str = "secondary-key-0123456789abcdef";
const SCORER: &str = "score-only-key-0123456789abcdef";

fn keys() -> ApiKeys {
    let text = format!("# test keys\n{PRIMARY}\n\n{SECONDARY} admin\n{SCORER} score\n");
    ApiKeys::parse(&text, Path::new("keys.txt")).unwrap()
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

/// [`authorize`] as a middleware of its own, as scoria's router applies it (in `front`).
async fn require_key(
    axum::extract::State(keys): axum::extract::State<Arc<ApiKeys>>,
    mut req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match authorize(&keys, &mut req) {
        Ok(()) => next.run(req).await,
        Err(refused) => refused.into_response(),
    }
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
