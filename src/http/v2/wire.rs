//! The Open Inference Protocol v2's JSON bodies, in one place: what the codec decodes and
//! encodes, what `GET /swagger.json` documents (the schema names are these type names) and
//! what `scoria bench --url` sends. Protocol strings such as the repository states live here,
//! not in the serving core.
//!
//! Decoding is strict where serde alone is lenient: every object of a request must be written
//! as a JSON object (serde's derived structs also take an array of their fields in order,
//! which no client means), and a `parameters` of `null` is the same as none. Field names in
//! decoding errors come from `serde_path_to_error` at the call site ([`super::codec`]).
//!
//! Types that borrow (`'a`) do so to keep the hot paths free of copies: a request's tensor
//! data stays a slice of the body until the codec parses it for the model's datatype, and a
//! response serializes the engine's output tensors in place.

use crate::models::{IndexEntry, IndexState};
use crate::tensor::{TensorData, Utf8};
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::marker::PhantomData;
use utoipa::ToSchema;

/// `{"error": "<precise reason>"}`, the body of every error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// A v2 inference request (JSON, or a JSON header followed by binary tensor data).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InferenceRequest<'a> {
    /// Echoed in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(borrow, deserialize_with = "objects")]
    pub inputs: Vec<RequestInput<'a>>,
    /// Outputs to return, in order (all when absent or empty).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_objects"
    )]
    pub outputs: Option<Vec<RequestOutput>>,
    /// `binary_data_output: true` returns every output as binary data.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "parameters"
    )]
    #[schema(inline)]
    pub parameters: Option<RequestParameters>,
}

/// Request-level parameters scoria reads (others are ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RequestParameters {
    /// Every output as binary data unless an output's own `binary_data` says otherwise.
    #[serde(default)]
    pub binary_data_output: bool,
    /// Priority level (1 is the highest) for models with `priority_levels`; 0 or absent:
    /// the model's default level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u64>,
    /// Queue timeout in microseconds, honoured when the model's queue policy allows
    /// overrides and it is shorter than the policy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

/// One input tensor of a v2 inference request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RequestInput<'a> {
    pub name: String,
    /// Dimensions; their product is the element count.
    // Signed, so that the codec refuses a negative dimension by name, not as a type error.
    #[schema(value_type = Vec<u64>)]
    pub shape: Vec<i64>,
    /// FP32, FP64, INT8..INT64, UINT8..UINT64, BOOL or BYTES.
    pub datatype: String,
    /// Flat or nested array of elements (absent when sent as binary data).
    // Borrowed from the body as it is, until the codec parses it for `datatype`.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<&'a RawValue>,
    /// `binary_data_size`: the length of this input's binary data after the JSON header.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "parameters"
    )]
    #[schema(inline)]
    pub parameters: Option<InputParameters>,
}

/// Input parameters scoria reads (others are ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InputParameters {
    /// The input's data is this many bytes of the binary part, after the JSON header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_data_size: Option<u64>,
}

/// A requested output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RequestOutput {
    pub name: String,
    /// `binary_data: true` to receive it as binary data.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "parameters"
    )]
    #[schema(inline)]
    pub parameters: Option<RequestOutputParameters>,
}

/// Requested-output parameters scoria reads (others are ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RequestOutputParameters {
    /// This output as binary data (`true`) or JSON (`false`), whatever the request's
    /// `binary_data_output` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_data: Option<bool>,
}

/// A v2 inference response.
// Serialized, it is the JSON (header) the codec sends.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InferenceResponse<'a> {
    #[schema(value_type = String)]
    pub model_name: Cow<'a, str>,
    #[schema(value_type = String)]
    pub model_version: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<ResponseOutput<'a>>,
}

/// One output tensor of a v2 inference response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ResponseOutput<'a> {
    #[schema(value_type = String)]
    pub name: Cow<'a, str>,
    #[schema(value_type = String)]
    pub datatype: Cow<'a, str>,
    #[schema(value_type = Vec<u64>)]
    pub shape: Cow<'a, [usize]>,
    /// `binary_data_size` when the output follows the JSON header as binary data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(inline)]
    pub parameters: Option<ResponseOutputParameters>,
    /// Flat array of elements (absent when returned as binary data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<ResponseData<'a>>,
}

/// Parameters of a response output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResponseOutputParameters {
    /// The output's data is this many bytes of the binary part, after the JSON header.
    pub binary_data_size: usize,
}

/// The `data` of a response output: written from the engine's tensor in place, read back as
/// any JSON.
#[derive(Debug)]
pub enum ResponseData<'a> {
    /// Serialized as [`FlatData`].
    Tensor(&'a TensorData),
    /// What a decoded response carried.
    Json(serde_json::Value),
}

impl Serialize for ResponseData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ResponseData::Tensor(t) => FlatData(t).serialize(s),
            ResponseData::Json(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ResponseData<'_> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(d).map(ResponseData::Json)
    }
}

/// Tensor elements serialized as one flat JSON array (BYTES as strings; non-finite floats as
/// `null`, as serde_json writes them).
pub struct FlatData<'a>(pub &'a TensorData);

impl Serialize for FlatData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::with_tensor_data!(self.0, v => v.serialize(s), b => s.collect_seq(b.iter().map(|e| Utf8(e))))
    }
}

/// `GET /v2`: the server's name, version and protocol extensions. Fields are in the order
/// the server has always written them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerMetadata<'a> {
    pub extensions: Vec<Cow<'a, str>>,
    pub name: Cow<'a, str>,
    pub version: Cow<'a, str>,
}

/// Name, datatype and shape (`-1` for dynamic dimensions) of a model tensor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TensorMetadata<'a> {
    #[schema(value_type = String)]
    pub name: Cow<'a, str>,
    #[schema(value_type = String)]
    pub datatype: Cow<'a, str>,
    pub shape: Vec<i64>,
}

/// v2 model metadata.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelMetadata<'a> {
    #[schema(value_type = String)]
    pub name: Cow<'a, str>,
    /// Every version that is ready to serve.
    pub versions: Vec<String>,
    #[schema(value_type = String)]
    pub platform: Cow<'a, str>,
    pub inputs: Vec<TensorMetadata<'a>>,
    pub outputs: Vec<TensorMetadata<'a>>,
    /// Engine facts, for engines that split the model between a device and the CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<serde_json::Value>,
}

/// `GET /v2/health/live`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Live {
    pub live: bool,
}

/// `GET /v2/health/ready`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ready {
    pub ready: bool,
}

/// `GET /v2/models/{m}[/versions/{v}]/ready` when the model can serve. Fields are in the
/// order the server has always written them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelReady<'a> {
    pub name: Cow<'a, str>,
    pub ready: bool,
    pub version: Cow<'a, str>,
}

/// A model's state in the repository extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RepositoryState {
    Ready,
    Loading,
    Unavailable,
}

impl From<IndexState> for RepositoryState {
    fn from(s: IndexState) -> Self {
        match s {
            IndexState::Ready => RepositoryState::Ready,
            IndexState::Loading => RepositoryState::Loading,
            IndexState::Unavailable => RepositoryState::Unavailable,
        }
    }
}

/// One row of `POST /v2/repository/index`, and the answer of a load or unload (name and
/// state only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryModel {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub state: RepositoryState,
    /// Why the model (version) is unavailable; empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl From<IndexEntry> for RepositoryModel {
    fn from(e: IndexEntry) -> Self {
        RepositoryModel {
            name: e.name,
            version: e.version,
            state: e.state.into(),
            reason: e.reason,
        }
    }
}

/// The body of `POST /v2/repository/index` (empty means `{}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RepositoryIndexRequest {
    /// Only the models that are ready.
    #[serde(default)]
    pub ready: bool,
}

/// A `T` that must be written as a JSON object: serde's derived structs also accept an array
/// of their fields in order, which no client means. Decode a whole request as `Obj<T>`.
pub struct Obj<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(ObjVisitor(PhantomData)).map(Obj)
    }
}

/// A list whose every element must be a JSON object.
fn objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    struct SeqVisitor<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for SeqVisitor<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            // As serde's own Vec: a size hint is trusted only so far.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(Obj(item)) = seq.next_element::<Obj<T>>()? {
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(SeqVisitor(PhantomData))
}

/// An optional list of objects: absent and `null` are none.
fn optional_objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error> {
    struct Objects<T>(Vec<T>);
    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Objects<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            objects(d).map(Objects)
        }
    }
    Ok(Option::<Objects<T>>::deserialize(d)?.map(|o| o.0))
}

/// A `parameters` object: absent and `null` are none, anything but an object is refused.
fn parameters<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    Ok(Option::<Obj<T>>::deserialize(d)?.map(|o| o.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str) -> Result<InferenceRequest<'_>, String> {
        serde_json::from_str::<Obj<InferenceRequest>>(json)
            .map(|o| o.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn requests_round_trip_and_borrow_their_data() {
        let json = r#"{"id":"7","inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1,2]}],"outputs":[{"name":"y","parameters":{"binary_data":true}}],"parameters":{"binary_data_output":true}}"#;
        let r = decode(json).unwrap();
        assert_eq!(r.inputs[0].data.map(RawValue::get), Some("[1,2]"));
        assert_eq!(
            r.outputs.as_ref().unwrap()[0].parameters,
            Some(RequestOutputParameters {
                binary_data: Some(true)
            })
        );
        assert_eq!(serde_json::to_string(&r).unwrap(), json);
    }

    #[test]
    fn objects_only_and_null_parameters() {
        let e = decode(r#"{"inputs":[["x",[1],"FP32",[1]]]}"#).unwrap_err();
        assert!(e.contains("expected a JSON object"), "{e}");
        assert!(decode(r#"["7",[]]"#).is_err());
        assert!(decode(r#"{"inputs":[],"parameters":[true]}"#).is_err());
        let r = decode(r#"{"inputs":[],"outputs":null,"parameters":null}"#).unwrap();
        assert!(r.outputs.is_none() && r.parameters.is_none());
    }

    #[test]
    fn repository_states_are_protocol_strings() {
        let m = RepositoryModel {
            name: "digits".into(),
            version: None,
            state: IndexState::Unavailable.into(),
            reason: String::new(),
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"name":"digits","state":"UNAVAILABLE"}"#
        );
        let back: RepositoryModel =
            serde_json::from_str(r#"{"name":"d","version":"1","state":"LOADING"}"#).unwrap();
        assert_eq!(back.state, RepositoryState::Loading);
    }

    #[test]
    fn responses_decode() {
        let r: InferenceResponse = serde_json::from_str(
            r#"{"model_name":"m","model_version":"1","outputs":[{"name":"y","datatype":"FP32","shape":[1],"data":[0.5]}]}"#,
        )
        .unwrap();
        assert_eq!(r.outputs[0].shape.as_ref(), &[1]);
        assert!(matches!(&r.outputs[0].data, Some(ResponseData::Json(v)) if v[0] == 0.5));
    }
}
