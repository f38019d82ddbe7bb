//! The typed settings of the core sections: runtime, admin, listeners (limits, TLS), clusters
//! (pool, TLS) and route matchers. Concerns keep their own typed settings in their modules;
//! [`super::Config`] and [`super::Route`] put everything together.
//!
//! `validate.rs` produces them only when the whole file is sound, so everything that builds
//! the runtime (listeners, router, clusters, route stacks) can rely on these invariants
//! without re-checking:
//! - names are unique; every route's `cluster` names a cluster in `clusters` (`cluster_index`);
//! - exactly one path condition per route; templates parse; hosts are lowercase;
//! - header names/values are valid HTTP tokens; sizes and durations are in range.

use http::{HeaderName, HeaderValue, Method};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RuntimeSettings {
    /// `None` = one worker per CPU.
    pub(crate) workers: Option<usize>,
    pub(crate) drain_timeout: Duration,
    /// `None` = file watching disabled.
    pub(crate) watch_interval: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AdminSettings {
    pub(crate) address: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Listener {
    pub(crate) name: String,
    pub(crate) address: SocketAddr,
    pub(crate) via: bool,
    pub(crate) headers_with_underscores: UnderscoreHeaders,
    pub(crate) limits: ListenerLimits,
    pub(crate) tls: Option<ListenerTls>,
    pub(crate) redirect_https: Option<RedirectHttps>,
}

/// TLS termination settings. The files are read (and re-read when they change) by
/// `server/tls.rs`; validation has checked they parse.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ListenerTls {
    /// At least one; the first is the default.
    pub(crate) certificates: Vec<CertificateSource>,
    pub(crate) unknown_sni: UnknownSni,
    pub(crate) min_version: TlsVersion,
    pub(crate) handshake_timeout: Duration,
    /// The suites offered, most preferred first, with the server's order winning; at least
    /// one usable with `min_version`. `None` = the provider's defaults, the client's order
    /// winning.
    pub(crate) cipher_suites: Option<Vec<rustls::SupportedCipherSuite>>,
    pub(crate) client_auth: ClientAuth,
    pub(crate) hsts: Option<Hsts>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CertificateSource {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    /// Lowercase; `*.example.com` for wildcards. Empty = the certificate's DNS SANs.
    pub(crate) server_names: Vec<String>,
}

/// What a listener does with request headers whose names contain `_` (Envoy's
/// `headers_with_underscores_action`). Look-alikes of framing and hop-by-hop headers
/// (`transfer_encoding`, `content_length`, …) are refused whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum UnderscoreHeaders {
    /// Forward them.
    Allow,
    /// Remove them before routing (what NGINX does by default): a backend or CGI layer that
    /// reads `_` as `-` cannot be made to see a header the gateway did not.
    #[default]
    Drop,
    /// Answer 400.
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnknownSni {
    /// Serve the first certificate.
    DefaultCertificate,
    /// Fail the handshake (`unrecognized_name`).
    Refuse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsVersion {
    Tls12,
    Tls13,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct ClientAuth {
    pub(crate) mode: ClientAuthMode,
    /// Present unless `mode` is `None`.
    pub(crate) ca: Option<PathBuf>,
    pub(crate) forward_header: Option<HeaderName>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum ClientAuthMode {
    #[default]
    None,
    Optional,
    Required,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Hsts {
    pub(crate) max_age: Duration,
    pub(crate) include_subdomains: bool,
}

impl Hsts {
    pub(crate) fn header_value(&self) -> HeaderValue {
        let text = if self.include_subdomains {
            format!("max-age={}; includeSubDomains", self.max_age.as_secs())
        } else {
            format!("max-age={}", self.max_age.as_secs())
        };
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("max-age=0"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RedirectHttps {
    /// 443 is left out of the Location.
    pub(crate) port: u16,
    /// 301 or 308.
    pub(crate) status: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ListenerLimits {
    pub(crate) max_header_bytes: usize,
    pub(crate) max_headers: usize,
    pub(crate) max_uri_length: usize,
    pub(crate) header_read_timeout: Duration,
    pub(crate) request_body_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) max_concurrent_streams: u32,
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
pub(crate) struct Cluster {
    pub(crate) name: String,
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) protocol: UpstreamProtocol,
    pub(crate) connect_timeout: Duration,
    pub(crate) pool: PoolSettings,
    pub(crate) tls: Option<UpstreamTls>,
    /// The descriptors of a gRPC cluster, compiled.
    pub(crate) grpc: Option<std::sync::Arc<crate::grpc::GrpcApi>>,
    /// Balancing, health, ejection and limits (`upstream/policy.rs`).
    pub(crate) policy: crate::upstream::policy::ClusterPolicy,
}

impl Cluster {
    /// The cluster below a route that answers by itself: no endpoints, never called.
    pub(crate) fn none() -> Cluster {
        Cluster {
            name: String::from("(none)"),
            endpoints: Vec::new(),
            protocol: UpstreamProtocol::Http1,
            connect_timeout: Duration::from_secs(1),
            pool: PoolSettings::default(),
            tls: None,
            grpc: None,
            policy: crate::upstream::policy::ClusterPolicy::plain(),
        }
    }
}

/// TLS to a cluster's endpoints; the files are read when the cluster is built.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UpstreamTls {
    /// `None` = the Mozilla root set compiled in (webpki-roots).
    pub(crate) ca: Option<PathBuf>,
    /// SNI and the name verified; `None` = each endpoint's host.
    pub(crate) server_name: Option<String>,
    /// (certificate chain, key) for mTLS to the backend.
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
}

/// One upstream address as configured. `host` is an IP literal or a DNS name resolved when a
/// connection is opened.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Endpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
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
pub(crate) enum UpstreamProtocol {
    Http1,
    /// HTTP/2: h2c with prior knowledge, or `h2` via ALPN when the cluster has `tls`.
    Http2,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PoolSettings {
    pub(crate) max_idle_per_endpoint: usize,
    pub(crate) idle_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_idle_per_endpoint: 64,
            idle_timeout: Duration::from_secs(90),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct RouteMatch {
    pub(crate) host: Option<HostMatch>,
    pub(crate) path: PathMatch,
    /// Empty = any method.
    pub(crate) methods: Vec<Method>,
    pub(crate) headers: Vec<HeaderCondition>,
    pub(crate) query: Vec<QueryCondition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostMatch {
    /// Lowercase, no port.
    Exact(String),
    /// `*.example.com` stored as `.example.com` (lowercase): matches `a.example.com`,
    /// `a.b.example.com`, never `example.com` itself.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathMatch {
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
pub(crate) struct HeaderCondition {
    pub(crate) name: HeaderName,
    /// `None` = the header must be present; `Some` = one of its values equals this exactly.
    pub(crate) value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueryCondition {
    /// Compared after percent-decoding the query parameter name.
    pub(crate) name: String,
    /// `None` = the parameter must be present; `Some` = its (decoded) value equals this.
    pub(crate) value: Option<String>,
}

/// A setting that is one of a few words: parsed once, by serde, in the structure stage, with
/// a message that names the setting when the word is unknown.
trait Keyword: Sized + Copy + PartialEq + 'static {
    /// Every value and the word it is written as.
    const WORDS: &'static [(&'static str, Self)];
    /// The message for an unknown word.
    fn unknown(word: &str) -> String;

    fn word(self) -> &'static str {
        Self::WORDS
            .iter()
            .find(|(_, value)| *value == self)
            .map_or("", |(word, _)| word)
    }
}

/// Implements `Deserialize` and `Serialize` for a [`Keyword`] type.
macro_rules! keyword_serde {
    ($type:ty) => {
        impl<'de> serde::Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let word = <String as serde::Deserialize>::deserialize(deserializer)?;
                <$type as Keyword>::WORDS
                    .iter()
                    .find(|(known, _)| *known == word)
                    .map(|(_, value)| *value)
                    .ok_or_else(|| {
                        <D::Error as serde::de::Error>::custom(<$type as Keyword>::unknown(&word))
                    })
            }
        }

        impl serde::Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.word())
            }
        }
    };
}

impl Keyword for UpstreamProtocol {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("http1", UpstreamProtocol::Http1),
        ("http2", UpstreamProtocol::Http2),
    ];

    fn unknown(word: &str) -> String {
        format!("unknown protocol {word:?}: expected http1 or http2 (h2c)")
    }
}
keyword_serde!(UpstreamProtocol);

impl Keyword for UnknownSni {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("default", UnknownSni::DefaultCertificate),
        ("refuse", UnknownSni::Refuse),
    ];

    fn unknown(word: &str) -> String {
        format!("unknown value {word:?}: expected default or refuse")
    }
}
keyword_serde!(UnknownSni);

impl Keyword for TlsVersion {
    const WORDS: &'static [(&'static str, Self)] =
        &[("1.2", TlsVersion::Tls12), ("1.3", TlsVersion::Tls13)];

    fn unknown(word: &str) -> String {
        format!(
            "unsupported TLS version {word:?}: expected \"1.2\" or \"1.3\" (older versions are \
             not offered)"
        )
    }
}
keyword_serde!(TlsVersion);

impl Keyword for ClientAuthMode {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("none", ClientAuthMode::None),
        ("optional", ClientAuthMode::Optional),
        ("required", ClientAuthMode::Required),
    ];

    fn unknown(word: &str) -> String {
        format!("unknown mode {word:?}: expected none, optional or required")
    }
}
keyword_serde!(ClientAuthMode);

impl Keyword for UnderscoreHeaders {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("allow", UnderscoreHeaders::Allow),
        ("drop", UnderscoreHeaders::Drop),
        ("reject", UnderscoreHeaders::Reject),
    ];

    fn unknown(word: &str) -> String {
        format!("unknown value {word:?}: expected allow, drop or reject")
    }
}
keyword_serde!(UnderscoreHeaders);
