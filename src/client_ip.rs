//! Who the client is when Portico sits behind other proxies: the real client address from
//! the connection's peer and the forwarding header, trusting only the proxies the operator
//! named (the top-level `trusted_proxies` section).
//!
//! Used on the request path by the layers that decide by client address — IP rules
//! (`middleware/ip_rules.rs`), later rate limiting — each calling [`client_ip`] with the
//! request's headers and its connection's peer; the gateway computes nothing for routes that
//! do not ask.
//!
//! The rule: the forwarding chain is the header's entries, oldest first, followed by the
//! connection's peer. Reading it from the right, every hop that is a trusted proxy is
//! skipped; the first hop that is not is the client. So a client can prepend whatever it
//! likes to `X-Forwarded-For`: the trusted proxies append the address *they* saw, and that
//! is the right-most untrusted entry. If every hop is trusted, the left-most is the client.
//! An entry that is not an address (`unknown`, an obfuscated `Forwarded` identifier,
//! garbage) ends the walk: the client is then the trusted hop that wrote it, since nothing
//! further left can be believed. Without trusted proxies, the client is the peer.

use http::header::{HeaderName, FORWARDED};
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::check::{Checker, Section};
use crate::config::source::KeyPath;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// An address range: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `addr/len` or a bare address (a range of one).
    pub(crate) fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?;
        let network = canonical(network);
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(len) => match len.parse::<u8>() {
                Ok(len) if len <= max => len,
                _ => return Err(format!("{text:?}: the prefix length must be 0..={max}")),
            },
        };
        let cidr = Cidr { network, prefix };
        if cidr.masked(network) != network {
            return Err(format!(
                "{text:?} has bits set after its /{prefix} prefix; write the network address \
                 ({}/{prefix})",
                cidr.masked(network)
            ));
        }
        Ok(cidr)
    }

    fn masked(&self, addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        }
    }

    pub(crate) fn contains(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        addr.is_ipv4() == self.network.is_ipv4() && self.masked(addr) == self.network
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// An IPv4 address seen through an IPv6 socket (`::ffff:192.0.2.1`) is that IPv4 address.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Which forwarding header the trusted proxies write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ForwardingHeader {
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=…`.
    Forwarded,
}

/// The proxies in front of Portico whose forwarding header is believed.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct TrustedProxies {
    pub(crate) ranges: Vec<Cidr>,
    pub(crate) header: ForwardingHeader,
}

impl TrustedProxies {
    fn trusts(&self, addr: IpAddr) -> bool {
        self.ranges.iter().any(|range| range.contains(addr))
    }
}

/// The client's address: the right-most hop of the forwarding chain (the header's entries,
/// then `peer`) that is not a trusted proxy. See the module docs.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.trusts(peer) {
        return peer;
    }
    let mut client = peer;
    let mut walk = |entry: &str| -> bool {
        match parse_entry(entry, trusted.header) {
            Some(addr) => {
                client = addr;
                trusted.trusts(addr)
            }
            None => false,
        }
    };
    match trusted.header {
        ForwardingHeader::XForwardedFor => {
            let lines: Vec<&[u8]> = headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            'lines: for line in lines.iter().rev() {
                for entry in line.rsplit(|b| *b == b',') {
                    let Ok(entry) = std::str::from_utf8(entry) else {
                        break 'lines;
                    };
                    if !walk(entry) {
                        break 'lines;
                    }
                }
            }
        }
        ForwardingHeader::Forwarded => {
            let lines: Vec<&[u8]> = headers
                .get_all(FORWARDED)
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            'forwarded: for line in lines.iter().rev() {
                let Ok(line) = std::str::from_utf8(line) else {
                    break;
                };
                for element in line.rsplit(',') {
                    let node = element.split(';').find_map(|pair| {
                        let (name, value) = pair.trim().split_once('=')?;
                        name.trim()
                            .eq_ignore_ascii_case("for")
                            .then_some(value.trim())
                    });
                    match node {
                        Some(node) if walk(node) => {}
                        _ => break 'forwarded,
                    }
                }
            }
        }
    }
    client
}

/// One entry of the chain as an address: `192.0.2.1`, `2001:db8::1`; in `Forwarded`
/// (RFC 7239 §6) also quoted, with a port, and IPv6 in brackets (`"[2001:db8::1]:4711"`).
fn parse_entry(entry: &str, header: ForwardingHeader) -> Option<IpAddr> {
    let entry = entry.trim();
    let entry = match header {
        ForwardingHeader::Forwarded => entry
            .strip_prefix('"')
            .and_then(|e| e.strip_suffix('"'))
            .unwrap_or(entry),
        ForwardingHeader::XForwardedFor => entry,
    };
    if let Ok(addr) = entry.parse::<IpAddr>() {
        return Some(canonical(addr));
    }
    // `[v6]`, `[v6]:port`, `v4:port` (some proxies add ports to X-Forwarded-For too).
    if let Some(rest) = entry.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        return port_ok
            .then(|| v6.parse::<Ipv6Addr>().ok())
            .flatten()
            .map(|a| canonical(IpAddr::V6(a)));
    }
    let (v4, port) = entry.split_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v4.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// `trusted_proxies` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrustedProxiesFile {
    /// The proxies in front of Portico (CIDR ranges or addresses). Default: none.
    #[serde(default)]
    addresses: Vec<String>,
    /// `x-forwarded-for` (default) or `forwarded`.
    header: Option<ForwardingHeader>,
}

impl Section for TrustedProxies {
    const KEY: &'static str = "trusted_proxies";
    type File = TrustedProxiesFile;

    fn check(file: &TrustedProxiesFile, path: &KeyPath, checker: &mut Checker<'_>) -> Option<Self> {
        let ranges = parse_ranges(&file.addresses, &path.key("addresses"), checker)?;
        Some(TrustedProxies {
            ranges,
            header: file.header.unwrap_or_default(),
        })
    }
}

/// A list of CIDR ranges, each problem reported at its entry.
pub(crate) fn parse_ranges(
    texts: &[String],
    path: &KeyPath,
    checker: &mut Checker<'_>,
) -> Option<Vec<Cidr>> {
    let mut ranges = Vec::with_capacity(texts.len());
    let mut ok = true;
    for (index, text) in texts.iter().enumerate() {
        match Cidr::parse(text.trim()) {
            Ok(range) => ranges.push(range),
            Err(message) => {
                checker.report(&path.index(index), message);
                ok = false;
            }
        }
    }
    ok.then_some(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    fn trusted(ranges: &[&str], header: ForwardingHeader) -> TrustedProxies {
        TrustedProxies {
            ranges: ranges
                .iter()
                .map(|r| Cidr::parse(r).expect("range"))
                .collect(),
            header,
        }
    }

    fn headers(name: &str, lines: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in lines {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(line).expect("value"),
            );
        }
        map
    }

    #[test]
    fn ranges_contain_what_they_say() {
        let net = Cidr::parse("10.1.0.0/16").expect("range");
        assert!(net.contains(ip("10.1.255.3")));
        assert!(net.contains(ip("::ffff:10.1.0.1")));
        assert!(!net.contains(ip("10.2.0.1")));
        let v6 = Cidr::parse("2001:db8::/32").expect("range");
        assert!(v6.contains(ip("2001:db8:1::7")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(Cidr::parse("0.0.0.0/0")
            .expect("all")
            .contains(ip("203.0.113.9")));
        assert!(Cidr::parse("192.0.2.7")
            .expect("one")
            .contains(ip("192.0.2.7")));
        for bad in [
            "10.1.0.1/16",
            "10.0.0.0/33",
            "::/129",
            "example.com",
            "10.0.0.0/x",
            "",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let t = trusted(&["10.0.0.0/8"], ForwardingHeader::XForwardedFor);
        let proxy = ip("10.0.0.5");
        // The client lies on the left; the proxy appended what it saw.
        let h = headers(
            "x-forwarded-for",
            &["6.6.6.6, 10.9.9.9", "203.0.113.7, 10.0.0.9"],
        );
        assert_eq!(client_ip(proxy, &h, &t), ip("203.0.113.7"));
        // Straight from the client: the header is not believed at all.
        assert_eq!(client_ip(ip("198.51.100.1"), &h, &t), ip("198.51.100.1"));
        // Only trusted hops: the left-most.
        let h = headers("x-forwarded-for", &["10.1.1.1, 10.2.2.2"]);
        assert_eq!(client_ip(proxy, &h, &t), ip("10.1.1.1"));
        // Garbage ends the walk at the trusted hop that wrote it.
        let h = headers("x-forwarded-for", &["203.0.113.7, unknown, 10.2.2.2"]);
        assert_eq!(client_ip(proxy, &h, &t), ip("10.2.2.2"));
        // No header: the peer.
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &t), proxy);
        // A gateway-appended copy of the peer changes nothing (trusted hops are skipped).
        let h = headers("x-forwarded-for", &["203.0.113.7, 10.0.0.5"]);
        assert_eq!(client_ip(proxy, &h, &t), ip("203.0.113.7"));
    }

    #[test]
    fn forwarded_entries_are_read_with_quotes_ports_and_brackets() {
        let t = trusted(&["10.0.0.0/8", "fd00::/8"], ForwardingHeader::Forwarded);
        let h = headers(
            "forwarded",
            &[
                r#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.9;by=10.0.0.1"#,
            ],
        );
        assert_eq!(client_ip(ip("fd00::1"), &h, &t), ip("2001:db8:cafe::17"));
        let h = headers("forwarded", &[r#"for="192.0.2.43:47011""#]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("192.0.2.43"));
        let h = headers("forwarded", &["for=_hidden, for=10.0.0.2"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("10.0.0.2"));
        // X-Forwarded-For is not read when the proxies write Forwarded.
        let h = headers("x-forwarded-for", &["203.0.113.7"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("10.0.0.1"));
    }

    fn address() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(|b| canonical(IpAddr::from(b))),
        ]
    }

    proptest! {
        /// Whatever a client writes before the chain its trusted proxies built, the answer is
        /// the address the first trusted proxy saw.
        #[test]
        fn a_client_cannot_spoof_its_way_in(
            junk in proptest::collection::vec("[ -~]{0,30}", 0..4),
            client in address(),
            hops in proptest::collection::vec(0u8..=255, 0..4),
        ) {
            let t = trusted(&["10.0.0.0/8"], ForwardingHeader::XForwardedFor);
            prop_assume!(!t.trusts(client));
            let mut chain: Vec<String> = junk
                .iter()
                .filter(|j| !j.contains(','))
                .cloned()
                .collect();
            chain.push(client.to_string());
            chain.extend(hops.iter().map(|h| format!("10.0.{h}.1")));
            let Ok(value) = HeaderValue::from_str(&chain.join(", ")) else {
                return Ok(());
            };
            let mut h = HeaderMap::new();
            h.insert(X_FORWARDED_FOR.clone(), value);
            prop_assert_eq!(client_ip(ip("10.0.0.5"), &h, &t), client);
        }

        /// An untrusted peer is the client, whatever the headers say; and the answer is always
        /// the peer or an address in the chain.
        #[test]
        fn the_answer_is_the_peer_or_a_hop(
            peer in address(),
            entries in proptest::collection::vec(address(), 0..5),
            trust_peer in any::<bool>(),
        ) {
            let ranges: Vec<String> = if trust_peer { vec![Cidr { network: peer, prefix: if peer.is_ipv4() { 32 } else { 128 } }.to_string()] } else { vec![] };
            let refs: Vec<&str> = ranges.iter().map(String::as_str).collect();
            let t = trusted(&refs, ForwardingHeader::XForwardedFor);
            let line = entries.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            let h = headers("x-forwarded-for", &[&line]);
            let answer = client_ip(peer, &h, &t);
            if trust_peer {
                prop_assert!(answer == peer || entries.contains(&answer));
            } else {
                prop_assert_eq!(answer, peer);
            }
        }
    }
}
