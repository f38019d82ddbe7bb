//! The checking side of the config seam: what every part of the config is validated with,
//! and the contract a concern implements to own its part of the file.
//!
//! Part of config loading (… → structural deserialise → **semantic validation** → typed
//! `Config`). [`Checker`] carries the problem list and the source positions, and has the
//! checks every section needs (durations, sizes, addresses, PEM files). A concern — body
//! limit, auth, transforms, timeout, and the policies still to come — implements
//! [`RoutePolicy`] for the keys it owns on a route, or [`Section`] for a top-level section of
//! its own; `concerns.rs` lists them, and nothing else in `config/` needs to know them.

use super::deserialize;
use super::file::{ClusterFile, ListenerFile, MatchFile};
use super::problem::Problem;
use super::source::{KeyPath, Seg, SourceMap};
use super::units::{format_size, parse_duration, parse_size};
use crate::pki;
use http::HeaderName;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use std::any::{Any, TypeId};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Methods are checked the same way wherever a concern lists them.
pub(crate) use super::validate::parse_method;

/// One concern's part of a route: the keys it owns, their form in the file, its typed config
/// and what `portico explain` says about it.
pub(crate) trait RoutePolicy: Sized {
    /// The route keys this concern owns, as written in the file.
    const KEYS: &'static [&'static str];
    /// The serde mirror of those keys: `deny_unknown_fields`, every key optional.
    type File: DeserializeOwned + Serialize + Default;
    /// Check the keys and build the typed config; `None` once the problems are reported.
    fn check(file: &Self::File, route: &mut RouteCheck<'_, '_>) -> Option<Self>;
    /// The lines `portico explain` prints for a request with this (normalised) path; nothing
    /// when the policy does nothing.
    fn describe(&self, request_path: &str, out: &mut Description);
    /// Whether the policy gives this route's stack a layer that does something. A route for
    /// which no policy does gets the lean stack (rescue → body limit → timeout → upstream,
    /// see `stack.rs`): it pays nothing for the other layers, not even their switched-off
    /// branches. Policies whose work the lean stack's own layers do (body limit, timeout,
    /// retries, traffic split) say `false`.
    fn adds_layer(&self) -> bool;
    /// Whether this policy's layer reads the request context (`context.rs`). The gateway
    /// puts a context in a request's extensions only for routes with such a policy, so that
    /// a route without one pays nothing for it.
    fn reads_context(&self) -> bool {
        false
    }
    /// Whether this policy's layer reads the caller's identity that auth establishes (a
    /// consumer key, a claim, a plan). Auth shares the identity with the layers below it
    /// only on routes that have such a reader.
    fn reads_identity(&self) -> bool {
        false
    }
    /// Whether a scalar at `path` (below the route, e.g. `[max_body_size]`) is text even
    /// where YAML reads a number or a boolean (sizes, header values).
    fn wants_text(path: &[Seg]) -> bool {
        let _ = path;
        false
    }
}

/// A concern's own top-level section (settings that routes refer to, such as identity
/// providers or a shared store).
pub(crate) trait Section: Sized {
    /// The section's key at the top of the file.
    const KEY: &'static str;
    /// The serde mirror of the section: `deny_unknown_fields`; the default is "absent".
    type File: DeserializeOwned + Serialize + Default;
    /// Check the section and build the typed config; `None` once the problems are reported.
    fn check(file: &Self::File, path: &KeyPath, checker: &mut Checker<'_>) -> Option<Self>;
    /// As [`RoutePolicy::wants_text`], for a path below the section.
    fn wants_text(path: &[Seg]) -> bool {
        let _ = path;
        false
    }
    /// Replace the credentials in the section's part of the config dump (`/config`) with
    /// [`REDACTED`](crate::config::REDACTED). Values that came from `${ENV}` are redacted
    /// wherever they are; this is for secrets written in the file itself.
    fn redact_dump(value: &mut Value) {
        let _ = value;
    }
}

/// What `portico explain` prints about a route's policies, as `label: text` lines.
#[derive(Debug, Default)]
pub(crate) struct Description {
    pub(crate) lines: Vec<(&'static str, String)>,
}

impl Description {
    pub(crate) fn line(&mut self, label: &'static str, text: impl Into<String>) {
        self.lines.push((label, text.into()));
    }
}

/// The problem list, the positions to report them at, and the checks shared by every part of
/// the config.
pub(crate) struct Checker<'a> {
    map: &'a SourceMap,
    problems: Vec<Problem>,
    /// Relative file paths resolve against this (the config file's directory).
    base_dir: Option<&'a Path>,
    /// The listeners' names as written, for sections that refer to listeners.
    listener_names: Vec<String>,
}

impl<'a> Checker<'a> {
    pub(crate) fn new(map: &'a SourceMap, base_dir: Option<&'a Path>) -> Checker<'a> {
        Checker {
            map,
            problems: Vec::new(),
            base_dir,
            listener_names: Vec::new(),
        }
    }

    /// Note the listeners' names (as written) for [`Checker::listener_name`].
    pub(crate) fn set_listener_names(&mut self, names: Vec<String>) {
        self.listener_names = names;
    }

    /// Check a reference to a listener by name.
    pub(crate) fn listener_name(&mut self, path: &KeyPath, name: &str) -> Option<()> {
        if self.listener_names.iter().any(|known| known == name) {
            return Some(());
        }
        let message = format!(
            "unknown listener `{name}` (listeners: {})",
            self.listener_names.join(", ")
        );
        self.report(path, message);
        None
    }

    pub(crate) fn into_problems(self) -> Vec<Problem> {
        self.problems
    }

    /// Deserialise `value` (found at `path`) into a file struct, reporting every structural
    /// mistake; `None` when it cannot be used at all.
    pub(crate) fn deserialize<T: DeserializeOwned>(
        &mut self,
        value: &Value,
        path: &KeyPath,
    ) -> Option<T> {
        deserialize::deserialize(value, path, self.map, &mut self.problems)
    }

    /// A config file path: relative ones are taken from the config file's directory.
    pub(crate) fn file_path(&self, text: &str) -> PathBuf {
        let path = PathBuf::from(text);
        match self.base_dir {
            Some(base) if path.is_relative() => base.join(path),
            _ => path,
        }
    }

    /// A PEM file of certificates (at least one), read and parsed now so a typo is a
    /// validation problem rather than a failed start.
    pub(crate) fn pem_certificates(
        &mut self,
        path: &KeyPath,
        text: &str,
    ) -> Option<(PathBuf, Vec<CertificateDer<'static>>)> {
        if text.is_empty() {
            self.report(path, "cannot be empty: expected the path of a PEM file");
            return None;
        }
        let file = self.file_path(text);
        match pki::read_certificates(&file) {
            Ok(certs) => Some((file, certs)),
            Err(error) => {
                self.report(path, error.to_string());
                None
            }
        }
    }

    pub(crate) fn pem_private_key(
        &mut self,
        path: &KeyPath,
        text: &str,
    ) -> Option<(PathBuf, PrivateKeyDer<'static>)> {
        if text.is_empty() {
            self.report(path, "cannot be empty: expected the path of a PEM file");
            return None;
        }
        let file = self.file_path(text);
        match pki::read_private_key(&file) {
            Ok(key) => Some((file, key)),
            Err(error) => {
                self.report(path, error.to_string());
                None
            }
        }
    }

    /// A certificate chain and its key, checked to belong together.
    pub(crate) fn key_pair(
        &mut self,
        cert_path: &KeyPath,
        cert: &str,
        key_path: &KeyPath,
        key: &str,
    ) -> Option<(PathBuf, PathBuf, Vec<CertificateDer<'static>>)> {
        let chain = self.pem_certificates(cert_path, cert);
        let key = self.pem_private_key(key_path, key);
        let ((cert_file, chain), (key_file, key)) = (chain?, key?);
        if let Err(error) = pki::certified_key(chain.clone(), key) {
            let message = format!(
                "{} cannot be used with {}: {error}",
                key_file.display(),
                cert_file.display()
            );
            self.report(key_path, message);
            return None;
        }
        Some((cert_file, key_file, chain))
    }

    /// A CA bundle usable as trust anchors.
    pub(crate) fn ca_bundle(&mut self, path: &KeyPath, text: &str) -> Option<PathBuf> {
        let (file, cas) = self.pem_certificates(path, text)?;
        if let Err(error) = pki::root_store(cas) {
            let message = format!(
                "{} holds a certificate that cannot be a trust anchor: {error}",
                file.display()
            );
            self.report(path, message);
            return None;
        }
        Some(file)
    }

    /// A problem with the value at `path` (or, if the file has none there, its parent).
    pub(crate) fn report(&mut self, path: &KeyPath, message: impl Into<String>) {
        let pos = self.map.locate(path);
        self.problems.push(Problem::new(path, pos, message));
    }

    /// A problem with the key that ends `path` (a header name used as a mapping key).
    pub(crate) fn report_key(&mut self, path: &KeyPath, message: impl Into<String>) {
        let pos = self.map.locate_key(path);
        self.problems.push(Problem::new(path, pos, message));
    }

    /// Parse an optional duration; `allow_zero` is for the settings where `0s` means "off".
    pub(crate) fn duration(
        &mut self,
        path: &KeyPath,
        text: Option<&str>,
        default: Duration,
        allow_zero: bool,
    ) -> Option<Duration> {
        let Some(text) = text else {
            return Some(default);
        };
        match parse_duration(text) {
            Ok(duration) if duration.is_zero() && !allow_zero => {
                self.report(path, "must be greater than 0s");
                None
            }
            Ok(duration) => Some(duration),
            Err(err) => {
                self.report(path, err.to_string());
                None
            }
        }
    }

    pub(crate) fn size(&mut self, path: &KeyPath, text: Option<&str>, default: u64) -> Option<u64> {
        let Some(text) = text else {
            return Some(default);
        };
        match parse_size(text) {
            Ok(size) => Some(size),
            Err(err) => {
                self.report(path, err.to_string());
                None
            }
        }
    }

    /// A size that must lie in `min..=max`, as a `usize`.
    pub(crate) fn size_in_range(
        &mut self,
        path: &KeyPath,
        text: Option<&str>,
        default: u64,
        (min, max): (u64, u64),
    ) -> Option<usize> {
        let size = self.size(path, text, default)?;
        if size < min || size > max {
            let message = format!(
                "{} is out of range: must be between {} and {}",
                format_size(size),
                format_size(min),
                format_size(max)
            );
            self.report(path, message);
            return None;
        }
        usize::try_from(size).ok()
    }

    /// A count that must lie in `min..=max`.
    pub(crate) fn count<T: PartialOrd + Copy + std::fmt::Display>(
        &mut self,
        path: &KeyPath,
        value: Option<T>,
        default: T,
        (min, max): (T, T),
    ) -> Option<T> {
        let value = value.unwrap_or(default);
        if value < min || value > max {
            self.report(
                path,
                format!("{value} is out of range: must be between {min} and {max}"),
            );
            return None;
        }
        Some(value)
    }

    pub(crate) fn socket_addr(&mut self, path: &KeyPath, text: &str) -> Option<SocketAddr> {
        match text.parse::<SocketAddr>() {
            Ok(address) => Some(address),
            Err(_) => {
                let message = format!(
                    "invalid address {text:?}: expected IP:port like 0.0.0.0:8080 or \
                     [::1]:8080 (host names are not allowed here)"
                );
                self.report(path, message);
                None
            }
        }
    }
    /// A literal path: starts with `/`, and holds neither a query nor anything a request
    /// target cannot contain, because such a condition could never match.
    pub(crate) fn literal_path(&mut self, path: &KeyPath, text: &str) -> Option<()> {
        let problem = if !text.starts_with('/') {
            Some(format!("{text:?} must start with `/`"))
        } else if text.contains(['?', '#']) {
            Some(format!(
                "{text:?} contains `?` or `#`: paths never include the query or fragment \
                 (use match.query for query parameters)"
            ))
        } else if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some(format!(
                "{text:?} contains whitespace or a control character; percent-encode it"
            ))
        } else {
            None
        };
        match problem {
            Some(message) => {
                self.report(path, message);
                None
            }
            None => Some(()),
        }
    }
}

/// A header name a route may set, add or remove: never a hop-by-hop header (the proxy
/// manages those per connection; a configured value would be dropped or desynchronise
/// framing) and never `host` (which has its own setting).
pub(crate) fn header_op_name(text: &str, request: bool) -> Result<HeaderName, String> {
    let name = HeaderName::from_bytes(text.as_bytes())
        .map_err(|_| format!("{text:?} is not a valid header name"))?;
    if crate::forwarding::is_hop_by_hop(&name) {
        return Err(format!(
            "`{name}` is a hop-by-hop header: the proxy manages it per connection, so it \
             cannot be changed here"
        ));
    }
    if name == http::header::TRAILER {
        return Err(String::from(
            "`trailer` announces a message's trailer fields, which only whoever sends its body \
             can know; it cannot be set here",
        ));
    }
    if name == http::header::HOST {
        return Err(if request {
            String::from("the Host header cannot be changed here; use the route's host_rewrite")
        } else {
            String::from("`host` is a request header; it has no meaning in a response")
        });
    }
    Ok(name)
}

/// `/api/` → `/api`, `/` stays `/`.
pub(crate) fn normalise_prefix(text: &str) -> String {
    let trimmed = text.trim_end_matches('/');
    if trimmed.is_empty() {
        String::from("/")
    } else {
        trimmed.to_string()
    }
}

/// `prefix` covers `path` segment-wise: `/api` covers `/api` and `/api/x`, not `/apix`.
pub(crate) fn is_segment_prefix(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The concerns' checked top-level sections, by type: how a route policy finds the section
/// its keys refer to (an auth policy, its identity providers) without `config/` knowing
/// either.
pub(crate) trait SectionLookup {
    fn find(&self, section: TypeId) -> Option<&dyn Any>;
}

/// Checking one route: where it is in the file, what it matches, and the facts of the rest
/// of the file a policy may depend on.
pub(crate) struct RouteCheck<'c, 'a> {
    checker: &'c mut Checker<'a>,
    /// `routes[i]`.
    path: KeyPath,
    matcher: &'c MatchFile,
    listeners: &'c [Option<ListenerFile>],
    /// `None` when a section did not check out (its problems are reported already).
    sections: Option<&'c dyn SectionLookup>,
    clusters: &'c [Option<ClusterFile>],
    /// The route's cluster as written, when it names one that deserialised.
    route_cluster: Option<&'c ClusterFile>,
    /// The route's policy keys as they deserialised, for the config dump.
    dump: Map<String, Value>,
    /// The policy keys the route writes (not null), for a policy that depends on another.
    written: Vec<String>,
}

impl<'c, 'a> RouteCheck<'c, 'a> {
    pub(crate) fn new(
        checker: &'c mut Checker<'a>,
        path: KeyPath,
        matcher: &'c MatchFile,
        listeners: &'c [Option<ListenerFile>],
        sections: Option<&'c dyn SectionLookup>,
        clusters: &'c [Option<ClusterFile>],
        route_cluster: Option<&'c ClusterFile>,
    ) -> RouteCheck<'c, 'a> {
        RouteCheck {
            checker,
            path,
            matcher,
            listeners,
            sections,
            clusters,
            route_cluster,
            dump: Map::new(),
            written: Vec::new(),
        }
    }

    /// The path of one of the route's keys (`routes[i].key`).
    pub(crate) fn key(&self, key: &str) -> KeyPath {
        self.path.key(key)
    }

    /// The route's `match` section as written.
    pub(crate) fn matcher(&self) -> &'c MatchFile {
        self.matcher
    }

    /// The listeners as written (those that deserialised).
    pub(crate) fn listeners(&self) -> impl Iterator<Item = &ListenerFile> {
        self.listeners.iter().flatten()
    }

    /// A concern's checked top-level section; `None` when the sections did not check out
    /// (then their problems are reported, and references to them need not be).
    pub(crate) fn section<T: 'static>(&self) -> Option<&'c T> {
        self.sections?.find(TypeId::of::<T>())?.downcast_ref()
    }

    /// The index of the cluster called `name` (its position in `clusters`, as in the typed
    /// config), or a problem reported at `path`. A cluster that did not deserialise was
    /// reported already: `None` without another problem.
    pub(crate) fn cluster(&mut self, path: &KeyPath, name: &str) -> Option<usize> {
        let mut unparsed = false;
        for (index, cluster) in self.clusters.iter().enumerate() {
            match cluster {
                Some(cluster) if cluster.name == name => return Some(index),
                Some(_) => {}
                None => unparsed = true,
            }
        }
        if !unparsed {
            let known: Vec<String> = self
                .clusters
                .iter()
                .flatten()
                .map(|c| format!("`{}`", c.name))
                .collect();
            let message = if known.is_empty() {
                format!("unknown cluster `{name}`: no clusters are defined")
            } else {
                format!(
                    "unknown cluster `{name}` (known clusters: {})",
                    known.join(", ")
                )
            };
            self.checker.report(path, message);
        }
        None
    }

    /// The route's cluster as written (`None` when it names no cluster that deserialised).
    pub(crate) fn route_cluster(&self) -> Option<&'c ClusterFile> {
        self.route_cluster
    }

    /// Whether the route writes policy key `key` (with a value other than null): how a
    /// policy finds out that another one it depends on is there (a rate limit keyed by
    /// consumer needs `auth`).
    pub(crate) fn writes(&self, key: &str) -> bool {
        self.written.iter().any(|written| written == key)
    }

    /// Deserialise and check the keys of `raw` that policy `P` owns.
    pub(crate) fn policy<P: RoutePolicy>(&mut self, raw: &Map<String, Value>) -> Option<P> {
        if self.written.is_empty() {
            // Every policy is given the same keys: note them once.
            self.written = raw
                .iter()
                .filter(|(_, value)| !value.is_null())
                .map(|(key, _)| key.clone())
                .collect();
        }
        let own: Map<String, Value> = P::KEYS
            .iter()
            .filter_map(|key| Some((key.to_string(), raw.get(*key)?.clone())))
            .collect();
        let path = self.path.clone();
        let file: P::File = self.checker.deserialize(&Value::Object(own), &path)?;
        if let Ok(Value::Object(fields)) = serde_json::to_value(&file) {
            self.dump.extend(fields);
        }
        P::check(&file, self)
    }

    /// The policy keys as deserialised (every key the concerns own, absent ones as `null`).
    pub(crate) fn into_dump(self) -> Map<String, Value> {
        self.dump
    }
}

impl<'a> std::ops::Deref for RouteCheck<'_, 'a> {
    type Target = Checker<'a>;

    fn deref(&self) -> &Checker<'a> {
        self.checker
    }
}

impl<'a> std::ops::DerefMut for RouteCheck<'_, 'a> {
    fn deref_mut(&mut self) -> &mut Checker<'a> {
        self.checker
    }
}
