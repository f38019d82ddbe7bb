//! The route table: picks the most specific route for a request, without allocating.
//!
//! # Precedence
//! Every route gets a rank at [`Router::new`]; lower rank wins. Routes are ordered by, in turn:
//! 1. host: exact host, then wildcard suffix (longer suffix first), then no host condition.
//!    Host outranks everything below: an exact-host `Prefix("/")` beats an any-host exact path;
//! 2. path kind: exact, then template, then prefix. Templates: more literal segments first, then
//!    more fixed segments (a final `**` does not count). Prefixes: longer prefix first;
//! 3. number of conditions, more first (a non-empty method list counts 1, each header and each
//!    query condition 1);
//! 4. declaration order.
//!
//! [`Router::find`] returns the best-ranked route whose host, path, headers, query *and*
//! method match. If none does but some route matches everything except the method, the answer
//! is `MethodNotAllowed` with the union of those routes' methods (for a 405 `Allow` header).
//!
//! # Index
//! Routes are split by host class: a map of exact hosts, a map of wildcard suffixes, and the
//! any-host set. Each class holds a segment [`Trie`]:
//! - literal children in a hash map, plus one wildcard child used by template `*` / `{x}`;
//! - exact paths and fully consumed templates are attached to their end node (`end`);
//! - prefix routes and templates ending in `**` are attached where their fixed part ends
//!   (`reached`): they match every path that reaches that node.
//!
//! A lookup canonicalises the host (port and trailing dot dropped, lowercased into a stack
//! buffer), then searches the tries in host-precedence order: the exact host, each suffix of the
//! host starting at a `.` (longest first, one hash lookup per label), then any-host. Within a
//! trie it walks the path's segments once, depth first (a literal and the wildcard child may both
//! apply), and keeps the best-ranked candidate whose remaining conditions hold; candidates that
//! cannot beat the current best are skipped unchecked. Since host outranks everything, the
//! first host class with a full match is the answer. Nothing is allocated: no candidate list,
//! no lowercase host copy, no decoded query (query names and values are compared through a
//! decoding iterator). Cost depends on the path's depth and the routes along it, not on the size
//! of the table. The walk recurses once per matched segment, so stack depth is bounded by the
//! longest configured route, not by the request.
//!
//! [`Router::explain`] deliberately does *not* use the index: it checks every route on its own,
//! so it doubles as the reference the index is tested against.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use http::{HeaderMap, Method};

use super::normalize::{hex_value, normalize_path};
use super::template::{Element, PathTemplate};
use crate::config::model::{HeaderCondition, HostMatch, PathMatch, QueryCondition, RouteMatch};

/// The parts of a request the router looks at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestView<'a> {
    /// Host header or `:authority` as received: may carry a port, uppercase, or be `[::1]:8080`.
    pub host: &'a str,
    /// Already normalised by [`super::normalize_path`].
    pub path: &'a str,
    /// Raw query string without the `?`.
    pub query: Option<&'a str>,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

/// The result of [`Router::find`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lookup {
    /// Index into the routes given to [`Router::new`].
    Matched(usize),
    /// No route matched, but some matched except for the method; these are their methods,
    /// sorted by name, deduplicated, with `HEAD` added when `GET` is present.
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

/// How one route fared against a request, for `portico explain`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    /// Index into the routes given to [`Router::new`].
    pub route: usize,
    pub outcome: Outcome,
    /// Template captures, when the route's path is a template that matched.
    pub captures: Vec<(String, String)>,
    /// Why the route ranks where it does, e.g. `exact host api.example.com, path prefix /v1
    /// (3 chars), 1 header condition`.
    pub rank_note: String,
}

/// The first condition that failed, checked in the order host, path, headers, query, method
/// (so `MethodMismatch` means "everything else matched": the route contributes to a 405).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// The route [`Router::find`] returns.
    Selected,
    /// Matches fully, but a higher-precedence route was selected.
    MatchedButShadowed,
    HostMismatch,
    PathMismatch,
    MethodMismatch,
    /// The header condition on this header name failed.
    HeaderMismatch(String),
    /// The query condition on this parameter name failed.
    QueryMismatch(String),
}

/// The route table. Built once per config (re)load; immutable and `Sync` afterwards.
#[derive(Debug)]
pub(crate) struct Router {
    /// In declaration order: a route's id is its index in the slice given to `new`.
    routes: Vec<CompiledRoute>,
    /// Route ids, best rank first.
    order: Vec<usize>,
    exact_hosts: FastMap<Box<str>, Trie>,
    /// Keyed by the suffix including its leading dot: `.example.com`.
    suffix_hosts: FastMap<Box<str>, Trie>,
    any_host: Trie,
}

impl Router {
    /// Build the table. Infallible: the config validator has already checked the routes. A
    /// template that fails to parse anyway makes its route never match.
    pub(crate) fn new<'a>(routes: impl IntoIterator<Item = &'a RouteMatch>) -> Router {
        let mut compiled: Vec<CompiledRoute> = routes.into_iter().map(CompiledRoute::new).collect();
        let mut order: Vec<usize> = (0..compiled.len()).collect();
        order.sort_by_key(|&id| compiled[id].precedence_key(id));
        for (rank, &id) in order.iter().enumerate() {
            compiled[id].rank = rank;
        }

        let mut exact_hosts: FastMap<Box<str>, Trie> = FastMap::default();
        let mut suffix_hosts: FastMap<Box<str>, Trie> = FastMap::default();
        let mut any_host = Trie::default();
        for (id, route) in compiled.iter().enumerate() {
            let trie = match &route.host {
                HostCond::Any => &mut any_host,
                HostCond::Exact(h) => exact_hosts.entry(h.clone()).or_default(),
                HostCond::Suffix(s) => suffix_hosts.entry(s.clone()).or_default(),
            };
            trie.insert(id, &route.path);
        }
        Router {
            routes: compiled,
            order,
            exact_hosts,
            suffix_hosts,
            any_host,
        }
    }

    /// The route for this request. Does not allocate unless the answer is `MethodNotAllowed`
    /// (or the host is longer than any DNS name and needs lowercasing).
    pub(crate) fn find(&self, req: &RequestView<'_>) -> Lookup {
        self.find_counting(req).0
    }

    /// [`Router::find`] plus how many candidates had their conditions evaluated, which the
    /// tests use to show that lookup cost does not grow with the table.
    fn find_counting(&self, req: &RequestView<'_>) -> (Lookup, usize) {
        if !req.path.starts_with('/') {
            return (Lookup::NotFound, 0);
        }
        if self.exact_hosts.is_empty() && self.suffix_hosts.is_empty() {
            // No route names a host: the request's need not be looked at.
            return self.find_for_host(req, "");
        }
        with_request_host(req.host, |host| self.find_for_host(req, host))
    }

    /// [`Router::find_counting`] for the request's normalized `host`.
    fn find_for_host(&self, req: &RequestView<'_>, host: &str) -> (Lookup, usize) {
        // (rank, id) of the best full match so far.
        let mut best: Option<(usize, usize)> = None;
        let mut method_mismatch = false;
        let mut examined = 0;
        self.for_each_trie(host, |trie| {
            trie.for_each_candidate(req.path, &mut |id| {
                let route = &self.routes[id];
                // Only a better-ranked route may replace the best so far, so a candidate
                // that cannot win is not even checked. (This is also what keeps `best`
                // the best: candidates arrive in trie order, not rank order.)
                if best.is_some_and(|(rank, _)| route.rank >= rank) {
                    return;
                }
                examined += 1;
                match route.evaluate(req) {
                    Eval::Full => best = Some((route.rank, id)),
                    Eval::MethodOnly => method_mismatch = true,
                    Eval::No => {}
                }
            });
            // Host outranks everything else: a match in this host class is final.
            best.is_some()
        });
        let lookup = match best {
            Some((_, id)) => Lookup::Matched(id),
            None if method_mismatch => Lookup::MethodNotAllowed(self.allowed_methods(req, host)),
            None => Lookup::NotFound,
        };
        (lookup, examined)
    }

    /// The 405 path: walk the same candidates again and collect the methods of those that
    /// failed only on the method. Allocating here is fine; it is an error response.
    fn allowed_methods(&self, req: &RequestView<'_>, host: &str) -> Vec<Method> {
        let mut methods = Vec::new();
        self.for_each_trie(host, |trie| {
            trie.for_each_candidate(req.path, &mut |id| {
                let route = &self.routes[id];
                if route.evaluate(req) == Eval::MethodOnly {
                    methods.extend(route.methods.iter().cloned());
                }
            });
            false
        });
        if methods.contains(&Method::GET) {
            methods.push(Method::HEAD);
        }
        methods.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        methods.dedup();
        methods
    }

    /// Call `visit` on the tries that can serve `host`, best host class first, until it
    /// returns true.
    fn for_each_trie(&self, host: &str, mut visit: impl FnMut(&Trie) -> bool) {
        if let Some(trie) = self.exact_hosts.get(host) {
            if visit(trie) {
                return;
            }
        }
        if !self.suffix_hosts.is_empty() {
            // `a.b.example.com` -> `.b.example.com`, `.example.com`, `.com`: longest first, and
            // never the whole host (a suffix must not match the bare domain).
            for (i, _) in host.match_indices('.').filter(|&(i, _)| i > 0) {
                if let Some(trie) = self.suffix_hosts.get(&host[i..]) {
                    if visit(trie) {
                        return;
                    }
                }
            }
        }
        visit(&self.any_host);
    }

    /// Every route in precedence order, with the first condition it fails (or whether it is
    /// the one selected). Checks each route on its own, without the index; allocation is fine
    /// here (CLI only).
    pub(crate) fn explain(&self, req: &RequestView<'_>) -> Vec<Verdict> {
        let host = with_request_host(req.host, str::to_string);
        let mut selected = false;
        self.order
            .iter()
            .map(|&id| {
                let route = &self.routes[id];
                let (mut outcome, captures) = route.explain(&host, req);
                if outcome == Outcome::Selected {
                    if selected {
                        outcome = Outcome::MatchedButShadowed;
                    }
                    selected = true;
                }
                Verdict {
                    route: id,
                    outcome,
                    captures,
                    // Made here, not kept per route: only `explain` reads it.
                    rank_note: rank_note(route),
                }
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Compiled routes

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostCond {
    Any,
    /// Lowercase, no trailing dot.
    Exact(Box<str>),
    /// Lowercase, leading dot, no trailing dot.
    Suffix(Box<str>),
}

#[derive(Debug)]
enum PathCond {
    /// Normalised like a request path.
    Exact(Box<str>),
    /// Normalised, no trailing slash unless it is `/`.
    Prefix(Box<str>),
    Template(PathTemplate),
    /// A path no normalised request can have (an invalid template or a path the normaliser
    /// rejects): the route never matches. Holds the path as written, for `explain`.
    Never(Box<str>),
}

#[derive(Debug)]
struct CompiledRoute {
    host: HostCond,
    path: PathCond,
    methods: Vec<Method>,
    headers: Vec<HeaderCondition>,
    query: Vec<QueryCondition>,
    /// Position in the precedence order; set by `Router::new`.
    rank: usize,
}

/// Host class, suffix length, path kind, path specificity (two numbers), condition count,
/// declaration index; compared lexicographically, smallest first.
type PrecedenceKey = (
    u8,
    Reverse<usize>,
    u8,
    Reverse<usize>,
    Reverse<usize>,
    Reverse<usize>,
    usize,
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eval {
    Full,
    /// Everything but the method matched.
    MethodOnly,
    No,
}

impl CompiledRoute {
    fn new(m: &RouteMatch) -> CompiledRoute {
        // The validator promises lowercase hosts and normalised paths; canonicalising again
        // costs nothing per request and keeps the router correct if that promise ever slips.
        let host = match &m.host {
            None => HostCond::Any,
            Some(HostMatch::Exact(h)) => {
                HostCond::Exact(strip_trailing_dot(&h.to_ascii_lowercase()).into())
            }
            Some(HostMatch::Suffix(s)) => {
                let s = s.to_ascii_lowercase();
                let s = strip_trailing_dot(&s);
                let s = if s.starts_with('.') {
                    s.to_string()
                } else {
                    format!(".{s}")
                };
                HostCond::Suffix(s.into())
            }
        };
        let path = match &m.path {
            PathMatch::Exact(p) => match normalize_path(p) {
                Ok(p) => PathCond::Exact(p.into()),
                Err(_) => PathCond::Never(p.as_str().into()),
            },
            PathMatch::Prefix(p) => match normalize_path(p) {
                Ok(p) => {
                    let trimmed = p.trim_end_matches('/');
                    PathCond::Prefix(if trimmed.is_empty() { "/" } else { trimmed }.into())
                }
                Err(_) => PathCond::Never(p.as_str().into()),
            },
            PathMatch::Template(t) => match PathTemplate::parse(t) {
                Ok(t) => PathCond::Template(t),
                Err(_) => PathCond::Never(t.as_str().into()),
            },
        };
        CompiledRoute {
            host,
            path,
            methods: m.methods.clone(),
            headers: m.headers.clone(),
            query: m.query.clone(),
            rank: 0,
        }
    }

    fn condition_count(&self) -> usize {
        usize::from(!self.methods.is_empty()) + self.headers.len() + self.query.len()
    }

    /// The sort key implementing the precedence rules in the module docs; `id` (declaration
    /// order) makes it total.
    fn precedence_key(&self, id: usize) -> PrecedenceKey {
        let (host_class, host_len) = match &self.host {
            HostCond::Exact(_) => (0, 0),
            HostCond::Suffix(s) => (1, s.len()),
            HostCond::Any => (2, 0),
        };
        let (path_kind, a, b) = match &self.path {
            PathCond::Exact(_) => (0, 0, 0),
            PathCond::Template(t) => (1, t.literal_count(), t.segment_count()),
            PathCond::Prefix(p) => (2, p.len(), 0),
            PathCond::Never(_) => (3, 0, 0),
        };
        (
            host_class,
            Reverse(host_len),
            path_kind,
            Reverse(a),
            Reverse(b),
            Reverse(self.condition_count()),
            id,
        )
    }

    /// The conditions the trie cannot check (the trie already matched host and path).
    fn evaluate(&self, req: &RequestView<'_>) -> Eval {
        if !self
            .headers
            .iter()
            .all(|c| header_condition_holds(req.headers, c))
            || !self
                .query
                .iter()
                .all(|c| query_condition_holds(req.query, c))
        {
            return Eval::No;
        }
        if method_allowed(&self.methods, req.method) {
            Eval::Full
        } else {
            Eval::MethodOnly
        }
    }

    /// Check every condition directly (no index), for `explain`. `host` is canonical.
    fn explain(&self, host: &str, req: &RequestView<'_>) -> (Outcome, Vec<(String, String)>) {
        let host_ok = match &self.host {
            HostCond::Any => true,
            HostCond::Exact(h) => host == &**h,
            HostCond::Suffix(s) => host.len() > s.len() && host.ends_with(&**s),
        };
        if !host_ok {
            return (Outcome::HostMismatch, Vec::new());
        }
        let mut captures = Vec::new();
        let path_ok = match &self.path {
            PathCond::Exact(p) => req.path == &**p,
            PathCond::Prefix(p) => prefix_matches(req.path, p),
            PathCond::Template(t) => match t.captures(req.path) {
                Some(c) => {
                    captures = c
                        .into_iter()
                        .map(|(n, v)| (n.to_string(), v.to_string()))
                        .collect();
                    true
                }
                None => false,
            },
            PathCond::Never(_) => false,
        };
        if !path_ok {
            return (Outcome::PathMismatch, captures);
        }
        if let Some(c) = self
            .headers
            .iter()
            .find(|c| !header_condition_holds(req.headers, c))
        {
            return (
                Outcome::HeaderMismatch(c.name.as_str().to_string()),
                captures,
            );
        }
        if let Some(c) = self
            .query
            .iter()
            .find(|c| !query_condition_holds(req.query, c))
        {
            return (Outcome::QueryMismatch(c.name.clone()), captures);
        }
        if !method_allowed(&self.methods, req.method) {
            return (Outcome::MethodMismatch, captures);
        }
        (Outcome::Selected, captures)
    }
}

fn rank_note(route: &CompiledRoute) -> String {
    let mut parts = vec![match &route.host {
        HostCond::Exact(h) => format!("exact host {h}"),
        HostCond::Suffix(s) => format!("wildcard host *{s} ({} char suffix)", s.len()),
        HostCond::Any => "any host".to_string(),
    }];
    parts.push(match &route.path {
        PathCond::Exact(p) => format!("exact path {p}"),
        PathCond::Template(t) => format!(
            "path template {} ({} literal, {} fixed segments)",
            t.as_str(),
            t.literal_count(),
            t.segment_count()
        ),
        PathCond::Prefix(p) => format!("path prefix {p} ({} chars)", p.len()),
        PathCond::Never(text) => format!("invalid path {text} (never matches)"),
    });
    if !route.methods.is_empty() {
        let names: Vec<&str> = route.methods.iter().map(Method::as_str).collect();
        parts.push(format!("methods {}", names.join(",")));
    }
    for (count, what) in [
        (route.headers.len(), "header"),
        (route.query.len(), "query"),
    ] {
        match count {
            0 => {}
            1 => parts.push(format!("1 {what} condition")),
            n => parts.push(format!("{n} {what} conditions")),
        }
    }
    parts.join(", ")
}

fn strip_trailing_dot(host: &str) -> &str {
    host.strip_suffix('.').unwrap_or(host)
}

/// Segment-boundary prefix test: `/v1/users` matches `/v1/users`, `/v1/users/…`, not
/// `/v1/usersx`. `p` is normalised (no trailing slash unless `/`).
fn prefix_matches(path: &str, p: &str) -> bool {
    if p == "/" {
        return path.starts_with('/');
    }
    path.starts_with(p) && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
}

/// Empty = any method; `HEAD` is allowed wherever `GET` is, as NGINX and Envoy users expect.
fn method_allowed(methods: &[Method], method: &Method) -> bool {
    methods.is_empty()
        || methods.contains(method)
        || (*method == Method::HEAD && methods.contains(&Method::GET))
}

fn header_condition_holds(headers: &HeaderMap, c: &HeaderCondition) -> bool {
    match &c.value {
        None => headers.contains_key(&c.name),
        Some(want) => headers
            .get_all(&c.name)
            .iter()
            .any(|v| v.as_bytes() == want.as_bytes()),
    }
}

/// Some `name=value` pair of the query has the wanted (decoded) name and, if one is wanted,
/// value. `?flag` counts as present with an empty value.
fn query_condition_holds(query: Option<&str>, c: &QueryCondition) -> bool {
    let Some(query) = query else {
        return false;
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .any(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            form_eq(name, &c.name) && c.value.as_deref().is_none_or(|want| form_eq(value, want))
        })
}

/// Compare a raw query component with `want` after form-decoding (`+` is a space, `%XX` a
/// byte), without building the decoded string.
fn form_eq(raw: &str, want: &str) -> bool {
    if !raw.bytes().any(|b| b == b'%' || b == b'+') {
        return raw == want;
    }
    FormDecoded(raw.as_bytes()).eq(want.bytes())
}

/// Iterator over the form-decoded bytes of a query component. A malformed escape is taken
/// literally, as browsers and most servers do, rather than failing the whole request over a
/// parameter no route may care about.
struct FormDecoded<'a>(&'a [u8]);

impl Iterator for FormDecoded<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        match b {
            b'+' => Some(b' '),
            b'%' => {
                let hi = rest.first().copied().and_then(hex_value);
                let lo = rest.get(1).copied().and_then(hex_value);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => {
                        self.0 = &rest[2..];
                        Some((hi << 4) | lo)
                    }
                    _ => Some(b'%'),
                }
            }
            _ => Some(b),
        }
    }
}

/// Maximum DNS name length is 253; a longer Host cannot equal any configured host, but is
/// still lowercased correctly via the (allocating) fallback.
const HOST_BUF: usize = 256;

/// Call `f` with the canonical request host: port removed (`[::1]:80` → `[::1]`), one
/// trailing dot removed, ASCII-lowercased — on the stack unless it is already lowercase.
fn with_request_host<R>(raw: &str, f: impl FnOnce(&str) -> R) -> R {
    let host = strip_trailing_dot(strip_port(raw));
    if !host.bytes().any(|b| b.is_ascii_uppercase()) {
        return f(host);
    }
    let mut buf = [0u8; HOST_BUF];
    if let Some(buf) = buf.get_mut(..host.len()) {
        buf.copy_from_slice(host.as_bytes());
        buf.make_ascii_lowercase();
        // ASCII lowercasing keeps UTF-8 valid, so this always succeeds.
        if let Ok(lower) = std::str::from_utf8(buf) {
            return f(lower);
        }
    }
    f(&host.to_ascii_lowercase())
}

fn strip_port(host: &str) -> &str {
    // Byte searches: `:`, `[` and `]` are ASCII, so every cut is at a character boundary.
    let bytes = host.as_bytes();
    if bytes.first() == Some(&b'[') {
        return match bytes.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match bytes.iter().position(|&b| b == b':') {
        // A second colon means an unbracketed IPv6 literal (invalid in Host); leave it alone
        // rather than cut it somewhere arbitrary.
        Some(colon) if !bytes[colon + 1..].contains(&b':') => &host[..colon],
        _ => host,
    }
}

// ---------------------------------------------------------------------------------------------
// Segment trie

/// FNV-1a. The keys are config-controlled and requests only look them up, so hash flooding
/// is not a concern here and the cheaper hash is safe (SipHash would dominate the lookup).
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// Routes of one host class, by path segment. `nodes[0]` is the root (the path `/`).
#[derive(Debug)]
struct Trie {
    nodes: Vec<Node>,
}

#[derive(Debug, Default)]
struct Node {
    /// Children by exact segment text (an exact path with a trailing slash has an `""` edge).
    literals: FastMap<Box<str>, usize>,
    /// Child for template `*` / `{x}`: any one non-empty segment.
    wildcard: Option<usize>,
    /// Routes matching every path that reaches this node: prefixes ending here, templates
    /// whose `**` starts here.
    reached: Vec<usize>,
    /// Routes matching only when the path ends exactly here: exact paths, templates without
    /// `**`.
    end: Vec<usize>,
}

impl Default for Trie {
    fn default() -> Self {
        Trie {
            nodes: vec![Node::default()],
        }
    }
}

/// The segments of a normalised path, as the trie sees them: `/` has none, `/a/` has `a` and
/// `""`.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.get(1..)
        .filter(|rest| !rest.is_empty())
        .into_iter()
        .flat_map(|rest| rest.split('/'))
}

impl Trie {
    fn insert(&mut self, id: usize, path: &PathCond) {
        match path {
            PathCond::Exact(p) => {
                let node = segments(p).fold(0, |node, s| self.literal_child(node, s));
                self.nodes[node].end.push(id);
            }
            PathCond::Prefix(p) => {
                let node = segments(p).fold(0, |node, s| self.literal_child(node, s));
                self.nodes[node].reached.push(id);
            }
            PathCond::Template(t) => {
                let mut node = 0;
                for element in t.elements() {
                    node = match element {
                        Element::Literal(lit) => self.literal_child(node, lit),
                        Element::Star => self.wildcard_child(node),
                        Element::DoubleStar => {
                            self.nodes[node].reached.push(id);
                            return;
                        }
                    };
                }
                self.nodes[node].end.push(id);
            }
            PathCond::Never(_) => {}
        }
    }

    fn literal_child(&mut self, node: usize, segment: &str) -> usize {
        if let Some(&child) = self.nodes[node].literals.get(segment) {
            return child;
        }
        let child = self.push_node();
        self.nodes[node].literals.insert(segment.into(), child);
        child
    }

    fn wildcard_child(&mut self, node: usize) -> usize {
        if let Some(child) = self.nodes[node].wildcard {
            return child;
        }
        let child = self.push_node();
        self.nodes[node].wildcard = Some(child);
        child
    }

    fn push_node(&mut self) -> usize {
        self.nodes.push(Node::default());
        self.nodes.len() - 1
    }

    /// Call `visit` with every route whose path condition matches `path` (normalised, starts
    /// with `/`). Deeper nodes are visited before shallower ones: their routes usually rank
    /// better (longer prefix, exact or template over prefix), which lets the caller skip the
    /// shallower candidates without checking them.
    fn for_each_candidate(&self, path: &str, visit: &mut impl FnMut(usize)) {
        let rest = path.get(1..).filter(|rest| !rest.is_empty());
        self.walk(0, rest, visit);
    }

    /// `rest`: the path after the segments consumed so far, `None` when all are consumed.
    fn walk(&self, node: usize, rest: Option<&str>, visit: &mut impl FnMut(usize)) {
        let n = &self.nodes[node];
        match rest {
            None => n.end.iter().for_each(|&id| visit(id)),
            Some(rest) => {
                let (segment, next) = match rest.split_once('/') {
                    Some((segment, next)) => (segment, Some(next)),
                    None => (rest, None),
                };
                if let Some(&child) = n.literals.get(segment) {
                    self.walk(child, next, visit);
                }
                // `*` never matches an empty segment (`/users/{id}` must not match `/users/`).
                if let (Some(child), false) = (n.wildcard, segment.is_empty()) {
                    self.walk(child, next, visit);
                }
            }
        }
        n.reached.iter().for_each(|&id| visit(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::PathError;
    use http::header::{HeaderName, HeaderValue};
    use proptest::prelude::*;

    // ---- helpers -------------------------------------------------------------------------

    fn route(path: PathMatch) -> RouteMatch {
        RouteMatch {
            path,
            ..RouteMatch::default()
        }
    }
    fn prefix(p: &str) -> RouteMatch {
        route(PathMatch::Prefix(p.into()))
    }
    fn exact(p: &str) -> RouteMatch {
        route(PathMatch::Exact(p.into()))
    }
    fn template(p: &str) -> RouteMatch {
        route(PathMatch::Template(p.into()))
    }
    fn host(mut r: RouteMatch, h: &str) -> RouteMatch {
        r.host = Some(match h.strip_prefix('*') {
            Some(suffix) => HostMatch::Suffix(suffix.into()),
            None => HostMatch::Exact(h.into()),
        });
        r
    }
    fn methods(mut r: RouteMatch, ms: &[Method]) -> RouteMatch {
        r.methods = ms.to_vec();
        r
    }
    fn header(mut r: RouteMatch, name: &'static str, value: Option<&str>) -> RouteMatch {
        r.headers.push(HeaderCondition {
            name: HeaderName::from_static(name),
            value: value.map(str::to_string),
        });
        r
    }
    fn query(mut r: RouteMatch, name: &str, value: Option<&str>) -> RouteMatch {
        r.query.push(QueryCondition {
            name: name.into(),
            value: value.map(str::to_string),
        });
        r
    }

    #[derive(Debug)]
    struct Req {
        host: String,
        path: String,
        query: Option<String>,
        method: Method,
        headers: HeaderMap,
    }

    fn req(host: &str, path: &str) -> Req {
        Req {
            host: host.into(),
            path: path.into(),
            query: None,
            method: Method::GET,
            headers: HeaderMap::new(),
        }
    }

    impl Req {
        fn method(mut self, m: Method) -> Req {
            self.method = m;
            self
        }
        fn query(mut self, q: &str) -> Req {
            self.query = Some(q.into());
            self
        }
        fn header(mut self, name: &'static str, value: &'static str) -> Req {
            self.headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
            self
        }
        fn view(&self) -> RequestView<'_> {
            RequestView {
                host: &self.host,
                path: &self.path,
                query: self.query.as_deref(),
                method: &self.method,
                headers: &self.headers,
            }
        }
    }

    /// `Router::find`, cross-checked against `explain` (which checks routes one by one) so
    /// that every unit test also tests the index against the reference.
    fn find(routes: &[RouteMatch], r: &Req) -> Lookup {
        let router = Router::new(routes);
        let found = router.find(&r.view());
        let selected = router
            .explain(&r.view())
            .into_iter()
            .find(|v| v.outcome == Outcome::Selected)
            .map(|v| v.route);
        match &found {
            Lookup::Matched(i) => assert_eq!(selected, Some(*i), "explain disagrees"),
            _ => assert_eq!(selected, None, "explain disagrees"),
        }
        found
    }

    fn matched(routes: &[RouteMatch], r: &Req) -> Option<usize> {
        match find(routes, r) {
            Lookup::Matched(i) => Some(i),
            _ => None,
        }
    }

    // ---- path kinds ----------------------------------------------------------------------

    #[test]
    fn prefix_matches_on_segment_boundaries() {
        let routes = [prefix("/v1/users")];
        for p in ["/v1/users", "/v1/users/", "/v1/users/42", "/v1/users/42/x"] {
            assert_eq!(matched(&routes, &req("h", p)), Some(0), "{p}");
        }
        for p in ["/v1/usersx", "/v1/user", "/v1", "/", "/v2/users"] {
            assert_eq!(matched(&routes, &req("h", p)), None, "{p}");
        }
    }

    #[test]
    fn root_prefix_matches_everything() {
        let routes = [prefix("/")];
        for p in ["/", "/a", "/a/b/", "/%2F"] {
            assert_eq!(matched(&routes, &req("h", p)), Some(0), "{p}");
        }
    }

    #[test]
    fn exact_is_byte_equal() {
        let routes = [exact("/health"), exact("/dir/")];
        assert_eq!(matched(&routes, &req("h", "/health")), Some(0));
        assert_eq!(matched(&routes, &req("h", "/health/")), None);
        assert_eq!(matched(&routes, &req("h", "/health/x")), None);
        assert_eq!(matched(&routes, &req("h", "/Health")), None);
        assert_eq!(matched(&routes, &req("h", "/dir/")), Some(1));
        assert_eq!(matched(&routes, &req("h", "/dir")), None);
        assert_eq!(matched(&[exact("/")], &req("h", "/")), Some(0));
    }

    #[test]
    fn template_routes() {
        let routes = [template("/users/{id}"), template("/files/**")];
        assert_eq!(matched(&routes, &req("h", "/users/5")), Some(0));
        assert_eq!(matched(&routes, &req("h", "/users/5/")), None);
        assert_eq!(matched(&routes, &req("h", "/users/")), None);
        assert_eq!(matched(&routes, &req("h", "/files")), Some(1));
        assert_eq!(matched(&routes, &req("h", "/files/a/b/")), Some(1));
    }

    #[test]
    fn config_paths_are_canonicalised() {
        // Not what the validator produces, but the router must still compare like with like.
        let routes = [prefix("/api/"), exact("/a//b"), prefix("/%7euser")];
        assert_eq!(matched(&routes, &req("h", "/api/x")), Some(0));
        assert_eq!(matched(&routes, &req("h", "/a/b")), Some(1));
        assert_eq!(matched(&routes, &req("h", "/~user/x")), Some(2));
    }

    #[test]
    fn invalid_paths_never_match() {
        let routes = [
            template("/a/{"),
            exact("no-slash"),
            prefix("/a\\b"),
            prefix("/"),
        ];
        assert_eq!(matched(&routes, &req("h", "/a/{")), Some(3));
        assert_eq!(matched(&routes, &req("h", "no-slash")), None);
        let router = Router::new(&routes);
        let verdicts = router.explain(&req("h", "/a/x").view());
        assert_eq!(verdicts[0].route, 3);
        for v in &verdicts[1..] {
            assert_eq!(v.outcome, Outcome::PathMismatch);
            assert!(v.rank_note.contains("never matches"), "{}", v.rank_note);
        }
    }

    // ---- precedence ----------------------------------------------------------------------

    #[test]
    fn exact_beats_template_beats_prefix() {
        let routes = [
            prefix("/users"),
            template("/users/{id}"),
            exact("/users/me"),
        ];
        assert_eq!(matched(&routes, &req("h", "/users/me")), Some(2));
        assert_eq!(matched(&routes, &req("h", "/users/5")), Some(1));
        assert_eq!(matched(&routes, &req("h", "/users/5/x")), Some(0));
        // A template beats even a longer prefix.
        let routes = [prefix("/users/5"), template("/users/*")];
        assert_eq!(matched(&routes, &req("h", "/users/5")), Some(1));
    }

    #[test]
    fn longer_prefix_beats_shorter() {
        let routes = [
            prefix("/"),
            prefix("/v1"),
            prefix("/v1/users"),
            prefix("/v1/u"),
        ];
        assert_eq!(matched(&routes, &req("h", "/v1/users/1")), Some(2));
        assert_eq!(matched(&routes, &req("h", "/v1/u")), Some(3));
        assert_eq!(matched(&routes, &req("h", "/v1/x")), Some(1));
        assert_eq!(matched(&routes, &req("h", "/v2")), Some(0));
    }

    #[test]
    fn template_specificity() {
        // More literals first, then more fixed segments.
        let routes = [
            template("/{a}/{b}/{c}"),
            template("/users/{id}"),
            template("/users/{id}/**"),
            template("/users/{id}/posts"),
        ];
        assert_eq!(matched(&routes, &req("h", "/users/1/posts")), Some(3));
        assert_eq!(matched(&routes, &req("h", "/users/1")), Some(1));
        assert_eq!(matched(&routes, &req("h", "/users/1/x")), Some(2));
        assert_eq!(matched(&routes, &req("h", "/x/1/x")), Some(0));
        let routes = [template("/a/**"), template("/a/*")];
        assert_eq!(matched(&routes, &req("h", "/a/b")), Some(1));
    }

    #[test]
    fn exact_host_beats_wildcard_beats_any() {
        let routes = [
            prefix("/"),
            host(prefix("/"), "*.example.com"),
            host(prefix("/"), "*.api.example.com"),
            host(prefix("/"), "v1.api.example.com"),
        ];
        assert_eq!(matched(&routes, &req("v1.api.example.com", "/")), Some(3));
        assert_eq!(matched(&routes, &req("v2.api.example.com", "/")), Some(2));
        assert_eq!(matched(&routes, &req("a.b.example.com", "/")), Some(1));
        assert_eq!(matched(&routes, &req("api.example.com", "/")), Some(1));
        assert_eq!(matched(&routes, &req("example.com", "/")), Some(0));
        assert_eq!(matched(&routes, &req("other.org", "/")), Some(0));
        // The longer suffix wins even against a more specific path under a shorter one.
        let routes = [
            host(exact("/x"), "*.example.com"),
            host(prefix("/"), "*.api.example.com"),
        ];
        assert_eq!(matched(&routes, &req("v.api.example.com", "/x")), Some(1));
        assert_eq!(matched(&routes, &req("v.example.com", "/x")), Some(0));
    }

    #[test]
    fn suffix_never_matches_the_bare_domain() {
        let routes = [host(prefix("/"), "*.example.com")];
        assert_eq!(matched(&routes, &req("example.com", "/")), None);
        assert_eq!(matched(&routes, &req("xexample.com", "/")), None);
        assert_eq!(matched(&routes, &req(".example.com", "/")), None);
        assert_eq!(matched(&routes, &req("x.y.example.com", "/")), Some(0));
    }

    #[test]
    fn host_outranks_path() {
        let routes = [exact("/login"), host(prefix("/"), "example.com")];
        assert_eq!(matched(&routes, &req("example.com", "/login")), Some(1));
        assert_eq!(matched(&routes, &req("other.com", "/login")), Some(0));
        // ... but a host class without a full match falls through to the next.
        let routes = [exact("/login"), host(exact("/"), "example.com")];
        assert_eq!(matched(&routes, &req("example.com", "/login")), Some(0));
    }

    #[test]
    fn more_conditions_win() {
        let routes = [
            prefix("/api"),
            header(prefix("/api"), "x-canary", None),
            header(
                header(prefix("/api"), "x-canary", None),
                "x-team",
                Some("a"),
            ),
        ];
        assert_eq!(matched(&routes, &req("h", "/api")), Some(0));
        assert_eq!(
            matched(&routes, &req("h", "/api").header("x-canary", "1")),
            Some(1)
        );
        assert_eq!(
            matched(
                &routes,
                &req("h", "/api")
                    .header("x-canary", "1")
                    .header("x-team", "a")
            ),
            Some(2)
        );
        // A method list counts as one condition.
        let routes = [prefix("/api"), methods(prefix("/api"), &[Method::GET])];
        assert_eq!(matched(&routes, &req("h", "/api")), Some(1));
        assert_eq!(
            matched(&routes, &req("h", "/api").method(Method::POST)),
            Some(0)
        );
        // Conditions rank below path specificity.
        let routes = [header(prefix("/api"), "x-a", None), prefix("/api/v1")];
        assert_eq!(
            matched(&routes, &req("h", "/api/v1").header("x-a", "1")),
            Some(1)
        );
    }

    #[test]
    fn declaration_order_breaks_ties() {
        let routes = [prefix("/api"), prefix("/api"), prefix("/api/")];
        assert_eq!(matched(&routes, &req("h", "/api/x")), Some(0));
        let routes = [
            header(prefix("/api"), "x-a", None),
            query(prefix("/api"), "q", None),
        ];
        assert_eq!(
            matched(&routes, &req("h", "/api").header("x-a", "1").query("q")),
            Some(0)
        );
        assert_eq!(matched(&routes, &req("h", "/api").query("q")), Some(1));
    }

    // ---- methods -------------------------------------------------------------------------

    #[test]
    fn method_not_allowed_lists_allow() {
        let routes = [
            methods(prefix("/api"), &[Method::POST, Method::GET]),
            methods(exact("/api/x"), &[Method::PUT, Method::POST]),
            // Fails on a header too: not part of the 405 union.
            header(methods(prefix("/api"), &[Method::PATCH]), "x-a", None),
            methods(host(prefix("/"), "other.com"), &[Method::OPTIONS]),
        ];
        assert_eq!(
            find(&routes, &req("h", "/api/x").method(Method::DELETE)),
            Lookup::MethodNotAllowed(vec![Method::GET, Method::HEAD, Method::POST, Method::PUT])
        );
        assert_eq!(
            find(&routes, &req("h", "/nope").method(Method::DELETE)),
            Lookup::NotFound
        );
    }

    #[test]
    fn method_mismatch_falls_through_to_a_route_that_allows_it() {
        let routes = [prefix("/"), methods(exact("/a"), &[Method::GET])];
        assert_eq!(matched(&routes, &req("h", "/a")), Some(1));
        assert_eq!(
            matched(&routes, &req("h", "/a").method(Method::POST)),
            Some(0)
        );
    }

    #[test]
    fn head_is_allowed_via_get() {
        let routes = [methods(prefix("/"), &[Method::GET])];
        assert_eq!(
            matched(&routes, &req("h", "/").method(Method::HEAD)),
            Some(0)
        );
        let routes = [methods(prefix("/"), &[Method::POST])];
        assert_eq!(
            find(&routes, &req("h", "/").method(Method::HEAD)),
            Lookup::MethodNotAllowed(vec![Method::POST])
        );
        let ext = Method::from_bytes(b"PURGE").unwrap();
        let routes = [methods(prefix("/"), std::slice::from_ref(&ext))];
        assert_eq!(matched(&routes, &req("h", "/").method(ext)), Some(0));
    }

    // ---- hosts ---------------------------------------------------------------------------

    #[test]
    fn request_host_is_canonicalised() {
        let routes = [
            host(prefix("/"), "example.com"),
            host(prefix("/"), "[::1]"),
            host(prefix("/"), "*.wild.org"),
        ];
        for h in [
            "example.com",
            "example.com:8080",
            "EXAMPLE.com",
            "Example.COM:443",
            "example.com.",
            "example.com.:80",
        ] {
            assert_eq!(matched(&routes, &req(h, "/")), Some(0), "{h}");
        }
        assert_eq!(matched(&routes, &req("[::1]:8080", "/")), Some(1));
        assert_eq!(matched(&routes, &req("[::1]", "/")), Some(1));
        assert_eq!(matched(&routes, &req("A.WILD.ORG:1", "/")), Some(2));
        assert_eq!(matched(&routes, &req("", "/")), None);
        assert_eq!(matched(&routes, &req("::1", "/")), None);
        let long = format!("{}.EXAMPLE.COM", "A".repeat(300));
        assert_eq!(
            matched(&[host(prefix("/"), "*.example.com")], &req(&long, "/")),
            Some(0)
        );
    }

    #[test]
    fn config_hosts_are_canonicalised() {
        let routes = [
            host(prefix("/"), "Example.COM."),
            host(prefix("/"), "*wild.org"),
        ];
        assert_eq!(matched(&routes, &req("example.com", "/")), Some(0));
        assert_eq!(matched(&routes, &req("a.wild.org", "/")), Some(1));
        assert_eq!(matched(&routes, &req("xwild.org", "/")), None);
    }

    // ---- headers and query ---------------------------------------------------------------

    #[test]
    fn header_conditions() {
        let routes = [header(header(prefix("/"), "x-a", Some("1")), "x-b", None)];
        let base = || req("h", "/").header("x-b", "");
        assert_eq!(matched(&routes, &base().header("x-a", "1")), Some(0));
        assert_eq!(
            matched(&routes, &base().header("x-a", "2").header("x-a", "1")),
            Some(0)
        );
        assert_eq!(matched(&routes, &base().header("x-a", "11")), None);
        assert_eq!(matched(&routes, &base().header("x-a", "1 ")), None);
        assert_eq!(matched(&routes, &req("h", "/").header("x-a", "1")), None);
    }

    #[test]
    fn query_conditions() {
        let routes = [query(query(prefix("/"), "a b", Some("x y")), "flag", None)];
        for q in [
            "a+b=x+y&flag",
            "flag=1&a%20b=x%20y",
            "a%20b=x+y&flag=",
            "z=1&&a+b=nope&a+b=x%20y&flag",
            "%61+b=x+%79&flag",
        ] {
            assert_eq!(matched(&routes, &req("h", "/").query(q)), Some(0), "{q}");
        }
        for q in ["a+b=x+y", "flag&a+b=x", "flag&a_b=x+y", "flagx&a+b=x+y", ""] {
            assert_eq!(matched(&routes, &req("h", "/").query(q)), None, "{q}");
        }
        assert_eq!(matched(&routes, &req("h", "/")), None);
        // `?flag` is present with an empty value; a malformed escape is taken literally.
        let routes = [
            query(prefix("/"), "v", Some("")),
            query(prefix("/"), "p", Some("%zz")),
        ];
        assert_eq!(matched(&routes, &req("h", "/").query("v")), Some(0));
        assert_eq!(matched(&routes, &req("h", "/").query("p=%zz")), Some(1));
        assert_eq!(matched(&routes, &req("h", "/").query("p=%25zz")), Some(1));
    }

    // ---- explain -------------------------------------------------------------------------

    #[test]
    fn explain_reports_every_route_in_precedence_order() {
        let routes = [
            prefix("/"),
            host(prefix("/"), "other.com"),
            template("/users/{id}"),
            methods(template("/users/{id}"), &[Method::POST]),
            header(template("/users/{id}"), "x-a", None),
            query(template("/users/{id}"), "q", None),
            prefix("/users"),
            exact("/nope"),
        ];
        let router = Router::new(&routes);
        let r = req("example.com:80", "/users/7");
        let verdicts = router.explain(&r.view());
        let got: Vec<(usize, Outcome)> = verdicts
            .iter()
            .map(|v| (v.route, v.outcome.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, Outcome::HostMismatch),
                (7, Outcome::PathMismatch),
                (3, Outcome::MethodMismatch),
                (4, Outcome::HeaderMismatch("x-a".into())),
                (5, Outcome::QueryMismatch("q".into())),
                (2, Outcome::Selected),
                (6, Outcome::MatchedButShadowed),
                (0, Outcome::MatchedButShadowed),
            ]
        );
        assert_eq!(router.find(&r.view()), Lookup::Matched(2));
        assert_eq!(
            verdicts[5].captures,
            vec![("id".to_string(), "7".to_string())]
        );
        assert_eq!(
            verdicts[0].rank_note,
            "exact host other.com, path prefix / (1 chars)"
        );
        assert_eq!(
            verdicts[2].rank_note,
            "any host, path template /users/{id} (1 literal, 2 fixed segments), methods POST"
        );
        assert_eq!(
            verdicts[3].rank_note,
            "any host, path template /users/{id} (1 literal, 2 fixed segments), 1 header condition"
        );
        let verdicts = Router::new(&[host(prefix("/v1"), "*.example.com")])
            .explain(&req("a.example.com", "/v1").view());
        assert_eq!(
            verdicts[0].rank_note,
            "wildcard host *.example.com (12 char suffix), path prefix /v1 (3 chars)"
        );
    }

    // ---- scale ---------------------------------------------------------------------------

    #[test]
    fn large_tables_cost_the_same_for_first_and_last_route() {
        let mut routes: Vec<RouteMatch> =
            (0..1000).map(|i| prefix(&format!("/svc{i:04}"))).collect();
        routes.extend((0..1000).map(|i| template(&format!("/t{i:04}/{{id}}"))));
        routes.extend((0..1000).map(|i| host(prefix("/"), &format!("h{i:04}.example.com"))));
        routes.extend((0..1000).map(|i| host(prefix("/"), &format!("*.w{i:04}.example.com"))));
        routes.push(prefix("/"));
        let router = Router::new(&routes);
        let cases = [
            ("x", "/svc0000/a", 0),
            ("x", "/svc0999/a", 999),
            ("x", "/t0000/5", 1000),
            ("x", "/t0999/5", 1999),
            ("h0000.example.com", "/a", 2000),
            ("h0999.example.com", "/a", 2999),
            ("a.w0000.example.com", "/a", 3000),
            ("a.w0999.example.com", "/a", 3999),
        ];
        for (h, p, want) in cases {
            let r = req(h, p);
            // One candidate checked: the index went straight to the route, and the catch-all
            // `/` (visited after it) was skipped unchecked because it ranks lower.
            assert_eq!(
                router.find_counting(&r.view()),
                (Lookup::Matched(want), 1),
                "{h}{p}"
            );
        }
        assert_eq!(
            router.find(&req("x", "/svc1000").view()),
            Lookup::Matched(4000)
        );
    }

    #[test]
    fn router_can_be_shared_across_workers() {
        // The table is built once per reload and read by every worker thread.
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Router>();
    }

    // ---- escape attempts -----------------------------------------------------------------

    #[test]
    fn escape_attempts_do_not_reach_the_api_prefix() {
        let routes = [prefix("/api"), prefix("/admin")];
        let router = Router::new(&routes);
        let cases: [(&str, Result<&str, PathError>); 7] = [
            ("/api/../admin", Ok("/admin")),
            ("/api/%2e%2e/admin", Ok("/admin")),
            ("/api/%2E%2e/admin", Ok("/admin")),
            ("/api//../admin", Ok("/admin")),
            ("/api/..;/admin", Err(PathError::DotSegmentParameters)),
            ("/api\\..\\admin", Err(PathError::Backslash)),
            ("/api/%5c../admin", Err(PathError::Backslash)),
        ];
        for (raw, want) in cases {
            let normalised = normalize_path(raw);
            assert_eq!(normalised.as_deref().map_err(|e| *e), want, "{raw}");
            if let Ok(path) = normalised {
                let r = req("h", &path);
                assert_eq!(router.find(&r.view()), Lookup::Matched(1), "{raw}");
            }
        }
    }

    // ---- property: the index agrees with the route-by-route reference ----------------------

    fn arb_route() -> impl Strategy<Value = RouteMatch> {
        let hosts = prop::sample::select(vec![
            None,
            Some(HostMatch::Exact("a.com".into())),
            Some(HostMatch::Exact("x.a.com".into())),
            Some(HostMatch::Suffix(".a.com".into())),
            Some(HostMatch::Suffix(".x.a.com".into())),
        ]);
        // Small alphabets so that routes and requests collide often.
        let segs = || prop::collection::vec(prop::sample::select(vec!["a", "b"]), 0..3);
        let tpl_segs = prop::collection::vec(prop::sample::select(vec!["a", "*", "{}"]), 0..3);
        let path = prop_oneof![
            (segs(), any::<bool>()).prop_map(|(s, slash)| {
                let mut p = format!("/{}", s.join("/"));
                if slash && !s.is_empty() {
                    p.push('/');
                }
                PathMatch::Exact(p)
            }),
            segs().prop_map(|s| PathMatch::Prefix(format!("/{}", s.join("/")))),
            (tpl_segs, any::<bool>()).prop_map(|(s, rest)| {
                let mut parts: Vec<String> = s
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        if *p == "{}" {
                            format!("{{v{i}}}")
                        } else {
                            p.to_string()
                        }
                    })
                    .collect();
                if rest {
                    parts.push("**".into());
                }
                PathMatch::Template(format!("/{}", parts.join("/")))
            }),
        ];
        let methods = prop::sample::subsequence(vec![Method::GET, Method::POST], 0..=2);
        let headers = prop::sample::select(vec![None, Some(None), Some(Some("1"))]);
        let queries = prop::sample::select(vec![None, Some(None), Some(Some("1"))]);
        (hosts, path, methods, headers, queries).prop_map(|(host, path, methods, h, q)| {
            RouteMatch {
                host,
                path,
                methods,
                headers: h
                    .map(|v| HeaderCondition {
                        name: HeaderName::from_static("x-a"),
                        value: v.map(str::to_string),
                    })
                    .into_iter()
                    .collect(),
                query: q
                    .map(|v| QueryCondition {
                        name: "q".into(),
                        value: v.map(str::to_string),
                    })
                    .into_iter()
                    .collect(),
            }
        })
    }

    fn arb_req() -> impl Strategy<Value = Req> {
        let hosts = prop::sample::select(vec![
            "a.com",
            "A.COM:80",
            "x.a.com.",
            "y.x.a.com",
            "z.a.com",
            "b.com",
            ".a.com",
        ]);
        let path = (
            prop::collection::vec(prop::sample::select(vec!["a", "b"]), 0..4),
            any::<bool>(),
        )
            .prop_map(|(s, slash)| {
                let p = format!("/{}{}", s.join("/"), if slash { "/" } else { "" });
                normalize_path(&p).expect("simple path").into_owned()
            });
        let method = prop::sample::select(vec![
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::DELETE,
        ]);
        let header = prop::sample::select(vec![None, Some("1"), Some("2")]);
        let query = prop::sample::select(vec![
            None,
            Some("q=1"),
            Some("q=%31"),
            Some("q"),
            Some("r=1"),
        ]);
        (hosts, path, method, header, query).prop_map(|(h, path, method, hv, q)| {
            let mut r = req(h, &path).method(method);
            if let Some(v) = hv {
                r = r.header("x-a", v);
            }
            r.query = q.map(str::to_string);
            r
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn index_agrees_with_reference(
            routes in prop::collection::vec(arb_route(), 0..12),
            requests in prop::collection::vec(arb_req(), 1..8),
        ) {
            let router = Router::new(&routes);
            for r in &requests {
                let verdicts = router.explain(&r.view());
                prop_assert_eq!(verdicts.len(), routes.len());
                let selected = verdicts.iter().find(|v| v.outcome == Outcome::Selected);
                let expected = match selected {
                    Some(v) => Lookup::Matched(v.route),
                    None => {
                        let mut allow: Vec<Method> = verdicts
                            .iter()
                            .filter(|v| v.outcome == Outcome::MethodMismatch)
                            .flat_map(|v| routes[v.route].methods.clone())
                            .collect();
                        if allow.is_empty() {
                            Lookup::NotFound
                        } else {
                            if allow.contains(&Method::GET) {
                                allow.push(Method::HEAD);
                            }
                            allow.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                            allow.dedup();
                            Lookup::MethodNotAllowed(allow)
                        }
                    }
                };
                prop_assert_eq!(router.find(&r.view()), expected, "{} {}", r.host, r.path);
            }
        }
    }
}
