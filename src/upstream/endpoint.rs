//! What the gateway knows about each endpoint of a cluster: active health, passive
//! ejection, load (in-flight requests, peak-EWMA latency) and its counters.
//!
//! On the request path: the balancer reads it to decide which endpoints are usable and
//! which is least loaded; the upstream call updates it (in-flight count, latency, the
//! outcome for outlier detection); the health checker (`health.rs`) writes its verdict
//! here. It is a reload-surviving resource per cluster + endpoint (`resources.rs`), so an
//! endpoint that stays in the config keeps its health, ejection and latency history.
//! Everything is atomics: no lock on the request path.

use crate::upstream::limits::Slot;
use crate::upstream::policy::OutlierDetection;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Milliseconds since the first time anyone asked, a cheap monotonic clock for ejections
/// and slow start (stored in atomics).
pub(crate) fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One endpoint's state.
#[derive(Debug)]
pub(crate) struct EndpointState {
    /// Active health checks' verdict; starts healthy so that a new gateway serves at once.
    healthy: AtomicBool,
    /// Ejected by outlier detection until this `now_ms`; 0 = not ejected.
    ejected_until: AtomicU64,
    /// How many times in a row the ejection back-off has grown.
    ejection_streak: AtomicU32,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    /// Requests sent and not yet answered in full.
    active: AtomicU64,
    /// Peak-EWMA latency in nanoseconds (f64 bits) and when it was last updated (ns).
    ewma_nanos: AtomicU64,
    ewma_stamp: AtomicU64,
    /// `now_ms` when this endpoint joined (for slow start).
    joined_ms: u64,
    pub(crate) counters: EndpointCounters,
}

/// Per-endpoint event counters for `/metrics` and `/clusters`.
#[derive(Debug, Default)]
pub(crate) struct EndpointCounters {
    pub(crate) ejections: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) health_checks_passed: AtomicU64,
    pub(crate) health_checks_failed: AtomicU64,
    pub(crate) requests: AtomicU64,
}

impl Default for EndpointState {
    fn default() -> Self {
        EndpointState {
            healthy: AtomicBool::new(true),
            ejected_until: AtomicU64::new(0),
            ejection_streak: AtomicU32::new(0),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            active: AtomicU64::new(0),
            ewma_nanos: AtomicU64::new(0f64.to_bits()),
            ewma_stamp: AtomicU64::new(0),
            joined_ms: now_ms(),
            counters: EndpointCounters::default(),
        }
    }
}

/// What became of one request sent to an endpoint, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A response whose status is not 5xx.
    Success,
    /// A 5xx response.
    ServerError,
    /// No connection, a reset, or no answer in time.
    GatewayFailure,
}

impl EndpointState {
    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    pub(crate) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Relaxed);
    }

    pub(crate) fn is_ejected(&self, now: u64) -> bool {
        let until = self.ejected_until.load(Relaxed);
        until != 0 && now < until
    }

    /// Usable for new requests: healthy and not ejected.
    pub(crate) fn is_usable(&self, now: u64) -> bool {
        self.is_healthy() && !self.is_ejected(now)
    }

    pub(crate) fn active(&self) -> u64 {
        self.active.load(Relaxed)
    }

    /// Count one request in flight until the returned guard is dropped (`timed`: note when
    /// it was sent, for the latency EWMA).
    pub(crate) fn start_request(self: &Arc<Self>, timed: bool) -> InFlight {
        self.active.fetch_add(1, Relaxed);
        InFlight {
            endpoint: self.clone(),
            slot: None,
            started: timed.then(Instant::now),
        }
    }

    /// The peak-EWMA latency as last recorded, in nanoseconds (0 = no sample yet).
    pub(crate) fn latency(&self) -> f64 {
        f64::from_bits(self.ewma_nanos.load(Relaxed))
    }

    /// The peak-EWMA latency faded by the time since its last sample: an endpoint that was
    /// slow once and has not been picked since is not avoided for ever.
    pub(crate) fn latency_now(&self, decay: Duration) -> f64 {
        let elapsed = clock_nanos().saturating_sub(self.ewma_stamp.load(Relaxed)) as f64;
        self.latency() * (-elapsed / decay.as_nanos().max(1) as f64).exp()
    }

    /// Record one response's latency: a sample above the average replaces it at once (peak),
    /// one below pulls it down by how long ago the last sample was (`decay`).
    pub(crate) fn observe_latency(&self, sample: Duration, decay: Duration) {
        let now = clock_nanos();
        let sample = sample.as_nanos() as f64;
        let last = self.ewma_stamp.swap(now, Relaxed);
        let old = self.latency();
        let elapsed = now.saturating_sub(last) as f64;
        let weight = (-elapsed / decay.as_nanos().max(1) as f64).exp();
        let updated = if old == 0.0 || sample > old * weight {
            sample
        } else {
            old * weight + sample * (1.0 - weight)
        };
        self.ewma_nanos.store(updated.to_bits(), Relaxed);
    }

    /// The share of its weight an endpoint gets while it is in slow start (0.1..=1).
    pub(crate) fn ramp(&self, slow_start: Option<Duration>, now: u64) -> f64 {
        let Some(window) = slow_start else {
            return 1.0;
        };
        let age = now.saturating_sub(self.joined_ms) as f64;
        let window = window.as_millis().max(1) as f64;
        (age / window).clamp(0.1, 1.0)
    }

    /// Record an outcome; true when it should eject this endpoint now.
    pub(crate) fn observe(&self, outcome: Outcome, settings: &OutlierDetection) -> bool {
        match outcome {
            Outcome::Success => {
                self.consecutive_5xx.store(0, Relaxed);
                self.consecutive_gateway.store(0, Relaxed);
                false
            }
            Outcome::ServerError => {
                self.consecutive_gateway.store(0, Relaxed);
                let count = self.consecutive_5xx.fetch_add(1, Relaxed) + 1;
                settings.consecutive_5xx != 0 && count >= settings.consecutive_5xx
            }
            Outcome::GatewayFailure => {
                let count = self.consecutive_gateway.fetch_add(1, Relaxed) + 1;
                settings.consecutive_gateway_failures != 0
                    && count >= settings.consecutive_gateway_failures
            }
        }
    }

    /// Eject for `base × streak` (at most `max`). The streak grows when an endpoint is
    /// ejected again within `max` of its last ejection ending, and starts over otherwise.
    pub(crate) fn eject(&self, settings: &OutlierDetection, now: u64) {
        let previous_end = self.ejected_until.load(Relaxed);
        let max_ms = millis(settings.max_ejection_time);
        let streak = if previous_end != 0 && now < previous_end.saturating_add(max_ms) {
            self.ejection_streak.fetch_add(1, Relaxed) + 1
        } else {
            self.ejection_streak.store(1, Relaxed);
            1
        };
        let duration = millis(settings.base_ejection_time)
            .saturating_mul(u64::from(streak))
            .min(max_ms);
        self.ejected_until.store(now + duration.max(1), Relaxed);
        self.consecutive_5xx.store(0, Relaxed);
        self.consecutive_gateway.store(0, Relaxed);
        self.counters.ejections.fetch_add(1, Relaxed);
    }

    /// Milliseconds of ejection left (0 = not ejected).
    pub(crate) fn ejected_for(&self, now: u64) -> u64 {
        self.ejected_until.load(Relaxed).saturating_sub(now)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn clock_nanos() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One request in flight to an endpoint: counted until dropped (with the response body, once
/// it has been read to its end or abandoned).
#[derive(Debug)]
pub(crate) struct InFlight {
    endpoint: Arc<EndpointState>,
    /// The cluster's active-request slot (circuit breaker), released with it.
    slot: Option<Slot>,
    started: Option<Instant>,
}

impl InFlight {
    pub(crate) fn hold(&mut self, slot: Option<Slot>) {
        self.slot = slot;
    }

    pub(crate) fn started(&self) -> Option<Instant> {
        self.started
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.active.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: 3,
            consecutive_gateway_failures: 2,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(25),
            max_ejection_percent: 50,
        }
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_starts_the_count_over() {
        let state = EndpointState::default();
        let s = settings();
        assert!(!state.observe(Outcome::ServerError, &s));
        assert!(!state.observe(Outcome::ServerError, &s));
        assert!(!state.observe(Outcome::Success, &s));
        assert!(!state.observe(Outcome::ServerError, &s));
        assert!(!state.observe(Outcome::ServerError, &s));
        assert!(state.observe(Outcome::ServerError, &s));
        assert!(!state.observe(Outcome::GatewayFailure, &s));
        assert!(state.observe(Outcome::GatewayFailure, &s));
    }

    #[test]
    fn ejections_grow_and_are_capped() {
        let state = EndpointState::default();
        let s = settings();
        state.eject(&s, 1_000);
        assert!(state.is_ejected(1_000) && !state.is_usable(10_999));
        assert!(!state.is_ejected(11_000));
        state.eject(&s, 12_000);
        assert_eq!(state.ejected_for(12_000), 20_000);
        state.eject(&s, 33_000);
        assert_eq!(
            state.ejected_for(33_000),
            25_000,
            "capped at max_ejection_time"
        );
        // Long after the last ejection ended, the back-off starts over.
        state.eject(&s, 1_000_000);
        assert_eq!(state.ejected_for(1_000_000), 10_000);
        assert_eq!(state.counters.ejections.load(Relaxed), 4);
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let state = EndpointState::default();
        let decay = Duration::from_secs(10);
        state.observe_latency(Duration::from_millis(10), decay);
        assert_eq!(state.latency(), 10e6);
        state.observe_latency(Duration::from_millis(50), decay);
        assert_eq!(state.latency(), 50e6, "a peak is taken at once");
        state.observe_latency(Duration::from_millis(1), decay);
        let after = state.latency();
        assert!(after <= 50e6 && after > 1e6, "{after}");
    }

    #[test]
    fn in_flight_is_counted_until_dropped() {
        let state = Arc::new(EndpointState::default());
        let a = state.start_request(false);
        let b = state.start_request(false);
        assert_eq!(state.active(), 2);
        drop(a);
        drop(b);
        assert_eq!(state.active(), 0);
    }
}
