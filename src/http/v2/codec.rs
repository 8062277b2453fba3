//! Bodies of the v2 inference protocol: JSON tensors and the binary tensor data extension.
//!
//! A binary request is a JSON header of `Inference-Header-Content-Length` bytes followed by
//! the raw data of each input that carries `parameters.binary_data_size`, in input order.
//! Responses put outputs asked for as binary (`parameters.binary_data`, or the request-level
//! `binary_data_output`) after the JSON header the same way.

use super::wire::{
    InferenceRequest, InferenceResponse, Obj, RequestOutputParameters, ResponseData,
    ResponseOutput, ResponseOutputParameters,
};
use crate::batch::RequestOptions;
use crate::http::ApiError;
use crate::tensor::{
    decode_binary, decode_json_expecting, element_count, encode_binary, DataType, NamedTensor,
    Tensor,
};
use std::borrow::Cow;
use std::time::Duration;

pub use super::wire::FlatData;

/// The header naming the JSON part's length in a binary-extension body.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// A decoded inference request.
pub struct InferRequest {
    pub id: Option<String>,
    pub inputs: Vec<NamedTensor>,
    /// Requested outputs, in order; `None` for all.
    pub outputs: Option<Vec<String>>,
    /// Which outputs to return as binary data.
    pub binary: BinaryOutputs,
    /// `parameters.priority` and `parameters.timeout` (µs).
    pub options: RequestOptions,
}

/// Which outputs a client wants as binary data.
#[derive(Debug, Default, Clone)]
pub struct BinaryOutputs {
    default: bool,
    /// Per-output `binary_data` choices, overriding `default`.
    explicit: Vec<(String, bool)>,
}

impl BinaryOutputs {
    pub fn wants(&self, name: &str) -> bool {
        self.explicit
            .iter()
            .find(|(n, _)| n == name)
            .map_or(self.default, |(_, b)| *b)
    }
}

/// Decodes a v2 request body (whatever the Content-Type). `header_length` is the
/// `Inference-Header-Content-Length` header, present for binary-extension bodies.
pub fn decode_request(body: &[u8], header_length: Option<&[u8]>) -> Result<InferRequest, ApiError> {
    let bad = ApiError::BadRequest;
    let (json, mut binary) = match header_length {
        None => (body, &[][..]),
        Some(raw) => {
            let text = std::str::from_utf8(raw).unwrap_or("").trim();
            let n: usize = text.parse().map_err(|_| {
                bad(format!(
                    "Inference-Header-Content-Length '{}' is not a byte count (a whole number from 0 to the body's {} bytes)",
                    String::from_utf8_lossy(raw),
                    body.len()
                ))
            })?;
            if n > body.len() {
                return Err(bad(format!(
                    "Inference-Header-Content-Length {n} is larger than the {}-byte body",
                    body.len()
                )));
            }
            body.split_at(n)
        }
    };
    let req: InferenceRequest = match serde_json::from_slice::<Obj<InferenceRequest>>(json) {
        Ok(Obj(req)) => req,
        Err(e) => {
            return Err(bad(format!(
                "malformed inference request: {}",
                where_malformed(json, e)
            )))
        }
    };
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for input in req.inputs {
        let name = input.name;
        let err = |why: String| bad(format!("input '{name}': {why}"));
        let dtype = DataType::from_name(&input.datatype)
            .ok_or_else(|| err(format!("unsupported datatype '{}'", input.datatype)))?;
        let shape = input
            .shape
            .iter()
            .map(|&d| {
                usize::try_from(d)
                    .map_err(|_| err(format!("shape {:?} has a negative dimension", input.shape)))
            })
            .collect::<Result<Vec<usize>, _>>()?;
        let count =
            element_count(&shape).ok_or_else(|| err(format!("shape {shape:?} overflows")))?;
        let binary_data_size = input.parameters.and_then(|p| p.binary_data_size);
        let data = match (input.data, binary_data_size) {
            (Some(_), Some(_)) => return Err(err("has both \"data\" and binary_data_size".into())),
            (None, None) => return Err(err("no \"data\" and no binary_data_size".into())),
            (Some(data), None) => {
                let decoded = decode_json_expecting(dtype, data.get(), count).map_err(err)?;
                if decoded.data.len() != count {
                    return Err(err(format!(
                        "shape {shape:?} holds {count} elements but \"data\" has {}",
                        decoded.data.len()
                    )));
                }
                decoded.data
            }
            (None, Some(size)) => {
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                if size > binary.len() {
                    return Err(err(format!(
                        "binary_data_size {size} overruns the {} bytes of binary data left in the body",
                        binary.len()
                    )));
                }
                let (mine, rest) = binary.split_at(size);
                binary = rest;
                decode_binary(dtype, mine, count).map_err(err)?
            }
        };
        let tensor = Tensor::new(shape, data).map_err(|e| err(e.to_string()))?;
        inputs.push(NamedTensor { name, tensor });
    }
    if !binary.is_empty() {
        return Err(bad(format!(
            "{} bytes of binary data follow the inputs unused",
            binary.len()
        )));
    }
    let params = req.parameters.unwrap_or_default();
    let priority = match params.priority {
        None => 0,
        Some(p) => u32::try_from(p)
            .map_err(|_| bad(format!("parameters.priority: {p} is not a priority level")))?,
    };
    let options = RequestOptions {
        priority,
        timeout: params.timeout.map(Duration::from_micros),
    };
    let mut binary = BinaryOutputs {
        default: params.binary_data_output,
        explicit: Vec::new(),
    };
    // An empty list asks for nothing in particular: all outputs, as when it is absent.
    let outputs = req.outputs.filter(|o| !o.is_empty()).map(|outputs| {
        outputs
            .into_iter()
            .map(|o| {
                if let Some(RequestOutputParameters {
                    binary_data: Some(b),
                }) = o.parameters
                {
                    binary.explicit.push((o.name.clone(), b));
                }
                o.name
            })
            .collect()
    });
    Ok(InferRequest {
        id: req.id,
        inputs,
        outputs,
        binary,
        options,
    })
}

/// `e` with the path of the field it is about (`inputs[0].parameters.binary_data: ...`), found
/// by reading `json` again: only requests that fail pay for it.
fn where_malformed(json: &[u8], e: serde_json::Error) -> String {
    let mut de = serde_json::Deserializer::from_slice(json);
    match serde_path_to_error::deserialize::<_, Obj<InferenceRequest>>(&mut de) {
        Err(pe) => {
            let path = pe.path().to_string();
            if path.is_empty() || path == "." {
                e.to_string()
            } else {
                format!("{path}: {e}")
            }
        }
        Ok(_) => e.to_string(),
    }
}

/// An encoded response body and, for binary-extension bodies, the JSON header's length.
pub struct EncodedResponse {
    pub body: Vec<u8>,
    pub header_length: Option<usize>,
}

/// Encodes the response: one buffer with the JSON header and any binary outputs after it.
pub fn encode_response(
    model_name: &str,
    model_version: &str,
    id: Option<String>,
    outputs: &[NamedTensor],
    binary: &BinaryOutputs,
) -> Result<EncodedResponse, ApiError> {
    let mut blobs = Vec::new();
    let tensors = outputs
        .iter()
        .map(|t| {
            let (data, parameters) = if binary.wants(&t.name) {
                let size = encode_binary(t.tensor.data(), &mut blobs);
                (
                    None,
                    Some(ResponseOutputParameters {
                        binary_data_size: size,
                    }),
                )
            } else {
                (Some(ResponseData::Tensor(t.tensor.data())), None)
            };
            ResponseOutput {
                name: Cow::Borrowed(&t.name),
                datatype: Cow::Borrowed(t.tensor.dtype().name()),
                shape: Cow::Borrowed(t.tensor.shape()),
                parameters,
                data,
            }
        })
        .collect();
    let response = InferenceResponse {
        model_name: Cow::Borrowed(model_name),
        model_version: Cow::Borrowed(model_version),
        id,
        outputs: tensors,
    };
    let mut body = serde_json::to_vec(&response)
        .map_err(|e| ApiError::Internal(format!("response could not be encoded: {e}")))?;
    if blobs.is_empty() && !outputs.iter().any(|o| binary.wants(&o.name)) {
        return Ok(EncodedResponse {
            body,
            header_length: None,
        });
    }
    let header_length = body.len();
    body.extend_from_slice(&blobs);
    Ok(EncodedResponse {
        body,
        header_length: Some(header_length),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorData;

    fn err(body: &str) -> String {
        match decode_request(body.as_bytes(), None) {
            Ok(_) => panic!("accepted {body}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn decodes_flat_and_nested() {
        let r = decode_request(
            br#"{"id":"7","inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[[1,2],[3,4]]}],"outputs":[{"name":"y"}]}"#,
            None,
        )
        .unwrap();
        assert_eq!(r.id.as_deref(), Some("7"));
        assert_eq!(
            r.inputs[0].tensor.data(),
            &TensorData::I32(vec![1, 2, 3, 4])
        );
        assert_eq!(r.outputs, Some(vec!["y".to_string()]));
        assert!(!r.binary.wants("y"));
    }

    #[test]
    fn precise_errors() {
        assert!(err("{").contains("malformed inference request"));
        assert!(err("{}").contains("missing field `inputs`"));
        let i = |shape: &str, dt: &str, data: &str| {
            err(&format!(
                r#"{{"inputs":[{{"name":"x","shape":{shape},"datatype":"{dt}","data":{data}}}]}}"#
            ))
        };
        assert!(i("[2]", "FP8", "[1,2]").contains("unsupported datatype 'FP8'"));
        assert!(i("[-1]", "FP32", "[1]").contains("negative dimension"));
        assert!(i("[4294967296,4294967296,4294967296]", "FP32", "[1]").contains("overflows"));
        assert!(i("[3]", "FP32", "[1,2]").contains("holds 3 elements but \"data\" has 2"));
        assert!(i("[2]", "FP32", "[1,\"a\"]").contains("element 1"));
    }

    fn binary_body(json: &str, blob: &[u8]) -> Vec<u8> {
        let mut body = json.as_bytes().to_vec();
        body.extend_from_slice(blob);
        body
    }

    #[test]
    fn binary_inputs_and_errors() {
        let json = r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}],"parameters":{"binary_data_output":true}}"#;
        let blob: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|f| f.to_le_bytes()).collect();
        let len = json.len().to_string();
        let r = decode_request(&binary_body(json, &blob), Some(len.as_bytes())).unwrap();
        assert_eq!(r.inputs[0].tensor.data(), &TensorData::F32(vec![1.0, 2.0]));
        assert!(r.binary.wants("anything"));

        let e = |body: &[u8], header: &str| {
            decode_request(body, Some(header.as_bytes()))
                .err()
                .unwrap()
                .to_string()
        };
        assert!(e(&binary_body(json, &blob), "abc").contains("'abc' is not a byte count"));
        assert!(e(&binary_body(json, &blob), "100000").contains("larger than"));
        assert!(e(&binary_body(json, &blob[..4]), &len).contains("overruns"));
        let mut extra = blob.clone();
        extra.push(0);
        assert!(e(&binary_body(json, &extra), &len).contains("1 bytes of binary data follow"));
        let json7 = json.replace("\"binary_data_size\":8", "\"binary_data_size\":7");
        let len7 = json7.len().to_string();
        assert!(e(&binary_body(&json7, &blob[..7]), &len7).contains("binary_data_size 7 disagrees"));
    }

    #[test]
    fn encodes_json_and_binary_outputs() {
        let t = NamedTensor {
            name: "y".into(),
            tensor: Tensor::new(vec![1, 2], TensorData::Bool(vec![true, false])).unwrap(),
        };
        let r = encode_response(
            "m",
            "1",
            None,
            std::slice::from_ref(&t),
            &BinaryOutputs::default(),
        )
        .unwrap();
        assert_eq!(r.header_length, None);
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            r#"{"model_name":"m","model_version":"1","outputs":[{"name":"y","datatype":"BOOL","shape":[1,2],"data":[true,false]}]}"#
        );
        let binary = BinaryOutputs {
            default: false,
            explicit: vec![("y".into(), true)],
        };
        let r = encode_response("m", "1", Some("a".into()), &[t], &binary).unwrap();
        let n = r.header_length.unwrap();
        let header: serde_json::Value = serde_json::from_slice(&r.body[..n]).unwrap();
        assert_eq!(header["outputs"][0]["parameters"]["binary_data_size"], 2);
        assert!(header["outputs"][0].get("data").is_none());
        assert_eq!(&r.body[n..], &[1, 0]);
    }
}
