//! A bounded cache of credentials already verified: JWTs, and introspected opaque tokens.
//!
//! On the request path: looked up before any parsing, so a repeated token costs a hash of
//! part of its signature and one comparison, not a signature check or a call to the IdP.
//! Entries live until the token expires (the caller gives the time), and are keyed to the
//! consumer directory they were resolved in, so a consumers reload (a consumer disabled)
//! takes effect at once. Bounded: a full shard drops its expired entries, and if it is
//! still full, starts over rather than grow.

use super::identity::Identity;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, PoisonError};

const CACHE_SHARDS: usize = 16;

/// A token verified before.
struct Cached {
    token: Box<str>,
    identity: Arc<Identity>,
    /// `exp`, in seconds since the epoch.
    expires: u64,
    /// The consumer directory the identity was resolved in (its address): a reload of the
    /// consumers makes the entry stale.
    directory: usize,
}

/// Verified tokens, bounded, until they expire.
pub(crate) struct TokenCache {
    shards: Vec<Mutex<HashMap<u64, Cached>>>,
    hasher: RandomState,
    per_shard: usize,
}

impl TokenCache {
    pub(crate) fn new(entries: usize) -> TokenCache {
        TokenCache {
            shards: (0..CACHE_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            hasher: RandomState::new(),
            per_shard: entries.div_ceil(CACHE_SHARDS),
        }
    }

    /// Keyed by the signature (the token's last part): random-looking, so hashing part of it
    /// is as good as hashing all of it; the whole token is compared on a hit.
    fn key(&self, token: &str) -> u64 {
        let signature = token.rsplit('.').next().unwrap_or(token);
        let tail = &signature.as_bytes()[signature.len().saturating_sub(32)..];
        self.hasher.hash_one(tail)
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Cached>> {
        let index = usize::try_from(key % CACHE_SHARDS as u64).unwrap_or(0);
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn get(
        &self,
        token: &str,
        now: u64,
        directory: usize,
    ) -> Option<Result<Arc<Identity>, u64>> {
        if self.per_shard == 0 {
            return None;
        }
        let key = self.key(token);
        let shard = self.shard(key);
        let entry = shard.get(&key)?;
        if &*entry.token != token || entry.directory != directory {
            return None;
        }
        if entry.expires < now {
            return Some(Err(entry.expires));
        }
        Some(Ok(entry.identity.clone()))
    }

    pub(crate) fn insert(
        &self,
        token: &str,
        identity: Arc<Identity>,
        expires: u64,
        directory: usize,
        now: u64,
    ) {
        if self.per_shard == 0 {
            return;
        }
        let key = self.key(token);
        let mut shard = self.shard(key);
        if shard.len() >= self.per_shard {
            shard.retain(|_, entry| entry.expires >= now);
            if shard.len() >= self.per_shard {
                // Full of live tokens: start this shard over rather than grow.
                shard.clear();
            }
        }
        shard.insert(
            key,
            Cached {
                token: token.into(),
                identity,
                expires,
                directory,
            },
        );
    }
}

/// Seconds since the epoch: the unit of `exp`.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}
