//! `GET /swagger.json`: the OpenAPI 3 document of the HTTP API, generated from the handlers'
//! `#[utoipa::path]` annotations and the v2 wire types ([`super::v2::wire`]), the same types
//! the codec reads and writes.
//!
//! Model routes exist with and without `/versions/{version}`; the handlers are annotated
//! with the unversioned path and [`VersionedRoutes`] adds each versioned twin.

use super::v2::wire::{
    ErrorBody, InferenceRequest, InferenceResponse, ModelMetadata, RequestInput, RequestOutput,
    ResponseOutput, TensorMetadata,
};
use super::{json_response, score, v2};
use axum::http::StatusCode;
use axum::response::Response;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, Required};
use utoipa::{Modify, OpenApi};

/// The generated document.
#[derive(OpenApi)]
#[openapi(
    info(title = "scoria", description = "Open Inference Protocol v2 (KServe/Triton) and Azure-ML-style scoring."),
    paths(
        score::healthy,
        score::score_default,
        score::score_model,
        super::metrics::metrics,
        v2::health::live,
        v2::health::ready,
        v2::health::model_ready,
        v2::metadata::server,
        v2::metadata::model,
        v2::infer::infer,
        v2::triton::config,
        v2::triton::stats,
        v2::triton::all_stats,
        v2::repository::index,
        v2::repository::load,
        v2::repository::unload,
        swagger,
    ),
    components(schemas(ErrorBody, InferenceRequest, InferenceResponse, RequestInput, RequestOutput, ResponseOutput, ModelMetadata, TensorMetadata)),
    modifiers(&VersionedRoutes, &BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// Adds `/v2/models/{model}/versions/{version}/...` for every `/v2/models/{model}/...` path.
struct VersionedRoutes;

impl Modify for VersionedRoutes {
    fn modify(&self, doc: &mut Document) {
        const PREFIX: &str = "/v2/models/{model}";
        let version: Parameter = ParameterBuilder::new()
            .name("version")
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some("Model version (a positive integer)"))
            .schema(Some(
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String),
            ))
            .build();
        let twins: Vec<_> = doc
            .paths
            .paths
            .iter()
            .filter_map(|(path, item)| {
                let rest = path.strip_prefix(PREFIX)?;
                let mut item = item.clone();
                for op in [&mut item.get, &mut item.post].into_iter().flatten() {
                    let params = op.parameters.get_or_insert_with(Vec::new);
                    params.push(version.clone());
                    op.operation_id = op.operation_id.as_ref().map(|id| format!("{id}_version"));
                }
                Some((format!("{PREFIX}/versions/{{version}}{rest}"), item))
            })
            .collect();
        doc.paths.paths.extend(twins);
    }
}

/// Declares the `Authorization: Bearer <key>` scheme used with `--api-key-file`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `GET /swagger.json`.
#[utoipa::path(get, path = "/swagger.json", tag = "azure-ml", responses((status = 200, description = "This OpenAPI 3 document")))]
pub async fn swagger() -> Response {
    json_response(StatusCode::OK, &ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_every_route_and_versioned_twins() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/",
            "/score",
            "/models/{model}/score",
            "/v2/health/live",
            "/v2/models/{model}/infer",
            "/v2/models/{model}/versions/{version}/infer",
            "/v2/models/{model}/versions/{version}/config",
            "/v2/repository/models/{model}/load",
        ] {
            assert!(paths.contains_key(p), "{p} missing from {:?}", paths.keys());
        }
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        assert!(doc["components"]["schemas"]["InferenceRequest"].is_object());
    }
}
