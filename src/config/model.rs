//! The validated configuration: typed, defaulted and cross-checked.
//!
//! `validate.rs` produces a [`Config`] from a [`crate::config::file::FileConfig`] only when the
//! whole file is sound, so everything that builds the runtime (listeners, router, clusters,
//! route stacks) can rely on these invariants without re-checking:
//! - names are unique; every route's `cluster` names a cluster in `clusters` (`cluster_index`);
//! - exactly one path condition per route; templates parse; hosts are lowercase;
//! - header names/values are valid HTTP tokens; sizes and durations are in range.

use http::{HeaderName, HeaderValue, Method};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    pub runtime: RuntimeSettings,
    pub admin: Option<AdminSettings>,
    pub access_log: AccessLogSettings,
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Cluster>,
    pub routes: Vec<Route>,
    /// The effective config as JSON, secrets (values that came from `${ENV}`) redacted.
    pub redacted_dump: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeSettings {
    /// `None` = one worker per CPU.
    pub workers: Option<usize>,
    pub drain_timeout: Duration,
    /// `None` = file watching disabled.
    pub watch_interval: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    pub address: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogSettings {
    pub enabled: bool,
    pub target: AccessLogTarget,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AccessLogTarget {
    Stdout,
    Stderr,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    pub via: bool,
    pub limits: ListenerLimits,
    pub tls: Option<ListenerTls>,
    pub redirect_https: Option<RedirectHttps>,
}

/// TLS termination settings. The files are read (and re-read when they change) by
/// `server/tls.rs`; validation has checked they parse.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTls {
    /// At least one; the first is the default.
    pub certificates: Vec<CertificateSource>,
    pub unknown_sni: UnknownSni,
    pub min_version: TlsVersion,
    pub handshake_timeout: Duration,
    pub client_auth: ClientAuth,
    pub hsts: Option<Hsts>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CertificateSource {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Lowercase; `*.example.com` for wildcards. Empty = the certificate's DNS SANs.
    pub server_names: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownSni {
    /// Serve the first certificate.
    DefaultCertificate,
    /// Fail the handshake (`unrecognized_name`).
    Refuse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClientAuth {
    pub mode: ClientAuthMode,
    /// Present unless `mode` is `None`.
    pub ca: Option<PathBuf>,
    pub forward_header: Option<HeaderName>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuthMode {
    #[default]
    None,
    Optional,
    Required,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hsts {
    pub max_age: Duration,
    pub include_subdomains: bool,
}

impl Hsts {
    pub fn header_value(&self) -> HeaderValue {
        let text = if self.include_subdomains {
            format!("max-age={}; includeSubDomains", self.max_age.as_secs())
        } else {
            format!("max-age={}", self.max_age.as_secs())
        };
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("max-age=0"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedirectHttps {
    /// 443 is left out of the Location.
    pub port: u16,
    /// 301 or 308.
    pub status: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerLimits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_uri_length: usize,
    pub header_read_timeout: Duration,
    pub request_body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_concurrent_streams: u32,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_uri_length: 8 * 1024,
            header_read_timeout: Duration::from_secs(10),
            request_body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_concurrent_streams: 128,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub name: String,
    pub endpoints: Vec<Endpoint>,
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    pub pool: PoolSettings,
    pub tls: Option<UpstreamTls>,
}

/// TLS to a cluster's endpoints; the files are read when the cluster is built.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    /// `None` = the Mozilla root set compiled in (webpki-roots).
    pub ca: Option<PathBuf>,
    /// SNI and the name verified; `None` = each endpoint's host.
    pub server_name: Option<String>,
    /// (certificate chain, key) for mTLS to the backend.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// One upstream address as configured. `host` is an IP literal or a DNS name resolved when a
/// connection is opened.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    /// HTTP/2: h2c with prior knowledge, or `h2` via ALPN when the cluster has `tls`.
    Http2,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolSettings {
    pub max_idle_per_endpoint: usize,
    pub idle_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_idle_per_endpoint: 64,
            idle_timeout: Duration::from_secs(90),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatch,
    pub cluster: String,
    /// Index into `Config::clusters`.
    pub cluster_index: usize,
    /// Normalised: starts with `/`, no trailing `/`.
    pub strip_prefix: Option<String>,
    pub host_rewrite: Option<HeaderValue>,
    pub timeout: Duration,
    pub max_body_size: u64,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub require_client_cert: bool,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteMatch {
    pub host: Option<HostMatch>,
    pub path: PathMatch,
    /// Empty = any method.
    pub methods: Vec<Method>,
    pub headers: Vec<HeaderCondition>,
    pub query: Vec<QueryCondition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Lowercase, no port.
    Exact(String),
    /// `*.example.com` stored as `.example.com` (lowercase): matches `a.example.com`,
    /// `a.b.example.com`, never `example.com` itself.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    /// Normalised: starts with `/`, no trailing `/` unless it is exactly `/`.
    Prefix(String),
    /// The template as written; it parsed with `routing::PathTemplate::parse`.
    Template(String),
}

impl Default for PathMatch {
    fn default() -> Self {
        PathMatch::Prefix("/".to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderCondition {
    pub name: HeaderName,
    /// `None` = the header must be present; `Some` = one of its values equals this exactly.
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryCondition {
    /// Compared after percent-decoding the query parameter name.
    pub name: String,
    /// `None` = the parameter must be present; `Some` = its (decoded) value equals this.
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeaderOps {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Apply remove, then set, then add.
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}
