//! Desired configuration (module-twin style): what can be changed at run time, how a desired
//! document is validated, and the reported document.
//!
//! Desired: `{"$version": N?, "telemetry_interval_s": S?, "models": {NAME: {"version": V?,
//! "thresholds": T?}}?}` where `V` is a version number, or `null` / `"latest"` for the highest
//! ready version, and `T` the model's alert thresholds ([`super::threshold`]; `null` or `{}`
//! clears them). A document is a patch, as an IoT Hub twin update is: what it leaves out stays as it
//! is. It is applied whole or not at all: any invalid part rejects it with the reason, and
//! nothing changes.

use super::threshold::{self, Threshold};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Shortest and longest telemetry interval a desired document may set.
pub const INTERVAL_RANGE_S: (f64, f64) = (0.1, 86_400.0);

/// The configuration in effect.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub telemetry_interval: Duration,
    /// The pinned version of each served model; `None` serves the highest ready version.
    pub versions: BTreeMap<String, Option<u64>>,
    /// Alert thresholds of each served model that has any.
    pub thresholds: BTreeMap<String, Vec<Threshold>>,
}

/// What checks a desired model version: `Ok` when `model` can serve `version` now.
pub trait VersionCheck {
    fn check(&self, model: &str, version: u64) -> Result<(), String>;
}

impl VersionCheck for crate::models::ModelManager {
    fn check(&self, model: &str, version: u64) -> Result<(), String> {
        self.get_served(model, Some(&version.to_string()))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Parses and validates a desired document against `current`; returns the configuration to
/// apply, or the reason the document is rejected.
pub fn apply(
    payload: &[u8],
    current: &Applied,
    models: &dyn VersionCheck,
) -> Result<Applied, String> {
    let doc: Value = serde_json::from_slice(payload)
        .map_err(|e| format!("desired configuration is not JSON: {e}"))?;
    let Value::Object(doc) = doc else {
        return Err("desired configuration must be a JSON object".into());
    };
    let mut next = current.clone();
    for (key, value) in &doc {
        match key.as_str() {
            // Twin metadata (`$version`, `$metadata`, ...) is not configuration.
            k if k.starts_with('$') => {}
            "telemetry_interval_s" => {
                let s = value
                    .as_f64()
                    .filter(|s| (INTERVAL_RANGE_S.0..=INTERVAL_RANGE_S.1).contains(s))
                    .ok_or_else(|| {
                        format!(
                            "telemetry_interval_s must be a number of seconds from {} to {}, got {value}",
                            INTERVAL_RANGE_S.0, INTERVAL_RANGE_S.1
                        )
                    })?;
                next.telemetry_interval = Duration::from_secs_f64(s);
            }
            "models" => {
                let Value::Object(models_doc) = value else {
                    return Err("models must be an object {NAME: {\"version\": N}}".into());
                };
                for (name, m) in models_doc {
                    if !next.versions.contains_key(name) {
                        return Err(format!(
                            "model '{name}' is not served by this module (serving: {})",
                            current
                                .versions
                                .keys()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    apply_model(&mut next, name, m, models)?;
                }
            }
            other => {
                return Err(format!(
                    "unknown key '{other}' (known: telemetry_interval_s, models)"
                ))
            }
        }
    }
    Ok(next)
}

/// Applies `models.{name}` to `next`: the keys it has, and only those.
fn apply_model(
    next: &mut Applied,
    name: &str,
    m: &Value,
    models: &dyn VersionCheck,
) -> Result<(), String> {
    let Value::Object(m) = m else {
        return Err(format!(
            "models.{name} must be an object {{\"version\": N, \"thresholds\": {{...}}}}"
        ));
    };
    for (key, value) in m {
        match key.as_str() {
            "version" => {
                let version = model_version(name, value, models)?;
                next.versions.insert(name.to_string(), version);
            }
            "thresholds" => {
                let t = threshold::parse(name, value)?;
                if t.is_empty() {
                    next.thresholds.remove(name);
                } else {
                    next.thresholds.insert(name.to_string(), t);
                }
            }
            other => {
                return Err(format!(
                    "unknown key models.{name}.{other} (known: version, thresholds)"
                ))
            }
        }
    }
    Ok(())
}

fn model_version(name: &str, v: &Value, models: &dyn VersionCheck) -> Result<Option<u64>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s == "latest" => Ok(None),
        v => {
            let version = v.as_u64().ok_or_else(|| {
                format!("models.{name}.version must be a version number or \"latest\", got {v}")
            })?;
            models.check(name, version)?;
            Ok(Some(version))
        }
    }
}

/// The `$version` of a desired document: its own `"$version"`, else the topic's, else `fallback`.
pub fn desired_version(payload: &[u8], from_topic: Option<u64>, fallback: u64) -> u64 {
    serde_json::from_slice::<Value>(payload)
        .ok()
        .and_then(|d| d.get("$version").and_then(Value::as_u64))
        .or(from_topic)
        .unwrap_or(fallback)
}

/// The desired document of a twin (the answer to the twin GET: `{"desired": {...},
/// "reported": {...}}`) and its `$version`; `None` when the payload has no desired properties.
pub fn from_twin(payload: &[u8]) -> Option<(Vec<u8>, Option<u64>)> {
    let twin = serde_json::from_slice::<Value>(payload).ok()?;
    let desired = twin.get("desired")?;
    let version = desired.get("$version").and_then(Value::as_u64);
    Some((desired.to_string().into_bytes(), version))
}

/// The reported document: what is in effect (with each model's serving version from
/// `serving`), and the outcome of desired document `version`.
pub fn reported(
    applied: &Applied,
    serving: &BTreeMap<String, Option<u64>>,
    version: u64,
    rejected: Option<&str>,
) -> Value {
    let models: Map<String, Value> = applied
        .versions
        .iter()
        .map(|(name, pinned)| {
            let mut m = Map::new();
            m.insert(
                "version".into(),
                json!(serving.get(name).copied().flatten()),
            );
            m.insert("pinned".into(), json!(pinned.is_some()));
            if let Some(t) = applied.thresholds.get(name) {
                m.insert("thresholds".into(), threshold::to_json(t));
            }
            (name.clone(), Value::Object(m))
        })
        .collect();
    let mut doc = json!({
        "$version": version,
        "status": if rejected.is_some() { "rejected" } else { "applied" },
        "telemetry_interval_s": applied.telemetry_interval.as_secs_f64(),
        "models": models,
    });
    if let Some(reason) = rejected {
        doc["reason"] = json!(reason);
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Only(u64);
    impl VersionCheck for Only {
        fn check(&self, model: &str, version: u64) -> Result<(), String> {
            if version == self.0 {
                Ok(())
            } else {
                Err(format!("model '{model}' has no version '{version}'"))
            }
        }
    }

    fn current() -> Applied {
        Applied {
            telemetry_interval: Duration::from_secs(10),
            versions: [("digits".to_string(), None)].into(),
            thresholds: BTreeMap::new(),
        }
    }

    #[test]
    fn applies_valid_documents() {
        let next = apply(
            br#"{"$version": 4, "telemetry_interval_s": 5, "models": {"digits": {"version": 2}}}"#,
            &current(),
            &Only(2),
        )
        .unwrap();
        assert_eq!(next.telemetry_interval, Duration::from_secs(5));
        assert_eq!(next.versions["digits"], Some(2));
        let back = apply(
            br#"{"models": {"digits": {"version": "latest"}}}"#,
            &next,
            &Only(2),
        )
        .unwrap();
        assert_eq!(back.versions["digits"], None);
    }

    #[test]
    fn documents_are_patches() {
        let pinned = apply(
            br#"{"models": {"digits": {"version": 2}}}"#,
            &current(),
            &Only(2),
        )
        .unwrap();
        // Thresholds alone leave the pinned version and the interval as they are.
        let next = apply(
            br#"{"models": {"digits": {"thresholds": {"probability": {"below": 0.6}}}}}"#,
            &pinned,
            &Only(2),
        )
        .unwrap();
        assert_eq!(next.versions["digits"], Some(2));
        assert_eq!(next.telemetry_interval, Duration::from_secs(10));
        assert_eq!(next.thresholds["digits"][0].below, Some(0.6));
        let serving = [("digits".to_string(), Some(2))].into();
        let r = reported(&next, &serving, 3, None);
        assert_eq!(
            r["models"]["digits"]["thresholds"],
            json!({"probability": {"below": 0.6}})
        );
        // A version alone keeps the thresholds; `null` clears them.
        let next = apply(
            br#"{"models": {"digits": {"version": null}}}"#,
            &next,
            &Only(2),
        )
        .unwrap();
        assert_eq!(next.versions["digits"], None);
        assert_eq!(next.thresholds["digits"].len(), 1);
        let next = apply(
            br#"{"models": {"digits": {"thresholds": null}}}"#,
            &next,
            &Only(2),
        )
        .unwrap();
        assert!(next.thresholds.is_empty());
        assert!(reported(&next, &serving, 4, None)["models"]["digits"]
            .get("thresholds")
            .is_none());
    }

    #[test]
    fn rejects_invalid_documents_whole() {
        for (doc, want) in [
            (&b"not json"[..], "not JSON"),
            (b"[1]", "JSON object"),
            (br#"{"telemetry_interval_s": 0}"#, "telemetry_interval_s"),
            (
                br#"{"telemetry_interval_s": 5, "models": {"nope": {"version": 1}}}"#,
                "not served",
            ),
            (
                br#"{"models": {"digits": {"version": 3}}}"#,
                "no version '3'",
            ),
            (
                br#"{"models": {"digits": {"version": -1}}}"#,
                "version number",
            ),
            (
                br#"{"models": {"digits": {"threshold": 1}}}"#,
                "unknown key models.digits.threshold (known: version, thresholds)",
            ),
            (
                br#"{"models": {"digits": {"version": 2, "thresholds": {"p": {"over": 1}}}}}"#,
                "unknown key models.digits.thresholds.p.over",
            ),
            (br#"{"colour": "red"}"#, "unknown key 'colour'"),
        ] {
            let e = apply(doc, &current(), &Only(2)).unwrap_err();
            assert!(e.contains(want), "{}: {e}", String::from_utf8_lossy(doc));
        }
    }

    #[test]
    fn versions_and_reports() {
        assert_eq!(desired_version(br#"{"$version": 9}"#, Some(3), 1), 9);
        assert_eq!(desired_version(b"{}", Some(3), 1), 3);
        assert_eq!(desired_version(b"junk", None, 1), 1);
        let serving = [("digits".to_string(), Some(1))].into();
        let r = reported(&current(), &serving, 2, Some("bad"));
        assert_eq!(r["status"], "rejected");
        assert_eq!(r["reason"], "bad");
        assert_eq!(r["$version"], 2);
        assert_eq!(r["models"]["digits"]["version"], 1);
    }
}
