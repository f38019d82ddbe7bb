//! Listeners, connections and the gateway's lifecycle: bind, serve, reload, drain.
//!
//! [`Gateway::bind`] binds every listener (and the admin listener) up front, so a caller —
//! `main`, or a test using `127.0.0.1:0` — knows the real addresses before serving starts.
//! [`Gateway::run`] accepts connections until its shutdown future resolves, then stops
//! accepting, asks every connection to finish its in-flight requests (HTTP/2 gets a
//! GOAWAY, idle HTTP/1.1 connections close at once) and waits up to the drain deadline.
//!
//! A plaintext connection first waits for its client's first bytes in a small task of its
//! own ([`await_first_bytes`]), within the header budget, so that a connection that never
//! sends anything holds little more than its socket. Then each connection is one task: on a
//! TLS listener, first the handshake ([`tls`]); then the
//! (decrypted) stream wrapped in the connection guard and served by hyper's HTTP/1.1 or
//! HTTP/2 server — HTTP/2 when ALPN agreed on `h2`, or on cleartext when the client starts
//! with the HTTP/2 preface (h2c prior knowledge). A companion watchdog task per connection
//! holds its one timer (header-read and idle budgets) and the shutdown signal while the
//! connection is served; a parked HTTP/1.1 connection ([`Parked`]) is a single task that
//! holds both itself.

pub(crate) mod conn_guard;
mod idle_trim;
pub(crate) mod tls;

use crate::admin;
use crate::config::model::Listener;
use crate::config::Config;
use crate::context::{ClientConnection, ListenerContext};
use crate::error::GatewayError;
use crate::gateway;
use crate::lifecycle::{stopped, Background};
use crate::metrics::Metrics;
use crate::reload::{self, ReloadHandle};
use crate::runtime::{BuildError, Runtime, Shared};
use bytes::Bytes;
use conn_guard::{Close, ConnState, GuardedIo, WatchdogDecision};
use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tls::{CertificateReloader, TlsListener};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener's address could not be bound.
    #[error("cannot listen on {address} (listener {name})")]
    Bind {
        /// The listener's name (`admin` for the admin listener).
        name: String,
        /// The address from the config.
        address: SocketAddr,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The runtime (clusters, access log) could not be built from the config.
    #[error("cannot set up the configuration")]
    Build(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A listener's certificates did not load.
    #[error("cannot load the TLS certificates of listener {name}")]
    Tls {
        /// The listener's name.
        name: String,
        /// Why the files did not load.
        #[source]
        source: tls::TlsLoadError,
    },
    /// The background thread (where reloads run) could not be started.
    #[error("cannot start the background thread")]
    Background(#[source] std::io::Error),
}

impl From<BuildError> for StartError {
    fn from(error: BuildError) -> StartError {
        StartError::Build(Box::new(error))
    }
}

struct BoundListener {
    context: Arc<ListenerContext>,
    listener: TcpListener,
    tls: Option<Arc<TlsListener>>,
}

/// A gateway with its sockets bound, ready to [`run`](Gateway::run).
pub struct Gateway {
    shared: Arc<Shared>,
    listeners: Vec<BoundListener>,
    admin: Option<TcpListener>,
    reload: ReloadHandle,
    certificates: CertificateReloader,
}

impl Gateway {
    /// Build the runtime from `config` and bind every listener. `config_path` enables reloads
    /// (SIGHUP and the file watch) from that file.
    pub async fn bind(config: Config, config_path: Option<PathBuf>) -> Result<Gateway, StartError> {
        let metrics = Metrics::default();
        let mut listeners = Vec::with_capacity(config.listeners.len());
        let mut tls_listeners = Vec::new();
        for listener in &config.listeners {
            // Certificates first: a listener whose files do not load never binds.
            let tls = match &listener.tls {
                Some(settings) => {
                    let loaded =
                        TlsListener::new(&listener.name, settings, metrics.tls(&listener.name))
                            .map_err(|source| StartError::Tls {
                                name: listener.name.clone(),
                                source,
                            })?;
                    let loaded = Arc::new(loaded);
                    tls_listeners.push(loaded.clone());
                    Some(loaded)
                }
                None => None,
            };
            let bound = TcpListener::bind(listener.address)
                .await
                .map_err(|source| StartError::Bind {
                    name: listener.name.clone(),
                    address: listener.address,
                    source,
                })?;
            listeners.push(BoundListener {
                context: Arc::new(ListenerContext::new(listener, &metrics)),
                listener: bound,
                tls,
            });
        }
        let admin = match &config.admin {
            Some(settings) => Some(TcpListener::bind(settings.address).await.map_err(
                |source| StartError::Bind {
                    name: "admin".into(),
                    address: settings.address,
                    source,
                },
            )?),
            None => None,
        };
        let background = Background::start().map_err(StartError::Background)?;
        let runtime = Runtime::build(config, None, &metrics)?;
        runtime.start();
        let shared = Arc::new(Shared::new(runtime, metrics, background));
        let reload = ReloadHandle::new(shared.clone(), config_path);
        Ok(Gateway {
            shared,
            listeners,
            admin,
            reload,
            certificates: CertificateReloader::new(tls_listeners),
        })
    }

    /// Reloads TLS certificates from their files (the file watch and SIGHUP use it too);
    /// `subscribe()` on it reports each check.
    pub fn certificate_reloader(&self) -> CertificateReloader {
        self.certificates.clone()
    }

    /// The bound address of a listener (with the real port when the config said `:0`).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| &*l.context.name == name)
            .and_then(|l| l.listener.local_addr().ok())
    }

    /// Every listener's name and bound address.
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|l| Some((l.context.name.to_string(), l.listener.local_addr().ok()?)))
            .collect()
    }

    /// The bound address of the admin listener, if the config has one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Reloads the config file (SIGHUP and the file watch use it too).
    pub fn reload_handle(&self) -> ReloadHandle {
        self.reload.clone()
    }

    /// Serve until `shutdown` resolves, then drain. Returns once every connection has
    /// finished or the drain deadline has passed.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        // Every connection task holds a clone; `recv` returns None once all have ended.
        let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);

        for bound in self.listeners {
            tokio::spawn(accept_loop(
                bound,
                self.shared.clone(),
                stop_rx.clone(),
                drain_tx.clone(),
            ));
        }
        if let Some(listener) = self.admin {
            tokio::spawn(admin::serve(listener, self.shared.clone(), stop_rx.clone()));
        }
        reload::spawn_watchers(self.reload.clone(), stop_rx.clone());
        let watch_interval = self.shared.runtime.load().config.runtime.watch_interval;
        self.certificates
            .spawn_watchers(watch_interval, stop_rx.clone());
        drop(drain_tx);

        shutdown.await;
        self.shared.draining.store(true, Relaxed);
        let deadline = self.shared.runtime.load().config.runtime.drain_timeout;
        tracing::info!(drain_timeout = ?deadline, "shutting down: draining connections");
        let _ = stop_tx.send(true);
        match tokio::time::timeout(deadline, drain_rx.recv()).await {
            Ok(_) => tracing::info!("all connections drained"),
            Err(_) => tracing::warn!("drain deadline reached with connections still open"),
        }
    }
}

/// hyper's server settings for one listener, one builder per protocol. Which one serves a
/// connection is decided per connection ([`sniff_protocol`] for cleartext, ALPN for TLS).
pub(crate) struct HttpBuilders {
    h1: hyper::server::conn::http1::Builder,
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

fn http_builders(listener: &Listener) -> HttpBuilders {
    let limits = &listener.limits;
    let mut h1 = hyper::server::conn::http1::Builder::new();
    // The read buffer bounds the request head: hyper answers 431 past it.
    h1.max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true)
        .half_close(false);
    // hyper keeps up to 100 header slots on the stack; any explicit value moves them to
    // the heap for every request, so only set it when it differs.
    if limits.max_headers != 100 {
        h1.max_headers(limits.max_headers);
    }
    // Header read and idle timeouts are the connection guard's job (one timer per
    // connection instead of one per request).
    h1.header_read_timeout(None);
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    HttpBuilders { h1, h2 }
}

/// The connection preface an HTTP/2 client with prior knowledge (h2c) starts with; the
/// first 14 bytes are enough to tell it from any HTTP/1 request line.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Read just enough of a cleartext connection to tell HTTP/2 prior knowledge from HTTP/1:
/// the bytes read are handed back, to be replayed in front of the stream. (Deciding here,
/// rather than with a protocol-sniffing wrapper around every read, keeps HTTP/1 connections
/// on hyper's plain HTTP/1 path — less work per request and less memory per connection.)
async fn sniff_protocol<IO: AsyncRead + Unpin>(
    stream: &mut IO,
) -> std::io::Result<(bool, Vec<u8>)> {
    let mut seen = Vec::with_capacity(H2_PREFACE.len());
    let mut buf = [0u8; 14];
    while seen.len() < H2_PREFACE.len() {
        let n = stream
            .read(&mut buf[..H2_PREFACE.len() - seen.len()])
            .await?;
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        if !H2_PREFACE.starts_with(&seen) {
            return Ok((false, seen));
        }
    }
    Ok((seen.as_slice() == H2_PREFACE, seen))
}

async fn accept_loop(
    bound: BoundListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    drain: mpsc::Sender<()>,
) {
    let BoundListener {
        context,
        listener,
        tls,
    } = bound;
    let builder = Arc::new(http_builders(&context.config));
    let permits = Arc::new(Semaphore::new(context.config.limits.max_connections));
    let on_parser_error = parser_error_renderer(shared.clone());
    loop {
        // At max_connections, stop accepting: new clients wait in the kernel backlog.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = stopped(&mut stop) => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped(&mut stop) => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                context.metrics.accepted_connections.fetch_add(1, Relaxed);
                let accepted = AcceptedConnection {
                    stream,
                    tls: tls.clone(),
                    shared: shared.clone(),
                    on_parser_error: on_parser_error.clone(),
                    accepted_at: std::time::Instant::now(),
                    life: ConnectionLife {
                        context: context.clone(),
                        builder: builder.clone(),
                        peer,
                        stop: stop.clone(),
                        _held: (permit, drain.clone()),
                        _active: ActiveGuard::new(context.metrics.clone()),
                    },
                };
                if accepted.tls.is_some() {
                    tokio::spawn(serve_connection(accepted));
                } else {
                    tokio::spawn(await_first_bytes(accepted));
                }
            }
            Err(error) => {
                // Out of file descriptors or similar: back off briefly instead of spinning.
                tracing::warn!(listener = %context.name, error = %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::debug!(listener = %context.name, "listener closed");
}

type ParserErrorRenderer = Arc<dyn Fn(&GatewayError) -> Bytes + Send + Sync>;

/// The raw HTTP/1.1 answer that replaces hyper's bare parse-error response.
fn parser_error_renderer(shared: Arc<Shared>) -> ParserErrorRenderer {
    Arc::new(move |error: &GatewayError| {
        let class = error.class();
        shared
            .metrics
            .local_response(class.code)
            .fetch_add(1, Relaxed);
        let id = shared.request_ids.next();
        let id = id.to_str().unwrap_or("");
        tracing::info!(request_id = id, error = %error, "request refused by the HTTP parser");
        let body = crate::error::error_json(class.code, &error.to_string(), id);
        let head = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nx-request-id: {}\r\n\r\n",
            class.status.as_str(),
            class.status.canonical_reason().unwrap_or(""),
            body.len(),
            id
        );
        let mut out = Vec::with_capacity(head.len() + body.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(&body);
        Bytes::from(out)
    })
}

/// Counts a connection in the active-connection gauge for as long as it lives.
struct ActiveGuard(Arc<crate::metrics::ListenerMetrics>);

impl ActiveGuard {
    fn new(metrics: Arc<crate::metrics::ListenerMetrics>) -> ActiveGuard {
        metrics.active_connections.fetch_add(1, Relaxed);
        ActiveGuard(metrics)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active_connections.fetch_sub(1, Relaxed);
    }
}

/// An accepted connection and what serving it needs, handed from task to task.
struct AcceptedConnection {
    stream: TcpStream,
    tls: Option<Arc<TlsListener>>,
    shared: Arc<Shared>,
    on_parser_error: ParserErrorRenderer,
    /// For a plaintext connection, when its header budget began.
    accepted_at: std::time::Instant,
    life: ConnectionLife,
}

/// What lives as long as a connection, whichever task holds it: from the accept, through
/// the first wait, the handshake and serving, to each parked wait.
struct ConnectionLife {
    context: Arc<ListenerContext>,
    builder: Arc<HttpBuilders>,
    peer: SocketAddr,
    /// The gateway's shutdown signal, for each wait in turn.
    stop: watch::Receiver<bool>,
    /// The listener's connection slot and the drain's count, released when it ends.
    _held: (OwnedSemaphorePermit, mpsc::Sender<()>),
    /// The active-connections gauge's count.
    _active: ActiveGuard,
}

/// A connection closes because its request head did not come in time: counted and logged
/// the same whichever wait saw it.
fn head_timed_out(context: &ListenerContext, peer: SocketAddr) {
    context.metrics.header_timeouts.fetch_add(1, Relaxed);
    tracing::info!(peer = %peer, "request head not received in time; closing");
}

/// A plaintext connection's first wait, in a task of its own that holds only the socket and
/// a timer: until the client sends its first bytes (then the connection's serving task
/// takes over), the header budget runs out (closed, counted as a header timeout, as the
/// watchdog would have) or the gateway shuts down.
async fn await_first_bytes(mut accepted: AcceptedConnection) {
    let budget = accepted.life.context.config.limits.header_read_timeout;
    let deadline = tokio::time::Instant::from_std(accepted.accepted_at) + budget;
    let readable = tokio::select! {
        readable = std::future::poll_fn(|cx| poll_readable(&accepted.stream, cx)) => readable.is_ok(),
        _ = tokio::time::sleep_until(deadline) => {
            head_timed_out(&accepted.life.context, accepted.life.peer);
            false
        }
        _ = stopped(&mut accepted.life.stop) => false,
    };
    if readable {
        tokio::spawn(serve_connection(accepted));
    }
}

/// One accepted connection, to its end: the TLS handshake on a TLS listener (here, in the
/// connection's own task, bounded by the handshake timeout and cut short by shutdown), then
/// HTTP over whichever stream that gave.
async fn serve_connection(accepted: AcceptedConnection) {
    let AcceptedConnection {
        stream,
        tls,
        shared,
        on_parser_error,
        accepted_at,
        life,
    } = accepted;
    let _ = stream.set_nodelay(true);
    let peer = life.peer;
    let mut conn = Connection {
        shared,
        on_parser_error,
        tls: None,
        opened: accepted_at,
        life,
    };
    let Some(tls) = tls else {
        return serve_http(stream, conn).await;
    };
    // Boxed, and gone once done: the connection's task does not carry the handshake's
    // state for the life of the connection.
    let handshake = tokio::select! {
        handshake = Box::pin(tls.handshake(stream, peer)) => handshake,
        _ = stopped(&mut conn.life.stop) => return,
    };
    match handshake {
        tls::Handshake::Done(stream, info) => {
            conn.tls = Some(info);
            // On TLS, the header budget starts once the handshake is done.
            conn.opened = std::time::Instant::now();
            serve_http(stream, conn).await;
        }
        tls::Handshake::PlainHttp(mut stream) => {
            // Like NGINX: tell a plaintext client what went wrong, then close.
            let answer = (conn.on_parser_error)(&GatewayError::PlainHttpToTlsPort);
            let write = async {
                stream.write_all(&answer).await?;
                stream.shutdown().await
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
        }
        tls::Handshake::Failed => {}
    }
}

/// What [`serve_http`] needs besides the stream.
struct Connection {
    shared: Arc<Shared>,
    on_parser_error: ParserErrorRenderer,
    tls: Option<tls::TlsInfo>,
    /// When HTTP serving began: the header budget of the first request counts from here.
    opened: std::time::Instant,
    life: ConnectionLife,
}

/// Serve HTTP on a plaintext socket or a TLS stream (the guard sees decrypted bytes).
async fn serve_http<IO>(stream: IO, conn: Connection)
where
    IO: AsyncRead + AsyncWrite + Parkable + Unpin + Send + 'static,
{
    let Connection {
        shared,
        on_parser_error,
        tls,
        opened,
        life,
    } = conn;
    let (peer, context) = (life.peer, &life.context);
    let state = Arc::new(ConnState::opened_since(opened));
    // TLS connections speak what ALPN agreed on; cleartext ones are sniffed.
    let info_tls_alpn = tls.as_ref().map(|tls| tls.alpn.clone());
    let info = Arc::new(ClientConnection {
        listener: context.clone(),
        peer,
        peer_ip: HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
        state: state.clone(),
        tls,
    });
    let service = service_fn(move |req| gateway::handle(&shared, &info, req));
    if stream.parkable().is_none() {
        state.mark_unparkable();
    }
    let mut io = GuardedIo::new(stream, state.clone(), on_parser_error);

    // Timers and shutdown are watched by a companion task, so that the many wake-ups of
    // this task while it serves requests cost one atomic load each instead of polling a
    // timer and a shutdown future every time.
    let watchdog = spawn_watchdog(&state, &life);
    let http2 = match &info_tls_alpn {
        Some(alpn) => alpn.as_deref() == Some(b"h2".as_slice()),
        None => {
            let sniffed = {
                let sniff = sniff_protocol(&mut io);
                tokio::pin!(sniff);
                // The watchdog's budgets apply while the first bytes are awaited too.
                std::future::poll_fn(|cx| match state.poll_close(cx.waker()) {
                    Close::None => sniff.as_mut().poll(cx).map(Some),
                    Close::Graceful | Close::Abort => std::task::Poll::Ready(None),
                })
                .await
            };
            match sniffed {
                Some(Ok((http2, seen))) => {
                    io.replay(seen);
                    http2
                }
                Some(Err(_)) | None => {
                    watchdog.abort();
                    return;
                }
            }
        }
    };
    let result = if http2 {
        state.mark_http2();
        // Boxed: a connection waiting for its first bytes does not carry hyper's state.
        let mut connection = Box::pin(
            life.builder
                .h2
                .serve_connection(TokioIo::new(io), BoxedCalls(service)),
        );
        // HTTP/2 is never parked.
        drive(&mut connection, &state, |c| {
            c.get_mut().as_mut().graceful_shutdown()
        })
        .await
        .map(|_parked| ())
    } else {
        match serve_http1(io, service, &life.builder.h1, &state).await {
            Ok(Some((io, service))) => {
                // Parked: this task and its watchdog end, a small one holds the connection
                // (and its timer) while it idles.
                watchdog.abort();
                let parked = Parked {
                    io,
                    service,
                    state,
                    life,
                };
                tokio::spawn(parked.wait());
                return;
            }
            Ok(None) => Ok(()),
            Err(error) => Err(error),
        }
    };
    watchdog.abort();
    if let Err(error) = result {
        tracing::debug!(peer = %peer, error = %error, "connection ended with an error");
    }
}

/// A service whose calls' futures are boxed. hyper's HTTP/2 server runs each stream in a
/// task of its own, and spawning moves the stream's future several times (into the task
/// cell, through the runtime's context): boxed, each move is of a pointer instead of the
/// request's future (1.6 KB; about 1 k instructions a request over h2c, net of the box's
/// malloc and free). HTTP/1.1 polls its one call in place and keeps the unboxed service.
struct BoxedCalls<S>(S);

impl<S, R> hyper::service::Service<R> for BoxedCalls<S>
where
    S: hyper::service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<S::Future>>;

    fn call(&self, request: R) -> Self::Future {
        Box::pin(self.0.call(request))
    }
}

/// Serve HTTP/1.1 on a connection until it ends (`None`) or is to be parked (see
/// [`conn_guard`]): then hyper's connection has ended with its buffers, and the stream and
/// the service come back to wait in a [`Parked`] connection's small task.
async fn serve_http1<IO, S>(
    mut io: GuardedIo<IO>,
    mut service: S,
    h1: &hyper::server::conn::http1::Builder,
    state: &ConnState,
) -> Result<Option<(GuardedIo<IO>, S)>, hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Parkable + Unpin + Send + 'static,
    S: Http1Service,
{
    loop {
        // Boxed: the task does not carry hyper's state until there is a request to serve.
        let mut connection = Box::new(
            h1.serve_connection(TokioIo::new(io), service)
                .with_upgrades(),
        );
        let parking = drive(&mut *connection, state, |c| c.graceful_shutdown()).await?;
        if !parking {
            return Ok(None);
        }
        state.begin_parking(false);
        // Not upgraded (a connection that parks is between messages).
        let Some(parts) = connection.into_parts() else {
            return Ok(None);
        };
        io = parts.io.into_inner();
        service = parts.service;
        if parts.read_buf.is_empty() {
            // Dropped here: even empty, it may hold on to hyper's whole read buffer.
            return Ok(Some((io, service)));
        }
        // Bytes hyper had read ahead (already seen by the guard): serve them at once.
        io.replay(parts.read_buf.to_vec());
    }
}

/// The gateway's service, as hyper's HTTP/1 connections run it (named once for its bounds).
trait Http1Service:
    hyper::service::HttpService<
        hyper::body::Incoming,
        ResBody = crate::completion::ResponseBody,
        Error = Infallible,
        Future: Send + 'static,
    > + Unpin
    + Send
    + 'static
{
}

impl<S> Http1Service for S where
    S: hyper::service::HttpService<
            hyper::body::Incoming,
            ResBody = crate::completion::ResponseBody,
            Error = Infallible,
            Future: Send + 'static,
        > + Unpin
        + Send
        + 'static
{
}

/// A parked HTTP/1.1 connection: what it needs to be served again, in a task of its own
/// that holds nothing else while it waits (the serving task and its watchdog have ended:
/// the parked task keeps the connection's timer and shutdown signal itself).
struct Parked<IO, S> {
    io: GuardedIo<IO>,
    service: S,
    state: Arc<ConnState>,
    life: ConnectionLife,
}

/// A task's future, boxed: a parked connection and a resumed one spawn each other.
type ConnectionTask = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

impl<IO, S> Parked<IO, S>
where
    IO: AsyncRead + AsyncWrite + Parkable + Unpin + Send + 'static,
    S: Http1Service,
{
    /// Wait, holding only the socket's readiness registration and one timer, until the
    /// client sends again (then serve it in a new task) or the connection is to close (idle
    /// timeout, shutdown), as hyper would have closed it.
    fn wait(mut self) -> ConnectionTask {
        // `self` is used in place: a local moved out of it would be a second copy of the
        // connection in the task (an async block keeps its captures and its locals apart).
        Box::pin(async move {
            let metrics = &self.life.context.metrics;
            metrics.parked_connections.fetch_add(1, Relaxed);
            self.state.set_parked(true);
            idle_trim::connection_parked();
            let woken = self.until_readable().await;
            self.state.set_parked(false);
            let metrics = &self.life.context.metrics;
            metrics.parked_connections.fetch_sub(1, Relaxed);
            if woken {
                tokio::spawn(self.resume());
            }
        })
    }

    /// `true` once the socket is readable (bytes, end or error: hyper finds out which);
    /// `false` when the connection is to close. While parked, this is the connection's
    /// watchdog: nothing is read, so only the idle budget can run out (the header budget
    /// of the next head starts with its first byte, seen after the wake).
    async fn until_readable(&mut self) -> bool {
        let Parked {
            io, state, life, ..
        } = self;
        let state = &**state;
        let limits = &life.context.config.limits;
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        loop {
            let after = match state.check(limits.idle_timeout, limits.header_read_timeout) {
                WatchdogDecision::Wait(after) => after,
                WatchdogDecision::Park(idle_since) => {
                    // Parked before the watchdog asked for this idle period: asked now, so
                    // that the next decision is the idle budget's.
                    state.request_park(idle_since);
                    continue;
                }
                WatchdogDecision::Idle => {
                    life.context.metrics.idle_closed.fetch_add(1, Relaxed);
                    return false;
                }
                WatchdogDecision::HeadTimeout => {
                    head_timed_out(&life.context, life.peer);
                    return false;
                }
            };
            timer.as_mut().reset(tokio::time::Instant::now() + after);
            // The stream by `&mut`, so that it need only be `Send`.
            let io = &mut *io;
            let readable = std::future::poll_fn(move |cx| match state.poll_close(cx.waker()) {
                // Only a stream that can be parked ever is (the others are marked so).
                Close::None => match io.get_ref().parkable() {
                    Some(socket) => poll_readable(socket, cx).map(|ready| ready.is_ok()),
                    None => std::task::Poll::Ready(false),
                },
                Close::Graceful | Close::Abort => std::task::Poll::Ready(false),
            });
            tokio::select! {
                woken = readable => return woken,
                () = &mut timer => {}
                () = stopped(&mut life.stop) => return false,
            }
        }
    }

    /// Serve the connection again, with a new watchdog, until it ends or parks once more.
    fn resume(self) -> ConnectionTask {
        Box::pin(async move {
            let Parked {
                io,
                service,
                state,
                life,
            } = self;
            let watchdog = spawn_watchdog(&state, &life);
            let served = serve_http1(io, service, &life.builder.h1, &state).await;
            watchdog.abort();
            match served {
                Ok(Some((io, service))) => {
                    tokio::spawn(
                        Parked {
                            io,
                            service,
                            state,
                            life,
                        }
                        .wait(),
                    );
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::debug!(peer = %life.peer, error = %error, "connection ended with an error");
                }
            }
        })
    }
}

/// Poll a hyper connection to its end, asking it to shut down gracefully, or dropping it,
/// when the watchdog says so. When the watchdog asks to park the connection and hyper is
/// idle between messages (HTTP/1 only: [`ConnState::may_park`]), end hyper's connection
/// without closing the socket: `Ok(true)`, and `into_parts` has the socket.
async fn drive<C>(
    connection: &mut C,
    state: &ConnState,
    graceful_shutdown: impl Fn(std::pin::Pin<&mut C>),
) -> Result<bool, hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>> + Unpin,
{
    let mut graceful_sent = false;
    let mut park_handled = state.park_requested();
    let mut parking = false;
    std::future::poll_fn(|cx| {
        match state.poll_close(cx.waker()) {
            Close::None => {}
            Close::Graceful => {
                if !graceful_sent {
                    graceful_sent = true;
                    parking = false;
                    state.begin_parking(false);
                    graceful_shutdown(std::pin::Pin::new(&mut *connection));
                }
            }
            Close::Abort => return std::task::Poll::Ready(Ok(false)),
        }
        let requested = state.park_requested();
        if requested != park_handled {
            park_handled = requested;
            if !graceful_sent && !parking && state.may_park() {
                parking = true;
                state.begin_parking(true);
                graceful_shutdown(std::pin::Pin::new(&mut *connection));
            }
        }
        std::pin::Pin::new(&mut *connection)
            .poll(cx)
            .map(|ended| ended.map(|()| parking))
    })
    .await
}

/// A stream whose connection can be parked: the socket a parked connection waits on.
pub(crate) trait Parkable {
    /// The socket to wait on, if this stream can be parked.
    fn parkable(&self) -> Option<&TcpStream>;
}

impl Parkable for TcpStream {
    fn parkable(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

/// TLS connections are not parked: bytes the TLS layer has decrypted but not yet handed on
/// would not show as socket readiness.
impl Parkable for Box<tokio_rustls::server::TlsStream<TcpStream>> {
    fn parkable(&self) -> Option<&TcpStream> {
        None
    }
}

/// Ready when the socket has bytes to read, has ended, or has failed. A peek, not the
/// readiness alone: readiness may be reported for a socket with nothing to read (a new one,
/// for instance), and a peek that finds nothing clears it.
fn poll_readable(
    socket: &TcpStream,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<std::io::Result<()>> {
    let mut byte = [0u8; 1];
    let mut peeked = tokio::io::ReadBuf::new(&mut byte);
    socket.poll_peek(cx, &mut peeked).map_ok(|_| ())
}

/// Start the watchdog of a connection being served (it ends with the serving, or when the
/// connection parks).
fn spawn_watchdog(state: &Arc<ConnState>, life: &ConnectionLife) -> tokio::task::JoinHandle<()> {
    tokio::spawn(watchdog(
        state.clone(),
        life.context.clone(),
        life.peer,
        life.stop.clone(),
    ))
}

/// The single timer of a connection (header-read and idle budgets, as documented in
/// [`conn_guard`]) and its shutdown signal, while the connection is served.
async fn watchdog(
    state: Arc<ConnState>,
    context: Arc<ListenerContext>,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let limits = &context.config.limits;
    // The first look: within the shorter budget (the first request may be over by then), or
    // sooner to park an HTTP/1 connection whose first request is.
    let first_look = match state.check(limits.idle_timeout, limits.header_read_timeout) {
        WatchdogDecision::Wait(after) => {
            after.min(limits.header_read_timeout.min(limits.idle_timeout))
        }
        _ => Duration::ZERO,
    };
    let timer = tokio::time::sleep(first_look);
    let shutdown = stopped(&mut stop);
    tokio::pin!(timer, shutdown);
    let mut idle_close_requested = false;
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                state.request_close(Close::Graceful);
                return;
            }
            _ = &mut timer => match state.check(limits.idle_timeout, limits.header_read_timeout) {
                WatchdogDecision::Wait(after) => {
                    timer.as_mut().reset(tokio::time::Instant::now() + after);
                }
                WatchdogDecision::Idle if idle_close_requested => {
                    // Still open a whole idle period after the graceful close: an HTTP/2
                    // peer that never answers the GOAWAY's PING would hold it forever.
                    tracing::debug!(peer = %peer, "idle connection ignored its graceful close; closing");
                    state.request_close(Close::Abort);
                    return;
                }
                WatchdogDecision::Idle => {
                    context.metrics.idle_closed.fetch_add(1, Relaxed);
                    state.request_close(Close::Graceful);
                    idle_close_requested = true;
                    // Stay: an HTTP/2 connection finishes its streams; shutdown may still come.
                    timer.as_mut().reset(tokio::time::Instant::now() + limits.idle_timeout);
                }
                WatchdogDecision::Park(idle_since) => {
                    state.request_park(idle_since);
                    // The next decision (now that this idle period's park is asked for).
                    timer.as_mut().reset(tokio::time::Instant::now());
                }
                WatchdogDecision::HeadTimeout => {
                    head_timed_out(&context, peer);
                    state.request_close(Close::Abort);
                    return;
                }
            }
        }
    }
}
