//! A cluster's limits: the circuit breaker (connections, pending and active requests,
//! concurrent retries) and the retry budget.
//!
//! On the request path: the upstream call takes an active-request slot before it picks an
//! endpoint, the pool a pending slot while it dials and a connection slot for every open
//! connection, and the retry layer a retry slot and a budget token before it tries again.
//! A limit that is reached is never waited on: the request fails at once with 503
//! `upstream_overflow` (or, for a retry, the last answer stands), so overload cannot build
//! a queue. One [`ClusterLimits`] per cluster name, carried across reloads (its counts
//! describe connections and requests that outlive a runtime); counting a limit that is not
//! configured is skipped, except open connections, which are counted per connection, not per
//! request.

use crate::upstream::endpoint::now_ms;
use crate::upstream::policy::RetryBudget;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Which limit overflowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    Connections,
    PendingRequests,
    Requests,
    Retries,
}

impl Limit {
    pub(crate) const ALL: [Limit; 4] = [
        Limit::Connections,
        Limit::PendingRequests,
        Limit::Requests,
        Limit::Retries,
    ];

    pub(crate) fn key(self) -> &'static str {
        match self {
            Limit::Connections => "max_connections",
            Limit::PendingRequests => "max_pending_requests",
            Limit::Requests => "max_requests",
            Limit::Retries => "max_retries",
        }
    }
}

/// The counts behind one cluster's limits.
#[derive(Debug, Default)]
pub(crate) struct ClusterLimits {
    connections: AtomicU64,
    pending: AtomicU64,
    active: AtomicU64,
    retries: AtomicU64,
    overflows: [AtomicU64; 4],
    /// The retry budget's window: when it started (`now_ms`), requests and retries in it.
    window_start: AtomicU64,
    window_requests: AtomicU64,
    window_retries: AtomicU64,
    /// Retries refused by the budget.
    pub(crate) budget_exhausted: AtomicU64,
}

/// A taken slot of one count, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    limits: Arc<ClusterLimits>,
    limit: Limit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.count(self.limit).fetch_sub(1, Relaxed);
    }
}

impl ClusterLimits {
    fn count(&self, limit: Limit) -> &AtomicU64 {
        match limit {
            Limit::Connections => &self.connections,
            Limit::PendingRequests => &self.pending,
            Limit::Requests => &self.active,
            Limit::Retries => &self.retries,
        }
    }

    /// Take a slot of `limit` if fewer than `max` are taken; `None` counts an overflow.
    /// With no `max`, a slot is taken only for `Connections` (always counted).
    pub(crate) fn take(
        self: &Arc<Self>,
        limit: Limit,
        max: Option<u64>,
    ) -> Result<Option<Slot>, Limit> {
        if max.is_none() && limit != Limit::Connections {
            return Ok(None);
        }
        let taken = self.count(limit).fetch_add(1, Relaxed);
        if max.is_some_and(|max| taken >= max) {
            self.count(limit).fetch_sub(1, Relaxed);
            self.overflows[limit as usize].fetch_add(1, Relaxed);
            return Err(limit);
        }
        Ok(Some(Slot {
            limits: self.clone(),
            limit,
        }))
    }

    pub(crate) fn current(&self, limit: Limit) -> u64 {
        self.count(limit).load(Relaxed)
    }

    pub(crate) fn overflows(&self, limit: Limit) -> u64 {
        self.overflows[limit as usize].load(Relaxed)
    }

    /// Count one request that may be retried (the budget's base).
    pub(crate) fn note_request(&self, budget: &RetryBudget) {
        self.roll_window(budget);
        self.window_requests.fetch_add(1, Relaxed);
    }

    /// Spend a retry from the budget: at most `min_retries` plus `percent` of the
    /// requests of the current window.
    pub(crate) fn try_budget(&self, budget: &RetryBudget) -> bool {
        self.roll_window(budget);
        let requests = self.window_requests.load(Relaxed);
        let allowed = u64::from(budget.min_retries) + requests * u64::from(budget.percent) / 100;
        let spent = self.window_retries.fetch_add(1, Relaxed);
        if spent >= allowed {
            self.window_retries.fetch_sub(1, Relaxed);
            self.budget_exhausted.fetch_add(1, Relaxed);
            return false;
        }
        true
    }

    fn roll_window(&self, budget: &RetryBudget) {
        let now = now_ms();
        let start = self.window_start.load(Relaxed);
        let window = u64::try_from(budget.window.as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(start) >= window
            && self
                .window_start
                .compare_exchange(start, now, Relaxed, Relaxed)
                .is_ok()
        {
            self.window_requests.store(0, Relaxed);
            self.window_retries.store(0, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_full_limit_refuses_at_once_and_a_dropped_slot_frees_it() {
        let limits = Arc::new(ClusterLimits::default());
        let first = limits.take(Limit::Requests, Some(2)).expect("free");
        let _second = limits.take(Limit::Requests, Some(2)).expect("free");
        assert_eq!(
            limits.take(Limit::Requests, Some(2)).err(),
            Some(Limit::Requests)
        );
        assert_eq!(limits.overflows(Limit::Requests), 1);
        drop(first);
        assert!(limits.take(Limit::Requests, Some(2)).is_ok());
        // Unlimited: nothing is counted (except connections).
        assert!(limits.take(Limit::Requests, None).expect("free").is_none());
        assert!(limits
            .take(Limit::Connections, None)
            .expect("free")
            .is_some());
    }

    #[test]
    fn the_budget_allows_a_floor_plus_a_share_of_requests() {
        let limits = ClusterLimits::default();
        let budget = RetryBudget {
            percent: 20,
            min_retries: 2,
            window: Duration::from_secs(3600),
        };
        for _ in 0..50 {
            limits.note_request(&budget);
        }
        let allowed = (0..100).filter(|_| limits.try_budget(&budget)).count();
        assert_eq!(allowed, 2 + 10);
        assert_eq!(limits.budget_exhausted.load(Relaxed), 88);
    }
}
