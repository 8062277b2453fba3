//! What every gRPC call passes before its message is decoded: the API key its method needs,
//! a permit from the concurrent-call limit, for `ModelInfer` a place under the server-wide
//! `--max-inflight`, and the message size limit.
//!
//! Invariants: no message byte is buffered for a caller without a valid key; a call holds
//! its permit (and its in-flight place) until its response (a stream's included) has ended,
//! so open calls — however many connections they come on — never exceed the limits; a message whose length prefix is
//! over the limit is refused at the prefix, before any of it is buffered.

use super::proto::inference::grpc_inference_service_server::SERVICE_NAME as INFERENCE;
use crate::auth::{ApiKeys, Role};
use crate::models::{Admitted, InflightLimit};
use bytes::Buf;
use http::{header, Request, Response};
use http_body::{Body as HttpBody, Frame};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::Status;

/// A call's `(service, method)` from its request path.
fn call_of(path: &str) -> Option<(&str, &str)> {
    path.strip_prefix('/').and_then(|p| p.split_once('/'))
}

/// The role a call (see [`call_of`]) needs: `None` for the health checks (liveness,
/// readiness and `grpc.health.v1`), `Some(Score)` for inference, metadata, configuration
/// and statistics, `Some(Admin)` for the repository calls and anything not listed here
/// (closed by default, as on the HTTP routes).
fn role_of(call: Option<(&str, &str)>) -> Option<Role> {
    let Some((service, method)) = call else {
        return Some(Role::Admin);
    };
    match (service, method) {
        ("grpc.health.v1.Health", "Check" | "Watch") => None,
        (INFERENCE, "ServerLive" | "ServerReady") => None,
        (
            INFERENCE,
            "ModelReady" | "ServerMetadata" | "ModelMetadata" | "ModelInfer" | "ModelStreamInfer"
            | "ModelConfig" | "ModelStatistics",
        ) => Some(Role::Score),
        _ => Some(Role::Admin),
    }
}

/// The tower layer in front of every gRPC service.
#[derive(Clone)]
pub struct Guard {
    keys: Option<Arc<ApiKeys>>,
    permits: Arc<Semaphore>,
    max_calls: usize,
    max_message: usize,
    inflight: Arc<InflightLimit>,
}

impl Guard {
    /// At most `max_calls` calls at once (health checks not counted), messages of at most
    /// `max_message` bytes, `ModelInfer` calls within `inflight`, and with `keys` a key on
    /// every call but the health checks.
    pub fn new(
        keys: Option<Arc<ApiKeys>>,
        max_calls: usize,
        max_message: usize,
        inflight: Arc<InflightLimit>,
    ) -> Guard {
        Guard {
            keys,
            permits: Arc::new(Semaphore::new(max_calls)),
            max_calls,
            max_message,
            inflight,
        }
    }

    /// What the call holds while it runs, or the status answered instead of running it.
    fn admit(&self, req: &Request<Body>) -> Result<Option<Held>, Status> {
        let path = req.uri().path();
        let call = call_of(path);
        let Some(required) = role_of(call) else {
            return Ok(None);
        };
        if let Some(keys) = &self.keys {
            match keys.check(req.headers().get(header::AUTHORIZATION)) {
                Ok(role) if role.allows(required) => {}
                Ok(role) => {
                    tracing::debug!("gRPC PERMISSION_DENIED for {path}: a {role} key");
                    return Err(Status::permission_denied(format!(
                        "this call needs an {required} key; the key given has role {role}"
                    )));
                }
                Err(e) => {
                    tracing::debug!("gRPC UNAUTHENTICATED for {path}: {e}");
                    return Err(Status::unauthenticated(format!(
                        "{e} (send `authorization: Bearer <key>` metadata)"
                    )));
                }
            }
        }
        let admitted = if call == Some((INFERENCE, "ModelInfer")) {
            self.inflight.admit().map_err(|refused| {
                tracing::debug!("gRPC UNAVAILABLE for {path}: {refused}");
                Status::unavailable(refused.to_string())
            })?
        } else {
            None
        };
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => Ok(Some(Held {
                _permit: permit,
                _admitted: admitted,
            })),
            Err(_) => {
                tracing::debug!("gRPC RESOURCE_EXHAUSTED for {path}: call limit reached");
                Err(Status::resource_exhausted(format!(
                    "the server has {} calls open, its limit (--grpc-max-streams); retry later",
                    self.max_calls
                )))
            }
        }
    }
}

impl<S> tower::Layer<S> for Guard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            guard: self.clone(),
        }
    }
}

/// A service behind the [`Guard`].
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    guard: Guard,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower::Service<Request<Body>> for Guarded<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let permit = match self.guard.admit(&req) {
            Ok(permit) => permit,
            Err(status) => return Box::pin(std::future::ready(Ok(status.into_http()))),
        };
        let max = self.guard.max_message;
        let req = req.map(|body| Body::new(Limited::new(body, max)));
        // The inner service was made ready by poll_ready; a fresh clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(req).await?;
            Ok(match permit {
                None => response,
                Some(held) => response.map(|body| {
                    Body::new(Holding {
                        inner: body,
                        _held: held,
                    })
                }),
            })
        })
    }
}

/// What an admitted call holds until its response ends.
struct Held {
    _permit: OwnedSemaphorePermit,
    _admitted: Option<Admitted>,
}

/// A response body that holds its call's permit until it ends or is dropped.
struct Holding {
    inner: Body,
    _held: Held,
}

impl HttpBody for Holding {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, Status>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that reads each gRPC message's 5-byte prefix (compression flag, 4-byte
/// big-endian length) as it passes and fails the call with RESOURCE_EXHAUSTED at the first
/// message longer than the limit.
struct Limited {
    inner: Body,
    max: usize,
    prefix: [u8; 5],
    have: usize,
    /// Bytes of the current message still to pass.
    rest: usize,
}

impl Limited {
    fn new(inner: Body, max: usize) -> Limited {
        Limited {
            inner,
            max,
            prefix: [0; 5],
            have: 0,
            rest: 0,
        }
    }

    /// Walks `data` through the framing; the status when a message is over the limit.
    fn check(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.rest > 0 {
                let n = self.rest.min(data.len());
                self.rest -= n;
                data.advance(n);
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.prefix[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data.advance(n);
            if self.have == 5 {
                self.have = 0;
                let [_, a, b, c, d] = self.prefix;
                let len = u32::from_be_bytes([a, b, c, d]) as usize;
                if len > self.max {
                    return Err(Status::resource_exhausted(format!(
                        "a {len}-byte message is over the {}-byte limit (--max-body-size)",
                        self.max
                    )));
                }
                self.rest = len;
            }
        }
        Ok(())
    }
}

impl HttpBody for Limited {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let data = data.clone();
                if let Err(status) = self.check(&data) {
                    tracing::debug!("gRPC RESOURCE_EXHAUSTED: {}", status.message());
                    return Poll::Ready(Some(Err(status)));
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_classified() {
        let m = |name: &str| format!("/inference.GRPCInferenceService/{name}");
        for open in [
            "/grpc.health.v1.Health/Check".to_string(),
            m("ServerLive"),
            m("ServerReady"),
        ] {
            assert_eq!(role_of(call_of(&open)), None, "{open}");
        }
        for score in [
            "ModelInfer",
            "ModelStreamInfer",
            "ModelMetadata",
            "ModelConfig",
        ] {
            assert_eq!(role_of(call_of(&m(score))), Some(Role::Score), "{score}");
        }
        for admin in [
            m("RepositoryIndex"),
            m("RepositoryModelLoad"),
            m("RepositoryModelUnload"),
            m("SystemSharedMemoryRegister"),
            m("Unknown"),
            "/other.Service/ModelInfer".into(),
            "/".into(),
            "".into(),
        ] {
            assert_eq!(role_of(call_of(&admin)), Some(Role::Admin), "{admin}");
        }
    }

    fn message(len: u32) -> Vec<u8> {
        let mut m = vec![0];
        m.extend_from_slice(&len.to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len as usize));
        m
    }

    #[test]
    fn message_limit_reads_prefixes_across_chunks() {
        let mut l = Limited::new(Body::empty(), 10);
        let mut stream = message(10);
        stream.extend(message(3));
        // Fed a byte at a time, then all at once: both pass.
        for b in &stream {
            l.check(std::slice::from_ref(b)).unwrap();
        }
        l.check(&stream).unwrap();
        // The prefix of an 11-byte message fails, split or not.
        let over = message(11);
        let mut l = Limited::new(Body::empty(), 10);
        l.check(&over[..3]).unwrap();
        let e = l.check(&over[3..5]).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(e
            .message()
            .contains("11-byte message is over the 10-byte limit"));
    }
}
