//! gRPC-Web → gRPC, for browser clients.
//!
//! On the request path of routes with `grpc_web: true` (`transcode.rs` classifies the
//! request). A browser cannot read HTTP trailers, so gRPC-Web carries them in the body: after
//! the messages, one frame flagged `0x80` whose payload is the trailers as an HTTP/1 header
//! block. `application/grpc-web-text` is the same, base64-encoded, for clients that can only
//! handle text. The request goes upstream as ordinary gRPC (`application/grpc`, `te:
//! trailers`, its body decoded if it was text); the response streams back frame by frame,
//! its trailers appended as that final frame, encoded again for `-text` callers. Works from
//! HTTP/1.1 callers as well as HTTP/2 ones: the upstream side is always HTTP/2.

use super::framing::{frame_with_flag, TRAILER_FLAG};
use super::request::RequestError;
use super::stream::{StreamElementError, StreamFailure};
use crate::body::{Body, BodyError};
use crate::error::GatewayError;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, TE};
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Translate one gRPC-Web call (`text`: base64 bodies) and its answer.
pub(crate) async fn call<S>(
    mut inner: S,
    req: Request<Body>,
    text: bool,
) -> Result<Response<Body>, GatewayError>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>,
{
    let (mut parts, body) = req.into_parts();
    let content_type = if text {
        "application/grpc-web-text+proto"
    } else {
        "application/grpc-web+proto"
    };
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    parts
        .headers
        .insert(TE, HeaderValue::from_static("trailers"));
    parts.headers.remove(CONTENT_LENGTH);
    let failure = StreamFailure::default();
    let body = if text {
        Body::Stream {
            body: Box::pin(Base64Decode {
                inner: body,
                pending: BytesMut::new(),
                done: false,
                failure: failure.clone(),
            }),
        }
    } else {
        body
    };
    // A body that is not base64 ends the call; the caller hears why, not what the upstream
    // made of the reset.
    let broken = || failure.get().cloned().map(GatewayError::TranscodeStream);
    let response = match inner.call(Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(error) => return Err(broken().unwrap_or(error)),
    };
    if let Some(error) = broken() {
        return Err(error);
    }
    let (mut parts, body) = response.into_parts();
    let grpc = parts
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if !grpc {
        // Not a gRPC answer (an HTML error page): passed on as it is.
        return Ok(Response::from_parts(parts, body));
    }
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    parts.headers.remove(CONTENT_LENGTH);
    let body = Body::Stream {
        body: Box::pin(WebResponse {
            inner: body,
            text,
            carry: BytesMut::new(),
            done: false,
        }),
    };
    Ok(Response::from_parts(parts, body))
}

/// Trailers as gRPC-Web's trailer frame payload: `name: value\r\n` lines.
pub(crate) fn trailer_block(trailers: &HeaderMap) -> Bytes {
    let mut block = BytesMut::new();
    for (name, value) in trailers {
        block.extend_from_slice(name.as_str().as_bytes());
        block.extend_from_slice(b": ");
        block.extend_from_slice(value.as_bytes());
        block.extend_from_slice(b"\r\n");
    }
    frame_with_flag(TRAILER_FLAG, &block)
}

/// A `-text` request body, decoded as it arrives (in whole groups of four characters).
struct Base64Decode {
    inner: Body,
    pending: BytesMut,
    done: bool,
    failure: StreamFailure,
}

impl Base64Decode {
    fn fail(&mut self) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.done = true;
        let error = Arc::new(StreamElementError {
            index: 0,
            source: RequestError::NotBase64,
        });
        let _ = self.failure.set(error.clone());
        Poll::Ready(Some(Err(BodyError::Transcode(error))))
    }
}

impl http_body::Body for Base64Decode {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match http_body::Body::poll_frame(Pin::new(&mut this.inner), cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    this.pending
                        .extend(data.iter().copied().filter(|b| !b.is_ascii_whitespace()));
                    // Padding ends a chunk: decode up to and including it.
                    let whole = match this.pending.iter().rposition(|b| *b == b'=') {
                        Some(pad) => (pad + 1).div_ceil(4) * 4,
                        None => this.pending.len() / 4 * 4,
                    }
                    .min(this.pending.len());
                    if whole == 0 {
                        continue;
                    }
                    let chunk = this.pending.split_to(whole);
                    match decode_chunks(&chunk) {
                        Some(decoded) => return Poll::Ready(Some(Ok(Frame::data(decoded)))),
                        None => return this.fail(),
                    }
                }
                Poll::Ready(None) => {
                    this.done = true;
                    if this.pending.is_empty() {
                        return Poll::Ready(None);
                    }
                    let rest = this.pending.split();
                    return match decode_chunks(&rest) {
                        Some(decoded) => Poll::Ready(Some(Ok(Frame::data(decoded)))),
                        None => this.fail(),
                    };
                }
            }
        }
    }
}

/// Base64 that may be several padded chunks one after the other.
fn decode_chunks(text: &[u8]) -> Option<Bytes> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut rest = text;
    while !rest.is_empty() {
        let end = match rest.iter().position(|b| *b == b'=') {
            Some(pad) => {
                let mut end = pad;
                while end < rest.len() && rest[end] == b'=' {
                    end += 1;
                }
                end
            }
            None => rest.len(),
        };
        out.extend(BASE64.decode(&rest[..end]).ok()?);
        rest = &rest[end..];
    }
    Some(Bytes::from(out))
}

/// The upstream's gRPC response as gRPC-Web: its data as is (or base64), its trailers as the
/// final frame.
struct WebResponse {
    inner: Body,
    text: bool,
    /// `-text`: bytes not yet encoded, so each chunk sent is a whole number of 3-byte groups.
    carry: BytesMut,
    done: bool,
}

impl WebResponse {
    fn encode(&mut self, data: &[u8], last: bool) -> Bytes {
        if !self.text {
            return Bytes::copy_from_slice(data);
        }
        self.carry.extend_from_slice(data);
        let whole = if last {
            self.carry.len()
        } else {
            self.carry.len() / 3 * 3
        };
        let chunk = self.carry.split_to(whole);
        Bytes::from(BASE64.encode(&chunk))
    }
}

impl http_body::Body for WebResponse {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match http_body::Body::poll_frame(Pin::new(&mut this.inner), cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let encoded = this.encode(&data, false);
                        if encoded.is_empty() {
                            continue;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(encoded))));
                    }
                    Err(frame) => {
                        let Ok(trailers) = frame.into_trailers() else {
                            continue;
                        };
                        this.done = true;
                        let mut out = BytesMut::new();
                        if this.text && !this.carry.is_empty() {
                            out.extend_from_slice(&this.encode(&[], true));
                        }
                        let block = trailer_block(&trailers);
                        out.extend_from_slice(&this.encode(&block, true));
                        return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                    }
                },
                Poll::Ready(None) => {
                    this.done = true;
                    if this.text && !this.carry.is_empty() {
                        let rest = this.encode(&[], true);
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_chunks_decode_one_after_the_other() {
        let text = format!("{}{}", BASE64.encode(b"ab"), BASE64.encode(b"cdef"));
        assert_eq!(
            decode_chunks(text.as_bytes()).as_deref(),
            Some(&b"abcdef"[..])
        );
        assert_eq!(decode_chunks(b"!!!!"), None);
    }

    #[test]
    fn trailers_become_a_flagged_frame() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("grpc-message", HeaderValue::from_static("ok"));
        let frame = trailer_block(&trailers);
        assert_eq!(frame[0], 0x80);
        assert_eq!(&frame[5..], b"grpc-status: 0\r\ngrpc-message: ok\r\n");
        assert_eq!(
            u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize,
            frame.len() - 5
        );
    }
}
