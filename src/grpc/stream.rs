//! `ModelStreamInfer`: a bidirectional stream of inference requests, each answered on the
//! response stream (in the order they finish; clients match them by `id`). A request that
//! fails gets a response with its `error_message` (and its id), and the stream goes on.
//!
//! Memory stays bounded whatever the client does: at most [`IN_FLIGHT`] requests of one
//! stream run at once, and at most [`BUFFERED`] responses wait for a client to read them;
//! when either is full the stream stops reading requests, and HTTP/2 flow control stops the
//! client. A request beyond the server's `--max-inflight` is answered at once with an
//! UNAVAILABLE error message. When the server drains (SIGTERM) a stream stops taking requests, finishes and
//! sends those it took, then ends with UNAVAILABLE so the client knows to retry the rest.

use super::proto::inference::{ModelInferRequest, ModelInferResponse, ModelStreamInferResponse};
use super::service::Shared;
use crate::models::{Admitted, AtLimit};
use prost::Message;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

/// Requests of one stream running at once.
const IN_FLIGHT: usize = 16;
/// Responses of one stream waiting for the client to read them.
const BUFFERED: usize = 16;

/// The response half of a stream.
pub type Responses = ReceiverStream<Result<ModelStreamInferResponse, Status>>;

/// Starts serving `inbound`; the returned stream carries the responses.
pub fn start(shared: Arc<Shared>, inbound: Streaming<ModelInferRequest>) -> Responses {
    let (tx, rx) = mpsc::channel(BUFFERED);
    tokio::spawn(drive(shared, inbound, tx));
    ReceiverStream::new(rx)
}

async fn drive(
    shared: Arc<Shared>,
    mut inbound: Streaming<ModelInferRequest>,
    tx: mpsc::Sender<Result<ModelStreamInferResponse, Status>>,
) {
    let mut stopping = shared.stopping.clone();
    let mut running: JoinSet<ModelStreamInferResponse> = JoinSet::new();
    let mut reading = true;
    // Why the stream ends with an error status, if it does.
    let mut end: Option<Status> = None;
    loop {
        if !reading && running.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some(done) = running.join_next(), if !running.is_empty() => {
                let response = done.unwrap_or_else(|e| ModelStreamInferResponse {
                    error_message: format!("inference task failed: {e}"),
                    infer_response: None,
                });
                if tx.send(Ok(response)).await.is_err() {
                    // The client is gone: dropping `running` cancels what is left.
                    return;
                }
            }
            true = async { stopping.wait_for(|s| *s).await.is_ok() }, if reading => {
                reading = false;
                end = Some(Status::unavailable(
                    "the server is shutting down: requests after the last response were not run; retry them",
                ));
            }
            message = inbound.message(), if reading && running.len() < IN_FLIGHT => match message {
                Ok(Some(req)) => {
                    let shared = Arc::clone(&shared);
                    // Taken as the request is read, so that a refusal is immediate.
                    let admission = shared.inflight.admit();
                    running.spawn(async move { one(&shared, req, admission).await });
                }
                Ok(None) => reading = false,
                Err(status) => {
                    // A broken stream (malformed or oversize message, reset): answer what
                    // was taken, then end with its status.
                    reading = false;
                    end = Some(status);
                }
            },
        }
    }
    if let Some(status) = end {
        let _ = tx.send(Err(status)).await;
    }
}

/// Runs one request of a stream — unless `--max-inflight` refused it — and records it.
async fn one(
    shared: &Shared,
    req: ModelInferRequest,
    admission: Result<Option<Admitted>, AtLimit>,
) -> ModelStreamInferResponse {
    let started = Instant::now();
    let request_bytes = req.encoded_len();
    let id = req.id.clone();
    let (result, served) = match admission {
        Ok(admitted) => {
            let answer = shared.infer(req, request_bytes).await;
            drop(admitted);
            answer
        }
        Err(refused) => (Err(Status::unavailable(refused.to_string())), None),
    };
    let (code, response) = match result {
        Ok(r) => (
            Code::Ok,
            ModelStreamInferResponse {
                error_message: String::new(),
                infer_response: Some(r),
            },
        ),
        Err(status) => (
            status.code(),
            ModelStreamInferResponse {
                error_message: status.message().to_string(),
                // The id (and the version, when known) say which request failed.
                infer_response: Some(ModelInferResponse {
                    model_name: served
                        .as_ref()
                        .map_or_else(String::new, |s| s.model.clone()),
                    model_version: served
                        .as_ref()
                        .map_or_else(String::new, |s| s.version.clone()),
                    id,
                    ..Default::default()
                }),
            },
        ),
    };
    let response_bytes = response.encoded_len();
    shared.record(
        "ModelStreamInfer",
        started,
        code,
        served.as_ref(),
        request_bytes,
        response_bytes,
    );
    response
}
