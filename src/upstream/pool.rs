//! Connections to one upstream endpoint: dialing, HTTP handshakes and the idle pool.
//!
//! On the request path: the upstream service (`upstream/mod.rs`) takes a connection from here
//! for every request it forwards.
//!
//! HTTP/1.1 connections are `hyper::client::conn` senders kept in a small LIFO stack per
//! endpoint (the most recently used connection is the warmest and least likely to have been
//! closed by the backend). A sender leaves the stack for exactly one exchange and comes back
//! through [`Lease::release`] when the response body has been read to its end. HTTP/2 (h2c)
//! endpoints share one multiplexed connection, replaced when it closes. Each connection's
//! driver runs in its own task, spawned once per connection, never per request.
//!
//! The idle connections of an endpoint ([`Connections`]) are a reload-surviving resource:
//! a reload that keeps the endpoint with the same protocol and TLS settings keeps its warm
//! connections, whatever else changed. Generic over the request body type, so this module
//! knows nothing of the gateway's bodies.

use crate::config::model::{Endpoint, PoolSettings, UpstreamProtocol};
use crate::metrics::ClusterMetrics;
use crate::upstream::endpoint::EndpointState;
use crate::upstream::limits::{ClusterLimits, Limit, Slot};
use crate::upstream::tls::{UpstreamIo, UpstreamTls};
use bytes::Bytes;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connection to {endpoint} failed")]
    Io {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connection to {endpoint} timed out")]
    Timeout { endpoint: String },
    #[error("TLS with {endpoint} failed")]
    Tls {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP handshake with {endpoint} failed")]
    Handshake {
        endpoint: String,
        #[source]
        source: hyper::Error,
    },
    #[error("the cluster's {} limit is reached", .0.key())]
    Overflow(Limit),
}

struct Idle<B> {
    sender: http1::SendRequest<B>,
    since: Instant,
}

/// The open connections of one endpoint: the idle HTTP/1.1 stack and the shared HTTP/2
/// connection.
pub(crate) struct Connections<B> {
    idle: Mutex<Vec<Idle<B>>>,
    h2: Mutex<Option<http2::SendRequest<B>>>,
}

impl<B> Default for Connections<B> {
    fn default() -> Self {
        Connections {
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
        }
    }
}

/// The pool of one endpoint.
pub(crate) struct EndpointPool<B> {
    pub(crate) endpoint: Endpoint,
    /// `host:port` as text, for logs.
    pub(crate) label: Arc<str>,
    /// Resolved once when the endpoint is an IP literal; DNS names resolve per new connection.
    literal: Option<SocketAddr>,
    protocol: UpstreamProtocol,
    connect_timeout: Duration,
    settings: PoolSettings,
    connections: Arc<Connections<B>>,
    metrics: Arc<ClusterMetrics>,
    /// The cluster's TLS client and the name this endpoint is verified against.
    tls: Option<(Arc<UpstreamTls>, ServerName<'static>)>,
    /// Health, ejection and load, kept across reloads.
    pub(crate) state: Arc<EndpointState>,
    /// The cluster's connection and pending-request counts, and their maxima.
    limits: Arc<ClusterLimits>,
    max_connections: Option<u64>,
    max_pending: Option<u64>,
}

/// One checked-out HTTP/1.1 connection. Dropping it without [`Lease::release`] closes it
/// (the right thing for a connection whose response was not read to the end).
pub(crate) struct Lease<B> {
    pool: Arc<EndpointPool<B>>,
    sender: http1::SendRequest<B>,
}

impl<B> Lease<B> {
    pub(crate) fn release(self) {
        self.pool.put_back(self.sender);
    }

    pub(crate) fn sender(&mut self) -> &mut http1::SendRequest<B> {
        &mut self.sender
    }
}

/// Where a new pool finds its endpoint and how it connects to it.
pub(crate) struct PoolSetup<B> {
    pub(crate) protocol: UpstreamProtocol,
    pub(crate) connect_timeout: Duration,
    pub(crate) settings: PoolSettings,
    pub(crate) metrics: Arc<ClusterMetrics>,
    pub(crate) tls: Option<(Arc<UpstreamTls>, ServerName<'static>)>,
    /// The endpoint's open connections, kept from the previous runtime when possible.
    pub(crate) connections: Arc<Connections<B>>,
    pub(crate) state: Arc<EndpointState>,
    pub(crate) limits: Arc<ClusterLimits>,
    pub(crate) max_connections: Option<u64>,
    pub(crate) max_pending: Option<u64>,
}

impl<B> EndpointPool<B> {
    fn put_back(&self, sender: http1::SendRequest<B>) {
        if sender.is_closed() {
            return;
        }
        let mut stack = self
            .connections
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if stack.len() < self.settings.max_idle_per_endpoint {
            stack.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Whether this endpoint is reached over TLS (HTTP/2 requests then say `:scheme https`).
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub(crate) fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }
}

impl<B> EndpointPool<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub(crate) fn new(endpoint: Endpoint, with: PoolSetup<B>) -> EndpointPool<B> {
        let PoolSetup {
            protocol,
            connect_timeout,
            settings,
            metrics,
            tls,
            connections,
            state,
            limits,
            max_connections,
            max_pending,
        } = with;
        let literal = endpoint
            .host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, endpoint.port));
        EndpointPool {
            label: endpoint.to_string().into(),
            endpoint,
            literal,
            protocol,
            connect_timeout,
            settings,
            connections,
            metrics,
            tls,
            state,
            limits,
            max_connections,
            max_pending,
        }
    }

    /// A warm HTTP/1.1 connection from the pool, if one is alive and ready.
    pub(crate) async fn checkout_http1(self: &Arc<Self>) -> Option<Lease<B>> {
        loop {
            let idle = {
                let mut stack = self
                    .connections
                    .idle
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                stack.pop()
            }?;
            let mut sender = idle.sender;
            if sender.is_closed() || idle.since.elapsed() > self.settings.idle_timeout {
                continue;
            }
            // Normally ready at once; a connection that just finished its previous exchange
            // may need its driver to run first. An error means it closed: try the next one.
            if sender.ready().await.is_ok() {
                return Some(Lease {
                    pool: self.clone(),
                    sender,
                });
            }
        }
    }

    /// A new HTTP/1.1 connection. With `upgrades`, the connection can be taken over after a
    /// `101 Switching Protocols` (WebSocket); such a connection never returns to the pool.
    pub(crate) async fn connect_http1(
        self: &Arc<Self>,
        upgrades: bool,
        opener: Opener,
    ) -> Result<Lease<B>, ConnectError> {
        let (io, slot) = self.dial(opener).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|source| ConnectError::Handshake {
                endpoint: self.label.to_string(),
                source,
            })?;
        if upgrades {
            spawn_driver(self.label.clone(), conn.with_upgrades(), slot);
        } else {
            spawn_driver(self.label.clone(), conn, slot);
        }
        Ok(Lease {
            pool: self.clone(),
            sender,
        })
    }

    /// The shared HTTP/2 connection, opened on first use and replaced once it has closed.
    pub(crate) async fn http2_sender(
        self: &Arc<Self>,
    ) -> Result<http2::SendRequest<B>, ConnectError> {
        {
            let shared = self
                .connections
                .h2
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(sender) = shared.as_ref().filter(|s| !s.is_closed()) {
                return Ok(sender.clone());
            }
        }
        let sender = self.open_http2(Opener::Request).await?;
        *self
            .connections
            .h2
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(sender.clone());
        Ok(sender)
    }

    /// A new HTTP/2 connection of a health probe's own, never shared with requests (so that
    /// it need not count against the circuit breaker).
    pub(crate) async fn connect_http2_for_probe(
        &self,
    ) -> Result<http2::SendRequest<B>, ConnectError> {
        self.open_http2(Opener::Probe).await
    }

    /// A new HTTP/2 connection, its driver running in a task of its own.
    async fn open_http2(&self, opener: Opener) -> Result<http2::SendRequest<B>, ConnectError> {
        let (io, slot) = self.dial(opener).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(io)
            .await
            .map_err(|source| ConnectError::Handshake {
                endpoint: self.label.to_string(),
                source,
            })?;
        spawn_driver(self.label.clone(), conn, slot);
        Ok(sender)
    }

    /// TCP connect, then the TLS handshake for a TLS cluster; both within the connect
    /// timeout. For a request, the cluster's circuit breaker counts the wait as a pending
    /// request and the connection as open until its driver ends (the returned slot); either
    /// limit reached fails at once.
    pub(crate) async fn dial(
        &self,
        opener: Opener,
    ) -> Result<(TokioIo<UpstreamIo>, Option<Slot>), ConnectError> {
        let (_pending, slot) = match opener {
            Opener::Request => (
                self.limits
                    .take(Limit::PendingRequests, self.max_pending)
                    .map_err(ConnectError::Overflow)?,
                self.limits
                    .take(Limit::Connections, self.max_connections)
                    .map_err(ConnectError::Overflow)?,
            ),
            Opener::Probe => (None, None),
        };
        let attempt = async {
            let stream = match self.literal {
                Some(addr) => TcpStream::connect(addr).await,
                None => TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port)).await,
            }
            .map_err(|source| ConnectError::Io {
                endpoint: self.label.to_string(),
                source,
            })?;
            // Small request/response exchanges: don't let Nagle hold back the last segment.
            let _ = stream.set_nodelay(true);
            match &self.tls {
                None => Ok(UpstreamIo::Plain(stream)),
                Some((tls, name)) => match tls.connect(name.clone(), stream).await {
                    Ok(stream) => Ok(UpstreamIo::Tls(Box::new(stream))),
                    Err(source) => {
                        self.metrics.tls_errors.fetch_add(1, Relaxed);
                        Err(ConnectError::Tls {
                            endpoint: self.label.to_string(),
                            source,
                        })
                    }
                },
            }
        };
        let stream = match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                self.metrics.connect_errors.fetch_add(1, Relaxed);
                return Err(error);
            }
            Err(_) => {
                self.metrics.connect_errors.fetch_add(1, Relaxed);
                return Err(ConnectError::Timeout {
                    endpoint: self.label.to_string(),
                });
            }
        };
        self.metrics.connections_opened.fetch_add(1, Relaxed);
        Ok((TokioIo::new(stream), slot))
    }
}

/// Who a new connection is opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opener {
    /// Requests: it counts against the cluster's circuit breaker.
    Request,
    /// The gateway's own health probe: it does not, so that a breaker full of requests
    /// neither refuses a probe nor, through that, marks a healthy endpoint unhealthy.
    Probe,
}

/// Run an upstream connection's driver in its own task (once per connection); the
/// connection counts against its cluster's `max_connections` until it ends.
fn spawn_driver<F>(upstream: Arc<str>, connection: F, slot: Option<Slot>)
where
    F: std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        let _open = slot;
        if let Err(error) = connection.await {
            tracing::debug!(upstream = %upstream, error = %error, "upstream connection ended");
        }
    });
}
