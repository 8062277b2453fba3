//! Request and result payloads.
//!
//! A request is the JSON body `/score` takes, optionally with an `"id"` (any JSON value) that
//! is echoed in its result. A result is
//! `{"id", "model", "version", "result"}` (with `"alert"` and `"alerts"` when the model has
//! thresholds) or, when the request failed, `{"id", "model", "error"}`; `"duplicate": true` marks a result that may repeat one already delivered
//! (a redelivered request, or a result resent after a reconnect or restart): consumers
//! deduplicate by id.

use crate::tensor::ErrorKind;
use serde_json::{Map, Value};

/// A request payload split into its id and the body to score.
#[derive(Debug)]
pub struct ParsedRequest {
    pub id: Value,
    /// The request without its `"id"`, as `/score` would get it.
    pub body: Vec<u8>,
}

/// Why a request produced no score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub id: Value,
    /// Whose fault it is (the core's one classification), sent as the result's `"kind"`.
    pub kind: ErrorKind,
    pub error: String,
}

/// Splits `payload` into id and scoring body; a payload that is not a JSON object, or is
/// larger than `max_bytes`, is rejected (with the id when one could be read).
pub fn parse_request(payload: &[u8], max_bytes: usize) -> Result<ParsedRequest, Rejected> {
    if payload.len() > max_bytes {
        return Err(Rejected {
            id: oversized_request_id(payload),
            kind: ErrorKind::TooLarge,
            error: format!(
                "request of {} bytes is over the size limit of {max_bytes} bytes (--max-message-size)",
                payload.len()
            ),
        });
    }
    let value: Value = serde_json::from_slice(payload).map_err(|e| Rejected {
        id: Value::Null,
        kind: ErrorKind::InvalidInput,
        error: format!("request is not JSON: {e}"),
    })?;
    let Value::Object(mut map) = value else {
        return Err(Rejected {
            id: Value::Null,
            kind: ErrorKind::InvalidInput,
            error: "request must be a JSON object".into(),
        });
    };
    let id = map.remove("id").unwrap_or(Value::Null);
    let body = serde_json::to_vec(&Value::Object(map)).map_err(|e| Rejected {
        id: id.clone(),
        kind: ErrorKind::Internal,
        error: format!("request cannot be re-encoded: {e}"),
    })?;
    Ok(ParsedRequest { id, body })
}

/// The id of an oversized request, so that its error result still names it: read from the
/// start of the payload when it comes first (`{"id": 7, ...`, at any size), else by scanning
/// the payload without building it (up to [`MAX_ID_SCAN_BYTES`]). `Null` when there is none.
fn oversized_request_id(payload: &[u8]) -> Value {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<Value>,
    }
    match leading_id(payload) {
        Value::Null if payload.len() <= MAX_ID_SCAN_BYTES => {
            serde_json::from_slice::<IdOnly>(payload)
                .ok()
                .and_then(|r| r.id)
                .unwrap_or(Value::Null)
        }
        id => id,
    }
}

/// Oversized requests up to this size are scanned for their id (the other values are
/// skipped, not built).
const MAX_ID_SCAN_BYTES: usize = 64 << 20;

/// The id of a request that starts `{"id": VALUE`, when VALUE ends within the first KiB.
fn leading_id(payload: &[u8]) -> Value {
    use serde::Deserialize;
    const HEAD: usize = 1024;
    let head = &payload[..payload.len().min(HEAD)];
    let skip_ws = |b: &[u8]| -> usize { b.iter().take_while(|c| c.is_ascii_whitespace()).count() };
    let mut at = skip_ws(head);
    for token in [&b"{"[..], b"\"id\"", b":"] {
        match head.get(at..) {
            Some(rest) if rest.starts_with(token) => at += token.len(),
            _ => return Value::Null,
        }
        at += head.get(at..).map_or(0, skip_ws);
    }
    let Some(rest) = head.get(at..) else {
        return Value::Null;
    };
    let mut de = serde_json::Deserializer::from_slice(rest);
    Value::deserialize(&mut de).unwrap_or(Value::Null)
}

/// A successful result. `alerts`: the thresholds it crosses, `None` when the model has none
/// (then the result carries no `"alert"` field).
pub fn result(
    id: Value,
    model: &str,
    version: u64,
    result: Value,
    alerts: Option<Vec<String>>,
    duplicate: bool,
) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), id);
    m.insert("model".into(), model.into());
    m.insert("version".into(), version.into());
    m.insert("result".into(), result);
    if let Some(alerts) = alerts {
        m.insert("alert".into(), (!alerts.is_empty()).into());
        if !alerts.is_empty() {
            m.insert("alerts".into(), alerts.into());
        }
    }
    if duplicate {
        m.insert("duplicate".into(), true.into());
    }
    Value::Object(m)
}

/// An error result.
pub fn error(id: Value, model: &str, kind: ErrorKind, error: &str, duplicate: bool) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), id);
    m.insert("model".into(), model.into());
    m.insert("error".into(), error.into());
    m.insert("kind".into(), kind.name().into());
    if duplicate {
        m.insert("duplicate".into(), true.into());
    }
    Value::Object(m)
}

/// `payload` with `"duplicate": true` added (for a result resent from the outbox); payloads
/// that are not JSON objects are returned unchanged.
pub fn mark_duplicate(payload: &[u8]) -> Option<Vec<u8>> {
    let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(payload) else {
        return None;
    };
    m.insert("duplicate".into(), true.into());
    serde_json::to_vec(&Value::Object(m)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn splits_id_from_body() {
        let r = parse_request(br#"{"id": "a-1", "data": [1, 2]}"#, 1024).unwrap();
        assert_eq!(r.id, json!("a-1"));
        assert_eq!(
            serde_json::from_slice::<Value>(&r.body).unwrap(),
            json!({"data": [1, 2]})
        );
        let r = parse_request(br#"{"data": 1}"#, 1024).unwrap();
        assert_eq!(r.id, Value::Null);
    }

    #[test]
    fn rejects_bad_payloads() {
        for (payload, max, want) in [
            (&b"not json"[..], 1024, "not JSON"),
            (&b"[1, 2]"[..], 1024, "JSON object"),
            (&br#"{"data": [1, 2, 3]}"#[..], 8, "over the size limit"),
        ] {
            let e = parse_request(payload, max).unwrap_err();
            assert!(e.error.contains(want), "{}", e.error);
        }
    }

    #[test]
    fn oversized_requests_keep_their_id() {
        let big = |head: &str| format!("{head}, \"data\": [{}]}}", "1,".repeat(100) + "1");
        for (payload, want) in [
            (big(r#"{"id": 7"#), json!(7)),
            (big(r#"  { "id" :"a-1""#), json!("a-1")),
            (big(r#"{"id": {"k": [1, 2]}"#), json!({"k": [1, 2]})),
            (big(r#"{"x": 1, "id": 7"#), json!(7)),
            (big(r#"{"x": 1, "id": 7, "id": 8"#), Value::Null),
            (big(r#"{"x": 1"#), Value::Null),
            (big(r#"["#), Value::Null),
            (
                format!(r#"{{"id": "{}", "data": []}}"#, "x".repeat(2000)),
                json!("x".repeat(2000)),
            ),
            (
                format!(r#"{{"id": "{}", "data": [}}"#, "x".repeat(2000)),
                Value::Null,
            ),
            ("{\"id\"".to_string(), Value::Null),
        ] {
            let e = parse_request(payload.as_bytes(), 4).unwrap_err();
            assert!(e.error.contains("over the size limit"), "{}", e.error);
            assert_eq!(e.id, want, "{payload}");
        }
    }

    #[test]
    fn results_echo_id_and_mark_duplicates() {
        assert_eq!(
            result(json!(7), "digits", 1, json!({"y": 1}), None, false),
            json!({"id": 7, "model": "digits", "version": 1, "result": {"y": 1}})
        );
        assert_eq!(
            result(
                json!(7),
                "m",
                1,
                json!(1),
                Some(vec!["y above 1".into()]),
                false
            ),
            json!({"id": 7, "model": "m", "version": 1, "result": 1, "alert": true,
                   "alerts": ["y above 1"]})
        );
        assert_eq!(
            result(json!(7), "m", 1, json!(1), Some(vec![]), false)["alert"],
            json!(false)
        );
        assert_eq!(
            error(
                json!(null),
                "x",
                ErrorKind::NotFound,
                "unknown model 'x'",
                true
            ),
            json!({"id": null, "model": "x", "error": "unknown model 'x'", "kind": "not_found",
                   "duplicate": true})
        );
        let marked = mark_duplicate(br#"{"id": 1}"#).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&marked).unwrap(),
            json!({"id": 1, "duplicate": true})
        );
        assert_eq!(mark_duplicate(b"[]"), None);
    }
}
