//! Azure IoT Hub / IoT Edge credentials: connection strings, the MQTT username and client id
//! IoT Hub expects of a module, and shared access signature (SAS) tokens.
//!
//! A SAS token is `SharedAccessSignature sr={uri}&sig={signature}&se={expiry}` where `uri` is
//! the URL-encoded resource `{hub}/devices/{device}/modules/{module}`, `expiry` is in seconds
//! since the Unix epoch and `signature` is the URL-encoded base64 of
//! HMAC-SHA256(base64-decoded key, "{uri}\n{expiry}"). The key comes from a connection
//! string, or stays with IoT Edge, whose workload API signs for the module
//! ([`super::workload`]).

use super::workload::{Workload, DEFAULT_API_VERSION, URL_ENCODE};
use base64::Engine;
use hmac::{Hmac, Mac};
use percent_encoding::utf8_percent_encode;
use sha2::Sha256;

/// The API version IoT Hub's MQTT username names.
pub const API_VERSION: &str = "2021-04-12";

/// Who signs a module's SAS tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    /// The base64 shared access key of a connection string.
    Key(String),
    /// IoT Edge's workload API, which keeps the key.
    Workload(Workload),
}

/// A module's identity in an IoT hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleIdentity {
    /// The hub's host name, e.g. `myhub.azure-devices.net`.
    pub hub: String,
    pub device: String,
    pub module: String,
    /// What signs its SAS tokens, when anything can.
    pub signer: Option<Signer>,
}

impl ModuleIdentity {
    /// Parses `HostName=...;DeviceId=...;ModuleId=...;SharedAccessKey=...` (the connection
    /// string the portal and `az iot hub module-identity connection-string show` print).
    pub fn from_connection_string(s: &str) -> Result<ModuleIdentity, String> {
        let (mut hub, mut device, mut module, mut key) = (None, None, None, None);
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("connection string part '{part}' is not KEY=VALUE"))?;
            let slot = match k {
                "HostName" => &mut hub,
                "DeviceId" => &mut device,
                "ModuleId" => &mut module,
                "SharedAccessKey" => &mut key,
                // GatewayHostName names the IoT Edge hub to connect through; the broker URL
                // says where to connect, so it is accepted and not needed here.
                "GatewayHostName" | "SharedAccessKeyName" => continue,
                other => return Err(format!("unknown connection string key '{other}'")),
            };
            *slot = Some(v.to_string());
        }
        let need = |v: Option<String>, name: &str| {
            v.filter(|v| !v.is_empty())
                .ok_or_else(|| format!("the connection string has no {name}"))
        };
        let key = need(key, "SharedAccessKey")?;
        base64::engine::general_purpose::STANDARD
            .decode(&key)
            .map_err(|e| format!("SharedAccessKey is not base64: {e}"))?;
        Ok(ModuleIdentity {
            hub: need(hub, "HostName")?,
            device: need(device, "DeviceId")?,
            module: need(module, "ModuleId")?,
            signer: Some(Signer::Key(key)),
        })
    }

    /// The identity IoT Edge's environment gives a module (`IOTEDGE_IOTHUBHOSTNAME`,
    /// `IOTEDGE_DEVICEID`, `IOTEDGE_MODULEID`), `None` unless all three are set; signed by
    /// the workload API when `IOTEDGE_WORKLOADURI` and `IOTEDGE_MODULEGENERATIONID` are set
    /// too (`IOTEDGE_APIVERSION` picks its version).
    pub fn from_iotedge_env(
        env: impl Fn(&str) -> Option<String>,
    ) -> Option<Result<ModuleIdentity, String>> {
        let module = env("IOTEDGE_MODULEID")?;
        let hub = env("IOTEDGE_IOTHUBHOSTNAME")?;
        let device = env("IOTEDGE_DEVICEID")?;
        let signer = match (
            env("IOTEDGE_WORKLOADURI"),
            env("IOTEDGE_MODULEGENERATIONID"),
        ) {
            (Some(uri), Some(generation)) => {
                let version =
                    env("IOTEDGE_APIVERSION").unwrap_or_else(|| DEFAULT_API_VERSION.into());
                match Workload::new(&uri, &version, &module, &generation) {
                    Ok(w) => Some(Signer::Workload(w)),
                    Err(e) => return Some(Err(format!("IOTEDGE_WORKLOADURI: {e}"))),
                }
            }
            _ => None,
        };
        Some(Ok(ModuleIdentity {
            hub,
            device,
            module,
            signer,
        }))
    }

    /// The MQTT client id: `{device}/{module}`.
    pub fn client_id(&self) -> String {
        format!("{}/{}", self.device, self.module)
    }

    /// The MQTT username: `{hub}/{device}/{module}/?api-version=...`.
    pub fn username(&self) -> String {
        format!(
            "{}/{}/{}/?api-version={API_VERSION}",
            self.hub, self.device, self.module
        )
    }

    /// The resource a module's SAS token grants: `{hub}/devices/{device}/modules/{module}`.
    pub fn resource_uri(&self) -> String {
        format!(
            "{}/devices/{}/modules/{}",
            self.hub, self.device, self.module
        )
    }

    /// A SAS token for this module valid until `expiry` (seconds since the Unix epoch),
    /// signed with the key or by the workload API.
    pub fn sas_token(&self, expiry: u64) -> Result<String, String> {
        let signer = self.signer.as_ref().ok_or(
            "nothing to sign a SAS token with (give --iothub-connection-string, or run under IoT Edge)",
        )?;
        sas_token(&self.resource_uri(), signer, expiry)
    }
}

/// `SharedAccessSignature sr=...&sig=...&se=...` for `resource_uri`, signed by `signer`,
/// valid until `expiry` (seconds since the Unix epoch).
pub fn sas_token(resource_uri: &str, signer: &Signer, expiry: u64) -> Result<String, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let sr = utf8_percent_encode(resource_uri, URL_ENCODE).to_string();
    let to_sign = format!("{sr}\n{expiry}");
    let sig = match signer {
        Signer::Key(key) => {
            let key = b64
                .decode(key)
                .map_err(|e| format!("the shared access key is not base64: {e}"))?;
            let mut mac = Hmac::<Sha256>::new_from_slice(&key)
                .map_err(|e| format!("cannot use the shared access key: {e}"))?;
            mac.update(to_sign.as_bytes());
            b64.encode(mac.finalize().into_bytes())
        }
        Signer::Workload(w) => w.sign(to_sign.as_bytes())?,
    };
    let sig = utf8_percent_encode(&sig, URL_ENCODE);
    Ok(format!(
        "SharedAccessSignature sr={sr}&sig={sig}&se={expiry}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONN: &str = "HostName=myhub.azure-devices.net;DeviceId=edge-01;ModuleId=scoria;SharedAccessKey=c2NvcmlhLXRlc3Qta2V5LTAxMjM0NTY3ODkwMTIzNDU2Nzg5";

    #[test]
    fn parses_a_module_connection_string() {
        let id = ModuleIdentity::from_connection_string(CONN).unwrap();
        assert_eq!(id.hub, "myhub.azure-devices.net");
        assert_eq!(id.client_id(), "edge-01/scoria");
        assert_eq!(
            id.username(),
            "myhub.azure-devices.net/edge-01/scoria/?api-version=2021-04-12"
        );
        assert_eq!(
            id.resource_uri(),
            "myhub.azure-devices.net/devices/edge-01/modules/scoria"
        );
        for (bad, want) in [
            ("HostName=h;DeviceId=d;ModuleId=m", "no SharedAccessKey"),
            ("HostName=h;DeviceId=d;SharedAccessKey=a2V5", "no ModuleId"),
            (
                "HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=!!",
                "not base64",
            ),
            ("HostName=h;Nope=1", "unknown connection string key"),
            ("HostName", "not KEY=VALUE"),
        ] {
            let e = ModuleIdentity::from_connection_string(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    /// The vector was computed independently with Python's standard library, following
    /// Azure's documented sample (`quote_plus`, `hmac`, `sha256`, `b64encode`):
    /// `sign = quote_plus(uri) + "\n" + str(expiry)`;
    /// `sig = quote_plus(b64encode(HMAC(b64decode(key), sign, sha256).digest()))`.
    #[test]
    fn sas_token_matches_known_vector() {
        let id = ModuleIdentity::from_connection_string(CONN).unwrap();
        let token = id.sas_token(1_800_000_000).unwrap();
        assert_eq!(token, SAS_VECTOR);
    }

    const SAS_VECTOR: &str = "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fedge-01%2Fmodules%2Fscoria&sig=pvHhrYsQQ5aAPbOawBt%2BeshDJeeu6O5vf%2FbzuPjJKi4%3D&se=1800000000";

    #[test]
    fn reads_iotedge_environment() {
        let env = |k: &str| match k {
            "IOTEDGE_IOTHUBHOSTNAME" => Some("hub.azure-devices.net".to_string()),
            "IOTEDGE_DEVICEID" => Some("dev".to_string()),
            "IOTEDGE_MODULEID" => Some("scoria".to_string()),
            _ => None,
        };
        let id = ModuleIdentity::from_iotedge_env(env).unwrap().unwrap();
        assert_eq!(id.client_id(), "dev/scoria");
        assert_eq!(id.signer, None);
        assert!(ModuleIdentity::from_iotedge_env(|_| None).is_none());
        let with_workload = |uri: &'static str| {
            move |k: &str| match k {
                "IOTEDGE_WORKLOADURI" => Some(uri.to_string()),
                "IOTEDGE_MODULEGENERATIONID" => Some("gen-7".to_string()),
                other => env(other),
            }
        };
        let id = ModuleIdentity::from_iotedge_env(with_workload("unix:///run/w.sock"))
            .unwrap()
            .unwrap();
        let Some(Signer::Workload(w)) = id.signer else {
            panic!("no workload signer: {:?}", id.signer)
        };
        assert_eq!(
            (
                w.module.as_str(),
                w.generation_id.as_str(),
                w.api_version.as_str()
            ),
            ("scoria", "gen-7", DEFAULT_API_VERSION)
        );
        let e = ModuleIdentity::from_iotedge_env(with_workload("tcp://x"))
            .unwrap()
            .unwrap_err();
        assert!(e.contains("IOTEDGE_WORKLOADURI"), "{e}");
    }
}
