//! CORS per route: the `cors` key, answered with tower-http's `CorsLayer`.
//!
//! The outermost layer of a route's stack, outside the response decorators and the rescue
//! layer, for two reasons: a browser's preflight (`OPTIONS` with
//! `Access-Control-Request-Method`) is answered here, before authentication or anything else
//! looks at it — it carries no credentials, by the Fetch standard — and never reaches the
//! backend; and every other answer of the route, the gateway's own errors (401, 403, 413,
//! 429, 502, 504…) included, passes back out through it, so a browser application can read
//! why it was refused. The router sends a preflight to the route that serves the method it
//! asks about when that route has CORS (`admission.rs`), so a preflight is never a 405.
//!
//! Which origins are allowed is decided here (exact origins, wildcard subdomains such as
//! `https://*.example.com`, regular expressions); tower-http writes the headers for an
//! allowed origin. A request from any other origin, or without one, gets no CORS headers at
//! all — only `Vary: Origin`, so a cache never serves one origin's answer to another — and a
//! preflight from such an origin is refused (403 `cors_preflight_refused`) without any
//! `Access-Control-Allow-*`. On a route with CORS the gateway is the one authority on CORS:
//! `Access-Control-*` headers from the backend are removed.
//!
//! A route without `cors` gets the layer switched off: one branch, nothing cloned.

use crate::body::Body;
use crate::config::check::{parse_method, Description, RouteCheck, RoutePolicy};
use crate::config::source::KeyPath;
use crate::context::Caller;
use crate::error::GatewayError;
use crate::request_id::X_REQUEST_ID;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response};
use pin_project_lite::pin_project;
use regex_lite::Regex;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tower_http::cors as tower_cors;
use tower_layer::Layer;
use tower_service::Service;

/// The longest origin pattern a regex may be compiled from; regex-lite bounds the matching
/// time, this bounds the memory a config can ask for.
const MAX_REGEX_LEN: usize = 1024;

/// The route's CORS policy; `None` when the route has no `cors`.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct CorsPolicy {
    pub(crate) settings: Option<Arc<CorsSettings>>,
}

/// A route's CORS settings, checked.
#[derive(Debug, PartialEq)]
pub(crate) struct CorsSettings {
    pub(crate) origins: OriginRules,
    /// `None`: the route's methods when it lists them, else whichever the preflight asks for.
    pub(crate) methods: MethodRule,
    pub(crate) allow_headers: HeaderRule,
    pub(crate) expose_headers: HeaderRule,
    pub(crate) credentials: bool,
    pub(crate) max_age: Option<Duration>,
    pub(crate) private_network: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MethodRule {
    /// `*` (not with credentials).
    Any,
    /// Whichever method the preflight asks about (the route accepts any method).
    Mirror,
    List(Vec<Method>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum HeaderRule {
    /// `*` (not with credentials).
    Any,
    List(Vec<HeaderName>),
}

/// Which `Origin` values a route allows.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct OriginRules {
    /// `*`: every origin (`Access-Control-Allow-Origin: *`).
    pub(crate) any: bool,
    /// Lowercase, as browsers serialise an origin.
    exact: Vec<String>,
    /// `https://*.example.com[:port]`: any subdomain at any depth, never the bare domain.
    wildcard: Vec<WildcardOrigin>,
    regex: Vec<OriginRegex>,
}

#[derive(Debug, PartialEq)]
struct WildcardOrigin {
    /// `https://`.
    scheme: String,
    /// `.example.com`, lowercase.
    suffix: String,
    /// `:8443` or empty.
    port: String,
}

/// A compiled origin pattern, compared by its text.
#[derive(Debug)]
struct OriginRegex {
    text: String,
    regex: Regex,
}

impl PartialEq for OriginRegex {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl OriginRules {
    /// Whether `origin` (an `Origin` header value) is allowed.
    pub(crate) fn allows(&self, origin: &HeaderValue) -> bool {
        if self.any {
            return true;
        }
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        self.exact.iter().any(|o| o.eq_ignore_ascii_case(origin))
            || self.wildcard.iter().any(|w| w.matches(origin))
            || self.regex.iter().any(|r| r.regex.is_match(origin))
    }
}

impl WildcardOrigin {
    fn matches(&self, origin: &str) -> bool {
        let lower = origin.to_ascii_lowercase();
        let Some(rest) = lower.strip_prefix(&self.scheme) else {
            return false;
        };
        let Some(host) = rest.strip_suffix(&self.port) else {
            return false;
        };
        // A port we were not told about is not the same origin.
        if self.port.is_empty() && host.contains(':') {
            return false;
        }
        host.len() > self.suffix.len()
            && host.ends_with(&self.suffix)
            && host[..host.len() - self.suffix.len()]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && !host.starts_with('.')
    }
}

/// `cors` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct CorsRouteFile {
    cors: Option<CorsFile>,
}

/// The keys under `cors`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct CorsFile {
    /// Exact origins (`https://app.example.com`), wildcard subdomains
    /// (`https://*.example.com`), or `*` for any origin.
    #[serde(default)]
    allow_origins: Vec<String>,
    /// Regular expressions an origin must match whole.
    #[serde(default)]
    allow_origin_regex: Vec<String>,
    /// Default: the route's `match.methods`, or whichever method a preflight asks for.
    allow_methods: Option<Vec<String>>,
    /// Request headers a browser may send (`*` = any). Default: none beyond the safelisted.
    #[serde(default)]
    allow_headers: Vec<String>,
    /// Response headers a browser application may read (`*` = any). Default: none.
    #[serde(default)]
    expose_headers: Vec<String>,
    /// `Access-Control-Allow-Credentials: true`. Default `false`.
    allow_credentials: Option<bool>,
    /// How long a browser may cache a preflight's answer. Default: not sent.
    max_age: Option<String>,
    /// Answer `Access-Control-Request-Private-Network`. Default `false`.
    allow_private_network: Option<bool>,
}

impl RoutePolicy for CorsPolicy {
    const KEYS: &'static [&'static str] = &["cors"];
    type File = CorsRouteFile;

    fn adds_layer(&self) -> bool {
        self.settings.is_some()
    }

    fn check(file: &CorsRouteFile, route: &mut RouteCheck<'_, '_>) -> Option<Self> {
        let Some(file) = &file.cors else {
            return Some(CorsPolicy::default());
        };
        let path = route.key("cors");
        check_cors(file, &path, route).map(|settings| CorsPolicy {
            settings: Some(Arc::new(settings)),
        })
    }

    fn describe(&self, _request_path: &str, out: &mut Description) {
        let Some(settings) = &self.settings else {
            return;
        };
        let origins = &settings.origins;
        let mut allowed: Vec<String> = Vec::new();
        if origins.any {
            allowed.push("any origin".into());
        }
        allowed.extend(origins.exact.iter().cloned());
        allowed.extend(
            origins
                .wildcard
                .iter()
                .map(|w| format!("{}*{}{}", w.scheme, w.suffix, w.port)),
        );
        allowed.extend(origins.regex.iter().map(|r| format!("/{}/", r.text)));
        let methods = match &settings.methods {
            MethodRule::Any => "any method".to_string(),
            MethodRule::Mirror => "the method asked for".to_string(),
            MethodRule::List(list) => list
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(","),
        };
        let mut text = format!(
            "origins {}; methods {methods}; preflights answered by the gateway",
            allowed.join(", ")
        );
        if settings.credentials {
            text.push_str("; with credentials");
        }
        if let Some(max_age) = settings.max_age {
            text.push_str(&format!("; max-age {}s", max_age.as_secs()));
        }
        out.line("cors", text);
    }
}

fn check_cors(
    file: &CorsFile,
    path: &KeyPath,
    route: &mut RouteCheck<'_, '_>,
) -> Option<CorsSettings> {
    let mut ok = true;
    let mut origins = OriginRules::default();
    for (index, text) in file.allow_origins.iter().enumerate() {
        let item = path.key("allow_origins").index(index);
        match parse_origin(text) {
            Ok(OriginPattern::Any) => origins.any = true,
            Ok(OriginPattern::Exact(origin)) => origins.exact.push(origin),
            Ok(OriginPattern::Wildcard(wildcard)) => origins.wildcard.push(wildcard),
            Err(message) => {
                route.report(&item, message);
                ok = false;
            }
        }
    }
    for (index, text) in file.allow_origin_regex.iter().enumerate() {
        let item = path.key("allow_origin_regex").index(index);
        if text.len() > MAX_REGEX_LEN {
            route.report(&item, format!("longer than {MAX_REGEX_LEN} characters"));
            ok = false;
            continue;
        }
        // Anchored: a pattern written for `https://app.example.com` must not also allow
        // `https://app.example.com.attacker.net`.
        match Regex::new(&format!("^(?:{text})$")) {
            Ok(regex) => origins.regex.push(OriginRegex {
                text: text.clone(),
                regex,
            }),
            Err(error) => {
                route.report(&item, format!("invalid regular expression: {error}"));
                ok = false;
            }
        }
    }
    if file.allow_origins.is_empty() && file.allow_origin_regex.is_empty() {
        route.report(
            path,
            "allows no origin: give allow_origins (exact origins, `https://*.example.com`, or \
             `*`) or allow_origin_regex",
        );
        ok = false;
    }
    if origins.any && (origins.exact.len() + origins.wildcard.len() + origins.regex.len()) > 0 {
        route.report(
            &path.key("allow_origins"),
            "`*` allows every origin; the other origins listed would change nothing",
        );
        ok = false;
    }

    let methods = match &file.allow_methods {
        None if route.matcher().methods.is_empty() => Some(MethodRule::Mirror),
        None => {
            let mut list = Vec::new();
            for text in &route.matcher().methods {
                // The matcher's own checks report a bad method.
                if let Ok(method) = parse_method(text) {
                    list.push(method);
                }
            }
            Some(MethodRule::List(list))
        }
        Some(texts) if texts.len() == 1 && texts[0] == "*" => Some(MethodRule::Any),
        Some(texts) => {
            let mut list = Vec::new();
            let mut methods_ok = true;
            for (index, text) in texts.iter().enumerate() {
                match parse_method(text) {
                    Ok(method) => list.push(method),
                    Err(message) => {
                        let item = path.key("allow_methods").index(index);
                        route.report(&item, message);
                        methods_ok = false;
                    }
                }
            }
            methods_ok.then_some(MethodRule::List(list))
        }
    };
    let allow_headers = header_rule(route, &path.key("allow_headers"), &file.allow_headers);
    let expose_headers = header_rule(route, &path.key("expose_headers"), &file.expose_headers);
    let max_age = match &file.max_age {
        None => Some(None),
        Some(text) => route
            .duration(&path.key("max_age"), Some(text), Duration::ZERO, true)
            .map(Some),
    };
    let credentials = file.allow_credentials.unwrap_or(false);
    if credentials {
        // The Fetch standard ignores `*` in these headers on a request with credentials, so a
        // browser would refuse every answer: say so now rather than at the first request.
        let wildcards = [
            (origins.any, "allow_origins", "origins"),
            (methods == Some(MethodRule::Any), "allow_methods", "methods"),
            (
                allow_headers == Some(HeaderRule::Any),
                "allow_headers",
                "headers",
            ),
            (
                expose_headers == Some(HeaderRule::Any),
                "expose_headers",
                "headers",
            ),
        ];
        for (wildcard, key, what) in wildcards {
            if wildcard {
                route.report(
                    &path.key(key),
                    format!(
                        "`*` cannot be combined with allow_credentials: true (browsers refuse \
                         it); list the {what} instead"
                    ),
                );
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }
    Some(CorsSettings {
        origins,
        methods: methods?,
        allow_headers: allow_headers?,
        expose_headers: expose_headers?,
        credentials,
        max_age: max_age?,
        private_network: file.allow_private_network.unwrap_or(false),
    })
}

fn header_rule(
    route: &mut RouteCheck<'_, '_>,
    path: &KeyPath,
    texts: &[String],
) -> Option<HeaderRule> {
    if texts.len() == 1 && texts[0] == "*" {
        return Some(HeaderRule::Any);
    }
    let mut names = Vec::with_capacity(texts.len());
    let mut ok = true;
    for (index, text) in texts.iter().enumerate() {
        let item = path.index(index);
        match HeaderName::from_bytes(text.as_bytes()) {
            Ok(name) if names.contains(&name) => {
                route.report(&item, format!("header `{name}` is listed twice"));
                ok = false;
            }
            Ok(name) => names.push(name),
            Err(_) if text == "*" => {
                route.report(&item, "`*` must be the only entry");
                ok = false;
            }
            Err(_) => {
                route.report(&item, format!("{text:?} is not a valid header name"));
                ok = false;
            }
        }
    }
    ok.then_some(HeaderRule::List(names))
}

enum OriginPattern {
    Any,
    Exact(String),
    Wildcard(WildcardOrigin),
}

/// `*`, `scheme://host[:port]` or `scheme://*.domain[:port]` — exactly what a browser sends
/// in `Origin` (no path, no trailing `/`), so that a pattern that could never match is a
/// config problem rather than a silent refusal.
fn parse_origin(text: &str) -> Result<OriginPattern, String> {
    if text == "*" {
        return Ok(OriginPattern::Any);
    }
    if text == "null" {
        return Ok(OriginPattern::Exact(text.into()));
    }
    let bad = |why: &str| {
        Err(format!(
            "{text:?} is not an origin ({why}): expected `scheme://host[:port]` like \
             https://app.example.com, `https://*.example.com`, or `*`"
        ))
    };
    let Some((scheme, rest)) = text.split_once("://") else {
        return bad("no scheme");
    };
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return bad("invalid scheme");
    }
    if rest.contains('/') {
        return bad("an origin has no path, not even a trailing `/`");
    }
    let (host, port) = match rest.rfind(':') {
        Some(colon) if !rest[colon..].contains(']') => (&rest[..colon], &rest[colon..]),
        _ => (rest, ""),
    };
    if !port.is_empty() && (port.len() < 2 || !port[1..].bytes().all(|b| b.is_ascii_digit())) {
        return bad("invalid port");
    }
    let valid_host = |h: &str| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b))
    };
    let lower = |s: &str| s.to_ascii_lowercase();
    match host.strip_prefix("*.") {
        Some(domain) if valid_host(domain) && !domain.contains('*') => {
            Ok(OriginPattern::Wildcard(WildcardOrigin {
                scheme: format!("{}://", lower(scheme)),
                suffix: format!(".{}", lower(domain)),
                port: port.to_string(),
            }))
        }
        _ if host.contains('*') => bad("`*` may only stand for the subdomains, as `*.example.com`"),
        _ if valid_host(host) => Ok(OriginPattern::Exact(lower(text))),
        _ => bad("invalid host"),
    }
}

/// The CORS layer of one route.
#[derive(Clone)]
pub(crate) struct CorsLayer {
    on: Option<Arc<CorsRuntime>>,
}

/// What an enabled CORS layer needs per request, made once per config.
pub(crate) struct CorsRuntime {
    settings: Arc<CorsSettings>,
    /// Writes the headers for an allowed origin.
    tower: tower_cors::CorsLayer,
    route: Arc<str>,
}

impl CorsLayer {
    pub(crate) fn new(route: &str, policy: &CorsPolicy) -> CorsLayer {
        CorsLayer {
            on: policy.settings.as_ref().map(|settings| {
                Arc::new(CorsRuntime {
                    settings: settings.clone(),
                    tower: tower_layer(settings),
                    route: route.into(),
                })
            }),
        }
    }
}

/// tower-http's layer for checked settings (which exclude the combinations it refuses).
fn tower_layer(settings: &CorsSettings) -> tower_cors::CorsLayer {
    // The origin has been checked before this layer is called: it only echoes it.
    let origin = if settings.origins.any {
        tower_cors::AllowOrigin::any()
    } else {
        tower_cors::AllowOrigin::mirror_request()
    };
    let methods = match &settings.methods {
        MethodRule::Any => tower_cors::AllowMethods::any(),
        MethodRule::Mirror => tower_cors::AllowMethods::mirror_request(),
        MethodRule::List(list) => tower_cors::AllowMethods::list(list.iter().cloned()),
    };
    let headers = |rule: &HeaderRule| match rule {
        HeaderRule::Any => (true, Vec::new()),
        HeaderRule::List(list) => (false, list.clone()),
    };
    let (any_allowed, allowed) = headers(&settings.allow_headers);
    let (any_exposed, exposed) = headers(&settings.expose_headers);
    let mut layer = tower_cors::CorsLayer::new()
        .allow_origin(origin)
        .allow_methods(methods)
        .allow_credentials(settings.credentials)
        .allow_private_network(settings.private_network)
        // Every answer of the route varies by origin; preflights by the rest too (added below).
        .vary([header::ORIGIN]);
    layer = if any_allowed {
        layer.allow_headers(tower_cors::Any)
    } else {
        layer.allow_headers(allowed)
    };
    layer = if any_exposed {
        layer.expose_headers(tower_cors::Any)
    } else {
        layer.expose_headers(exposed)
    };
    if let Some(max_age) = settings.max_age {
        layer = layer.max_age(max_age);
    }
    layer
}

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Cors<S> {
        Cors {
            inner,
            on: self.on.clone(),
        }
    }
}

/// A route's CORS; `on` is `None` for a route without it. tower-http's service is made per
/// request on the routes that have CORS only, so that the stack every route clones per
/// request stays as small as it was.
#[derive(Clone)]
pub(crate) struct Cors<S> {
    inner: S,
    on: Option<Arc<CorsRuntime>>,
}

/// `OPTIONS` with `Access-Control-Request-Method`: a browser asking whether it may send the
/// real request.
pub(crate) fn is_preflight<B>(req: &Request<B>) -> bool {
    req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

impl<S> Service<Request<Body>> for Cors<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = CorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let Some(runtime) = &self.on else {
            return CorsFuture::Off {
                future: self.inner.call(req),
            };
        };
        let preflight = is_preflight(&req);
        let allowed = req
            .headers()
            .get(header::ORIGIN)
            .is_some_and(|origin| runtime.settings.origins.allows(origin));
        // tower-http takes every OPTIONS for a preflight; a real OPTIONS request goes on as a
        // request (from an allowed origin too: it gets no CORS headers then).
        if allowed && (preflight || req.method() != Method::OPTIONS) {
            // The stack below is always ready (see `stack::call`).
            let mut tower = runtime.tower.layer(StripAccessControl {
                inner: self.inner.clone(),
            });
            return CorsFuture::Tower {
                future: Box::pin(tower.call(req)),
                preflight,
            };
        }
        if preflight {
            let origin = req
                .headers()
                .get(header::ORIGIN)
                .map(|o| String::from_utf8_lossy(o.as_bytes()).into_owned());
            let request_id = req
                .headers()
                .get(&X_REQUEST_ID)
                .cloned()
                .unwrap_or_else(|| HeaderValue::from_static(""));
            let mut response = GatewayError::CorsPreflightRefused { origin }.answer(
                &request_id,
                Caller::Http,
                Some(&runtime.route),
            );
            add_vary(response.headers_mut(), true);
            return CorsFuture::Refused {
                response: Some(Box::new(response)),
            };
        }
        CorsFuture::Plain {
            future: StripFuture {
                future: self.inner.call(req),
            },
        }
    }
}

/// `Vary` for caches: every answer depends on `Origin`; a preflight's on what it asks too.
fn add_vary(headers: &mut HeaderMap, preflight: bool) {
    let value = if preflight {
        "origin, access-control-request-method, access-control-request-headers"
    } else {
        "origin"
    };
    headers.append(header::VARY, HeaderValue::from_static(value));
}

pin_project! {
    #[project = CorsFutureProj]
    pub(crate) enum CorsFuture<F> {
        Off { #[pin] future: F },
        // Boxed, like the refusal: only routes with CORS pay for their size.
        Tower { future: Pin<Box<tower_cors::ResponseFuture<StripFuture<F>>>>, preflight: bool },
        Plain { #[pin] future: StripFuture<F> },
        Refused { response: Option<Box<Response<Body>>> },
    }
}

impl<F, E> Future for CorsFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CorsFutureProj::Off { future } => future.poll(cx),
            CorsFutureProj::Tower { future, preflight } => {
                let mut response = ready!(future.as_mut().poll(cx))?;
                if *preflight {
                    response.headers_mut().append(
                        header::VARY,
                        HeaderValue::from_static(
                            "access-control-request-method, access-control-request-headers",
                        ),
                    );
                }
                Poll::Ready(Ok(response))
            }
            CorsFutureProj::Plain { future } => {
                let mut response = ready!(future.poll(cx))?;
                add_vary(response.headers_mut(), false);
                Poll::Ready(Ok(response))
            }
            CorsFutureProj::Refused { response } => {
                Poll::Ready(Ok(response.take().map(|r| *r).unwrap_or_default()))
            }
        }
    }
}

/// Removes the backend's `Access-Control-*` headers: on a route with CORS, the gateway's
/// policy is the only one a browser sees.
#[derive(Clone)]
pub(crate) struct StripAccessControl<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for StripAccessControl<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = StripFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        StripFuture {
            future: self.inner.call(req),
        }
    }
}

pin_project! {
    pub(crate) struct StripFuture<F> {
        #[pin]
        future: F,
    }
}

impl<F, E> Future for StripFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = ready!(self.project().future.poll(cx))?;
        let headers = response.headers_mut();
        let backend: Vec<HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in backend {
            headers.remove(name);
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::test_support::Below;
    use std::convert::Infallible;

    fn origin_rules(origins: &[&str], regex: &[&str]) -> OriginRules {
        let mut rules = OriginRules::default();
        for text in origins {
            match parse_origin(text).expect("valid origin") {
                OriginPattern::Any => rules.any = true,
                OriginPattern::Exact(o) => rules.exact.push(o),
                OriginPattern::Wildcard(w) => rules.wildcard.push(w),
            }
        }
        for text in regex {
            rules.regex.push(OriginRegex {
                text: text.to_string(),
                regex: Regex::new(&format!("^(?:{text})$")).expect("regex"),
            });
        }
        rules
    }

    fn allows(rules: &OriginRules, origin: &str) -> bool {
        rules.allows(&HeaderValue::from_str(origin).expect("value"))
    }

    #[test]
    fn origins_match_exactly_by_subdomain_wildcard_or_whole_regex() {
        let rules = origin_rules(
            &[
                "https://app.example.com",
                "https://*.example.org",
                "http://*.local:8080",
            ],
            &[r"https://[a-z]+\.example\.net"],
        );
        for origin in [
            "https://app.example.com",
            "HTTPS://APP.example.com",
            "https://a.example.org",
            "https://a.b.example.org",
            "http://x.local:8080",
            "https://shop.example.net",
        ] {
            assert!(allows(&rules, origin), "{origin}");
        }
        for origin in [
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://app.example.com.attacker.net",
            "https://example.org",
            "https://evil-example.org",
            "https://a.example.org:444",
            "http://x.local",
            "https://shop.example.net.attacker.net",
            "https://a1.example.net",
            "null",
        ] {
            assert!(!allows(&rules, origin), "{origin}");
        }
        assert!(allows(&origin_rules(&["*"], &[]), "https://anything.test"));
    }

    #[test]
    fn origins_that_a_browser_never_sends_are_config_problems() {
        for text in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/api",
            "https://*",
            "https://a.*.example.com",
            "https://app.example.com:port",
            "://x",
        ] {
            assert!(parse_origin(text).is_err(), "{text}");
        }
    }

    /// A route stack below CORS as the gateway has it: it never fails (Infallible), and it
    /// answers like a backend that also sets CORS headers of its own.
    #[derive(Clone)]
    struct Backend(Below);

    impl Service<Request<Body>> for Backend {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: Request<Body>) -> Self::Future {
            drop(self.0.call(req));
            let mut response = Response::new(Body::empty());
            response.headers_mut().insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            std::future::ready(Ok(response))
        }
    }

    fn settings(credentials: bool) -> CorsPolicy {
        CorsPolicy {
            settings: Some(Arc::new(CorsSettings {
                origins: origin_rules(&["https://app.example"], &[]),
                methods: MethodRule::List(vec![Method::GET, Method::PUT]),
                allow_headers: HeaderRule::List(vec![header::CONTENT_TYPE]),
                expose_headers: HeaderRule::List(vec![HeaderName::from_static("x-request-id")]),
                credentials,
                max_age: Some(Duration::from_secs(600)),
                private_network: false,
            })),
        }
    }

    async fn call(policy: &CorsPolicy, req: Request<Body>) -> (Response<Body>, usize) {
        let below = Below::ok();
        let mut service = CorsLayer::new("r", policy).layer(Backend(below.clone()));
        let Ok(response) = service.call(req).await;
        (response, below.calls())
    }

    fn preflight(origin: &str) -> Request<Body> {
        Request::options("/x")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "PUT")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
            .body(Body::empty())
            .expect("request")
    }

    #[tokio::test]
    async fn an_allowed_preflight_is_answered_here() {
        let (response, calls) = call(&settings(true), preflight("https://app.example")).await;
        assert_eq!(calls, 0, "never forwarded");
        assert_eq!(response.status(), 200);
        let h = response.headers();
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "GET,PUT");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_HEADERS], "content-type");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "600");
        let vary: Vec<_> = h.get_all(header::VARY).iter().collect();
        assert_eq!(
            vary,
            [
                "origin",
                "access-control-request-method, access-control-request-headers"
            ]
        );
    }

    #[tokio::test]
    async fn a_refused_preflight_gets_no_allow_headers() {
        for origin in [Some("https://evil.example"), None] {
            let mut req = preflight("x");
            match origin {
                Some(o) => {
                    req.headers_mut()
                        .insert(header::ORIGIN, HeaderValue::from_static(o));
                }
                None => {
                    req.headers_mut().remove(header::ORIGIN);
                }
            }
            let (response, calls) = call(&settings(false), req).await;
            assert_eq!(calls, 0);
            assert_eq!(response.status(), 403);
            assert!(
                !response
                    .headers()
                    .keys()
                    .any(|k| k.as_str().starts_with("access-control-")),
                "{origin:?}: {:?}",
                response.headers()
            );
            assert!(response.headers().contains_key(header::VARY));
        }
    }

    #[tokio::test]
    async fn simple_requests_get_headers_only_for_allowed_origins() {
        let get = |origin: Option<&'static str>| {
            let mut req = Request::get("/x").body(Body::empty()).expect("request");
            if let Some(origin) = origin {
                req.headers_mut()
                    .insert(header::ORIGIN, HeaderValue::from_static(origin));
            }
            req
        };
        let (response, calls) = call(&settings(false), get(Some("https://app.example"))).await;
        assert_eq!(calls, 1);
        let h = response.headers();
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        assert_eq!(h[header::ACCESS_CONTROL_EXPOSE_HEADERS], "x-request-id");
        assert!(!h.contains_key(header::ACCESS_CONTROL_ALLOW_METHODS));
        assert_eq!(h[header::VARY], "origin");

        for origin in [Some("https://evil.example"), None] {
            let (response, calls) = call(&settings(false), get(origin)).await;
            assert_eq!(calls, 1);
            let h = response.headers();
            // The backend's own `Access-Control-Allow-Origin: *` is gone too.
            assert!(
                !h.keys().any(|k| k.as_str().starts_with("access-control-")),
                "{origin:?}: {h:?}"
            );
            assert_eq!(h[header::VARY], "origin");
        }
    }

    #[test]
    fn invalid_combinations_are_config_problems_at_their_keys() {
        use crate::middleware::test_support::route_problems;
        assert!(route_problems("cors: { allow_origins: [\"https://a.example\"] }").is_empty());
        let problems = route_problems(
            "cors: { allow_origins: [\"*\"], allow_credentials: true, allow_headers: [\"*\"] }",
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("routes[0].cors.allow_origins: `*` cannot be combined"));
        assert!(problems[1].contains("routes[0].cors.allow_headers: `*` cannot be combined"));
        let problems = route_problems("cors: { allow_origin_regex: [\"https://(a\"] }");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("7:")
                && problems[0].contains("routes[0].cors.allow_origin_regex[0]: invalid regular"),
            "{problems:?}"
        );
        let problems = route_problems("cors: { allow_origins: [\"https://a.example/\"] }");
        assert!(problems[0].contains("no path"), "{problems:?}");
        let problems = route_problems("cors: { allow_methods: [get] }");
        assert!(
            problems.iter().any(|p| p.contains("allows no origin")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("must be uppercase")),
            "{problems:?}"
        );
    }

    #[tokio::test]
    async fn without_cors_the_layer_changes_nothing() {
        let (response, calls) =
            call(&CorsPolicy::default(), preflight("https://app.example")).await;
        assert_eq!(calls, 1, "forwarded");
        assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(!response.headers().contains_key(header::VARY));
    }
}
