//! One request, from its arrival to its acknowledgement: parse, score on a blocking thread
//! through the serving core (hook, batching, versions and metrics shared with REST), write
//! the result durably to the outbox, and only then acknowledge the request to the broker.

use super::link::InMsg;
use super::message::{self, Rejected};
use super::outbox::Record;
use super::topics::Topics;
use super::Ctx;
use crate::models::score::score_blocking;
use crate::tensor::ErrorKind;
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

/// Where a request's answer goes.
pub enum Target {
    /// A request on a model's input topic: the result topic, or the MQTT 5 response topic.
    Model(String),
    /// An IoT Hub direct method call with request id `rid`; the model is named in the body
    /// (`"model"`), or is the only one served.
    Method { rid: String },
}

/// Payloads larger than this are parsed on a blocking thread.
const INLINE_PARSE_BYTES: usize = 64 << 10;

/// Handles one request to completion. Errors become error results; only a failing outbox
/// leaves the request unacknowledged (the broker redelivers it after a reconnect).
pub async fn handle(ctx: Arc<Ctx>, msg: InMsg, target: Target) {
    let started = Instant::now();
    // Counted on arrival (under the served model's name, or `_unknown`), scored after.
    let label = |model: &str| -> String {
        if ctx.served.iter().any(|m| m == model) {
            model.to_string()
        } else {
            "_unknown".to_string()
        }
    };
    let (model, outcome) = match &target {
        Target::Model(model) => {
            ctx.stats.received(&label(model));
            (model.clone(), score(&ctx, model, &msg.payload, &msg).await)
        }
        Target::Method { .. } => match method_request(&ctx, &msg.payload) {
            Ok((model, body)) => {
                ctx.stats.received(&label(&model));
                let outcome = score(&ctx, &model, &body, &msg).await;
                (model, outcome)
            }
            Err(r) => {
                ctx.stats.received("_unknown");
                (String::new(), Err(r))
            }
        },
    };
    let label = label(&model);
    let label = label.as_str();
    let ok = outcome.is_ok();
    let status = match &outcome {
        Ok(_) => 200,
        Err(r) => r.kind.http_status(),
    };
    let payload = match outcome {
        Ok(v) => v,
        Err(r) => {
            tracing::debug!("request on {} failed: {}", msg.topic, r.error);
            message::error(r.id, &model, r.kind, &r.error, msg.dup)
        }
    };
    let topic = match &target {
        Target::Model(m) => msg
            .response_topic
            .clone()
            .filter(|t| super::topics::valid_topic_name(t).is_ok())
            .unwrap_or_else(|| ctx.topics.result(m)),
        Target::Method { rid } => Topics::method_response(status, rid),
    };
    let record = Record {
        topic,
        payload: serde_json::to_vec(&payload).unwrap_or_default().into(),
        correlation: msg.correlation.clone(),
    };
    if let Err(e) = ctx.outbox.append(record).await {
        tracing::error!(
            "result for {} not stored, request left unacknowledged: {e}",
            msg.topic
        );
        return;
    }
    ctx.stats.finished(label, ok, started.elapsed());
    if let Err(e) = ctx.client.ack(msg.ack).await {
        tracing::warn!("cannot acknowledge a request (the broker will redeliver it): {e}");
    }
}

/// Scores `msg` on `model`: the result message, or why not.
async fn score(ctx: &Ctx, model: &str, payload: &[u8], msg: &InMsg) -> Result<Value, Rejected> {
    // Parsing a large payload takes milliseconds: not on the executor.
    let req = if payload.len() > INLINE_PARSE_BYTES {
        let (payload, max) = (bytes::Bytes::copy_from_slice(payload), ctx.max_message);
        tokio::task::spawn_blocking(move || message::parse_request(&payload, max))
            .await
            .map_err(|e| Rejected {
                id: Value::Null,
                kind: ErrorKind::Internal,
                error: format!("parsing task failed: {e}"),
            })??
    } else {
        message::parse_request(payload, ctx.max_message)?
    };
    let reject = |kind: ErrorKind, error: String| Rejected {
        id: req.id.clone(),
        kind,
        error,
    };
    if let Some(t) = &msg.response_topic {
        if let Err(why) = super::topics::valid_topic_name(t) {
            return Err(reject(ErrorKind::InvalidInput, format!(
                "response topic {t:?} cannot be answered on: {why} (this error goes to the model's out topic)"
            )));
        }
    }
    if !ctx.served.iter().any(|m| m == model) {
        return Err(reject(
            ErrorKind::NotFound,
            format!(
                "unknown model '{model}' (this module serves: {})",
                ctx.served.join(", ")
            ),
        ));
    }
    if let Some(why) = ctx.unavailable.get(model) {
        return Err(reject(
            ErrorKind::Unavailable,
            format!("model '{model}' cannot be served: {why}"),
        ));
    }
    let pinned = ctx.pinned(model);
    let served = ctx
        .models
        .get_served(model, pinned.map(|v| v.to_string()).as_deref())
        .map_err(|e| reject(e.kind(), e.to_string()))?;
    let version = served.model.version();
    let body = req.body;
    let scored = tokio::task::spawn_blocking(move || score_blocking(&served, &body))
        .await
        .map_err(|e| reject(ErrorKind::Internal, format!("scoring task failed: {e}")))?
        .map_err(|e| reject(e.kind(), e.to_string()))?;
    let alerts = ctx.alerts(model, &scored);
    if alerts.as_ref().is_some_and(|a| !a.is_empty()) {
        ctx.stats.alerted(model);
    }
    Ok(message::result(
        req.id, model, version, scored, alerts, msg.dup,
    ))
}

/// For a direct method: the model the body names in `"model"` (or the only one served) and
/// the body without that key.
fn method_request(ctx: &Ctx, payload: &[u8]) -> Result<(String, Vec<u8>), Rejected> {
    method_body(payload, &ctx.served)
}

/// [`method_request`] against the models `served`.
pub(crate) fn method_body(
    payload: &[u8],
    served: &[String],
) -> Result<(String, Vec<u8>), Rejected> {
    let reject = |error: &str| Rejected {
        id: Value::Null,
        kind: ErrorKind::InvalidInput,
        error: error.to_string(),
    };
    let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(payload) else {
        return Err(reject("a score method call takes a JSON object"));
    };
    let model = match (body.remove("model"), served) {
        (Some(Value::String(m)), _) => m,
        (None, [only]) => only.clone(),
        _ => return Err(reject("name the model: {\"model\": NAME, ...}")),
    };
    let body = serde_json::to_vec(&Value::Object(body)).unwrap_or_default();
    Ok((model, body))
}
