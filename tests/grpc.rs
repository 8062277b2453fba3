//! The gRPC front end against a real `scoria serve`, through a tonic client generated from
//! the same protos: every call, typed and raw contents, streams, health, malformed and
//! oversize messages, keys, the concurrent-stream limit, a stream that is never read, and
//! SIGTERM with a stream open.

mod common;

use common::{repo_with, Server, DIGIT_ZERO};
use scoria::grpc::proto::health::health_check_response::ServingStatus;
use scoria::grpc::proto::health::health_client::HealthClient;
use scoria::grpc::proto::health::HealthCheckRequest;
use scoria::grpc::proto::inference as pb;
use scoria::grpc::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use scoria::grpc::proto::inference::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

type Client = GrpcInferenceServiceClient<Channel>;

/// The runtime a test's gRPC client runs on; the server and the blocking HTTP client stay
/// outside it.
fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs blocking work (the HTTP client) from inside the runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn metrics_text(server: &Server) -> String {
    blocking(|| {
        reqwest::blocking::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(server.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    })
}

async fn channel(server: &Server) -> Channel {
    let addr = server.grpc_addr.as_deref().expect("the server serves gRPC");
    Channel::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to gRPC {addr}: {e}\n{}", server.stderr()))
}

async fn client(server: &Server) -> Client {
    GrpcInferenceServiceClient::new(channel(server).await).max_decoding_message_size(64 << 20)
}

fn digits_typed(id: &str) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: "digits".into(),
        id: id.into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 64],
            contents: Some(pb::InferTensorContents {
                fp32_contents: DIGIT_ZERO.iter().map(|&p| f32::from(p)).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn digits_raw(id: &str) -> pb::ModelInferRequest {
    let mut req = digits_typed(id);
    req.inputs[0].contents = None;
    req.raw_input_contents = vec![DIGIT_ZERO
        .iter()
        .flat_map(|&p| f32::from(p).to_le_bytes())
        .collect::<Vec<u8>>()
        .into()];
    req
}

fn output<'a>(r: &'a pb::ModelInferResponse, name: &str) -> (&'a [i64], &'a [u8]) {
    let i = r
        .outputs
        .iter()
        .position(|o| o.name == name)
        .unwrap_or_else(|| panic!("no output {name} in {r:?}"));
    (&r.outputs[i].shape, &r.raw_output_contents[i])
}

fn f32s(raw: &[u8]) -> Vec<f32> {
    raw.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[track_caller]
fn assert_status<T: std::fmt::Debug>(r: Result<T, Status>, code: Code, needle: &str) -> String {
    let s = match r {
        Ok(v) => panic!("expected {code:?}, got {v:?}"),
        Err(s) => s,
    };
    assert_eq!(s.code(), code, "{s:?}");
    assert!(
        s.message().contains(needle),
        "message {:?} does not contain {needle:?}",
        s.message()
    );
    s.message().to_string()
}

/// What the HTTP route answers for the digit zero: probabilities and label.
fn http_digits(server: &Server) -> (Vec<f32>, i64) {
    let resp = blocking(|| {
        server.infer_ok(
            "digits",
            &json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                            "data": DIGIT_ZERO.to_vec()}]}),
        )
    });
    let outputs = resp["outputs"].as_array().unwrap();
    let by = |n: &str| outputs.iter().find(|o| o["name"] == n).unwrap().clone();
    let probs = by("probabilities")["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    (probs, by("label")["data"][0].as_i64().unwrap())
}

#[test]
fn every_call_answers_like_the_http_routes() {
    let server = Server::start(repo_with(&["digits", "lenet", "identity_all"]), &[]);
    rt().block_on(async {
        let mut c = client(&server).await;

        assert!(
            c.server_live(pb::ServerLiveRequest {})
                .await
                .unwrap()
                .get_ref()
                .live
        );
        assert!(
            c.server_ready(pb::ServerReadyRequest {})
                .await
                .unwrap()
                .get_ref()
                .ready
        );
        let meta = c
            .server_metadata(pb::ServerMetadataRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(meta.name, "scoria");
        assert!(meta.extensions.contains(&"model_repository".to_string()));

        let ready = |name: &str, version: &str| pb::ModelReadyRequest {
            name: name.into(),
            version: version.into(),
        };
        assert!(
            c.model_ready(ready("digits", ""))
                .await
                .unwrap()
                .get_ref()
                .ready
        );
        assert!(
            c.model_ready(ready("digits", "1"))
                .await
                .unwrap()
                .get_ref()
                .ready
        );
        assert!(
            !c.model_ready(ready("nope", ""))
                .await
                .unwrap()
                .get_ref()
                .ready
        );
        assert!(
            !c.model_ready(ready("digits", "9"))
                .await
                .unwrap()
                .get_ref()
                .ready
        );

        let md = c
            .model_metadata(pb::ModelMetadataRequest {
                name: "digits".into(),
                version: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(md.versions, ["1"]);
        assert_eq!(md.inputs[0].name, "input");
        assert_eq!(md.inputs[0].datatype, "FP32");
        assert_eq!(md.inputs[0].shape, [-1, 64]);
        let outs: Vec<&str> = md.outputs.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(outs, ["probabilities", "label"]);
        let (_, http_md) = blocking(|| server.get("/v2/models/digits"));
        assert_eq!(http_md["platform"], Value::from(md.platform.clone()));
        assert_status(
            c.model_metadata(pb::ModelMetadataRequest {
                name: "nope".into(),
                version: String::new(),
            })
            .await,
            Code::NotFound,
            "unknown model 'nope'",
        );

        let config = c
            .model_config(pb::ModelConfigRequest {
                name: "digits".into(),
                version: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .config
            .unwrap();
        let (_, http_config) = blocking(|| server.get("/v2/models/digits/config"));
        assert_eq!(
            Value::from(config.max_batch_size),
            http_config["max_batch_size"]
        );
        // digits sets no max_batch_size: auto-completed, as in Triton, with the batcher.
        assert_eq!(config.max_batch_size, 4);
        assert!(
            matches!(
                config.scheduling_choice,
                Some(pb::model_config::SchedulingChoice::DynamicBatching(_))
            ),
            "{:?}",
            config.scheduling_choice
        );
        assert_eq!(config.input[0].data_type, pb::DataType::TypeFp32 as i32);
        assert_eq!(
            Value::from(config.input[0].dims.clone()),
            http_config["input"][0]["dims"]
        );

        // Inference, typed and raw, equals the HTTP route's answer.
        let (http_probs, http_label) = http_digits(&server);
        for req in [digits_typed("t-1"), digits_raw("r-1")] {
            let id = req.id.clone();
            let r = c.model_infer(req).await.unwrap().into_inner();
            assert_eq!(
                (r.model_name.as_str(), r.model_version.as_str()),
                ("digits", "1")
            );
            assert_eq!(r.id, id);
            let (shape, probs) = output(&r, "probabilities");
            assert_eq!(shape, [1, 10]);
            assert_eq!(f32s(probs), http_probs);
            let (shape, label) = output(&r, "label");
            assert_eq!(shape, [1]);
            assert_eq!(i64::from_le_bytes(label.try_into().unwrap()), http_label);
            assert_eq!(http_label, 0);
        }
        // Requested outputs, in the order asked, and an explicit version.
        let mut req = digits_raw("sel");
        req.model_version = "1".into();
        req.outputs = vec![InferRequestedOutputTensor {
            name: "label".into(),
            ..Default::default()
        }];
        let r = c.model_infer(req).await.unwrap().into_inner();
        assert_eq!(r.outputs.len(), 1);
        assert_eq!(r.outputs[0].name, "label");
        assert_eq!(r.outputs[0].datatype, "INT64");

        // Every datatype, typed and raw, comes back as it went.
        identity_all_round_trips(&mut c).await;

        // Statistics count what was served, like the HTTP route.
        let stats = c
            .model_statistics(pb::ModelStatisticsRequest {
                name: "digits".into(),
                version: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stats.model_stats.len(), 1);
        let s = &stats.model_stats[0];
        assert_eq!(s.inference_count, 4, "{s:?}");
        let success = s.inference_stats.as_ref().unwrap().success.unwrap();
        assert_eq!(success.count, 4);
        assert!(success.ns > 0);
        let (_, http_stats) = blocking(|| server.get("/v2/models/digits/stats"));
        assert_eq!(http_stats["model_stats"][0]["inference_count"], 4);
        let all = c
            .model_statistics(pb::ModelStatisticsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(all.model_stats.len(), 3);

        // The repository: index, unload, load.
        let index = c
            .repository_index(pb::RepositoryIndexRequest::default())
            .await
            .unwrap()
            .into_inner();
        let names: Vec<&str> = index.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["digits", "identity_all", "lenet"]);
        assert!(index.models.iter().all(|m| m.state == "READY"));
        c.repository_model_unload(pb::RepositoryModelUnloadRequest {
            model_name: "lenet".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        assert!(
            !c.model_ready(ready("lenet", ""))
                .await
                .unwrap()
                .get_ref()
                .ready
        );
        let index = c
            .repository_index(pb::RepositoryIndexRequest {
                ready: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(index.models.len(), 2, "{index:?}");
        let mut lenet = pb::ModelInferRequest {
            model_name: "lenet".into(),
            inputs: vec![InferInputTensor {
                name: "input".into(),
                datatype: "FP32".into(),
                shape: vec![1, 1, 28, 28],
                ..Default::default()
            }],
            raw_input_contents: vec![vec![0u8; 784 * 4].into()],
            ..Default::default()
        };
        assert_status(
            c.model_infer(lenet.clone()).await,
            Code::Unavailable,
            "unloaded",
        );
        c.repository_model_load(pb::RepositoryModelLoadRequest {
            model_name: "lenet".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        lenet.id = "after-load".into();
        let r = c.model_infer(lenet).await.unwrap().into_inner();
        assert_eq!(output(&r, "logits").0, [1, 10]);
        assert_status(
            c.repository_model_load(pb::RepositoryModelLoadRequest {
                model_name: "nope".into(),
                ..Default::default()
            })
            .await,
            Code::NotFound,
            "nope",
        );
        let mut with_params = pb::RepositoryModelLoadRequest {
            model_name: "lenet".into(),
            ..Default::default()
        };
        with_params.parameters.insert(
            "config".into(),
            pb::ModelRepositoryParameter {
                parameter_choice: Some(
                    pb::model_repository_parameter::ParameterChoice::StringParam("{}".into()),
                ),
            },
        );
        assert_status(
            c.repository_model_load(with_params).await,
            Code::InvalidArgument,
            "load parameters are not supported (config)",
        );

        // What scoria does not do is UNIMPLEMENTED, with why.
        assert_status(
            c.system_shared_memory_status(pb::SystemSharedMemoryStatusRequest::default())
                .await,
            Code::Unimplemented,
            "shared memory",
        );
        assert_status(
            c.cuda_shared_memory_register(pb::CudaSharedMemoryRegisterRequest::default())
                .await,
            Code::Unimplemented,
            "shared memory",
        );
        assert_status(
            c.trace_setting(pb::TraceSettingRequest::default()).await,
            Code::Unimplemented,
            "trace",
        );
        assert_status(
            c.log_settings(pb::LogSettingsRequest::default()).await,
            Code::Unimplemented,
            "log settings",
        );

        // grpc.health.v1.
        let mut health = HealthClient::new(channel(&server).await);
        for service in ["", "inference.GRPCInferenceService"] {
            let r = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap();
            assert_eq!(r.get_ref().status, ServingStatus::Serving as i32);
        }
        assert_status(
            health
                .check(HealthCheckRequest {
                    service: "other".into(),
                })
                .await,
            Code::NotFound,
            "unknown service 'other'",
        );

        // The metrics label gRPC calls with their method.
        let metrics = metrics_text(&server);
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("scoria_requests_total")
                    && l.contains(r#"route="grpc/ModelInfer""#)
                    && l.contains(r#"model="digits""#)
                    && l.contains(r#"outcome="success""#)
            })
            .unwrap_or_else(|| panic!("no grpc/ModelInfer success line:\n{metrics}"));
        assert!(line.ends_with(" 3"), "{line}");
        assert!(
            metrics.contains(r#"route="grpc/ModelInfer",version="",outcome="server_error""#)
                || metrics.contains(r#"outcome="server_error",route="grpc/ModelInfer""#)
                || metrics
                    .lines()
                    .any(|l| l.contains("grpc/ModelInfer") && l.contains("server_error")),
            "the UNAVAILABLE infer is not counted:\n{metrics}"
        );
    });
}

/// identity_all: one input per datatype; each goes through typed contents and through raw
/// contents and must come back unchanged.
async fn identity_all_round_trips(c: &mut Client) {
    type Contents = pb::InferTensorContents;
    let c3 = |f: &dyn Fn(&mut Contents)| {
        let mut x = Contents::default();
        f(&mut x);
        x
    };
    let cases: Vec<(&str, &str, Contents, Vec<u8>)> = vec![
        (
            "fp32",
            "FP32",
            c3(&|x| x.fp32_contents = vec![1.5, -2.0, 3e-7]),
            [1.5f32, -2.0, 3e-7]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        (
            "fp64",
            "FP64",
            c3(&|x| x.fp64_contents = vec![1e300, -0.5, 2.0]),
            [1e300f64, -0.5, 2.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        (
            "int8",
            "INT8",
            c3(&|x| x.int_contents = vec![-128, 0, 127]),
            [-128i8, 0, 127]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        (
            "int16",
            "INT16",
            c3(&|x| x.int_contents = vec![-32768, 1, 32767]),
            [-32768i16, 1, 32767]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        (
            "int32",
            "INT32",
            c3(&|x| x.int_contents = vec![i32::MIN, 2, i32::MAX]),
            [i32::MIN, 2, i32::MAX]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        (
            "int64",
            "INT64",
            c3(&|x| x.int64_contents = vec![i64::MIN, 3, i64::MAX]),
            [i64::MIN, 3, i64::MAX]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        (
            "uint8",
            "UINT8",
            c3(&|x| x.uint_contents = vec![0, 1, 255]),
            vec![0, 1, 255],
        ),
        (
            "uint16",
            "UINT16",
            c3(&|x| x.uint_contents = vec![0, 1, 65535]),
            [0u16, 1, 65535]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        (
            "uint32",
            "UINT32",
            c3(&|x| x.uint_contents = vec![0, 1, u32::MAX]),
            [0u32, 1, u32::MAX]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        (
            "uint64",
            "UINT64",
            c3(&|x| x.uint64_contents = vec![0, 1, u64::MAX]),
            [0u64, 1, u64::MAX]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        (
            "bool",
            "BOOL",
            c3(&|x| x.bool_contents = vec![true, false, true]),
            vec![1, 0, 1],
        ),
    ];
    let input = |suffix: &str, dt: &str, contents: Option<Contents>| InferInputTensor {
        name: format!("x_{suffix}"),
        datatype: dt.into(),
        shape: vec![1, 3],
        contents,
        ..Default::default()
    };
    let typed = pb::ModelInferRequest {
        model_name: "identity_all".into(),
        inputs: cases
            .iter()
            .map(|(s, dt, c, _)| input(s, dt, Some(c.clone())))
            .collect(),
        ..Default::default()
    };
    let raw = pb::ModelInferRequest {
        model_name: "identity_all".into(),
        inputs: cases
            .iter()
            .map(|(s, dt, _, _)| input(s, dt, None))
            .collect(),
        raw_input_contents: cases.iter().map(|(.., b)| b.clone().into()).collect(),
        ..Default::default()
    };
    for req in [typed, raw] {
        let r = c.model_infer(req).await.unwrap().into_inner();
        for (suffix, dt, _, bytes) in &cases {
            let i = r
                .outputs
                .iter()
                .position(|o| o.name == format!("y_{suffix}"))
                .unwrap();
            assert_eq!(r.outputs[i].datatype, *dt);
            assert_eq!(r.outputs[i].shape, [1, 3]);
            assert_eq!(&r.raw_output_contents[i][..], &bytes[..], "{suffix}");
        }
    }
}

#[test]
fn a_stream_answers_every_request_by_id() {
    let server = Server::start(repo_with(&["digits"]), &[]);
    rt().block_on(async {
        let mut c = client(&server).await;
        let (http_probs, _) = http_digits(&server);
        let mut requests = Vec::new();
        for i in 0..20 {
            let id = format!("s-{i}");
            requests.push(match i % 4 {
                0 => digits_typed(&id),
                1 => digits_raw(&id),
                2 => {
                    let mut r = digits_raw(&id);
                    r.inputs[0].name = "nope".into();
                    r
                }
                _ => {
                    let mut r = digits_typed(&id);
                    r.model_name = "missing".into();
                    r
                }
            });
        }
        let mut responses = c
            .model_stream_infer(tokio_stream::iter(requests))
            .await
            .unwrap()
            .into_inner();
        let mut seen = std::collections::BTreeMap::new();
        while let Some(r) = responses.message().await.unwrap() {
            let ir = r
                .infer_response
                .expect("every response carries the request's id");
            seen.insert(ir.id.clone(), (r.error_message.clone(), ir));
        }
        assert_eq!(seen.len(), 20, "{:?}", seen.keys());
        for i in 0..20 {
            let (error, r) = &seen[&format!("s-{i}")];
            match i % 4 {
                0 | 1 => {
                    assert_eq!(error, "");
                    // digits is auto-completed with the dynamic batcher: a request that ran
                    // batched with others agrees to float rounding, not bit for bit.
                    let probs = f32s(output(r, "probabilities").1);
                    assert_eq!(probs.len(), http_probs.len());
                    for (a, b) in probs.iter().zip(&http_probs) {
                        assert!(
                            (a - b).abs() <= 1e-6 + 1e-5 * b.abs(),
                            "{probs:?} vs {http_probs:?}"
                        );
                    }
                }
                2 => assert!(error.contains("nope"), "{error}"),
                _ => assert!(error.contains("unknown model 'missing'"), "{error}"),
            }
        }
        // The stream's requests are counted like unary ones.
        let metrics = metrics_text(&server);
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("scoria_requests_total")
                    && l.contains(r#"route="grpc/ModelStreamInfer""#)
                    && l.contains(r#"outcome="success""#)
                    && l.ends_with(" 10")),
            "{metrics}"
        );
    });
}

/// A client codec that sends and receives raw bytes, to send what a generated client never
/// would.
#[derive(Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        use bytes::Buf;
        let mut v = vec![0; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

async fn raw_call(server: &Server, method: &str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel(server).await);
    grpc.ready().await.unwrap();
    let path = format!("/inference.GRPCInferenceService/{method}")
        .parse()
        .unwrap();
    grpc.unary(Request::new(body), path, RawCodec)
        .await
        .map(|r| r.into_inner())
}

#[test]
fn malformed_messages_get_the_right_status_and_the_server_goes_on() {
    let server = Server::start(repo_with(&["digits"]), &["--max-body-size", "64KiB"]);
    rt().block_on(async {
        let mut c = client(&server).await;
        let bad = |f: &dyn Fn(&mut pb::ModelInferRequest), raw: bool| {
            let mut r = if raw {
                digits_raw("bad")
            } else {
                digits_typed("bad")
            };
            f(&mut r);
            r
        };
        let cases: Vec<(pb::ModelInferRequest, Code, &str)> = vec![
            // raw size does not match shape × datatype
            (
                bad(&|r| r.raw_input_contents[0].truncate(255), true),
                Code::InvalidArgument,
                "raw_input_contents has 255 bytes but shape [1, 64] of FP32 needs 256",
            ),
            (
                bad(&|r| r.inputs[0].shape = vec![2, 64], true),
                Code::InvalidArgument,
                "needs 512",
            ),
            // typed element count
            (
                bad(&|r| r.inputs[0].shape = vec![2, 64], false),
                Code::InvalidArgument,
                "holds 128 elements but fp32_contents has 64",
            ),
            // typed contents in the wrong field
            (
                bad(
                    &|r| {
                        let c = r.inputs[0].contents.as_mut().unwrap();
                        c.int_contents = vec![1];
                    },
                    false,
                ),
                Code::InvalidArgument,
                "has int_contents",
            ),
            // unknown datatype, raw and typed
            (
                bad(&|r| r.inputs[0].datatype = "FP16".into(), true),
                Code::InvalidArgument,
                "unsupported datatype 'FP16'",
            ),
            (
                bad(&|r| r.inputs[0].datatype = "COMPLEX".into(), false),
                Code::InvalidArgument,
                "unsupported datatype 'COMPLEX'",
            ),
            // shape overflow, raw and typed
            (
                bad(&|r| r.inputs[0].shape = vec![1 << 40, 1 << 40], true),
                Code::InvalidArgument,
                "overflows",
            ),
            (
                bad(&|r| r.inputs[0].shape = vec![1 << 40, 1 << 40], false),
                Code::InvalidArgument,
                "overflows",
            ),
            (
                bad(&|r| r.inputs[0].shape = vec![1 << 61, 4], true),
                Code::InvalidArgument,
                "more than memory holds",
            ),
            (
                bad(&|r| r.inputs[0].shape = vec![-1, 64], false),
                Code::InvalidArgument,
                "negative dimension",
            ),
            // a datatype the model does not take
            (
                bad(
                    &|r| {
                        r.inputs[0].datatype = "INT32".into();
                    },
                    true,
                ),
                Code::InvalidArgument,
                "input",
            ),
            // unknown input and output
            (
                bad(&|r| r.inputs[0].name = "nope".into(), true),
                Code::InvalidArgument,
                "nope",
            ),
            (
                bad(&|r| r.inputs[0].name = "nope".into(), false),
                Code::InvalidArgument,
                "nope",
            ),
            (
                bad(
                    &|r| {
                        r.outputs = vec![InferRequestedOutputTensor {
                            name: "nope".into(),
                            ..Default::default()
                        }]
                    },
                    true,
                ),
                Code::InvalidArgument,
                "nope",
            ),
            // raw and typed mixed, and a raw entry count that is not one per input
            (
                bad(
                    &|r| {
                        r.inputs[0].contents = Some(pb::InferTensorContents {
                            fp32_contents: vec![0.0; 64],
                            ..Default::default()
                        })
                    },
                    true,
                ),
                Code::InvalidArgument,
                "both contents and raw_input_contents",
            ),
            (
                bad(&|r| r.raw_input_contents.push(vec![0u8; 4].into()), true),
                Code::InvalidArgument,
                "2 entries but the request has 1 inputs",
            ),
            // unknown model and version
            (
                bad(&|r| r.model_name = "nope".into(), true),
                Code::NotFound,
                "unknown model 'nope'",
            ),
            (
                bad(&|r| r.model_version = "7".into(), true),
                Code::NotFound,
                "no version '7'",
            ),
            // over --max-body-size (64 KiB), raw and typed
            (
                bad(
                    &|r| {
                        r.inputs[0].shape = vec![300, 64];
                        r.raw_input_contents[0] = vec![0u8; 300 * 256].into();
                    },
                    true,
                ),
                Code::ResourceExhausted,
                "over the 65536-byte limit",
            ),
            (
                bad(
                    &|r| {
                        r.inputs[0].shape = vec![300, 64];
                        r.inputs[0].contents.as_mut().unwrap().fp32_contents = vec![0.0; 300 * 64];
                    },
                    false,
                ),
                Code::ResourceExhausted,
                "over the 65536-byte limit",
            ),
        ];
        for (req, code, needle) in cases {
            assert_status(c.model_infer(req).await, code, needle);
        }
        // Bytes that are no ModelInferRequest at all.
        assert_status(
            raw_call(&server, "ModelInfer", vec![0xff, 0xff, 0xff, 0xff, 0x0f]).await,
            Code::Internal,
            "",
        );
        // A length prefix over the limit is refused before the message arrives.
        assert_status(
            raw_call(&server, "ModelInfer", vec![0; 70 << 10]).await,
            Code::ResourceExhausted,
            "limit",
        );
        // Over the limit on a stream: the stream ends with RESOURCE_EXHAUSTED after answering
        // the requests before it.
        let mut big = digits_raw("big");
        big.inputs[0].shape = vec![300, 64];
        big.raw_input_contents[0] = vec![0u8; 300 * 256].into();
        let mut s = c
            .model_stream_infer(tokio_stream::iter(vec![digits_raw("ok-1"), big]))
            .await
            .unwrap()
            .into_inner();
        let mut answered = Vec::new();
        let end = loop {
            match s.message().await {
                Ok(Some(r)) => answered.push(r.infer_response.unwrap().id),
                Ok(None) => panic!("the stream ended without an error"),
                Err(e) => break e,
            }
        };
        assert_eq!(end.code(), Code::ResourceExhausted, "{end:?}");
        assert!(answered.len() <= 1, "{answered:?}");

        // Still serving, over both protocols.
        let r = c
            .model_infer(digits_raw("after"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.id, "after");
        let (probs, _) = http_digits(&server);
        assert_eq!(probs.len(), 10);
    });
}

#[test]
fn keys_and_roles_apply_to_grpc_calls() {
    const ADMIN: &str = "admin-key-0123456789abcdef";
    const SCORER: &str = "score-key-0123456789abcdef";
    let keys = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(keys.path(), format!("{ADMIN} admin\n{SCORER} score\n")).unwrap();
    let server = Server::start(
        repo_with(&["digits"]),
        &["--api-key-file", keys.path().to_str().unwrap()],
    );
    rt().block_on(async {
        let ch = channel(&server).await;
        let with_key = |key: Option<&str>, req: pb::ModelInferRequest| {
            let mut r = Request::new(req);
            if let Some(k) = key {
                r.metadata_mut().insert(
                    "authorization",
                    MetadataValue::try_from(format!("Bearer {k}")).unwrap(),
                );
            }
            r
        };
        let mut c = GrpcInferenceServiceClient::new(ch.clone());
        assert_status(
            c.model_infer(with_key(None, digits_raw("x"))).await,
            Code::Unauthenticated,
            "missing `Authorization: Bearer <key>` header",
        );
        assert_status(
            c.model_infer(with_key(
                Some("wrong-key-0123456789abcdef"),
                digits_raw("x"),
            ))
            .await,
            Code::Unauthenticated,
            "invalid API key",
        );
        for key in [ADMIN, SCORER] {
            let r = c.model_infer(with_key(Some(key), digits_raw("k"))).await;
            assert_eq!(r.unwrap().into_inner().id, "k");
        }
        let index = |key: Option<&str>| {
            let mut r = Request::new(pb::RepositoryIndexRequest::default());
            if let Some(k) = key {
                r.metadata_mut().insert(
                    "authorization",
                    MetadataValue::try_from(format!("Bearer {k}")).unwrap(),
                );
            }
            r
        };
        assert_status(
            c.repository_index(index(Some(SCORER))).await,
            Code::PermissionDenied,
            "needs an admin key; the key given has role score",
        );
        assert_status(
            c.repository_index(index(None)).await,
            Code::Unauthenticated,
            "missing",
        );
        assert!(!c
            .repository_index(index(Some(ADMIN)))
            .await
            .unwrap()
            .into_inner()
            .models
            .is_empty());
        let mut unload = Request::new(pb::RepositoryModelUnloadRequest {
            model_name: "digits".into(),
            ..Default::default()
        });
        unload.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {SCORER}")).unwrap(),
        );
        assert_status(
            c.repository_model_unload(unload).await,
            Code::PermissionDenied,
            "admin",
        );
        // A stream without a key is refused before it starts.
        assert_status(
            c.model_stream_infer(tokio_stream::iter(vec![digits_raw("s")]))
                .await,
            Code::Unauthenticated,
            "missing",
        );
        // Liveness, readiness and health need no key.
        assert!(
            c.server_live(pb::ServerLiveRequest {})
                .await
                .unwrap()
                .get_ref()
                .live
        );
        assert!(
            c.server_ready(pb::ServerReadyRequest {})
                .await
                .unwrap()
                .get_ref()
                .ready
        );
        let mut health = HealthClient::new(ch);
        let r = health.check(HealthCheckRequest::default()).await.unwrap();
        assert_eq!(r.get_ref().status, ServingStatus::Serving as i32);
        // The model is still there: the score key's unload was refused.
        assert!(c
            .model_infer(with_key(Some(SCORER), digits_raw("still")))
            .await
            .is_ok());
    });
}

#[test]
fn open_streams_are_bounded_and_refused_with_resource_exhausted() {
    let server = Server::start(repo_with(&["digits"]), &["--grpc-max-streams", "4"]);
    rt().block_on(async {
        let mut c = client(&server).await;
        // Four streams stay open (their request halves never end).
        let mut held = Vec::new();
        for i in 0..4 {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.send(digits_raw(&format!("held-{i}"))).await.unwrap();
            let mut s = c
                .model_stream_infer(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            let r = s.message().await.unwrap().unwrap();
            assert_eq!(r.error_message, "");
            held.push((tx, s));
        }
        // A fifth call, unary or stream, is refused at once; health checks still answer.
        assert_status(
            c.model_infer(digits_raw("fifth")).await,
            Code::ResourceExhausted,
            "4 calls open",
        );
        assert_status(
            c.model_stream_infer(tokio_stream::iter(vec![digits_raw("fifth")]))
                .await,
            Code::ResourceExhausted,
            "limit",
        );
        assert!(
            c.server_live(pb::ServerLiveRequest {})
                .await
                .unwrap()
                .get_ref()
                .live
        );
        // Closing one stream frees its place.
        let (tx, mut s) = held.pop().unwrap();
        drop(tx);
        assert!(s.message().await.unwrap().is_none());
        drop(s);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match c.model_infer(digits_raw("again")).await {
                Ok(r) => {
                    assert_eq!(r.into_inner().id, "again");
                    break;
                }
                Err(e) if e.code() == Code::ResourceExhausted && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
    });
}

/// The number of stream requests the server has run, from its metrics.
fn stream_requests(server: &Server) -> u64 {
    let metrics = metrics_text(server);
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("scoria_requests_total") && l.contains(r#"route="grpc/ModelStreamInfer""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_stream_that_is_never_read_stops_the_server_reading_it() {
    let server = Server::start(repo_with(&["digits"]), &[]);
    rt().block_on(async {
        let mut c = client(&server).await;
        // The producer offers 100 000 requests (≈ 30 MB); the client never reads a response.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let producer = tokio::spawn(async move {
            let mut sent = 0u32;
            for i in 0..100_000 {
                if tx.send(digits_raw(&i.to_string())).await.is_err() {
                    break;
                }
                sent += 1;
            }
            sent
        });
        let _responses = c
            .model_stream_infer(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap();
        // The server runs what fits in its buffers and the flow-control windows, then stops.
        let server_ref = &server;
        let mut last = u64::MAX;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let now = stream_requests(server_ref);
            if now == last {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the server kept reading: {now} requests run"
            );
            last = now;
        }
        assert!(last > 0 && last < 50_000, "{last} requests run");
        assert!(
            !producer.is_finished(),
            "the client could send every request"
        );
        // Other calls are served meanwhile.
        let mut other = client(&server).await;
        assert_eq!(
            other
                .model_infer(digits_raw("other"))
                .await
                .unwrap()
                .into_inner()
                .id,
            "other"
        );
        producer.abort();
    });
}

#[test]
fn sigterm_answers_what_a_stream_took_then_ends_it_with_unavailable() {
    let mut server = Server::start(repo_with(&["digits"]), &["--drain-timeout", "30s"]);
    rt().block_on(async {
        let mut c = client(&server).await;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(digits_raw("before")).await.unwrap();
        let mut s = c
            .model_stream_infer(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            s.message()
                .await
                .unwrap()
                .unwrap()
                .infer_response
                .unwrap()
                .id,
            "before"
        );
        server.signal(libc::SIGTERM);
        // The stream ends with UNAVAILABLE (its request half is still open), and the process
        // exits 0 once it has.
        let end = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match s.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("the stream ended OK; expected UNAVAILABLE"),
                    Err(e) => break e,
                }
            }
        })
        .await
        .expect("the stream was not ended after SIGTERM");
        assert_eq!(end.code(), Code::Unavailable, "{end:?}");
        assert!(end.message().contains("shutting down"), "{end:?}");
        drop(tx);
    });
    let code = server.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{}", server.stderr());
}

/// `--max-inflight` is one bound over both front ends: with two requests held in a batch
/// queue (one HTTP, one gRPC), a unary call is refused at once with UNAVAILABLE, a stream's
/// request gets an UNAVAILABLE error response while its stream goes on, and HTTP gets 503;
/// once the held requests are answered, both front ends are admitted again.
#[test]
fn max_inflight_bounds_grpc_and_http_together() {
    let repo = repo_with(&["digits"]);
    common::prepend_config(repo.path(), "digits", "max_batch_size = 8");
    common::append_config(
        repo.path(),
        "digits",
        "[dynamic_batching]\nmax_queue_delay_us = 1500000\npreferred_batch_size = [8]",
    );
    let server = Server::start(repo, &["--max-inflight", "2"]);
    rt().block_on(async {
        let mut c = client(&server).await;
        let mut held_grpc = c.clone();
        let held = tokio::spawn(async move { held_grpc.model_infer(digits_raw("held")).await });
        let http_url = server.url("/v2/models/digits/infer");
        let http_body = json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
            "data": DIGIT_ZERO.iter().map(|&p| f32::from(p)).collect::<Vec<_>>()}]})
        .to_string();
        let post = |url: String, body: String| {
            std::thread::spawn(move || {
                reqwest::blocking::Client::builder()
                    .no_proxy()
                    .build()
                    .unwrap()
                    .post(url)
                    .body(body)
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            })
        };
        let held_http = post(http_url.clone(), http_body.clone());
        // Both are admitted and wait for the batch's 1.5 s delay.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !metrics_text(&server).contains(r#"scoria_pending_requests{model="digits"} 2"#) {
            assert!(Instant::now() < deadline, "{}", metrics_text(&server));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let refused_at = Instant::now();
        let msg = assert_status(
            c.model_infer(digits_raw("third")).await,
            Code::Unavailable,
            "--max-inflight",
        );
        assert!(msg.contains("limit of 2"), "{msg}");
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut s = c
            .model_stream_infer(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        tx.send(digits_raw("streamed")).await.unwrap();
        let r = s.message().await.unwrap().unwrap();
        assert!(r.error_message.contains("--max-inflight"), "{r:?}");
        assert_eq!(r.infer_response.unwrap().id, "streamed");
        assert_eq!(
            blocking(|| post(http_url.clone(), http_body.clone()).join().unwrap()),
            503
        );
        assert!(
            refused_at.elapsed() < Duration::from_millis(1000),
            "refusals must not wait for the batch: {:?}",
            refused_at.elapsed()
        );
        // The held requests are answered; then everything is admitted again, the open
        // stream included.
        assert_eq!(held.await.unwrap().unwrap().into_inner().id, "held");
        assert_eq!(blocking(|| held_http.join().unwrap()), 200);
        tx.send(digits_raw("streamed-again")).await.unwrap();
        let r = s.message().await.unwrap().unwrap();
        assert_eq!(r.error_message, "", "{r:?}");
        assert_eq!(r.infer_response.unwrap().id, "streamed-again");
        assert_eq!(
            c.model_infer(digits_raw("again"))
                .await
                .unwrap()
                .into_inner()
                .id,
            "again"
        );
    });
}
