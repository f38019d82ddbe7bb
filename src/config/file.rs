//! The core sections of the configuration file as written: serde structures that mirror the
//! YAML keys one to one.
//!
//! Nothing here is interpreted yet, apart from settings that are one of a few words (parsed
//! into their enums by serde). Every struct denies unknown keys, durations and sizes are still
//! strings (`"250ms"`, `"1MiB"`), and names are unresolved. `validate.rs` turns this into the
//! typed [`crate::config::Config`] and reports every problem at once; the `Serialize` side is
//! what the admin `/config` endpoint dumps (with secrets redacted). The keys concerns own
//! (route policies, concern sections) are declared in the concerns' modules.

use super::model::{ClientAuthMode, TlsVersion, UnderscoreHeaders, UnknownSni, UpstreamProtocol};
use crate::upstream::policy::{
    CircuitBreakerFile, DnsFile, HealthCheckFile, LoadBalancingFile, OutlierDetectionFile,
    RetryBudgetFile,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Process-wide settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuntimeFile {
    /// Worker threads; 0 or absent = one per CPU.
    pub(crate) workers: Option<usize>,
    /// How long in-flight requests may run after SIGTERM. Default `30s`.
    pub(crate) drain_timeout: Option<String>,
    /// How often the config file is checked for changes. Default `2s`; `0s` disables.
    pub(crate) watch_interval: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminFile {
    pub(crate) address: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenerFile {
    pub(crate) name: String,
    pub(crate) address: String,
    /// Add `Via: <version> portico` to forwarded requests and responses. Default `false`.
    pub(crate) via: Option<bool>,
    /// `allow`, `drop` (default) or `reject` request headers whose names contain `_`.
    pub(crate) headers_with_underscores: Option<UnderscoreHeaders>,
    #[serde(default)]
    pub(crate) limits: ListenerLimitsFile,
    /// Terminate TLS on this listener. Absent = plaintext HTTP.
    pub(crate) tls: Option<ListenerTlsFile>,
    /// Answer every request with a redirect to HTTPS instead of proxying (plaintext
    /// listeners only).
    pub(crate) redirect_https: Option<RedirectHttpsFile>,
}

/// TLS termination on a listener.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenerTlsFile {
    /// At least one; the first is the default certificate.
    pub(crate) certificates: Vec<CertificateFile>,
    /// `default` (serve the first certificate) or `refuse` (fail the handshake) for a
    /// server name no certificate covers. Default `default`.
    pub(crate) unknown_sni: Option<UnknownSni>,
    /// `"1.2"` (default) or `"1.3"`.
    pub(crate) min_version: Option<TlsVersion>,
    /// A handshake not finished within this is cut. Default `10s`.
    pub(crate) handshake_timeout: Option<String>,
    /// IANA cipher suite names, most preferred first; the server's order then wins.
    /// Default: every suite rustls offers with ring, the client's order winning.
    pub(crate) cipher_suites: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) client_auth: Option<ClientAuthFile>,
    /// `Strict-Transport-Security` on every response of this listener. Default: none.
    pub(crate) hsts: Option<HstsFile>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct CertificateFile {
    /// PEM certificate chain, leaf first.
    pub(crate) cert: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub(crate) key: String,
    /// Names this certificate is chosen for (`api.example.com`, `*.example.com`). Default:
    /// the certificate's DNS subject alternative names.
    pub(crate) server_names: Option<Vec<String>>,
}

/// Client certificates (mTLS) on a listener.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientAuthFile {
    /// `none` (default), `optional` or `required`.
    pub(crate) mode: Option<ClientAuthMode>,
    /// PEM bundle of the CAs client certificates must chain to.
    pub(crate) ca: Option<String>,
    /// Forward the verified client certificate's subject and SANs upstream in this header.
    /// Default: not forwarded. The header is always removed from client requests first.
    pub(crate) forward_header: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct HstsFile {
    /// How long browsers remember to use HTTPS only. Default `8760h` (365 days).
    pub(crate) max_age: Option<String>,
    /// Default `false`.
    pub(crate) include_subdomains: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedirectHttpsFile {
    /// The HTTPS port in the Location. Default `443` (then left out of the URL).
    pub(crate) port: Option<u16>,
    /// `301` or `308` (default; keeps the method and body).
    pub(crate) status: Option<u16>,
}

/// TLS to a cluster's endpoints.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamTlsFile {
    /// PEM bundle of the CAs to trust. Default: the Mozilla root set (webpki-roots).
    pub(crate) ca: Option<String>,
    /// The name sent as SNI and verified in the certificate. Default: the endpoint's host.
    pub(crate) server_name: Option<String>,
    /// A client certificate for mTLS to the backend (with `client_key`).
    pub(crate) client_cert: Option<String>,
    pub(crate) client_key: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenerLimitsFile {
    /// Request line + headers, in bytes. Default `64KiB`.
    pub(crate) max_header_bytes: Option<String>,
    /// Number of request header fields. Default `100`.
    pub(crate) max_headers: Option<usize>,
    /// Length of the request target. Default `8KiB`.
    pub(crate) max_uri_length: Option<String>,
    /// Total time to receive a request head. Default `10s`.
    pub(crate) header_read_timeout: Option<String>,
    /// Total time to receive a request body. Default `60s`.
    pub(crate) request_body_timeout: Option<String>,
    /// Close a connection with no request in flight after this long. Default `60s`.
    pub(crate) idle_timeout: Option<String>,
    /// Concurrent downstream connections on this listener. Default `10000`.
    pub(crate) max_connections: Option<usize>,
    /// HTTP/2 streams per connection. Default `128`.
    pub(crate) max_concurrent_streams: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClusterFile {
    pub(crate) name: String,
    /// `host:port` strings.
    pub(crate) endpoints: Vec<String>,
    /// `http1` (default) or `http2` (h2c, prior knowledge).
    pub(crate) protocol: Option<UpstreamProtocol>,
    /// Default `1s`.
    pub(crate) connect_timeout: Option<String>,
    #[serde(default)]
    pub(crate) pool: PoolFile,
    /// Speak TLS to the endpoints. Absent = plaintext.
    pub(crate) tls: Option<UpstreamTlsFile>,
    /// How an endpoint is picked (`upstream/policy.rs` owns this and the keys below).
    pub(crate) load_balancing: Option<LoadBalancingFile>,
    pub(crate) health_check: Option<HealthCheckFile>,
    pub(crate) outlier_detection: Option<OutlierDetectionFile>,
    pub(crate) panic_threshold: Option<u32>,
    pub(crate) circuit_breaker: Option<CircuitBreakerFile>,
    pub(crate) retry_budget: Option<RetryBudgetFile>,
    pub(crate) dns: Option<DnsFile>,
    /// The cluster is a gRPC service: its descriptors (for transcoding routes).
    pub(crate) grpc: Option<crate::grpc::GrpcClusterFile>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct PoolFile {
    /// Idle HTTP/1.1 connections kept per endpoint. Default `64`.
    pub(crate) max_idle_per_endpoint: Option<usize>,
    /// An idle pooled connection older than this is closed instead of reused. Default `90s`.
    pub(crate) idle_timeout: Option<String>,
}

/// A route's core keys. Its other keys belong to the concerns (`concerns.rs`) and are kept
/// as written in `policies` until each concern deserialises its own.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteFile {
    /// Used in metrics, logs and `explain`. Default `route-<index>`.
    pub(crate) name: Option<String>,
    #[serde(rename = "match", default)]
    pub(crate) matcher: MatchFile,
    /// Required unless the route answers by itself (`direct_response`, `redirect`).
    pub(crate) cluster: Option<String>,
    #[serde(skip)]
    pub(crate) policies: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct MatchFile {
    /// `api.example.com` or `*.example.com`; absent = any host.
    pub(crate) host: Option<String>,
    pub(crate) path_exact: Option<String>,
    pub(crate) path_prefix: Option<String>,
    /// `/v1/users/{id}`, `/v1/files/{path=**}`, `*` = one segment, `**` = the rest.
    pub(crate) path_template: Option<String>,
    /// Absent or empty = any method.
    #[serde(default)]
    pub(crate) methods: Vec<String>,
    #[serde(default)]
    pub(crate) headers: Vec<NameValueFile>,
    #[serde(default)]
    pub(crate) query: Vec<NameValueFile>,
}

/// A header or query condition: present when `value` is absent, equal to `value` otherwise.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct NameValueFile {
    pub(crate) name: String,
    pub(crate) value: Option<String>,
}
