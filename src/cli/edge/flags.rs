//! Checks of `scoria edge`'s flag values, run by clap (a bad value is a usage error, exit 2).

use crate::edge::desired::INTERVAL_RANGE_S;
use anyhow::bail;

/// The largest string MQTT can carry (a two-byte length prefix).
const MQTT_MAX_STRING: usize = 65_535;

/// `--telemetry-interval`: seconds, in the range desired configuration allows
/// ([`INTERVAL_RANGE_S`]), so that it always converts to a `Duration`.
pub(super) fn telemetry_seconds(s: &str) -> Result<f64, String> {
    let (lo, hi) = INTERVAL_RANGE_S;
    match s.trim().parse::<f64>() {
        Ok(v) if v <= 0.0 => Err(format!("must be a positive number of seconds, got {s}")),
        Ok(v) if (lo..=hi).contains(&v) => Ok(v),
        Ok(_) => Err(format!("must be from {lo} to {hi} seconds, got {s}")),
        Err(_) => Err(format!(
            "'{s}' is not a number of seconds (from {lo} to {hi})"
        )),
    }
}

/// `--client-id`: a non-empty MQTT string (the module keeps a persistent session, which an
/// empty client id cannot have).
pub(super) fn client_id(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("must not be empty (the broker keeps the module's session under it)".into());
    }
    if s.len() > MQTT_MAX_STRING {
        return Err(format!(
            "is {} bytes long; MQTT allows at most {MQTT_MAX_STRING}",
            s.len()
        ));
    }
    if s.contains('\0') {
        return Err("must not contain a NUL character".into());
    }
    Ok(s.to_string())
}

/// `--topic-prefix`: a valid MQTT topic name (no wildcards `+` `#`, no NUL, not empty); the
/// module's topics are PREFIX/in/MODEL and so on (a trailing '/' is dropped).
pub(super) fn topic_prefix(s: &str) -> Result<String, String> {
    if s.trim_end_matches('/').is_empty() {
        return Err("must not be empty (e.g. --topic-prefix scoria)".into());
    }
    if let Some(c) = s.chars().find(|c| matches!(c, '+' | '#' | '\0')) {
        let c = if c == '\0' {
            "NUL".to_string()
        } else {
            format!("'{c}'")
        };
        return Err(format!(
            "'{}' is not an MQTT topic name: it must not contain {c}",
            s.escape_debug()
        ));
    }
    // Room for the longest topic under it (PREFIX/reported, PREFIX/out/MODEL).
    if s.len() > MQTT_MAX_STRING - 1024 {
        return Err(format!(
            "is {} bytes long; MQTT topics are at most {MQTT_MAX_STRING}",
            s.len()
        ));
    }
    Ok(s.to_string())
}

/// `--share-group`: the name in `$share/NAME/...`, a single topic level: not empty, no `/`,
/// no wildcards (`+`, `#`), no NUL.
pub(super) fn share_group(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("must not be empty (e.g. --share-group scorers)".into());
    }
    if let Some(c) = s.chars().find(|c| matches!(c, '/' | '+' | '#' | '\0')) {
        let c = if c == '\0' {
            "NUL".to_string()
        } else {
            format!("'{c}'")
        };
        return Err(format!(
            "'{}' cannot name a shared subscription group: it must not contain {c} (one topic level, no wildcards)",
            s.escape_debug()
        ));
    }
    if s.len() > 1024 {
        return Err(format!("is {} bytes long; at most 1024", s.len()));
    }
    Ok(s.to_string())
}

/// `--session-expiry`: how long the broker keeps the session of a module that is gone, at
/// most what MQTT 5 can say (u32::MAX seconds means never).
pub(super) fn session_expiry(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("'{s}' is not a duration: {e}"))?;
    if d.as_secs() >= u64::from(u32::MAX) {
        return Err(format!(
            "must be less than {} seconds (136 years)",
            u32::MAX
        ));
    }
    Ok(d)
}

/// The first model named twice in `--model` (with or without a version).
pub(super) fn duplicate_model(models: &[(String, Option<u64>)]) -> Option<&str> {
    let mut seen = std::collections::BTreeSet::new();
    models
        .iter()
        .map(|(name, _)| name.as_str())
        .find(|name| !seen.insert(*name))
}

/// `mqtt://host[:port]` or `mqtts://host[:port]` → (tls, host, port).
pub(super) fn parse_broker(url: &str) -> anyhow::Result<(bool, String, u16)> {
    let (tls, rest) = if let Some(r) = url
        .strip_prefix("mqtts://")
        .or_else(|| url.strip_prefix("ssl://"))
    {
        (true, r)
    } else if let Some(r) = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
    {
        (false, r)
    } else {
        bail!("--broker '{url}' must start with mqtt:// or mqtts://");
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => {
            let port = p
                .parse()
                .map_err(|_| anyhow::anyhow!("--broker '{url}': '{p}' is not a port"))?;
            (
                h.trim_start_matches('[').trim_end_matches(']').to_string(),
                port,
            )
        }
        _ => (rest.to_string(), if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() {
        bail!("--broker '{url}' names no host");
    }
    Ok((tls, host, port))
}

/// `--broker`: a URL [`parse_broker`] understands.
pub(super) fn broker_url(s: &str) -> Result<String, String> {
    parse_broker(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::{
        client_id, duplicate_model, parse_broker, session_expiry, share_group, telemetry_seconds,
        topic_prefix,
    };

    #[test]
    fn share_groups_and_session_expiry() {
        for ok in ["g", "scorers", "line-1.a_b", "$x", "a b"] {
            assert_eq!(share_group(ok).as_deref(), Ok(ok));
        }
        for bad in ["", "a/b", "/", "a+", "#", "a\0b"] {
            assert!(share_group(bad).is_err(), "{bad:?}");
        }
        assert!(share_group("a\0").unwrap_err().contains("NUL"));
        assert!(share_group(&"x".repeat(1025)).is_err());
        assert_eq!(
            session_expiry("5m"),
            Ok(std::time::Duration::from_secs(300))
        );
        assert_eq!(session_expiry("0s"), Ok(std::time::Duration::ZERO));
        for bad in ["", "x", "-1s", "200years"] {
            assert!(session_expiry(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flag_values() {
        assert_eq!(telemetry_seconds("0.5"), Ok(0.5));
        assert_eq!(telemetry_seconds("86400"), Ok(86_400.0));
        for bad in ["0", "-1", "1e300", "86401", "0.05", "NaN", "inf", "x", ""] {
            assert!(telemetry_seconds(bad).is_err(), "{bad}");
        }
        assert!(telemetry_seconds("-1").unwrap_err().contains("positive"));
        assert_eq!(client_id("a/b c").as_deref(), Ok("a/b c"));
        assert!(client_id(&"x".repeat(65_535)).is_ok());
        for bad in [String::new(), "x".repeat(65_536), "a\0b".into()] {
            assert!(client_id(&bad).is_err(), "{bad:?}");
        }
        for ok in ["scoria", "a/b/", "plant 1/line-2", "$x"] {
            assert_eq!(topic_prefix(ok).as_deref(), Ok(ok));
        }
        for bad in ["", "/", "a/#", "#", "a/+/b", "+", "a\0b"] {
            assert!(topic_prefix(bad).is_err(), "{bad:?}");
        }
        assert!(topic_prefix("a\0b").unwrap_err().contains("NUL"));
        let m = |n: &str, v: Option<u64>| (n.to_string(), v);
        assert_eq!(duplicate_model(&[m("a", None), m("b", Some(1))]), None);
        assert_eq!(
            duplicate_model(&[m("a", None), m("b", None), m("a", Some(1))]),
            Some("a")
        );
    }

    #[test]
    fn broker_urls() {
        assert_eq!(
            parse_broker("mqtt://127.0.0.1:1884").unwrap(),
            (false, "127.0.0.1".into(), 1884)
        );
        assert_eq!(
            parse_broker("mqtts://hub.example").unwrap(),
            (true, "hub.example".into(), 8883)
        );
        assert_eq!(
            parse_broker("mqtt://h/").unwrap(),
            (false, "h".into(), 1883)
        );
        assert!(parse_broker("http://h").is_err());
        assert!(parse_broker("mqtt://h:x").is_err());
        assert!(parse_broker("mqtt://").is_err());
    }
}
