//! Semantic validation: the deserialised file ([`Parts`]) → the typed [`Config`], with every
//! problem reported under its key path and line:column.
//!
//! Part of config loading (read → parse with positions → env substitution → structural
//! deserialise → **semantic validation** → typed `Config`). This is where defaults are applied,
//! strings become durations, sizes, addresses, header names and methods, names are
//! cross-referenced, and limits are range-checked. Nothing stops at the first problem: each
//! check reports and moves on, and a [`Config`] is produced only when there were none, so
//! the code that builds the runtime from it never re-validates (see `model.rs`).

use super::check::{normalise_prefix, Checker, RouteCheck, SectionLookup};
use super::deserialize::closest;
use super::dump::RouteDumps;
use super::file::{
    AdminFile, ClientAuthFile, ClusterFile, HstsFile, ListenerFile, ListenerLimitsFile,
    ListenerTlsFile, MatchFile, RedirectHttpsFile, RouteFile, RuntimeFile, UpstreamTlsFile,
};
use super::model::{
    AdminSettings, CertificateSource, ClientAuth, ClientAuthMode, Cluster, Endpoint,
    HeaderCondition, HostMatch, Hsts, Listener, ListenerLimits, ListenerTls, PathMatch,
    PoolSettings, QueryCondition, RedirectHttps, RouteMatch, RuntimeSettings, TlsVersion,
    UnknownSni, UpstreamProtocol, UpstreamTls,
};
use super::problem::Problem;
use super::share::SharedPolicies;
use super::source::{KeyPath, Seg, SourceMap};
use super::structure::Parts;
use super::units::format_size;
use super::{Config, Route};
use crate::concerns::{RoutePolicies, Sections};
use crate::pki;
use http::{HeaderName, HeaderValue, Method};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

#[cfg(test)]
use super::check::is_segment_prefix;

const MAX_WORKERS: usize = 1024;
const MIN_HEADER_BYTES: u64 = 1024;
const MAX_HEADER_BYTES: u64 = 1024 * 1024;
const MAX_HEADERS: usize = 1000;
const MIN_URI_LENGTH: u64 = 256;

const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(2);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_HSTS_MAX_AGE: Duration = Duration::from_secs(365 * 24 * 3600);

/// What secrets are replaced with in `Config::redacted_dump`.
pub(crate) const REDACTED: &str = "<redacted>";

/// Check everything and build the [`Config`]. The config is `Some` only when every part is
/// present and no problem was found here; the caller still refuses it if an earlier stage
/// reported one (an element is present after `structure.rs` set a bad key aside, so that its
/// other fields are checked too).
pub(crate) fn validate(
    parts: &Parts,
    map: &SourceMap,
    base_dir: Option<&Path>,
) -> (Option<Config>, Vec<Problem>) {
    let mut v = Validator {
        check: Checker::new(map, base_dir),
        bound: Vec::new(),
    };
    let mut dump = Map::new();
    let runtime = parts.runtime.as_ref().and_then(|r| v.runtime(r));
    v.check.set_listener_names(
        parts
            .listeners
            .iter()
            .flatten()
            .map(|listener| listener.name.clone())
            .collect(),
    );
    let sections =
        Sections::check(&parts.sections, &mut v.check, &mut dump).filter(|_| parts.sections_ok);
    let listeners = v.listeners(&parts.listeners);
    // After the listeners, so the admin address can be checked against theirs.
    let admin = parts.admin.as_ref().and_then(|a| v.admin(a.as_ref()));
    let clusters = v.clusters(&parts.clusters);
    let lookup = sections.as_ref().map(|s| s as &dyn SectionLookup);
    let (routes, route_dumps) = v.routes(parts, lookup, &map.secrets);

    dump_into(&mut dump, "runtime", &parts.runtime);
    dump_into(&mut dump, "admin", &parts.admin);
    dump_into(&mut dump, "listeners", &parts.listeners);
    dump_into(&mut dump, "clusters", &parts.clusters);
    // The routes' secrets were redacted route by route, as their dumps were written.
    let mut dump = Value::Object(dump);
    redact(&mut dump, &map.secrets);
    let dump = match dump {
        Value::Object(rest) => route_dumps.finish(rest),
        _ => route_dumps.finish(Map::new()),
    };

    let config = (|| {
        Some(Config {
            runtime: runtime?,
            admin: admin?,
            listeners: listeners.into_iter().collect::<Option<_>>()?,
            clusters: clusters.into_iter().collect::<Option<_>>()?,
            routes: routes.into_iter().collect::<Option<_>>()?,
            sections: sections?,
            redacted_dump: dump,
        })
    })();
    let problems = v.check.into_problems();
    if problems.is_empty() {
        (config, problems)
    } else {
        (None, problems)
    }
}

/// One core section in the config dump, as it deserialised.
fn dump_into<T: Serialize>(dump: &mut Map<String, Value>, key: &str, part: &T) {
    if let Ok(value) = serde_json::to_value(part) {
        dump.insert(key.to_string(), value);
    }
}

/// Replace the value at every secret path with [`REDACTED`]. Paths are those of the file, and
/// the file structs serialise with the file's key names, so they line up one to one.
fn redact(dump: &mut Value, secrets: &[KeyPath]) {
    for secret in secrets {
        redact_at(dump, secret.segments());
    }
}

/// The secrets of route `index`, in that route's own dump (written before the next route's).
fn redact_route(route: &mut Value, secrets: &[KeyPath], index: usize) {
    for secret in secrets {
        if let [Seg::Key(key), Seg::Index(at), within @ ..] = secret.segments() {
            if key == "routes" && *at == index {
                redact_at(route, within);
            }
        }
    }
}

fn redact_at(dump: &mut Value, segments: &[Seg]) {
    let mut slot = Some(dump);
    for seg in segments {
        slot = match (slot, seg) {
            (Some(Value::Object(object)), Seg::Key(key)) => object.get_mut(key),
            (Some(Value::Array(items)), Seg::Index(index)) => items.get_mut(*index),
            _ => None,
        };
    }
    if let Some(slot) = slot {
        *slot = Value::String(REDACTED.to_string());
    }
}

struct Validator<'a> {
    check: Checker<'a>,
    /// Listeners whose address parsed: (index, name, address), for overlap checks.
    bound: Vec<(usize, String, SocketAddr)>,
}

impl<'a> std::ops::Deref for Validator<'a> {
    type Target = Checker<'a>;

    fn deref(&self) -> &Checker<'a> {
        &self.check
    }
}

impl<'a> std::ops::DerefMut for Validator<'a> {
    fn deref_mut(&mut self) -> &mut Checker<'a> {
        &mut self.check
    }
}

impl Validator<'_> {
    fn runtime(&mut self, runtime: &RuntimeFile) -> Option<RuntimeSettings> {
        let path = KeyPath::root().key("runtime");
        let workers = match runtime.workers {
            None | Some(0) => Some(None),
            Some(n) if n <= MAX_WORKERS => Some(Some(n)),
            Some(n) => {
                let message = format!(
                    "{n} worker threads is more than the maximum of {MAX_WORKERS}; use 0 for \
                     one per CPU"
                );
                self.report(&path.key("workers"), message);
                None
            }
        };
        // A drain timeout of 0s is legitimate: close in-flight requests at once.
        let drain_timeout = self.duration(
            &path.key("drain_timeout"),
            runtime.drain_timeout.as_deref(),
            DEFAULT_DRAIN_TIMEOUT,
            true,
        );
        let watch_interval = self.duration(
            &path.key("watch_interval"),
            runtime.watch_interval.as_deref(),
            DEFAULT_WATCH_INTERVAL,
            true,
        );
        Some(RuntimeSettings {
            workers: workers?,
            drain_timeout: drain_timeout?,
            // `0s` turns watching off.
            watch_interval: Some(watch_interval?).filter(|interval| !interval.is_zero()),
        })
    }

    fn admin(&mut self, admin: Option<&AdminFile>) -> Option<Option<AdminSettings>> {
        let Some(admin) = admin else {
            return Some(None);
        };
        let path = KeyPath::root().key("admin").key("address");
        let address = self.socket_addr(&path, &admin.address)?;
        let clash = self
            .bound
            .iter()
            .find(|(_, _, listener)| overlaps(address, *listener))
            .cloned();
        if let Some((index, name, listener)) = clash {
            let message = format!(
                "the admin address {address} overlaps listener `{name}` (listeners[{index}], \
                 {listener}); the admin endpoint needs its own port"
            );
            self.report(&path, message);
            return None;
        }
        Some(Some(AdminSettings { address }))
    }

    fn listeners(&mut self, files: &[Option<ListenerFile>]) -> Vec<Option<Listener>> {
        let section = KeyPath::root().key("listeners");
        if files.is_empty() {
            self.report(
                &section,
                "at least one listener is required, e.g. `- {name: public, address: 0.0.0.0:8080}`",
            );
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut listeners = Vec::with_capacity(files.len());
        for (index, file) in files.iter().enumerate() {
            let Some(file) = file else {
                listeners.push(None);
                continue;
            };
            let path = section.index(index);
            let name_ok = self.unique_name(&section, index, "listener", &file.name, &mut names);
            let address = self.socket_addr(&path.key("address"), &file.address);
            let address =
                address.and_then(|address| self.unshared_address(index, &file.name, address));
            let limits = self.limits(&path.key("limits"), &file.limits);
            let tls = match &file.tls {
                None => Some(None),
                Some(tls) => self.listener_tls(&path.key("tls"), tls).map(Some),
            };
            let redirect_https = match &file.redirect_https {
                None => Some(None),
                Some(redirect) => self
                    .redirect_https(&path.key("redirect_https"), redirect, file.tls.is_some())
                    .map(Some),
            };
            listeners.push(match (name_ok, address, limits, tls, redirect_https) {
                (true, Some(address), Some(limits), Some(tls), Some(redirect_https)) => {
                    Some(Listener {
                        name: file.name.clone(),
                        address,
                        via: file.via.unwrap_or(false),
                        headers_with_underscores: file.headers_with_underscores.unwrap_or_default(),
                        limits,
                        tls,
                        redirect_https,
                    })
                }
                _ => None,
            });
        }
        listeners
    }

    fn listener_tls(&mut self, path: &KeyPath, file: &ListenerTlsFile) -> Option<ListenerTls> {
        let section = path.key("certificates");
        let mut ok = true;
        if file.certificates.is_empty() {
            self.report(
                &section,
                "at least one certificate is required: `- {cert: server.pem, key: server-key.pem}`",
            );
            ok = false;
        }
        // Which certificate first claimed each name, to report overlaps.
        let mut claimed: HashMap<String, usize> = HashMap::new();
        let mut certificates = Vec::with_capacity(file.certificates.len());
        for (index, entry) in file.certificates.iter().enumerate() {
            let item = section.index(index);
            let pair = self.key_pair(&item.key("cert"), &entry.cert, &item.key("key"), &entry.key);
            let explicit = match &entry.server_names {
                None => Some(Vec::new()),
                Some(list) => self.server_names(&item.key("server_names"), list),
            };
            let (Some((cert, key, chain)), Some(explicit)) = (pair, explicit) else {
                ok = false;
                continue;
            };
            let names = if explicit.is_empty() {
                pki::inspect(&chain[0])
                    .map(|facts| facts.dns_names)
                    .unwrap_or_default()
            } else {
                explicit.clone()
            };
            if names.is_empty() && index > 0 {
                let message = format!(
                    "{} has no DNS names (subject alternative names), so SNI can never select                      it; list its names in server_names (only the first certificate is served                      without a match)",
                    cert.display()
                );
                self.report(&item.key("cert"), message);
                ok = false;
            }
            for name in names {
                match claimed.get(&name) {
                    Some(first) if *first != index => {
                        let message = format!(
                            "the name {name} is also served by certificates[{first}]; each name                              must select one certificate"
                        );
                        self.report(&item, message);
                        ok = false;
                    }
                    _ => {
                        claimed.insert(name, index);
                    }
                }
            }
            certificates.push(CertificateSource {
                cert,
                key,
                server_names: explicit,
            });
        }
        let unknown_sni = Some(file.unknown_sni.unwrap_or(UnknownSni::DefaultCertificate));
        let min_version = Some(file.min_version.unwrap_or(TlsVersion::Tls12));
        let handshake_timeout = self.duration(
            &path.key("handshake_timeout"),
            file.handshake_timeout.as_deref(),
            DEFAULT_HANDSHAKE_TIMEOUT,
            false,
        );
        let cipher_suites = match &file.cipher_suites {
            None => Some(None),
            Some(names) => {
                let allowed = file.min_version.unwrap_or(TlsVersion::Tls12);
                self.cipher_suites(&path.key("cipher_suites"), names, allowed)
                    .map(Some)
            }
        };
        let client_auth = match &file.client_auth {
            None => Some(ClientAuth::default()),
            Some(auth) => self.client_auth(&path.key("client_auth"), auth),
        };
        let hsts = match &file.hsts {
            None => Some(None),
            Some(hsts) => self.hsts(&path.key("hsts"), hsts).map(Some),
        };
        Some(ListenerTls {
            certificates: ok.then_some(certificates)?,
            unknown_sni: unknown_sni?,
            min_version: min_version?,
            handshake_timeout: handshake_timeout?,
            cipher_suites: cipher_suites?,
            client_auth: client_auth?,
            hsts: hsts?,
        })
    }

    /// `cipher_suites`: IANA names of suites the crypto provider implements, each once, and
    /// at least one usable with `min_version` (a TLS 1.3-only listener needs a TLS 1.3 suite).
    fn cipher_suites(
        &mut self,
        path: &KeyPath,
        names: &[String],
        min_version: TlsVersion,
    ) -> Option<Vec<rustls::SupportedCipherSuite>> {
        let known = pki::cipher_suites();
        if names.is_empty() {
            self.report(
                path,
                "an empty list allows no cipher suite; leave cipher_suites out for the defaults",
            );
            return None;
        }
        let mut ok = true;
        let mut chosen = Vec::with_capacity(names.len());
        let mut first_at: HashMap<&str, usize> = HashMap::new();
        for (index, name) in names.iter().enumerate() {
            let item = path.index(index);
            let Some((_, suite)) = known.iter().find(|(known, _)| *known == name.as_str()) else {
                let list = known.map(|(name, _)| name).join(", ");
                let openssl = pki::iana_name_of_openssl(name);
                let message = match openssl.or_else(|| closest(name, known.iter().map(|(n, _)| *n)))
                {
                    Some(iana) if openssl.is_some() => format!(
                        "{name} is OpenSSL's name for this suite; write its IANA name `{iana}`"
                    ),
                    Some(near) => format!(
                        "unknown cipher suite {name:?}, did you mean `{near}`? (supported, by \
                         IANA name: {list})"
                    ),
                    None => {
                        format!("unknown cipher suite {name:?}; supported, by IANA name: {list}")
                    }
                };
                self.report(&item, message);
                ok = false;
                continue;
            };
            if let Some(first) = first_at.insert(name.as_str(), index) {
                let message = format!("{name} is listed twice (also cipher_suites[{first}])");
                self.report(&item, message);
                ok = false;
                continue;
            }
            chosen.push(*suite);
        }
        if !ok {
            return None;
        }
        let tls13_only = min_version == TlsVersion::Tls13;
        let usable = chosen
            .iter()
            .any(|suite| !tls13_only || suite.version() == &rustls::version::TLS13);
        if !usable {
            let tls13: Vec<&str> = known
                .iter()
                .filter(|(_, suite)| suite.version() == &rustls::version::TLS13)
                .map(|(name, _)| *name)
                .collect();
            let message = format!(
                "no suite here can be used with min_version \"1.3\": {} only work with TLS \
                 1.2; add a TLS 1.3 suite ({})",
                chosen
                    .iter()
                    .map(|suite| pki::cipher_suite_name(*suite))
                    .collect::<Vec<_>>()
                    .join(", "),
                tls13.join(", ")
            );
            self.report(path, message);
            return None;
        }
        Some(chosen)
    }

    /// `server_names`: DNS names or `*.` wildcards, lowercased, at least one.
    fn server_names(&mut self, path: &KeyPath, list: &[String]) -> Option<Vec<String>> {
        if list.is_empty() {
            self.report(
                path,
                "an empty list selects nothing; leave server_names out to use the \
                 certificate's own names",
            );
            return None;
        }
        let mut names = Vec::with_capacity(list.len());
        let mut ok = true;
        for (index, text) in list.iter().enumerate() {
            match parse_host(text) {
                Ok(HostMatch::Exact(name)) if !name.starts_with('[') => names.push(name),
                Ok(HostMatch::Suffix(suffix)) => names.push(format!("*{suffix}")),
                Ok(HostMatch::Exact(_)) => {
                    self.report(
                        &path.index(index),
                        "an IP address is never sent as SNI; list DNS names only",
                    );
                    ok = false;
                }
                Err(message) => {
                    self.report(&path.index(index), message);
                    ok = false;
                }
            }
        }
        ok.then_some(names)
    }

    fn client_auth(&mut self, path: &KeyPath, file: &ClientAuthFile) -> Option<ClientAuth> {
        let mode = Some(file.mode.unwrap_or_default());
        let ca = match (mode, file.ca.as_deref()) {
            (Some(ClientAuthMode::None), Some(_)) => {
                self.report(
                    &path.key("ca"),
                    "has no effect with mode none; set mode to optional or required",
                );
                None
            }
            (Some(ClientAuthMode::None), None) | (None, _) => Some(None),
            (Some(_), None) => {
                self.report(
                    path,
                    "`ca` (a PEM bundle of the CAs client certificates must chain to) is \
                     required when mode is optional or required",
                );
                None
            }
            (Some(_), Some(text)) => self.ca_bundle(&path.key("ca"), text).map(Some),
        };
        let forward_header = match file.forward_header.as_deref() {
            None => Some(None),
            Some(_) if mode == Some(ClientAuthMode::None) => {
                self.report(
                    &path.key("forward_header"),
                    "there is no client certificate to forward with mode none",
                );
                None
            }
            Some(text) => match super::check::header_op_name(text, true) {
                Ok(name) => Some(Some(name)),
                Err(message) => {
                    self.report(&path.key("forward_header"), message);
                    None
                }
            },
        };
        Some(ClientAuth {
            mode: mode?,
            ca: ca?,
            forward_header: forward_header?,
        })
    }

    fn hsts(&mut self, path: &KeyPath, file: &HstsFile) -> Option<Hsts> {
        // max-age=0 is meaningful: it tells browsers to forget the policy.
        let max_age = self.duration(
            &path.key("max_age"),
            file.max_age.as_deref(),
            DEFAULT_HSTS_MAX_AGE,
            true,
        )?;
        Some(Hsts {
            max_age,
            include_subdomains: file.include_subdomains.unwrap_or(false),
        })
    }

    fn redirect_https(
        &mut self,
        path: &KeyPath,
        file: &RedirectHttpsFile,
        has_tls: bool,
    ) -> Option<RedirectHttps> {
        if has_tls {
            self.report(
                path,
                "a TLS listener cannot redirect to HTTPS: it already is HTTPS; remove \
                 redirect_https or tls",
            );
            return None;
        }
        let port = match file.port.unwrap_or(443) {
            0 => {
                self.report(&path.key("port"), "must be a port from 1 to 65535");
                None
            }
            port => Some(port),
        };
        let status = match file.status.unwrap_or(308) {
            status @ (301 | 308) => Some(status),
            other => {
                let message = format!(
                    "{other} is not a redirect status used here: expected 301 or 308 (308 \
                     keeps the method and body)"
                );
                self.report(&path.key("status"), message);
                None
            }
        };
        Some(RedirectHttps {
            port: port?,
            status: status?,
        })
    }

    fn upstream_tls(&mut self, path: &KeyPath, file: &UpstreamTlsFile) -> Option<UpstreamTls> {
        let ca = match file.ca.as_deref() {
            None => Some(None),
            Some(text) => self.ca_bundle(&path.key("ca"), text).map(Some),
        };
        let server_name = match file.server_name.as_deref() {
            None => Some(None),
            Some(text) => match rustls_pki_types::ServerName::try_from(text) {
                Ok(_) => Some(Some(text.to_ascii_lowercase())),
                Err(_) => {
                    let message = format!("{text:?} is not a DNS name or IP address usable as SNI");
                    self.report(&path.key("server_name"), message);
                    None
                }
            },
        };
        let client_cert = match (file.client_cert.as_deref(), file.client_key.as_deref()) {
            (None, None) => Some(None),
            (Some(cert), Some(key)) => self
                .key_pair(&path.key("client_cert"), cert, &path.key("client_key"), key)
                .map(|(cert, key, _)| Some((cert, key))),
            (Some(_), None) => {
                self.report(path, "client_cert needs client_key (its private key)");
                None
            }
            (None, Some(_)) => {
                self.report(path, "client_key needs client_cert (the certificate chain)");
                None
            }
        };
        Some(UpstreamTls {
            ca: ca?,
            server_name: server_name?,
            client_cert: client_cert?,
        })
    }

    /// Names must be non-empty and unique within their list; `seen` maps name → first index.
    fn unique_name<'n>(
        &mut self,
        section: &KeyPath,
        index: usize,
        kind: &str,
        name: &'n str,
        seen: &mut HashMap<&'n str, usize>,
    ) -> bool {
        let path = section.index(index).key("name");
        if name.is_empty() {
            self.report(&path, format!("a {kind} name cannot be empty"));
            return false;
        }
        if let Some(first) = seen.get(name) {
            let first = section.index(*first);
            let message = format!("duplicate {kind} name `{name}` (also {first})");
            self.report(&path, message);
            return false;
        }
        seen.insert(name, index);
        true
    }

    /// Two listeners cannot bind overlapping addresses; port 0 (pick a free port) never clashes.
    fn unshared_address(
        &mut self,
        index: usize,
        name: &str,
        address: SocketAddr,
    ) -> Option<SocketAddr> {
        let clash = self
            .bound
            .iter()
            .find(|(_, _, other)| overlaps(address, *other))
            .cloned();
        if let Some((other_index, other_name, other)) = clash {
            let message = if other == address {
                format!(
                    "address {address} is already used by listener `{other_name}` \
                     (listeners[{other_index}])"
                )
            } else {
                format!(
                    "address {address} overlaps {other} of listener `{other_name}` \
                     (listeners[{other_index}]): both bind port {}",
                    address.port()
                )
            };
            let path = KeyPath::root().key("listeners").index(index).key("address");
            self.report(&path, message);
            return None;
        }
        self.bound.push((index, name.to_string(), address));
        Some(address)
    }

    fn limits(&mut self, path: &KeyPath, file: &ListenerLimitsFile) -> Option<ListenerLimits> {
        let defaults = ListenerLimits::default();
        let header_bytes_path = path.key("max_header_bytes");
        let max_header_bytes = self.size_in_range(
            &header_bytes_path,
            file.max_header_bytes.as_deref(),
            defaults.max_header_bytes as u64,
            (MIN_HEADER_BYTES, MAX_HEADER_BYTES),
        );
        let max_headers = self.count(
            &path.key("max_headers"),
            file.max_headers,
            defaults.max_headers,
            (1, MAX_HEADERS),
        );
        let uri_path = path.key("max_uri_length");
        let mut max_uri_length = self.size_in_range(
            &uri_path,
            file.max_uri_length.as_deref(),
            defaults.max_uri_length as u64,
            (MIN_URI_LENGTH, MAX_HEADER_BYTES),
        );
        // The request line is part of the head, so a URI longer than the head budget could
        // never be received; say so at whichever of the two the user actually wrote.
        if let (Some(uri), Some(head)) = (max_uri_length, max_header_bytes) {
            if uri > head {
                let (uri_text, head_text) = (format_size(uri as u64), format_size(head as u64));
                if file.max_uri_length.is_some() {
                    let message = format!(
                        "max_uri_length {uri_text} is larger than max_header_bytes {head_text}: \
                         the request line must fit in the header budget"
                    );
                    self.report(&uri_path, message);
                } else {
                    let message = format!(
                        "max_header_bytes {head_text} is smaller than the default \
                         max_uri_length of {uri_text}; set max_uri_length too"
                    );
                    self.report(&header_bytes_path, message);
                }
                max_uri_length = None;
            }
        }
        let header_read_timeout = self.duration(
            &path.key("header_read_timeout"),
            file.header_read_timeout.as_deref(),
            defaults.header_read_timeout,
            false,
        );
        let request_body_timeout = self.duration(
            &path.key("request_body_timeout"),
            file.request_body_timeout.as_deref(),
            defaults.request_body_timeout,
            false,
        );
        let idle_timeout = self.duration(
            &path.key("idle_timeout"),
            file.idle_timeout.as_deref(),
            defaults.idle_timeout,
            false,
        );
        let max_connections = self.count(
            &path.key("max_connections"),
            file.max_connections,
            defaults.max_connections,
            (1, usize::MAX),
        );
        let max_concurrent_streams = self.count(
            &path.key("max_concurrent_streams"),
            file.max_concurrent_streams,
            defaults.max_concurrent_streams,
            (1, u32::MAX),
        );
        Some(ListenerLimits {
            max_header_bytes: max_header_bytes?,
            max_headers: max_headers?,
            max_uri_length: max_uri_length?,
            header_read_timeout: header_read_timeout?,
            request_body_timeout: request_body_timeout?,
            idle_timeout: idle_timeout?,
            max_connections: max_connections?,
            max_concurrent_streams: max_concurrent_streams?,
        })
    }

    fn clusters(&mut self, files: &[Option<ClusterFile>]) -> Vec<Option<Cluster>> {
        let section = KeyPath::root().key("clusters");
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut clusters = Vec::with_capacity(files.len());
        for (index, file) in files.iter().enumerate() {
            let Some(file) = file else {
                clusters.push(None);
                continue;
            };
            let path = section.index(index);
            let name_ok = self.unique_name(&section, index, "cluster", &file.name, &mut names);
            let endpoints = self.endpoints(&path.key("endpoints"), &file.endpoints);
            let protocol = Some(file.protocol.unwrap_or(UpstreamProtocol::Http1));
            let connect_timeout = self.duration(
                &path.key("connect_timeout"),
                file.connect_timeout.as_deref(),
                DEFAULT_CONNECT_TIMEOUT,
                false,
            );
            let pool_defaults = PoolSettings::default();
            let pool_idle_timeout = self.duration(
                &path.key("pool").key("idle_timeout"),
                file.pool.idle_timeout.as_deref(),
                pool_defaults.idle_timeout,
                false,
            );
            let tls = match &file.tls {
                None => Some(None),
                Some(tls) => self.upstream_tls(&path.key("tls"), tls).map(Some),
            };
            let grpc = match (&file.grpc, protocol) {
                (Some(grpc), Some(protocol)) => {
                    crate::grpc::descriptors::check_cluster(&mut self.check, &path, grpc, protocol)
                        .map(Some)
                }
                _ => Some(None),
            };
            let policy = crate::upstream::policy::check(
                &crate::upstream::policy::PolicyFiles {
                    load_balancing: file.load_balancing.as_ref(),
                    health_check: file.health_check.as_ref(),
                    outlier_detection: file.outlier_detection.as_ref(),
                    panic_threshold: file.panic_threshold,
                    circuit_breaker: file.circuit_breaker.as_ref(),
                    retry_budget: file.retry_budget.as_ref(),
                    dns: file.dns.as_ref(),
                    http2: file.protocol == Some(UpstreamProtocol::Http2),
                },
                &path,
                &file.endpoints,
                &mut self.check,
            );
            let cluster = (|| {
                Some(Cluster {
                    policy: policy?,
                    grpc: grpc?,
                    tls: tls?,
                    name: name_ok.then(|| file.name.clone())?,
                    endpoints: endpoints?,
                    protocol: protocol?,
                    connect_timeout: connect_timeout?,
                    pool: PoolSettings {
                        max_idle_per_endpoint: file
                            .pool
                            .max_idle_per_endpoint
                            .unwrap_or(pool_defaults.max_idle_per_endpoint),
                        idle_timeout: pool_idle_timeout?,
                    },
                })
            })();
            clusters.push(cluster);
        }
        clusters
    }

    fn endpoints(&mut self, path: &KeyPath, texts: &[String]) -> Option<Vec<Endpoint>> {
        if texts.is_empty() {
            self.report(path, "a cluster needs at least one endpoint (`host:port`)");
            return None;
        }
        let mut endpoints = Vec::with_capacity(texts.len());
        let mut ok = true;
        for (index, text) in texts.iter().enumerate() {
            let item = path.index(index);
            match parse_endpoint(text) {
                Ok(endpoint) if endpoints.contains(&endpoint) => {
                    self.report(&item, format!("duplicate endpoint {endpoint}"));
                    ok = false;
                }
                Ok(endpoint) => endpoints.push(endpoint),
                Err(message) => {
                    self.report(&item, message);
                    ok = false;
                }
            }
        }
        ok.then_some(endpoints)
    }

    /// The routes, and each route's part of the config dump: its core keys and every
    /// concern's keys as they deserialised.
    fn routes(
        &mut self,
        parts: &Parts,
        sections: Option<&dyn SectionLookup>,
        secrets: &[KeyPath],
    ) -> (Vec<Option<Route>>, RouteDumps) {
        let section = KeyPath::root().key("routes");
        // First definition wins for lookups; duplicates are reported by `clusters()`.
        let mut cluster_index: HashMap<&str, usize> = HashMap::new();
        let mut known: Vec<&str> = Vec::new();
        for (index, cluster) in parts.clusters.iter().enumerate() {
            if let Some(cluster) = cluster {
                cluster_index.entry(cluster.name.as_str()).or_insert(index);
                if !known.contains(&cluster.name.as_str()) {
                    known.push(&cluster.name);
                }
            }
        }
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut routes = Vec::with_capacity(parts.routes.len());
        let mut dumps = RouteDumps::default();
        let mut shared = SharedPolicies::default();
        for (index, file) in parts.routes.iter().enumerate() {
            let Some(file) = file else {
                routes.push(None);
                continue;
            };
            let path = section.index(index);

            let name = self.route_name(&path, index, file, &mut names);
            let cluster = match &file.cluster {
                // Allowed only for a route that answers by itself: checked with its policies.
                None => Some(None),
                Some(name) => match cluster_index.get(name.as_str()) {
                    Some(index) => Some(Some(*index)),
                    None => {
                        // A cluster that failed to deserialise was reported already.
                        if !parts.unparsed_cluster_names.contains(name) {
                            let message = unknown_cluster_message(name, &known);
                            self.report(&path.key("cluster"), message);
                        }
                        None
                    }
                },
            };
            let matcher = self.matcher(&path.key("match"), &file.matcher);
            // Everything else about the route belongs to the concerns.
            let cluster_file = cluster
                .flatten()
                .and_then(|index| parts.clusters.get(index)?.as_ref());
            let mut check = RouteCheck::new(
                &mut self.check,
                path.clone(),
                &file.matcher,
                &parts.listeners,
                sections,
                &parts.clusters,
                cluster_file,
            );
            let policies = RoutePolicies::check(&file.policies, &mut check);
            let cluster = match (cluster, &policies) {
                (Some(None), Some(policies))
                    if !policies.answers_itself() && !policies.chooses_cluster() =>
                {
                    let message = "a route needs a `cluster` to forward to (only a route with \
                                   direct_response or redirect answers without one, and a \
                                   traffic_split names its own)";
                    check.report(&path.key("cluster"), message);
                    None
                }
                (Some(Some(_)), Some(policies)) if policies.chooses_cluster() => {
                    let message = "a route with traffic_split forwards to the clusters it \
                                   names: leave `cluster` out";
                    check.report(&path.key("cluster"), message);
                    None
                }
                (cluster, _) => cluster,
            };
            let mut dump = check.into_dump();
            if let Ok(Value::Object(core)) = serde_json::to_value(file) {
                dump.extend(core);
            }
            let mut dump = Value::Object(dump);
            redact_route(&mut dump, secrets, index);
            dumps.push(dump);

            let route = (|| {
                Some(Route {
                    name: name?,
                    matcher: matcher?,
                    cluster: file.cluster.clone().unwrap_or_default(),
                    cluster_index: cluster?,
                    policies: shared.share(policies?),
                })
            })();
            routes.push(route);
        }
        (routes, dumps)
    }

    /// The route's name (given, or `route-<index>`), unique among routes. A default name can
    /// clash with a given one (`name: route-3` on another route), so both are checked.
    fn route_name(
        &mut self,
        route: &KeyPath,
        index: usize,
        file: &RouteFile,
        seen: &mut HashMap<String, usize>,
    ) -> Option<String> {
        let name = match &file.name {
            Some(name) => name.clone(),
            None => format!("route-{index}"),
        };
        let path = route.key("name");
        if name.is_empty() {
            self.report(&path, "a route name cannot be empty");
            return None;
        }
        if let Some(first) = seen.get(&name) {
            let message = if file.name.is_some() {
                format!("duplicate route name `{name}` (also routes[{first}])")
            } else {
                format!(
                    "this route's default name `{name}` is already used by routes[{first}]; give \
                     it a name"
                )
            };
            self.report(&path, message);
            return None;
        }
        seen.insert(name.clone(), index);
        Some(name)
    }

    fn matcher(&mut self, path: &KeyPath, file: &MatchFile) -> Option<RouteMatch> {
        let host = match file.host.as_deref() {
            None => Some(None),
            Some(text) => match parse_host(text) {
                Ok(host) => Some(Some(host)),
                Err(message) => {
                    self.report(&path.key("host"), message);
                    None
                }
            },
        };
        let path_match = self.path_match(path, file);

        let mut methods = Vec::with_capacity(file.methods.len());
        let mut methods_ok = true;
        for (index, text) in file.methods.iter().enumerate() {
            let item = path.key("methods").index(index);
            match parse_method(text) {
                Ok(method) if methods.contains(&method) => {
                    self.report(&item, format!("duplicate method {method}"));
                    methods_ok = false;
                }
                Ok(method) => methods.push(method),
                Err(message) => {
                    self.report(&item, message);
                    methods_ok = false;
                }
            }
        }

        let mut headers = Vec::with_capacity(file.headers.len());
        let mut headers_ok = true;
        for (index, condition) in file.headers.iter().enumerate() {
            let item = path.key("headers").index(index);
            let name = match HeaderName::from_bytes(condition.name.as_bytes()) {
                Ok(name) => Some(name),
                Err(_) => {
                    let message = format!("{:?} is not a valid header name", condition.name);
                    self.report(&item.key("name"), message);
                    None
                }
            };
            // A value that cannot appear in a header would make the route unreachable.
            if let Some(value) = &condition.value {
                if HeaderValue::from_str(value).is_err() {
                    let message = format!(
                        "{value:?} is not a valid header value, so this condition could never match"
                    );
                    self.report(&item.key("value"), message);
                    headers_ok = false;
                }
            }
            match name {
                Some(name) => headers.push(HeaderCondition {
                    name,
                    value: condition.value.clone(),
                }),
                None => headers_ok = false,
            }
        }

        let mut query = Vec::with_capacity(file.query.len());
        let mut query_ok = true;
        for (index, condition) in file.query.iter().enumerate() {
            if condition.name.is_empty() {
                let item = path.key("query").index(index).key("name");
                self.report(&item, "a query parameter name cannot be empty");
                query_ok = false;
            }
            query.push(QueryCondition {
                name: condition.name.clone(),
                value: condition.value.clone(),
            });
        }

        Some(RouteMatch {
            host: host?,
            path: path_match?,
            methods: methods_ok.then_some(methods)?,
            headers: headers_ok.then_some(headers)?,
            query: query_ok.then_some(query)?,
        })
    }

    fn path_match(&mut self, path: &KeyPath, file: &MatchFile) -> Option<PathMatch> {
        let given: Vec<(&str, &str)> = [
            ("path_exact", &file.path_exact),
            ("path_prefix", &file.path_prefix),
            ("path_template", &file.path_template),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.as_deref().map(|value| (key, value)))
        .collect();
        match given[..] {
            [] => Some(PathMatch::default()),
            [("path_exact", text)] => {
                self.literal_path(&path.key("path_exact"), text)?;
                Some(PathMatch::Exact(text.to_string()))
            }
            [("path_prefix", text)] => {
                self.literal_path(&path.key("path_prefix"), text)?;
                Some(PathMatch::Prefix(normalise_prefix(text)))
            }
            [(key, text)] => {
                let key_path = path.key(key);
                if !text.starts_with('/') {
                    self.report(&key_path, format!("{text:?} must start with `/`"));
                    return None;
                }
                match crate::routing::PathTemplate::parse(text) {
                    Ok(_) => Some(PathMatch::Template(text.to_string())),
                    Err(err) => {
                        self.report(&key_path, format!("{text:?}: {err}"));
                        None
                    }
                }
            }
            [(first, _), (second, _), ..] => {
                let message = format!(
                    "only one of path_exact, path_prefix and path_template may be set; this \
                     route also has {first}"
                );
                self.report(&path.key(second), message);
                None
            }
        }
    }
}

/// Port 0 asks the OS for a free port, so it never clashes. Otherwise two addresses clash on
/// the same port when the IPs are equal or one is a wildcard covering the other (`[::]` is
/// dual-stack by default on Linux, so it covers IPv4 too).
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    let covers = |wildcard: IpAddr, other: IpAddr| match wildcard {
        IpAddr::V4(ip) => ip.is_unspecified() && other.is_ipv4(),
        IpAddr::V6(ip) => ip.is_unspecified(),
    };
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || covers(a.ip(), b.ip()) || covers(b.ip(), a.ip()))
}

fn unknown_cluster_message(name: &str, known: &[&str]) -> String {
    if known.is_empty() {
        return format!("unknown cluster `{name}`: no clusters are defined");
    }
    let listed = known
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match closest(name, known.iter().copied()) {
        Some(suggestion) => format!(
            "unknown cluster `{name}`, did you mean `{suggestion}`? (known clusters: {listed})"
        ),
        None => format!("unknown cluster `{name}` (known clusters: {listed})"),
    }
}

/// `host:port` or `[v6]:port`, no scheme, no path, port 1..=65535.
pub(crate) fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    if let Some((scheme, _)) = text.split_once("://") {
        return Err(format!(
            "endpoint {text:?} must be host:port without a scheme: remove `{scheme}://` (set \
             the cluster's protocol instead)"
        ));
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Err(format!(
                "endpoint {text:?}: missing `]` after the IPv6 address"
            ));
        };
        if inside.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "endpoint {text:?}: {inside:?} is not an IPv6 address"
            ));
        }
        let Some(port) = after.strip_prefix(':') else {
            return Err(format!(
                "endpoint {text:?} has no port: expected [address]:port"
            ));
        };
        (inside, port)
    } else {
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!(
                "endpoint {text:?} has no port: expected host:port like backend.internal:8080"
            ));
        };
        if host.contains(':') {
            return Err(format!(
                "endpoint {text:?}: an IPv6 address must be in brackets, like [::1]:8080"
            ));
        }
        if host.is_empty() {
            return Err(format!("endpoint {text:?} has an empty host"));
        }
        if let Some(bad) = host
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
        {
            return Err(format!(
                "endpoint {text:?}: host {host:?} contains {bad:?}; expected a DNS name or an \
                 IP address"
            ));
        }
        (host, port)
    };
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(Endpoint {
            host: host.to_string(),
            port,
        }),
        _ => Err(format!(
            "endpoint {text:?}: port {port:?} is not a number from 1 to 65535"
        )),
    }
}

/// `name` → exact (lowercased); `*.suffix` → suffix `.suffix`. No port, no scheme, no other `*`.
pub(crate) fn parse_host(text: &str) -> Result<HostMatch, String> {
    if text.is_empty() {
        return Err(String::from(
            "cannot be empty; leave host out to match any host",
        ));
    }
    if text.contains("://") {
        return Err(format!(
            "host {text:?} must be a name like api.example.com, without a scheme"
        ));
    }
    let lower = text.to_ascii_lowercase();
    if let Some(suffix) = lower.strip_prefix("*.") {
        check_dns_name(text, suffix)?;
        return Ok(HostMatch::Suffix(format!(".{suffix}")));
    }
    if let Some(inside) = lower.strip_prefix('[') {
        // An IPv6 literal as it appears in a Host header.
        return match inside.strip_suffix(']').map(str::parse::<Ipv6Addr>) {
            Some(Ok(_)) => Ok(HostMatch::Exact(lower)),
            _ => Err(format!(
                "host {text:?} must be a name or a bracketed IPv6 address, without a port"
            )),
        };
    }
    check_dns_name(text, &lower)?;
    Ok(HostMatch::Exact(lower))
}

fn check_dns_name(text: &str, name: &str) -> Result<(), String> {
    if name.contains('*') {
        return Err(format!(
            "host {text:?}: `*` is only allowed as the whole first label, like *.example.com"
        ));
    }
    if name.contains(':') {
        return Err(format!(
            "host {text:?} must not include a port: a route matches the host on any port"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Err(format!(
            "host {text:?} contains {bad:?}; expected a DNS name (use punycode for \
             international names)"
        ));
    }
    if name.split('.').any(str::is_empty) {
        return Err(format!("host {text:?} has an empty label"));
    }
    Ok(())
}

/// A method token, written in uppercase (methods are case-sensitive: `get` is not `GET`).
pub(crate) fn parse_method(text: &str) -> Result<Method, String> {
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if text.is_empty() || !text.bytes().all(is_tchar) {
        return Err(format!("{text:?} is not a valid HTTP method"));
    }
    if text.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(format!(
            "method {text:?} must be uppercase: write `{}` (methods are case-sensitive)",
            text.to_ascii_uppercase()
        ));
    }
    Method::from_bytes(text.as_bytes()).map_err(|_| format!("{text:?} is not a valid HTTP method"))
}

#[cfg(test)]
mod tests;
