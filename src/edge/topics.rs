//! Where each kind of message goes: the plain `{prefix}/...` layout, or Azure IoT Hub's module
//! topics under the `iothub` preset.

use super::iothub::ModuleIdentity;

/// Which topic layout the module uses.
#[derive(Debug, Clone)]
pub enum Topics {
    /// `{prefix}/in/{model}`, `{prefix}/out/{model}`, `{prefix}/telemetry`, `{prefix}/status`,
    /// `{prefix}/config`, `{prefix}/reported`. With `share`, requests come through the shared
    /// subscriptions `$share/{share}/{prefix}/in/{model}` (one per served model), so the
    /// group's members split them; everything else stays per module.
    Plain {
        prefix: String,
        share: Option<String>,
    },
    /// IoT Hub / IoT Edge: requests arrive as module input messages
    /// (`devices/{d}/modules/{m}/inputs/{model}/...`, the input named for the model) or as the
    /// direct method `score`; results, telemetry and status are module events
    /// (`devices/{d}/modules/{m}/messages/events/{properties}`); desired and reported
    /// configuration are the module twin's properties.
    IotHub { device: String, module: String },
}

/// What an incoming message is, by its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A scoring request for `model`.
    Request { model: String },
    /// A direct method call (IoT Hub): `name` with request id `rid`.
    Method { name: String, rid: String },
    /// Desired configuration; `version` when the topic carries one (a twin patch).
    Config { version: Option<u64> },
    /// The answer to the twin GET sent on connect (IoT Hub): the whole twin.
    Twin { status: u16 },
    /// Anything else (ignored with a log line).
    Unknown,
}

/// The twin GET request id the module uses on connect.
pub const TWIN_GET_RID: &str = "scoria-twin-get";

impl Topics {
    pub fn plain(prefix: &str) -> Topics {
        Topics::Plain {
            prefix: prefix.trim_end_matches('/').to_string(),
            share: None,
        }
    }

    /// The plain layout with requests taken through shared subscriptions of `group`.
    pub fn shared(self, group: Option<String>) -> Topics {
        match self {
            Topics::Plain { prefix, .. } => Topics::Plain {
                prefix,
                share: group,
            },
            iothub => iothub,
        }
    }

    pub fn iothub(id: &ModuleIdentity) -> Topics {
        Topics::IotHub {
            device: id.device.clone(),
            module: id.module.clone(),
        }
    }

    /// The topic filters to subscribe to, for a module serving `models`.
    pub fn subscriptions(&self, models: &[String]) -> Vec<String> {
        match self {
            Topics::Plain {
                prefix,
                share: None,
            } => vec![format!("{prefix}/in/+"), format!("{prefix}/config")],
            Topics::Plain { prefix, .. } => {
                let mut filters = self.shared_filters(models);
                filters.push(format!("{prefix}/config"));
                filters
            }
            Topics::IotHub { device, module } => vec![
                format!("devices/{device}/modules/{module}/inputs/#"),
                "$iothub/methods/POST/#".to_string(),
                "$iothub/twin/PATCH/properties/desired/#".to_string(),
                "$iothub/twin/res/#".to_string(),
            ],
        }
    }

    /// The shared subscriptions among [`Topics::subscriptions`] (none without a share group).
    pub fn shared_filters(&self, models: &[String]) -> Vec<String> {
        match self {
            Topics::Plain {
                prefix,
                share: Some(group),
            } => models
                .iter()
                .map(|m| format!("$share/{group}/{prefix}/in/{m}"))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Classifies an incoming message by its topic.
    pub fn inbound(&self, topic: &str) -> Inbound {
        match self {
            Topics::Plain { prefix, .. } => {
                let Some(rest) = topic
                    .strip_prefix(prefix.as_str())
                    .and_then(|r| r.strip_prefix('/'))
                else {
                    return Inbound::Unknown;
                };
                if rest == "config" {
                    return Inbound::Config { version: None };
                }
                match rest.strip_prefix("in/") {
                    Some(model) if !model.is_empty() && !model.contains('/') => Inbound::Request {
                        model: model.to_string(),
                    },
                    _ => Inbound::Unknown,
                }
            }
            Topics::IotHub { device, module } => {
                let inputs = format!("devices/{device}/modules/{module}/inputs/");
                if let Some(rest) = topic.strip_prefix(&inputs) {
                    let model = rest.split('/').next().unwrap_or_default();
                    if model.is_empty() {
                        return Inbound::Unknown;
                    }
                    return Inbound::Request {
                        model: model.to_string(),
                    };
                }
                if let Some(rest) = topic.strip_prefix("$iothub/methods/POST/") {
                    let (name, query) = rest.split_once('/').unwrap_or((rest, ""));
                    return match query_value(query, "$rid") {
                        Some(rid) => Inbound::Method {
                            name: name.to_string(),
                            rid,
                        },
                        None => Inbound::Unknown,
                    };
                }
                if let Some(query) = topic.strip_prefix("$iothub/twin/PATCH/properties/desired/") {
                    return Inbound::Config {
                        version: query_value(query, "$version").and_then(|v| v.parse().ok()),
                    };
                }
                if let Some(rest) = topic.strip_prefix("$iothub/twin/res/") {
                    let (status, query) = rest.split_once('/').unwrap_or((rest, ""));
                    if query_value(query, "$rid").as_deref() == Some(TWIN_GET_RID) {
                        if let Ok(status) = status.parse() {
                            return Inbound::Twin { status };
                        }
                    }
                }
                Inbound::Unknown
            }
        }
    }

    /// Where a model's results go.
    pub fn result(&self, model: &str) -> String {
        match self {
            Topics::Plain { prefix, .. } => format!("{prefix}/out/{model}"),
            Topics::IotHub { .. } => {
                self.event(&[("$.on", "results"), ("type", "result"), ("model", model)])
            }
        }
    }

    /// The answer topic of direct method call `rid` (IoT Hub).
    pub fn method_response(status: u16, rid: &str) -> String {
        format!("$iothub/methods/res/{status}/?$rid={rid}")
    }

    pub fn telemetry(&self) -> String {
        match self {
            Topics::Plain { prefix, .. } => format!("{prefix}/telemetry"),
            Topics::IotHub { .. } => self.event(&[("$.on", "telemetry"), ("type", "telemetry")]),
        }
    }

    /// The module's status topic, and whether messages on it are retained (IoT Hub keeps no
    /// retained messages: status is an event there).
    pub fn status(&self) -> (String, bool) {
        match self {
            Topics::Plain { prefix, .. } => (format!("{prefix}/status"), true),
            Topics::IotHub { .. } => (self.event(&[("$.on", "status"), ("type", "status")]), false),
        }
    }

    /// Where applied configuration is reported (`rid` numbers twin updates), and whether it
    /// is retained.
    pub fn reported(&self, rid: u64) -> (String, bool) {
        match self {
            Topics::Plain { prefix, .. } => (format!("{prefix}/reported"), true),
            Topics::IotHub { .. } => (
                format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}"),
                false,
            ),
        }
    }

    /// The twin GET to send on connect (IoT Hub), whose answer carries the desired properties.
    pub fn twin_get(&self) -> Option<String> {
        match self {
            Topics::Plain { .. } => None,
            Topics::IotHub { .. } => Some(format!("$iothub/twin/GET/?$rid={TWIN_GET_RID}")),
        }
    }

    /// A module event topic with URL-encoded message properties. Every event is JSON in
    /// UTF-8 and says so (`$.ct`, `$.ce`), which IoT Hub needs to route on `$body`
    /// (e.g. `WHERE $body.alert = true`).
    fn event(&self, props: &[(&str, &str)]) -> String {
        let (device, module) = match self {
            Topics::IotHub { device, module } => (device, module),
            Topics::Plain { .. } => {
                unreachable!("module events exist only under the iothub preset; this is a bug")
            }
        };
        let bag: Vec<String> = props
            .iter()
            .chain(&[("$.ct", "application/json"), ("$.ce", "utf-8")])
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        format!(
            "devices/{device}/modules/{module}/messages/events/{}",
            bag.join("&")
        )
    }
}

/// Whether `topic` can be published to: a non-empty MQTT topic name without wildcards or NUL,
/// at most 65,535 bytes. A response topic from a request is checked with this before the
/// answer is stored, since a result that can never be published would wait in the outbox.
pub fn valid_topic_name(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("it is empty".into());
    }
    if let Some(c) = topic.chars().find(|c| matches!(c, '+' | '#' | '\0')) {
        let c = if c == '\0' {
            "NUL".to_string()
        } else {
            format!("'{c}'")
        };
        return Err(format!(
            "it contains {c} (wildcards and NUL cannot be published to)"
        ));
    }
    if topic.len() > 65_535 {
        return Err(format!(
            "it is {} bytes long; MQTT allows 65535",
            topic.len()
        ));
    }
    Ok(())
}

fn encode(s: &str) -> String {
    // `$` stays as is: IoT Hub's system properties are spelt `$.on`, `$.ct`, ...
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'$');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// The value of `key` in a `?a=1&b=2` query (leading `?` optional).
fn query_value(query: &str, key: &str) -> Option<String> {
    query
        .trim_start_matches('?')
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_that_can_be_published_to() {
        for ok in ["a", "a/b", "/x", "replies/dev 1", "$x"] {
            assert!(valid_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/#", "#", "a/+/b", "+", "a\0b"] {
            assert!(valid_topic_name(bad).is_err(), "{bad:?}");
        }
        assert!(valid_topic_name(&"x".repeat(65_536)).is_err());
    }

    #[test]
    fn plain_layout() {
        let t = Topics::plain("site/a/");
        let models = ["digits".to_string(), "lenet".to_string()];
        assert_eq!(t.subscriptions(&models), ["site/a/in/+", "site/a/config"]);
        assert!(t.shared_filters(&models).is_empty());
        assert_eq!(
            t.inbound("site/a/in/digits"),
            Inbound::Request {
                model: "digits".into()
            }
        );
        assert_eq!(
            t.inbound("site/a/config"),
            Inbound::Config { version: None }
        );
        assert_eq!(t.inbound("site/a/in/"), Inbound::Unknown);
        assert_eq!(t.inbound("other/in/digits"), Inbound::Unknown);
        assert_eq!(t.result("digits"), "site/a/out/digits");
        assert_eq!(t.status(), ("site/a/status".to_string(), true));
        assert_eq!(t.reported(7), ("site/a/reported".to_string(), true));
        assert_eq!(t.telemetry(), "site/a/telemetry");
    }

    #[test]
    fn shared_layout() {
        let t = Topics::plain("site/a").shared(Some("g1".into()));
        let models = ["digits".to_string(), "lenet".to_string()];
        assert_eq!(
            t.subscriptions(&models),
            [
                "$share/g1/site/a/in/digits",
                "$share/g1/site/a/in/lenet",
                "site/a/config"
            ]
        );
        assert_eq!(
            t.shared_filters(&models),
            ["$share/g1/site/a/in/digits", "$share/g1/site/a/in/lenet"]
        );
        // Messages arrive on the topic they were published to.
        assert_eq!(
            t.inbound("site/a/in/digits"),
            Inbound::Request {
                model: "digits".into()
            }
        );
        assert_eq!(t.result("digits"), "site/a/out/digits");
        assert_eq!(t.status(), ("site/a/status".to_string(), true));
    }

    #[test]
    fn iothub_layout() {
        let id = ModuleIdentity {
            hub: "h.azure-devices.net".into(),
            device: "dev-1".into(),
            module: "scoria".into(),
            signer: None,
        };
        let t = Topics::iothub(&id);
        assert_eq!(
            t.result("digits"),
            "devices/dev-1/modules/scoria/messages/events/$.on=results&type=result&model=digits&$.ct=application%2Fjson&$.ce=utf-8"
        );
        assert_eq!(
            t.telemetry(),
            "devices/dev-1/modules/scoria/messages/events/$.on=telemetry&type=telemetry&$.ct=application%2Fjson&$.ce=utf-8"
        );
        assert_eq!(
            t.reported(3).0,
            "$iothub/twin/PATCH/properties/reported/?$rid=3"
        );
        assert_eq!(
            t.twin_get().unwrap(),
            "$iothub/twin/GET/?$rid=scoria-twin-get"
        );
        assert_eq!(
            Topics::method_response(200, "9"),
            "$iothub/methods/res/200/?$rid=9"
        );
        assert_eq!(
            t.inbound("devices/dev-1/modules/scoria/inputs/digits/%24.cdid=dev-1"),
            Inbound::Request {
                model: "digits".into()
            }
        );
        assert_eq!(
            t.inbound("$iothub/methods/POST/score/?$rid=42"),
            Inbound::Method {
                name: "score".into(),
                rid: "42".into()
            }
        );
        assert_eq!(
            t.inbound("$iothub/twin/PATCH/properties/desired/?$version=12"),
            Inbound::Config { version: Some(12) }
        );
        assert_eq!(
            t.inbound("$iothub/twin/res/200/?$rid=scoria-twin-get"),
            Inbound::Twin { status: 200 }
        );
        assert_eq!(
            t.inbound("$iothub/twin/res/204/?$rid=5&$version=3"),
            Inbound::Unknown
        );
        assert!(t
            .subscriptions(&[])
            .contains(&"$iothub/twin/PATCH/properties/desired/#".to_string()));
    }
}
