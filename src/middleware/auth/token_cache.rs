//! A bounded cache of credentials already verified: JWTs, and introspected opaque tokens.
//!
//! On the request path: looked up before any parsing, so a repeated token costs a hash of
//! part of its signature and one comparison, not a signature check or a call to the IdP.
//! Entries live until the token expires (the caller gives the time), and are keyed to the
//! consumer directory they were resolved in, so a consumers reload (a consumer disabled)
//! takes effect at once. Bounded: a full shard drops its expired entries, and if it is
//! still full, starts over rather than grow.

use super::consumers::DigestHasher;
use super::identity::Identity;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault};
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

/// One shard: keys are already mixed, so they are their own hash.
type ShardMap = HashMap<u64, Cached, BuildHasherDefault<DigestHasher>>;

/// Verified tokens, bounded, until they expire.
pub(crate) struct TokenCache {
    shards: Vec<Mutex<ShardMap>>,
    /// Chosen at random per cache, so the spread of keys cannot be predicted.
    seed: u64,
    per_shard: usize,
}

impl TokenCache {
    pub(crate) fn new(entries: usize) -> TokenCache {
        TokenCache {
            shards: (0..CACHE_SHARDS)
                .map(|_| Mutex::new(ShardMap::default()))
                .collect(),
            seed: RandomState::new().hash_one(0u8),
            per_shard: entries.div_ceil(CACHE_SHARDS),
        }
    }

    /// Keyed by the token's last 16 bytes, the end of its signature: random-looking and
    /// beyond a caller's control (only tokens whose signature was checked are ever stored),
    /// so two words of it mixed with a per-cache secret spread entries as well as a full
    /// hash would, for a fraction of the work. The whole token is compared on a hit.
    fn key(&self, token: &str) -> u64 {
        let bytes = token.as_bytes();
        let mut tail = [0u8; 16];
        let take = bytes.len().min(16);
        tail[16 - take..].copy_from_slice(&bytes[bytes.len() - take..]);
        let (high, low) = tail.split_at(8);
        let word = |half: &[u8]| u64::from_le_bytes(half.try_into().unwrap_or([0; 8]));
        let mixed = (word(high) ^ self.seed).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ word(low).rotate_left(29);
        mixed ^ (mixed >> 32)
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, ShardMap> {
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
