//! Endpoint selection: which endpoint of a cluster a request goes to, and where it fails over.
//!
//! On the request path: the upstream service asks its cluster's [`Balancer`] for an order of
//! endpoints once per request ([`Balancer::order`]): the pick first, then the endpoints to fail
//! over to when a connection cannot be opened (the request has not left the gateway then, so
//! trying the next endpoint is always safe). Each algorithm is a small type behind the one
//! trait; [`Selection`] holds the one a cluster was configured with, so the call is static.

mod round_robin;

pub(crate) use round_robin::RoundRobin;

/// An algorithm that orders a cluster's endpoints for one request.
pub(crate) trait Balancer {
    /// The order in which to try the cluster's `endpoints` endpoints (indexes), pick first.
    fn order(&self, endpoints: usize) -> Failover;
}

/// The endpoints of a cluster in the order one request tries them: each exactly once,
/// starting with the pick.
#[derive(Debug, Clone)]
pub(crate) struct Failover {
    start: usize,
    count: usize,
    next: usize,
}

impl Failover {
    /// `count` endpoints, starting at `start` and wrapping around.
    pub(crate) fn starting_at(start: usize, count: usize) -> Failover {
        Failover {
            start: if count == 0 { 0 } else { start % count },
            count,
            next: 0,
        }
    }
}

impl Iterator for Failover {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.next >= self.count {
            return None;
        }
        let index = (self.start + self.next) % self.count;
        self.next += 1;
        Some(index)
    }
}

/// The algorithm a cluster uses.
pub(crate) enum Selection {
    RoundRobin(RoundRobin),
}

impl Balancer for Selection {
    fn order(&self, endpoints: usize) -> Failover {
        match self {
            Selection::RoundRobin(algorithm) => algorithm.order(endpoints),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_visits_every_endpoint_once_from_the_pick() {
        let order: Vec<usize> = Failover::starting_at(5, 3).collect();
        assert_eq!(order, [2, 0, 1]);
        assert_eq!(Failover::starting_at(7, 0).count(), 0);
    }
}
