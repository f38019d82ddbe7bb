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
//! The pick skips endpoints that fail their health checks (`health.rs`) or that outlier
//! detection has ejected (`endpoint.rs`), unless too few are left (the panic threshold);
//! each response's outcome feeds outlier detection and, for `least_request`, the endpoint's
//! load and latency. The cluster's circuit breaker (`limits.rs`) refuses what is over its
//! limits at once. A retry (the route's `retry` layer, `middleware/retry.rs`) names the
//! endpoints it already tried ([`TriedEndpoints`]) and they come last. Settings:
//! `policy.rs`; what the admin listener shows: `report.rs`.
//!
//! Clusters are built with each runtime; their endpoints' open connections, states and
//! health checkers are carried over by a reload (resources per endpoint: connections kept
//! while its protocol and TLS settings stay the same, state while the endpoint stays,
//! checkers while their settings stay), so pooled connections and health survive reloads.

pub(crate) mod balance;
pub(crate) mod endpoint;
mod health;
pub(crate) mod limits;
pub(crate) mod policy;
pub(crate) mod pool;
pub(crate) mod report;
pub(crate) mod tls;
mod tunnel;

use crate::body::{Body, UpstreamBody};
use crate::config::model;
use crate::error::GatewayError;
use crate::forwarding::{strip_hop_by_hop, Framing};
use crate::metrics::Metrics;
use crate::resources::ResourceCarry;
use balance::{Balancer, Candidates, Failover, Selection};
use endpoint::{EndpointState, InFlight, Outcome};
use http::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use limits::{ClusterLimits, Limit, Slot};
use policy::{BalancingPolicy, ClusterPolicy, HashKey};
use pool::{ConnectError, Connections, EndpointPool, Lease, PoolSetup};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
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

/// The endpoints a retry layer's earlier attempts went to, carried in the request's
/// extensions so that a retry prefers another endpoint (bit `i` = endpoint `i`; endpoints
/// past the 64th are not remembered).
#[derive(Clone, Default)]
pub(crate) struct TriedEndpoints {
    pub(crate) endpoints: Arc<AtomicU64>,
    /// This try is a retry (counted per endpoint).
    pub(crate) retry: bool,
}

impl TriedEndpoints {
    /// Endpoint `index` is tried; `first` in this try (a retry is counted at the endpoint
    /// it went to, not at those it failed over to).
    fn mark(&self, index: usize, endpoint: &EndpointPool<Body>, first: bool) {
        if index < 64 {
            self.endpoints.fetch_or(1 << index, Relaxed);
        }
        if self.retry && first {
            endpoint.state.counters.retries.fetch_add(1, Relaxed);
        }
    }
}

pub(crate) struct Cluster {
    pub(crate) name: Arc<str>,
    /// The Host sent for requests that came without one.
    host: HeaderValue,
    protocol: model::UpstreamProtocol,
    connect_timeout: std::time::Duration,
    pub(crate) endpoints: Vec<Arc<EndpointPool<Body>>>,
    /// The endpoints' states, in the same order (what the balancer reads).
    states: Vec<Arc<EndpointState>>,
    balancer: Selection,
    pub(crate) policy: ClusterPolicy,
    /// The request key to hash, for a consistent-hash cluster.
    hash_key: Option<HashKey>,
    /// The peak-EWMA decay, when the balancer weighs latency.
    ewma_decay: Option<std::time::Duration>,
    /// Requests in flight are counted per endpoint (for least request, the circuit
    /// breaker, `/clusters`); a plain round-robin cluster does without.
    pub(crate) tracks_load: bool,
    /// Round robin over every endpoint (nothing to filter or weigh): the shortest path.
    plain: bool,
    pub(crate) limits: Arc<ClusterLimits>,
    /// The health checkers of this cluster's endpoints (they run while this is held).
    _checkers: Vec<Arc<health::Checker>>,
}

impl Cluster {
    /// Build a cluster; with `tls`, its CA bundle and client certificate are read now. Each
    /// endpoint's open connections, state and health checker come from `carry` when the
    /// previous runtime had them.
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
        let policy = &config.policy;
        let limits = carry
            .obtain("cluster_limits", &config.name, &(), || {
                Ok::<_, Infallible>(ClusterLimits::default())
            })
            .unwrap_or_else(|never| match never {});
        let mut endpoints = Vec::with_capacity(config.endpoints.len());
        let mut checkers = Vec::new();
        for endpoint in &config.endpoints {
            let tls = match &tls {
                Some(tls) => Some((tls.clone(), tls.server_name_for(endpoint)?)),
                None => None,
            };
            let name = format!("{}/{endpoint}", config.name);
            let connections = carry
                .obtain("upstream_connections", &name, &identity, || {
                    Ok::<_, Infallible>(Connections::<Body>::default())
                })
                .unwrap_or_else(|never| match never {});
            // Kept as long as the endpoint stays in its cluster, whatever else changes.
            let state = carry
                .obtain("endpoint_state", &name, &(), || {
                    Ok::<_, Infallible>(EndpointState::default())
                })
                .unwrap_or_else(|never| match never {});
            let pool = Arc::new(EndpointPool::new(
                endpoint.clone(),
                PoolSetup {
                    protocol: config.protocol,
                    connect_timeout: config.connect_timeout,
                    settings: config.pool.clone(),
                    metrics: cluster_metrics.clone(),
                    tls,
                    connections,
                    state: state.clone(),
                    limits: limits.clone(),
                    max_connections: policy.circuit_breaker.max_connections,
                    max_pending: policy.circuit_breaker.max_pending_requests,
                },
            ));
            if let Some(check) = &policy.health_check {
                // One checker per endpoint however many routes use the cluster; restarted
                // only when what it checks with changes.
                let checker_config = (check.clone(), identity.clone(), config.connect_timeout);
                let checker = carry
                    .obtain("health_check", &name, &checker_config, || {
                        Ok::<_, Infallible>(health::Checker::start(
                            pool.clone(),
                            check.clone(),
                            HeaderValue::from_str(&config.name).ok(),
                        ))
                    })
                    .unwrap_or_else(|never| match never {});
                checkers.push(checker);
            } else {
                // Without checks, an endpoint is not held to an old verdict.
                state.set_healthy(true);
            }
            endpoints.push(pool);
        }
        let labels: Vec<String> = config.endpoints.iter().map(|e| e.to_string()).collect();
        Ok(Cluster {
            host: HeaderValue::from_str(&config.name)
                .unwrap_or_else(|_| HeaderValue::from_static("upstream")),
            name: config.name.as_str().into(),
            protocol: config.protocol,
            connect_timeout: config.connect_timeout,
            states: endpoints.iter().map(|e| e.state.clone()).collect(),
            endpoints,
            balancer: Selection::new(policy, &labels),
            hash_key: match &policy.balancing {
                BalancingPolicy::ConsistentHash { key, .. } => Some(key.clone()),
                _ => None,
            },
            ewma_decay: match policy.balancing {
                BalancingPolicy::LeastRequest { peak_ewma, .. } => peak_ewma,
                _ => None,
            },
            plain: matches!(policy.balancing, BalancingPolicy::RoundRobin)
                && !policy.filters_endpoints()
                && policy.slow_start.is_none(),
            tracks_load: !matches!(policy.balancing, BalancingPolicy::RoundRobin)
                || policy.filters_endpoints()
                || policy.circuit_breaker.max_requests.is_some(),
            policy: policy.clone(),
            limits,
            _checkers: checkers,
        })
    }

    /// The endpoints usable now, for the balancer.
    pub(crate) fn candidates(&self) -> Candidates<'_> {
        if self.policy.filters_endpoints() || self.policy.slow_start.is_some() {
            Candidates::usable(&self.states, &self.policy.weights, &self.policy)
        } else {
            Candidates::all(&self.states, &self.policy.weights)
        }
    }

    /// The order to try endpoints in for `req`: the balancer's pick first.
    fn order<B>(&self, req: &Request<B>, tried: Option<&TriedEndpoints>) -> Failover<'_> {
        if let (Some(round_robin), None) = (
            self.plain.then_some(()).and(self.balancer.round_robin()),
            tried,
        ) {
            // Round robin over endpoints that are all usable: what most clusters are.
            return Failover::starting_at(round_robin.next_turn(), self.endpoints.len());
        }
        let key = match &self.hash_key {
            Some(key) => balance::request_key(key, req),
            None => 0,
        };
        let candidates = self.candidates();
        let pick = self.balancer.pick(&candidates, key);
        let avoid = tried.map_or(0, |t| t.endpoints.load(Relaxed));
        Failover::new(candidates, pick, avoid)
    }

    /// The circuit breaker's active-request slot for one request.
    fn admit(&self) -> Result<Option<Slot>, GatewayError> {
        self.limits
            .take(Limit::Requests, self.policy.circuit_breaker.max_requests)
            .map_err(|limit| self.overflow(limit))
    }

    pub(crate) fn overflow(&self, limit: Limit) -> GatewayError {
        GatewayError::UpstreamOverflow {
            cluster: self.name.to_string(),
            limit: limit.key(),
        }
    }

    /// Tell outlier detection (if on) how a request to endpoint `index` went.
    fn report(&self, index: usize, outcome: Outcome) {
        let Some(settings) = &self.policy.outlier_detection else {
            return;
        };
        let state = &self.states[index];
        if state.observe(outcome, settings) {
            let now = endpoint::now_ms();
            let ejected = self.states.iter().filter(|s| s.is_ejected(now)).count();
            // Never eject past the maximum share: a cluster must not eject itself to zero.
            let allowed = self.states.len() * settings.max_ejection_percent as usize / 100;
            if ejected < allowed && !state.is_ejected(now) {
                tracing::warn!(cluster = %self.name, endpoint = %self.endpoints[index].label, ?outcome, "endpoint ejected");
                state.eject(settings, now);
            }
        }
    }

    /// Send one request to the cluster.
    pub(crate) async fn send(
        self: Arc<Self>,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, GatewayError> {
        let upgrade = req.extensions_mut().remove::<DownstreamUpgrade>();
        let tried = req.extensions_mut().remove::<TriedEndpoints>();
        if upgrade.is_some() || self.protocol == model::UpstreamProtocol::Http2 {
            // The less common paths are boxed so that their larger futures don't inflate the
            // state every HTTP/1.1 request carries (and copies).
            return Box::pin(self.send_other(req, upgrade, tried)).await;
        }
        // HTTP/1.1 over a warm pooled connection: the hot path, all in this one future.
        let admitted = self.admit()?;
        let order = self.order(&req, tried.as_ref());
        let mut req = to_http1(req, &self.host);
        let mut last_error = None;
        for (attempt, index) in order.enumerate() {
            let endpoint = &self.endpoints[index];
            if let Some(tried) = &tried {
                tried.mark(index, endpoint, attempt == 0);
            }
            let sent = Sent::new(endpoint, self.tracks_load, self.ewma_decay.is_some());
            if let Some(mut lease) = endpoint.checkout_http1().await {
                match lease.sender().try_send_request(req).await {
                    Ok(response) => {
                        return self.answered(index, response, Some(lease), sent, admitted)
                    }
                    // The pooled connection closed before our request went out: use a new one.
                    Err(mut error) => match error.take_message() {
                        Some(request) => req = request,
                        None => return Err(self.failed(index, error.into_error())),
                    },
                }
            }
            match Box::pin(self.send_on_new_connection(endpoint, req)).await {
                Attempt::Answered(response, lease) => {
                    return self.answered(index, response, lease, sent, admitted)
                }
                Attempt::Failed(error) => return Err(self.failed(index, error)),
                Attempt::Refused(error) => return Err(error),
                Attempt::NotSent(request, error) => {
                    self.not_sent(index, error, &mut last_error);
                    req = request;
                }
            }
        }
        Err(self.exhausted(last_error))
    }

    /// HTTP/2 upstreams and HTTP/1.1 upgrades, endpoint by endpoint.
    async fn send_other(
        &self,
        mut req: Request<Body>,
        upgrade: Option<DownstreamUpgrade>,
        tried: Option<TriedEndpoints>,
    ) -> Result<Response<Body>, GatewayError> {
        let admitted = self.admit()?;
        let order = self.order(&req, tried.as_ref());
        let mut last_error = None;
        for (attempt, index) in order.enumerate() {
            let endpoint = &self.endpoints[index];
            if let Some(tried) = &tried {
                tried.mark(index, endpoint, attempt == 0);
            }
            let sent = Sent::new(endpoint, self.tracks_load, self.ewma_decay.is_some());
            let outcome = match &upgrade {
                Some(client_side) if endpoint.protocol() == model::UpstreamProtocol::Http1 => {
                    self.send_upgrade(endpoint, req, client_side.clone()).await
                }
                _ => self.send_http2(endpoint, req).await,
            };
            match outcome {
                Attempt::Answered(response, lease) => {
                    return self.answered(index, response, lease, sent, admitted)
                }
                Attempt::Failed(error) => return Err(self.failed(index, error)),
                Attempt::Refused(error) => return Err(error),
                Attempt::NotSent(request, error) => {
                    self.not_sent(index, error, &mut last_error);
                    req = request;
                }
            }
        }
        Err(self.exhausted(last_error))
    }

    /// A response head arrived from endpoint `index`: note its latency and outcome, and
    /// pass it on with the request counted in flight until its body ends.
    fn answered(
        &self,
        index: usize,
        response: Response<Incoming>,
        lease: Option<Lease<Body>>,
        sent: Sent,
        admitted: Option<Slot>,
    ) -> Result<Response<Body>, GatewayError> {
        let endpoint = &self.endpoints[index];
        if let (Some(decay), Some(started)) = (
            self.ewma_decay,
            sent.in_flight.as_ref().and_then(InFlight::started),
        ) {
            endpoint.state.observe_latency(started.elapsed(), decay);
        }
        if self.policy.outlier_detection.is_some() {
            let outcome = if response.status().is_server_error() {
                Outcome::ServerError
            } else {
                Outcome::Success
            };
            self.report(index, outcome);
        }
        let in_flight = sent.in_flight.map(|mut in_flight| {
            in_flight.hold(admitted);
            in_flight
        });
        wrap(response, lease, endpoint, in_flight)
    }

    /// The request left for endpoint `index` and the exchange failed: a reset or a bad
    /// response is the endpoint's failure, a body the client did not finish is not.
    fn failed(&self, index: usize, error: hyper::Error) -> GatewayError {
        let error = GatewayError::from_upstream_send(error);
        if error.class().source == crate::error::Source::Upstream {
            self.report(index, Outcome::GatewayFailure);
        }
        error
    }

    /// No connection to endpoint `index`: the request may go to the next one (the reason is
    /// kept for the final error). An overflow is the gateway's limit, not the endpoint's
    /// failure.
    fn not_sent(&self, index: usize, error: ConnectError, last_error: &mut Option<ConnectError>) {
        tracing::debug!(cluster = %self.name, error = %error, "endpoint unavailable, trying the next");
        if !matches!(error, ConnectError::Overflow(_)) {
            self.report(index, Outcome::GatewayFailure);
        }
        *last_error = Some(error);
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
            Some(ConnectError::Overflow(limit)) => self.overflow(limit),
            None if self.endpoints.is_empty() => GatewayError::UpstreamConnect {
                cluster: self.name.to_string(),
                source: std::io::Error::other("the cluster has no endpoints"),
            },
            None => GatewayError::NoHealthyUpstream {
                cluster: self.name.to_string(),
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
            Ok(response) => Attempt::Answered(response, Some(lease)),
            Err(mut error) => match error.take_message() {
                // Closed right after the handshake, before anything was written.
                Some(request) => Attempt::NotSent(
                    request,
                    ConnectError::Handshake {
                        endpoint: endpoint.label.to_string(),
                        source: error.into_error(),
                    },
                ),
                None => Attempt::Failed(error.into_error()),
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
                Attempt::Answered(response, None)
            }
            Err(error) => Attempt::Failed(error),
        }
    }

    async fn send_http2(&self, endpoint: &Arc<EndpointPool<Body>>, req: Request<Body>) -> Attempt {
        let mut req = match to_http2(req, endpoint) {
            Ok(req) => req,
            Err(error) => return Attempt::Refused(error),
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
                Ok(response) => return Attempt::Answered(response, None),
                Err(mut error) => match error.take_message() {
                    Some(request) => req = request,
                    None => return Attempt::Failed(error.into_error()),
                },
            }
        }
        Attempt::Refused(GatewayError::UpstreamConnect {
            cluster: self.name.to_string(),
            source: std::io::Error::other(
                "the HTTP/2 connection closed before the request was sent",
            ),
        })
    }
}

/// A request on its way to one endpoint: counted in flight, and timed when the balancer
/// weighs latency.
struct Sent {
    in_flight: Option<InFlight>,
}

impl Sent {
    fn new(endpoint: &EndpointPool<Body>, tracked: bool, timed: bool) -> Sent {
        Sent {
            in_flight: tracked.then(|| {
                endpoint.state.counters.requests.fetch_add(1, Relaxed);
                endpoint.state.start_request(timed)
            }),
        }
    }
}

/// How an attempt at one endpoint ended.
enum Attempt {
    /// A response head (and the pooled connection it came on, if it goes back to a pool).
    Answered(Response<Incoming>, Option<Lease<Body>>),
    /// The request left and the exchange failed.
    Failed(hyper::Error),
    /// The gateway could not make the request for this endpoint.
    Refused(GatewayError),
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
    in_flight: Option<InFlight>,
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
        body: UpstreamBody::new(incoming, lease, label, in_flight.map(Box::new)),
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
