//! The configuration file as written: serde structures that mirror the YAML keys one to one.
//!
//! Nothing here is interpreted yet. Every struct denies unknown keys, durations and sizes are
//! still strings (`"250ms"`, `"1MiB"`), and names are unresolved. `validate.rs` turns this
//! into the typed [`crate::config::model::Config`] and reports every problem at once; the
//! `Serialize` side is what the admin `/config` endpoint dumps (with secrets redacted).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub runtime: RuntimeFile,
    #[serde(default)]
    pub admin: Option<AdminFile>,
    #[serde(default)]
    pub access_log: AccessLogFile,
    #[serde(default)]
    pub listeners: Vec<ListenerFile>,
    #[serde(default)]
    pub clusters: Vec<ClusterFile>,
    #[serde(default)]
    pub routes: Vec<RouteFile>,
}

/// Process-wide settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeFile {
    /// Worker threads; 0 or absent = one per CPU.
    pub workers: Option<usize>,
    /// How long in-flight requests may run after SIGTERM. Default `30s`.
    pub drain_timeout: Option<String>,
    /// How often the config file is checked for changes. Default `2s`; `0s` disables.
    pub watch_interval: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub address: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccessLogFile {
    /// Default `true`.
    pub enabled: Option<bool>,
    /// `stdout` (default), `stderr` or a file path (appended to).
    pub path: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    pub name: String,
    pub address: String,
    /// Add `Via: <version> portico` to forwarded requests and responses. Default `false`.
    pub via: Option<bool>,
    #[serde(default)]
    pub limits: ListenerLimitsFile,
    /// Terminate TLS on this listener. Absent = plaintext HTTP.
    pub tls: Option<ListenerTlsFile>,
    /// Answer every request with a redirect to HTTPS instead of proxying (plaintext
    /// listeners only).
    pub redirect_https: Option<RedirectHttpsFile>,
}

/// TLS termination on a listener.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsFile {
    /// At least one; the first is the default certificate.
    pub certificates: Vec<CertificateFile>,
    /// `default` (serve the first certificate) or `refuse` (fail the handshake) for a
    /// server name no certificate covers. Default `default`.
    pub unknown_sni: Option<String>,
    /// `"1.2"` (default) or `"1.3"`.
    pub min_version: Option<String>,
    /// A handshake not finished within this is cut. Default `10s`.
    pub handshake_timeout: Option<String>,
    #[serde(default)]
    pub client_auth: Option<ClientAuthFile>,
    /// `Strict-Transport-Security` on every response of this listener. Default: none.
    pub hsts: Option<HstsFile>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateFile {
    /// PEM certificate chain, leaf first.
    pub cert: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// Names this certificate is chosen for (`api.example.com`, `*.example.com`). Default:
    /// the certificate's DNS subject alternative names.
    pub server_names: Option<Vec<String>>,
}

/// Client certificates (mTLS) on a listener.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthFile {
    /// `none` (default), `optional` or `required`.
    pub mode: Option<String>,
    /// PEM bundle of the CAs client certificates must chain to.
    pub ca: Option<String>,
    /// Forward the verified client certificate's subject and SANs upstream in this header.
    /// Default: not forwarded. The header is always removed from client requests first.
    pub forward_header: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HstsFile {
    /// How long browsers remember to use HTTPS only. Default `8760h` (365 days).
    pub max_age: Option<String>,
    /// Default `false`.
    pub include_subdomains: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedirectHttpsFile {
    /// The HTTPS port in the Location. Default `443` (then left out of the URL).
    pub port: Option<u16>,
    /// `301` or `308` (default; keeps the method and body).
    pub status: Option<u16>,
}

/// TLS to a cluster's endpoints.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsFile {
    /// PEM bundle of the CAs to trust. Default: the Mozilla root set (webpki-roots).
    pub ca: Option<String>,
    /// The name sent as SNI and verified in the certificate. Default: the endpoint's host.
    pub server_name: Option<String>,
    /// A client certificate for mTLS to the backend (with `client_key`).
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerLimitsFile {
    /// Request line + headers, in bytes. Default `64KiB`.
    pub max_header_bytes: Option<String>,
    /// Number of request header fields. Default `100`.
    pub max_headers: Option<usize>,
    /// Length of the request target. Default `8KiB`.
    pub max_uri_length: Option<String>,
    /// Total time to receive a request head. Default `10s`.
    pub header_read_timeout: Option<String>,
    /// Total time to receive a request body. Default `60s`.
    pub request_body_timeout: Option<String>,
    /// Close a connection with no request in flight after this long. Default `60s`.
    pub idle_timeout: Option<String>,
    /// Concurrent downstream connections on this listener. Default `10000`.
    pub max_connections: Option<usize>,
    /// HTTP/2 streams per connection. Default `128`.
    pub max_concurrent_streams: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    pub name: String,
    /// `host:port` strings.
    pub endpoints: Vec<String>,
    /// `http1` (default) or `http2` (h2c, prior knowledge).
    pub protocol: Option<String>,
    /// Default `1s`.
    pub connect_timeout: Option<String>,
    #[serde(default)]
    pub pool: PoolFile,
    /// Speak TLS to the endpoints. Absent = plaintext.
    pub tls: Option<UpstreamTlsFile>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PoolFile {
    /// Idle HTTP/1.1 connections kept per endpoint. Default `64`.
    pub max_idle_per_endpoint: Option<usize>,
    /// An idle pooled connection older than this is closed instead of reused. Default `90s`.
    pub idle_timeout: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Used in metrics, logs and `explain`. Default `route-<index>`.
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matcher: MatchFile,
    pub cluster: String,
    /// Remove this leading path (on a segment boundary) before forwarding.
    pub strip_prefix: Option<String>,
    /// Replace the Host header sent upstream.
    pub host_rewrite: Option<String>,
    /// Time for the upstream to answer with a response head. Default `15s`.
    pub timeout: Option<String>,
    /// Largest request body accepted. Default `10MiB`.
    pub max_body_size: Option<String>,
    #[serde(default)]
    pub request_headers: HeaderOpsFile,
    #[serde(default)]
    pub response_headers: HeaderOpsFile,
    /// Answer 403 unless the connection presented a verified client certificate.
    /// Default `false`.
    pub require_client_cert: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MatchFile {
    /// `api.example.com` or `*.example.com`; absent = any host.
    pub host: Option<String>,
    pub path_exact: Option<String>,
    pub path_prefix: Option<String>,
    /// `/v1/users/{id}`, `/v1/files/{path=**}`, `*` = one segment, `**` = the rest.
    pub path_template: Option<String>,
    /// Absent or empty = any method.
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub headers: Vec<NameValueFile>,
    #[serde(default)]
    pub query: Vec<NameValueFile>,
}

/// A header or query condition: present when `value` is absent, equal to `value` otherwise.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NameValueFile {
    pub name: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderOpsFile {
    /// Replace any existing value.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Append a value, keeping existing ones.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}
