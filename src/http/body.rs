//! The request-body extractor: buffers up to the configured limit, gives up on a client that
//! stops sending, decodes `Content-Encoding: gzip | deflate` (tritonclient's request
//! compression) within the same limit, and answers violations with the API's own error body
//! (413 oversized, 408 stalled, 415 unknown encoding). An oversized body's rest is read and
//! dropped ([`discard`]) before the 413, so the client gets it rather than a reset.
//! [`Incoming`] is the same in two steps, for inference routes, which read a body only once
//! the model has room for it ([`crate::models::intake`]).

use super::{ApiError, AppState};
use crate::models::intake::{Intake, Room};
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap};
use bytes::BytesMut;
use http_body_util::BodyExt;
use std::io::Read;
use std::time::Duration;

/// Compressed bodies larger than this are decompressed on a blocking thread.
const INLINE_DECODE_BYTES: usize = 64 << 10;

/// The whole request body, decoded, at most `HttpConfig::max_body_bytes` long.
pub struct Body(pub Bytes);

/// A request body's `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Identity,
    Gzip,
    /// zlib-wrapped DEFLATE, as HTTP's `deflate` is (RFC 9110) and Python's zlib writes.
    Deflate,
}

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        Incoming::start(req, state)
            .await?
            .read(state, 0)
            .await
            .map(Body)
    }
}

/// A request whose body is not read yet: its encoding is known and its declared length
/// within the limit.
pub(crate) struct Incoming {
    body: axum::body::Body,
    encoding: Encoding,
    declared: Option<u64>,
}

impl Incoming {
    /// Checks what the headers say about the body: an unknown `Content-Encoding` is a 415,
    /// and a `Content-Length` over the limit a 413 (its body read and dropped first).
    pub(crate) async fn start(req: Request, state: &AppState) -> Result<Incoming, ApiError> {
        let limit = state.config.max_body_bytes;
        let encoding = encoding(req.headers())?;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            discard(req.into_body()).await;
            return Err(too_large(limit));
        }
        Ok(Incoming {
            body: req.into_body(),
            encoding,
            declared,
        })
    }

    /// The bytes the body will take once read: its `Content-Length` when it is not
    /// compressed; `None` when unknown.
    fn size(&self) -> Option<u64> {
        self.declared
            .filter(|_| self.encoding == Encoding::Identity)
    }

    /// Refuses the request before its body is read: the body is read and dropped first
    /// ([`discard`]), and `e` is the answer.
    pub(crate) async fn refuse(self, e: impl Into<ApiError>) -> ApiError {
        discard(self.body).await;
        e.into()
    }

    /// [`Incoming::read`] once `intake` has room for the body ([`Intake::admit`]); the room
    /// is held until the returned [`Room`] is dropped, when the request is answered. A body
    /// whose declared length the room holds is read into a buffer of that length.
    pub(crate) async fn read_within(
        self,
        intake: &Intake,
        state: &AppState,
    ) -> Result<(Bytes, Room), ApiError> {
        let size = self
            .declared
            .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
        let room = intake.admit(self.size()).await;
        let reserve = if room.bytes() >= size { size } else { 0 };
        Ok((self.read(state, reserve).await?, room))
    }

    /// Reads the whole body and decodes it: 408 when the client stops sending for
    /// `--client-timeout`, 413 past the limit. Once a second frame arrives, `reserve` bytes
    /// (at most the limit) are set aside for the body. They must be bytes a [`Room`] counts:
    /// a client could otherwise declare a length, send two frames and stall, and have the
    /// server commit that length for nothing.
    pub(crate) async fn read(self, state: &AppState, reserve: usize) -> Result<Bytes, ApiError> {
        let limit = state.config.max_body_bytes;
        let idle = state.config.client_timeout;
        let Incoming {
            mut body, encoding, ..
        } = self;
        let mut raw = Gather::new(reserve.min(limit));
        let mut received = 0usize;
        loop {
            let frame = match tokio::time::timeout(idle, body.frame()).await {
                Err(_) => {
                    return Err(ApiError::RequestTimeout(format!(
                        "the request body stalled: nothing received for {} (--client-timeout)",
                        humantime::format_duration(idle)
                    )))
                }
                Ok(None) => break,
                Ok(Some(Ok(frame))) => frame,
                Ok(Some(Err(e))) => {
                    return Err(ApiError::BadRequest(format!(
                        "could not read the request body: {e}"
                    )))
                }
            };
            if let Ok(data) = frame.into_data() {
                received = received.saturating_add(data.len());
                if received > limit {
                    discard(body).await;
                    return Err(too_large(limit));
                }
                raw.push(data);
            }
        }
        let raw = raw.finish();
        if encoding == Encoding::Identity {
            return Ok(raw);
        }
        let decoded = if raw.len() > INLINE_DECODE_BYTES {
            tokio::task::spawn_blocking(move || decode(encoding, &raw, limit))
                .await
                .map_err(|e| ApiError::Internal(format!("decompression task failed: {e}")))?
        } else {
            decode(encoding, &raw, limit)
        };
        decoded.map(Bytes::from)
    }
}

/// A body's frames gathered into one buffer as they arrive, so that a large body is held
/// once: a single frame is kept as it came, and later ones are copied into a buffer of the
/// expected length (growing past it if need be) and dropped.
struct Gather {
    first: Option<Bytes>,
    rest: BytesMut,
    expected: usize,
}

impl Gather {
    /// Room for `expected` bytes once a second frame arrives.
    fn new(expected: usize) -> Gather {
        Gather {
            first: None,
            rest: BytesMut::new(),
            expected,
        }
    }

    fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        match self.first.take() {
            None if self.rest.is_empty() => self.first = Some(data),
            None => self.rest.extend_from_slice(&data),
            Some(first) => {
                self.rest
                    .reserve(self.expected.max(first.len() + data.len()));
                self.rest.extend_from_slice(&first);
                self.rest.extend_from_slice(&data);
            }
        }
    }

    fn finish(self) -> Bytes {
        match self.first {
            Some(first) => first,
            None => self.rest.freeze(),
        }
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "request body exceeds the limit of {limit} bytes (--max-body-size)"
    ))
}

/// How long a refused request's body is read (and dropped) before the answer.
const DISCARD_REFUSED: Duration = Duration::from_secs(1);

/// Reads and drops what is left of a refused request's body as it streams in, for at most
/// [`DISCARD_REFUSED`], so that a client that sends its whole body before reading gets the
/// answer on a connection that stays usable: a socket closed with unread data is reset, and
/// the reset can discard the answer before the client reads it.
pub(super) async fn discard(mut body: axum::body::Body) {
    let rest = async { while let Some(Ok(_)) = body.frame().await {} };
    let _ = tokio::time::timeout(DISCARD_REFUSED, rest).await;
}

/// The body's encoding; one this server cannot decode is a 415 that names it.
fn encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    let text = value.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match text.as_str() {
        "" | "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        "deflate" => Ok(Encoding::Deflate),
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Encoding '{}' is not supported (use gzip, deflate or none)",
            String::from_utf8_lossy(value.as_bytes())
        ))),
    }
}

/// Decompresses `raw`; more than `limit` bytes out is a 413, a corrupt stream a 400.
pub(crate) fn decode(encoding: Encoding, raw: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    let name = match encoding {
        Encoding::Gzip => "gzip",
        Encoding::Deflate => "deflate",
        Encoding::Identity => return Ok(raw.to_vec()),
    };
    let reader: Box<dyn Read> = match encoding {
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        _ => Box::new(flate2::read::ZlibDecoder::new(raw)),
    };
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::BadRequest(format!("the {name} request body is corrupt: {e}")))?;
    if out.len() > limit {
        return Err(ApiError::PayloadTooLarge(format!(
            "the {name} request body decompresses to over the limit of {limit} bytes (--max-body-size)"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn decodes_within_the_limit() {
        let data = br#"{"inputs": []}"#.repeat(100);
        assert_eq!(decode(Encoding::Gzip, &gzip(&data), 1 << 20).unwrap(), data);
        assert_eq!(
            decode(Encoding::Deflate, &zlib(&data), 1 << 20).unwrap(),
            data
        );
        // Exactly at the limit is accepted; one byte over is a 413, however small the input.
        assert_eq!(
            decode(Encoding::Gzip, &gzip(&data), data.len()).unwrap(),
            data
        );
        let bomb = gzip(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 64 << 10);
        let e = decode(Encoding::Gzip, &bomb, 1 << 20).unwrap_err();
        assert!(matches!(e, ApiError::PayloadTooLarge(_)), "{e:?}");
        let e = decode(Encoding::Gzip, b"not gzip at all", 1 << 20).unwrap_err();
        assert!(
            matches!(e, ApiError::BadRequest(ref m) if m.contains("gzip")),
            "{e:?}"
        );
        let e = decode(Encoding::Deflate, &gzip(&data), 1 << 20).unwrap_err();
        assert!(matches!(e, ApiError::BadRequest(_)), "{e:?}");
    }

    #[test]
    fn gathers_frames_into_one_buffer() {
        let gather = |expected: usize, frames: &[&[u8]]| {
            let mut g = Gather::new(expected);
            for f in frames {
                g.push(Bytes::copy_from_slice(f));
            }
            g.finish()
        };
        assert_eq!(gather(0, &[]), Bytes::new());
        assert_eq!(
            gather(5, &[b"", b"hello", b""]),
            Bytes::from_static(b"hello")
        );
        assert_eq!(gather(11, &[b"hello", b" ", b"world"]), "hello world");
        // A declared length that is wrong either way changes nothing but the reservation.
        assert_eq!(gather(2, &[b"hello", b" ", b"world"]), "hello world");
        assert_eq!(gather(1000, &[b"ab", b"cd"]), "abcd");
    }

    #[test]
    fn names_unknown_encodings() {
        let mut h = HeaderMap::new();
        assert_eq!(encoding(&h).unwrap(), Encoding::Identity);
        for (v, want) in [
            ("gzip", Encoding::Gzip),
            ("GZip", Encoding::Gzip),
            ("deflate", Encoding::Deflate),
            ("identity", Encoding::Identity),
        ] {
            h.insert(header::CONTENT_ENCODING, v.parse().unwrap());
            assert_eq!(encoding(&h).unwrap(), want, "{v}");
        }
        h.insert(header::CONTENT_ENCODING, "br".parse().unwrap());
        let e = encoding(&h).unwrap_err();
        assert!(
            matches!(e, ApiError::UnsupportedMediaType(ref m) if m.contains("'br'")),
            "{e:?}"
        );
    }
}
