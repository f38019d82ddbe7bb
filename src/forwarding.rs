//! The headers a proxy owns: hop-by-hop headers removed per hop, forwarding headers added.
//!
//! On the request path: `gateway::handle` calls [`set_forwarding_headers`] on every request
//! once its route is known, just before the route's stack; the upstream client calls
//! [`strip_hop_by_hop`] on every response it receives. Hop-by-hop headers (RFC 9110 §7.6.1)
//! describe one connection and must not travel further; `X-Forwarded-For/-Proto/-Host`,
//! `X-Request-Id` and `Via` tell the backend what the gateway saw. The config validator uses
//! [`is_hop_by_hop`] so that a route can never set a header the proxy strips.

use crate::context::ClientConnection;
use crate::request_id::X_REQUEST_ID;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Version};

pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The fixed hop-by-hop set (RFC 9110 §7.6.1, plus the legacy `proxy-connection`). Headers
/// named by `Connection` are hop-by-hop too, per message.
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "te" | "transfer-encoding" | "upgrade"
    )
}

/// An HTTP/1.1 protocol switch (WebSocket): `Upgrade` named in `Connection`. An upgrade to
/// `h2c` is never one: after it, the client would speak HTTP/2 to the backend directly, every
/// request on that connection past the router and the route's policies ("h2c smuggling").
/// Such a request goes on as a plain HTTP/1.1 request, its `Upgrade` removed.
pub(crate) fn is_upgrade_request<B>(req: &Request<B>) -> bool {
    if req.version() != Version::HTTP_11 {
        return false;
    }
    let mut protocols = req.headers().get_all(header::UPGRADE).iter().peekable();
    if protocols.peek().is_none() {
        return false;
    }
    let h2c = protocols.any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|p| p.trim_ascii().eq_ignore_ascii_case(b"h2c"))
    });
    !h2c && req.headers().get_all(header::CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    })
}

/// Clean the request's hop-by-hop headers and add the forwarding headers. `host` is the host
/// the request was routed by; `upgrade` keeps `Upgrade` for a protocol switch;
/// `identity_headers` are the headers only the gateway may set (the runtime's).
pub(crate) fn set_forwarding_headers<B>(
    req: &mut Request<B>,
    conn: &ClientConnection,
    identity_headers: &[HeaderName],
    host: Option<HeaderValue>,
    request_id: &HeaderValue,
    upgrade: bool,
) {
    let version = req.version();
    let headers = req.headers_mut();
    let _ = strip_hop_by_hop(headers, upgrade);
    // Room for the headers added below in one step, instead of growing the map twice.
    headers.reserve(4);
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    match headers.entry(&X_FORWARDED_FOR) {
        http::header::Entry::Vacant(entry) => {
            entry.insert(conn.peer_ip.clone());
        }
        http::header::Entry::Occupied(mut entry) => {
            let mut joined = Vec::with_capacity(64);
            for value in entry.iter() {
                if !joined.is_empty() {
                    joined.extend_from_slice(b", ");
                }
                joined.extend_from_slice(value.as_bytes());
            }
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(conn.peer_ip.as_bytes());
            if let Ok(value) = HeaderValue::from_bytes(&joined) {
                entry.insert(value);
            }
        }
    }
    let proto = if conn.tls.is_some() { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    // Whatever a client sends under a name that carries the gateway's word about who is
    // calling (a verified client certificate, an authenticated consumer) is never trusted —
    // on every listener and every route, with auth or not.
    for name in identity_headers {
        headers.remove(name);
    }
    if let Some(name) = conn.listener.client_cert_header() {
        if let Some(identity) = conn
            .tls
            .as_ref()
            .and_then(|tls| tls.client_identity.as_ref())
        {
            headers.insert(name.clone(), identity.clone());
        }
    }
    match host {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST.clone(), host.clone());
            // HTTP/2 clients send :authority instead of Host; HTTP/1.1 upstreams need Host.
            // (An HTTP/1.x request with a host has it from its Host header: no lookup needed.)
            if version == Version::HTTP_2 && !headers.contains_key(header::HOST) {
                headers.insert(header::HOST, host);
            }
        }
        // No host: nothing the client says about one is passed on as the gateway's word.
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    if conn.listener.config.via {
        headers.append(header::VIA, via_value(version));
    }
}

/// `Via: <version> portico` (RFC 9110 §7.6.3), for listeners with `via: true`.
pub(crate) fn via_value(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_10 => "1.0 portico",
        Version::HTTP_2 => "2 portico",
        _ => "1.1 portico",
    })
}

/// What the one pass of [`strip_hop_by_hop`] saw, before it removed anything: the framing
/// headers a message came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Framing {
    pub(crate) transfer_encoding: bool,
    pub(crate) content_length: bool,
}

/// Remove hop-by-hop headers (RFC 9110 §7.6.1): the fixed set and every header the
/// `Connection` header names. `te: trailers` survives (gRPC needs it). With `keep_upgrade`,
/// `Upgrade` stays for a protocol switch. Returns which framing headers were there.
///
/// This runs on every request and response, so it is shaped for the common cases: one
/// pass over the names finds which hop-by-hop headers are present (usually none, or a lone
/// `Connection: keep-alive`), and only those are removed; the usual `Connection` tokens
/// (`keep-alive`, `close`, `upgrade`) never allocate.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) -> Framing {
    const CONNECTION: u8 = 1;
    const TRANSFER_ENCODING: u8 = 2;
    const TE: u8 = 4;
    const UPGRADE: u8 = 8;
    const KEEP_ALIVE_BIT: u8 = 16;
    const PROXY_CONNECTION_BIT: u8 = 32;
    const CONTENT_LENGTH: u8 = 64;
    // One pass over the names; the length decides cheaply whether a name can be one of
    // the six at all (measured cheaper than six hash lookups for a typical request).
    let mut present = 0u8;
    for name in headers.keys() {
        let name = name.as_str();
        present |= match name.len() {
            2 if name == "te" => TE,
            7 if name == "upgrade" => UPGRADE,
            10 if name == "connection" => CONNECTION,
            10 if name == "keep-alive" => KEEP_ALIVE_BIT,
            14 if name == "content-length" => CONTENT_LENGTH,
            16 if name == "proxy-connection" => PROXY_CONNECTION_BIT,
            17 if name == "transfer-encoding" => TRANSFER_ENCODING,
            _ => 0,
        };
    }
    let framing = Framing {
        transfer_encoding: present & TRANSFER_ENCODING != 0,
        content_length: present & CONTENT_LENGTH != 0,
    };
    if present & !CONTENT_LENGTH == 0 {
        return framing;
    }
    if present & CONNECTION != 0 {
        let mut named = Vec::new();
        // One lookup for the name: the values are read and removed through its entry.
        if let header::Entry::Occupied(connection) = headers.entry(header::CONNECTION) {
            for token in connection
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
            {
                // The fixed set below covers these; `close` names no header; and the headers
                // the request needs to be framed and routed are never removed on a client's say.
                let common = [
                    "keep-alive",
                    "close",
                    "upgrade",
                    "te",
                    "transfer-encoding",
                    "",
                    "host",
                    "content-length",
                ];
                if common.iter().any(|c| token.eq_ignore_ascii_case(c)) {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    named.push(name);
                }
            }
            connection.remove_entry_mult();
        }
        for name in named {
            headers.remove(name);
        }
    }
    if present & TRANSFER_ENCODING != 0 {
        headers.remove(header::TRANSFER_ENCODING);
    }
    if present & KEEP_ALIVE_BIT != 0 {
        headers.remove(&KEEP_ALIVE);
    }
    if present & PROXY_CONNECTION_BIT != 0 {
        headers.remove(&PROXY_CONNECTION);
    }
    if present & UPGRADE != 0 && !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
    if present & TE != 0 {
        let trailers_only = headers
            .get(header::TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
        if !trailers_only {
            headers.remove(header::TE);
        }
    }
    framing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_fixed_and_connection_named_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::TE, HeaderValue::from_static("gzip"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        headers.insert("x-keep", HeaderValue::from_static("yes"));
        let framing = strip_hop_by_hop(&mut headers, false);
        assert!(framing.transfer_encoding && !framing.content_length);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert_eq!(headers["x-keep"], "yes");
    }

    #[test]
    fn keeps_te_trailers_and_upgrade_when_asked() {
        let mut headers = HeaderMap::new();
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let _ = strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers[header::TE], "trailers");
        assert_eq!(headers[header::UPGRADE], "websocket");
        assert!(!headers.contains_key(header::CONNECTION));
    }
}
