//! Smooth weighted round robin: over a cycle every endpoint gets its weight's share, and the
//! picks of a heavy endpoint are spread through the cycle rather than bunched (weights
//! 5, 1, 1 pick a a b a c a a, not a a a a a b c).

use super::{Balancer, Candidates};
use std::sync::{Mutex, PoisonError};

#[derive(Debug)]
pub(crate) struct WeightedRoundRobin {
    /// Each endpoint's running credit.
    current: Mutex<Vec<i64>>,
}

impl WeightedRoundRobin {
    pub(crate) fn new(endpoints: usize) -> WeightedRoundRobin {
        WeightedRoundRobin {
            current: Mutex::new(vec![0; endpoints]),
        }
    }
}

impl Balancer for WeightedRoundRobin {
    fn pick(&self, candidates: &Candidates<'_>, _key: u64) -> Option<usize> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current.resize(candidates.len(), 0);
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for index in 0..candidates.len() {
            if !candidates.is_usable(index) {
                continue;
            }
            let weight = i64::try_from(candidates.effective_weight(index)).unwrap_or(i64::MAX);
            current[index] = current[index].saturating_add(weight);
            total = total.saturating_add(weight);
            if best.is_none_or(|b| current[index] > current[b]) {
                best = Some(index);
            }
        }
        let best = best?;
        current[best] -= total;
        Some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{spread, states};
    use super::*;

    #[test]
    fn each_endpoint_gets_its_weight_and_picks_interleave() {
        let states = states(3);
        let weights = [5, 1, 1];
        let candidates = Candidates::all(&states, &weights);
        let balancer = WeightedRoundRobin::new(3);
        let cycle: Vec<usize> = (0..7)
            .map(|_| balancer.pick(&candidates, 0).expect("pick"))
            .collect();
        assert_eq!(cycle, [0, 0, 1, 0, 2, 0, 0]);
        let weights = [1, 2, 3];
        let candidates = Candidates::all(&states, &weights);
        assert_eq!(
            spread(&WeightedRoundRobin::new(3), &candidates, 600, |_| 0),
            [100, 200, 300]
        );
    }

    #[test]
    fn an_endpoint_in_slow_start_gets_a_growing_share() {
        let states = states(2);
        let weights = [1, 1];
        let window = std::time::Duration::from_secs(100);
        let mut candidates = Candidates::all(&states, &weights);
        candidates.slow_start = Some(window);
        // Both joined at about the same moment: 10 % of the window in, each ramps at 0.1.
        let joined = crate::upstream::endpoint::now_ms();
        candidates.now = joined + 10_000;
        assert_eq!(candidates.effective_weight(0), 100);
        // Long after, the ramp is over.
        candidates.now = joined + 200_000;
        assert_eq!(candidates.effective_weight(0), 1000);
        // A newcomer next to an old endpoint: a tenth of the old one's share at first.
        let old = &states[0];
        let newcomer = std::sync::Arc::new(crate::upstream::endpoint::EndpointState::default());
        assert!(newcomer.ramp(Some(window), joined) <= 0.11);
        assert_eq!(old.ramp(Some(window), joined + 100_000), 1.0);
        let picks = spread(&WeightedRoundRobin::new(2), &candidates, 100, |_| 0);
        assert_eq!(picks, [50, 50]);
    }
}
