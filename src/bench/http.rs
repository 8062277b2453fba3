//! The `--url` client: Open Inference Protocol v2 requests over plain HTTP/1.1, one
//! keep-alive connection per worker (reopened when the server closes it).

use crate::http::v2::codec::HEADER_LENGTH;
use crate::http::v2::wire::{self, ErrorBody, FlatData};
use crate::tensor::{encode_binary, NamedTensor};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde_json::value::RawValue;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// How long opening a connection may take before the attempt counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the server is: host, port and any path prefix before `/v2`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    host: String,
    port: u16,
    /// `host:port` as the `Host` header and messages show it.
    authority: String,
    base: String,
    api_key: Option<String>,
}

impl Endpoint {
    /// Parses `http://HOST[:PORT][/PREFIX]`; https is not supported.
    pub fn parse(url: &str, api_key: Option<String>) -> Result<Endpoint, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("'{url}' is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(format!("'{url}': https is not supported; use http://")),
            _ => return Err(format!("'{url}' is not an http://HOST:PORT URL")),
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("'{url}' names no host"))?;
        let port = uri.port_u16().unwrap_or(80);
        if uri.query().is_some() {
            return Err(format!("'{url}': a query string is not allowed"));
        }
        Ok(Endpoint {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            authority: format!("{host}:{port}"),
            base: uri.path().trim_end_matches('/').to_string(),
            api_key,
        })
    }

    /// `{prefix}{path}` for a path starting with `/`.
    pub fn path(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }
}

/// One connection to the server, opened on first use and reopened after a failure.
pub struct Client {
    endpoint: Arc<Endpoint>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    pub fn new(endpoint: Arc<Endpoint>) -> Client {
        Client {
            endpoint,
            sender: None,
        }
    }

    /// Opens the connection now if it is not open.
    pub async fn connect(&mut self) -> Result<(), String> {
        if let Some(s) = self.sender.as_mut() {
            if s.ready().await.is_ok() {
                return Ok(());
            }
            self.sender = None;
        }
        let ep = &self.endpoint;
        let fail = |why: String| format!("cannot connect to {}: {why}", ep.authority);
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((ep.host.as_str(), ep.port)),
        )
        .await
        .map_err(|_| fail(format!("no answer in {} s", CONNECT_TIMEOUT.as_secs())))?
        .map_err(|e| fail(e.to_string()))?;
        // Requests are small and latency is what is measured: no Nagle delay.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| fail(chain(&e)))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    /// Sends one request and reads the whole response.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), String> {
        self.connect().await?;
        let ep = &self.endpoint;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, ep.authority.as_str());
        if let Some(key) = &ep.api_key {
            req = req.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let sender = self
            .sender
            .as_mut()
            .expect("connect() leaves an open connection; this is a bug");
        let result = async {
            let resp = sender.send_request(req).await.map_err(|e| chain(&e))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| chain(&e))?
                .to_bytes();
            Ok((status, body))
        }
        .await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    /// GETs a JSON document; anything but 200 is an error with the server's reason.
    pub async fn get_json(&mut self, path: &str) -> Result<Value, String> {
        let full = self.endpoint.path(path);
        let (status, body) = self.send(Method::GET, &full, &[], Bytes::new()).await?;
        if status != StatusCode::OK {
            return Err(format!(
                "GET http://{}{full}: {}",
                self.endpoint.authority,
                http_error(status, &body)
            ));
        }
        serde_json::from_slice(&body).map_err(|e| {
            format!(
                "GET http://{}{full}: the reply is not JSON: {e}",
                self.endpoint.authority
            )
        })
    }

    /// Drops the connection (after a timeout its state is unknown).
    pub fn reset(&mut self) {
        self.sender = None;
    }
}

/// `HTTP 503: <the server's {"error"} message, or the start of the body>`.
pub fn http_error(status: StatusCode, body: &[u8]) -> String {
    let reason = serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.error)
        .unwrap_or_else(|_| {
            let text = String::from_utf8_lossy(body);
            text.chars()
                .take(200)
                .collect::<String>()
                .trim()
                .to_string()
        });
    format!("HTTP {}: {reason}", status.as_u16())
}

/// An error and its causes on one line.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Body encoding of the inference requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// JSON tensors.
    Json,
    /// The binary tensor data extension, for inputs and outputs.
    Binary,
}

/// The one inference request every worker sends, encoded once.
pub struct InferRequest {
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl InferRequest {
    pub fn new(
        endpoint: &Endpoint,
        model_path: &str,
        inputs: &[NamedTensor],
        protocol: Protocol,
    ) -> Result<InferRequest, String> {
        let path = endpoint.path(&format!("{model_path}/infer"));
        let encode = |e: serde_json::Error| format!("cannot encode the request: {e}");
        let json_ct = HeaderValue::from_static("application/json");
        let (headers, body) = match protocol {
            Protocol::Json => {
                // Each input's elements as JSON text, which the request then borrows.
                let data = inputs
                    .iter()
                    .map(|t| serde_json::value::to_raw_value(&FlatData(t.tensor.data())))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(encode)?;
                let request = wire::InferenceRequest {
                    id: None,
                    inputs: inputs
                        .iter()
                        .zip(&data)
                        .map(|(t, data)| request_input(t, Some(data), None))
                        .collect(),
                    outputs: None,
                    parameters: None,
                };
                let body = serde_json::to_vec(&request).map_err(encode)?;
                (vec![(CONTENT_TYPE, json_ct)], body)
            }
            Protocol::Binary => {
                let mut blob = Vec::new();
                let inputs = inputs
                    .iter()
                    .map(|t| {
                        let size = encode_binary(t.tensor.data(), &mut blob);
                        let parameters = wire::InputParameters {
                            binary_data_size: Some(size as u64),
                        };
                        request_input(t, None, Some(parameters))
                    })
                    .collect();
                let request = wire::InferenceRequest {
                    id: None,
                    inputs,
                    outputs: None,
                    parameters: Some(wire::RequestParameters {
                        binary_data_output: true,
                        ..Default::default()
                    }),
                };
                let header = serde_json::to_vec(&request).map_err(encode)?;
                let length = HeaderValue::from(header.len());
                let mut body = header;
                body.extend_from_slice(&blob);
                let octets = HeaderValue::from_static("application/octet-stream");
                let hl = HeaderName::from_static(HEADER_LENGTH);
                (vec![(CONTENT_TYPE, octets), (hl, length)], body)
            }
        };
        Ok(InferRequest {
            path,
            headers,
            body: Bytes::from(body),
        })
    }

    /// Sends the request once; an error for anything but a 200 answer.
    pub async fn send(&self, client: &mut Client) -> Result<(), String> {
        let (status, body) = client
            .send(Method::POST, &self.path, &self.headers, self.body.clone())
            .await?;
        if status == StatusCode::OK {
            Ok(())
        } else {
            Err(http_error(status, &body))
        }
    }
}

/// The wire form of input `t`, with its data as JSON or described by `parameters`.
fn request_input<'a>(
    t: &NamedTensor,
    data: Option<&'a RawValue>,
    parameters: Option<wire::InputParameters>,
) -> wire::RequestInput<'a> {
    wire::RequestInput {
        name: t.name.clone(),
        shape: t
            .tensor
            .shape()
            .iter()
            .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
            .collect(),
        datatype: t.tensor.dtype().name().to_string(),
        data,
        parameters,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let e = Endpoint::parse("http://127.0.0.1:8000", None).unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.base.as_str()),
            ("127.0.0.1", 8000, "")
        );
        assert_eq!(e.path("/v2"), "/v2");
        let e = Endpoint::parse("http://localhost/prefix/", None).unwrap();
        assert_eq!((e.port, e.path("/v2").as_str()), (80, "/prefix/v2"));
        let e = Endpoint::parse("http://[::1]:9/", None).unwrap();
        assert_eq!((e.host.as_str(), e.authority()), ("::1", "[::1]:9"));
        for bad in [
            "https://x:1",
            "127.0.0.1:8000",
            "ftp://x",
            "http://x:1/?a=b",
            "::",
        ] {
            assert!(Endpoint::parse(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_replies() {
        let e = http_error(
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"error":"queue full"}"#,
        );
        assert_eq!(e, "HTTP 503: queue full");
        assert_eq!(
            http_error(StatusCode::NOT_FOUND, b"nope\n"),
            "HTTP 404: nope"
        );
    }
}
