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
//! limits at once. A retry (the route's `retry`, `middleware/retry.rs`, run by
//! [`Upstream`]) names the endpoints it already tried ([`TriedEndpoints`]) and they come
//! last. Settings: `policy.rs`; what the admin listener shows: `report.rs`.
//!
//! Clusters are built with each runtime; their endpoints' open connections, states and
//! health checkers are carried over by a reload (resources per endpoint: connections kept
//! while its protocol and TLS settings stay the same, state while the endpoint stays,
//! checkers while their settings stay), so pooled connections and health survive reloads.

pub(crate) mod balance;
mod discovery;
pub(crate) mod endpoint;
mod health;
pub(crate) mod limits;
pub(crate) mod policy;
pub(crate) mod pool;
pub(crate) mod report;
pub(crate) mod tls;
mod tunnel;

use crate::body::{Body, BodyFailure, UpstreamBody};
use crate::config::model;
use crate::error::GatewayError;
use crate::forwarding::{strip_hop_by_hop, Framing};
use crate::metrics::Metrics;
use crate::middleware::retry::Retrying;
use crate::resources::ResourceCarry;
use arc_swap::ArcSwap;
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

/// What a cluster's DNS discovery is made from: what it resolves, how its endpoints connect
/// and are checked.
type DiscoveryConfig = (
    policy::Dns,
    Vec<model::Endpoint>,
    ConnectionIdentity,
    Option<policy::HealthCheck>,
);

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

/// The endpoints a cluster has at one moment, with what picks among them. A DNS cluster
/// gets a new set whenever its names resolve to other addresses; a request keeps the set
/// it started with.
pub(crate) struct EndpointSet {
    pub(crate) pools: Vec<Arc<EndpointPool<Body>>>,
    /// The endpoints' states, in the same order (what the balancer reads).
    states: Vec<Arc<EndpointState>>,
    pub(crate) weights: Vec<u32>,
    balancer: Selection,
    /// The health checkers of these endpoints (they run while this is held).
    _checkers: Vec<Arc<health::Checker>>,
}

/// A cluster's endpoints: as configured, or following DNS discovery.
enum Endpoints {
    Static(EndpointSet),
    Dynamic {
        current: Arc<ArcSwap<EndpointSet>>,
        /// Keeps the discovery (and its resolver task) alive while this runtime lives.
        _discovery: Arc<discovery::Discovery>,
        /// Swaps in a new set when the discovered addresses change; stopped with the cluster.
        follower: Option<tokio::task::AbortHandle>,
    },
}

impl Drop for Endpoints {
    fn drop(&mut self) {
        if let Endpoints::Dynamic {
            follower: Some(follower),
            ..
        } = self
        {
            follower.abort();
        }
    }
}

/// The endpoint set a request uses: borrowed from a static cluster, shared with a dynamic
/// one's current set.
pub(crate) enum CurrentSet<'a> {
    Borrowed(&'a EndpointSet),
    Shared(Arc<EndpointSet>),
}

impl std::ops::Deref for CurrentSet<'_> {
    type Target = EndpointSet;

    fn deref(&self) -> &EndpointSet {
        match self {
            CurrentSet::Borrowed(set) => set,
            CurrentSet::Shared(set) => set,
        }
    }
}

/// What making an endpoint of a cluster takes, kept by a DNS cluster's follower task.
struct EndpointMaker {
    cluster: String,
    protocol: model::UpstreamProtocol,
    connect_timeout: std::time::Duration,
    pool: model::PoolSettings,
    metrics: Arc<crate::metrics::ClusterMetrics>,
    tls: Option<Arc<UpstreamTls>>,
    limits: Arc<ClusterLimits>,
    policy: ClusterPolicy,
    /// The configured endpoints (for TLS names and weights of discovered ones).
    configured: Vec<model::Endpoint>,
}

impl EndpointMaker {
    fn pool(
        &self,
        address: model::Endpoint,
        configured: &model::Endpoint,
        state: Arc<EndpointState>,
        connections: Arc<Connections<Body>>,
    ) -> Result<Arc<EndpointPool<Body>>, UpstreamTlsError> {
        let tls = match &self.tls {
            // A discovered address is verified against the name it was found under.
            Some(tls) => Some((tls.clone(), tls.server_name_for(configured)?)),
            None => None,
        };
        Ok(Arc::new(EndpointPool::new(
            address,
            PoolSetup {
                protocol: self.protocol,
                connect_timeout: self.connect_timeout,
                settings: self.pool.clone(),
                metrics: self.metrics.clone(),
                tls,
                connections,
                state,
                limits: self.limits.clone(),
                max_connections: self.policy.circuit_breaker.max_connections,
                max_pending: self.policy.circuit_breaker.max_pending_requests,
            },
        )))
    }

    fn checker(&self, pool: &Arc<EndpointPool<Body>>) -> Option<Arc<health::Checker>> {
        let check = self.policy.health_check.as_ref()?;
        Some(Arc::new(health::Checker::start(
            pool.clone(),
            check.clone(),
            HeaderValue::from_str(&self.cluster).ok(),
        )))
    }

    fn set(
        &self,
        pools: Vec<Arc<EndpointPool<Body>>>,
        weights: Vec<u32>,
        checkers: Vec<Arc<health::Checker>>,
    ) -> EndpointSet {
        let labels: Vec<String> = pools.iter().map(|p| p.label.to_string()).collect();
        let mut policy = self.policy.clone();
        policy.weights = weights;
        EndpointSet {
            states: pools.iter().map(|p| p.state.clone()).collect(),
            balancer: Selection::new(&policy, &labels),
            weights: policy.weights,
            pools,
            _checkers: checkers,
        }
    }

    /// The set for the discovered `addresses`, reusing the members that stay.
    fn discovered(
        &self,
        discovery: &discovery::Discovery,
        addresses: &[discovery::Resolved],
    ) -> EndpointSet {
        let mut pools = Vec::with_capacity(addresses.len());
        let mut weights = Vec::with_capacity(addresses.len());
        let mut checkers = Vec::new();
        let members = discovery.members(addresses, |_| discovery::Member {
            state: Arc::new(EndpointState::default()),
            connections: Arc::new(Connections::default()),
            checker: None,
        });
        for (resolved, member) in addresses.iter().zip(members) {
            let configured = &self.configured[resolved.configured];
            let address = model::Endpoint {
                host: resolved.address.ip().to_string(),
                port: resolved.address.port(),
            };
            let pool = match self.pool(
                address,
                configured,
                member.state.clone(),
                member.connections.clone(),
            ) {
                Ok(pool) => pool,
                Err(error) => {
                    tracing::warn!(cluster = %self.cluster, error = %error, "discovered endpoint left out");
                    continue;
                }
            };
            let checker = match &member.checker {
                Some(checker) => Some(checker.clone()),
                None => {
                    let checker = self.checker(&pool);
                    if let Some(checker) = &checker {
                        let mut all = discovery
                            .members
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        if let Some(entry) = all.get_mut(resolved) {
                            entry.checker = Some(checker.clone());
                        }
                    }
                    checker
                }
            };
            checkers.extend(checker);
            weights.push(
                self.policy
                    .weights
                    .get(resolved.configured)
                    .copied()
                    .unwrap_or(1),
            );
            pools.push(pool);
        }
        self.set(pools, weights, checkers)
    }
}

pub(crate) struct Cluster {
    pub(crate) name: Arc<str>,
    /// The Host sent for requests that came without one.
    host: HeaderValue,
    protocol: model::UpstreamProtocol,
    connect_timeout: std::time::Duration,
    endpoints: Endpoints,
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
        let maker = EndpointMaker {
            cluster: config.name.clone(),
            protocol: config.protocol,
            connect_timeout: config.connect_timeout,
            pool: config.pool.clone(),
            metrics: metrics.cluster(&config.name),
            tls,
            limits: limits.clone(),
            policy: policy.clone(),
            configured: config.endpoints.clone(),
        };
        let endpoints = match &policy.dns {
            None => Endpoints::Static(Self::static_set(config, &maker, &identity, carry)?),
            Some(dns) => {
                // One discovery per cluster, kept while what it resolves and how it
                // connects stay the same.
                let discovery_config: DiscoveryConfig = (
                    dns.clone(),
                    config.endpoints.clone(),
                    identity,
                    policy.health_check.clone(),
                );
                // A reload that changes it starts the new discovery from the old one's
                // addresses and endpoints, so the cluster is not empty until the first answer.
                let seed = carry
                    .previous::<DiscoveryConfig, discovery::Discovery>(
                        "dns_discovery",
                        &config.name,
                    )
                    .filter(|(previous, _)| *previous != discovery_config)
                    .map(|(previous, old)| {
                        let keep = discovery::Keep {
                            connections: previous.2 == discovery_config.2,
                            checkers: previous.2 == discovery_config.2
                                && previous.3 == discovery_config.3,
                            checked: policy.health_check.is_some(),
                        };
                        old.seed(&previous.1, &config.endpoints, &keep)
                    })
                    .unwrap_or_default();
                let discovery = carry
                    .obtain("dns_discovery", &config.name, &discovery_config, || {
                        Ok::<_, Infallible>(discovery::Discovery::start(
                            &config.name,
                            &config.endpoints,
                            dns,
                            seed,
                        ))
                    })
                    .unwrap_or_else(|never| match never {});
                let first = discovery.addresses.borrow().clone();
                let current = Arc::new(ArcSwap::from_pointee(maker.discovered(&discovery, &first)));
                let follower = follow(discovery.clone(), maker, current.clone());
                Endpoints::Dynamic {
                    current,
                    _discovery: discovery,
                    follower,
                }
            }
        };
        Ok(Cluster {
            host: HeaderValue::from_str(&config.name)
                .unwrap_or_else(|_| HeaderValue::from_static("upstream")),
            name: config.name.as_str().into(),
            protocol: config.protocol,
            connect_timeout: config.connect_timeout,
            endpoints,
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
        })
    }

    /// The endpoints as configured, with their state, connections and checkers from
    /// `carry`.
    fn static_set(
        config: &model::Cluster,
        maker: &EndpointMaker,
        identity: &ConnectionIdentity,
        carry: &mut ResourceCarry<'_>,
    ) -> Result<EndpointSet, UpstreamTlsError> {
        let mut pools = Vec::with_capacity(config.endpoints.len());
        let mut checkers = Vec::new();
        for endpoint in &config.endpoints {
            let name = format!("{}/{endpoint}", config.name);
            let connections = carry
                .obtain("upstream_connections", &name, identity, || {
                    Ok::<_, Infallible>(Connections::<Body>::default())
                })
                .unwrap_or_else(|never| match never {});
            // Kept as long as the endpoint stays in its cluster, whatever else changes.
            let state = carry
                .obtain("endpoint_state", &name, &(), || {
                    Ok::<_, Infallible>(EndpointState::default())
                })
                .unwrap_or_else(|never| match never {});
            let pool = maker.pool(endpoint.clone(), endpoint, state.clone(), connections)?;
            if let Some(check) = &config.policy.health_check {
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
            pools.push(pool);
        }
        Ok(maker.set(pools, config.policy.weights.clone(), checkers))
    }

    /// The endpoints now.
    pub(crate) fn endpoints(&self) -> CurrentSet<'_> {
        match &self.endpoints {
            Endpoints::Static(set) => CurrentSet::Borrowed(set),
            Endpoints::Dynamic { current, .. } => CurrentSet::Shared(current.load_full()),
        }
    }

    /// The endpoints of `set` usable now, for the balancer.
    pub(crate) fn candidates<'s>(&self, set: &'s EndpointSet) -> Candidates<'s> {
        if self.policy.filters_endpoints() || self.policy.slow_start.is_some() {
            Candidates::usable(&set.states, &set.weights, &self.policy)
        } else {
            Candidates::all(&set.states, &set.weights)
        }
    }

    /// The order to try `set`'s endpoints in for `req`: the balancer's pick first.
    fn order<'s, B>(
        &self,
        set: &'s EndpointSet,
        req: &Request<B>,
        tried: Option<&TriedEndpoints>,
    ) -> Failover<'s> {
        if let (Some(round_robin), None) = (
            self.plain.then_some(()).and(set.balancer.round_robin()),
            tried,
        ) {
            // Round robin over endpoints that are all usable: what most clusters are.
            return Failover::starting_at(round_robin.next_turn(), set.pools.len());
        }
        let key = match &self.hash_key {
            Some(key) => balance::request_key(key, req),
            None => 0,
        };
        let candidates = self.candidates(set);
        let pick = set.balancer.pick(&candidates, key);
        let avoid = tried.map_or(0, |t| t.endpoints.load(Relaxed));
        Failover::new(candidates, pick, avoid)
    }

    /// The cluster's balancer hashes on the client (its address, or its consumer with the
    /// address as fallback): routes to it carry the client address in their context.
    pub(crate) fn hashes_on_client(&self) -> bool {
        matches!(self.hash_key, Some(HashKey::ClientIp | HashKey::Consumer))
    }

    /// The cluster's balancer hashes on the caller's consumer: routes to it share the
    /// identity auth establishes with the balancer.
    pub(crate) fn hashes_on_consumer(&self) -> bool {
        matches!(self.hash_key, Some(HashKey::Consumer))
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
    fn report(&self, set: &EndpointSet, index: usize, outcome: Outcome) {
        let Some(settings) = &self.policy.outlier_detection else {
            return;
        };
        let state = &set.states[index];
        if state.observe(outcome, settings) {
            let now = endpoint::now_ms();
            let ejected = set.states.iter().filter(|s| s.is_ejected(now)).count();
            // Never eject past the maximum share: a cluster must not eject itself to zero.
            let allowed = set.states.len() * settings.max_ejection_percent as usize / 100;
            if ejected < allowed && !state.is_ejected(now) {
                tracing::warn!(cluster = %self.name, endpoint = %set.pools[index].label, ?outcome, "endpoint ejected");
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
            // An HTTP/2 upstream client resets the stream when the gateway cuts a request
            // body off (over the size limit, too slow) and the reason is lost on the way:
            // the body's progress keeps it.
            let progress = match req.body_mut() {
                Body::Client { body } => Some(body.progress()),
                _ => None,
            };
            // The less common paths are boxed so that their larger futures don't inflate the
            // state every HTTP/1.1 request carries (and copies).
            let result = Box::pin(self.send_other(req, upgrade, tried)).await;
            return match progress.and_then(|progress| progress.failure()) {
                Some(BodyFailure::TooLarge { limit }) => {
                    Err(GatewayError::PayloadTooLarge { limit })
                }
                Some(BodyFailure::Timeout(budget)) => Err(GatewayError::RequestBodyTimeout(budget)),
                None => result,
            };
        }
        // HTTP/1.1 over a warm pooled connection: the hot path, all in this one future.
        let admitted = self.admit()?;
        let set = self.endpoints();
        let order = self.order(&set, &req, tried.as_ref());
        // Into the argument's own place: a second binding would be a second request-sized
        // slot in this future.
        req = to_http1(req, &self.host);
        let mut last_error = None;
        for (attempt, index) in order.enumerate() {
            let endpoint = &set.pools[index];
            if let Some(tried) = &tried {
                tried.mark(index, endpoint, attempt == 0);
            }
            let sent = Sent::new(endpoint, self.tracks_load, self.ewma_decay.is_some());
            if let Some(mut lease) = endpoint.checkout_http1().await {
                match lease.sender().try_send_request(req).await {
                    Ok(response) => {
                        return self.answered(&set, index, response, Some(lease), sent, admitted)
                    }
                    // The pooled connection closed before our request went out: use a new one.
                    Err(mut error) => match error.take_message() {
                        Some(request) => req = request,
                        None => return Err(self.failed(&set, index, error.into_error())),
                    },
                }
            }
            match Box::pin(self.send_on_new_connection(endpoint, req)).await {
                Attempt::Answered(response, lease) => {
                    return self.answered(&set, index, response, lease, sent, admitted)
                }
                Attempt::Failed(error) => return Err(self.failed(&set, index, error)),
                Attempt::Refused(error) => return Err(error),
                Attempt::NotSent(request, error) => {
                    self.not_sent(&set, index, error, &mut last_error);
                    req = request;
                }
            }
        }
        Err(self.exhausted(&set, last_error))
    }

    /// HTTP/2 upstreams and HTTP/1.1 upgrades, endpoint by endpoint.
    async fn send_other(
        &self,
        mut req: Request<Body>,
        upgrade: Option<DownstreamUpgrade>,
        tried: Option<TriedEndpoints>,
    ) -> Result<Response<Body>, GatewayError> {
        let admitted = self.admit()?;
        let set = self.endpoints();
        let order = self.order(&set, &req, tried.as_ref());
        let mut last_error = None;
        for (attempt, index) in order.enumerate() {
            let endpoint = &set.pools[index];
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
                    return self.answered(&set, index, response, lease, sent, admitted)
                }
                Attempt::Failed(error) => return Err(self.failed(&set, index, error)),
                Attempt::Refused(error) => return Err(error),
                Attempt::NotSent(request, error) => {
                    self.not_sent(&set, index, error, &mut last_error);
                    req = request;
                }
            }
        }
        Err(self.exhausted(&set, last_error))
    }

    /// A response head arrived from endpoint `index`: note its latency and outcome, and
    /// pass it on with the request counted in flight until its body ends.
    fn answered(
        &self,
        set: &EndpointSet,
        index: usize,
        response: Response<Incoming>,
        lease: Option<Lease<Body>>,
        sent: Sent,
        admitted: Option<Slot>,
    ) -> Result<Response<Body>, GatewayError> {
        let endpoint = &set.pools[index];
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
            self.report(set, index, outcome);
        }
        let in_flight = sent.in_flight.map(|mut in_flight| {
            in_flight.hold(admitted);
            in_flight
        });
        wrap(response, lease, endpoint, in_flight)
    }

    /// The request left for endpoint `index` and the exchange failed: a reset or a bad
    /// response is the endpoint's failure, a body the client did not finish is not.
    fn failed(&self, set: &EndpointSet, index: usize, error: hyper::Error) -> GatewayError {
        let error = GatewayError::from_upstream_send(error);
        if error.class().source == crate::error::Source::Upstream {
            self.report(set, index, Outcome::GatewayFailure);
        }
        error
    }

    /// No connection to endpoint `index`: the request may go to the next one (the reason is
    /// kept for the final error). An overflow is the gateway's limit, not the endpoint's
    /// failure.
    fn not_sent(
        &self,
        set: &EndpointSet,
        index: usize,
        error: ConnectError,
        last_error: &mut Option<ConnectError>,
    ) {
        tracing::debug!(cluster = %self.name, error = %error, "endpoint unavailable, trying the next");
        if !matches!(error, ConnectError::Overflow(_)) {
            self.report(set, index, Outcome::GatewayFailure);
        }
        *last_error = Some(error);
    }

    /// The error once every endpoint has refused a connection.
    fn exhausted(&self, set: &EndpointSet, last_error: Option<ConnectError>) -> GatewayError {
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
            None if set.pools.is_empty() => GatewayError::UpstreamConnect {
                cluster: self.name.to_string(),
                source: std::io::Error::other(if self.policy.dns.is_some() {
                    "the cluster's names resolve to no address (yet)"
                } else {
                    "the cluster has no endpoints"
                }),
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
        let mut lease = match endpoint.connect_http1(false, pool::Opener::Request).await {
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
        let mut lease = match endpoint.connect_http1(true, pool::Opener::Request).await {
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

/// Follow `discovery`: a new endpoint set for every new list of addresses.
fn follow(
    discovery: Arc<discovery::Discovery>,
    maker: EndpointMaker,
    current: Arc<ArcSwap<EndpointSet>>,
) -> Option<tokio::task::AbortHandle> {
    let mut addresses = discovery.addresses.clone();
    let task = async move {
        while addresses.changed().await.is_ok() {
            let list = addresses.borrow_and_update().clone();
            current.store(Arc::new(maker.discovered(&discovery, &list)));
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => Some(runtime.spawn(task).abort_handle()),
        Err(_) => {
            tracing::warn!("no runtime to follow DNS discovery on");
            None
        }
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
    /// The route's retries (`middleware/retry.rs`); `None` = one call to the cluster.
    retrying: Option<Arc<Retrying>>,
}

impl Upstream {
    pub(crate) fn new(cluster: Arc<Cluster>, retrying: Option<Arc<Retrying>>) -> Upstream {
        Upstream { cluster, retrying }
    }

    /// The cluster, when a call is one call to it (no retries): the caller may then drive
    /// [`Cluster::send`]'s future in place instead of through the boxed [`Service`] future.
    pub(crate) fn direct(&self) -> Option<&Arc<Cluster>> {
        match self.retrying {
            None => Some(&self.cluster),
            Some(_) => None,
        }
    }
}

impl tower_service::Service<Request<Body>> for Upstream {
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = crate::middleware::BoxedAnswer;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        match &self.retrying {
            None => Box::pin(self.cluster.clone().send(req)),
            Some(retrying) => Box::pin(crate::middleware::retry::tries(retrying.clone(), req)),
        }
    }
}
