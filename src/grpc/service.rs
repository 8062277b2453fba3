//! `inference.GRPCInferenceService`: each call decodes its message, asks the serving core and
//! encodes the answer, as the HTTP routes do; every call is recorded in the metrics with a
//! `grpc/<Method>` route.

use super::codec;
use super::proto::inference as pb;
use super::proto::inference::grpc_inference_service_server::GrpcInferenceService;
use super::status::{self, internal, invalid};
use super::stream;
use super::triton;
use crate::models::stats::Timings;
use crate::models::{IndexState, InflightLimit, LoadedVersion, ModelManager, VersionState};
use crate::telemetry::{Metrics, RequestRecord};
use crate::tensor::ErrorKind;
use prost::Message;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;
use tonic::{Code, Request, Response, Status, Streaming};

/// Requests larger than this are decoded, and responses with more output elements than
/// [`OFFLOAD_ELEMENTS`] encoded, on a blocking thread, as over HTTP: converting megabytes
/// takes milliseconds that must not stall the executor's other calls.
const OFFLOAD_BYTES: usize = 1 << 20;
const OFFLOAD_ELEMENTS: usize = 16 << 10;

/// Protocol extensions this server implements (as `GET /v2` lists them).
const EXTENSIONS: &[&str] = &[
    "binary_tensor_data",
    "model_configuration",
    "statistics",
    "model_repository",
];

/// What every call can reach.
pub struct Shared {
    pub models: Arc<ModelManager>,
    pub metrics: Arc<Metrics>,
    /// Turns true when the server starts draining: streams stop taking requests.
    pub stopping: watch::Receiver<bool>,
    /// Readiness needs every model loaded (see [`super::GrpcConfig::strict_readiness`]).
    pub strict_readiness: bool,
    /// `--max-inflight`, which each request of a stream passes (unary calls pass it in the
    /// guard).
    pub inflight: Arc<InflightLimit>,
}

/// The model version that served a call, and where its time went.
pub struct ServedBy {
    pub model: String,
    pub version: String,
    pub timings: Option<Timings>,
}

impl Shared {
    /// Ready as `GET /v2/health/ready` says.
    pub fn is_ready(&self) -> bool {
        self.models
            .not_ready_reason(self.strict_readiness)
            .is_none()
    }

    /// Records one call (or one request of a stream) in the metrics.
    pub fn record(
        &self,
        method: &str,
        started: Instant,
        code: Code,
        served: Option<&ServedBy>,
        request_bytes: usize,
        response_bytes: usize,
    ) {
        let route = format!("grpc/{method}");
        self.metrics.record(&RequestRecord {
            model: served.map_or("", |s| &s.model),
            version: served.map_or("", |s| &s.version),
            route: &route,
            outcome: status::outcome(code),
            total: started.elapsed(),
            timings: served.and_then(|s| s.timings),
            request_bytes: request_bytes as u64,
            response_bytes: response_bytes as u64,
        });
    }

    /// Runs one inference request: the version it names, its tensors through the core, the
    /// outputs back. The [`ServedBy`] is there once the version is known, error or not.
    pub async fn infer(
        &self,
        mut req: pb::ModelInferRequest,
        request_bytes: usize,
    ) -> (Result<pb::ModelInferResponse, Status>, Option<ServedBy>) {
        let _in_flight = self.metrics.in_flight();
        let loaded = match self
            .models
            .get(&req.model_name, version(&req.model_version))
        {
            Ok(loaded) => loaded,
            Err(e) => return (Err(e.into()), None),
        };
        let mut served = ServedBy {
            model: loaded.name().to_string(),
            version: loaded.version().to_string(),
            timings: None,
        };
        let id = std::mem::take(&mut req.id);
        let result = run(&loaded, req, request_bytes, id, &mut served).await;
        (result, Some(served))
    }
}

async fn run(
    loaded: &Arc<LoadedVersion>,
    mut req: pb::ModelInferRequest,
    request_bytes: usize,
    id: String,
    served: &mut ServedBy,
) -> Result<pb::ModelInferResponse, Status> {
    let decoded = if request_bytes > OFFLOAD_BYTES {
        off_executor(move || codec::decode_request(&mut req).map_err(invalid)).await?
    } else {
        codec::decode_request(&mut req).map_err(invalid)?
    };
    let inference = loaded
        .infer_with(decoded.inputs, decoded.outputs, decoded.options)
        .await?;
    served.timings = Some(inference.timings);
    let elements: usize = inference
        .outputs
        .iter()
        .map(|o| o.tensor.data().len())
        .sum();
    let (name, version) = (served.model.clone(), served.version.clone());
    if elements > OFFLOAD_ELEMENTS {
        let outputs = inference.outputs;
        off_executor(move || Ok(codec::encode_response(&name, &version, id, &outputs))).await
    } else {
        Ok(codec::encode_response(
            &name,
            &version,
            id,
            &inference.outputs,
        ))
    }
}

/// Runs `work` on a blocking-pool thread.
async fn off_executor<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| internal(format!("codec task failed: {e}")))?
}

/// A request's version field: empty means the latest ready one.
fn version(v: &str) -> Option<&str> {
    (!v.is_empty()).then_some(v)
}

/// The service: [`Shared`] state behind the generated trait.
pub struct Inference {
    pub shared: Arc<Shared>,
}

impl Inference {
    /// Answers a call whose work is `f`, and records it.
    fn answer<Req: Message, T: Message>(
        &self,
        method: &str,
        request: Request<Req>,
        f: impl FnOnce(&Shared, Req) -> Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let request_bytes = request.get_ref().encoded_len();
        let result = f(&self.shared, request.into_inner());
        self.finish(method, started, request_bytes, result)
    }

    fn finish<T: Message>(
        &self,
        method: &str,
        started: Instant,
        request_bytes: usize,
        result: Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        let (code, response_bytes) = match &result {
            Ok(r) => (Code::Ok, r.encoded_len()),
            Err(s) => (s.code(), 0),
        };
        self.shared
            .record(method, started, code, None, request_bytes, response_bytes);
        result.map(Response::new)
    }
}

/// The answer to the calls scoria does not implement.
fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("scoria does not implement {what}"))
}

#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(
        &self,
        request: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        self.answer("ServerLive", request, |_, _| {
            Ok(pb::ServerLiveResponse { live: true })
        })
    }

    async fn server_ready(
        &self,
        request: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        self.answer("ServerReady", request, |s, _| {
            Ok(pb::ServerReadyResponse {
                ready: s.is_ready(),
            })
        })
    }

    /// Ready when the model (version) can serve; not ready, rather than an error, when it is
    /// unknown or cannot serve (as Triton answers).
    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        self.answer("ModelReady", request, |s, r| {
            match s.models.get(&r.name, version(&r.version)) {
                Ok(_) => Ok(pb::ModelReadyResponse { ready: true }),
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Unavailable) => {
                    Ok(pb::ModelReadyResponse { ready: false })
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    async fn server_metadata(
        &self,
        request: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        self.answer("ServerMetadata", request, |_, _| {
            Ok(pb::ServerMetadataResponse {
                name: "scoria".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
            })
        })
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        self.answer("ModelMetadata", request, |s, r| {
            let loaded = s.models.get(&r.name, version(&r.version))?;
            let status = s.models.status(&r.name)?;
            Ok(pb::ModelMetadataResponse {
                name: loaded.name().to_string(),
                versions: status
                    .versions
                    .iter()
                    .filter(|(_, s)| matches!(s, VersionState::Ready(_)))
                    .map(|(v, _)| v.to_string())
                    .collect(),
                platform: triton::PLATFORM.into(),
                inputs: loaded
                    .inputs()
                    .iter()
                    .map(triton::tensor_metadata)
                    .collect(),
                outputs: loaded
                    .outputs()
                    .iter()
                    .map(triton::tensor_metadata)
                    .collect(),
            })
        })
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let started = Instant::now();
        let request_bytes = request.get_ref().encoded_len();
        let (result, served) = self.shared.infer(request.into_inner(), request_bytes).await;
        let (code, response_bytes) = match &result {
            Ok(r) => (Code::Ok, r.encoded_len()),
            Err(s) => (s.code(), 0),
        };
        self.shared.record(
            "ModelInfer",
            started,
            code,
            served.as_ref(),
            request_bytes,
            response_bytes,
        );
        result.map(Response::new)
    }

    type ModelStreamInferStream = stream::Responses;

    async fn model_stream_infer(
        &self,
        request: Request<Streaming<pb::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        Ok(Response::new(stream::start(
            Arc::clone(&self.shared),
            request.into_inner(),
        )))
    }

    async fn model_config(
        &self,
        request: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        self.answer("ModelConfig", request, |s, r| {
            let loaded = s.models.get(&r.name, version(&r.version))?;
            Ok(pb::ModelConfigResponse {
                config: Some(triton::model_config(&loaded)),
            })
        })
    }

    /// Every ready version's statistics, or one model's (one version's).
    async fn model_statistics(
        &self,
        request: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        self.answer("ModelStatistics", request, |s, r| {
            let statuses = if r.name.is_empty() {
                s.models.statuses()
            } else {
                vec![s.models.status(&r.name)?]
            };
            let wanted = match version(&r.version) {
                None => None,
                Some(v) => Some(s.models.get(&r.name, Some(v))?.version()),
            };
            let mut model_stats = Vec::new();
            for status in statuses {
                for (&v, state) in &status.versions {
                    if wanted.is_some_and(|w| w != v) {
                        continue;
                    }
                    if let VersionState::Ready(served) = state {
                        model_stats.push(triton::model_statistics(
                            &status.name,
                            v,
                            served.model.stats().snapshot(),
                        ));
                    }
                }
            }
            Ok(pb::ModelStatisticsResponse { model_stats })
        })
    }

    async fn repository_index(
        &self,
        request: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        let started = Instant::now();
        let request_bytes = request.get_ref().encoded_len();
        let ready_only = request.get_ref().ready;
        let models = Arc::clone(&self.shared.models);
        let result = match tokio::task::spawn_blocking(move || models.index()).await {
            Err(e) => Err(internal(format!("index task failed: {e}"))),
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(entries)) => Ok(pb::RepositoryIndexResponse {
                models: entries
                    .into_iter()
                    .filter(|e| !ready_only || e.state == IndexState::Ready)
                    .map(|e| pb::repository_index_response::ModelIndex {
                        name: e.name,
                        version: e.version.unwrap_or_default(),
                        state: index_state(e.state).into(),
                        reason: e.reason,
                    })
                    .collect(),
            }),
        };
        self.finish("RepositoryIndex", started, request_bytes, result)
    }

    /// (Re)loads a model from disk; the old versions serve until the new ones are ready.
    /// Triton's load parameters (a config, file overrides) are refused: scoria loads what is
    /// in the repository.
    async fn repository_model_load(
        &self,
        request: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        let started = Instant::now();
        let request_bytes = request.get_ref().encoded_len();
        let r = request.into_inner();
        let result = if r.parameters.is_empty() {
            let models = Arc::clone(&self.shared.models);
            match tokio::task::spawn_blocking(move || models.load_model(&r.model_name)).await {
                Err(e) => Err(internal(format!("load task failed: {e}"))),
                Ok(Err(e)) => Err(e.into()),
                Ok(Ok(())) => Ok(pb::RepositoryModelLoadResponse {}),
            }
        } else {
            let mut names: Vec<&str> = r.parameters.keys().map(String::as_str).collect();
            names.sort_unstable();
            Err(invalid(format!(
                "load parameters are not supported ({}): scoria loads the model's files and config.toml from the repository",
                names.join(", ")
            )))
        };
        self.finish("RepositoryModelLoad", started, request_bytes, result)
    }

    async fn repository_model_unload(
        &self,
        request: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        self.answer("RepositoryModelUnload", request, |s, r| {
            s.models.unload_model(&r.model_name)?;
            Ok(pb::RepositoryModelUnloadResponse {})
        })
    }

    async fn system_shared_memory_status(
        &self,
        _: Request<pb::SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryStatusResponse>, Status> {
        Err(shared_memory())
    }

    async fn system_shared_memory_register(
        &self,
        _: Request<pb::SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryRegisterResponse>, Status> {
        Err(shared_memory())
    }

    async fn system_shared_memory_unregister(
        &self,
        _: Request<pb::SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryUnregisterResponse>, Status> {
        Err(shared_memory())
    }

    async fn cuda_shared_memory_status(
        &self,
        _: Request<pb::CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryStatusResponse>, Status> {
        Err(shared_memory())
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<pb::CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryRegisterResponse>, Status> {
        Err(shared_memory())
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<pb::CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryUnregisterResponse>, Status> {
        Err(shared_memory())
    }

    async fn trace_setting(
        &self,
        _: Request<pb::TraceSettingRequest>,
    ) -> Result<Response<pb::TraceSettingResponse>, Status> {
        Err(unimplemented(
            "trace settings (use --log and the Prometheus metrics)",
        ))
    }

    async fn log_settings(
        &self,
        _: Request<pb::LogSettingsRequest>,
    ) -> Result<Response<pb::LogSettingsResponse>, Status> {
        Err(unimplemented(
            "log settings over gRPC (set the log filter with --log)",
        ))
    }
}

/// Triton's name of a repository index state.
fn index_state(state: IndexState) -> &'static str {
    match state {
        IndexState::Ready => "READY",
        IndexState::Loading => "LOADING",
        IndexState::Unavailable => "UNAVAILABLE",
    }
}

fn shared_memory() -> Status {
    unimplemented(
        "shared memory regions: send tensors in the request (contents or raw_input_contents)",
    )
}
