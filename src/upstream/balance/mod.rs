//! Endpoint selection: which endpoint of a cluster a request goes to, and where it fails over.
//!
//! On the request path: the upstream service asks its cluster's [`Balancer`] for a pick once
//! per request ([`Balancer::pick`]), among the endpoints that are usable now
//! ([`Candidates`]: all of them, or those that pass health checks and are not ejected), and
//! walks a [`Failover`] order from there: the pick first, then the other usable endpoints,
//! for when a connection cannot be opened (the request has not left the gateway then, so
//! trying the next endpoint is always safe). A retry names the endpoints it already tried,
//! and they come last. Each algorithm is a small type behind the one trait; [`Selection`]
//! holds the one a cluster was configured with, so the call is static.

mod hash;
mod least_request;
mod random;
mod round_robin;
mod weighted;

pub(crate) use hash::{request_key, ConsistentHash};
pub(crate) use least_request::LeastRequest;
pub(crate) use random::Random;
pub(crate) use round_robin::RoundRobin;
pub(crate) use weighted::WeightedRoundRobin;

use crate::upstream::endpoint::EndpointState;
use crate::upstream::policy::{BalancingPolicy, ClusterPolicy};
use std::sync::Arc;

/// An algorithm that picks one of a cluster's endpoints for a request.
pub(crate) trait Balancer {
    /// The index of the endpoint to try first, among the usable `candidates`; `key` is the
    /// request's hash for the algorithms that hash (0 otherwise). `None` only when no
    /// endpoint is usable.
    fn pick(&self, candidates: &Candidates<'_>, key: u64) -> Option<usize>;
}

/// The endpoints a request may go to now.
#[derive(Clone, Copy)]
pub(crate) struct Candidates<'a> {
    pub(crate) states: &'a [Arc<EndpointState>],
    pub(crate) weights: &'a [u32],
    /// `Some(now_ms)` when unhealthy and ejected endpoints are skipped; `None` = all usable.
    filter: Option<u64>,
    /// `now_ms`, for slow start; 0 when the cluster has none.
    pub(crate) now: u64,
    pub(crate) slow_start: Option<std::time::Duration>,
}

impl<'a> Candidates<'a> {
    /// Every endpoint, unfiltered.
    pub(crate) fn all(states: &'a [Arc<EndpointState>], weights: &'a [u32]) -> Candidates<'a> {
        Candidates {
            states,
            weights,
            filter: None,
            now: 0,
            slow_start: None,
        }
    }

    /// The usable endpoints under `policy`: those healthy and not ejected, unless fewer than
    /// `panic_threshold` percent are — then all of them, since an overloaded endpoint is
    /// better than none (the panic mode).
    pub(crate) fn usable(
        states: &'a [Arc<EndpointState>],
        weights: &'a [u32],
        policy: &ClusterPolicy,
    ) -> Candidates<'a> {
        let now = crate::upstream::endpoint::now_ms();
        let mut candidates = Candidates {
            states,
            weights,
            filter: None,
            now,
            slow_start: policy.slow_start,
        };
        if policy.filters_endpoints() {
            let usable = states.iter().filter(|s| s.is_usable(now)).count();
            let panic = usable * 100 < states.len() * policy.panic_threshold as usize;
            if !panic {
                candidates.filter = Some(now);
            }
        }
        candidates
    }

    pub(crate) fn len(&self) -> usize {
        self.states.len()
    }

    pub(crate) fn is_usable(&self, index: usize) -> bool {
        match self.filter {
            None => index < self.states.len(),
            Some(now) => self.states.get(index).is_some_and(|s| s.is_usable(now)),
        }
    }

    pub(crate) fn usable_count(&self) -> usize {
        match self.filter {
            None => self.states.len(),
            Some(_) => (0..self.len()).filter(|i| self.is_usable(*i)).count(),
        }
    }

    /// The `n`th usable endpoint (`n < usable_count()`).
    pub(crate) fn nth_usable(&self, n: usize) -> Option<usize> {
        match self.filter {
            None => (n < self.states.len()).then_some(n),
            Some(_) => (0..self.len()).filter(|i| self.is_usable(*i)).nth(n),
        }
    }

    /// An endpoint's weight scaled by its slow-start ramp, in thousandths.
    pub(crate) fn effective_weight(&self, index: usize) -> u64 {
        let weight = u64::from(self.weights.get(index).copied().unwrap_or(1)) * 1000;
        match self.slow_start {
            None => weight,
            Some(_) => {
                let ramp = self.states[index].ramp(self.slow_start, self.now);
                ((weight as f64) * ramp).max(1.0) as u64
            }
        }
    }
}

/// The endpoints of a cluster in the order one request tries them: the pick, then every
/// other usable endpoint once, wrapping around; endpoints in `avoid` (tried by an earlier
/// attempt of the same request) only after all the others.
#[derive(Clone)]
pub(crate) struct Failover<'a> {
    /// The endpoints' states and `now_ms` when unusable ones are skipped; `None` = all
    /// usable (kept small: the order lives in every upstream call's future).
    filter: Option<(&'a [Arc<EndpointState>], u64)>,
    count: usize,
    start: usize,
    next: usize,
    /// Bit `i` set: endpoint `i` was tried before (endpoints past 64 are not remembered).
    avoid: u64,
    /// 0: the endpoints not avoided; 1: the avoided ones.
    pass: u8,
}

impl<'a> Failover<'a> {
    pub(crate) fn new(candidates: Candidates<'a>, pick: Option<usize>, avoid: u64) -> Failover<'a> {
        let count = candidates.len();
        Failover {
            start: pick.map_or(0, |p| if count == 0 { 0 } else { p % count }),
            next: if pick.is_some() { 0 } else { count },
            filter: candidates.filter.map(|now| (candidates.states, now)),
            count,
            avoid,
            pass: if pick.is_some() { 0 } else { 1 },
        }
    }

    /// Every endpoint of `count`, from `start` on (a plain round-robin cluster's order).
    pub(crate) fn starting_at(start: usize, count: usize) -> Failover<'static> {
        Failover {
            filter: None,
            count,
            start: if count == 0 { 0 } else { start % count },
            next: 0,
            avoid: 0,
            pass: 0,
        }
    }

    fn avoided(&self, index: usize) -> bool {
        index < 64 && self.avoid & (1 << index) != 0
    }

    fn is_usable(&self, index: usize) -> bool {
        match self.filter {
            None => true,
            Some((states, now)) => states.get(index).is_some_and(|s| s.is_usable(now)),
        }
    }
}

impl Iterator for Failover<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let count = self.count;
        loop {
            if self.next >= count {
                if self.pass == 0 && self.avoid != 0 {
                    self.pass = 1;
                    self.next = 0;
                    continue;
                }
                return None;
            }
            let index = (self.start + self.next) % count;
            self.next += 1;
            if !self.is_usable(index) {
                continue;
            }
            let avoided = self.avoided(index);
            if (self.pass == 0) != avoided {
                return Some(index);
            }
        }
    }
}

/// The algorithm a cluster uses.
pub(crate) enum Selection {
    RoundRobin(RoundRobin),
    Weighted(WeightedRoundRobin),
    Random(Random),
    LeastRequest(LeastRequest),
    Hash(ConsistentHash),
}

impl Selection {
    /// The algorithm for `policy` over endpoints labelled `labels` (`host:port`, which the
    /// hash tables are built from so that they do not depend on the endpoints' order).
    pub(crate) fn new(policy: &ClusterPolicy, labels: &[String]) -> Selection {
        match &policy.balancing {
            BalancingPolicy::RoundRobin => Selection::RoundRobin(RoundRobin::default()),
            BalancingPolicy::WeightedRoundRobin => {
                Selection::Weighted(WeightedRoundRobin::new(labels.len()))
            }
            BalancingPolicy::Random => Selection::Random(Random),
            BalancingPolicy::LeastRequest { choices, peak_ewma } => {
                Selection::LeastRequest(LeastRequest::new(*choices, *peak_ewma))
            }
            BalancingPolicy::ConsistentHash { table, .. } => {
                Selection::Hash(ConsistentHash::new(*table, labels, &policy.weights))
            }
        }
    }
}

impl Selection {
    /// The round-robin algorithm, when that is the cluster's.
    pub(crate) fn round_robin(&self) -> Option<&RoundRobin> {
        match self {
            Selection::RoundRobin(algorithm) => Some(algorithm),
            _ => None,
        }
    }
}

impl Balancer for Selection {
    fn pick(&self, candidates: &Candidates<'_>, key: u64) -> Option<usize> {
        match self {
            Selection::RoundRobin(algorithm) => algorithm.pick(candidates, key),
            Selection::Weighted(algorithm) => algorithm.pick(candidates, key),
            Selection::Random(algorithm) => algorithm.pick(candidates, key),
            Selection::LeastRequest(algorithm) => algorithm.pick(candidates, key),
            Selection::Hash(algorithm) => algorithm.pick(candidates, key),
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub(crate) fn states(n: usize) -> Vec<Arc<EndpointState>> {
        (0..n).map(|_| Arc::new(EndpointState::default())).collect()
    }

    /// How many of `picks` picks each endpoint got.
    pub(crate) fn spread(
        balancer: &impl Balancer,
        candidates: &Candidates<'_>,
        picks: usize,
        mut key: impl FnMut(usize) -> u64,
    ) -> Vec<usize> {
        let mut counts = vec![0; candidates.len()];
        for i in 0..picks {
            let index = balancer.pick(candidates, key(i)).expect("a pick");
            counts[index] += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::states;
    use super::*;

    #[test]
    fn failover_visits_every_endpoint_once_from_the_pick() {
        let states = states(3);
        let weights = [1; 3];
        let order: Vec<usize> =
            Failover::new(Candidates::all(&states, &weights), Some(2), 0).collect();
        assert_eq!(order, [2, 0, 1]);
        let none: [Arc<EndpointState>; 0] = [];
        assert_eq!(
            Failover::new(Candidates::all(&none, &[]), Some(7), 0).count(),
            0
        );
    }

    #[test]
    fn failover_skips_unusable_endpoints_and_puts_tried_ones_last() {
        let states = states(4);
        let weights = [1; 4];
        states[1].set_healthy(false);
        let policy = crate::upstream::policy::tests_support::policy_with_health(0);
        let candidates = Candidates::usable(&states, &weights, &policy);
        let order: Vec<usize> = Failover::new(candidates, Some(0), 0b0001).collect();
        assert_eq!(order, [2, 3, 0]);
    }

    #[test]
    fn below_the_panic_threshold_every_endpoint_is_used() {
        let states = states(4);
        let weights = [1; 4];
        for state in &states[..3] {
            state.set_healthy(false);
        }
        let strict = crate::upstream::policy::tests_support::policy_with_health(0);
        let candidates = Candidates::usable(&states, &weights, &strict);
        assert_eq!(candidates.usable_count(), 1);
        let panicky = crate::upstream::policy::tests_support::policy_with_health(50);
        let candidates = Candidates::usable(&states, &weights, &panicky);
        assert_eq!(candidates.usable_count(), 4, "1 of 4 usable is below 50 %");
    }
}
