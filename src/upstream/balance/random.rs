//! Weighted random: each pick draws an endpoint with probability proportional to its weight.
//! No shared state at all, so it costs nothing in contention; the spread is only even on
//! average.

use super::{Balancer, Candidates};

#[derive(Debug, Default)]
pub(crate) struct Random;

impl Balancer for Random {
    fn pick(&self, candidates: &Candidates<'_>, _key: u64) -> Option<usize> {
        let total: u64 = (0..candidates.len())
            .filter(|i| candidates.is_usable(*i))
            .map(|i| candidates.effective_weight(i))
            .sum();
        if total == 0 {
            return None;
        }
        let mut draw = fastrand::u64(0..total);
        for index in 0..candidates.len() {
            if !candidates.is_usable(index) {
                continue;
            }
            let weight = candidates.effective_weight(index);
            if draw < weight {
                return Some(index);
            }
            draw -= weight;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{spread, states};
    use super::*;

    #[test]
    fn picks_follow_the_weights() {
        let states = states(3);
        let weights = [1, 1, 2];
        let candidates = Candidates::all(&states, &weights);
        let counts = spread(&Random, &candidates, 4000, |_| 0);
        // Expected 1000, 1000, 2000; six standard deviations of slack.
        assert!((800..1200).contains(&counts[0]), "{counts:?}");
        assert!((800..1200).contains(&counts[1]), "{counts:?}");
        assert!((1800..2200).contains(&counts[2]), "{counts:?}");
    }
}
