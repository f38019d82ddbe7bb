//! The gRPC layer of a route: HTTP/JSON → gRPC transcoding and gRPC-Web translation.
//!
//! On the request path: the innermost layer of a route's stack, after the timeout and just
//! before the upstream (`stack.rs`), so that auth, transforms and the timeout see the caller's
//! request as it came, and the upstream gets a gRPC call. Each request is classified first,
//! as tonic-web does: a native gRPC call (`application/grpc…`) passes through untouched; a
//! gRPC-Web call is translated when the route allows it (`web.rs`); anything else on a
//! transcoding route is an HTTP/JSON call, looked up in the cluster's binding table
//! (`http_rule.rs`), turned into a request message (`request.rs`), sent as a gRPC call with the
//! route's timeout as `grpc-timeout` and the caller's headers as metadata (`metadata.rs`), and
//! answered from the gRPC response (`response.rs`). On a route without gRPC settings the layer
//! is switched off: one branch, nothing else.
//!
//! Refusals are typed [`GatewayError`]s (400 with the field named, 404, 405 with `Allow`, 413,
//! 502), rendered as JSON by the rescue layer like every other error of the gateway.

use super::descriptors::GrpcApi;
use super::framing::frame;
use super::http_rule::{Binding, Lookup};
use super::metadata::{grpc_timeout, into_request_metadata};
use super::policy::{GrpcPolicy, StreamFormat, TranscodeSettings};
use super::request::{build_message, MessageTarget, RequestRules};
use super::response::{server_streaming, unary, Rendering};
use crate::body::Body;
use crate::error::GatewayError;
use crate::middleware::timeout::TimeoutPolicy;
use crate::middleware::BoxedAnswer;
use bytes::{Bytes, BytesMut};
use http::header::{HeaderValue, ACCEPT, CONTENT_TYPE, TE};
use http::{Method, Request, Response, Uri};
use http_body::Body as _;
use pin_project_lite::pin_project;
use prost::Message;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// What a gRPC route does, made once per route when its stack is built.
pub(crate) struct GrpcRoute {
    transcoder: Option<Transcoder>,
    web: bool,
    /// The route's timeout, sent as `grpc-timeout`.
    deadline: HeaderValue,
}

struct Transcoder {
    settings: TranscodeSettings,
    api: Arc<GrpcApi>,
    /// The route's OpenAPI document, made when the route was built.
    openapi: Option<Bytes>,
}

impl Transcoder {
    /// The request path below the mount, if it is below it.
    fn relative<'p>(&self, path: &'p str) -> Option<&'p str> {
        match &self.settings.mount {
            None => Some(path),
            Some(mount) => match path.strip_prefix(mount.as_str()) {
                Some("") => Some("/"),
                Some(rest) if rest.starts_with('/') => Some(rest),
                _ => None,
            },
        }
    }
}

#[derive(Clone)]
pub(crate) struct GrpcLayer {
    route: Option<Arc<GrpcRoute>>,
}

impl GrpcLayer {
    /// The layer for a route with `policy`, in front of a cluster with `api` (its
    /// descriptors, if it has a `grpc` section).
    pub(crate) fn new(
        policy: &GrpcPolicy,
        timeout: &TimeoutPolicy,
        api: Option<&Arc<GrpcApi>>,
    ) -> GrpcLayer {
        let transcoder = match (&policy.transcode, api) {
            (Some(settings), Some(api)) => Some(Transcoder {
                openapi: settings
                    .openapi_path
                    .as_ref()
                    .map(|_| super::openapi::route_document(api, settings)),
                settings: settings.clone(),
                api: api.clone(),
            }),
            _ => None,
        };
        if transcoder.is_none() && !policy.web {
            return GrpcLayer { route: None };
        }
        GrpcLayer {
            route: Some(Arc::new(GrpcRoute {
                transcoder,
                web: policy.web,
                deadline: grpc_timeout(timeout.timeout),
            })),
        }
    }
}

impl<S> Layer<S> for GrpcLayer {
    type Service = Grpc<S>;

    fn layer(&self, inner: S) -> Grpc<S> {
        Grpc {
            inner,
            route: self.route.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Grpc<S> {
    inner: S,
    route: Option<Arc<GrpcRoute>>,
}

/// What a request to a gRPC route is.
enum RequestKind {
    /// `application/grpc…`: passed through.
    Grpc,
    /// `application/grpc-web…`; `text` for the base64 variant.
    GrpcWeb { text: bool },
    /// Anything else: HTTP/JSON.
    Http,
}

fn classify(req: &Request<Body>) -> RequestKind {
    let Some(content_type) = req.headers().get(CONTENT_TYPE) else {
        return RequestKind::Http;
    };
    let bytes = content_type.as_bytes();
    if let Some(rest) = bytes.strip_prefix(b"application/grpc-web") {
        let text = rest.starts_with(b"-text");
        return RequestKind::GrpcWeb { text };
    }
    if bytes.starts_with(b"application/grpc") {
        return RequestKind::Grpc;
    }
    RequestKind::Http
}

impl<S> Service<Request<Body>> for Grpc<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = GrpcFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let Some(route) = &self.route else {
            return GrpcFuture::Inner {
                future: self.inner.call(req),
            };
        };
        match classify(&req) {
            RequestKind::Grpc => GrpcFuture::Inner {
                future: self.inner.call(req),
            },
            RequestKind::GrpcWeb { text } if route.web => GrpcFuture::Boxed {
                future: Box::pin(super::web::call(self.inner.clone(), req, text)),
            },
            // gRPC-Web on a route that does not translate it is not JSON either: it goes on
            // as it came, like any request the layer does not handle.
            RequestKind::Http if route.transcoder.is_some() => GrpcFuture::Boxed {
                future: Box::pin(transcode(route.clone(), self.inner.clone(), req)),
            },
            _ => GrpcFuture::Inner {
                future: self.inner.call(req),
            },
        }
    }
}

pin_project! {
    #[project = GrpcFutureProj]
    pub(crate) enum GrpcFuture<F> {
        Inner { #[pin] future: F },
        Boxed { future: BoxedAnswer },
    }
}

impl<F> Future for GrpcFuture<F>
where
    F: Future<Output = Result<Response<Body>, GatewayError>>,
{
    type Output = Result<Response<Body>, GatewayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GrpcFutureProj::Inner { future } => future.poll(cx),
            GrpcFutureProj::Boxed { future } => future.as_mut().poll(cx),
        }
    }
}

/// Read a request body whole, refusing it (413) as soon as it holds more than `limit` bytes:
/// a body too large for one message is never held whole. (The route's body limit, enforced
/// by the body itself, applies as well.)
async fn collect_within(mut body: Body, limit: usize) -> Result<Bytes, GatewayError> {
    let too_large = || GatewayError::RequestMessageTooLarge { limit };
    let announced = body.size_hint().upper();
    if announced.is_some_and(|size| size > limit as u64) {
        return Err(too_large());
    }
    let mut out = BytesMut::new();
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            None => break,
            Some(Err(error)) => return Err(GatewayError::from_request_body(error)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if data.len() > limit - out.len() {
                        return Err(too_large());
                    }
                    out.extend_from_slice(&data);
                }
            }
        }
    }
    Ok(out.freeze())
}

/// The streaming shape a caller asked for with `Accept`, or the route's default.
fn stream_format(req_accept: Option<&HeaderValue>, default: StreamFormat) -> StreamFormat {
    let Some(accept) = req_accept.and_then(|v| v.to_str().ok()) else {
        return default;
    };
    for item in accept.split(',') {
        let media = item.split(';').next().unwrap_or("").trim();
        match media {
            "application/x-ndjson" | "application/jsonl" | "application/json-seq" => {
                return StreamFormat::Ndjson
            }
            "text/event-stream" => return StreamFormat::Sse,
            "application/json" => return StreamFormat::JsonArray,
            _ => {}
        }
    }
    default
}

/// The gRPC request for `binding`: the caller's headers as metadata, the deadline, the body.
fn grpc_request(
    parts: &mut http::request::Parts,
    binding: &Binding,
    deadline: &HeaderValue,
    body: Body,
) -> Request<Body> {
    let mut req = Request::new(body);
    *req.method_mut() = Method::POST;
    *req.uri_mut() = Uri::from(binding.method.grpc_path.clone());
    *req.version_mut() = parts.version;
    let headers = req.headers_mut();
    *headers = into_request_metadata(std::mem::take(&mut parts.headers));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(TE, HeaderValue::from_static("trailers"));
    headers.insert("grpc-timeout", deadline.clone());
    // The authority the caller used goes on as `:authority` (HTTP/2 callers have no Host).
    if !headers.contains_key(http::header::HOST) {
        if let Some(authority) = parts.uri.authority() {
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                headers.insert(http::header::HOST, host);
            }
        }
    }
    req
}

async fn transcode<S>(
    route: Arc<GrpcRoute>,
    mut inner: S,
    req: Request<Body>,
) -> Result<Response<Body>, GatewayError>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>,
{
    let Some(transcoder) = route.transcoder.as_ref() else {
        return Err(GatewayError::NoRoute);
    };
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path();
    if let (Some(document), Some(openapi_path)) =
        (&transcoder.openapi, &transcoder.settings.openapi_path)
    {
        if path == openapi_path && (parts.method == Method::GET || parts.method == Method::HEAD) {
            let mut answer = Response::new(Body::full(document.clone()));
            answer
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return Ok(answer);
        }
    }
    let Some(relative) = transcoder.relative(path) else {
        return Err(GatewayError::NoRoute);
    };
    let settings = &transcoder.settings;
    let (binding, captures) =
        match transcoder
            .api
            .table
            .lookup(&parts.method, relative, settings.auto_mapping)
        {
            Lookup::Found { binding, captures } => (binding, captures),
            Lookup::MethodNotAllowed(allow) => {
                return Err(GatewayError::MethodNotAllowed {
                    method: parts.method.clone(),
                    allow,
                })
            }
            Lookup::NotFound => return Err(GatewayError::NoRoute),
        };
    let rules = RequestRules {
        reject_unknown_query: settings.reject_unknown_query,
        max_depth: settings.max_json_depth,
    };
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let mut stream_failure = None;
    let grpc_body = if binding.method.client_streaming() {
        let (body, failure) = super::stream::request_stream(
            binding,
            &captures,
            parts.uri.query(),
            body,
            content_type,
            rules,
            settings.max_request_message,
        )?;
        stream_failure = Some(failure);
        body
    } else {
        // The caller's body (JSON text, or an HttpBody's bytes) is held to the message limit
        // as it is read; the encoded message is checked again below.
        let bytes = collect_within(body, settings.max_request_message).await?;
        let message = build_message(
            &MessageTarget::of(binding),
            &captures,
            parts.uri.query(),
            &bytes,
            content_type,
            rules,
        )
        .map_err(GatewayError::TranscodeRequest)?;
        let encoded = message.encode_to_vec();
        if encoded.len() > settings.max_request_message {
            return Err(GatewayError::RequestMessageTooLarge {
                limit: settings.max_request_message,
            });
        }
        Body::full(frame(&encoded))
    };
    let format = stream_format(parts.headers.get(ACCEPT), settings.streaming);
    // The path variables (borrowed from the request's path) have been read.
    drop(captures);
    let grpc_req = grpc_request(&mut parts, binding, &route.deadline, grpc_body);
    let rendering = Rendering::new(
        binding,
        settings.print,
        &transcoder.api.pool,
        settings.max_response_message,
    );
    let server_streams = binding.method.server_streaming();
    // A request stream the caller broke ends the call: whatever the upstream made of that,
    // the caller's answer is why it broke.
    let broken = || {
        stream_failure
            .as_ref()
            .and_then(|failure| failure.get().cloned())
            .map(GatewayError::TranscodeStream)
    };
    let response = match inner.call(grpc_req).await {
        Ok(response) => response,
        Err(error) => return Err(broken().unwrap_or(error)),
    };
    let answer = if server_streams {
        server_streaming(response, rendering, format).await
    } else {
        unary(response, &rendering).await
    };
    match broken() {
        Some(error) => Err(error),
        None => answer,
    }
}
