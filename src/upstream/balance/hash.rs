//! Consistent hashing: requests with the same key go to the same endpoint, and adding or
//! removing one of n endpoints moves only about 1/n of the keys.
//!
//! Two tables, both built once per cluster from the endpoints' `host:port` labels (so they do
//! not depend on the order endpoints are listed in):
//! - a **ring** of points per endpoint (`ring_points` × weight); a key goes to the first
//!   point at or after its hash, skipping endpoints that are not usable;
//! - a **Maglev** table (Eisenbud et al., NSDI 2016): a prime-sized lookup table that each
//!   endpoint fills along its own permutation, turn by turn; lookups are one index, and
//!   the table is more even than a ring of the same memory, at the price of moving a few
//!   keys between the other endpoints too when one joins or leaves.
//!
//! The key is hashed from the request ([`request_key`]) only for clusters with this policy.
//! The client address (`client_ip`, and `consumer` for anonymous requests) is the one the
//! gateway found before the route's policies ran (`client_ip.rs`, trusted proxies applied),
//! carried in the request context: a route's header rewrites cannot change it. The
//! consumer is the one auth established (`middleware/auth`).

use super::{Balancer, Candidates};
use crate::context::RequestContext;
use crate::middleware::auth::identity::Identity;
use crate::upstream::policy::{HashKey, HashTable};
use http::header::COOKIE;
use http::Request;
use std::net::IpAddr;
use std::sync::Arc;

pub(crate) enum ConsistentHash {
    /// Sorted (point, endpoint).
    Ring(Vec<(u64, usize)>),
    Maglev(Vec<usize>),
}

impl ConsistentHash {
    pub(crate) fn new(table: HashTable, labels: &[String], weights: &[u32]) -> ConsistentHash {
        let weight = |i: usize| weights.get(i).copied().unwrap_or(1) as usize;
        match table {
            HashTable::Ring { points } => {
                let mut ring = Vec::new();
                for (index, label) in labels.iter().enumerate() {
                    for point in 0..points * weight(index) {
                        ring.push((hash_bytes(format!("{label}#{point}").as_bytes()), index));
                    }
                }
                ring.sort_unstable();
                ConsistentHash::Ring(ring)
            }
            HashTable::Maglev { size } => ConsistentHash::Maglev(maglev(size, labels, weight)),
        }
    }
}

/// Fill a Maglev table: endpoint `i` walks its permutation `(offset + j × skip) mod size`
/// and takes the first free slot, `weight(i)` slots per turn, until the table is full.
fn maglev(size: usize, labels: &[String], weight: impl Fn(usize) -> usize) -> Vec<usize> {
    if labels.is_empty() {
        return Vec::new();
    }
    let size_u64 = size as u64;
    let perms: Vec<(u64, u64)> = labels
        .iter()
        .map(|label| {
            let offset = hash_bytes(format!("{label}#offset").as_bytes()) % size_u64;
            let skip = hash_bytes(format!("{label}#skip").as_bytes()) % (size_u64 - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; labels.len()];
    let mut table = vec![usize::MAX; size];
    let mut filled = 0;
    while filled < size {
        for (index, (offset, skip)) in perms.iter().enumerate() {
            for _ in 0..weight(index) {
                let slot = loop {
                    let slot = ((offset + next[index] * skip) % size_u64) as usize;
                    next[index] += 1;
                    if table[slot] == usize::MAX {
                        break slot;
                    }
                };
                table[slot] = index;
                filled += 1;
                if filled == size {
                    return table;
                }
            }
        }
    }
    table
}

impl Balancer for ConsistentHash {
    fn pick(&self, candidates: &Candidates<'_>, key: u64) -> Option<usize> {
        match self {
            ConsistentHash::Ring(ring) => {
                if ring.is_empty() {
                    return None;
                }
                let start = ring.partition_point(|(point, _)| *point < key);
                (0..ring.len())
                    .map(|step| ring[(start + step) % ring.len()].1)
                    .find(|index| candidates.is_usable(*index))
            }
            ConsistentHash::Maglev(table) => {
                if table.is_empty() {
                    return None;
                }
                let start = (key % table.len() as u64) as usize;
                // An unusable endpoint's keys spread over the next entries, which belong to
                // the others in table proportion.
                (0..table.len())
                    .map(|step| table[(start + step) % table.len()])
                    .find(|index| candidates.is_usable(*index))
            }
        }
    }
}

/// FNV-1a, then a 64-bit finaliser (SplitMix64's) so that similar inputs spread over the
/// whole range. Stable across builds and platforms: two gateways hash alike.
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// The hash of `req`'s key. A request without the key (no such header or cookie) gets a
/// random one: it is spread like any request, rather than all such requests piling onto
/// one endpoint.
pub(crate) fn request_key<B>(key: &HashKey, req: &Request<B>) -> u64 {
    let found = match key {
        HashKey::Header(name) => req.headers().get(name).map(|v| hash_bytes(v.as_bytes())),
        HashKey::Cookie(name) => req
            .headers()
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (n, v) = pair.trim().split_once('=')?;
                (n == name).then(|| hash_bytes(v.as_bytes()))
            }),
        HashKey::ClientIp => client_key(req),
        HashKey::Path => Some(hash_bytes(req.uri().path().as_bytes())),
        HashKey::Consumer => match req
            .extensions()
            .get::<Arc<Identity>>()
            .and_then(|identity| identity.consumer.as_ref())
        {
            // Distinct from any address's hash: a consumer id is hashed with a tag.
            Some(consumer) => Some(hash_bytes(format!("c={}", consumer.id).as_bytes())),
            None => client_key(req),
        },
    };
    found.unwrap_or_else(|| fastrand::u64(..))
}

/// The hash of the client's address from the request context.
fn client_key<B>(req: &Request<B>) -> Option<u64> {
    Some(match RequestContext::of(req)?.client? {
        IpAddr::V4(ip) => hash_bytes(&ip.octets()),
        IpAddr::V6(ip) => hash_bytes(&ip.octets()),
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{spread, states};
    use super::*;

    fn labels(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:8080")).collect()
    }

    /// The share of `keys` whose endpoint changes when a fifth endpoint joins four.
    fn moved_share(table: HashTable) -> f64 {
        let four = ConsistentHash::new(table, &labels(4), &[1; 4]);
        let five = ConsistentHash::new(table, &labels(5), &[1; 5]);
        let (s4, s5) = (states(4), states(5));
        let (c4, c5) = (Candidates::all(&s4, &[1; 4]), Candidates::all(&s5, &[1; 5]));
        let keys = 20_000;
        let moved = (0..keys)
            .map(|k| hash_bytes(format!("user-{k}").as_bytes()))
            .filter(|key| four.pick(&c4, *key) != five.pick(&c5, *key))
            .count();
        moved as f64 / keys as f64
    }

    #[test]
    fn adding_an_endpoint_moves_about_one_in_n_keys() {
        for table in [
            HashTable::Ring { points: 160 },
            HashTable::Maglev { size: 65_537 },
        ] {
            let share = moved_share(table);
            // Ideal: 1/5 of the keys, all to the new endpoint; modulo hashing would move 4/5.
            assert!((0.15..0.27).contains(&share), "{table:?}: {share}");
        }
    }

    #[test]
    fn keys_spread_evenly_and_stick() {
        for table in [
            HashTable::Ring { points: 160 },
            HashTable::Maglev { size: 65_537 },
        ] {
            let hash = ConsistentHash::new(table, &labels(3), &[1; 3]);
            let s = states(3);
            let candidates = Candidates::all(&s, &[1; 3]);
            let counts = spread(&hash, &candidates, 30_000, |k| {
                hash_bytes(format!("k{k}").as_bytes())
            });
            assert!(
                counts.iter().all(|c| (8_000..12_000).contains(c)),
                "{table:?}: {counts:?}"
            );
            let key = hash_bytes(b"same");
            let first = hash.pick(&candidates, key);
            assert!((0..100).all(|_| hash.pick(&candidates, key) == first));
        }
    }

    #[test]
    fn an_unusable_endpoints_keys_move_and_only_those() {
        let hash = ConsistentHash::new(HashTable::Ring { points: 160 }, &labels(3), &[1; 3]);
        let s = states(3);
        let all = Candidates::all(&s, &[1; 3]);
        s[1].set_healthy(false);
        let policy = crate::upstream::policy::tests_support::policy_with_health(0);
        let usable = Candidates::usable(&s, &[1; 3], &policy);
        for k in 0..1000u64 {
            let key = hash_bytes(&k.to_le_bytes());
            let before = hash.pick(&all, key).expect("pick");
            let after = hash.pick(&usable, key).expect("pick");
            assert_ne!(after, 1);
            if before != 1 {
                assert_eq!(before, after);
            }
        }
    }

    #[test]
    fn keys_come_from_the_request() {
        let mut req = Request::get("/a/b")
            .header("x-user", "alice")
            .header("cookie", "theme=dark; sid=42")
            .header("x-forwarded-for", "203.0.113.9, 10.0.0.1")
            .body(())
            .expect("request");
        // The client address the gateway found (not the header, which a route may rewrite).
        let mut context = crate::context::test_context(([127, 0, 0, 1], 1).into(), None);
        context.client = Some(IpAddr::from([192, 0, 2, 7]));
        req.extensions_mut().insert(context);
        let header = HashKey::Header(http::HeaderName::from_static("x-user"));
        assert_eq!(request_key(&header, &req), hash_bytes(b"alice"));
        assert_eq!(
            request_key(&HashKey::Cookie("sid".into()), &req),
            hash_bytes(b"42")
        );
        assert_eq!(
            request_key(&HashKey::ClientIp, &req),
            hash_bytes(&[192, 0, 2, 7])
        );
        // Anonymous: the consumer key falls back to the client address.
        assert_eq!(
            request_key(&HashKey::Consumer, &req),
            hash_bytes(&[192, 0, 2, 7])
        );
        assert_eq!(request_key(&HashKey::Path, &req), hash_bytes(b"/a/b"));
    }
}
