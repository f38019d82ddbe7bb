//! Every error the gateway answers itself, and the ONE table that classifies them.
//!
//! Leaf modules (routing, the route stack, the upstream client, the connection guard) return
//! typed [`GatewayError`]s; nothing on the request path builds an error response by hand.
//! [`GatewayError::class`] maps each to its HTTP status, stable error code, log level and
//! whether a retry could help, and [`GatewayError::into_response`] renders the JSON body
//! `{"error":{"code":"…","message":"…","request_id":"…"}}` that every local answer uses.

use crate::body::{Body, BodyError};
use http::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE};
use http::{Method, Response, StatusCode};
use std::time::Duration;

/// Where a failure came from — decides who is to blame in logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The caller sent something we refuse.
    Client,
    /// The backend could not be reached or answered badly.
    Upstream,
    /// Portico itself (should not happen).
    Internal,
}

/// How loud a failure is in the diagnostics log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// The classification of one error: the single source of truth for what a caller sees.
#[derive(Debug, Clone, Copy)]
pub struct Class {
    pub status: StatusCode,
    pub code: &'static str,
    pub source: Source,
    pub level: Level,
    /// Could the same request succeed if tried again (on another endpoint)?
    pub retryable: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
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
    #[error("the Host header {0:?} is not a host name")]
    InvalidHost(String),
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
    #[error("the upstream sent an invalid response or closed the connection")]
    UpstreamProtocol(#[source] hyper::Error),
    #[error("HTTP handshake with the upstream failed")]
    UpstreamHandshake(#[source] hyper::Error),
    #[error("TLS with an endpoint of cluster {cluster} failed (certificate not trusted, wrong name, or no common protocol)")]
    UpstreamTls {
        cluster: String,
        #[source]
        source: std::io::Error,
    },
    #[error("this route requires a verified client certificate")]
    ClientCertificateRequired,
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
}

impl GatewayError {
    /// THE classification table.
    pub fn class(&self) -> Class {
        use GatewayError::*;
        let (status, code, source, level, retryable) = match self {
            NoRoute => (
                StatusCode::NOT_FOUND,
                "route_not_found",
                Source::Client,
                Level::Debug,
                false,
            ),
            MethodNotAllowed { .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                Source::Client,
                Level::Debug,
                false,
            ),
            ConnectRefused => (
                StatusCode::METHOD_NOT_ALLOWED,
                "connect_not_supported",
                Source::Client,
                Level::Info,
                false,
            ),
            AuthorityMismatch { .. } => (
                StatusCode::BAD_REQUEST,
                "authority_mismatch",
                Source::Client,
                Level::Info,
                false,
            ),
            MissingHost => (
                StatusCode::BAD_REQUEST,
                "missing_host",
                Source::Client,
                Level::Debug,
                false,
            ),
            InvalidHost(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_host",
                Source::Client,
                Level::Debug,
                false,
            ),
            BadPath(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_path",
                Source::Client,
                Level::Info,
                false,
            ),
            UriTooLong { .. } => (
                StatusCode::URI_TOO_LONG,
                "uri_too_long",
                Source::Client,
                Level::Info,
                false,
            ),
            PayloadTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                Source::Client,
                Level::Info,
                false,
            ),
            RequestBodyTimeout(_) => (
                StatusCode::REQUEST_TIMEOUT,
                "request_body_timeout",
                Source::Client,
                Level::Info,
                false,
            ),
            ClientBodyAborted(_) => (
                StatusCode::BAD_REQUEST,
                "client_body_aborted",
                Source::Client,
                Level::Debug,
                false,
            ),
            UpstreamConnect { .. } => (
                StatusCode::BAD_GATEWAY,
                "upstream_connect_failed",
                Source::Upstream,
                Level::Warn,
                true,
            ),
            UpstreamConnectTimeout { .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_connect_timeout",
                Source::Upstream,
                Level::Warn,
                true,
            ),
            UpstreamTimeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                Source::Upstream,
                Level::Warn,
                false,
            ),
            UpstreamProtocol(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream_protocol_error",
                Source::Upstream,
                Level::Warn,
                false,
            ),
            UpstreamHandshake(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream_handshake_failed",
                Source::Upstream,
                Level::Warn,
                true,
            ),
            UpstreamTls { .. } => (
                StatusCode::BAD_GATEWAY,
                "upstream_tls_failed",
                Source::Upstream,
                Level::Warn,
                true,
            ),
            ClientCertificateRequired => (
                StatusCode::FORBIDDEN,
                "client_certificate_required",
                Source::Client,
                Level::Info,
                false,
            ),
            PlainHttpToTlsPort => (
                StatusCode::BAD_REQUEST,
                "plain_http_to_tls_port",
                Source::Client,
                Level::Info,
                false,
            ),
            BadUpstreamRequest(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                Source::Internal,
                Level::Error,
                false,
            ),
            Parser { status, .. } => (
                *status,
                parser_code(*status),
                Source::Client,
                Level::Info,
                false,
            ),
        };
        Class {
            status,
            code,
            source,
            level,
            retryable,
        }
    }

    /// Whether the connection should be closed after answering (the framing can't be trusted).
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            GatewayError::PayloadTooLarge { .. }
                | GatewayError::ConnectRefused
                | GatewayError::RequestBodyTimeout(_)
                | GatewayError::ClientBodyAborted(_)
                | GatewayError::Parser { .. }
                | GatewayError::PlainHttpToTlsPort
        )
    }

    /// Render the JSON error response.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let class = self.class();
        let mut response = Response::new(Body::full(error_json(
            class.code,
            &self.to_string(),
            request_id,
        )));
        *response.status_mut() = class.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let GatewayError::MethodNotAllowed { allow, .. } = &self {
            let list = allow
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            if let Ok(value) = HeaderValue::from_str(&list) {
                headers.insert(ALLOW, value);
            }
        }
        if self.closes_connection() {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    /// Recover the typed cause of a failed upstream exchange from hyper's error chain: a body
    /// error we raised ourselves (limit, timeout, client gone) is the client's fault, anything
    /// else is the upstream's.
    pub fn from_upstream_send(err: hyper::Error) -> GatewayError {
        match find_body_error(&err) {
            Some(BodyError::TooLarge { limit }) => GatewayError::PayloadTooLarge { limit: *limit },
            Some(BodyError::Timeout(d)) => GatewayError::RequestBodyTimeout(*d),
            Some(BodyError::Client(_)) => GatewayError::ClientBodyAborted(err),
            Some(BodyError::Upstream(_)) | None => GatewayError::UpstreamProtocol(err),
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

fn parser_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        _ => "malformed_request",
    }
}

/// `{"error":{"code":…,"message":…,"request_id":…}}`, escaped by serde_json.
pub fn error_json(code: &str, message: &str, request_id: &str) -> bytes::Bytes {
    let value = serde_json::json!({
        "error": { "code": code, "message": message, "request_id": request_id }
    });
    bytes::Bytes::from(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_local_answer_is_json_with_code_and_request_id() {
        let response = GatewayError::NoRoute.into_response("req-1");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn method_not_allowed_lists_allowed_methods() {
        let response = GatewayError::MethodNotAllowed {
            method: Method::DELETE,
            allow: vec![Method::GET, Method::HEAD, Method::POST],
        }
        .into_response("r");
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
        let response = GatewayError::PayloadTooLarge { limit: 10 }.into_response("r");
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()[CONNECTION], "close");
    }
}
