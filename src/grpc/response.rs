//! gRPC response → HTTP/JSON answer.
//!
//! On the request path of transcoding routes, once the upstream's response head is in. A
//! unary call is read whole (its one message, bounded by `max_response_message`, then its
//! status) and answered as JSON — or as the raw body of a `google.api.HttpBody` — with the
//! HTTP status of its gRPC status and its metadata as headers. A server-streaming call is
//! answered as its messages arrive ([`ServerStream`]): a JSON array, NDJSON or server-sent
//! events, each message converted as soon as it is whole, the upstream read only as fast as
//! the caller reads (nothing is buffered beyond one message). Until the first message the
//! answer can still be an error with its own status; after it, an error ends the stream with
//! a final error object.

use super::framing::{Deframer, FrameError};
use super::http_rule::Binding;
use super::metadata::response_headers;
use super::policy::{JsonPrint, StreamFormat};
use super::request::is_http_body;
use super::status::GrpcStatus;
use crate::body::{Body, BodyError};
use crate::error::GatewayError;
use bytes::{Bytes, BytesMut};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};
use http_body::Frame;
use prost_reflect::{
    DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage, SerializeOptions,
};
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

/// How answers of one binding are written.
#[derive(Clone)]
pub(crate) struct Rendering {
    pub(crate) output: MessageDescriptor,
    /// `response_body`: the field sent instead of the whole message.
    pub(crate) response_body: Option<prost_reflect::FieldDescriptor>,
    pub(crate) print: JsonPrint,
    pub(crate) pool: DescriptorPool,
    pub(crate) max_message: usize,
}

impl Rendering {
    pub(crate) fn new(
        binding: &Binding,
        print: JsonPrint,
        pool: &DescriptorPool,
        max_message: usize,
    ) -> Rendering {
        Rendering {
            output: binding.method.output.clone(),
            response_body: binding.response_body.clone(),
            print,
            pool: pool.clone(),
            max_message,
        }
    }

    fn options(&self, emit_defaults: bool) -> SerializeOptions {
        SerializeOptions::new()
            .skip_default_fields(!emit_defaults)
            .use_proto_field_name(self.print.proto_field_names)
            .use_enum_numbers(self.print.enums_as_ints)
    }

    /// One response message as the caller's body: JSON (or an `HttpBody`'s own bytes and
    /// content type).
    pub(crate) fn render(
        &self,
        encoded: &[u8],
    ) -> Result<(Bytes, Option<HeaderValue>), GatewayError> {
        let message = DynamicMessage::decode(self.output.clone(), encoded).map_err(|_| {
            GatewayError::UpstreamBadResponse(
                "a response message does not decode as the method's output type",
            )
        })?;
        let message = match &self.response_body {
            None => message,
            Some(field) => match message.get_field(field).as_ref() {
                prost_reflect::Value::Message(inner) if is_http_body(&inner.descriptor()) => {
                    return Ok(http_body(inner));
                }
                _ => {
                    let json = self.json_value(&message)?;
                    let key = if self.print.proto_field_names {
                        field.name()
                    } else {
                        field.json_name()
                    };
                    let value = match json.get(key) {
                        Some(value) => value.clone(),
                        // A default the options left out: print it anyway, it is the body.
                        None => {
                            let mut options = self.options(true);
                            options = options.skip_default_fields(false);
                            let full = message
                                .serialize_with_options(serde_json::value::Serializer, &options)
                                .map_err(|_| unprintable())?;
                            full.get(key).cloned().unwrap_or(serde_json::Value::Null)
                        }
                    };
                    return Ok((self.to_bytes(&value)?, None));
                }
            },
        };
        if is_http_body(&self.output) {
            return Ok(http_body(&message));
        }
        let mut out = Vec::with_capacity(encoded.len() * 2 + 16);
        let options = self.options(self.print.emit_defaults);
        if self.print.pretty {
            let mut serializer = serde_json::Serializer::pretty(&mut out);
            message
                .serialize_with_options(&mut serializer, &options)
                .map_err(|_| unprintable())?;
        } else {
            let mut serializer = serde_json::Serializer::new(&mut out);
            message
                .serialize_with_options(&mut serializer, &options)
                .map_err(|_| unprintable())?;
        }
        Ok((Bytes::from(out), None))
    }

    fn json_value(&self, message: &DynamicMessage) -> Result<serde_json::Value, GatewayError> {
        message
            .serialize_with_options(
                serde_json::value::Serializer,
                &self.options(self.print.emit_defaults),
            )
            .map_err(|_| unprintable())
    }

    fn to_bytes(&self, value: &serde_json::Value) -> Result<Bytes, GatewayError> {
        let text = if self.print.pretty {
            serde_json::to_vec_pretty(value)
        } else {
            serde_json::to_vec(value)
        };
        text.map(Bytes::from).map_err(|_| unprintable())
    }

    /// A status as JSON bytes (`google.rpc.Status`).
    pub(crate) fn status_json(&self, status: &GrpcStatus) -> Bytes {
        let value = status.to_json(&self.pool);
        self.to_bytes(&value).unwrap_or_default()
    }
}

fn unprintable() -> GatewayError {
    GatewayError::UpstreamBadResponse("a response message cannot be printed as JSON")
}

fn http_body(message: &DynamicMessage) -> (Bytes, Option<HeaderValue>) {
    let data = match message.get_field_by_name("data").as_deref() {
        Some(prost_reflect::Value::Bytes(data)) => data.clone(),
        _ => Bytes::new(),
    };
    let content_type = match message.get_field_by_name("content_type").as_deref() {
        Some(prost_reflect::Value::String(text)) if !text.is_empty() => {
            HeaderValue::from_str(text).ok()
        }
        _ => None,
    };
    (data, content_type)
}

/// The checks every gRPC response head gets: HTTP 200 with a gRPC content type. An answer
/// with another HTTP status (a proxy in front of the server, a server that is not gRPC) is
/// the call's status by gRPC's HTTP-to-gRPC table, answered like a status the upstream sent.
fn check_head(response: &Response<Body>) -> Result<Option<GrpcStatus>, GatewayError> {
    let status = response.status();
    if status != StatusCode::OK {
        let code = GrpcStatus::code_of_http_status(status);
        return Ok(Some(GrpcStatus::new(
            code,
            format!("the upstream answered HTTP {}", status.as_u16()),
        )));
    }
    let grpc = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if !grpc {
        return Err(GatewayError::UpstreamBadResponse(
            "the upstream's answer is not a gRPC response",
        ));
    }
    Ok(None)
}

fn frame_error(error: FrameError, limit: usize) -> GatewayError {
    match error {
        FrameError::TooLarge { .. } => GatewayError::ResponseMessageTooLarge { limit },
        FrameError::Compressed => {
            GatewayError::UpstreamBadResponse("the upstream compressed a message unasked")
        }
        FrameError::Truncated => {
            GatewayError::UpstreamBadResponse("the upstream's response ended inside a message")
        }
    }
}

/// The answer of an upstream that ended the call with `status` (not OK): its HTTP status and
/// `google.rpc.Status` body, with the metadata it sent.
fn error_answer(
    status: &GrpcStatus,
    rendering: &Rendering,
    metadata: &[&HeaderMap],
) -> Response<Body> {
    let mut response = Response::new(Body::full(rendering.status_json(status)));
    *response.status_mut() = status.http_status();
    for headers in metadata {
        response_headers(headers, response.headers_mut());
    }
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn ok_answer(
    body: Bytes,
    content_type: Option<HeaderValue>,
    metadata: &[&HeaderMap],
) -> Response<Body> {
    let mut response = Response::new(Body::full(body));
    for headers in metadata {
        response_headers(headers, response.headers_mut());
    }
    response.headers_mut().insert(
        CONTENT_TYPE,
        content_type.unwrap_or_else(|| HeaderValue::from_static("application/json")),
    );
    response
}

/// The answer to a unary (or client-streaming) call.
pub(crate) async fn unary(
    response: Response<Body>,
    rendering: &Rendering,
) -> Result<Response<Body>, GatewayError> {
    if let Some(status) = check_head(&response)? {
        return Ok(error_answer(&status, rendering, &[]));
    }
    let (parts, mut body) = response.into_parts();
    if let Some(status) = GrpcStatus::from_headers(&parts.headers) {
        // Trailers-only: the status is all there is.
        if status.is_ok() {
            return Err(GatewayError::UpstreamBadResponse(
                "the upstream ended a unary call without a message",
            ));
        }
        return Ok(error_answer(&status, rendering, &[&parts.headers]));
    }
    let mut deframer = Deframer::new(rendering.max_message);
    let mut message: Option<Bytes> = None;
    let mut trailers = HeaderMap::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame_next(cx)).await
    {
        let frame = frame.map_err(GatewayError::from_request_body)?;
        match frame.into_data() {
            Ok(data) => {
                deframer.push(&data);
                while let Some(next) = deframer
                    .next_message()
                    .map_err(|e| frame_error(e, rendering.max_message))?
                {
                    if message.is_some() {
                        return Err(GatewayError::UpstreamBadResponse(
                            "the upstream sent more than one message for a unary call",
                        ));
                    }
                    message = Some(next);
                }
            }
            Err(frame) => {
                if let Ok(found) = frame.into_trailers() {
                    trailers = found;
                }
            }
        }
    }
    deframer
        .finish()
        .map_err(|e| frame_error(e, rendering.max_message))?;
    let Some(status) = GrpcStatus::from_headers(&trailers) else {
        return Err(GatewayError::UpstreamBadResponse(
            "the upstream's response has no grpc-status",
        ));
    };
    if !status.is_ok() {
        return Ok(error_answer(
            &status,
            rendering,
            &[&parts.headers, &trailers],
        ));
    }
    let Some(message) = message else {
        return Err(GatewayError::UpstreamBadResponse(
            "the upstream ended a unary call without a message",
        ));
    };
    let (body, content_type) = rendering.render(&message)?;
    Ok(ok_answer(body, content_type, &[&parts.headers, &trailers]))
}

/// Poll one frame of a body (http-body's `poll_frame` on a pinned `&mut`).
trait PollFrameNext {
    fn poll_frame_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>>;
}

impl PollFrameNext for Body {
    fn poll_frame_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        http_body::Body::poll_frame(self, cx)
    }
}

/// The answer to a server-streaming call: waits for the first message (or the status), then
/// streams.
pub(crate) async fn server_streaming(
    response: Response<Body>,
    rendering: Rendering,
    format: StreamFormat,
) -> Result<Response<Body>, GatewayError> {
    if let Some(status) = check_head(&response)? {
        return Ok(error_answer(&status, &rendering, &[]));
    }
    let (parts, body) = response.into_parts();
    if let Some(status) = GrpcStatus::from_headers(&parts.headers) {
        if !status.is_ok() {
            return Ok(error_answer(&status, &rendering, &[&parts.headers]));
        }
        // OK with no message: an empty stream.
        let mut stream = ServerStream::new(Body::empty(), rendering, format);
        stream.finished = true;
        stream.close(None);
        let bytes: BytesMut = stream.queue.drain(..).fold(BytesMut::new(), |mut all, b| {
            all.extend_from_slice(&b);
            all
        });
        return Ok(ok_answer(
            bytes.freeze(),
            Some(HeaderValue::from_static(format.content_type())),
            &[&parts.headers],
        ));
    }
    let mut stream = ServerStream::new(body, rendering, format);
    // Wait for the first piece: if the call fails before any message, the caller gets the
    // error's own HTTP status rather than a 200 with an error inside.
    let first = std::future::poll_fn(|cx| stream.advance(cx)).await;
    if let Some(status) = first {
        return Ok(error_answer(
            &status,
            &stream.rendering,
            &[&parts.headers, &stream.trailers],
        ));
    }
    let mut answer = Response::new(Body::Stream {
        body: Box::pin(stream),
    });
    response_headers(&parts.headers, answer.headers_mut());
    answer.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if format == StreamFormat::Sse {
        answer.headers_mut().insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
    }
    Ok(answer)
}

/// A server stream's messages as the caller's body, converted as they arrive.
pub(crate) struct ServerStream {
    upstream: Body,
    deframer: Deframer,
    rendering: Rendering,
    format: StreamFormat,
    /// Pieces of the caller's body ready to go.
    queue: VecDeque<Bytes>,
    /// Messages sent so far.
    sent: usize,
    trailers: HeaderMap,
    /// The upstream's part is over (the closing piece is queued).
    finished: bool,
}

impl ServerStream {
    fn new(upstream: Body, rendering: Rendering, format: StreamFormat) -> ServerStream {
        ServerStream {
            upstream,
            deframer: Deframer::new(rendering.max_message),
            rendering,
            format,
            queue: VecDeque::new(),
            sent: 0,
            trailers: HeaderMap::new(),
            finished: false,
        }
    }

    /// One message's piece of the body.
    fn push_message(&mut self, json: &[u8]) {
        let mut piece = BytesMut::with_capacity(json.len() + 8);
        match self.format {
            StreamFormat::JsonArray => {
                piece.extend_from_slice(if self.sent == 0 { b"[" } else { b"," });
                piece.extend_from_slice(json);
            }
            StreamFormat::Ndjson => {
                piece.extend_from_slice(json);
                piece.extend_from_slice(b"\n");
            }
            StreamFormat::Sse => {
                piece.extend_from_slice(b"data: ");
                piece.extend_from_slice(json);
                piece.extend_from_slice(b"\n\n");
            }
        }
        self.sent += 1;
        self.queue.push_back(piece.freeze());
    }

    /// The end of the body: the error object, if the call failed, and the closing bracket.
    fn close(&mut self, error: Option<&GrpcStatus>) {
        let mut piece = BytesMut::new();
        let error_json = error.map(|status| {
            let inner = status.to_json(&self.rendering.pool);
            serde_json::to_vec(&serde_json::json!({ "error": inner })).unwrap_or_default()
        });
        match self.format {
            StreamFormat::JsonArray => {
                if let Some(error) = &error_json {
                    piece.extend_from_slice(if self.sent == 0 { b"[" } else { b"," });
                    piece.extend_from_slice(error);
                } else if self.sent == 0 {
                    piece.extend_from_slice(b"[");
                }
                piece.extend_from_slice(b"]");
            }
            StreamFormat::Ndjson => {
                if let Some(error) = &error_json {
                    piece.extend_from_slice(error);
                    piece.extend_from_slice(b"\n");
                }
            }
            StreamFormat::Sse => {
                if let Some(error) = &error_json {
                    piece.extend_from_slice(b"event: error\ndata: ");
                    piece.extend_from_slice(error);
                    piece.extend_from_slice(b"\n\n");
                }
            }
        }
        self.finished = true;
        if !piece.is_empty() {
            self.queue.push_back(piece.freeze());
        }
    }

    /// Read from the upstream until something is queued or the stream is over. Before the
    /// first message, a failed call is returned as its status instead of being queued.
    fn advance(&mut self, cx: &mut Context<'_>) -> Poll<Option<GrpcStatus>> {
        loop {
            if !self.queue.is_empty() || self.finished {
                return Poll::Ready(None);
            }
            let failure = match Pin::new(&mut self.upstream).poll_frame_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        self.deframer.push(&data);
                        let mut failure = None;
                        loop {
                            match self.deframer.next_message() {
                                Ok(Some(message)) => match self.rendering.render(&message) {
                                    Ok((json, _)) => self.push_message(&json),
                                    Err(error) => {
                                        failure = Some(GrpcStatus::new(13, error.to_string()));
                                        break;
                                    }
                                },
                                Ok(None) => break,
                                Err(error) => {
                                    let error = frame_error(error, self.rendering.max_message);
                                    failure = Some(GrpcStatus::new(13, error.to_string()));
                                    break;
                                }
                            }
                        }
                        failure
                    }
                    Err(frame) => {
                        self.trailers = frame.into_trailers().unwrap_or_default();
                        Some(GrpcStatus::from_headers(&self.trailers).unwrap_or_else(|| {
                            GrpcStatus::new(13, "the upstream's response has no grpc-status")
                        }))
                    }
                },
                Poll::Ready(Some(Err(error))) => Some(GrpcStatus::new(
                    14,
                    GatewayError::from_request_body(error).to_string(),
                )),
                Poll::Ready(None) => Some(if self.deframer.finish().is_err() {
                    GrpcStatus::new(13, "the upstream's response ended inside a message")
                } else {
                    GrpcStatus::new(13, "the upstream's response has no grpc-status")
                }),
            };
            if let Some(status) = failure {
                if status.is_ok() {
                    self.close(None);
                } else if self.sent == 0 && self.queue.is_empty() {
                    self.finished = true;
                    return Poll::Ready(Some(status));
                } else {
                    self.close(Some(&status));
                }
            }
        }
    }
}

impl http_body::Body for ServerStream {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Some(piece) = this.queue.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        if this.finished {
            return Poll::Ready(None);
        }
        match this.advance(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(status)) => {
                // Only before the first message; `server_streaming` took that case already.
                this.close(Some(&status));
                Poll::Ready(this.queue.pop_front().map(|piece| Ok(Frame::data(piece))))
            }
            Poll::Ready(None) => {
                Poll::Ready(this.queue.pop_front().map(|piece| Ok(Frame::data(piece))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished && self.queue.is_empty()
    }
}
