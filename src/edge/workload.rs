//! The IoT Edge workload API, as a module reaches it (`IOTEDGE_WORKLOADURI`): signing with the
//! module's key, which never leaves the security daemon, and the edge's trust bundle.
//!
//! - sign: `POST /modules/{module}/genid/{generation}/sign?api-version={v}` with
//!   `{"keyId": "primary", "algo": "HMACSHA256", "data": base64(data)}`, answered
//!   `{"digest": base64(HMAC-SHA256(key, data))}`;
//! - trust bundle: `GET /trust-bundle?api-version={v}`, answered `{"certificate": PEM}`.
//!
//! The API is HTTP/1.1 over a Unix socket (`unix:///var/run/iotedge/workload.sock`) or TCP
//! (`http://host:port`), spoken with hyper's client. Calls are rare (one per connection
//! attempt), so each is a blocking request on its own connection, with a timeout.

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::client::conn::http1;
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// What Python's `urllib.parse.quote_plus` leaves alone (Azure's samples sign with it); space
/// is encoded as `%20` rather than `+`, which IoT Hub accepts alike and never occurs in
/// resource URIs. Used for the workload API's path and query, and for SAS tokens
/// ([`super::iothub`]).
pub(crate) const URL_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The workload API version used when `IOTEDGE_APIVERSION` is not set.
pub const DEFAULT_API_VERSION: &str = "2019-01-30";

const TIMEOUT: Duration = Duration::from_secs(10);
/// Larger answers are not the workload API's.
const MAX_RESPONSE: usize = 1 << 20;

/// Where the workload API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(std::path::PathBuf),
    Tcp(String),
}

/// A module's handle on the workload API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub endpoint: Endpoint,
    /// `IOTEDGE_WORKLOADURI` as given, for messages.
    pub uri: String,
    pub api_version: String,
    pub module: String,
    pub generation_id: String,
}

impl Workload {
    /// Parses `unix:///path` or `http://host:port`.
    pub fn new(
        uri: &str,
        api_version: &str,
        module: &str,
        generation_id: &str,
    ) -> Result<Workload, String> {
        let endpoint = if let Some(path) = uri.strip_prefix("unix://") {
            Endpoint::Unix(path.into())
        } else if let Some(rest) = uri.strip_prefix("http://") {
            let host = rest.trim_end_matches('/');
            if host.is_empty() || host.contains('/') {
                return Err(format!("workload URI '{uri}' is not http://HOST:PORT"));
            }
            Endpoint::Tcp(host.to_string())
        } else {
            return Err(format!(
                "workload URI '{uri}' is neither unix:///PATH nor http://HOST:PORT"
            ));
        };
        Ok(Workload {
            endpoint,
            uri: uri.to_string(),
            api_version: api_version.to_string(),
            module: module.to_string(),
            generation_id: generation_id.to_string(),
        })
    }

    /// HMAC-SHA256 of `data` with the module's primary key: the base64 digest.
    pub fn sign(&self, data: &[u8]) -> Result<String, String> {
        let enc = |s: &str| utf8_percent_encode(s, URL_ENCODE).to_string();
        let path = format!(
            "/modules/{}/genid/{}/sign?api-version={}",
            enc(&self.module),
            enc(&self.generation_id),
            enc(&self.api_version)
        );
        let body = json!({
            "keyId": "primary",
            "algo": "HMACSHA256",
            "data": base64::engine::general_purpose::STANDARD.encode(data),
        });
        let answer = self.call(Method::POST, &path, Some(&body))?;
        answer["digest"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{}: the sign answer has no \"digest\"", self.uri))
    }

    /// The edge's trust bundle (PEM): the CA certificates that sign the edge hub's certificate.
    pub fn trust_bundle(&self) -> Result<String, String> {
        let path = format!(
            "/trust-bundle?api-version={}",
            utf8_percent_encode(&self.api_version, URL_ENCODE)
        );
        let answer = self.call(Method::GET, &path, None)?;
        answer["certificate"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{}: the trust bundle has no \"certificate\"", self.uri))
    }

    /// One request on a fresh connection; the JSON answer of a 2xx, else why not.
    fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let fail = |e: &dyn std::fmt::Display| format!("IoT Edge workload API {}: {e}", self.uri);
        let body = body.map(Value::to_string).unwrap_or_default();
        let (status, body) =
            fetch(&self.endpoint, method.clone(), path, body).map_err(|e| fail(&e))?;
        let text = String::from_utf8_lossy(&body);
        if !(200..300).contains(&status) {
            let text: String = text.chars().take(300).collect();
            return Err(fail(&format!("{method} {path}: HTTP {status}: {text}")));
        }
        serde_json::from_slice(&body).map_err(|e| fail(&format!("the answer is not JSON: {e}")))
    }
}

/// Sends one request to `endpoint` on a fresh connection and reads the whole answer: its
/// status and body (Content-Length, chunked, or up to the close; at most [`MAX_RESPONSE`]
/// bytes), within [`TIMEOUT`]. Blocks the calling thread. The exchange runs on a private
/// runtime on a thread of its own: the callers are synchronous, and one of them (renewing the
/// broker credentials) runs inside the edge module's runtime, which cannot be entered again.
fn fetch(
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    body: String,
) -> Result<(u16, Vec<u8>), String> {
    std::thread::scope(|scope| {
        let exchange = scope.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the HTTP client: {e}"))?;
            runtime.block_on(async {
                tokio::time::timeout(TIMEOUT, exchange(endpoint, method, path, body))
                    .await
                    .map_err(|_| format!("no answer within {} s", TIMEOUT.as_secs()))?
            })
        });
        exchange
            .join()
            .unwrap_or_else(|_| Err("the HTTP client thread panicked".into()))
    })
}

async fn exchange(
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    body: String,
) -> Result<(u16, Vec<u8>), String> {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, "localhost")
        .header(CONTENT_TYPE, "application/json")
        .header(CONNECTION, "close")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    match endpoint {
        Endpoint::Unix(p) => {
            let stream = tokio::net::UnixStream::connect(p)
                .await
                .map_err(|e| e.to_string())?;
            send(stream, request).await
        }
        Endpoint::Tcp(host) => {
            let stream = tokio::net::TcpStream::connect(host.as_str())
                .await
                .map_err(|e| e.to_string())?;
            send(stream, request).await
        }
    }
}

/// `request` over `stream` with hyper's HTTP/1.1 client.
async fn send(
    stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    request: Request<Full<Bytes>>,
) -> Result<(u16, Vec<u8>), String> {
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| chain(&e))?;
    let connection = tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(|e| chain(&e))?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                "the answer is over 1 MiB".to_string()
            } else {
                chain(&*e)
            }
        })?
        .to_bytes();
    connection.abort();
    Ok((status, body.to_vec()))
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::iothub::{sas_token, Signer};
    use hmac::{Hmac, Mac};
    use std::io::{BufRead, Read, Write};
    use std::os::unix::net::UnixListener;

    const KEY: &str = "c2NvcmlhLXRlc3Qta2V5LTAxMjM0NTY3ODkwMTIzNDU2Nzg5";

    /// A workload API on a Unix socket that answers `n` requests as IoT Edge's would, signing
    /// with `KEY`; returns the request lines it saw.
    fn workload_server(path: &std::path::Path, n: usize) -> std::thread::JoinHandle<Vec<String>> {
        let listener = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            for stream in listener.incoming().take(n) {
                let mut stream = stream.unwrap();
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut length = 0;
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    if h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let (status, answer) = if line
                    .starts_with("POST /modules/scoria/genid/g-1/sign?api-version=2019-01-30 ")
                {
                    let req: Value = serde_json::from_slice(&body).unwrap();
                    assert_eq!(
                        (req["keyId"].as_str(), req["algo"].as_str()),
                        (Some("primary"), Some("HMACSHA256"))
                    );
                    let b64 = base64::engine::general_purpose::STANDARD;
                    let data = b64.decode(req["data"].as_str().unwrap()).unwrap();
                    let mut mac =
                        Hmac::<sha2::Sha256>::new_from_slice(&b64.decode(KEY).unwrap()).unwrap();
                    mac.update(&data);
                    (
                        "200 OK",
                        json!({"digest": b64.encode(mac.finalize().into_bytes())}),
                    )
                } else if line.starts_with("GET /trust-bundle?api-version=2019-01-30 ") {
                    (
                        "200 OK",
                        json!({"certificate": "-----BEGIN CERTIFICATE-----\n...\n"}),
                    )
                } else {
                    ("404 Not Found", json!({"message": "no such module"}))
                };
                let answer = answer.to_string();
                write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                    answer.len()
                )
                .unwrap();
                seen.push(line.trim_end().to_string());
            }
            seen
        })
    }

    #[test]
    fn signs_and_reads_the_trust_bundle_over_a_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("workload.sock");
        let server = workload_server(&sock, 3);
        let uri = format!("unix://{}", sock.display());
        let w = Workload::new(&uri, DEFAULT_API_VERSION, "scoria", "g-1").unwrap();
        let resource = "hub.azure-devices.net/devices/dev1/modules/scoria";
        // Signed by the workload API, the token is the one the key itself gives.
        assert_eq!(
            sas_token(resource, &Signer::Workload(w.clone()), 1_800_000_000).unwrap(),
            sas_token(resource, &Signer::Key(KEY.into()), 1_800_000_000).unwrap()
        );
        assert!(w
            .trust_bundle()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        let stranger = Workload::new(&uri, DEFAULT_API_VERSION, "other", "g-1").unwrap();
        let e = stranger.sign(b"x").unwrap_err();
        assert!(
            e.contains("HTTP 404") && e.contains("no such module"),
            "{e}"
        );
        assert_eq!(server.join().unwrap().len(), 3);
        // Nobody listening: one line naming the URI.
        let e = w.sign(b"x").unwrap_err();
        assert!(e.contains(&uri), "{e}");
    }

    #[test]
    fn parses_uris() {
        let w = Workload::new("unix:///var/run/iotedge/workload.sock", "v", "m", "g").unwrap();
        assert_eq!(
            w.endpoint,
            Endpoint::Unix("/var/run/iotedge/workload.sock".into())
        );
        let w = Workload::new("http://10.0.0.1:15581/", "v", "m", "g").unwrap();
        assert_eq!(w.endpoint, Endpoint::Tcp("10.0.0.1:15581".into()));
        for bad in ["ftp://x", "http://", "http://h:1/path", "/var/run/x.sock"] {
            assert!(Workload::new(bad, "v", "m", "g").is_err(), "{bad}");
        }
    }

    /// What `fetch` makes of `raw`, answered by a server on a Unix socket after reading the
    /// request's header, then closing the connection.
    fn answer(raw: &'static [u8]) -> Result<(u16, Vec<u8>), String> {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("workload.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 0 && !line.ends_with("\r\n\r\n") {}
            stream.write_all(raw).unwrap();
        });
        let got = fetch(&Endpoint::Unix(sock), Method::GET, "/x", String::new());
        server.join().unwrap();
        got
    }

    #[test]
    fn reads_http_answers() {
        let (s, b) = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n{}{}extra").unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"{}{}"[..]));
        let (s, b) = answer(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n2\r\n{\"\r\n3;x=y\r\na\":\r\n1\r\n1\r\n1\r\n}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            (s, String::from_utf8(b).unwrap()),
            (200, "{\"a\":1}".into())
        );
        let (s, b) = answer(b"HTTP/1.1 404 Not Found\r\n\r\nno such module").unwrap();
        assert_eq!((s, b.as_slice()), (404, &b"no such module"[..]));
        for bad in [
            &b"HTTP/1.1 200 OK\r\n"[..],
            b"garbage\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            assert!(answer(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
