//! Admission: what a request must be before any route looks at it.
//!
//! On the request path: the first step of `gateway::handle` after the request id, before the
//! router. It refuses what no route could serve safely — a head the connection guard
//! flagged (conflicting framing, underscore look-alikes of framing headers), a transfer coding
//! other than one `chunked`, CONNECT, an over-long target, a missing, duplicated, malformed or
//! contradictory host — applies the listener's policy for header names with underscores,
//! answers a `redirect_https` listener's requests itself, normalises the
//! path (the normalised path is both the one matched and the one forwarded, so no request
//! reaches a backend path outside the prefix it was routed by) and asks the router for the
//! route. Everything refused here is answered without route policies: no route was chosen.

use crate::body::Body;
use crate::config::model::{Listener, RedirectHttps, UnderscoreHeaders};
use crate::error::GatewayError;
use crate::middleware::auth::oauth2::OAuth2Path;
use crate::routing::{normalize_path, Lookup, RequestView, Router};
use crate::server::conn_guard::{has_underscore, underscore_lookalike, HeadRefusal};
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};

/// What admission decided for a request that was not refused.
pub(crate) enum Admitted {
    /// Forward through route `route`'s stack. `host` is the host it was routed by.
    Route {
        route: usize,
        host: Option<HeaderValue>,
    },
    /// Answer this (a `redirect_https` listener's redirect).
    Answer(Response<Body>),
    /// One of the gateway's own OAuth2 endpoints, which come before every route.
    Local(OAuth2Path),
}

/// Admit and route one request (normalising its path in place). `answers_preflight` says
/// which routes answer CORS preflights themselves; `local` which paths the gateway serves
/// itself on this listener.
pub(crate) fn admit<B>(
    router: &Router,
    answers_preflight: impl Fn(usize) -> bool,
    local: impl Fn(&str) -> Option<OAuth2Path>,
    listener: &Listener,
    req: &mut Request<B>,
    head_refusal: Option<HeadRefusal>,
) -> Result<Admitted, GatewayError> {
    if let Some(refusal) = head_refusal {
        return Err(refusal.error());
    }
    if req.method() == Method::CONNECT {
        return Err(GatewayError::ConnectRefused);
    }
    if check_header_names(req.headers_mut(), listener.headers_with_underscores)? {
        check_transfer_coding(req.headers())?;
    }
    let limits = &listener.limits;
    let target_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > limits.max_uri_length {
        return Err(GatewayError::UriTooLong {
            len: target_len,
            limit: limits.max_uri_length,
        });
    }
    let host = effective_host(req)?;
    if let Some(redirect) = listener.redirect_https {
        return redirect_to_https(redirect, host.as_ref(), req.uri()).map(Admitted::Answer);
    }

    let normalized = normalize_path(req.uri().path())?;
    if let std::borrow::Cow::Owned(path) = normalized {
        let target = match req.uri().query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = Some(
            PathAndQuery::try_from(target)
                .map_err(|e| GatewayError::BadUpstreamRequest(e.into()))?,
        );
        *req.uri_mut() =
            Uri::from_parts(parts).map_err(|e| GatewayError::BadUpstreamRequest(e.into()))?;
    }

    if let Some(endpoint) = local(req.uri().path()) {
        return Ok(Admitted::Local(endpoint));
    }

    let view = RequestView {
        // Validated above: a host is ASCII.
        host: host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or(""),
        path: req.uri().path(),
        query: req.uri().query(),
        method: req.method(),
        headers: req.headers(),
    };
    // A CORS preflight asks about another method: it belongs to the route that serves that
    // method, when that route answers preflights (rather than a 405, or a route that would
    // forward it).
    if let Some(requested) = preflight_method(req) {
        let asked = RequestView {
            method: &requested,
            ..view
        };
        if let Lookup::Matched(route) = router.find(&asked) {
            if answers_preflight(route) {
                return Ok(Admitted::Route { route, host });
            }
        }
    }
    let lookup = router.find(&view);
    match lookup {
        Lookup::Matched(route) => Ok(Admitted::Route { route, host }),
        Lookup::MethodNotAllowed(allow) => Err(GatewayError::MethodNotAllowed {
            method: req.method().clone(),
            allow,
        }),
        Lookup::NotFound => Err(GatewayError::NoRoute),
    }
}

/// The method a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`) asks about.
fn preflight_method<B>(req: &Request<B>) -> Option<Method> {
    if req.method() != Method::OPTIONS {
        return None;
    }
    let asked = req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    Method::from_bytes(asked.as_bytes()).ok()
}

/// RFC 9112 §6.1: the one transfer coding Portico takes in a request is `chunked`, applied
/// once. hyper decodes a final `chunked` and would pass any coding before it on, unannounced
/// (the gateway removes `Transfer-Encoding` as hop-by-hop), so a backend would take coded
/// bytes for plain ones: other codings are 501, `chunked` twice is malformed.
fn check_transfer_coding(headers: &HeaderMap) -> Result<(), GatewayError> {
    let mut chunked = 0;
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        for coding in value.as_bytes().split(|b| *b == b',') {
            // A coding's parameters (`;name=value`) do not change which coding it is.
            let name = coding.split(|b| *b == b';').next().unwrap_or_default();
            let name = name.trim_ascii();
            if name.is_empty() {
                continue;
            }
            if !name.eq_ignore_ascii_case(b"chunked") {
                let coding = String::from_utf8_lossy(name).into_owned();
                return Err(GatewayError::TransferCodingNotSupported(coding));
            }
            chunked += 1;
        }
    }
    if chunked > 1 {
        return Err(GatewayError::RepeatedChunkedCoding);
    }
    Ok(())
}

/// Header names with `_`: a look-alike of a framing or hop-by-hop header (`content_length`)
/// is always refused — a backend or CGI layer that reads `_` as `-` would see a second
/// framing — and any other is allowed, dropped or refused as the listener says. The
/// connection guard refuses look-alikes in HTTP/1 heads it reads too; this covers HTTP/2 and
/// every head hyper parses. One pass over the names (the usual request has no `_` at all);
/// returns whether the request has a `Transfer-Encoding`.
fn check_header_names(
    headers: &mut HeaderMap,
    policy: UnderscoreHeaders,
) -> Result<bool, GatewayError> {
    let mut dropped: Vec<HeaderName> = Vec::new();
    let mut transfer_encoding = false;
    for name in headers.keys() {
        let bytes = name.as_str().as_bytes();
        transfer_encoding |= name == header::TRANSFER_ENCODING;
        if !has_underscore(bytes) {
            continue;
        }
        if let Some(twin) = underscore_lookalike(bytes) {
            return Err(HeadRefusal::UnderscoreLookalike(twin).error());
        }
        match policy {
            UnderscoreHeaders::Allow => {}
            UnderscoreHeaders::Drop => dropped.push(name.clone()),
            UnderscoreHeaders::Reject => {
                return Err(GatewayError::UnderscoreHeader(name.as_str().to_string()))
            }
        }
    }
    for name in dropped {
        headers.remove(name);
    }
    Ok(transfer_encoding)
}

/// The host the request is for, with exactly one source of truth: `:authority` for HTTP/2,
/// the Host header for HTTP/1.x. RFC 9112 §3.2: more than one Host field line, or an invalid
/// one, is a 400. An absolute-form target (`GET http://host/path`) or an HTTP/2 `:authority`
/// must name the same host as a Host header sent alongside (RFC 9113 §8.3.1): Portico only
/// ever forwards to its configured clusters, never to a host the client names, and never
/// with two hosts a backend could disagree about.
fn effective_host<B>(req: &Request<B>) -> Result<Option<HeaderValue>, GatewayError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let header_host = hosts.next();
    if hosts.next().is_some() {
        return Err(GatewayError::DuplicateHost);
    }
    if let Some(host) = header_host {
        check_host(host.as_bytes())?;
    }
    match (req.uri().authority(), header_host) {
        (Some(authority), Some(host)) => {
            if !authority
                .as_str()
                .as_bytes()
                .eq_ignore_ascii_case(host.as_bytes())
            {
                return Err(GatewayError::AuthorityMismatch {
                    target: authority.to_string(),
                    host: String::from_utf8_lossy(host.as_bytes()).into_owned(),
                });
            }
            Ok(Some(host.clone()))
        }
        (Some(authority), None) => {
            check_host(authority.as_str().as_bytes())?;
            HeaderValue::from_str(authority.as_str())
                .map(Some)
                .map_err(|_| GatewayError::InvalidHost(authority.to_string()))
        }
        (None, Some(host)) => Ok(Some(host.clone())),
        (None, None) if req.version() == Version::HTTP_11 => Err(GatewayError::MissingHost),
        (None, None) => Ok(None),
    }
}

/// The bytes of a host name: letters, digits, `-`, `.`, `_`, `~` (a table: this runs on every
/// request).
static HOST_NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        byte += 1;
    }
    table
};

/// `uri-host [ ":" port ]` (RFC 9110 §7.2), restricted to what a host name or an address
/// literal needs: a name of letters, digits, `-`, `.`, `_` and `~`, or a bracketed IPv6
/// literal, then optionally `:` and up to five digits. RFC 3986 also allows percent-escapes
/// and the sub-delimiters `!$&'()*+,;=` in a registered name; they are refused because no DNS
/// name contains them and backends split forwarding headers on some of them (`,`, `;`).
fn check_host(bytes: &[u8]) -> Result<(), GatewayError> {
    let invalid = || GatewayError::InvalidHost(String::from_utf8_lossy(bytes).into_owned());
    let (name, port) = match bytes.first() {
        Some(b'[') => {
            let close = bytes.iter().position(|b| *b == b']').ok_or_else(invalid)?;
            let literal = std::str::from_utf8(&bytes[1..close]).map_err(|_| invalid())?;
            if literal.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(invalid());
            }
            (&bytes[..=close], &bytes[close + 1..])
        }
        _ => match bytes.iter().position(|b| *b == b':') {
            Some(colon) => (&bytes[..colon], &bytes[colon..]),
            None => (bytes, &[][..]),
        },
    };
    let name_ok = name.first() == Some(&b'[')
        || (!name.is_empty() && name.iter().all(|b| HOST_NAME_BYTES[usize::from(*b)]));
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    if name_ok && port_ok {
        Ok(())
    } else {
        Err(invalid())
    }
}

/// The answer of a `redirect_https` listener: the same host (without its port) and target
/// on `https://`, never forwarded. A request without a host cannot be redirected.
fn redirect_to_https(
    redirect: RedirectHttps,
    host: Option<&HeaderValue>,
    uri: &Uri,
) -> Result<Response<Body>, GatewayError> {
    let host = host
        .and_then(|h| h.to_str().ok())
        .ok_or(GatewayError::MissingHost)?;
    let name = match host.rfind(':') {
        // `[::1]:8080` → `[::1]`; a bare `[::1]` has its last `:` inside the brackets.
        Some(colon) if !host[colon..].contains(']') => &host[..colon],
        _ => host,
    };
    let target = uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let location = if redirect.port == 443 {
        format!("https://{name}{target}")
    } else {
        format!("https://{name}:{}{target}", redirect.port)
    };
    let location = HeaderValue::from_str(&location).map_err(|_| GatewayError::MissingHost)?;
    let mut response = Response::new(Body::empty());
    *response.status_mut() =
        StatusCode::from_u16(redirect.status).unwrap_or(StatusCode::PERMANENT_REDIRECT);
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_of(
        version: Version,
        uri: &str,
        hosts: &[&[u8]],
    ) -> Result<Option<HeaderValue>, String> {
        let mut builder = Request::builder().version(version).uri(uri);
        for host in hosts {
            builder = builder.header(header::HOST, HeaderValue::from_bytes(host).expect("value"));
        }
        let req = builder.body(()).expect("request");
        effective_host(&req).map_err(|e| e.class().code.to_string())
    }

    #[test]
    fn one_valid_host_is_the_host() {
        for host in [
            &b"api.example.com"[..],
            b"api.example.com:8080",
            b"127.0.0.1:80",
            b"[::1]:8443",
            b"[::1]",
            b"under_score.local",
        ] {
            assert_eq!(
                host_of(Version::HTTP_11, "/", &[host])
                    .expect("valid")
                    .expect("some"),
                host
            );
        }
    }

    #[test]
    fn anything_but_one_valid_host_is_refused() {
        for host in [
            &b"evil host@/x"[..],
            b"a.com,b.com",
            b"a.com/x",
            b"user@a.com",
            b"a.com:80:81",
            b"a.com:123456",
            b"a.com:http",
            b"",
            b":80",
            b"[::1",
            b"[not-v6]",
            b"\xc3\xa9.example",
            b"a.com;b",
        ] {
            assert_eq!(
                host_of(Version::HTTP_11, "/", &[host]),
                Err("invalid_host".into()),
                "{}",
                String::from_utf8_lossy(host)
            );
        }
        assert_eq!(
            host_of(Version::HTTP_11, "/", &[b"a.example", b"b.example"]),
            Err("duplicate_host".into())
        );
        assert_eq!(
            host_of(Version::HTTP_11, "/", &[b"a.example", b"a.example"]),
            Err("duplicate_host".into())
        );
        assert_eq!(
            host_of(Version::HTTP_11, "/", &[]),
            Err("missing_host".into())
        );
        assert_eq!(host_of(Version::HTTP_10, "/", &[]), Ok(None));
    }

    #[test]
    fn an_authority_and_a_host_header_must_agree() {
        assert_eq!(
            host_of(Version::HTTP_2, "https://a.example/x", &[b"b.example"]),
            Err("authority_mismatch".into())
        );
        assert_eq!(
            host_of(Version::HTTP_11, "http://a.example/x", &[b"b.example"]),
            Err("authority_mismatch".into())
        );
        assert_eq!(
            host_of(Version::HTTP_2, "https://A.example/x", &[b"a.EXAMPLE"])
                .expect("same host")
                .expect("some"),
            "a.EXAMPLE"
        );
        assert_eq!(
            host_of(Version::HTTP_2, "https://a.example:8443/x", &[])
                .expect("authority alone")
                .expect("some"),
            "a.example:8443"
        );
    }
}
