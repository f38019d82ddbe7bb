//! THE request path, top to bottom.
//!
//! ```text
//! listener accept ─ connection guard ─ hyper (h1 / h2 / h2c)      server/
//!   └─ handle()                                                    this file
//!        request id            first, so every answer and log line carries one
//!        admission             CONNECT, absolute-form authority, target length, path
//!                              normalisation: refused here, before routing looks at it
//!        router                the runtime's table, swapped atomically on reload
//!        forwarding headers    hop-by-hop removal, X-Forwarded-*, Via
//!        route stack           middleware/: body limit → transforms → timeout → upstream
//!        response              hop-by-hop removal, X-Request-Id, Via
//!        completion            metrics, access log, connection idle tracking when the
//!                              last byte of the response has gone (ResponseBody drop)
//! ```
//! Errors from any step are typed [`GatewayError`]s, turned into the JSON answer in one place
//! (`error.rs`). The [`Runtime`] — router, route stacks, clusters, access log — is built
//! once per config load; a request holds an `Arc` to the runtime it started with, so a
//! reload never disturbs requests in flight.

use crate::access_log::{rfc3339_now, AccessLog, AccessRecord};
use crate::body::{Body, ClientBody};
use crate::config::model::{self, Config};
use crate::error::{GatewayError, Level};
use crate::metrics::{Metrics, RouteMetrics};
use crate::middleware::{build_route_stack, RouteHandler};
use crate::routing::{normalize_path, Lookup, RequestView, Router};
use crate::server::conn_guard::ConnState;
use crate::server::tls::TlsInfo;
use crate::upstream::{Cluster, DownstreamUpgrade};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::time::Instant;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// State that lives as long as the process, across reloads.
pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub metrics: Metrics,
    pub request_ids: RequestIds,
    /// Set when shutdown begins: readiness turns false.
    pub draining: AtomicBool,
}

impl Shared {
    pub fn new(runtime: Runtime, metrics: Metrics) -> Shared {
        Shared {
            runtime: ArcSwap::from_pointee(runtime),
            metrics,
            request_ids: RequestIds::new(),
            draining: AtomicBool::new(false),
        }
    }
}

/// Everything built from one config: swapped as a whole on reload.
pub struct Runtime {
    pub config: Arc<Config>,
    pub router: Router,
    pub routes: Vec<RouteEntry>,
    pub clusters: Vec<Arc<Cluster>>,
    pub access_log: Option<AccessLog>,
    unmatched: Arc<RouteMetrics>,
}

pub struct RouteEntry {
    pub name: Arc<str>,
    pub cluster: Arc<str>,
    pub require_client_cert: bool,
    pub handler: Arc<dyn RouteHandler>,
    pub metrics: Arc<RouteMetrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot open the access log")]
    AccessLog(#[source] std::io::Error),
    #[error("cannot set up TLS for cluster {cluster}")]
    UpstreamTls {
        cluster: String,
        #[source]
        source: crate::upstream::tls::UpstreamTlsError,
    },
}

impl Runtime {
    /// Build the runtime for `config`. Clusters whose configuration is unchanged from
    /// `previous` are carried over with their connection pools; the access log writer too.
    pub fn build(
        config: Config,
        previous: Option<&Runtime>,
        metrics: &Metrics,
    ) -> Result<Runtime, BuildError> {
        let old_clusters: HashMap<&str, &Arc<Cluster>> = previous
            .map(|rt| {
                rt.clusters
                    .iter()
                    .map(|c| (c.config.name.as_str(), c))
                    .collect()
            })
            .unwrap_or_default();
        let clusters: Vec<Arc<Cluster>> = config
            .clusters
            .iter()
            .map(|cfg| match old_clusters.get(cfg.name.as_str()) {
                Some(old) if old.config == *cfg => Ok(Arc::clone(old)),
                _ => Cluster::new(cfg, metrics).map(Arc::new).map_err(|source| {
                    BuildError::UpstreamTls {
                        cluster: cfg.name.clone(),
                        source,
                    }
                }),
            })
            .collect::<Result<_, _>>()?;
        let routes = config
            .routes
            .iter()
            .map(|route| RouteEntry {
                name: route.name.as_str().into(),
                cluster: route.cluster.as_str().into(),
                require_client_cert: route.require_client_cert,
                handler: build_route_stack(route, clusters[route.cluster_index].clone()),
                metrics: metrics.route(&route.name),
            })
            .collect();
        let matchers: Vec<model::RouteMatch> =
            config.routes.iter().map(|r| r.matcher.clone()).collect();
        let access_log = match previous.and_then(|rt| rt.access_log.as_ref()) {
            Some(log) if log.serves(&config.access_log) => Some(log.clone()),
            _ => AccessLog::start(&config.access_log, metrics).map_err(BuildError::AccessLog)?,
        };
        Ok(Runtime {
            router: Router::new(&matchers),
            routes,
            clusters,
            access_log,
            unmatched: metrics.route("(none)"),
            config: Arc::new(config),
        })
    }
}

/// Per-listener settings the request path needs.
pub struct ListenerContext {
    pub name: Arc<str>,
    pub config: model::Listener,
    pub metrics: Arc<crate::metrics::ListenerMetrics>,
    /// The `Strict-Transport-Security` value of a TLS listener, made once.
    pub hsts: Option<HeaderValue>,
}

impl ListenerContext {
    pub fn new(config: &model::Listener, metrics: &Metrics) -> ListenerContext {
        ListenerContext {
            name: config.name.as_str().into(),
            hsts: config
                .tls
                .as_ref()
                .and_then(|tls| tls.hsts.as_ref())
                .map(model::Hsts::header_value),
            config: config.clone(),
            metrics: metrics.listener(&config.name),
        }
    }

    /// The header that carries the client certificate's identity upstream, if configured.
    fn client_cert_header(&self) -> Option<&HeaderName> {
        self.config
            .tls
            .as_ref()
            .and_then(|tls| tls.client_auth.forward_header.as_ref())
    }
}

/// Per-connection facts, shared by all requests on the connection.
pub struct ConnInfo {
    pub listener: Arc<ListenerContext>,
    pub peer: SocketAddr,
    /// The client address as a header value, made once per connection.
    pub peer_ip: HeaderValue,
    pub state: Arc<ConnState>,
    /// What the TLS handshake established; `None` on plaintext listeners.
    pub tls: Option<TlsInfo>,
}

/// Request ids: a random per-process prefix and a counter, 32 hex digits. Unique across
/// restarts and instances without a random draw per request.
pub struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl RequestIds {
    pub fn new() -> RequestIds {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from the OS; hashing the time through it gives a random u64.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        RequestIds {
            prefix: hasher.finish(),
            counter: AtomicU64::new(0),
        }
    }

    pub fn next(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Relaxed);
        let mut out = [0u8; 32];
        hex_u64(self.prefix, &mut out[..16]);
        hex_u64(n, &mut out[16..]);
        // An owned buffer behind a reference count: the id is cloned into the upstream
        // request and the response, and a plain `Vec` would be copied on the first clone.
        HeaderValue::from_maybe_shared(Bytes::from_owner(out))
            .unwrap_or_else(|_| HeaderValue::from_static("0"))
    }

    /// The caller's id when it is a sane token, else a new one.
    fn take_or_generate(&self, headers: &HeaderMap) -> HeaderValue {
        match headers.get(&X_REQUEST_ID) {
            Some(id)
                if (1..=128).contains(&id.len())
                    && id.as_bytes().iter().all(|b| b.is_ascii_graphic()) =>
            {
                id.clone()
            }
            _ => self.next(),
        }
    }
}

/// `value` as 16 lowercase hex digits into `out` (16 bytes).
fn hex_u64(value: u64, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = HEX[((value >> (60 - 4 * i)) & 0xf) as usize];
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds::new()
    }
}

/// What the completion step needs to know about the request.
struct Facts {
    route: Option<usize>,
    log: Option<Box<LogFacts>>,
}

struct LogFacts {
    method: Method,
    path: String,
    version: Version,
    bytes_in: u64,
}

/// Serve one request. Never fails: every error becomes a response here.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let conflicting_framing = conn.state.request_started();
    let runtime = shared.runtime.load_full();
    let request_id = shared.request_ids.take_or_generate(req.headers());
    let mut facts = Facts {
        route: None,
        log: runtime.access_log.as_ref().map(|_| {
            Box::new(LogFacts {
                method: req.method().clone(),
                path: req.uri().path().to_string(),
                version: req.version(),
                bytes_in: declared_length(req.headers()),
            })
        }),
    };

    let result = if conflicting_framing {
        Err(GatewayError::Parser {
            status: StatusCode::BAD_REQUEST,
            message: "the request has both Content-Length and Transfer-Encoding",
        })
    } else {
        proxy(&runtime, &conn, &request_id, started, req, &mut facts).await
    };

    let (mut response, error_code) = match result {
        Ok(mut response) => {
            let upgraded = response.status() == StatusCode::SWITCHING_PROTOCOLS;
            strip_hop_by_hop(response.headers_mut(), upgraded);
            if upgraded {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            }
            (response, None)
        }
        Err(error) => {
            let class = error.class();
            shared
                .metrics
                .local_response(class.code)
                .fetch_add(1, Relaxed);
            log_error(&error, class.level, &request_id);
            let id = request_id.to_str().unwrap_or("");
            let response = error.into_response(id);
            (response, Some(class.code))
        }
    };

    let headers = response.headers_mut();
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    if let Some(hsts) = &conn.listener.hsts {
        // A backend that sets its own policy knows its site best.
        headers
            .entry(header::STRICT_TRANSPORT_SECURITY)
            .or_insert_with(|| hsts.clone());
    }
    if conn.listener.config.via {
        headers.append(header::VIA, via_value(Version::HTTP_11));
    }

    let entry = facts.route.and_then(|i| runtime.routes.get(i));
    let route_metrics = entry.map_or_else(|| runtime.unmatched.clone(), |e| e.metrics.clone());
    // Everything the access log needs is gathered only when there is an access log.
    let log = match (runtime.access_log.as_ref(), facts.log.take()) {
        (Some(sink), Some(facts)) => Some(Box::new(PendingLog {
            sink: sink.clone(),
            facts: *facts,
            request_id,
            route: entry.map(|e| e.name.clone()),
            cluster: entry.map(|e| e.cluster.clone()),
            upstream: match response.body() {
                Body::Upstream { body } => Some(body.upstream().clone()),
                _ => None,
            },
            error_code,
        })),
        _ => None,
    };
    let done = Done {
        conn,
        metrics: route_metrics,
        status: response.status().as_u16(),
        started,
        bytes_out: 0,
        completed: false,
        log,
    };
    response.map(|body| ResponseBody::new(body, done))
}

/// Admission, routing and the route's stack.
async fn proxy(
    runtime: &Runtime,
    conn: &ConnInfo,
    request_id: &HeaderValue,
    started: Instant,
    mut req: Request<Incoming>,
    facts: &mut Facts,
) -> Result<Response<Body>, GatewayError> {
    if req.method() == Method::CONNECT {
        return Err(GatewayError::ConnectRefused);
    }
    let limits = &conn.listener.config.limits;
    let target_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > limits.max_uri_length {
        return Err(GatewayError::UriTooLong {
            len: target_len,
            limit: limits.max_uri_length,
        });
    }
    let host = effective_host(&req)?;
    if let Some(redirect) = conn.listener.config.redirect_https {
        return redirect_to_https(redirect, host.as_ref(), req.uri());
    }

    // Normalise the path once: the router matches it and the upstream receives it, so no
    // request can reach a backend path outside the prefix it was routed by.
    let normalized = normalize_path(req.uri().path())?;
    if let std::borrow::Cow::Owned(path) = normalized {
        let target = match req.uri().query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = Some(
            PathAndQuery::try_from(target)
                .map_err(|e| GatewayError::BadUpstreamRequest(e.into()))?,
        );
        *req.uri_mut() =
            Uri::from_parts(parts).map_err(|e| GatewayError::BadUpstreamRequest(e.into()))?;
    }

    let lookup = runtime.router.find(&RequestView {
        host: host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or(""),
        path: req.uri().path(),
        query: req.uri().query(),
        method: req.method(),
        headers: req.headers(),
    });
    let index = match lookup {
        Lookup::Matched(index) => index,
        Lookup::MethodNotAllowed(allow) => {
            return Err(GatewayError::MethodNotAllowed {
                method: req.method().clone(),
                allow,
            });
        }
        Lookup::NotFound => return Err(GatewayError::NoRoute),
    };
    facts.route = Some(index);
    let entry = &runtime.routes[index];
    if entry.require_client_cert && !conn.tls.as_ref().is_some_and(|tls| tls.client_verified) {
        return Err(GatewayError::ClientCertificateRequired);
    }

    let upgrade = is_upgrade_request(&req);
    if upgrade {
        let on_upgrade = hyper::upgrade::on(&mut req);
        req.extensions_mut().insert(DownstreamUpgrade(on_upgrade));
    }
    set_forwarding_headers(&mut req, conn, host, request_id, upgrade);

    let budget = limits.request_body_timeout;
    let req = req.map(|incoming| {
        if http_body::Body::is_end_stream(&incoming) {
            Body::empty()
        } else {
            Body::Client {
                body: ClientBody::new(incoming, u64::MAX, started, budget),
            }
        }
    });
    entry.handler.handle(req).await
}

/// The answer of a `redirect_https` listener: the same host (without its port) and target
/// on `https://`, never forwarded. A request without a host cannot be redirected.
fn redirect_to_https(
    redirect: model::RedirectHttps,
    host: Option<&HeaderValue>,
    uri: &Uri,
) -> Result<Response<Body>, GatewayError> {
    let host = host
        .and_then(|h| h.to_str().ok())
        .ok_or(GatewayError::MissingHost)?;
    let name = match host.rfind(':') {
        // `[::1]:8080` → `[::1]`; a bare `[::1]` has its last `:` inside the brackets.
        Some(colon) if !host[colon..].contains(']') => &host[..colon],
        _ => host,
    };
    // Only a host name or IP literal may go into the Location: nothing that could turn it
    // into another URL (`evil.example/`, `user@…`).
    let valid = !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'[' | b']' | b':')
        });
    if !valid {
        return Err(GatewayError::InvalidHost(host.to_string()));
    }
    let target = uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let location = if redirect.port == 443 {
        format!("https://{name}{target}")
    } else {
        format!("https://{name}:{}{target}", redirect.port)
    };
    let location = HeaderValue::from_str(&location).map_err(|_| GatewayError::MissingHost)?;
    let mut response = Response::new(Body::empty());
    *response.status_mut() =
        StatusCode::from_u16(redirect.status).unwrap_or(StatusCode::PERMANENT_REDIRECT);
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

fn declared_length(headers: &HeaderMap) -> u64 {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The host the request is for: `:authority` for HTTP/2, the Host header for HTTP/1.x. An
/// absolute-form target (`GET http://host/path`) must name the same host as the Host header:
/// Portico only ever forwards to its configured clusters, never to a host the client names.
fn effective_host(req: &Request<Incoming>) -> Result<Option<HeaderValue>, GatewayError> {
    let header_host = req.headers().get(header::HOST);
    match (req.uri().authority(), header_host) {
        (Some(authority), Some(host)) if req.version() != Version::HTTP_2 => {
            if !authority
                .as_str()
                .eq_ignore_ascii_case(host.to_str().unwrap_or(""))
            {
                return Err(GatewayError::AuthorityMismatch {
                    target: authority.to_string(),
                    host: String::from_utf8_lossy(host.as_bytes()).into_owned(),
                });
            }
            Ok(Some(host.clone()))
        }
        (Some(authority), _) => Ok(HeaderValue::from_str(authority.as_str()).ok()),
        (None, Some(host)) => Ok(Some(host.clone())),
        (None, None) if req.version() == Version::HTTP_11 => Err(GatewayError::MissingHost),
        (None, None) => Ok(None),
    }
}

fn is_upgrade_request(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req.headers().get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

fn set_forwarding_headers(
    req: &mut Request<Incoming>,
    conn: &ConnInfo,
    host: Option<HeaderValue>,
    request_id: &HeaderValue,
    upgrade: bool,
) {
    let version = req.version();
    let headers = req.headers_mut();
    strip_hop_by_hop(headers, upgrade);
    // Room for the headers added below in one step, instead of growing the map twice.
    headers.reserve(4);
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    match headers.entry(&X_FORWARDED_FOR) {
        http::header::Entry::Vacant(entry) => {
            entry.insert(conn.peer_ip.clone());
        }
        http::header::Entry::Occupied(mut entry) => {
            let mut joined = Vec::with_capacity(64);
            for value in entry.iter() {
                if !joined.is_empty() {
                    joined.extend_from_slice(b", ");
                }
                joined.extend_from_slice(value.as_bytes());
            }
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(conn.peer_ip.as_bytes());
            if let Ok(value) = HeaderValue::from_bytes(&joined) {
                entry.insert(value);
            }
        }
    }
    let proto = if conn.tls.is_some() { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    if let Some(name) = conn.listener.client_cert_header() {
        // Whatever the client sent under this name is never trusted.
        headers.remove(name);
        if let Some(identity) = conn
            .tls
            .as_ref()
            .and_then(|tls| tls.client_identity.as_ref())
        {
            headers.insert(name.clone(), identity.clone());
        }
    }
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        // HTTP/2 clients send :authority instead of Host; HTTP/1.1 upstreams need Host. (An
        // HTTP/1.x request with a host has it from its Host header: no lookup needed.)
        if version == Version::HTTP_2 && !headers.contains_key(header::HOST) {
            headers.insert(header::HOST, host);
        }
    }
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    if conn.listener.config.via {
        headers.append(header::VIA, via_value(version));
    }
}

fn via_value(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_10 => "1.0 portico",
        Version::HTTP_2 => "2 portico",
        _ => "1.1 portico",
    })
}

/// Remove hop-by-hop headers (RFC 9110 §7.6.1): the fixed set and every header the
/// `Connection` header names. `te: trailers` survives (gRPC needs it). With `keep_upgrade`,
/// `Upgrade` stays for a protocol switch.
///
/// This runs on every request and response, so it is shaped for the common cases: one
/// pass over the names finds which hop-by-hop headers are present (usually none, or a lone
/// `Connection: keep-alive`), and only those are removed; the usual `Connection` tokens
/// (`keep-alive`, `close`, `upgrade`) never allocate.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    const CONNECTION: u8 = 1;
    const TRANSFER_ENCODING: u8 = 2;
    const TE: u8 = 4;
    const UPGRADE: u8 = 8;
    const KEEP_ALIVE_BIT: u8 = 16;
    const PROXY_CONNECTION_BIT: u8 = 32;
    // One pass over the names; the length decides cheaply whether a name can be one of
    // the six at all (measured cheaper than six hash lookups for a typical request).
    let mut present = 0u8;
    for name in headers.keys() {
        let name = name.as_str();
        present |= match name.len() {
            2 if name == "te" => TE,
            7 if name == "upgrade" => UPGRADE,
            10 if name == "connection" => CONNECTION,
            10 if name == "keep-alive" => KEEP_ALIVE_BIT,
            16 if name == "proxy-connection" => PROXY_CONNECTION_BIT,
            17 if name == "transfer-encoding" => TRANSFER_ENCODING,
            _ => 0,
        };
    }
    if present == 0 {
        return;
    }
    if present & CONNECTION != 0 {
        let mut named = Vec::new();
        for token in headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
        {
            // The fixed set below covers these; `close` names no header.
            let common = [
                "keep-alive",
                "close",
                "upgrade",
                "te",
                "transfer-encoding",
                "",
            ];
            if common.iter().any(|c| token.eq_ignore_ascii_case(c)) {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    if present & TRANSFER_ENCODING != 0 {
        headers.remove(header::TRANSFER_ENCODING);
    }
    if present & KEEP_ALIVE_BIT != 0 {
        headers.remove(&KEEP_ALIVE);
    }
    if present & PROXY_CONNECTION_BIT != 0 {
        headers.remove(&PROXY_CONNECTION);
    }
    if present & UPGRADE != 0 && !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
    if present & TE != 0 {
        let trailers_only = headers
            .get(header::TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
        if !trailers_only {
            headers.remove(header::TE);
        }
    }
}

fn log_error(error: &GatewayError, level: Level, request_id: &HeaderValue) {
    let id = request_id.to_str().unwrap_or("");
    let source = std::error::Error::source(error).map(|s| s.to_string());
    match level {
        Level::Debug => {
            tracing::debug!(request_id = id, error = %error, cause = ?source, "request refused")
        }
        Level::Info => {
            tracing::info!(request_id = id, error = %error, cause = ?source, "request refused")
        }
        Level::Warn => {
            tracing::warn!(request_id = id, error = %error, cause = ?source, "request failed")
        }
        Level::Error => {
            tracing::error!(request_id = id, error = %error, cause = ?source, "request failed")
        }
    }
}

struct PendingLog {
    sink: AccessLog,
    facts: LogFacts,
    request_id: HeaderValue,
    route: Option<Arc<str>>,
    cluster: Option<Arc<str>>,
    upstream: Option<Arc<str>>,
    error_code: Option<&'static str>,
}

/// Runs when the response is finished (fully sent, or abandoned): the one place that
/// records metrics, writes the access log line and tells the connection it is idle again.
struct Done {
    conn: Arc<ConnInfo>,
    metrics: Arc<RouteMetrics>,
    status: u16,
    started: Instant,
    bytes_out: u64,
    completed: bool,
    log: Option<Box<PendingLog>>,
}

impl Drop for Done {
    fn drop(&mut self) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.started);
        self.metrics.observe(self.status, elapsed);
        self.conn.state.request_finished(now.into_std());
        if let Some(log) = self.log.take() {
            let PendingLog {
                sink,
                facts,
                request_id,
                route,
                cluster,
                upstream,
                error_code,
            } = *log;
            sink.log(&AccessRecord {
                time: rfc3339_now(),
                request_id: request_id.to_str().unwrap_or("").to_string(),
                client_ip: self.conn.peer.ip(),
                listener: self.conn.listener.name.to_string(),
                protocol: match facts.version {
                    Version::HTTP_10 => "HTTP/1.0",
                    Version::HTTP_2 => "HTTP/2",
                    _ => "HTTP/1.1",
                },
                method: facts.method.to_string(),
                path: facts.path,
                route: route.map(|r| r.to_string()),
                cluster: cluster.map(|c| c.to_string()),
                upstream: upstream.map(|u| u.to_string()),
                status: self.status,
                error_code,
                bytes_in: facts.bytes_in,
                bytes_out: self.bytes_out,
                duration_ms: elapsed.as_secs_f64() * 1000.0,
                completed: self.completed,
            });
        }
    }
}

pin_project! {
    /// The body hyper writes to the client: the route's body, counted, with [`Done`] riding
    /// along until hyper drops it after the last byte.
    pub struct ResponseBody {
        #[pin]
        inner: Body,
        done: Done,
    }
}

impl ResponseBody {
    fn new(inner: Body, mut done: Done) -> ResponseBody {
        if http_body::Body::is_end_stream(&inner) {
            done.completed = true;
        }
        ResponseBody { inner, done }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = crate::body::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let frame = ready!(inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.done.bytes_out += data.len() as u64;
                }
            }
            Some(Err(error)) => {
                tracing::debug!(error = %error, "response body ended early");
            }
            None => this.done.completed = true,
        }
        if frame.is_some() && inner.is_end_stream() {
            this.done.completed = true;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_32_hex_digits_and_distinct() {
        let ids = RequestIds::new();
        let a = ids.next();
        let b = ids.next();
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(a, b);
    }

    #[test]
    fn strips_fixed_and_connection_named_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::TE, HeaderValue::from_static("gzip"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        headers.insert("x-keep", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert_eq!(headers["x-keep"], "yes");
    }

    #[test]
    fn keeps_te_trailers_and_upgrade_when_asked() {
        let mut headers = HeaderMap::new();
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers[header::TE], "trailers");
        assert_eq!(headers[header::UPGRADE], "websocket");
        assert!(!headers.contains_key(header::CONNECTION));
    }
}
