//! Request and response rewriting, per route: the keys `strip_prefix`, `path_rewrite`
//! (a path built from the route's template captures), `regex_rewrite`, `query_params`,
//! `host_rewrite`, `request_headers` and `response_headers` (each header or query operation:
//! remove, then set, then add). At most one of the three path rewrites.
//!
//! Two layers in a route's stack:
//! - [`ResponseHeaders`], outermost: it decorates every answer of the route — the upstream's
//!   and the gateway's own errors (413, 403, 502, 504…) alike — so it sits outside the
//!   rescue layer;
//! - [`RequestTransform`], after the body limit and auth, before the timeout: it rewrites the
//!   request as the client sent it (after the gateway's forwarding headers), and only once the
//!   request has been admitted.
//!
//! A route without transforms gets both layers switched off: a branch each, nothing cloned.

use crate::body::Body;
use crate::config::check::{
    header_op_name, is_segment_prefix, normalise_prefix, Description, RouteCheck, RoutePolicy,
};
use crate::config::source::{KeyPath, Seg};
use crate::error::GatewayError;
use crate::middleware::captures::CaptureTemplate;
use http::header::HOST;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri};
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// The route's rewrites, checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct TransformPolicy {
    /// Normalised: starts with `/`, no trailing `/`, never `/` itself.
    pub(crate) strip_prefix: Option<String>,
    pub(crate) path_rewrite: Option<PathRewrite>,
    pub(crate) query_params: QueryOps,
    pub(crate) host_rewrite: Option<HeaderValue>,
    pub(crate) request_headers: HeaderOps,
    pub(crate) response_headers: HeaderOps,
}

/// A new path for the upstream request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PathRewrite {
    /// `path_rewrite`: text with the route's captures filled in.
    Template(CaptureTemplate),
    /// `regex_rewrite`: the first match of `pattern` replaced (`$1`, `${name}` refer to its
    /// groups).
    Regex {
        pattern: RegexText,
        substitution: String,
    },
}

/// A compiled regex, compared by its text.
#[derive(Debug, Clone)]
pub(crate) struct RegexText(pub(crate) regex_lite::Regex);

impl PartialEq for RegexText {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// What a path rewrite made of a request's path.
#[derive(Debug, PartialEq)]
enum Rewritten {
    /// Forward with this path.
    To(String),
    /// A `regex_rewrite` whose pattern does not match: the path stays.
    Unchanged,
    /// Nothing that may be forwarded: the request is answered 500 `path_rewrite_failed`,
    /// never sent on with its old path.
    Failed,
}

impl PathRewrite {
    /// The new path for `path`.
    fn apply(&self, path: &str) -> Rewritten {
        let made = match self {
            // The route's template matched this path, so it always expands; if it ever did
            // not, the request must not go on as if it had been rewritten.
            PathRewrite::Template(template) => template.expand(path),
            PathRewrite::Regex {
                pattern,
                substitution,
            } => {
                if !pattern.0.is_match(path) {
                    return Rewritten::Unchanged;
                }
                Some(pattern.0.replace(path, substitution.as_str()).into_owned())
            }
        };
        match made {
            // Literal text is checked when the config loads and captures are pieces of a
            // valid path, but a substitution that starts with a group can still lose the `/`.
            Some(made) if made.starts_with('/') && !made.contains(['?', '#']) => {
                Rewritten::To(made)
            }
            _ => Rewritten::Failed,
        }
    }
}

/// Whether a character may be written as is in a URL path (RFC 3986 `pchar` or `/`);
/// anything else has to be percent-encoded in the config.
pub(crate) fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@%/".contains(c)
}

/// The literal text of a regex substitution: `$$` is a `$`, and `$name` / `${name}` are
/// groups, filled from the path (which is valid path text) — left out.
fn substitution_literals(substitution: &str) -> String {
    let mut out = String::new();
    let mut chars = substitution.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('$') => {
                chars.next();
                out.push('$');
            }
            Some('{') => {
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                }
            }
            Some(c) if c.is_ascii_alphanumeric() || *c == '_' => {
                while chars
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    chars.next();
                }
            }
            _ => out.push('$'),
        }
    }
    out
}

/// Query parameter operations: remove (by decoded name), then set, then add.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct QueryOps {
    /// `name=value`, already form-encoded.
    pub(crate) set: Vec<(String, String)>,
    pub(crate) add: Vec<(String, String)>,
    pub(crate) remove: Vec<String>,
}

impl QueryOps {
    pub(crate) fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// The query after the operations; `None` for no query at all.
    fn apply(&self, query: Option<&str>) -> Option<String> {
        let mut pairs: Vec<&str> = query
            .unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty())
            .collect();
        let name_of = |pair: &str| {
            let raw = pair.split_once('=').map_or(pair, |(name, _)| name);
            form_decode(raw)
        };
        pairs.retain(|pair| {
            let name = name_of(pair);
            !self.remove.contains(&name) && !self.set.iter().any(|(n, _)| form_decode(n) == name)
        });
        let mut out: Vec<String> = pairs.into_iter().map(str::to_string).collect();
        for (name, value) in self.set.iter().chain(&self.add) {
            out.push(format!("{name}={value}"));
        }
        (!out.is_empty()).then(|| out.join("&"))
    }
}

/// `+` is a space, `%XX` a byte (as query conditions compare names).
fn form_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| char::from(b).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push((high * 16 + low) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Form-encode a configured name or value for a query string.
fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(byte))
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// Header operations, applied in the order remove, set, add.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct HeaderOps {
    pub(crate) set: Vec<(HeaderName, HeaderValue)>,
    pub(crate) add: Vec<(HeaderName, HeaderValue)>,
    pub(crate) remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub(crate) fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Apply remove, then set, then add.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
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

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        parts.extend(self.remove.iter().map(|n| format!("remove {n}")));
        // Values are not printed: they may come from secrets (`${ENV}`).
        parts.extend(self.set.iter().map(|(n, _)| format!("set {n}")));
        parts.extend(self.add.iter().map(|(n, _)| format!("add {n}")));
        parts.join("; ")
    }
}

/// The transform keys as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct TransformFile {
    /// Remove this leading path (on a segment boundary) before forwarding.
    strip_prefix: Option<String>,
    /// The upstream path, with `{name}` filled from the route's path_template captures.
    path_rewrite: Option<String>,
    /// Replace the first match of a regular expression in the path.
    regex_rewrite: Option<RegexRewriteFile>,
    #[serde(default)]
    query_params: QueryOpsFile,
    /// Replace the Host header sent upstream.
    host_rewrite: Option<String>,
    #[serde(default)]
    request_headers: HeaderOpsFile,
    #[serde(default)]
    response_headers: HeaderOpsFile,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegexRewriteFile {
    /// A regular expression (regex-lite syntax) matched against the path.
    pattern: String,
    /// What replaces its first match; `$1` / `${name}` are its groups.
    substitution: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueryOpsFile {
    /// Replace every parameter of this name with one `name=value`.
    #[serde(default)]
    set: BTreeMap<String, String>,
    /// Append `name=value`, keeping existing ones.
    #[serde(default)]
    add: BTreeMap<String, String>,
    /// Remove every parameter of these (decoded) names.
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeaderOpsFile {
    /// Replace any existing value.
    #[serde(default)]
    set: BTreeMap<String, String>,
    /// Append a value, keeping existing ones.
    #[serde(default)]
    add: BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
}

impl RoutePolicy for TransformPolicy {
    const KEYS: &'static [&'static str] = &[
        "strip_prefix",
        "path_rewrite",
        "regex_rewrite",
        "query_params",
        "host_rewrite",
        "request_headers",
        "response_headers",
    ];
    type File = TransformFile;

    fn adds_layer(&self) -> bool {
        *self != TransformPolicy::default()
    }

    fn check(file: &TransformFile, route: &mut RouteCheck<'_, '_>) -> Option<Self> {
        let strip_prefix = check_strip_prefix(file, route);
        let path_rewrite = check_path_rewrite(file, route);
        let query_params = check_query_ops(&file.query_params, route);
        let host_rewrite = match file.host_rewrite.as_deref() {
            None => Some(None),
            Some("") => {
                let path = route.key("host_rewrite");
                route.report(&path, "cannot be empty; leave it out");
                None
            }
            Some(text) => match HeaderValue::from_str(text) {
                Ok(value) => Some(Some(value)),
                Err(_) => {
                    let path = route.key("host_rewrite");
                    route.report(&path, format!("{text:?} is not a valid Host header value"));
                    None
                }
            },
        };
        let path = route.key("request_headers");
        let request_headers = check_header_ops(route, &path, &file.request_headers, true);
        let path = route.key("response_headers");
        let response_headers = check_header_ops(route, &path, &file.response_headers, false);
        Some(TransformPolicy {
            strip_prefix: strip_prefix?,
            path_rewrite: path_rewrite?,
            query_params: query_params?,
            host_rewrite: host_rewrite?,
            request_headers: request_headers?,
            response_headers: response_headers?,
        })
    }

    fn describe(&self, request_path: &str, out: &mut Description) {
        let forwarded = match (&self.strip_prefix, &self.path_rewrite) {
            (Some(prefix), _) => strip_path_prefix(request_path, prefix)
                .unwrap_or(request_path)
                .to_string(),
            (None, Some(rewrite)) => match rewrite.apply(request_path) {
                Rewritten::To(path) => path,
                Rewritten::Unchanged => request_path.to_string(),
                Rewritten::Failed => {
                    "none: the rewrite makes no valid path (500 path_rewrite_failed)".to_string()
                }
            },
            (None, None) => request_path.to_string(),
        };
        out.line("upstream path", forwarded);
        if !self.query_params.is_empty() {
            let q = &self.query_params;
            let mut parts: Vec<String> = q.remove.iter().map(|n| format!("remove {n}")).collect();
            parts.extend(q.set.iter().map(|(n, v)| format!("set {n}={v}")));
            parts.extend(q.add.iter().map(|(n, v)| format!("add {n}={v}")));
            out.line("query parameters", parts.join("; "));
        }
        if let Some(host) = &self.host_rewrite {
            out.line("host rewrite", host.to_str().unwrap_or("?"));
        }
        if !self.request_headers.is_empty() {
            out.line("request headers", self.request_headers.describe());
        }
        if !self.response_headers.is_empty() {
            out.line("response headers", self.response_headers.describe());
        }
    }

    /// Header values may be written as numbers or booleans (`x-version: 2`).
    fn wants_text(path: &[Seg]) -> bool {
        let key =
            |seg: &Seg, names: &[&str]| matches!(seg, Seg::Key(k) if names.contains(&k.as_str()));
        matches!(path, [direction, op, Seg::Key(_)]
            if key(direction, &["request_headers", "response_headers"]) && key(op, &["set", "add"]))
    }
}

/// `path_rewrite` or `regex_rewrite` (at most one of them and `strip_prefix`).
fn check_path_rewrite(
    file: &TransformFile,
    route: &mut RouteCheck<'_, '_>,
) -> Option<Option<PathRewrite>> {
    let given = [
        file.strip_prefix.is_some(),
        file.path_rewrite.is_some(),
        file.regex_rewrite.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        let key = if file.path_rewrite.is_some() {
            "path_rewrite"
        } else {
            "regex_rewrite"
        };
        let path = route.key(key);
        route.report(
            &path,
            "give at most one of strip_prefix, path_rewrite and regex_rewrite",
        );
        return None;
    }
    if let Some(text) = &file.path_rewrite {
        let path = route.key("path_rewrite");
        if !text.starts_with('/') {
            route.report(&path, format!("{text:?} must start with `/`"));
            return None;
        }
        if text.contains(['?', '#']) || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            route.report(
                &path,
                format!("{text:?} may not contain `?`, `#`, whitespace or control characters (use query_params for the query)"),
            );
            return None;
        }
        // Placeholders aside (they are checked below), only path text; `{{` and `}}` are
        // literal braces (marked with characters the text cannot have: no control ones).
        let literal = text.replace("{{", "\u{1}").replace("}}", "\u{2}");
        if let Some(bad) = literal
            .split(['{', '}'])
            .step_by(2)
            .flat_map(str::chars)
            .map(|c| match c {
                '\u{1}' => '{',
                '\u{2}' => '}',
                c => c,
            })
            .find(|c| !is_path_char(*c))
        {
            route.report(
                &path,
                format!(
                    "{text:?}: {bad:?} cannot be written as is in a URL path \
                     (percent-encode it)"
                ),
            );
            return None;
        }
        let template = route.matcher().path_template.clone();
        return match CaptureTemplate::parse(text, template.as_deref()) {
            Ok(template) => Some(Some(PathRewrite::Template(template))),
            Err(message) => {
                route.report(&path, message);
                None
            }
        };
    }
    if let Some(regex) = &file.regex_rewrite {
        let path = route.key("regex_rewrite");
        let pattern = match regex_lite::Regex::new(&regex.pattern) {
            Ok(pattern) => pattern,
            Err(error) => {
                route.report(
                    &path.key("pattern"),
                    format!("invalid regular expression: {error}"),
                );
                return None;
            }
        };
        if !regex.substitution.starts_with('/') && !regex.substitution.starts_with('$') {
            route.report(
                &path.key("substitution"),
                "should start with `/` (or a group that does)",
            );
            return None;
        }
        if let Some(bad) = substitution_literals(&regex.substitution)
            .chars()
            .find(|c| !is_path_char(*c))
        {
            route.report(
                &path.key("substitution"),
                format!(
                    "{bad:?} cannot be written as is in a URL path (percent-encode it; \
                     use query_params for the query)"
                ),
            );
            return None;
        }
        return Some(Some(PathRewrite::Regex {
            pattern: RegexText(pattern),
            substitution: regex.substitution.clone(),
        }));
    }
    Some(None)
}

fn check_query_ops(file: &QueryOpsFile, route: &mut RouteCheck<'_, '_>) -> Option<QueryOps> {
    let path = route.key("query_params");
    let mut ok = true;
    for (op, map) in [("set", &file.set), ("add", &file.add)] {
        for name in map.keys() {
            if name.is_empty() {
                route.report_key(&path.key(op).key(name), "a parameter name cannot be empty");
                ok = false;
            }
        }
    }
    if file.remove.iter().any(String::is_empty) {
        route.report(&path.key("remove"), "a parameter name cannot be empty");
        ok = false;
    }
    let encode = |map: &BTreeMap<String, String>| {
        map.iter()
            .map(|(n, v)| (form_encode(n), form_encode(v)))
            .collect::<Vec<_>>()
    };
    ok.then(|| QueryOps {
        set: encode(&file.set),
        add: encode(&file.add),
        remove: file.remove.clone(),
    })
}

/// `Some(None)`: no strip. `None`: a problem was reported.
fn check_strip_prefix(
    file: &TransformFile,
    route: &mut RouteCheck<'_, '_>,
) -> Option<Option<String>> {
    let Some(text) = file.strip_prefix.as_deref() else {
        return Some(None);
    };
    let path = route.key("strip_prefix");
    route.literal_path(&path, text)?;
    let strip = text.trim_end_matches('/');
    if strip.is_empty() {
        route.report(
            &path,
            "stripping `/` would remove nothing; leave strip_prefix out",
        );
        return None;
    }
    // Only literal paths can be compared; a template may or may not start with it.
    let matcher = route.matcher();
    let conflict = match (&matcher.path_prefix, &matcher.path_exact) {
        // Some request under the prefix starts with the strip iff one of the two is a
        // segment prefix of the other (`/api` + strip `/api/v1` strips `/api/v1/...`).
        (Some(prefix), None) => {
            let prefix = normalise_prefix(prefix);
            (!is_segment_prefix(strip, &prefix) && !is_segment_prefix(&prefix, strip))
                .then(|| format!("path_prefix {prefix:?}"))
        }
        (None, Some(exact)) => {
            (!is_segment_prefix(strip, exact)).then(|| format!("path_exact {exact:?}"))
        }
        _ => None,
    };
    if let Some(matched) = conflict {
        let message = format!(
            "strip_prefix {strip:?} would never apply: this route's {matched} matches no \
             path that starts with {strip:?} on a segment boundary"
        );
        route.report(&path, message);
        return None;
    }
    Some(Some(strip.to_string()))
}

/// The `set` or `add` map of a header op: names are the keys, so name problems point at the
/// key and value problems at the value. The flag is false when anything was wrong.
fn check_header_values(
    route: &mut RouteCheck<'_, '_>,
    path: &KeyPath,
    entries: &BTreeMap<String, String>,
    request: bool,
) -> (Vec<(HeaderName, HeaderValue)>, bool) {
    let mut out: Vec<(HeaderName, HeaderValue)> = Vec::with_capacity(entries.len());
    let mut ok = true;
    for (name_text, value_text) in entries {
        let item = path.key(name_text);
        let name = match header_op_name(name_text, request) {
            Ok(name) if out.iter().any(|(seen, _)| *seen == name) => {
                let message =
                    format!("header `{name}` is given twice (names are case-insensitive)");
                route.report_key(&item, message);
                None
            }
            Ok(name) => Some(name),
            Err(message) => {
                route.report_key(&item, message);
                None
            }
        };
        let value = match HeaderValue::from_str(value_text) {
            Ok(value) => Some(value),
            Err(_) => {
                let message = format!(
                    "{value_text:?} is not a valid header value (visible ASCII, spaces and \
                     tabs only)"
                );
                route.report(&item, message);
                None
            }
        };
        match (name, value) {
            (Some(name), Some(value)) => out.push((name, value)),
            _ => ok = false,
        }
    }
    (out, ok)
}

fn check_header_ops(
    route: &mut RouteCheck<'_, '_>,
    path: &KeyPath,
    file: &HeaderOpsFile,
    request: bool,
) -> Option<HeaderOps> {
    let (set, set_ok) = check_header_values(route, &path.key("set"), &file.set, request);
    let (add, add_ok) = check_header_values(route, &path.key("add"), &file.add, request);
    let mut ok = set_ok && add_ok;

    let mut remove: Vec<HeaderName> = Vec::with_capacity(file.remove.len());
    for (index, name_text) in file.remove.iter().enumerate() {
        let item = path.key("remove").index(index);
        match header_op_name(name_text, request) {
            Ok(name) if remove.contains(&name) => {
                route.report(&item, format!("header `{name}` is listed twice"));
                ok = false;
            }
            Ok(name) => remove.push(name),
            Err(message) => {
                route.report(&item, message);
                ok = false;
            }
        }
    }
    ok.then_some(HeaderOps { set, add, remove })
}

/// `/v1/users/42` with prefix `/v1` -> `/users/42`; `/v1` -> `/`; no match -> unchanged.
pub(crate) fn strip_path_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() {
        Some("/")
    } else if rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

fn rewrite_path(uri: &Uri, prefix: &str) -> Option<Uri> {
    let stripped = strip_path_prefix(uri.path(), prefix)?;
    let target = match uri.query() {
        Some(query) => format!("{stripped}?{query}"),
        None => stripped.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(target).ok()?);
    Uri::from_parts(parts).ok()
}

/// The request side of a route's transforms.
#[derive(Debug)]
struct RequestTransforms {
    strip_prefix: Option<String>,
    path_rewrite: Option<PathRewrite>,
    query_params: QueryOps,
    host_rewrite: Option<HeaderValue>,
    headers: HeaderOps,
}

#[derive(Debug, Clone)]
pub(crate) struct RequestTransformLayer {
    transforms: Option<Arc<RequestTransforms>>,
}

impl RequestTransformLayer {
    pub(crate) fn new(policy: &TransformPolicy) -> RequestTransformLayer {
        let active = policy.strip_prefix.is_some()
            || policy.path_rewrite.is_some()
            || !policy.query_params.is_empty()
            || policy.host_rewrite.is_some()
            || !policy.request_headers.is_empty();
        RequestTransformLayer {
            transforms: active.then(|| {
                Arc::new(RequestTransforms {
                    strip_prefix: policy.strip_prefix.clone(),
                    path_rewrite: policy.path_rewrite.clone(),
                    query_params: policy.query_params.clone(),
                    host_rewrite: policy.host_rewrite.clone(),
                    headers: policy.request_headers.clone(),
                })
            }),
        }
    }
}

impl<S> Layer<S> for RequestTransformLayer {
    type Service = RequestTransform<S>;

    fn layer(&self, inner: S) -> RequestTransform<S> {
        RequestTransform {
            inner,
            transforms: self.transforms.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct RequestTransform<S> {
    inner: S,
    transforms: Option<Arc<RequestTransforms>>,
}

impl<S> Service<Request<Body>> for RequestTransform<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = TransformFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        if let Some(t) = &self.transforms {
            if let Some(prefix) = &t.strip_prefix {
                if let Some(uri) = rewrite_path(req.uri(), prefix) {
                    *req.uri_mut() = uri;
                }
            }
            if t.path_rewrite.is_some() || !t.query_params.is_empty() {
                let rewritten = match &t.path_rewrite {
                    None => Rewritten::Unchanged,
                    Some(rewrite) => rewrite.apply(req.uri().path()),
                };
                let path = match &rewritten {
                    Rewritten::To(path) => path.as_str(),
                    Rewritten::Unchanged => req.uri().path(),
                    Rewritten::Failed => return TransformFuture::Failed { failed: true },
                };
                let query = if t.query_params.is_empty() {
                    req.uri().query().map(str::to_string)
                } else {
                    t.query_params.apply(req.uri().query())
                };
                let target = match query {
                    Some(query) => format!("{path}?{query}"),
                    None => path.to_string(),
                };
                // Never forwarded with its old target once it was meant to change.
                let rewritten_uri = PathAndQuery::try_from(target).ok().and_then(|pq| {
                    let mut parts = req.uri().clone().into_parts();
                    parts.path_and_query = Some(pq);
                    Uri::from_parts(parts).ok()
                });
                match rewritten_uri {
                    Some(uri) => *req.uri_mut() = uri,
                    None => return TransformFuture::Failed { failed: true },
                }
            }
            if let Some(host) = &t.host_rewrite {
                req.headers_mut().insert(HOST, host.clone());
            }
            t.headers.apply(req.headers_mut());
        }
        TransformFuture::Forwarded {
            future: self.inner.call(req),
        }
    }
}

pin_project! {
    #[project = TransformFutureProj]
    pub(crate) enum TransformFuture<F> {
        Forwarded { #[pin] future: F },
        // A rewrite that made no valid target: answered 500, nothing forwarded.
        Failed { failed: bool },
    }
}

impl<F> Future for TransformFuture<F>
where
    F: Future<Output = Result<Response<Body>, GatewayError>>,
{
    type Output = Result<Response<Body>, GatewayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            TransformFutureProj::Forwarded { future } => future.poll(cx),
            TransformFutureProj::Failed { .. } => Poll::Ready(Err(GatewayError::PathRewriteFailed)),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ResponseHeadersLayer {
    ops: Option<Arc<HeaderOps>>,
}

impl ResponseHeadersLayer {
    pub(crate) fn new(policy: &TransformPolicy) -> ResponseHeadersLayer {
        let ops = &policy.response_headers;
        ResponseHeadersLayer {
            ops: (!ops.is_empty()).then(|| Arc::new(ops.clone())),
        }
    }
}

impl<S> Layer<S> for ResponseHeadersLayer {
    type Service = ResponseHeaders<S>;

    fn layer(&self, inner: S) -> ResponseHeaders<S> {
        ResponseHeaders {
            inner,
            ops: self.ops.clone(),
        }
    }
}

/// Applies the route's `response_headers` to every answer. Generic over the error type: it
/// sits outside the rescue layer, where the stack no longer fails.
#[derive(Debug, Clone)]
pub(crate) struct ResponseHeaders<S> {
    inner: S,
    ops: Option<Arc<HeaderOps>>,
}

impl<S> Service<Request<Body>> for ResponseHeaders<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseHeadersFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        ResponseHeadersFuture {
            inner: self.inner.call(req),
            ops: self.ops.clone(),
        }
    }
}

pin_project! {
    pub(crate) struct ResponseHeadersFuture<F> {
        #[pin]
        inner: F,
        ops: Option<Arc<HeaderOps>>,
    }
}

impl<F, E> Future for ResponseHeadersFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        if let Some(ops) = this.ops {
            ops.apply(response.headers_mut());
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_only_on_segment_boundaries() {
        assert_eq!(strip_path_prefix("/v1/users/42", "/v1"), Some("/users/42"));
        assert_eq!(strip_path_prefix("/v1", "/v1"), Some("/"));
        assert_eq!(strip_path_prefix("/v1/", "/v1"), Some("/"));
        assert_eq!(strip_path_prefix("/v10/users", "/v1"), None);
        assert_eq!(strip_path_prefix("/other", "/v1"), None);
    }

    #[test]
    fn query_operations_remove_then_set_then_add() {
        let ops = QueryOps {
            set: vec![("format".into(), "json".into())],
            add: vec![("via".into(), "portico".into())],
            remove: vec!["debug".into()],
        };
        assert_eq!(
            ops.apply(Some("a=1&debug=x&de%62ug=y&format=xml&b"))
                .as_deref(),
            Some("a=1&b&format=json&via=portico")
        );
        assert_eq!(ops.apply(None).as_deref(), Some("format=json&via=portico"));
        let remove_only = QueryOps {
            remove: vec!["x".into()],
            ..QueryOps::default()
        };
        assert_eq!(remove_only.apply(Some("x=1")), None);
        assert_eq!(form_encode("a b&c"), "a+b%26c");
    }

    #[test]
    fn path_rewrites_are_checked_at_their_keys() {
        use crate::middleware::test_support::route_problems;
        assert!(route_problems(
            "regex_rewrite: { pattern: \"^/api/(.*)$\", substitution: \"/$1\" }"
        )
        .is_empty());
        let p = route_problems("path_rewrite: \"/users/{id}\"");
        assert!(
            p[0].contains("routes[0].path_rewrite") && p[0].contains("no path_template"),
            "{p:?}"
        );
        let p = route_problems("regex_rewrite: { pattern: \"(\", substitution: /x }");
        assert!(
            p[0].contains("regex_rewrite.pattern: invalid regular expression"),
            "{p:?}"
        );
        let p = route_problems("strip_prefix: /api, path_rewrite: /x");
        assert!(p[0].contains("at most one"), "{p:?}");
        let p = route_problems("path_rewrite: \"/a<b>\"");
        assert!(
            p[0].contains("routes[0].path_rewrite") && p[0].contains("'<' cannot be written"),
            "{p:?}"
        );
        let p = route_problems(
            "regex_rewrite: { pattern: \"^/api/(.*)$\", substitution: \"/x/$1?y=1\" }",
        );
        assert!(
            p[0].contains("regex_rewrite.substitution") && p[0].contains("'?' cannot be written"),
            "{p:?}"
        );
        let p = route_problems(
            "regex_rewrite: { pattern: \"^/api/(.*)$\", substitution: \"/x y/$1\" }",
        );
        assert!(p[0].contains("' ' cannot be written"), "{p:?}");
        assert!(route_problems(
            "regex_rewrite: { pattern: \"^/api/(?P<rest>.*)$\", substitution: \"/$$$$/$${rest}/$rest/%20\" }"
        )
        .is_empty());
    }

    #[test]
    fn a_rewrite_that_makes_no_valid_path_fails_instead_of_forwarding_the_old_one() {
        let regex = |pattern: &str, substitution: &str| PathRewrite::Regex {
            pattern: RegexText(regex_lite::Regex::new(pattern).expect("regex")),
            substitution: substitution.to_string(),
        };
        let leading_group = regex("^/raw/(.*)$", "$1");
        assert_eq!(leading_group.apply("/raw//x"), Rewritten::To("/x".into()));
        assert_eq!(leading_group.apply("/raw/x"), Rewritten::Failed);
        assert_eq!(leading_group.apply("/raw/"), Rewritten::Failed);
        assert_eq!(leading_group.apply("/other"), Rewritten::Unchanged);
        assert_eq!(
            regex("^/api/", "/v2/").apply("/api/x"),
            Rewritten::To("/v2/x".into())
        );
        assert_eq!(
            substitution_literals("/a/$1/${name}/$$/$/x$"),
            "/a///$/$/x$"
        );
    }

    #[test]
    fn rewriting_keeps_the_query() {
        let uri: Uri = "/v1/users?id=3&x=%20".parse().expect("uri");
        assert_eq!(
            rewrite_path(&uri, "/v1").expect("rewritten"),
            "/users?id=3&x=%20"
        );
    }
}
