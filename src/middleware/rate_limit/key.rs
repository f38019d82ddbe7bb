//! Whose bucket a request counts against: the key of a rate limit.
//!
//! On the request path, in the rate-limit layer, after auth: a key is made of one or more
//! parts — the consumer auth established, the client address (the trusted-proxy rule of
//! `client_ip.rs`, so a client cannot buy a new bucket with its own `X-Forwarded-For`), a
//! request header, a claim of the caller's token, or the route itself. A request that lacks
//! a part (no consumer on an open route, no such header) is counted under the route's
//! fallback key instead, which is made only of parts every request has.

use crate::client_ip::{client_ip, TrustedProxies};
use crate::context::RequestContext;
use crate::middleware::auth::identity::Identity;
use http::{HeaderName, Request};
use serde_json::Value;
use std::fmt::Write as _;
use std::sync::Arc;

/// The longest key kept as written; longer ones (a long header value) are counted by their
/// digest, so a caller cannot make the gateway store large keys.
const MAX_PLAIN_KEY: usize = 96;

/// One part of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyPart {
    Consumer,
    ClientIp,
    Route,
    Header(HeaderName),
    Claim(Arc<str>),
}

impl KeyPart {
    /// `consumer`, `ip`, `route`, `header:<name>`, `claim:<name>`.
    pub(crate) fn parse(text: &str) -> Result<KeyPart, String> {
        match text {
            "consumer" => return Ok(KeyPart::Consumer),
            "ip" => return Ok(KeyPart::ClientIp),
            "route" => return Ok(KeyPart::Route),
            _ => {}
        }
        if let Some(name) = text.strip_prefix("header:") {
            return HeaderName::from_bytes(name.trim().as_bytes())
                .map(KeyPart::Header)
                .map_err(|_| format!("{name:?} is not a header name"));
        }
        if let Some(claim) = text.strip_prefix("claim:") {
            let claim = claim.trim();
            if claim.is_empty() {
                return Err(String::from("`claim:` needs a claim name"));
            }
            return Ok(KeyPart::Claim(Arc::from(claim)));
        }
        Err(format!(
            "{text:?} is not a key: expected consumer, ip, route, header:<name> or claim:<name>"
        ))
    }

    /// Whether every request has this part.
    pub(crate) fn always_present(&self) -> bool {
        matches!(self, KeyPart::ClientIp | KeyPart::Route)
    }

    /// Whether finding this part needs the request context (the connection's peer).
    pub(crate) fn needs_context(&self) -> bool {
        matches!(self, KeyPart::ClientIp)
    }

    /// Whether finding this part needs the identity auth establishes.
    pub(crate) fn needs_identity(&self) -> bool {
        matches!(self, KeyPart::Consumer | KeyPart::Claim(_))
    }

    pub(crate) fn label(&self) -> String {
        match self {
            KeyPart::Consumer => String::from("consumer"),
            KeyPart::ClientIp => String::from("ip"),
            KeyPart::Route => String::from("route"),
            KeyPart::Header(name) => format!("header:{name}"),
            KeyPart::Claim(claim) => format!("claim:{claim}"),
        }
    }
}

/// A key: its parts, all of which must be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeySpec {
    pub(crate) parts: Vec<KeyPart>,
}

impl KeySpec {
    pub(crate) fn label(&self) -> String {
        self.parts
            .iter()
            .map(KeyPart::label)
            .collect::<Vec<_>>()
            .join("+")
    }

    pub(crate) fn needs_context(&self) -> bool {
        self.parts.iter().any(KeyPart::needs_context)
    }

    pub(crate) fn needs_identity(&self) -> bool {
        self.parts.iter().any(KeyPart::needs_identity)
    }

    /// The key of `req` on `route`, or `None` when a part is missing. `trusted` decides the
    /// client address.
    pub(crate) fn make<B>(
        &self,
        req: &Request<B>,
        route: &str,
        trusted: &TrustedProxies,
    ) -> Option<String> {
        let mut key = String::with_capacity(48);
        for (index, part) in self.parts.iter().enumerate() {
            if index > 0 {
                key.push('|');
            }
            match part {
                KeyPart::Consumer => {
                    let identity = req.extensions().get::<Arc<Identity>>()?;
                    let consumer = identity.consumer.as_ref()?;
                    key.push_str("c=");
                    key.push_str(&consumer.id);
                }
                KeyPart::ClientIp => {
                    let context = RequestContext::of(req)?;
                    let ip = client_ip(context.connection.peer.ip(), req.headers(), trusted);
                    key.push_str("ip=");
                    push_ip(&mut key, ip);
                }
                KeyPart::Route => {
                    key.push_str("r=");
                    key.push_str(route);
                }
                KeyPart::Header(name) => {
                    let value = req.headers().get(name)?;
                    key.push_str("h=");
                    key.push_str(&String::from_utf8_lossy(value.as_bytes()));
                }
                KeyPart::Claim(claim) => {
                    let identity = req.extensions().get::<Arc<Identity>>()?;
                    key.push_str("j=");
                    match identity.claim(claim)? {
                        Value::String(text) => key.push_str(&text),
                        Value::Null => return None,
                        other => key.push_str(&other.to_string()),
                    }
                }
            }
        }
        Some(bounded(key))
    }
}

/// `ip` as text; an IPv4 address without the formatting machinery (every request of a
/// route keyed by address makes one).
fn push_ip(key: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (index, octet) in v4.octets().into_iter().enumerate() {
                if index > 0 {
                    key.push('.');
                }
                if octet >= 100 {
                    key.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    key.push(char::from(b'0' + octet / 10 % 10));
                }
                key.push(char::from(b'0' + octet % 10));
            }
        }
        std::net::IpAddr::V6(_) => {
            let _ = write!(key, "{ip}");
        }
    }
}

/// A key as stored: as written when short, else its SHA-256 (the first 128 bits).
fn bounded(key: String) -> String {
    if key.len() <= MAX_PLAIN_KEY && !key.contains(['{', '}']) {
        return key;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let mut out = String::with_capacity(3 + 32);
    out.push_str("sha");
    for byte in &digest.as_ref()[..16] {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_ip::Cidr;
    use crate::context::test_context;
    use crate::middleware::auth::consumers::Consumer;

    fn identity(id: &str) -> Arc<Identity> {
        let consumer = Consumer {
            id: id.into(),
            name: None,
            plan: Some("gold".into()),
            scopes: Vec::new(),
            enabled: true,
            api_keys: Vec::new(),
            client_id: None,
            client_secret: None,
        };
        Arc::new(Identity::of_consumer(Arc::new(consumer)))
    }

    fn spec(parts: &[&str]) -> KeySpec {
        KeySpec {
            parts: parts
                .iter()
                .map(|p| KeyPart::parse(p).expect("part"))
                .collect(),
        }
    }

    #[test]
    fn addresses_are_written_as_their_usual_text() {
        for ip in [
            "0.0.0.0",
            "192.0.2.9",
            "10.20.100.255",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
        ] {
            let mut key = String::new();
            push_ip(&mut key, ip.parse().unwrap());
            assert_eq!(key, ip);
        }
    }

    #[test]
    fn keys_are_made_of_their_parts_or_not_at_all() {
        let mut req = Request::get("/").header("x-tenant", "t1").body(()).unwrap();
        req.extensions_mut()
            .insert(test_context(([192, 0, 2, 9], 4000).into(), None));
        let trusted = TrustedProxies::default();
        assert_eq!(spec(&["consumer"]).make(&req, "r", &trusted), None);
        assert_eq!(
            spec(&["ip", "header:x-tenant", "route"]).make(&req, "orders", &trusted),
            Some(String::from("ip=192.0.2.9|h=t1|r=orders"))
        );
        req.extensions_mut().insert(identity("acme"));
        assert_eq!(
            spec(&["consumer", "claim:sub"]).make(&req, "r", &trusted),
            Some(String::from("c=acme|j=acme"))
        );
        assert_eq!(spec(&["claim:tenant"]).make(&req, "r", &trusted), None);
        assert_eq!(spec(&["header:x-other"]).make(&req, "r", &trusted), None);
    }

    #[test]
    fn a_spoofed_forwarding_header_from_an_untrusted_peer_changes_nothing() {
        let trusted = TrustedProxies {
            ranges: vec![Cidr::parse("10.0.0.0/8").unwrap()],
            ..TrustedProxies::default()
        };
        let key = |peer: [u8; 4], xff: &str| {
            let mut req = Request::get("/")
                .header("x-forwarded-for", xff)
                .body(())
                .unwrap();
            req.extensions_mut()
                .insert(test_context((peer, 4000).into(), None));
            spec(&["ip"]).make(&req, "r", &trusted)
        };
        assert_eq!(
            key([198, 51, 100, 7], "1.2.3.4"),
            Some("ip=198.51.100.7".into())
        );
        assert_eq!(
            key([10, 0, 0, 1], "6.6.6.6, 1.2.3.4"),
            Some("ip=1.2.3.4".into())
        );
    }

    #[test]
    fn long_keys_are_stored_as_digests() {
        let long = "h=".to_string() + &"x".repeat(500);
        let stored = bounded(long.clone());
        assert_eq!(stored.len(), 35);
        assert_eq!(stored, bounded(long));
        assert_ne!(stored, bounded("h=".to_string() + &"y".repeat(500)));
        assert_eq!(bounded("c=acme".into()), "c=acme");
    }
}
