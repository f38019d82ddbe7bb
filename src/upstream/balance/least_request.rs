//! Least request by the power of two choices: draw a few usable endpoints at random and take
//! the least loaded. Load is the endpoint's in-flight requests (plus one, so an idle endpoint
//! still counts its latency), times its peak-EWMA latency when that is on — a slow endpoint
//! then looks busy before its queue grows. Drawing two instead of scanning all keeps the pick
//! O(1) and avoids every gateway thread herding onto the same least-loaded endpoint.

use super::{Balancer, Candidates};
use std::time::Duration;

#[derive(Debug)]
pub(crate) struct LeastRequest {
    choices: usize,
    /// The EWMA's decay, when latency counts.
    peak_ewma: Option<Duration>,
}

impl LeastRequest {
    pub(crate) fn new(choices: usize, peak_ewma: Option<Duration>) -> LeastRequest {
        LeastRequest { choices, peak_ewma }
    }

    fn load(&self, candidates: &Candidates<'_>, index: usize) -> f64 {
        let state = &candidates.states[index];
        let mut load = (state.active() + 1) as f64;
        if let Some(decay) = self.peak_ewma {
            // No sample yet: as fast as the fastest, so a new endpoint gets tried.
            load *= state.latency_now(decay).max(1.0);
        }
        // In slow start an endpoint looks proportionally busier.
        load * 1000.0 / candidates.effective_weight(index).max(1) as f64
    }
}

impl Balancer for LeastRequest {
    fn pick(&self, candidates: &Candidates<'_>, _key: u64) -> Option<usize> {
        let usable = candidates.usable_count();
        if usable == 0 {
            return None;
        }
        let mut best: Option<(usize, f64)> = None;
        let draws = self.choices.min(usable);
        // Distinct draws: with two endpoints, both are always compared.
        let mut drawn = [usize::MAX; 16];
        for slot in 0..draws {
            let mut n = fastrand::usize(0..usable);
            while drawn[..slot].contains(&n) {
                n = (n + 1) % usable;
            }
            drawn[slot] = n;
            let index = candidates.nth_usable(n)?;
            let load = self.load(candidates, index);
            if best.is_none_or(|(_, least)| load < least) {
                best = Some((index, load));
            }
        }
        best.map(|(index, _)| index)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{spread, states};
    use super::*;

    #[test]
    fn the_less_loaded_of_two_wins() {
        let states = states(2);
        let weights = [1; 2];
        let _busy: Vec<_> = (0..3).map(|_| states[0].start_request(false)).collect();
        let candidates = Candidates::all(&states, &weights);
        let balancer = LeastRequest::new(2, None);
        assert_eq!(spread(&balancer, &candidates, 100, |_| 0), [0, 100]);
    }

    #[test]
    fn idle_endpoints_share_evenly() {
        let states = states(3);
        let weights = [1; 3];
        let candidates = Candidates::all(&states, &weights);
        let counts = spread(&LeastRequest::new(2, None), &candidates, 3000, |_| 0);
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }

    #[test]
    fn with_peak_ewma_a_slow_endpoint_gets_less() {
        let states = states(2);
        let weights = [1; 2];
        let decay = Duration::from_secs(10);
        states[0].observe_latency(Duration::from_millis(100), decay);
        states[1].observe_latency(Duration::from_millis(5), decay);
        let _one_each = (
            states[0].start_request(false),
            states[1].start_request(false),
        );
        let candidates = Candidates::all(&states, &weights);
        assert_eq!(
            spread(&LeastRequest::new(2, Some(decay)), &candidates, 100, |_| 0),
            [0, 100]
        );
        // Without latency, equal in-flight counts share.
        let counts = spread(&LeastRequest::new(2, None), &candidates, 1000, |_| 0);
        assert!(counts[0] > 300 && counts[1] > 300, "{counts:?}");
    }
}
