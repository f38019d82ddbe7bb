//! Upstream clusters: the last stop of a request inside the gateway.
//!
//! On the request path: [`Upstream`] is the innermost service of every route stack. A
//! [`Cluster`] is a named set of endpoints with a connection pool per endpoint ([`pool`]).
//! [`Cluster::send`] asks the cluster's balancer ([`balance`]) for the order to try its
//! endpoints in, takes a pooled connection or dials a new one, and sends the request,
//! failing over to the next endpoint when a connection cannot be opened — the request has not
//! left the gateway then, so this is always safe. The response's hop-by-hop headers are
//! removed here, where it enters the gateway. WebSocket and other HTTP/1.1 upgrades get a
//! dedicated connection that is joined to the client's ([`tunnel`]).
//!
//! Clusters are built with each runtime; their endpoints' open connections are carried over
//! by a reload (a resource per endpoint, kept while its protocol and TLS settings stay the
//! same), so pooled connections survive reloads.

pub(crate) mod balance;
pub(crate) mod pool;
pub(crate) mod tls;
mod tunnel;

use crate::body::{Body, BodyFailure, UpstreamBody};
use crate::config::model;
use crate::error::GatewayError;
use crate::forwarding::{strip_hop_by_hop, Framing};
use crate::metrics::Metrics;
use crate::resources::ResourceCarry;
use balance::{Balancer, RoundRobin, Selection};
use http::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use pool::{ConnectError, Connections, EndpointPool, Lease, PoolSetup};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tls::{UpstreamTls, UpstreamTlsError};

/// The client side of an HTTP/1.1 upgrade, carried in the request's extensions from the
/// gateway (which took it from hyper) to the upstream (which joins it to the backend's side).
#[derive(Clone)]
pub(crate) struct DownstreamUpgrade(pub(crate) hyper::upgrade::OnUpgrade);

/// What an endpoint's open connections depend on: a reload that changes neither keeps them.
#[derive(Debug, Clone, PartialEq)]
struct ConnectionIdentity {
    protocol: model::UpstreamProtocol,
    tls: Option<model::UpstreamTls>,
}

pub(crate) struct Cluster {
    name: Arc<str>,
    /// The Host sent for requests that came without one.
    host: HeaderValue,
    protocol: model::UpstreamProtocol,
    connect_timeout: std::time::Duration,
    endpoints: Vec<Arc<EndpointPool<Body>>>,
    balancer: Selection,
}

impl Cluster {
    /// Build a cluster; with `tls`, its CA bundle and client certificate are read now. Each
    /// endpoint's open connections come from `carry` when the previous runtime had them.
    pub(crate) fn new(
        config: &model::Cluster,
        metrics: &Metrics,
        carry: &mut ResourceCarry<'_>,
    ) -> Result<Cluster, UpstreamTlsError> {
        let cluster_metrics = metrics.cluster(&config.name);
        let tls = match &config.tls {
            Some(settings) => Some(Arc::new(UpstreamTls::new(settings, config.protocol)?)),
            None => None,
        };
        let identity = ConnectionIdentity {
            protocol: config.protocol,
            tls: config.tls.clone(),
        };
        let mut endpoints = Vec::with_capacity(config.endpoints.len());
        for endpoint in &config.endpoints {
            let tls = match &tls {
                Some(tls) => Some((tls.clone(), tls.server_name_for(endpoint)?)),
                None => None,
            };
            let name = format!("{}/{endpoint}", config.name);
            let connections = carry
                .obtain("upstream_connections", &name, &identity, || {
                    Ok::<_, std::convert::Infallible>(Connections::<Body>::default())
                })
                .unwrap_or_else(|never| match never {});
            endpoints.push(Arc::new(EndpointPool::new(
                endpoint.clone(),
                PoolSetup {
                    protocol: config.protocol,
                    connect_timeout: config.connect_timeout,
                    settings: config.pool.clone(),
                    metrics: cluster_metrics.clone(),
                    tls,
                    connections,
                },
            )));
        }
        Ok(Cluster {
            host: HeaderValue::from_str(&config.name)
                .unwrap_or_else(|_| HeaderValue::from_static("upstream")),
            name: config.name.as_str().into(),
            protocol: config.protocol,
            connect_timeout: config.connect_timeout,
            endpoints,
            balancer: Selection::RoundRobin(RoundRobin::default()),
        })
    }

    /// Send one request to the cluster.
    pub(crate) async fn send(
        self: Arc<Self>,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, GatewayError> {
        let upgrade = req.extensions_mut().remove::<DownstreamUpgrade>();
        if upgrade.is_some() || self.protocol == model::UpstreamProtocol::Http2 {
            // An HTTP/2 upstream client resets the stream when the gateway cuts a request
            // body off (over the size limit, too slow) and the reason is lost on the way:
            // the body's progress keeps it.
            let progress = match req.body_mut() {
                Body::Client { body } => Some(body.progress()),
                _ => None,
            };
            // The less common paths are boxed so that their larger futures don't inflate the
            // state every HTTP/1.1 request carries (and copies).
            let result = Box::pin(self.send_other(req, upgrade)).await;
            return match progress.and_then(|progress| progress.failure()) {
                Some(BodyFailure::TooLarge { limit }) => {
                    Err(GatewayError::PayloadTooLarge { limit })
                }
                Some(BodyFailure::Timeout(budget)) => Err(GatewayError::RequestBodyTimeout(budget)),
                None => result,
            };
        }
        // HTTP/1.1 over a warm pooled connection: the hot path, all in this one future.
        let mut req = to_http1(req, &self.host);
        let mut last_error = None;
        for index in self.balancer.order(self.endpoints.len()) {
            let endpoint = &self.endpoints[index];
            if let Some(mut lease) = endpoint.checkout_http1().await {
                match lease.sender().try_send_request(req).await {
                    Ok(response) => return wrap(response, Some(lease), endpoint),
                    // The pooled connection closed before our request went out: use a new one.
                    Err(mut error) => match error.take_message() {
                        Some(request) => req = request,
                        None => return Err(GatewayError::from_upstream_send(error.into_error())),
                    },
                }
            }
            let outcome = Box::pin(self.send_on_new_connection(endpoint, req)).await;
            match self.settle(outcome, &mut last_error) {
                Next::Return(result) => return result,
                Next::Failover(request) => req = request,
            }
        }
        Err(self.exhausted(last_error))
    }

    /// HTTP/2 upstreams and HTTP/1.1 upgrades, endpoint by endpoint.
    async fn send_other(
        &self,
        mut req: Request<Body>,
        upgrade: Option<DownstreamUpgrade>,
    ) -> Result<Response<Body>, GatewayError> {
        let mut last_error = None;
        for index in self.balancer.order(self.endpoints.len()) {
            let endpoint = &self.endpoints[index];
            let outcome = match &upgrade {
                Some(client_side) if endpoint.protocol() == model::UpstreamProtocol::Http1 => {
                    self.send_upgrade(endpoint, req, client_side.clone()).await
                }
                _ => self.send_http2(endpoint, req).await,
            };
            match self.settle(outcome, &mut last_error) {
                Next::Return(result) => return result,
                Next::Failover(request) => req = request,
            }
        }
        Err(self.exhausted(last_error))
    }

    /// The result of an attempt, or the request back when it never left the gateway (then
    /// it may go to the next endpoint; the reason is kept for the final error).
    fn settle(&self, outcome: Attempt, last_error: &mut Option<ConnectError>) -> Next {
        match outcome {
            Attempt::Done(result) => Next::Return(result),
            Attempt::NotSent(request, error) => {
                tracing::debug!(cluster = %self.name, error = %error, "endpoint unavailable, trying the next");
                *last_error = Some(error);
                Next::Failover(request)
            }
        }
    }

    /// The error once every endpoint has refused a connection.
    fn exhausted(&self, last_error: Option<ConnectError>) -> GatewayError {
        match last_error {
            Some(ConnectError::Timeout { .. }) => GatewayError::UpstreamConnectTimeout {
                cluster: self.name.to_string(),
                timeout: self.connect_timeout,
            },
            Some(ConnectError::Io { source, .. }) => GatewayError::UpstreamConnect {
                cluster: self.name.to_string(),
                source,
            },
            Some(ConnectError::Handshake { source, .. }) => GatewayError::UpstreamHandshake(source),
            Some(ConnectError::Tls { source, .. }) => GatewayError::UpstreamTls {
                cluster: self.name.to_string(),
                source,
            },
            None => GatewayError::UpstreamConnect {
                cluster: self.name.to_string(),
                source: std::io::Error::other("the cluster has no endpoints"),
            },
        }
    }

    async fn send_on_new_connection(
        &self,
        endpoint: &Arc<EndpointPool<Body>>,
        req: Request<Body>,
    ) -> Attempt {
        let mut lease = match endpoint.connect_http1(false).await {
            Ok(lease) => lease,
            Err(error) => return Attempt::NotSent(req, error),
        };
        match lease.sender().try_send_request(req).await {
            Ok(response) => Attempt::Done(wrap(response, Some(lease), endpoint)),
            Err(mut error) => match error.take_message() {
                // Closed right after the handshake, before anything was written.
                Some(request) => Attempt::NotSent(
                    request,
                    ConnectError::Handshake {
                        endpoint: endpoint.label.to_string(),
                        source: error.into_error(),
                    },
                ),
                None => Attempt::Done(Err(GatewayError::from_upstream_send(error.into_error()))),
            },
        }
    }

    async fn send_upgrade(
        &self,
        endpoint: &Arc<EndpointPool<Body>>,
        req: Request<Body>,
        client_side: DownstreamUpgrade,
    ) -> Attempt {
        let req = to_http1(req, &self.host);
        let mut lease = match endpoint.connect_http1(true).await {
            Ok(lease) => lease,
            Err(error) => return Attempt::NotSent(req, error),
        };
        match lease.sender().send_request(req).await {
            Ok(mut response) => {
                if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                    let backend_side = hyper::upgrade::on(&mut response);
                    tunnel::spawn(client_side.0, backend_side, endpoint.label.clone());
                }
                // Never pooled: after a 101 the connection belongs to the tunnel.
                Attempt::Done(wrap(response, None, endpoint))
            }
            Err(error) => Attempt::Done(Err(GatewayError::from_upstream_send(error))),
        }
    }

    async fn send_http2(&self, endpoint: &Arc<EndpointPool<Body>>, req: Request<Body>) -> Attempt {
        let mut req = match to_http2(req, endpoint) {
            Ok(req) => req,
            Err(error) => return Attempt::Done(Err(error)),
        };
        // Two tries: the shared connection may have just closed; the second try dials anew.
        for _ in 0..2 {
            let mut sender = match endpoint.http2_sender().await {
                Ok(sender) => sender,
                Err(error) => return Attempt::NotSent(req, error),
            };
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(response) => return Attempt::Done(wrap(response, None, endpoint)),
                Err(mut error) => match error.take_message() {
                    Some(request) => req = request,
                    None => {
                        return Attempt::Done(Err(GatewayError::from_upstream_send(
                            error.into_error(),
                        )))
                    }
                },
            }
        }
        Attempt::Done(Err(GatewayError::UpstreamConnect {
            cluster: self.name.to_string(),
            source: std::io::Error::other(
                "the HTTP/2 connection closed before the request was sent",
            ),
        }))
    }
}

/// What to do after an attempt.
enum Next {
    Return(Result<Response<Body>, GatewayError>),
    /// The request never left the gateway: fail over to the next endpoint with it.
    Failover(Request<Body>),
}

enum Attempt {
    Done(Result<Response<Body>, GatewayError>),
    /// The request never left: it may go to another endpoint.
    NotSent(Request<Body>, ConnectError),
}

/// The upstream's response as the gateway passes it on: refused if its framing is ambiguous,
/// in the gateway's own HTTP version (an intermediary speaks for itself, RFC 9110 §6.2; each
/// side's keep-alive is its connection's business), its hop-by-hop headers removed (for a
/// protocol switch, `Upgrade` kept and `Connection: upgrade` restated), its body streaming
/// and handing the connection back to the pool when it ends.
fn wrap(
    mut response: Response<Incoming>,
    lease: Option<Lease<Body>>,
    endpoint: &Arc<EndpointPool<Body>>,
) -> Result<Response<Body>, GatewayError> {
    let upgraded = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let framing = strip_hop_by_hop(response.headers_mut(), upgraded);
    // On refusal the lease is dropped, which closes the connection: whatever follows on it
    // cannot be trusted either.
    check_framing(response.headers(), framing)?;
    *response.version_mut() = Version::HTTP_11;
    if upgraded {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let label = endpoint.label.clone();
    Ok(response.map(|incoming| Body::Upstream {
        body: UpstreamBody::new(incoming, lease, label),
    }))
}

/// RFC 9112 §6.3: a response with both `Transfer-Encoding` and `Content-Length` (hyper
/// decodes it by the former) or with more than one `Content-Length` line is a smuggling or
/// splitting attempt as often as a bug. Relaying it would hand the client a length that
/// does not describe the body, so it is refused with a 502 instead.
/// `framing` is what the response came with (`Transfer-Encoding` is gone by now).
fn check_framing(headers: &http::HeaderMap, framing: Framing) -> Result<(), GatewayError> {
    if !framing.content_length {
        return Ok(());
    }
    if framing.transfer_encoding {
        return Err(GatewayError::UpstreamBadResponse(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    // Only a map with some name twice can have two Content-Length lines: no lookup otherwise.
    if headers.len() != headers.keys_len()
        && headers.get_all(CONTENT_LENGTH).iter().nth(1).is_some()
    {
        return Err(GatewayError::UpstreamBadResponse(
            "more than one Content-Length",
        ));
    }
    Ok(())
}

/// HTTP/1.1 upstreams get origin-form targets (`/path?query`) and version 1.1, whatever the
/// client spoke — and a Host, which HTTP/1.1 requires: a request that came without one (an
/// HTTP/1.0 client's) gets the cluster's name, as NGINX sends its upstream's name.
fn to_http1(mut req: Request<Body>, cluster_host: &HeaderValue) -> Request<Body> {
    // An HTTP/1.1 request always has a Host by now (admission refuses one without); only
    // HTTP/1.0 and HTTP/2 requests may come without.
    if req.version() != Version::HTTP_11 && !req.headers().contains_key(HOST) {
        req.headers_mut().insert(HOST, cluster_host.clone());
    }
    *req.version_mut() = Version::HTTP_11;
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(path);
    }
    req
}

/// HTTP/2 upstreams need `:scheme` and `:authority`: taken from the Host header (which
/// HTTP/2 carries as `:authority` instead), falling back to the endpoint address.
fn to_http2(
    mut req: Request<Body>,
    endpoint: &EndpointPool<Body>,
) -> Result<Request<Body>, GatewayError> {
    *req.version_mut() = Version::HTTP_2;
    let authority = match req.headers_mut().remove(HOST) {
        Some(host) => Authority::try_from(host.as_bytes()).ok(),
        None => req.uri().authority().cloned(),
    };
    let authority = match authority {
        Some(authority) => authority,
        None => Authority::try_from(endpoint.label.as_ref())
            .map_err(|e| GatewayError::BadUpstreamRequest(e.into()))?,
    };
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(if endpoint.is_tls() {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    });
    parts.authority = Some(authority);
    parts.path_and_query = Some(path);
    *req.uri_mut() =
        Uri::from_parts(parts).map_err(|e| GatewayError::BadUpstreamRequest(e.into()))?;
    Ok(req)
}

/// The innermost service of every route stack: forwards to the route's cluster.
#[derive(Clone)]
pub(crate) struct Upstream {
    cluster: Arc<Cluster>,
}

impl Upstream {
    pub(crate) fn new(cluster: Arc<Cluster>) -> Upstream {
        Upstream { cluster }
    }
}

impl tower_service::Service<Request<Body>> for Upstream {
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, GatewayError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        Box::pin(self.cluster.clone().send(req))
    }
}
