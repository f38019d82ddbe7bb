//! Round robin: each request starts one usable endpoint further than the one before.

use super::{Balancer, Candidates};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

#[derive(Debug, Default)]
pub(crate) struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// The next turn, whatever the endpoints' state (for clusters that filter none).
    pub(crate) fn next_turn(&self) -> usize {
        self.next.fetch_add(1, Relaxed)
    }
}

impl Balancer for RoundRobin {
    fn pick(&self, candidates: &Candidates<'_>, _key: u64) -> Option<usize> {
        let usable = candidates.usable_count();
        if usable == 0 {
            return None;
        }
        candidates.nth_usable(self.next.fetch_add(1, Relaxed) % usable)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{spread, states};
    use super::*;

    #[test]
    fn picks_take_turns() {
        let balancer = RoundRobin::default();
        let states = states(3);
        let weights = [1; 3];
        let candidates = Candidates::all(&states, &weights);
        let picks: Vec<usize> = (0..4)
            .map(|_| balancer.pick(&candidates, 0).expect("pick"))
            .collect();
        assert_eq!(picks, [0, 1, 2, 0]);
        assert_eq!(spread(&balancer, &candidates, 300, |_| 0), [100, 100, 100]);
    }
}
