//! Round robin: each request starts one endpoint further than the one before.

use super::{Balancer, Failover};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

#[derive(Debug, Default)]
pub(crate) struct RoundRobin {
    next: AtomicUsize,
}

impl Balancer for RoundRobin {
    fn order(&self, endpoints: usize) -> Failover {
        Failover::starting_at(self.next.fetch_add(1, Relaxed), endpoints)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_take_turns_and_fail_over_to_the_rest() {
        let balancer = RoundRobin::default();
        let picks: Vec<Vec<usize>> = (0..4).map(|_| balancer.order(3).collect()).collect();
        assert_eq!(picks, [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]);
    }
}
