//! Compression per route, with tower-http: the keys `compression` (responses) and
//! `request_decompression` (request bodies).
//!
//! Two layers in a route's stack:
//! - [`Compress`], just outside the rescue layer (inside CORS and the response headers,
//!   which then see the final `Content-Encoding`): it compresses a response with gzip, br or
//!   zstd when the client's `Accept-Encoding` (q-values respected, tower-http negotiates) asks
//!   for one, the content type is one the route lists, and the body is at least `min_size`
//!   (a body of unknown length is compressed). Never a response that already has a
//!   `Content-Encoding` or a `Content-Range`, never `text/event-stream` (a compressor holds
//!   events back until it has enough bytes), never gRPC; the body streams through the coder,
//!   it is never buffered whole;
//! - [`Decompress`], innermost, just before the upstream (so that the route timeout still
//!   sees the client's body arrive): a request whose `Content-Encoding` is one the route
//!   accepts is decoded on its way to the backend, counted against `max_size` *after*
//!   decoding — a small body that would inflate past it (a zip bomb) is cut there and
//!   answered 413, never held in memory. Another coding is 415; a body that does not decode
//!   is 400.
//!
//! The coders change the body type: their bodies are `Body::Boxed`, so a route without
//! compression pays nothing (a branch each, nothing cloned).

use crate::body::{Body, BodyError};
use crate::config::check::{Description, RouteCheck, RoutePolicy};
use crate::config::source::{KeyPath, Seg};
use crate::error::GatewayError;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tower_http::compression::{CompressionLayer, CompressionLevel, Predicate};
use tower_http::decompression::RequestDecompression;
use tower_layer::Layer;
use tower_service::Service;

const DEFAULT_MIN_SIZE: u64 = 1024;
const DEFAULT_MAX_DECOMPRESSED: u64 = 10 * 1024 * 1024;
/// Compressible by default: text and the structured formats APIs answer with.
const DEFAULT_CONTENT_TYPES: &[&str] = &[
    "text/",
    "application/json",
    "application/problem+json",
    "application/javascript",
    "application/xml",
    "application/x-ndjson",
    "image/svg+xml",
];

/// The codings Portico speaks, as written in config and in `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    Gzip,
    Br,
    Zstd,
}

impl Coding {
    const ALL: [Coding; 3] = [Coding::Br, Coding::Zstd, Coding::Gzip];

    fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Br => "br",
            Coding::Zstd => "zstd",
        }
    }

    fn parse(text: &str) -> Option<Coding> {
        Coding::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(text))
    }
}

/// The route's compression, checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct CompressionPolicy {
    pub(crate) responses: Option<Arc<ResponseCompression>>,
    pub(crate) requests: Option<Arc<RequestDecompressionSettings>>,
}

#[derive(Debug, PartialEq)]
pub(crate) struct ResponseCompression {
    pub(crate) codings: Vec<Coding>,
    pub(crate) min_size: u64,
    /// Lowercase; an entry ending in `/` is a whole type (`text/`).
    pub(crate) content_types: Vec<String>,
    pub(crate) level: Level,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Fastest,
    Balanced,
    Best,
}

#[derive(Debug, PartialEq)]
pub(crate) struct RequestDecompressionSettings {
    pub(crate) codings: Vec<Coding>,
    pub(crate) max_size: u64,
    /// `gzip, br, zstd`, for the 415 message.
    accepted: &'static str,
}

/// The compression keys as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompressionRouteFile {
    compression: Option<CompressionFile>,
    request_decompression: Option<DecompressionFile>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompressionFile {
    /// Offered codings. Default `[br, zstd, gzip]`.
    encodings: Option<Vec<String>>,
    /// Smallest body compressed. Default `1KiB`.
    min_size: Option<String>,
    /// Content types compressed. Default: text and structured formats.
    content_types: Option<Vec<String>>,
    /// `fastest`, `balanced` (default) or `best`.
    level: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecompressionFile {
    /// Accepted request codings. Default `[gzip, br, zstd]`.
    encodings: Option<Vec<String>>,
    /// Largest decoded body. Default `10MiB`.
    max_size: Option<String>,
}

impl RoutePolicy for CompressionPolicy {
    const KEYS: &'static [&'static str] = &["compression", "request_decompression"];
    type File = CompressionRouteFile;

    fn adds_layer(&self) -> bool {
        self.responses.is_some() || self.requests.is_some()
    }

    fn check(file: &CompressionRouteFile, route: &mut RouteCheck<'_, '_>) -> Option<Self> {
        let responses = match &file.compression {
            None => Some(None),
            Some(file) => {
                let path = route.key("compression");
                check_compression(file, &path, route).map(|c| Some(Arc::new(c)))
            }
        };
        let requests = match &file.request_decompression {
            None => Some(None),
            Some(file) => {
                let path = route.key("request_decompression");
                let codings = check_codings(file.encodings.as_deref(), &path, route);
                let max_size = route.size(
                    &path.key("max_size"),
                    file.max_size.as_deref(),
                    DEFAULT_MAX_DECOMPRESSED,
                );
                match (codings, max_size) {
                    (Some(codings), Some(max_size)) => {
                        let accepted = accepted_list(&codings);
                        Some(Some(Arc::new(RequestDecompressionSettings {
                            codings,
                            max_size,
                            accepted,
                        })))
                    }
                    _ => None,
                }
            }
        };
        Some(CompressionPolicy {
            responses: responses?,
            requests: requests?,
        })
    }

    fn describe(&self, _request_path: &str, out: &mut Description) {
        if let Some(c) = &self.responses {
            let codings: Vec<&str> = c.codings.iter().map(|c| c.name()).collect();
            out.line(
                "compression",
                format!(
                    "{} for {} from {} bytes",
                    codings.join(", "),
                    c.content_types.join(", "),
                    c.min_size
                ),
            );
        }
        if let Some(d) = &self.requests {
            out.line(
                "decompression",
                format!(
                    "{} request bodies, at most {} bytes decoded",
                    d.accepted, d.max_size
                ),
            );
        }
    }

    fn wants_text(path: &[Seg]) -> bool {
        matches!(path, [Seg::Key(a), Seg::Key(b)]
            if (a == "compression" && b == "min_size") || (a == "request_decompression" && b == "max_size"))
    }
}

/// The string of accepted codings, made once (one per combination, leaked never: static).
fn accepted_list(codings: &[Coding]) -> &'static str {
    let has = |c| codings.contains(&c);
    match (has(Coding::Gzip), has(Coding::Br), has(Coding::Zstd)) {
        (true, true, true) => "gzip, br, zstd",
        (true, true, false) => "gzip, br",
        (true, false, true) => "gzip, zstd",
        (false, true, true) => "br, zstd",
        (true, false, false) => "gzip",
        (false, true, false) => "br",
        (false, false, true) => "zstd",
        (false, false, false) => "none",
    }
}

fn check_codings(
    texts: Option<&[String]>,
    path: &KeyPath,
    route: &mut RouteCheck<'_, '_>,
) -> Option<Vec<Coding>> {
    let Some(texts) = texts else {
        return Some(Coding::ALL.to_vec());
    };
    let path = path.key("encodings");
    if texts.is_empty() {
        route.report(
            &path,
            "cannot be empty; leave the section out to turn it off",
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (index, text) in texts.iter().enumerate() {
        match Coding::parse(text) {
            Some(coding) if out.contains(&coding) => {
                route.report(&path.index(index), format!("{text} is listed twice"));
                ok = false;
            }
            Some(coding) => out.push(coding),
            None => {
                route.report(
                    &path.index(index),
                    format!("unknown encoding {text:?}: expected gzip, br or zstd"),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn check_compression(
    file: &CompressionFile,
    path: &KeyPath,
    route: &mut RouteCheck<'_, '_>,
) -> Option<ResponseCompression> {
    let codings = check_codings(file.encodings.as_deref(), path, route);
    let min_size = route.size(
        &path.key("min_size"),
        file.min_size.as_deref(),
        DEFAULT_MIN_SIZE,
    );
    let content_types = match &file.content_types {
        None => Some(
            DEFAULT_CONTENT_TYPES
                .iter()
                .map(|t| t.to_string())
                .collect(),
        ),
        Some(list) => {
            let mut ok = !list.is_empty();
            if list.is_empty() {
                route.report(&path.key("content_types"), "cannot be empty");
            }
            for (index, text) in list.iter().enumerate() {
                let item = path.key("content_types").index(index);
                let valid = text.split_once('/').is_some_and(|(kind, sub)| {
                    !kind.is_empty() && !sub.contains('/') && !text.contains([' ', ';', '*'])
                });
                if !valid {
                    route.report(
                        &item,
                        format!(
                            "{text:?} is not a media type: expected `type/subtype` \
                             (application/json) or a whole type ending in `/` (text/)"
                        ),
                    );
                    ok = false;
                } else if text.eq_ignore_ascii_case("text/event-stream") {
                    route.report(
                        &item,
                        "server-sent events are never compressed: a compressor would hold \
                         events back",
                    );
                    ok = false;
                }
            }
            ok.then(|| list.iter().map(|t| t.to_ascii_lowercase()).collect())
        }
    };
    let level = match file.level.as_deref() {
        None | Some("balanced") => Some(Level::Balanced),
        Some("fastest") => Some(Level::Fastest),
        Some("best") => Some(Level::Best),
        Some(other) => {
            route.report(
                &path.key("level"),
                format!("unknown level {other:?}: expected fastest, balanced or best"),
            );
            None
        }
    };
    Some(ResponseCompression {
        codings: codings?,
        min_size: min_size?,
        content_types: content_types?,
        level: level?,
    })
}

// ---------------------------------------------------------------------------------------
// Responses

/// Which responses are compressed (tower-http has already excluded those with a
/// `Content-Encoding` or `Content-Range`).
#[derive(Clone)]
pub(crate) struct ShouldCompress(Arc<ResponseCompression>);

impl Predicate for ShouldCompress {
    fn should_compress<B>(&self, response: &Response<B>) -> bool
    where
        B: http_body::Body,
    {
        let settings = &self.0;
        let Some(content_type) = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if essence == "text/event-stream" || essence.starts_with("application/grpc") {
            return false;
        }
        let listed = settings.content_types.iter().any(|t| {
            if t.ends_with('/') {
                essence.starts_with(t.as_str())
            } else {
                essence == *t
            }
        });
        if !listed {
            return false;
        }
        let length = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .or_else(|| response.body().size_hint().exact());
        // A body of unknown length (streamed) is compressed as it streams.
        length.is_none_or(|len| len >= settings.min_size)
    }
}

type TowerCompressionLayer = CompressionLayer<ShouldCompress>;

/// A compressing route's coders and the codings it offers.
pub(crate) struct RouteCompression {
    tower: TowerCompressionLayer,
    codings: Offered,
}

#[derive(Clone)]
pub(crate) struct CompressLayer {
    tower: Option<Arc<RouteCompression>>,
}

impl CompressLayer {
    pub(crate) fn new(policy: &CompressionPolicy) -> CompressLayer {
        CompressLayer {
            tower: policy.responses.as_ref().map(|settings| {
                let has = |c| settings.codings.contains(&c);
                let layer = CompressionLayer::new()
                    .gzip(has(Coding::Gzip))
                    .br(has(Coding::Br))
                    .zstd(has(Coding::Zstd))
                    .quality(match settings.level {
                        Level::Fastest => CompressionLevel::Fastest,
                        // The codings' own defaults are tuned for files compressed once
                        // (brotli's is its slowest); 4 is fast enough for every response.
                        Level::Balanced => CompressionLevel::Precise(4),
                        Level::Best => CompressionLevel::Best,
                    })
                    .compress_when(ShouldCompress(settings.clone()));
                Arc::new(RouteCompression {
                    tower: layer,
                    codings: Offered {
                        gzip: has(Coding::Gzip),
                        br: has(Coding::Br),
                        zstd: has(Coding::Zstd),
                    },
                })
            }),
        }
    }
}

impl<S> Layer<S> for CompressLayer {
    type Service = Compress<S>;

    fn layer(&self, inner: S) -> Compress<S> {
        Compress {
            inner,
            tower: self.tower.clone(),
        }
    }
}

/// A route's response compression; tower-http's service is made per request on the routes
/// that compress only.
#[derive(Clone)]
pub(crate) struct Compress<S> {
    inner: S,
    tower: Option<Arc<RouteCompression>>,
}

impl<S> Service<Request<Body>> for Compress<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = CompressFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        match &self.tower {
            None => CompressFuture::Off {
                future: self.inner.call(req),
            },
            // A client that refuses every coding, identity included (`identity;q=0`,
            // `*;q=0`), gets the answer as it is: tower-http would call the backend and then
            // turn its answer into a bare 406 — the request done, its answer lost — where
            // an uncompressed answer is one the client can still use.
            Some(route) if accepts_no_coding(req.headers(), route.codings) => {
                CompressFuture::Uncompressed {
                    future: self.inner.call(req),
                }
            }
            Some(route) => CompressFuture::On {
                future: Box::pin(route.tower.layer(self.inner.clone()).call(req)),
            },
        }
    }
}

/// The codings a route offers, as tower-http's negotiation sees them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Offered {
    gzip: bool,
    br: bool,
    zstd: bool,
}

/// Whether `Accept-Encoding` leaves no coding this route offers acceptable, identity
/// included — exactly when tower-http's negotiation finds none (and would answer 406).
/// Read as tower-http reads it: q-values `q=0` to `q=1` with at most three decimals, an
/// entry with another q-value ignored, the first `*` entry's q-value for codings not named.
fn accepts_no_coding(headers: &http::HeaderMap, offered: Offered) -> bool {
    #[derive(PartialEq, Clone, Copy)]
    enum Named {
        Identity,
        Gzip,
        Br,
        Zstd,
    }
    let entries = || {
        headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|text| text.split(','))
            .filter_map(|entry| {
                let mut parts = entry.splitn(2, ';');
                let name = parts.next().unwrap_or_default().trim();
                let q = match parts.next() {
                    Some(q) => q_value(q.trim())?,
                    None => 1000,
                };
                Some((name, q))
            })
    };
    let named = |name: &str| {
        let is = |coding: &str| name.eq_ignore_ascii_case(coding);
        if (is("gzip") || is("x-gzip")) && offered.gzip {
            Some(Named::Gzip)
        } else if is("br") && offered.br {
            Some(Named::Br)
        } else if is("zstd") && offered.zstd {
            Some(Named::Zstd)
        } else if is("identity") {
            Some(Named::Identity)
        } else {
            None
        }
    };
    let explicit = || entries().filter_map(|(name, q)| Some((named(name)?, q)));
    match entries().find(|(name, _)| *name == "*").map(|(_, q)| q) {
        // Only what is named counts; identity is acceptable unless refused by name.
        None => {
            !explicit().any(|(_, q)| q > 0)
                && explicit().any(|(named, q)| named == Named::Identity && q == 0)
        }
        // Every offered coding (identity included) at its own q-value, else the wildcard's.
        Some(wildcard) => {
            let candidates = [
                (Named::Identity, true),
                (Named::Gzip, offered.gzip),
                (Named::Br, offered.br),
                (Named::Zstd, offered.zstd),
            ];
            !candidates
                .into_iter()
                .filter(|(_, on)| *on)
                .any(|(coding, _)| {
                    explicit()
                        .find(|(named, _)| *named == coding)
                        .map_or(wildcard, |(_, q)| q)
                        > 0
                })
        }
    }
}

/// A q-value (`q=0.5`) in thousandths; `None` when it is not one.
fn q_value(text: &str) -> Option<u16> {
    let rest = text
        .strip_prefix("q=")
        .or_else(|| text.strip_prefix("Q="))?;
    let (whole, fraction) = match rest.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (rest, ""),
    };
    let whole: u16 = match whole {
        "0" => 0,
        "1" => 1000,
        _ => return None,
    };
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut value = whole;
    for (digit, factor) in fraction.bytes().zip([100, 10, 1]) {
        value += u16::from(digit - b'0') * factor;
    }
    (value <= 1000).then_some(value)
}

pin_project! {
    #[project = CompressFutureProj]
    pub(crate) enum CompressFuture<F> {
        Off { #[pin] future: F },
        // A compressing route's answer to a client that accepts no coding: as it is.
        Uncompressed { #[pin] future: F },
        // Boxed: only routes that compress pay for its size.
        On { future: Pin<Box<tower_http::compression::ResponseFuture<F, ShouldCompress>>> },
    }
}

impl<F, E> Future for CompressFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CompressFutureProj::Off { future } => future.poll(cx),
            CompressFutureProj::Uncompressed { future } => {
                let mut response = ready!(future.poll(cx))?;
                // Another Accept-Encoding may get another answer: caches must know.
                let varies = response.headers().get_all(header::VARY).iter().any(|v| {
                    v.to_str().is_ok_and(|v| {
                        v.split(',')
                            .any(|name| name.trim().eq_ignore_ascii_case("accept-encoding"))
                    })
                });
                if !varies {
                    response
                        .headers_mut()
                        .append(header::VARY, HeaderValue::from_static("accept-encoding"));
                }
                Poll::Ready(Ok(response))
            }
            CompressFutureProj::On { future } => {
                let response = ready!(future.as_mut().poll(cx))?;
                Poll::Ready(Ok(response.map(Body::boxed)))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Requests

#[derive(Clone)]
pub(crate) struct DecompressLayer {
    settings: Option<Arc<RequestDecompressionSettings>>,
}

impl DecompressLayer {
    pub(crate) fn new(policy: &CompressionPolicy) -> DecompressLayer {
        DecompressLayer {
            settings: policy.requests.clone(),
        }
    }
}

impl<S> Layer<S> for DecompressLayer {
    type Service = Decompress<S>;

    fn layer(&self, inner: S) -> Decompress<S> {
        Decompress {
            inner,
            settings: self.settings.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Decompress<S> {
    inner: S,
    settings: Option<Arc<RequestDecompressionSettings>>,
}

impl<S> Service<Request<Body>> for Decompress<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError> + Clone,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = DecompressFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let Some(settings) = &self.settings else {
            return DecompressFuture::Plain {
                future: self.inner.call(req),
            };
        };
        let Some(value) = req.headers().get(header::CONTENT_ENCODING) else {
            return DecompressFuture::Plain {
                future: self.inner.call(req),
            };
        };
        let text = String::from_utf8_lossy(value.as_bytes()).trim().to_string();
        // Nothing to decode (a bodiless request that names a coding anyway).
        if text.eq_ignore_ascii_case("identity") || http_body::Body::is_end_stream(req.body()) {
            req.headers_mut().remove(header::CONTENT_ENCODING);
            return DecompressFuture::Plain {
                future: self.inner.call(req),
            };
        }
        let coding = match Coding::parse(&text) {
            Some(coding) if settings.codings.contains(&coding) => coding,
            // Several codings, or one the route does not take.
            _ => {
                return DecompressFuture::Refused {
                    error: Some(GatewayError::UnsupportedContentEncoding(
                        text,
                        settings.accepted,
                    )),
                }
            }
        };
        // tower-http matches the coding's name exactly.
        req.headers_mut().insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(coding.name()),
        );
        let mut service = RequestDecompression::new(IntoGatewayBody {
            inner: self.inner.clone(),
            max_size: settings.max_size,
        })
        .gzip(coding == Coding::Gzip)
        .br(coding == Coding::Br)
        .zstd(coding == Coding::Zstd);
        DecompressFuture::Decoding {
            future: Box::pin(service.call(req)),
        }
    }
}

/// Hands a decoded body on as a gateway body, counted against the decoded-size limit.
#[derive(Clone)]
pub(crate) struct IntoGatewayBody<S> {
    inner: S,
    max_size: u64,
}

impl<S, B> Service<Request<B>> for IntoGatewayBody<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let limit = self.max_size;
        self.inner.call(req.map(|body| {
            Body::boxed(DecodedLimit {
                inner: body,
                limit,
                seen: 0,
            })
        }))
    }
}

pin_project! {
    /// A decoded body, cut with [`BodyError::TooLarge`] once it passes `limit` bytes.
    struct DecodedLimit<B> {
        #[pin]
        inner: B,
        limit: u64,
        seen: u64,
    }
}

impl<B> http_body::Body for DecodedLimit<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.project();
        match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    *this.seen += data.len() as u64;
                    if *this.seen > *this.limit {
                        return Poll::Ready(Some(Err(BodyError::TooLarge { limit: *this.limit })));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => Poll::Ready(Some(Err(BodyError::from_boxed(error.into())))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

type DecodingFuture<F> =
    tower_http::decompression::RequestDecompressionFuture<F, Body, GatewayError>;

pin_project! {
    #[project = DecompressFutureProj]
    pub(crate) enum DecompressFuture<F>
    where
        F: Future<Output = Result<Response<Body>, GatewayError>>,
    {
        Plain { #[pin] future: F },
        Decoding { future: Pin<Box<DecodingFuture<F>>> },
        Refused { error: Option<GatewayError> },
    }
}

impl<F> Future for DecompressFuture<F>
where
    F: Future<Output = Result<Response<Body>, GatewayError>>,
{
    type Output = Result<Response<Body>, GatewayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            DecompressFutureProj::Plain { future } => future.poll(cx),
            DecompressFutureProj::Decoding { future } => {
                let response = ready!(future.as_mut().poll(cx))?;
                Poll::Ready(Ok(response.map(Body::boxed)))
            }
            DecompressFutureProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or(GatewayError::UnsupportedContentEncoding(String::new(), "")))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn predicate(min_size: u64) -> ShouldCompress {
        ShouldCompress(Arc::new(ResponseCompression {
            codings: Coding::ALL.to_vec(),
            min_size,
            content_types: DEFAULT_CONTENT_TYPES
                .iter()
                .map(|t| t.to_string())
                .collect(),
            level: Level::Balanced,
        }))
    }

    fn response(content_type: &str, len: usize) -> Response<Body> {
        let mut response = Response::new(Body::full(vec![b'a'; len]));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).expect("ct"),
        );
        response
    }

    #[test]
    fn only_listed_types_of_at_least_the_minimum_size_are_compressed() {
        let p = predicate(1024);
        assert!(p.should_compress(&response("application/json; charset=utf-8", 2000)));
        assert!(p.should_compress(&response("text/html", 1024)));
        assert!(!p.should_compress(&response("text/html", 1023)));
        assert!(!p.should_compress(&response("image/png", 5000)));
        assert!(!p.should_compress(&response("text/event-stream", 5000)));
        assert!(!p.should_compress(&response("application/grpc", 5000)));
        assert!(!p.should_compress(&Response::new(Body::full(vec![0u8; 5000]))));
    }

    #[test]
    fn a_client_that_refuses_every_coding_is_recognised_as_tower_http_would() {
        let all = Offered {
            gzip: true,
            br: true,
            zstd: true,
        };
        let gzip_only = Offered {
            gzip: true,
            br: false,
            zstd: false,
        };
        let refuses = |value: &str, offered| {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(value).expect("value"),
            );
            accepts_no_coding(&headers, offered)
        };
        for value in [
            "identity;q=0",
            "*;q=0",
            "*;q=0, identity;q=0",
            "identity;q=0, deflate",
            "gzip;q=0, identity;q=0",
            "gzip;q=0.000, identity;Q=0",
            "br;q=1.5, identity;q=0",
            "gzip;q=abc, identity;q=0",
        ] {
            assert!(refuses(value, all), "{value}");
        }
        assert!(refuses("br, identity;q=0", gzip_only));
        assert!(refuses("*;q=0, br", gzip_only));
        for value in [
            "",
            "gzip",
            "identity;q=0, gzip",
            "identity;q=0, x-gzip;q=0.001",
            "*;q=0, identity",
            "*;q=0, zstd;q=0.5",
            "*",
            "identity;q=0, *;q=0.1",
            "deflate",
            "gzip;q=0",
        ] {
            assert!(!refuses(value, all), "{value:?}");
        }
        assert!(!refuses("x-gzip, identity;q=0", gzip_only));
        assert!(!accepts_no_coding(&http::HeaderMap::new(), all));
        assert_eq!(q_value("q=0.25"), Some(250));
        assert_eq!(q_value("q=1.000"), Some(1000));
        assert_eq!(q_value("q=1.001"), None);
        assert_eq!(q_value("q=0.1234"), None);
        assert_eq!(q_value("q=.5"), None);
    }

    #[test]
    fn settings_are_checked_at_their_keys() {
        use crate::middleware::test_support::route_problems;
        assert!(route_problems("compression: {}, request_decompression: {}").is_empty());
        let problems = route_problems(
            "compression: { encodings: [gzip, deflate], content_types: [text/event-stream, json] }",
        );
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("compression.encodings[1]: unknown encoding"));
        assert!(problems[1].contains("compression.content_types[0]: server-sent events"));
        assert!(problems[2].contains("compression.content_types[1]: \"json\" is not a media type"));
        let problems = route_problems("request_decompression: { max_size: lots }");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("request_decompression.max_size"));
    }
}
