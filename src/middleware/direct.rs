//! Answers a route declares instead of forwarding: the keys `direct_response` (a status,
//! headers and a static body or a body file — a maintenance page, a stub) and `redirect`
//! (a status and a location that may use the route's path-template captures — a moved API
//! version).
//!
//! Sits after auth and before the request transforms: whoever may not use the route is still
//! refused (IP rules, body limit, auth), and the answer goes back out through the route's
//! decorators (response headers, CORS) like any other. Such a route needs no cluster. A
//! route without either key gets the layer switched off.

use crate::body::Body;
use crate::config::check::{header_op_name, Description, RouteCheck, RoutePolicy};
use crate::config::source::{KeyPath, Seg};
use crate::error::GatewayError;
use crate::middleware::captures::CaptureTemplate;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// The largest body file a direct response may serve (it is held in memory).
const MAX_BODY_FILE: u64 = 1024 * 1024;

/// What the route answers by itself, if anything.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct DirectPolicy {
    pub(crate) answer: Option<Arc<DirectAnswer>>,
}

impl DirectPolicy {
    /// The route never forwards, so it needs no cluster.
    pub(crate) fn answers_itself(&self) -> bool {
        self.answer.is_some()
    }
}

#[derive(Debug, PartialEq)]
pub(crate) enum DirectAnswer {
    Response {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    Redirect {
        status: StatusCode,
        location: CaptureTemplate,
        keep_query: bool,
    },
}

/// The keys as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct DirectRouteFile {
    direct_response: Option<DirectResponseFile>,
    redirect: Option<RedirectFile>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct DirectResponseFile {
    /// Default `200`.
    status: Option<u16>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// The body, as text.
    body: Option<String>,
    /// Or a file whose contents are the body (read when the config loads).
    body_file: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedirectFile {
    /// 301, 302, 303, 307 or 308 (default).
    status: Option<u16>,
    /// Where to: a URL or a path, `{name}` filled from the route's path_template.
    location: String,
    /// Append the request's query. Default `true`.
    keep_query: Option<bool>,
}

impl RoutePolicy for DirectPolicy {
    const KEYS: &'static [&'static str] = &["direct_response", "redirect"];
    type File = DirectRouteFile;

    fn adds_layer(&self) -> bool {
        self.answer.is_some()
    }

    fn check(file: &DirectRouteFile, route: &mut RouteCheck<'_, '_>) -> Option<Self> {
        match (&file.direct_response, &file.redirect) {
            (None, None) => Some(DirectPolicy::default()),
            (Some(_), Some(_)) => {
                let path = route.key("redirect");
                route.report(&path, "a route has direct_response or redirect, not both");
                None
            }
            (Some(response), None) => {
                let path = route.key("direct_response");
                check_response(response, &path, route).map(|answer| DirectPolicy {
                    answer: Some(Arc::new(answer)),
                })
            }
            (None, Some(redirect)) => {
                let path = route.key("redirect");
                check_redirect(redirect, &path, route).map(|answer| DirectPolicy {
                    answer: Some(Arc::new(answer)),
                })
            }
        }
    }

    fn describe(&self, request_path: &str, out: &mut Description) {
        match self.answer.as_deref() {
            None => {}
            Some(DirectAnswer::Response { status, body, .. }) => out.line(
                "direct response",
                format!("{status} with a {}-byte body; never forwarded", body.len()),
            ),
            Some(DirectAnswer::Redirect {
                status, location, ..
            }) => out.line(
                "redirect",
                format!(
                    "{status} to {}; never forwarded",
                    location.expand(request_path).unwrap_or_default()
                ),
            ),
        }
    }

    /// Header values may be numbers; a status is a number.
    fn wants_text(path: &[Seg]) -> bool {
        matches!(path, [Seg::Key(a), Seg::Key(b), Seg::Key(_)] if a == "direct_response" && b == "headers")
    }
}

fn check_status(
    route: &mut RouteCheck<'_, '_>,
    path: &KeyPath,
    status: u16,
    allowed: impl Fn(u16) -> bool,
    expected: &str,
) -> Option<StatusCode> {
    match StatusCode::from_u16(status) {
        Ok(code) if allowed(status) => Some(code),
        _ => {
            route.report(
                path,
                format!("{status} is not allowed here: expected {expected}"),
            );
            None
        }
    }
}

fn check_response(
    file: &DirectResponseFile,
    path: &KeyPath,
    route: &mut RouteCheck<'_, '_>,
) -> Option<DirectAnswer> {
    let status = check_status(
        route,
        &path.key("status"),
        file.status.unwrap_or(200),
        |s| (200..=599).contains(&s),
        "a status from 200 to 599",
    );
    let mut headers = HeaderMap::new();
    let mut ok = true;
    for (name, value) in &file.headers {
        let item = path.key("headers").key(name);
        match (header_op_name(name, false), HeaderValue::from_str(value)) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            (Err(message), _) => {
                route.report_key(&item, message);
                ok = false;
            }
            (_, Err(_)) => {
                route.report(&item, format!("{value:?} is not a valid header value"));
                ok = false;
            }
        }
    }
    let body = match (&file.body, &file.body_file) {
        (Some(_), Some(_)) => {
            route.report(&path.key("body_file"), "give body or body_file, not both");
            None
        }
        (Some(text), None) => Some(Bytes::from(text.clone())),
        (None, Some(file_text)) => {
            let file = route.file_path(file_text);
            let item = path.key("body_file");
            match std::fs::metadata(&file) {
                Ok(meta) if meta.len() > MAX_BODY_FILE => {
                    route.report(&item, format!("{} is larger than 1MiB", file.display()));
                    None
                }
                _ => match std::fs::read(&file) {
                    Ok(bytes) => Some(Bytes::from(bytes)),
                    Err(error) => {
                        route.report(&item, format!("cannot read {}: {error}", file.display()));
                        None
                    }
                },
            }
        }
        (None, None) => Some(Bytes::new()),
    };
    if let Some(body) = &body {
        if !body.is_empty() && !headers.contains_key(header::CONTENT_TYPE) {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
        }
    }
    if !ok {
        return None;
    }
    Some(DirectAnswer::Response {
        status: status?,
        headers,
        body: body?,
    })
}

fn check_redirect(
    file: &RedirectFile,
    path: &KeyPath,
    route: &mut RouteCheck<'_, '_>,
) -> Option<DirectAnswer> {
    let status = check_status(
        route,
        &path.key("status"),
        file.status.unwrap_or(308),
        |s| matches!(s, 301 | 302 | 303 | 307 | 308),
        "301, 302, 303, 307 or 308",
    );
    let item = path.key("location");
    let text = &file.location;
    if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        route.report(&item, "must be a URL or a path, without spaces");
        return None;
    }
    let template = route.matcher().path_template.clone();
    let location = match CaptureTemplate::parse(text, template.as_deref()) {
        Ok(location) => location,
        Err(message) => {
            route.report(&item, message);
            return None;
        }
    };
    // Captures are pieces of a valid path, so what the text is made of decides whether
    // every Location the redirect makes is valid: refused here, not sent without one.
    if let Err(message) = check_location_text(&location) {
        route.report(&item, message);
        return None;
    }
    Some(DirectAnswer::Redirect {
        status: status?,
        location,
        keep_query: file.keep_query.unwrap_or(true),
    })
}

/// A redirect target is a path (`/v2/...`) or an absolute URL (`https://host/...`) made
/// only of characters a URI may hold as they are (others must be percent-encoded).
fn check_location_text(location: &CaptureTemplate) -> Result<(), String> {
    let literal = location.literal_text();
    if let Some(bad) = literal.chars().find(|c| !is_uri_char(*c)) {
        return Err(format!(
            "{bad:?} cannot be written as is in a URL (percent-encode it)"
        ));
    }
    // The literal text with a capture standing for each placeholder.
    let sample = location.expand_with("x");
    let valid = match http::Uri::try_from(sample.as_str()) {
        Ok(_) if sample.starts_with('/') => true,
        Ok(uri) => uri.scheme().is_some() && uri.host().is_some_and(|host| !host.is_empty()),
        Err(_) => false,
    };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{sample:?} is neither a path (starting with `/`) nor an absolute URL \
             (`https://host/...`)"
        ))
    }
}

/// RFC 3986's characters: unreserved, reserved and `%` for escapes.
fn is_uri_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c)
}

#[derive(Clone)]
pub(crate) struct DirectLayer {
    answer: Option<Arc<DirectAnswer>>,
}

impl DirectLayer {
    pub(crate) fn new(policy: &DirectPolicy) -> DirectLayer {
        DirectLayer {
            answer: policy.answer.clone(),
        }
    }
}

impl<S> Layer<S> for DirectLayer {
    type Service = Direct<S>;

    fn layer(&self, inner: S) -> Direct<S> {
        Direct {
            inner,
            answer: self.answer.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Direct<S> {
    inner: S,
    answer: Option<Arc<DirectAnswer>>,
}

/// The future of a route that may answer by itself: the answer (boxed, so that routes
/// without one do not carry its size), or the inner service's.
pub(crate) type DirectFuture<F> = futures_either::Either<Answered, F>;

/// A declared answer, ready at the first poll; `None` for a redirect that could not make
/// its Location (500 `redirect_failed`, never a redirect without one).
pub(crate) struct Answered(Option<Box<Response<Body>>>);

impl std::future::Future for Answered {
    type Output = Result<Response<Body>, GatewayError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(
            self.0
                .take()
                .map(|r| *r)
                .ok_or(GatewayError::RedirectFailed),
        )
    }
}

impl<S> Service<Request<Body>> for Direct<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = DirectFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        match &self.answer {
            None => futures_either::Either::Right {
                future: self.inner.call(req),
            },
            Some(answer) => futures_either::Either::Left {
                future: Answered(respond(answer, &req).map(Box::new)),
            },
        }
    }
}

/// The declared answer; `None` when a redirect cannot make a valid Location.
fn respond(answer: &DirectAnswer, req: &Request<Body>) -> Option<Response<Body>> {
    match answer {
        DirectAnswer::Response {
            status,
            headers,
            body,
        } => {
            let mut response = Response::new(Body::full(body.clone()));
            *response.status_mut() = *status;
            *response.headers_mut() = headers.clone();
            Some(response)
        }
        DirectAnswer::Redirect {
            status,
            location,
            keep_query,
        } => {
            let target = location.expand(req.uri().path())?;
            let query = req.uri().query().filter(|_| *keep_query);
            let value = HeaderValue::try_from(with_query(target, query)).ok()?;
            let mut response = Response::new(Body::empty());
            *response.status_mut() = *status;
            response.headers_mut().insert(header::LOCATION, value);
            Some(response)
        }
    }
}

/// `target` with the request's query added to its own (before any `#fragment`).
fn with_query(mut target: String, query: Option<&str>) -> String {
    let Some(query) = query else {
        return target;
    };
    let fragment = target.find('#').map(|at| target.split_off(at));
    target.push(if target.contains('?') { '&' } else { '?' });
    target.push_str(query);
    target.extend(fragment);
    target
}

/// A two-way future, without a dependency for it.
pub(crate) mod futures_either {
    use pin_project_lite::pin_project;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pin_project! {
        #[project = EitherProj]
        pub(crate) enum Either<L, R> {
            Left { #[pin] future: L },
            Right { #[pin] future: R },
        }
    }

    impl<L, R, T> Future for Either<L, R>
    where
        L: Future<Output = T>,
        R: Future<Output = T>,
    {
        type Output = T;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
            match self.project() {
                EitherProj::Left { future } => future.poll(cx),
                EitherProj::Right { future } => future.poll(cx),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::middleware::test_support::route_problems;

    #[test]
    fn answers_are_checked_at_their_keys() {
        assert!(route_problems("direct_response: { status: 503, body: down }").is_empty());
        let p = route_problems("direct_response: { status: 99, headers: { connection: close } }");
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p.iter().any(|p| p.contains("direct_response.status")),
            "{p:?}"
        );
        assert!(p.iter().any(|p| p.contains("hop-by-hop")), "{p:?}");
        let p = route_problems("redirect: { status: 200, location: \"/v2/{id}\" }");
        assert!(p.iter().any(|p| p.contains("redirect.status")), "{p:?}");
        assert!(p.iter().any(|p| p.contains("no path_template")), "{p:?}");
        let p = route_problems("direct_response: { body_file: /nonexistent/page.html }");
        assert!(p[0].contains("cannot read"), "{p:?}");
    }

    #[test]
    fn a_location_that_cannot_be_valid_is_refused_at_its_key() {
        for good in [
            "/v2/users",
            "https://api.example/v2/?x=1#top",
            "http://[::1]:8080/x",
        ] {
            let p = route_problems(&format!("redirect: {{ location: \"{good}\" }}"));
            assert!(p.is_empty(), "{good}: {p:?}");
        }
        for (bad, says) in [
            ("/café", "'é' cannot be written"),
            ("/a<b>", "'<' cannot be written"),
            ("relative/path", "neither a path"),
            ("https://", "neither a path"),
            ("mailto:someone", "neither a path"),
        ] {
            let p = route_problems(&format!("redirect: {{ location: \"{bad}\" }}"));
            assert!(
                p.len() == 1 && p[0].contains("redirect.location") && p[0].contains(says),
                "{bad}: {p:?}"
            );
        }
    }

    #[test]
    fn a_redirect_without_a_location_is_an_error_not_an_answer() {
        use super::{respond, Answered, DirectAnswer};
        use crate::body::Body;
        use crate::error::GatewayError;
        use crate::middleware::captures::CaptureTemplate;
        use std::future::Future;
        let answer = DirectAnswer::Redirect {
            status: http::StatusCode::PERMANENT_REDIRECT,
            location: CaptureTemplate::parse("/v2/{id}", Some("/v1/{id}")).expect("parses"),
            keep_query: true,
        };
        let request = |path: &str| {
            http::Request::get(path)
                .body(Body::empty())
                .expect("request")
        };
        let moved = respond(&answer, &request("/v1/7?a=1")).expect("a location");
        assert_eq!(moved.headers()[http::header::LOCATION], "/v2/7?a=1");
        // A path the template does not capture from makes no location.
        let missing = respond(&answer, &request("/elsewhere"));
        assert!(missing.is_none());
        let mut answered = std::pin::pin!(Answered(missing.map(Box::new)));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let polled = answered.as_mut().poll(&mut cx);
        assert!(matches!(
            polled,
            std::task::Poll::Ready(Err(GatewayError::RedirectFailed))
        ));
    }

    #[test]
    fn the_query_joins_the_targets_own_before_its_fragment() {
        use super::with_query;
        assert_eq!(with_query("/v2".into(), None), "/v2");
        assert_eq!(with_query("/v2".into(), Some("a=1")), "/v2?a=1");
        assert_eq!(with_query("/v2?b=2".into(), Some("a=1")), "/v2?b=2&a=1");
        assert_eq!(
            with_query("/v2?b=2#top".into(), Some("a=1")),
            "/v2?b=2&a=1#top"
        );
    }

    #[test]
    fn only_a_route_that_answers_by_itself_may_leave_out_its_cluster() {
        let text = |keys: &str| {
            format!(
                "listeners: [{{ name: l, address: \"127.0.0.1:0\" }}]\nroutes:\n  - {{ match: {{ path_prefix: /x }}{keys} }}\n"
            )
        };
        let config = crate::config::load_str(&text(", redirect: { location: /y }"), "t.yaml")
            .expect("a redirect needs no cluster");
        assert_eq!(config.routes[0].cluster_index, None);
        let error = crate::config::load_str(&text(""), "t.yaml").expect_err("needs a cluster");
        let text = error.to_string();
        assert!(
            text.contains("routes[0].cluster: a route needs a `cluster`"),
            "{text}"
        );
    }
}
