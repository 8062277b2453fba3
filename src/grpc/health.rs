//! `grpc.health.v1.Health`: what Kubernetes gRPC probes ask. The server (`""`) and the
//! inference service are SERVING when `GET /v2/health/ready` would say ready (every model
//! loaded, or with `--strict-readiness=false` finished loading); other service names are NOT_FOUND, as the protocol asks.

use super::proto::health::health_check_response::ServingStatus;
use super::proto::health::health_server::Health;
use super::proto::health::{HealthCheckRequest, HealthCheckResponse};
use super::proto::inference::grpc_inference_service_server::SERVICE_NAME as INFERENCE;
use super::service::Shared;
use std::sync::Arc;
use std::time::Instant;
use tonic::{Code, Request, Response, Status};

pub struct HealthService {
    pub shared: Arc<Shared>,
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let started = Instant::now();
        let service = request.into_inner().service;
        let result = if service.is_empty() || service == INFERENCE {
            let status = if self.shared.is_ready() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            Ok(HealthCheckResponse {
                status: status as i32,
            })
        } else {
            Err(Status::not_found(format!("unknown service '{service}'")))
        };
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.shared
            .record("Health/Check", started, code, None, 0, 0);
        result.map(Response::new)
    }
}
