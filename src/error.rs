//! Every error the gateway answers itself, and the ONE table that classifies them.
//!
//! Leaf modules (routing, the route stack's layers, the upstream client, the connection guard)
//! return typed [`GatewayError`]s; nothing builds an error response by hand.
//! [`GatewayError::class`] maps each to its HTTP status, stable error code, gRPC status, who is
//! to blame and how loudly to log it. [`GatewayError::answer`] turns one into the response the
//! caller gets: the JSON body `{"error":{"code":"…","message":"…","request_id":"…"}}` with
//! the HTTP status, or — for a gRPC caller, which reads nothing else — a trailers-only answer
//! with `grpc-status` and `grpc-message`.
//!
//! Where errors become answers: inside each route's stack, the rescue layer
//! (`middleware/rescue.rs`) answers for every layer below it, so the route's response
//! decorators still see the answer; before a route is known, `gateway::handle` answers
//! admission and routing errors itself; the connection guard answers for hyper's parser.
//! The admin listener and `portico explain` use the same table.

use crate::body::{Body, BodyError};
use crate::context::Caller;
use crate::middleware::auth::failure::{AuthOutcome, AuthRefusal};
use crate::middleware::rate_limit::layer::RateLimitRefusal;
use http::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderName, Method, Response, StatusCode};
use std::time::Duration;

static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// Where a failure came from — decides who is to blame in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The caller sent something we refuse.
    Client,
    /// The backend could not be reached or answered badly.
    Upstream,
    /// Portico itself (should not happen).
    Internal,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Client => "client",
            Source::Upstream => "upstream",
            Source::Internal => "internal",
        }
    }
}

/// How loud a failure is in the diagnostics log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// The gRPC status codes the gateway answers with (the numbering of `google.rpc.Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GrpcCode {
    Cancelled,
    InvalidArgument,
    DeadlineExceeded,
    PermissionDenied,
    ResourceExhausted,
    Unimplemented,
    Internal,
    Unavailable,
    Unauthenticated,
}

impl GrpcCode {
    /// The `grpc-status` value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            GrpcCode::Cancelled => "1",
            GrpcCode::InvalidArgument => "3",
            GrpcCode::DeadlineExceeded => "4",
            GrpcCode::PermissionDenied => "7",
            GrpcCode::ResourceExhausted => "8",
            GrpcCode::Unimplemented => "12",
            GrpcCode::Internal => "13",
            GrpcCode::Unavailable => "14",
            GrpcCode::Unauthenticated => "16",
        }
    }
}

/// The classification of one error: the single source of truth for what a caller sees.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Class {
    pub(crate) status: StatusCode,
    /// Stable, documented: clients and dashboards key on it.
    pub(crate) code: &'static str,
    /// What a gRPC caller gets instead of `status`.
    pub(crate) grpc: GrpcCode,
    pub(crate) source: Source,
    pub(crate) level: Level,
}

/// A response the gateway made itself, marked so that the completion step can count it by
/// code and name the code in the access log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalAnswer {
    pub(crate) code: &'static str,
    /// The precise reason behind an auth refusal (`expired`, `bad_signature`, …), which the
    /// caller is not told and the access log is.
    pub(crate) auth: Option<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum GatewayError {
    #[error("no route matches this request")]
    NoRoute,
    #[error("method {method} is not allowed on this path")]
    MethodNotAllowed { method: Method, allow: Vec<Method> },
    #[error("CONNECT is not supported: Portico is a reverse proxy, not a forward proxy")]
    ConnectRefused,
    #[error("the request target's authority {target} does not match the Host header {host}")]
    AuthorityMismatch { target: String, host: String },
    #[error("the request has no Host header")]
    MissingHost,
    #[error("the host {0:?} is not a host name with an optional port")]
    InvalidHost(String),
    #[error("the request has more than one Host header")]
    DuplicateHost,
    #[error("invalid request path: {0}")]
    BadPath(#[from] crate::routing::PathError),
    #[error("the request target is {len} bytes long; the limit is {limit}")]
    UriTooLong { len: usize, limit: usize },
    #[error("the request body is larger than the {limit}-byte limit of this route")]
    PayloadTooLarge { limit: u64 },
    #[error("the request body was not received within {0:?}")]
    RequestBodyTimeout(Duration),
    #[error("the client stopped sending the request body")]
    ClientBodyAborted(#[source] hyper::Error),
    #[error("the request body's chunked framing is malformed")]
    MalformedRequestBody(#[source] hyper::Error),
    #[error("the request applies the chunked transfer coding more than once")]
    RepeatedChunkedCoding,
    #[error("the transfer coding {0:?} is not supported; only chunked is")]
    TransferCodingNotSupported(String),
    #[error("the header {0:?} has an underscore in its name, which this listener refuses")]
    UnderscoreHeader(String),
    #[error("could not connect to any endpoint of cluster {cluster}")]
    UpstreamConnect {
        cluster: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to cluster {cluster} timed out after {timeout:?}")]
    UpstreamConnectTimeout { cluster: String, timeout: Duration },
    #[error("the upstream did not answer within {0:?}")]
    UpstreamTimeout(Duration),
    #[error("cluster {cluster} is at its {limit} limit")]
    UpstreamOverflow {
        cluster: String,
        limit: &'static str,
    },
    #[error("cluster {cluster} has no healthy endpoint")]
    NoHealthyUpstream { cluster: String },
    #[error("the upstream sent an invalid response or closed the connection")]
    UpstreamProtocol(#[source] hyper::Error),
    #[error("HTTP handshake with the upstream failed")]
    UpstreamHandshake(#[source] hyper::Error),
    #[error("the upstream's response has ambiguous framing ({0})")]
    UpstreamBadResponse(&'static str),
    #[error("TLS with an endpoint of cluster {cluster} failed (certificate not trusted, wrong name, or no common protocol)")]
    UpstreamTls {
        cluster: String,
        #[source]
        source: std::io::Error,
    },
    #[error("this route requires a verified client certificate")]
    ClientCertificateRequired,
    /// 401: no credential, or one that does not authenticate.
    #[error("{}", .0.message())]
    Unauthenticated(Box<AuthRefusal>),
    /// 403: authenticated, without a scope the route requires (`scopes`, space-separated).
    #[error("the credential lacks a scope this route requires: {scopes}")]
    InsufficientScope { scopes: Box<str> },
    /// 403: authenticated, but a claim or the consumer is not one the route allows.
    #[error("this caller may not use this route")]
    AccessDenied,
    /// 503: the identity provider that must vouch for the credential cannot be asked.
    #[error("the identity provider cannot be reached; try again later")]
    AuthUnavailable { provider: std::sync::Arc<str> },
    /// 429: a rate limit or quota of the route (or the caller's plan) is spent.
    #[error("too many requests: the limit `{}` is spent; retry in {}s", .0.limit, .0.retry_after)]
    RateLimited(Box<RateLimitRefusal>),
    /// 503: the shared rate-limit store cannot decide and the route fails closed.
    #[error("rate limits cannot be checked right now; try again later")]
    RateLimitUnavailable,
    /// 503 (or 429): the route has as many requests in flight as it allows.
    #[error(
        "too many requests in flight on this route (at most {max} at once); try again shortly"
    )]
    ConcurrencyLimited { max: u32, too_many_requests: bool },
    #[error("CORS preflight refused: {} is not an allowed origin of this route", origin.as_deref().unwrap_or("a request without Origin"))]
    CorsPreflightRefused { origin: Option<String> },
    #[error("the request body does not decode as its Content-Encoding says")]
    BadContentEncoding(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the Content-Encoding {0:?} is not accepted here (accepted: {1})")]
    UnsupportedContentEncoding(String, &'static str),
    #[error("{} may not use this route", match .0 { Some(ip) => format!("the client address {ip}"), None => String::from("a client of unknown address") })]
    IpNotAllowed(Option<std::net::IpAddr>),
    #[error("fault injected by this route's fault policy")]
    FaultInjected { status: StatusCode },
    /// 500: the route's path rewrite made something that is not a request target; the
    /// request is not forwarded (neither rewritten nor as it came).
    #[error("this route's path rewrite did not make a valid request target")]
    PathRewriteFailed,
    /// 500: the route's redirect made something that is not a valid `Location`.
    #[error("this route's redirect did not make a valid Location")]
    RedirectFailed,
    #[error("plain HTTP was sent to a TLS port; use https://")]
    PlainHttpToTlsPort,
    #[error("the upstream request could not be built: {0}")]
    BadUpstreamRequest(#[source] http::Error),
    /// An error the HTTP parser answered before a request existed (see `server::conn_guard`).
    #[error("{message}")]
    Parser {
        status: StatusCode,
        message: &'static str,
    },
    #[error("the admin API is read-only")]
    AdminReadOnly,
    /// An HTTP/JSON request a transcoding route cannot turn into a gRPC request message.
    #[error("{0}")]
    TranscodeRequest(#[source] crate::grpc::request::RequestError),
    /// A streamed request (client streaming, gRPC-Web text) that stopped making sense.
    #[error("{0}")]
    TranscodeStream(#[source] std::sync::Arc<crate::grpc::stream::StreamElementError>),
    #[error("the request message is larger than the {limit}-byte limit of this route")]
    RequestMessageTooLarge { limit: usize },
    #[error("the upstream's response message is larger than the {limit}-byte limit of this route")]
    ResponseMessageTooLarge { limit: usize },
    #[error("unknown admin endpoint")]
    AdminNotFound,
}

impl GatewayError {
    /// THE classification table.
    pub(crate) fn class(&self) -> Class {
        use GatewayError::*;
        use GrpcCode as G;
        use Level::*;
        use Source::*;
        let (status, code, grpc, source, level) = match self {
            NoRoute => (
                StatusCode::NOT_FOUND,
                "route_not_found",
                G::Unimplemented,
                Client,
                Debug,
            ),
            MethodNotAllowed { .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                G::Unimplemented,
                Client,
                Debug,
            ),
            ConnectRefused => (
                StatusCode::METHOD_NOT_ALLOWED,
                "connect_not_supported",
                G::Unimplemented,
                Client,
                Info,
            ),
            AuthorityMismatch { .. } => (
                StatusCode::BAD_REQUEST,
                "authority_mismatch",
                G::Internal,
                Client,
                Info,
            ),
            MissingHost => (
                StatusCode::BAD_REQUEST,
                "missing_host",
                G::Internal,
                Client,
                Debug,
            ),
            InvalidHost(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_host",
                G::Internal,
                Client,
                Info,
            ),
            DuplicateHost => (
                StatusCode::BAD_REQUEST,
                "duplicate_host",
                G::Internal,
                Client,
                Info,
            ),
            BadPath(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_path",
                G::Internal,
                Client,
                Info,
            ),
            UriTooLong { .. } => (
                StatusCode::URI_TOO_LONG,
                "uri_too_long",
                G::Internal,
                Client,
                Info,
            ),
            PayloadTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                G::ResourceExhausted,
                Client,
                Info,
            ),
            RequestBodyTimeout(_) => (
                StatusCode::REQUEST_TIMEOUT,
                "request_body_timeout",
                G::DeadlineExceeded,
                Client,
                Info,
            ),
            MalformedRequestBody(_) | RepeatedChunkedCoding => (
                StatusCode::BAD_REQUEST,
                "bad_request_framing",
                G::Internal,
                Client,
                Info,
            ),
            TransferCodingNotSupported(_) => (
                StatusCode::NOT_IMPLEMENTED,
                "transfer_coding_not_supported",
                G::Unimplemented,
                Client,
                Info,
            ),
            UnderscoreHeader(_) => (
                StatusCode::BAD_REQUEST,
                "header_name_with_underscore",
                G::Internal,
                Client,
                Info,
            ),
            ClientBodyAborted(_) => (
                StatusCode::BAD_REQUEST,
                "client_body_aborted",
                G::Cancelled,
                Client,
                Debug,
            ),
            UpstreamConnect { .. } => (
                StatusCode::BAD_GATEWAY,
                "upstream_connect_failed",
                G::Unavailable,
                Upstream,
                Warn,
            ),
            UpstreamConnectTimeout { .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_connect_timeout",
                G::Unavailable,
                Upstream,
                Warn,
            ),
            UpstreamTimeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                G::DeadlineExceeded,
                Upstream,
                Warn,
            ),
            UpstreamOverflow { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_overflow",
                G::Unavailable,
                Upstream,
                Warn,
            ),
            NoHealthyUpstream { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no_healthy_upstream",
                G::Unavailable,
                Upstream,
                Warn,
            ),
            UpstreamProtocol(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream_protocol_error",
                G::Unavailable,
                Upstream,
                Warn,
            ),
            UpstreamBadResponse(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream_bad_response",
                G::Unavailable,
                Upstream,
                Warn,
            ),
            UpstreamHandshake(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream_handshake_failed",
                G::Unavailable,
                Upstream,
                Warn,
            ),
            UpstreamTls { .. } => (
                StatusCode::BAD_GATEWAY,
                "upstream_tls_failed",
                G::Unavailable,
                Upstream,
                Warn,
            ),
            ClientCertificateRequired => (
                StatusCode::FORBIDDEN,
                "client_certificate_required",
                G::Unauthenticated,
                Client,
                Info,
            ),
            Unauthenticated(refusal) if refusal.outcome == AuthOutcome::Missing => (
                StatusCode::UNAUTHORIZED,
                "missing_credentials",
                G::Unauthenticated,
                Client,
                Debug,
            ),
            Unauthenticated(_) => (
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                G::Unauthenticated,
                Client,
                Info,
            ),
            InsufficientScope { .. } => (
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                G::PermissionDenied,
                Client,
                Info,
            ),
            CorsPreflightRefused { .. } => (
                StatusCode::FORBIDDEN,
                "cors_preflight_refused",
                G::PermissionDenied,
                Client,
                Info,
            ),
            AccessDenied => (
                StatusCode::FORBIDDEN,
                "access_denied",
                G::PermissionDenied,
                Client,
                Info,
            ),
            BadContentEncoding(_) => (
                StatusCode::BAD_REQUEST,
                "bad_content_encoding",
                G::Internal,
                Client,
                Info,
            ),
            UnsupportedContentEncoding(..) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_content_encoding",
                G::Unimplemented,
                Client,
                Info,
            ),
            IpNotAllowed(_) => (
                StatusCode::FORBIDDEN,
                "ip_not_allowed",
                G::PermissionDenied,
                Client,
                Info,
            ),
            AuthUnavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "auth_provider_unavailable",
                G::Unavailable,
                Upstream,
                Warn,
            ),
            RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                G::ResourceExhausted,
                Client,
                Debug,
            ),
            RateLimitUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "rate_limit_unavailable",
                G::Unavailable,
                Internal,
                Warn,
            ),
            ConcurrencyLimited {
                too_many_requests: true,
                ..
            } => (
                StatusCode::TOO_MANY_REQUESTS,
                "concurrency_limited",
                G::ResourceExhausted,
                Client,
                Debug,
            ),
            ConcurrencyLimited { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "concurrency_limited",
                G::Unavailable,
                Client,
                Debug,
            ),
            FaultInjected { status } => {
                (*status, "fault_injected", G::Unavailable, Internal, Debug)
            }
            PathRewriteFailed => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "path_rewrite_failed",
                G::Internal,
                Internal,
                Error,
            ),
            RedirectFailed => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "redirect_failed",
                G::Internal,
                Internal,
                Error,
            ),
            PlainHttpToTlsPort => (
                StatusCode::BAD_REQUEST,
                "plain_http_to_tls_port",
                G::Internal,
                Client,
                Info,
            ),
            BadUpstreamRequest(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                G::Internal,
                Internal,
                Error,
            ),
            Parser { status, .. } => (*status, parser_code(*status), G::Internal, Client, Info),
            AdminReadOnly => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                G::Unimplemented,
                Client,
                Debug,
            ),
            AdminNotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                G::Unimplemented,
                Client,
                Debug,
            ),
            TranscodeRequest(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                G::InvalidArgument,
                Client,
                Debug,
            ),
            TranscodeStream(error) => match error.source {
                crate::grpc::request::RequestError::MessageTooLarge { .. } => (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "message_too_large",
                    G::ResourceExhausted,
                    Client,
                    Info,
                ),
                _ => (
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    G::InvalidArgument,
                    Client,
                    Debug,
                ),
            },
            RequestMessageTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "message_too_large",
                G::ResourceExhausted,
                Client,
                Info,
            ),
            ResponseMessageTooLarge { .. } => (
                StatusCode::BAD_GATEWAY,
                "response_message_too_large",
                G::ResourceExhausted,
                Upstream,
                Warn,
            ),
        };
        Class {
            status,
            code,
            grpc,
            source,
            level,
        }
    }

    /// Whether the connection should be closed after answering (the framing can't be trusted).
    pub(crate) fn closes_connection(&self) -> bool {
        matches!(
            self,
            GatewayError::PayloadTooLarge { .. }
                | GatewayError::ConnectRefused
                | GatewayError::RequestBodyTimeout(_)
                | GatewayError::ClientBodyAborted(_)
                | GatewayError::MalformedRequestBody(_)
                | GatewayError::RepeatedChunkedCoding
                | GatewayError::TransferCodingNotSupported(_)
                | GatewayError::Parser { .. }
                | GatewayError::PlainHttpToTlsPort
                | GatewayError::DuplicateHost
                | GatewayError::InvalidHost(_)
                | GatewayError::AuthorityMismatch { .. }
        )
    }

    /// Log this error and turn it into the caller's answer, marked as a [`LocalAnswer`].
    /// `route` is the route whose stack refused the request, if one was chosen.
    pub(crate) fn answer(
        self,
        request_id: &HeaderValue,
        caller: Caller,
        route: Option<&str>,
    ) -> Response<Body> {
        let id = request_id.to_str().unwrap_or("");
        self.log(id, route);
        let code = self.class().code;
        let mut response = self.render(id, caller);
        let auth = self.auth_outcome().map(AuthOutcome::label);
        response.extensions_mut().insert(LocalAnswer { code, auth });
        response
    }

    /// The auth outcome behind an auth refusal.
    pub(crate) fn auth_outcome(&self) -> Option<AuthOutcome> {
        match self {
            GatewayError::Unauthenticated(refusal) => Some(refusal.outcome),
            GatewayError::InsufficientScope { .. } => Some(AuthOutcome::InsufficientScope),
            GatewayError::AccessDenied => Some(AuthOutcome::Denied),
            GatewayError::AuthUnavailable { .. } => Some(AuthOutcome::ProviderUnavailable),
            GatewayError::ClientCertificateRequired => Some(AuthOutcome::NoClientCertificate),
            _ => None,
        }
    }

    /// The caller's answer: the JSON error body, or gRPC's trailers-only status.
    pub(crate) fn render(&self, request_id: &str, caller: Caller) -> Response<Body> {
        let class = self.class();
        let message = self.to_string();
        match caller {
            Caller::Http => {
                let mut response =
                    Response::new(Body::full(error_json(class.code, &message, request_id)));
                *response.status_mut() = class.status;
                let headers = response.headers_mut();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                match self {
                    GatewayError::MethodNotAllowed { allow, .. } => {
                        let list = allow
                            .iter()
                            .map(Method::as_str)
                            .collect::<Vec<_>>()
                            .join(", ");
                        if let Ok(value) = HeaderValue::from_str(&list) {
                            headers.insert(ALLOW, value);
                        }
                    }
                    GatewayError::AdminReadOnly => {
                        headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
                    }
                    GatewayError::Unauthenticated(refusal) => {
                        for challenge in refusal.challenges() {
                            headers.append(WWW_AUTHENTICATE, challenge);
                        }
                    }
                    GatewayError::RateLimited(refusal) => {
                        for (name, value) in &refusal.headers {
                            headers.insert(name.clone(), value.clone());
                        }
                    }
                    GatewayError::InsufficientScope { scopes } => {
                        let challenge = format!(
                            "Bearer error=\"insufficient_scope\", error_description=\"the \
                             credential lacks a required scope\", scope=\"{scopes}\""
                        );
                        if let Ok(value) = HeaderValue::from_str(&challenge) {
                            headers.insert(WWW_AUTHENTICATE, value);
                        }
                    }
                    _ => {}
                }
                if self.closes_connection() {
                    headers.insert(CONNECTION, HeaderValue::from_static("close"));
                }
                response
            }
            Caller::Grpc => {
                // Trailers-only (gRPC over HTTP/2 §Responses): HTTP 200, the status in the
                // header block, no body. The message is percent-encoded as the spec asks.
                let mut response = Response::new(Body::empty());
                let headers = response.headers_mut();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                headers.insert(
                    GRPC_STATUS.clone(),
                    HeaderValue::from_static(class.grpc.as_str()),
                );
                if let Ok(value) = HeaderValue::from_str(&grpc_percent_encode(&message)) {
                    headers.insert(GRPC_MESSAGE.clone(), value);
                }
                if let GatewayError::RateLimited(refusal) = self {
                    // A gRPC client can read headers too: when to retry, and its limits.
                    for (name, value) in &refusal.headers {
                        headers.insert(name.clone(), value.clone());
                    }
                }
                if self.closes_connection() {
                    headers.insert(CONNECTION, HeaderValue::from_static("close"));
                }
                response
            }
        }
    }

    fn log(&self, request_id: &str, route: Option<&str>) {
        let class = self.class();
        let blame = class.source.label();
        let code = class.code;
        let route = route.unwrap_or("");
        let cause = std::error::Error::source(self).map(|s| s.to_string());
        match class.level {
            Level::Debug => {
                tracing::debug!(request_id, route, code, blame, error = %self, cause = ?cause, "request refused")
            }
            Level::Info => {
                tracing::info!(request_id, route, code, blame, error = %self, cause = ?cause, "request refused")
            }
            Level::Warn => {
                tracing::warn!(request_id, route, code, blame, error = %self, cause = ?cause, "request failed")
            }
            Level::Error => {
                tracing::error!(request_id, route, code, blame, error = %self, cause = ?cause, "request failed")
            }
        }
    }

    /// Recover the typed cause of a failed upstream exchange from hyper's error chain: a body
    /// error we raised ourselves (limit, timeout, client gone) is the client's fault, anything
    /// else is the upstream's.
    pub(crate) fn from_upstream_send(err: hyper::Error) -> GatewayError {
        match find_body_error(&err) {
            Some(BodyError::TooLarge { limit }) => GatewayError::PayloadTooLarge { limit: *limit },
            Some(BodyError::Timeout(d)) => GatewayError::RequestBodyTimeout(*d),
            Some(BodyError::Client(cause)) if is_malformed(cause) => {
                GatewayError::MalformedRequestBody(err)
            }
            Some(BodyError::Client(_)) => GatewayError::ClientBodyAborted(err),
            Some(BodyError::Coding(_)) => GatewayError::BadContentEncoding(Box::new(err)),
            Some(BodyError::Transcode(error)) => GatewayError::TranscodeStream(error.clone()),
            Some(BodyError::Upstream(_)) | None => GatewayError::UpstreamProtocol(err),
        }
    }
}

impl GatewayError {
    /// The error for a body that could not be read whole (to keep it for retries, to
    /// transcode it).
    pub(crate) fn from_request_body(error: BodyError) -> GatewayError {
        match error {
            BodyError::TooLarge { limit } => GatewayError::PayloadTooLarge { limit },
            BodyError::Timeout(d) => GatewayError::RequestBodyTimeout(d),
            BodyError::Client(cause) if is_malformed(&cause) => {
                GatewayError::MalformedRequestBody(cause)
            }
            BodyError::Client(cause) => GatewayError::ClientBodyAborted(cause),
            BodyError::Coding(cause) => GatewayError::BadContentEncoding(cause),
            BodyError::Upstream(cause) => GatewayError::UpstreamProtocol(cause),
            BodyError::Transcode(cause) => GatewayError::TranscodeStream(cause),
        }
    }
}

fn find_body_error(err: &hyper::Error) -> Option<&BodyError> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(current) = cause {
        if let Some(body_error) = current.downcast_ref::<BodyError>() {
            return Some(body_error);
        }
        cause = current.source();
    }
    None
}

/// hyper reports a body whose framing does not parse (a bad chunk size, a chunk not followed
/// by CRLF) with an I/O error of kind `InvalidInput` or `InvalidData`, and a client that went
/// away with `UnexpectedEof`.
fn is_malformed(err: &hyper::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
            );
        }
        cause = current.source();
    }
    false
}

fn parser_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        _ => "malformed_request",
    }
}

/// `{"error":{"code":…,"message":…,"request_id":…}}`, escaped by serde_json.
pub(crate) fn error_json(code: &str, message: &str, request_id: &str) -> bytes::Bytes {
    let value = serde_json::json!({
        "error": { "code": code, "message": message, "request_id": request_id }
    });
    bytes::Bytes::from(value.to_string())
}

/// `grpc-message` encoding: printable ASCII except `%` as is, every other byte as `%XX`.
fn grpc_percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(error: GatewayError) -> Response<Body> {
        error.render("req-1", Caller::Http)
    }

    #[test]
    fn every_local_answer_is_json_with_code_and_request_id() {
        let response = http(GatewayError::NoRoute);
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn method_not_allowed_lists_allowed_methods() {
        let response = http(GatewayError::MethodNotAllowed {
            method: Method::DELETE,
            allow: vec![Method::GET, Method::HEAD, Method::POST],
        });
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[ALLOW], "GET, HEAD, POST");
    }

    #[test]
    fn json_escapes_quotes_in_messages() {
        let body = error_json("c", "a \"quoted\" \n thing", "id");
        let parsed: serde_json::Value = serde_json::from_slice(&body).expect("valid json");
        assert_eq!(parsed["error"]["message"], "a \"quoted\" \n thing");
    }

    #[test]
    fn body_limit_errors_close_the_connection() {
        let response = http(GatewayError::PayloadTooLarge { limit: 10 });
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()[CONNECTION], "close");
    }

    #[test]
    fn a_grpc_caller_gets_a_trailers_only_status_and_no_body() {
        let response =
            GatewayError::UpstreamTimeout(Duration::from_millis(200)).render("req-1", Caller::Grpc);
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert_eq!(headers[CONTENT_TYPE], "application/grpc");
        assert_eq!(headers["grpc-status"], "4");
        assert_eq!(
            headers["grpc-message"],
            "the upstream did not answer within 200ms"
        );
        assert!(http_body::Body::is_end_stream(response.body()));
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(grpc_percent_encode("a 100% \"ok\"\n"), "a 100%25 \"ok\"%0A");
        assert_eq!(grpc_percent_encode("é"), "%C3%A9");
    }

    #[test]
    fn answers_are_marked_with_their_code() {
        let response =
            GatewayError::NoRoute.answer(&HeaderValue::from_static("id"), Caller::Http, None);
        let marked = response.extensions().get::<LocalAnswer>().expect("marked");
        assert_eq!(marked.code, "route_not_found");
    }
}
