//! JSON bodies of the v2 inference protocol: request decoding into tensors, response encoding.

use crate::http::ApiError;
use crate::models::NamedTensor;
use crate::tensor::{decode_json, element_count, DataType, Tensor, TensorData};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct RequestJson<'a> {
    id: Option<String>,
    #[serde(borrow)]
    inputs: Vec<InputJson<'a>>,
    #[serde(default)]
    outputs: Option<Vec<OutputJson>>,
}

#[derive(Deserialize)]
struct InputJson<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct OutputJson {
    name: String,
}

/// A decoded inference request.
pub struct InferRequest {
    pub id: Option<String>,
    pub inputs: Vec<NamedTensor>,
    /// Requested outputs, in order; `None` for all.
    pub outputs: Option<Vec<String>>,
}

/// Decodes a v2 JSON inference request (whatever the Content-Type).
pub fn decode_request(body: &[u8]) -> Result<InferRequest, ApiError> {
    let bad = ApiError::BadRequest;
    let req: RequestJson = serde_json::from_slice(body)
        .map_err(|e| bad(format!("malformed inference request: {e}")))?;
    let inputs = req
        .inputs
        .into_iter()
        .map(|input| {
            let name = input.name;
            let err = |why: String| bad(format!("input '{name}': {why}"));
            let dtype = DataType::from_name(&input.datatype)
                .ok_or_else(|| err(format!("unsupported datatype '{}'", input.datatype)))?;
            let shape = input
                .shape
                .iter()
                .map(|&d| {
                    usize::try_from(d).map_err(|_| {
                        err(format!("shape {:?} has a negative dimension", input.shape))
                    })
                })
                .collect::<Result<Vec<usize>, _>>()?;
            let count =
                element_count(&shape).ok_or_else(|| err(format!("shape {shape:?} overflows")))?;
            let data = input.data.ok_or_else(|| err("no \"data\"".to_string()))?;
            let decoded = decode_json(dtype, data.get()).map_err(err)?;
            if decoded.data.len() != count {
                return Err(err(format!(
                    "shape {shape:?} holds {count} elements but \"data\" has {}",
                    decoded.data.len()
                )));
            }
            let tensor = Tensor::new(shape, decoded.data).map_err(|e| err(e.to_string()))?;
            Ok(NamedTensor { name, tensor })
        })
        .collect::<Result<_, _>>()?;
    Ok(InferRequest {
        id: req.id,
        inputs,
        outputs: req.outputs.map(|o| o.into_iter().map(|o| o.name).collect()),
    })
}

/// A v2 JSON inference response.
#[derive(Serialize)]
pub struct InferResponse<'a> {
    pub model_name: &'a str,
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<OutputTensor<'a>>,
}

/// One output tensor with flat `data`.
#[derive(Serialize)]
pub struct OutputTensor<'a> {
    pub name: &'a str,
    pub datatype: &'static str,
    pub shape: &'a [usize],
    pub data: FlatData<'a>,
}

impl<'a> From<&'a NamedTensor> for OutputTensor<'a> {
    fn from(t: &'a NamedTensor) -> Self {
        OutputTensor {
            name: &t.name,
            datatype: t.tensor.dtype().name(),
            shape: t.tensor.shape(),
            data: FlatData(t.tensor.data()),
        }
    }
}

/// Elements serialized as one flat JSON array.
pub struct FlatData<'a>(pub &'a TensorData);

impl Serialize for FlatData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::with_tensor_data!(self.0, v => v.serialize(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        match decode_request(body.as_bytes()) {
            Ok(_) => panic!("accepted {body}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn decodes_flat_and_nested() {
        let r = decode_request(
            br#"{"id":"7","inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[[1,2],[3,4]]}],"outputs":[{"name":"y"}]}"#,
        )
        .unwrap();
        assert_eq!(r.id.as_deref(), Some("7"));
        assert_eq!(
            r.inputs[0].tensor.data(),
            &TensorData::I32(vec![1, 2, 3, 4])
        );
        assert_eq!(r.outputs, Some(vec!["y".to_string()]));
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

    #[test]
    fn encodes_flat() {
        let t = NamedTensor {
            name: "y".into(),
            tensor: Tensor::new(vec![1, 2], TensorData::Bool(vec![true, false])).unwrap(),
        };
        let resp = InferResponse {
            model_name: "m",
            model_version: "1".into(),
            id: None,
            outputs: vec![(&t).into()],
        };
        assert_eq!(
            serde_json::to_string(&resp).unwrap(),
            r#"{"model_name":"m","model_version":"1","outputs":[{"name":"y","datatype":"BOOL","shape":[1,2],"data":[true,false]}]}"#
        );
    }
}
