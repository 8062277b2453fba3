//! Alert thresholds on results (`models.NAME.thresholds` in the desired configuration).
//!
//! A threshold bounds the numbers found under one key of a model's results:
//! `{"probability": {"below": 0.6}}` alerts when the classifier's top probability is under
//! 0.6, `{"score": {"above": 0.9}}` when an anomaly score is over 0.9; both bounds together
//! alert outside the range. The key is looked up at any depth of the result (inside arrays
//! too, so every prediction of a batch counts), and every number under it (arrays flattened)
//! is compared. A result that crosses a threshold is still delivered, marked
//! `"alert": true` with the crossed thresholds in `"alerts"`; the others are marked
//! `"alert": false`. Nothing is filtered out: a requester always gets its answer, and a
//! consumer (or an IoT Hub route on `$body.alert`) picks the alerts.

use serde_json::{json, Map, Value};
use std::fmt;

/// Bounds on the numbers under `key`; at least one is set.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub key: String,
    pub above: Option<f64>,
    pub below: Option<f64>,
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.below, self.above) {
            (Some(b), Some(a)) => write!(f, "{} below {b} or above {a}", self.key),
            (Some(b), None) => write!(f, "{} below {b}", self.key),
            (None, Some(a)) => write!(f, "{} above {a}", self.key),
            (None, None) => write!(f, "{}", self.key),
        }
    }
}

/// Parses `models.{model}.thresholds`: `{KEY: {"above": X?, "below": Y?}}`; `null` or `{}`
/// is no thresholds.
pub fn parse(model: &str, doc: &Value) -> Result<Vec<Threshold>, String> {
    let at = format!("models.{model}.thresholds");
    let map = match doc {
        Value::Null => return Ok(Vec::new()),
        Value::Object(m) => m,
        other => {
            return Err(format!(
                "{at} must be an object {{KEY: {{\"above\": X, \"below\": Y}}}}, got {other}"
            ))
        }
    };
    let mut out = Vec::with_capacity(map.len());
    for (key, bounds) in map {
        let Value::Object(bounds) = bounds else {
            return Err(format!(
                "{at}.{key} must be an object {{\"above\": X, \"below\": Y}}, got {bounds}"
            ));
        };
        let mut t = Threshold {
            key: key.clone(),
            above: None,
            below: None,
        };
        for (name, v) in bounds {
            let slot = match name.as_str() {
                "above" => &mut t.above,
                "below" => &mut t.below,
                other => {
                    return Err(format!(
                        "unknown key {at}.{key}.{other} (known: above, below)"
                    ))
                }
            };
            *slot = Some(
                v.as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| format!("{at}.{key}.{name} must be a number, got {v}"))?,
            );
        }
        match (t.below, t.above) {
            (None, None) => return Err(format!("{at}.{key} needs \"above\" or \"below\"")),
            (Some(b), Some(a)) if b > a => {
                return Err(format!(
                    "{at}.{key}: \"below\" {b} is greater than \"above\" {a}, so every value would alert"
                ))
            }
            _ => out.push(t),
        }
    }
    Ok(out)
}

/// The thresholds as the desired document writes them (for the reported document).
pub fn to_json(thresholds: &[Threshold]) -> Value {
    let map: Map<String, Value> = thresholds
        .iter()
        .map(|t| {
            let mut b = Map::new();
            if let Some(a) = t.above {
                b.insert("above".into(), json!(a));
            }
            if let Some(x) = t.below {
                b.insert("below".into(), json!(x));
            }
            (t.key.clone(), Value::Object(b))
        })
        .collect();
    Value::Object(map)
}

/// The thresholds `result` crosses, described for the `"alerts"` field (`"probability below
/// 0.6"`), in the order given.
pub fn crossed(thresholds: &[Threshold], result: &Value) -> Vec<String> {
    thresholds
        .iter()
        .filter(|t| {
            let mut hit = false;
            for_each_under(result, &t.key, &mut |x| {
                hit |= t.below.is_some_and(|b| x < b) || t.above.is_some_and(|a| x > a);
            });
            hit
        })
        .map(ToString::to_string)
        .collect()
}

/// Calls `f` with every number under every `key` of `v`, at any depth.
fn for_each_under(v: &Value, key: &str, f: &mut impl FnMut(f64)) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                if k == key {
                    for_each_number(child, f);
                } else {
                    for_each_under(child, key, f);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| for_each_under(i, key, f)),
        _ => {}
    }
}

fn for_each_number(v: &Value, f: &mut impl FnMut(f64)) {
    match v {
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                f(x)
            }
        }
        Value::Array(items) => items.iter().for_each(|i| for_each_number(i, f)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits_result(p: &[f64]) -> Value {
        let predictions: Vec<Value> = p
            .iter()
            .map(
                |p| json!({"class": 4, "label": "4", "probability": p, "probabilities": [p, 0.01]}),
            )
            .collect();
        json!({ "predictions": predictions })
    }

    #[test]
    fn parses_and_reports() {
        let doc = json!({"probability": {"below": 0.6}, "score": {"above": 0.9, "below": 0.1}});
        let t = parse("digits", &doc).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(to_json(&t), doc);
        assert_eq!(t[0].to_string(), "probability below 0.6");
        assert_eq!(t[1].to_string(), "score below 0.1 or above 0.9");
        assert!(parse("digits", &Value::Null).unwrap().is_empty());
        assert!(parse("digits", &json!({})).unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_thresholds() {
        for (doc, want) in [
            (json!(0.5), "models.digits.thresholds must be an object"),
            (
                json!({"p": 0.5}),
                "models.digits.thresholds.p must be an object",
            ),
            (json!({"p": {}}), "needs \"above\" or \"below\""),
            (
                json!({"p": {"under": 1}}),
                "unknown key models.digits.thresholds.p.under",
            ),
            (json!({"p": {"above": "high"}}), "above must be a number"),
            (json!({"p": {"below": 0.9, "above": 0.1}}), "greater than"),
        ] {
            let e = parse("digits", &doc).unwrap_err();
            assert!(e.contains(want), "{doc}: {e}");
        }
    }

    #[test]
    fn finds_numbers_at_any_depth() {
        let t = parse("digits", &json!({"probability": {"below": 0.6}})).unwrap();
        assert!(crossed(&t, &digits_result(&[0.9, 0.95])).is_empty());
        // One prediction of the batch is unsure: the result alerts.
        assert_eq!(
            crossed(&t, &digits_result(&[0.9, 0.5])),
            ["probability below 0.6"]
        );
        // `probabilities` is another key, not `probability`.
        assert!(crossed(&t, &json!({"probabilities": [0.1]})).is_empty());
        // A result without the key never alerts.
        assert!(crossed(&t, &json!({"label": "4"})).is_empty());

        let t = parse("m", &json!({"logits": {"above": 3.0}})).unwrap();
        assert_eq!(
            crossed(&t, &json!({"logits": [[1.0, 2.0], [0.5, 3.5]]})).len(),
            1
        );
        assert!(crossed(&t, &json!({"logits": [[1.0, 3.0]]})).is_empty());
        let t = parse("m", &json!({"x": {"below": 0, "above": 1}})).unwrap();
        assert_eq!(crossed(&t, &json!({"x": -0.5})), ["x below 0 or above 1"]);
        assert_eq!(crossed(&t, &json!({"x": 1.5})).len(), 1);
        assert!(crossed(&t, &json!({"x": 0.5})).is_empty());
    }
}
