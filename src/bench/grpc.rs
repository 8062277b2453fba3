//! The `--url grpc://` client: Triton's `inference.GRPCInferenceService`, one HTTP/2
//! connection per worker, as perf_analyzer's `-i grpc` sends it.

use super::Protocol;
use crate::grpc::proto::inference as pb;
use crate::grpc::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::grpc::proto::inference::model_infer_request::InferInputTensor;
use crate::http::v2::wire::{ModelMetadata, TensorMetadata};
use crate::tensor::{encode_binary, NamedTensor, TensorData};
use std::borrow::Cow;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

/// Triton's gRPC port, used when the URL names none.
pub const DEFAULT_PORT: u16 = 8001;

/// Where the server is (`grpc://HOST[:PORT]`) and the key to send.
#[derive(Debug, Clone)]
pub struct GrpcEndpoint {
    /// `HOST:PORT` as messages show it.
    authority: String,
    endpoint: Endpoint,
    api_key: Option<MetadataValue<Ascii>>,
}

impl GrpcEndpoint {
    /// Parses `grpc://HOST[:PORT]` (no path, no TLS); `api_key` goes out as
    /// `authorization: Bearer <key>` metadata.
    pub fn parse(url: &str, api_key: Option<&str>) -> Result<GrpcEndpoint, String> {
        let rest = url
            .strip_prefix("grpc://")
            .ok_or_else(|| format!("'{url}' is not a grpc://HOST:PORT URL"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "'{url}': a gRPC URL is grpc://HOST[:PORT], with no path"
            ));
        }
        let uri: http::Uri = format!("http://{authority}")
            .parse()
            .map_err(|e| format!("'{url}' is not a URL: {e}"))?;
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("'{url}' names no host"))?;
        let authority = format!("{host}:{}", uri.port_u16().unwrap_or(DEFAULT_PORT));
        let endpoint = Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| format!("'{url}': {e}"))?
            .connect_timeout(super::http::CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let api_key = api_key
            .map(|k| {
                MetadataValue::try_from(format!("Bearer {k}"))
                    .map_err(|_| "the API key has characters a header cannot carry".to_string())
            })
            .transpose()?;
        Ok(GrpcEndpoint {
            authority,
            endpoint,
            api_key,
        })
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }
}

/// One connection to the server.
pub struct GrpcClient {
    inner: GrpcInferenceServiceClient<Channel>,
    api_key: Option<MetadataValue<Ascii>>,
    authority: String,
}

impl GrpcClient {
    /// Opens a connection.
    pub async fn connect(ep: &GrpcEndpoint) -> Result<GrpcClient, String> {
        let channel = ep.endpoint.connect().await.map_err(|e| {
            format!(
                "cannot connect to {}: {}",
                ep.authority,
                super::http::chain(&e)
            )
        })?;
        Ok(GrpcClient {
            inner: GrpcInferenceServiceClient::new(channel).max_decoding_message_size(usize::MAX),
            api_key: ep.api_key.clone(),
            authority: ep.authority.clone(),
        })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        if let Some(key) = &self.api_key {
            req.metadata_mut().insert("authorization", key.clone());
        }
        req
    }

    fn error(&self, call: &str, status: &tonic::Status) -> String {
        format!(
            "{call} on grpc://{}: {:?}: {}",
            self.authority,
            status.code(),
            status.message()
        )
    }

    /// The model's metadata in its v2 wire form.
    pub async fn metadata(
        &mut self,
        name: &str,
        version: Option<u64>,
    ) -> Result<ModelMetadata<'static>, String> {
        let req = self.request(pb::ModelMetadataRequest {
            name: name.to_string(),
            version: version.map_or_else(String::new, |v| v.to_string()),
        });
        let m = self
            .inner
            .model_metadata(req)
            .await
            .map_err(|s| self.error("ModelMetadata", &s))?
            .into_inner();
        let tensors = |ts: Vec<pb::model_metadata_response::TensorMetadata>| {
            ts.into_iter()
                .map(|t| TensorMetadata {
                    name: Cow::Owned(t.name),
                    datatype: Cow::Owned(t.datatype),
                    shape: t.shape,
                })
                .collect()
        };
        Ok(ModelMetadata {
            name: Cow::Owned(m.name),
            versions: m.versions,
            platform: Cow::Owned(m.platform),
            inputs: tensors(m.inputs),
            outputs: tensors(m.outputs),
            parameters: None,
        })
    }

    /// The parts of the model's configuration a run's record keeps: backend, platform,
    /// batching.
    pub async fn config(
        &mut self,
        name: &str,
        version: Option<u64>,
    ) -> Result<serde_json::Value, String> {
        let req = self.request(pb::ModelConfigRequest {
            name: name.to_string(),
            version: version.map_or_else(String::new, |v| v.to_string()),
        });
        let config = self
            .inner
            .model_config(req)
            .await
            .map_err(|s| self.error("ModelConfig", &s))?
            .into_inner()
            .config
            .unwrap_or_default();
        Ok(serde_json::json!({
            "backend": config.backend,
            "platform": config.platform,
            "max_batch_size": config.max_batch_size,
            "dynamic_batching": config.scheduling_choice.is_some(),
            "instance_groups": config.instance_group.iter().map(|g| g.count).sum::<i32>(),
        }))
    }

    /// Sends one inference request; an error for anything but OK.
    pub async fn infer(&mut self, message: &pb::ModelInferRequest) -> Result<(), String> {
        let req = self.request(message.clone());
        self.inner
            .model_infer(req)
            .await
            .map(drop)
            .map_err(|s| self.error("ModelInfer", &s))
    }
}

/// The one request every worker sends: inputs as raw contents (`--protocol binary`, as
/// perf_analyzer sends them) or typed contents (`--protocol json`).
pub fn infer_request(
    model: &str,
    version: Option<u64>,
    inputs: &[NamedTensor],
    protocol: Protocol,
) -> pb::ModelInferRequest {
    let mut raw = Vec::new();
    let tensors = inputs
        .iter()
        .map(|t| {
            let contents = match protocol {
                Protocol::Binary => {
                    let mut bytes = Vec::new();
                    encode_binary(t.tensor.data(), &mut bytes);
                    raw.push(bytes.into());
                    None
                }
                Protocol::Json => Some(typed(t.tensor.data())),
            };
            InferInputTensor {
                name: t.name.clone(),
                datatype: t.tensor.dtype().name().to_string(),
                shape: t
                    .tensor
                    .shape()
                    .iter()
                    .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
                    .collect(),
                parameters: Default::default(),
                contents,
            }
        })
        .collect();
    pb::ModelInferRequest {
        model_name: model.to_string(),
        model_version: version.map_or_else(String::new, |v| v.to_string()),
        inputs: tensors,
        raw_input_contents: raw,
        ..Default::default()
    }
}

/// A tensor's elements in the typed `contents` field for its datatype.
fn typed(data: &TensorData) -> pb::InferTensorContents {
    let mut c = pb::InferTensorContents::default();
    match data {
        TensorData::Bool(v) => c.bool_contents = v.clone(),
        TensorData::U8(v) => c.uint_contents = v.iter().map(|&x| u32::from(x)).collect(),
        TensorData::U16(v) => c.uint_contents = v.iter().map(|&x| u32::from(x)).collect(),
        TensorData::U32(v) => c.uint_contents = v.clone(),
        TensorData::U64(v) => c.uint64_contents = v.clone(),
        TensorData::I8(v) => c.int_contents = v.iter().map(|&x| i32::from(x)).collect(),
        TensorData::I16(v) => c.int_contents = v.iter().map(|&x| i32::from(x)).collect(),
        TensorData::I32(v) => c.int_contents = v.clone(),
        TensorData::I64(v) => c.int64_contents = v.clone(),
        TensorData::F32(v) => c.fp32_contents = v.clone(),
        TensorData::F64(v) => c.fp64_contents = v.clone(),
        TensorData::Bytes(v) => c.bytes_contents = v.clone(),
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    #[test]
    fn parses_urls() {
        let e = GrpcEndpoint::parse("grpc://127.0.0.1:9000", None).unwrap();
        assert_eq!(e.authority(), "127.0.0.1:9000");
        let e = GrpcEndpoint::parse("grpc://localhost/", Some("k")).unwrap();
        assert_eq!(e.authority(), "localhost:8001");
        assert!(e.api_key.is_some());
        for bad in [
            "http://x:1",
            "grpc://",
            "grpc://x:1/v2",
            "grpc://x:1?a=b",
            "x:1",
        ] {
            assert!(GrpcEndpoint::parse(bad, None).is_err(), "{bad}");
        }
        assert!(GrpcEndpoint::parse("grpc://x:1", Some("a\nb")).is_err());
    }

    #[test]
    fn requests_carry_raw_or_typed_contents() {
        let inputs = vec![NamedTensor {
            name: "input".into(),
            tensor: Tensor::new(vec![1, 2], TensorData::F32(vec![1.0, 2.0])).unwrap(),
        }];
        let raw = infer_request("m", Some(3), &inputs, Protocol::Binary);
        assert_eq!(
            (raw.model_name.as_str(), raw.model_version.as_str()),
            ("m", "3")
        );
        assert_eq!(raw.inputs[0].shape, vec![1, 2]);
        assert_eq!(raw.inputs[0].datatype, "FP32");
        assert!(raw.inputs[0].contents.is_none());
        assert_eq!(
            raw.raw_input_contents[0].as_ref(),
            [1f32.to_le_bytes(), 2f32.to_le_bytes()].concat()
        );
        let typed = infer_request("m", None, &inputs, Protocol::Json);
        assert!(typed.raw_input_contents.is_empty());
        assert_eq!(typed.model_version, "");
        assert_eq!(
            typed.inputs[0].contents.as_ref().unwrap().fp32_contents,
            vec![1.0, 2.0]
        );
    }
}
