//! The local backend: governor's GCRA limiters over a key store of our own that holds at most
//! a declared number of keys, and calendar quotas over the same kind of store.
//!
//! On the request path, in the rate-limit layer: one decision is one lock of one shard per
//! limit, a hash lookup and a few arithmetic operations. State lives in the process; it is a
//! runtime resource, kept across reloads while the limits that own it are unchanged.
//!
//! Memory is bounded, and never by forgetting a client that is being limited. A key whose
//! state is *idle* — a rate's bucket full again, or a quota's window over — is
//! indistinguishable from a key never seen, so dropping it is exact; such keys are evicted
//! (and counted) when a shard is full. If a shard is full of keys that are not idle (a flood
//! of distinct keys), a new key is not given a fresh bucket: every such key of the shard
//! shares one overflow bucket with the same limit (counted too), so a flood of made-up keys
//! gets no more than one key's allowance and the clients already tracked keep their state.
//!
//! Several limits apply in order (shorter windows first) and a request stops at the first
//! that refuses it: a request refused for its rate spends nothing of a daily or monthly
//! quota. (A request refused by a longer limit has still spent its share of the shorter ones
//! before it — the local backend does not undo; the Redis backend decides all limits at once.)

use super::limits::{CalendarUnit, Limit, LimitKind};
use crate::metrics::{Metrics, RATE_LIMIT_KEYS};
use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A store never sweeps a shard more often than this (clock time): a flood of new keys into
/// a shard full of active ones must not cost a scan each.
const SWEEP_GAP: Duration = Duration::from_millis(100);
/// A rate's key is idle this long after its bucket is full again. The store's clock reading
/// starts a moment before its limiter's, so without the margin a key could be dropped a few
/// nanoseconds early.
const IDLE_MARGIN: Duration = Duration::from_millis(1);

/// The time limiters read: the process's monotonic clock, or (tests) a clock that moves only
/// when told to.
#[derive(Clone, Debug, Default)]
pub(crate) enum LimiterClock {
    #[default]
    System,
    #[cfg(test)]
    Manual(Arc<ManualClock>),
}

/// A clock for tests: `now` is what it was set to; wall time is `unix_base` plus that.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct ManualClock {
    nanos: AtomicU64,
    unix_base: u64,
}

#[cfg(test)]
impl ManualClock {
    pub(crate) fn new(unix_base: u64) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            nanos: AtomicU64::new(0),
            unix_base,
        })
    }

    pub(crate) fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::SeqCst);
    }
}

static ANCHOR: OnceLock<Instant> = OnceLock::new();

impl Clock for LimiterClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        match self {
            LimiterClock::System => ANCHOR.get_or_init(Instant::now).elapsed(),
            #[cfg(test)]
            LimiterClock::Manual(clock) => Duration::from_nanos(clock.nanos.load(Ordering::SeqCst)),
        }
    }
}

impl LimiterClock {
    /// Wall time, for calendar windows.
    pub(crate) fn unix_seconds(&self) -> u64 {
        match self {
            LimiterClock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_secs()),
            #[cfg(test)]
            LimiterClock::Manual(clock) => clock.unix_base + self.now().as_secs(),
        }
    }
}

/// Keys reach the store already hashed (with the limiter's random seed): no second hash.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// When a stored value no longer matters.
#[derive(Debug)]
enum IdleRule {
    /// The value is a GCRA theoretical arrival time (governor's, from its limiter's start):
    /// idle once it has passed.
    ArrivalTime {
        clock: LimiterClock,
        start: Duration,
    },
    /// The value is a window index and a count: idle once the window is over.
    Window {
        clock: LimiterClock,
        unit: CalendarUnit,
    },
}

impl IdleRule {
    /// A test for idleness now.
    fn idle_now(&self) -> (Duration, Box<dyn Fn(u64) -> bool + '_>) {
        match self {
            IdleRule::ArrivalTime { clock, start } => {
                let now = clock.now();
                let since_start =
                    u64::try_from(now.saturating_sub(*start).as_nanos()).unwrap_or(u64::MAX);
                let margin = IDLE_MARGIN.as_nanos() as u64;
                (
                    now,
                    Box::new(move |tat| tat.saturating_add(margin) <= since_start),
                )
            }
            IdleRule::Window { clock, unit } => {
                let current = unit.window(clock.unix_seconds()).index;
                (clock.now(), Box::new(move |value| value >> 32 != current))
            }
        }
    }
}

struct Shard {
    map: HashMap<u64, u64, BuildHasherDefault<PreHashed>>,
    /// The state every new key shares while the shard is full of active keys.
    overflow: Option<u64>,
    last_sweep: Option<Duration>,
}

/// A bounded map from hashed keys to one `u64` of state each.
pub(crate) struct KeyStore {
    /// Shared only with tests, which count a rate limiter's keys (governor owns the store).
    shards: Arc<[Mutex<Shard>]>,
    per_shard: usize,
    idle: IdleRule,
    evicted: Arc<AtomicU64>,
    overflowed: Arc<AtomicU64>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("shards", &self.shards.len())
            .field("per_shard", &self.per_shard)
            .finish()
    }
}

/// Counters of a store's evictions and overflows, by policy.
#[derive(Clone)]
pub(crate) struct StoreCounters {
    pub(crate) evicted: Arc<AtomicU64>,
    pub(crate) overflowed: Arc<AtomicU64>,
}

impl StoreCounters {
    pub(crate) fn new(metrics: &Metrics, scope: &str, limit: &str) -> StoreCounters {
        let counter = |event: &str| {
            metrics.counter(
                &RATE_LIMIT_KEYS,
                &[("scope", scope), ("policy", limit), ("event", event)],
            )
        };
        StoreCounters {
            evicted: counter("evicted"),
            overflowed: counter("overflow"),
        }
    }

    #[cfg(test)]
    pub(crate) fn detached() -> StoreCounters {
        StoreCounters {
            evicted: Arc::default(),
            overflowed: Arc::default(),
        }
    }
}

/// How many keys `shards` hold.
#[cfg(test)]
fn count_keys(shards: &[Mutex<Shard>]) -> usize {
    shards
        .iter()
        .map(|shard| {
            shard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .map
                .len()
        })
        .sum()
}

impl KeyStore {
    fn new(max_keys: usize, idle: IdleRule, counters: &StoreCounters) -> KeyStore {
        // Enough shards that concurrent requests seldom meet on one lock; one for small stores
        // so that their bound is exact.
        let shards = (max_keys / 4096).clamp(1, 64).next_power_of_two().min(64);
        let per_shard = max_keys.div_ceil(shards).max(1);
        KeyStore {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::default(),
                        overflow: None,
                        last_sweep: None,
                    })
                })
                .collect(),
            per_shard,
            idle,
            evicted: counters.evicted.clone(),
            overflowed: counters.overflowed.clone(),
        }
    }

    /// How many keys the store holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        count_keys(&self.shards)
    }

    /// Update the state of `key` with `f`, which sees the old state (`None`: fresh) and gives
    /// the new one, or refuses (then nothing changes).
    fn update<T, E>(
        &self,
        key: u64,
        f: impl Fn(Option<u64>) -> Result<(T, u64), E>,
    ) -> Result<T, E> {
        let index = (key >> 58) as usize % self.shards.len();
        let mut shard = self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(value) = shard.map.get_mut(&key) {
            let (out, new) = f(Some(*value))?;
            *value = new;
            return Ok(out);
        }
        if shard.map.len() >= self.per_shard {
            self.sweep(&mut shard);
        }
        if shard.map.len() < self.per_shard {
            let (out, new) = f(None)?;
            shard.map.insert(key, new);
            return Ok(out);
        }
        self.overflowed.fetch_add(1, Ordering::Relaxed);
        let (out, new) = f(shard.overflow)?;
        shard.overflow = Some(new);
        Ok(out)
    }

    /// Drop the shard's idle keys, unless it was swept a moment ago.
    fn sweep(&self, shard: &mut Shard) {
        let (now, idle) = self.idle.idle_now();
        if shard
            .last_sweep
            .is_some_and(|last| now.saturating_sub(last) < SWEEP_GAP)
        {
            return;
        }
        shard.last_sweep = Some(now);
        let before = shard.map.len();
        shard.map.retain(|_, value| !idle(*value));
        if shard.overflow.is_some_and(&idle) {
            shard.overflow = None;
        }
        let evicted = before - shard.map.len();
        self.evicted.fetch_add(evicted as u64, Ordering::Relaxed);
    }
}

impl StateStore for KeyStore {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.update(*key, |old| {
            f(old.map(Nanos::from)).map(|(out, new)| (out, new.as_u64()))
        })
    }
}

type Gcra = RateLimiter<u64, KeyStore, LimiterClock, StateInformationMiddleware>;

/// Where one limit stands for one key after a decision.
#[derive(Debug, Clone)]
pub(crate) struct Reading {
    pub(crate) limit: Arc<Limit>,
    /// Requests still allowed now.
    pub(crate) remaining: u64,
    /// Until the limit is back to its full allowance (rates), or its window ends (quotas);
    /// for the limit that refused, until the next request is allowed.
    pub(crate) reset: Duration,
    /// This limit refused the request.
    pub(crate) refused: bool,
}

/// One decision over a set of limits.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    /// `Some(wait)`: refused; the next request may be allowed after `wait`.
    pub(crate) refused: Option<Duration>,
    /// The limits decided, in order (a refusal ends the list).
    pub(crate) readings: Vec<Reading>,
}

impl Verdict {
    /// Another set of limits' verdict for the same request: refused if either refused.
    pub(crate) fn merge(&mut self, other: Verdict) {
        if let Some(wait) = other.refused {
            self.refused = Some(self.refused.map_or(wait, |mine| mine.max(wait)));
        }
        self.readings.extend(other.readings);
    }
}

enum Check {
    Rate {
        limit: Arc<Limit>,
        gcra: Box<Gcra>,
        /// The shards of the store `gcra` owns, to count its keys.
        #[cfg(test)]
        shards: Arc<[Mutex<Shard>]>,
    },
    Quota {
        limit: Arc<Limit>,
        quota: u64,
        unit: CalendarUnit,
        store: KeyStore,
    },
}

/// A set of limits on the local backend.
pub(crate) struct LocalLimiter {
    limits: Vec<Arc<Limit>>,
    checks: Vec<Check>,
    clock: LimiterClock,
    seed: std::hash::RandomState,
}

impl std::fmt::Debug for LocalLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLimiter")
            .field("limits", &self.checks.len())
            .finish()
    }
}

impl LocalLimiter {
    /// Limiters for `limits`, each holding at most `max_keys` keys; `counters(limit)` are
    /// where each limit's store counts its evictions and overflows.
    pub(crate) fn new(
        limits: &[Limit],
        max_keys: usize,
        clock: LimiterClock,
        counters: &dyn Fn(&Limit) -> StoreCounters,
    ) -> LocalLimiter {
        let shared: Vec<Arc<Limit>> = limits.iter().map(|l| Arc::new(l.clone())).collect();
        let checks = shared
            .iter()
            .map(|limit| {
                let shared = limit.clone();
                match &limit.kind {
                    LimitKind::Rate {
                        count,
                        period,
                        burst,
                    } => {
                        let interval = (*period / *count).max(Duration::from_nanos(1));
                        let burst = NonZeroU32::new(*burst).unwrap_or(NonZeroU32::MIN);
                        let quota = Quota::with_period(interval)
                            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                            .allow_burst(burst);
                        let idle = IdleRule::ArrivalTime {
                            clock: clock.clone(),
                            start: clock.now(),
                        };
                        let store = KeyStore::new(max_keys, idle, &counters(limit));
                        #[cfg(test)]
                        let shards = store.shards.clone();
                        let gcra = Gcra::new(quota, store, clock.clone());
                        Check::Rate {
                            limit: shared,
                            gcra: Box::new(gcra),
                            #[cfg(test)]
                            shards,
                        }
                    }
                    LimitKind::Quota { limit: quota, unit } => {
                        let idle = IdleRule::Window {
                            clock: clock.clone(),
                            unit: *unit,
                        };
                        Check::Quota {
                            limit: shared,
                            quota: *quota,
                            unit: *unit,
                            store: KeyStore::new(max_keys, idle, &counters(limit)),
                        }
                    }
                }
            })
            .collect();
        LocalLimiter {
            limits: shared,
            checks,
            clock,
            seed: std::hash::RandomState::new(),
        }
    }

    /// The limits, in checking order (readings point at these).
    pub(crate) fn limits(&self) -> &[Arc<Limit>] {
        &self.limits
    }

    /// Count a request under `key` against every limit, in order, until one refuses.
    pub(crate) fn check(&self, key: &str) -> Verdict {
        let hashed = self.seed.hash_one(key);
        let mut verdict = Verdict {
            refused: None,
            readings: Vec::with_capacity(self.checks.len()),
        };
        for check in &self.checks {
            match check {
                Check::Rate { limit, gcra, .. } => {
                    let interval = limit.emission_interval().unwrap_or_default();
                    let burst = match limit.kind {
                        LimitKind::Rate { burst, .. } => u64::from(burst),
                        LimitKind::Quota { .. } => 1,
                    };
                    match gcra.check_key(&hashed) {
                        Ok(snapshot) => {
                            let remaining = u64::from(snapshot.remaining_burst_capacity());
                            let used = burst.saturating_sub(remaining);
                            verdict.readings.push(Reading {
                                limit: limit.clone(),
                                remaining,
                                reset: interval.saturating_mul(used as u32),
                                refused: false,
                            });
                        }
                        Err(not_until) => {
                            let wait = not_until.wait_time_from(self.clock.now());
                            verdict.refused = Some(wait);
                            verdict.readings.push(Reading {
                                limit: limit.clone(),
                                remaining: 0,
                                reset: wait,
                                refused: true,
                            });
                            return verdict;
                        }
                    }
                }
                Check::Quota {
                    limit,
                    quota,
                    unit,
                    store,
                } => {
                    let unix = self.clock.unix_seconds();
                    let window = unit.window(unix);
                    let reset = Duration::from_secs(window.ends_at.saturating_sub(unix));
                    let counted = store.update(hashed, |old| {
                        let count = old
                            .filter(|value| value >> 32 == window.index)
                            .map_or(0, |value| value & 0xffff_ffff);
                        if count >= *quota {
                            Err(())
                        } else {
                            Ok((quota - count - 1, (window.index << 32) | (count + 1)))
                        }
                    });
                    match counted {
                        Ok(remaining) => verdict.readings.push(Reading {
                            limit: limit.clone(),
                            remaining,
                            reset,
                            refused: false,
                        }),
                        Err(()) => {
                            verdict.refused = Some(reset);
                            verdict.readings.push(Reading {
                                limit: limit.clone(),
                                remaining: 0,
                                reset,
                                refused: true,
                            });
                            return verdict;
                        }
                    }
                }
            }
        }
        verdict
    }

    /// How many keys the limiters hold, in all (for tests of the memory bound).
    #[cfg(test)]
    pub(crate) fn keys(&self) -> usize {
        self.checks
            .iter()
            .map(|check| match check {
                Check::Rate { shards, .. } => count_keys(shards),
                Check::Quota { store, .. } => store.len(),
            })
            .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::super::limits::parse_rate;
    use super::*;

    fn rate(name: &str, text: &str, burst: Option<u32>) -> Limit {
        let (count, period) = parse_rate(text).unwrap();
        Limit {
            name: name.into(),
            kind: LimitKind::Rate {
                count,
                period,
                burst: burst.unwrap_or(count),
            },
        }
    }

    fn quota(name: &str, limit: u64, unit: CalendarUnit) -> Limit {
        Limit {
            name: name.into(),
            kind: LimitKind::Quota { limit, unit },
        }
    }

    fn limiter(
        limits: &[Limit],
        max_keys: usize,
    ) -> (LocalLimiter, Arc<ManualClock>, StoreCounters) {
        // 2026-12-31T23:00:00Z: an hour before a new month.
        let clock = ManualClock::new(1_798_758_000);
        let counters = StoreCounters::detached();
        let limiter = LocalLimiter::new(
            limits,
            max_keys,
            LimiterClock::Manual(clock.clone()),
            &|_| counters.clone(),
        );
        (limiter, clock, counters)
    }

    fn admitted(limiter: &LocalLimiter, key: &str, n: usize) -> usize {
        (0..n)
            .filter(|_| limiter.check(key).refused.is_none())
            .count()
    }

    #[test]
    fn a_burst_then_the_rate_exactly() {
        let (limiter, clock, _) = limiter(&[rate("burst", "20/s", Some(40))], 100);
        assert_eq!(admitted(&limiter, "a", 100), 40, "the burst, then nothing");
        let refused = limiter.check("a");
        assert_eq!(refused.refused, Some(Duration::from_millis(50)));
        clock.advance(Duration::from_millis(50));
        assert_eq!(
            admitted(&limiter, "a", 10),
            1,
            "one interval brings one back"
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(admitted(&limiter, "a", 100), 20, "a second brings 20");
        // Another key has its own bucket.
        assert_eq!(admitted(&limiter, "b", 100), 40);
        // Readings count down.
        clock.advance(Duration::from_secs(10));
        let first = limiter.check("a");
        assert_eq!(first.readings[0].remaining, 39);
        assert_eq!(first.readings[0].reset, Duration::from_millis(50));
    }

    #[test]
    fn several_limits_apply_and_a_rate_refusal_spends_no_quota() {
        let limits = [
            quota("monthly", 5, CalendarUnit::Month),
            rate("per-second", "2/s", None),
        ];
        let mut ordered = limits.to_vec();
        ordered.sort_by_key(|l| matches!(l.kind, LimitKind::Quota { .. }));
        let (limiter, clock, _) = limiter(&ordered, 100);
        assert_eq!(admitted(&limiter, "k", 10), 2, "the rate refuses the rest");
        clock.advance(Duration::from_secs(1));
        assert_eq!(admitted(&limiter, "k", 10), 2);
        clock.advance(Duration::from_secs(1));
        assert_eq!(admitted(&limiter, "k", 10), 1, "the month's 5 are spent");
        clock.advance(Duration::from_secs(1));
        let verdict = limiter.check("k");
        let last = verdict.readings.last().unwrap();
        assert_eq!(&*last.limit.name, "monthly");
        assert_eq!(verdict.refused, Some(Duration::from_secs(3600 - 3)));
        // The 1st of the month, UTC: a new window.
        clock.advance(Duration::from_secs(3600));
        assert_eq!(admitted(&limiter, "k", 10), 2);
    }

    #[test]
    fn a_flood_of_distinct_keys_stays_bounded_and_buys_no_fresh_buckets() {
        let (limiter, clock, counters) = limiter(&[quota("daily", 3, CalendarUnit::Day)], 100);
        // A tracked client spends its quota.
        assert_eq!(admitted(&limiter, "victim", 10), 3);
        // A flood of 10,000 made-up keys, three requests each.
        let mut admitted_flood = 0;
        for i in 0..10_000 {
            admitted_flood += admitted(&limiter, &format!("flood-{i}"), 3);
        }
        assert!(limiter.keys() <= 100, "{} keys", limiter.keys());
        // 99 keys fit; every other one shares one overflow bucket of 3.
        assert_eq!(admitted_flood, 99 * 3 + 3);
        assert!(counters.overflowed.load(Ordering::Relaxed) > 9_000);
        // The tracked client was not forgotten: still refused.
        assert_eq!(admitted(&limiter, "victim", 1), 0);
        assert_eq!(
            counters.evicted.load(Ordering::Relaxed),
            0,
            "nothing was idle"
        );
        // Next day every key is idle: new keys evict them, exactly.
        clock.advance(Duration::from_secs(86_400));
        assert_eq!(admitted(&limiter, "newcomer", 3), 3);
        assert_eq!(counters.evicted.load(Ordering::Relaxed), 100);
        assert!(limiter.keys() <= 100);
    }

    #[test]
    fn a_flood_of_distinct_keys_keeps_rate_stores_bounded_too() {
        let (limiter, clock, counters) = limiter(&[rate("burst", "1/s", Some(2))], 100);
        // A tracked client spends its burst.
        assert_eq!(admitted(&limiter, "victim", 10), 2);
        // 10,000 made-up keys, two requests each, while no bucket refills: 99 keys get their
        // own bucket, every other one shares one overflow bucket of 2.
        let mut admitted_flood = 0;
        for i in 0..10_000 {
            admitted_flood += admitted(&limiter, &format!("flood-{i}"), 2);
            assert!(limiter.keys() <= 100, "{} keys after {i}", limiter.keys());
        }
        assert_eq!(limiter.keys(), 100);
        assert_eq!(admitted_flood, 99 * 2 + 2);
        assert!(counters.overflowed.load(Ordering::Relaxed) > 9_000);
        assert_eq!(
            counters.evicted.load(Ordering::Relaxed),
            0,
            "nothing was idle"
        );
        assert_eq!(
            admitted(&limiter, "victim", 1),
            0,
            "the victim was not forgotten"
        );
        // The flood goes on while time passes: buckets refill and go idle, and new keys
        // replace them, never more than the bound.
        for i in 0..10_000 {
            clock.advance(Duration::from_millis(1));
            admitted(&limiter, &format!("later-{i}"), 1);
            assert!(limiter.keys() <= 100, "{} keys after {i}", limiter.keys());
        }
        // Each key is idle a second after its request; the shard is swept at most every
        // 100 ms: about 100 keys a second are replaced, over the 9 s after the first.
        let evicted = counters.evicted.load(Ordering::Relaxed);
        assert!((500..=1_000).contains(&evicted), "{evicted} evicted");
    }

    proptest::proptest! {
        /// Whatever the arrivals, the limiter admits exactly what a plain GCRA would: the
        /// bounded store (with room for every key) changes nothing about the decisions.
        #[test]
        fn decisions_are_those_of_a_plain_gcra(
            count in 1u32..20,
            burst in 1u32..10,
            steps in proptest::collection::vec((0u64..400, 0usize..3, 1usize..4), 1..60),
        ) {
            let limits = [Limit {
                name: "r".into(),
                kind: LimitKind::Rate { count, period: Duration::from_secs(1), burst },
            }];
            let clock = ManualClock::new(0);
            let counters = StoreCounters::detached();
            let limiter = LocalLimiter::new(&limits, 8, LimiterClock::Manual(clock.clone()), &|_| counters.clone());
            let interval = (1_000_000_000 / u64::from(count)) as i128;
            let tau = interval * (i128::from(burst) - 1);
            let mut tats = [0i128; 3];
            let mut now = 0i128;
            for (advance_ms, key, requests) in steps {
                clock.advance(Duration::from_millis(advance_ms));
                now += i128::from(advance_ms) * 1_000_000;
                for _ in 0..requests {
                    let tat = tats[key].max(now);
                    let expected = tat - tau <= now;
                    if expected {
                        tats[key] = tat + interval;
                    }
                    let verdict = limiter.check(&format!("k{key}"));
                    proptest::prop_assert_eq!(verdict.refused.is_none(), expected);
                }
            }
        }
    }

    #[test]
    fn idle_rate_keys_are_evicted_and_active_ones_kept() {
        let counters = StoreCounters::detached();
        let clock = ManualClock::new(0);
        let limits = [rate("r", "1/s", Some(2))];
        let limiter = LocalLimiter::new(&limits, 10, LimiterClock::Manual(clock.clone()), &|_| {
            counters.clone()
        });
        for i in 0..10 {
            assert!(limiter.check(&format!("k{i}")).refused.is_none());
        }
        assert!(limiter.check("k0").refused.is_none());
        assert!(limiter.check("k0").refused.is_some(), "k0 spent its burst");
        // Nine keys go idle after a second; k0 is still owed a second.
        clock.advance(Duration::from_millis(1500));
        assert!(limiter.check("new").refused.is_none());
        assert_eq!(counters.evicted.load(Ordering::Relaxed), 9);
        assert_eq!(counters.overflowed.load(Ordering::Relaxed), 0);
        // k0 kept its state: one request back after 1.5 s, not a fresh burst of two.
        assert!(limiter.check("k0").refused.is_none());
        assert!(limiter.check("k0").refused.is_some());
    }
}
