//! Request ids: kept from the caller when sane, generated otherwise.
//!
//! On the request path: the first thing `gateway::handle` does, so that every answer, every
//! upstream request and every log line of a request carries the same id (`X-Request-Id`).

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids: a random per-process prefix and a counter, 32 hex digits. Unique across
/// restarts and instances without a random draw per request.
///
/// Every id this hands out is marked "never indexed" for HPACK (`set_sensitive`): a value
/// that is new on every request is useless in an HTTP/2 connection's header table, and
/// indexing it would evict the values that do repeat (`server`, `content-type`…), so that
/// each response's headers would be compressed and sent again in full. HTTP/1.1 ignores the
/// mark; the id is not treated as a secret.
pub(crate) struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl RequestIds {
    pub(crate) fn new() -> RequestIds {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from the OS; hashing the time through it gives a random u64.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        RequestIds {
            prefix: hasher.finish(),
            counter: AtomicU64::new(0),
        }
    }

    pub(crate) fn next(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Relaxed);
        let mut out = [0u8; 32];
        hex_u64(self.prefix, &mut out[..16]);
        hex_u64(n, &mut out[16..]);
        // An owned buffer behind a reference count: the id is cloned into the upstream
        // request and the response, and a plain `Vec` would be copied on the first clone.
        let mut id = HeaderValue::from_maybe_shared(Bytes::from_owner(out))
            .unwrap_or_else(|_| HeaderValue::from_static("0"));
        id.set_sensitive(true);
        id
    }

    /// The caller's id when it is a sane token, else a new one.
    pub(crate) fn take_or_generate(&self, headers: &HeaderMap) -> HeaderValue {
        match headers.get(&X_REQUEST_ID) {
            Some(id)
                if (1..=128).contains(&id.len())
                    && id.as_bytes().iter().all(|b| b.is_ascii_graphic()) =>
            {
                let mut id = id.clone();
                id.set_sensitive(true);
                id
            }
            _ => self.next(),
        }
    }
}

/// `value` as 16 lowercase hex digits into `out` (16 bytes).
fn hex_u64(value: u64, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = HEX[((value >> (60 - 4 * i)) & 0xf) as usize];
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_32_hex_digits_and_distinct() {
        let ids = RequestIds::new();
        let a = ids.next();
        let b = ids.next();
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(a, b);
    }

    #[test]
    fn a_sane_caller_id_is_kept_and_anything_else_replaced() {
        let ids = RequestIds::new();
        let mut headers = HeaderMap::new();
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        let kept = ids.take_or_generate(&headers);
        assert_eq!(kept, "abc-123");
        assert!(kept.is_sensitive(), "never indexed by HPACK");
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("has space"));
        let generated = ids.take_or_generate(&headers);
        assert_eq!(generated.len(), 32);
        assert!(generated.is_sensitive(), "never indexed by HPACK");
    }
}
