//! Cheap randomness for the request path: percentages of requests (fault injection,
//! mirroring) and weighted picks (traffic split).
//!
//! A xorshift64* generator per thread, seeded once from the standard library's random hash
//! keys: no system call and no lock per request, and no dependency. Not for anything
//! secret — only to spread requests.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x9e37_79b9_7f4a_7c15);
    // xorshift must not start at zero.
    hasher.finish() | 1
}

/// A uniformly distributed number in `0..bound` (`bound` > 0; 0 gives 0).
pub(crate) fn below(bound: u64) -> u64 {
    if bound == 0 {
        return 0;
    }
    let next = STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    });
    // Multiply-shift: unbiased enough for spreading requests, and no division.
    ((u128::from(next) * u128::from(bound)) >> 64) as u64
}

/// A share of requests, in parts per million (`100%` = 1,000,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Share(u32);

impl Share {
    #[cfg(test)]
    pub(crate) const ALL: Share = Share(1_000_000);

    /// `percent` in `0.0..=100.0`, to a millionth.
    pub(crate) fn from_percent(percent: f64) -> Option<Share> {
        (0.0..=100.0)
            .contains(&percent)
            .then(|| Share((percent * 10_000.0).round() as u32))
    }

    /// Whether this request is in the share.
    pub(crate) fn hit(self) -> bool {
        self.0 >= 1_000_000 || (self.0 > 0 && below(1_000_000) < u64::from(self.0))
    }

    pub(crate) fn percent(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_stay_below_their_bound_and_spread() {
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let n = below(10);
            assert!(n < 10);
            seen[n as usize] += 1;
        }
        // 1,000 expected in each; 5 standard deviations (about 150) either way.
        assert!(seen.iter().all(|&c| (850..=1150).contains(&c)), "{seen:?}");
    }

    #[test]
    fn shares_are_percentages() {
        assert_eq!(Share::from_percent(12.5), Some(Share(125_000)));
        assert!(Share::from_percent(100.5).is_none());
        assert!(Share::from_percent(-1.0).is_none());
        assert!(!Share::from_percent(0.0).expect("0").hit());
        assert!(Share::ALL.hit());
    }
}
