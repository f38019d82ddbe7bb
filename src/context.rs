//! What the gateway knows about a connection and a request before the route's stack runs.
//!
//! On the request path: the server builds one [`ClientConnection`] per accepted connection
//! (listener, peer, TLS facts); `gateway::handle` builds one [`RequestContext`] per request
//! once the route is known and puts it in the request's extensions, where every layer of the
//! route's stack can read it ([`RequestContext::of`]) without being handed anything else. A
//! layer that learns who the caller is (auth) adds that to the request's extensions the same
//! way, for the layers after it. What a layer knows about its route it was given when it was
//! built. The context is made only for routes with a policy that reads it
//! (`RoutePolicy::reads_context`): it costs a few allocations a plain route does without.

use crate::config::model::{self, Hsts};
use crate::metrics::{ListenerMetrics, Metrics};
use crate::server::conn_guard::ConnState;
use crate::server::tls::TlsInfo;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Request};
use std::net::SocketAddr;
use std::sync::Arc;

/// Per-listener settings the request path needs, made once when the listener binds.
pub(crate) struct ListenerContext {
    pub(crate) name: Arc<str>,
    pub(crate) config: model::Listener,
    pub(crate) metrics: Arc<ListenerMetrics>,
    /// The `Strict-Transport-Security` value of a TLS listener, made once.
    pub(crate) hsts: Option<HeaderValue>,
}

impl ListenerContext {
    pub(crate) fn new(config: &model::Listener, metrics: &Metrics) -> ListenerContext {
        ListenerContext {
            name: config.name.as_str().into(),
            hsts: config
                .tls
                .as_ref()
                .and_then(|tls| tls.hsts.as_ref())
                .map(Hsts::header_value),
            config: config.clone(),
            metrics: metrics.listener(&config.name),
        }
    }

    /// The header that carries the client certificate's identity upstream, if configured.
    pub(crate) fn client_cert_header(&self) -> Option<&HeaderName> {
        self.config
            .tls
            .as_ref()
            .and_then(|tls| tls.client_auth.forward_header.as_ref())
    }
}

/// One accepted client connection, shared by every request on it.
pub(crate) struct ClientConnection {
    pub(crate) listener: Arc<ListenerContext>,
    pub(crate) peer: SocketAddr,
    /// The client address as a header value, made once per connection.
    pub(crate) peer_ip: HeaderValue,
    pub(crate) state: Arc<ConnState>,
    /// What the TLS handshake established; `None` on plaintext listeners.
    pub(crate) tls: Option<TlsInfo>,
}

/// Who is calling, as far as the shape of an error answer is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    /// Anything but gRPC: errors are JSON bodies with an HTTP status.
    Http,
    /// `content-type: application/grpc…`: errors are `grpc-status` / `grpc-message` in a
    /// trailers-only answer, because a gRPC client reads nothing else.
    Grpc,
}

impl Caller {
    pub(crate) fn of(headers: &HeaderMap) -> Caller {
        let grpc = headers
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if grpc {
            Caller::Grpc
        } else {
            Caller::Http
        }
    }
}

/// One request's context, in its extensions from just before the route's stack runs.
#[derive(Clone)]
pub(crate) struct RequestContext {
    pub(crate) connection: Arc<ClientConnection>,
    pub(crate) request_id: HeaderValue,
    pub(crate) caller: Caller,
    /// The client's address (`client_ip.rs`, trusted proxies applied), taken before the
    /// route's policies run — for routes whose cluster hashes on it; `None` for others.
    pub(crate) client: Option<std::net::IpAddr>,
}

impl RequestContext {
    /// The context of a request inside a route's stack. Every request the gateway hands a
    /// stack has one; `None` only for requests made up outside the gateway (unit tests).
    pub(crate) fn of<B>(req: &Request<B>) -> Option<&RequestContext> {
        req.extensions().get::<RequestContext>()
    }

    /// What the TLS handshake established, on a TLS listener.
    pub(crate) fn tls(&self) -> Option<&TlsInfo> {
        self.connection.tls.as_ref()
    }
}

/// A request context as the gateway makes it, for unit tests of layers.
#[cfg(test)]
pub(crate) fn test_context(peer: SocketAddr, tls: Option<TlsInfo>) -> RequestContext {
    let listener = model::Listener {
        name: "test".into(),
        address: SocketAddr::from(([127, 0, 0, 1], 0)),
        via: false,
        headers_with_underscores: model::UnderscoreHeaders::default(),
        limits: model::ListenerLimits::default(),
        tls: None,
        redirect_https: None,
    };
    RequestContext {
        connection: Arc::new(ClientConnection {
            listener: Arc::new(ListenerContext::new(&listener, &Metrics::default())),
            peer,
            peer_ip: HeaderValue::from_static("127.0.0.1"),
            state: Arc::new(ConnState::new()),
            tls,
        }),
        request_id: HeaderValue::from_static("test-request"),
        caller: Caller::Http,
        client: None,
    }
}
