//! The Redis backend: limits shared by every gateway that uses the same Redis.
//!
//! On the request path, in the rate-limit layer, for the limits with `store: redis`: one
//! round trip per request however many limits apply (the route's and the caller's plan's),
//! an atomic Lua script run with EVALSHA (and loaded again when Redis answers NOSCRIPT, as
//! after a restart). The script reads Redis's own clock (`TIME`), so gateways whose clocks
//! disagree still share one limit, and decides every limit before it changes any: either
//! all of them count the request or none does — there is no window in which two gateways
//! both read a count and both admit (the race of read-then-write limiters).
//!
//! Rates are GCRA (one key per limit and caller holding its theoretical arrival time, in
//! microseconds, expiring when the bucket would be full again); calendar quotas are counters
//! in a key per window (`…:w<window>`) that expires after its window.
//!
//! Failure mode: the client (`redis` crate's `ConnectionManager`) reconnects by itself; each
//! call is bounded by `rate_limiting.redis.timeout`. A call that fails or runs out of time
//! is decided by `on_error`: `local` (fail open, with the same limits counted by a local
//! limiter in each gateway as the safety net) or `refuse` (fail closed, 503
//! `rate_limit_unavailable`). Both are counted (`portico_rate_limit_redis_calls_total`) and
//! logged once when Redis goes away and once when it is back.

use super::limits::{Limit, LimitKind};
use super::local::Reading;
use super::policy::RedisSettings;
use crate::metrics::{Metrics, RATE_LIMIT_REDIS_CALLS, RATE_LIMIT_REDIS_LATENCY};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The decision, atomically. KEYS[i] is limit i's key; ARGV holds three values per limit:
/// `r`, the emission interval (µs), the burst — or `q`, the quota, the seconds to its
/// window's end. Returns `{refused, wait_us, remaining_1, reset_us_1, …}`, a remaining of -1
/// marking a limit that refused.
const SCRIPT: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local refused = 0
local wait = 0
local out = {}
local writes = {}
for i = 1, #KEYS do
  local kind = ARGV[3 * i - 2]
  local a = tonumber(ARGV[3 * i - 1])
  local b = tonumber(ARGV[3 * i])
  if kind == 'r' then
    local tau = a * (b - 1)
    local tat = tonumber(redis.call('GET', KEYS[i]) or now)
    if tat < now then tat = now end
    local earliest = tat - tau
    if earliest > now then
      refused = 1
      if earliest - now > wait then wait = earliest - now end
      out[2 * i - 1] = -1
      out[2 * i] = earliest - now
    else
      local next_tat = tat + a
      writes[i] = next_tat
      local remaining = math.floor((now + tau + a - next_tat) / a)
      if remaining < 0 then remaining = 0 end
      out[2 * i - 1] = remaining
      out[2 * i] = next_tat - now
    end
  else
    local count = tonumber(redis.call('GET', KEYS[i]) or 0)
    if count >= a then
      refused = 1
      if b * 1000000 > wait then wait = b * 1000000 end
      out[2 * i - 1] = -1
    else
      writes[i] = -1
      out[2 * i - 1] = a - count - 1
    end
    out[2 * i] = b * 1000000
  end
end
if refused == 0 then
  for i = 1, #KEYS do
    local value = writes[i]
    if value == -1 then
      redis.call('INCR', KEYS[i])
      redis.call('EXPIRE', KEYS[i], tonumber(ARGV[3 * i]) + 60)
    elseif value then
      local ttl = math.floor((value - now) / 1000) + 1000
      redis.call('SET', KEYS[i], string.format('%.0f', value), 'PX', ttl)
    end
  end
end
local result = {refused, wait}
for i = 1, 2 * #KEYS do result[#result + 1] = out[i] end
return result
";

/// Latency buckets of Redis calls, in microseconds.
const LATENCY_BUCKETS_US: [(u64, &str); 8] = [
    (250, "0.00025"),
    (500, "0.0005"),
    (1_000, "0.001"),
    (2_500, "0.0025"),
    (5_000, "0.005"),
    (10_000, "0.01"),
    (50_000, "0.05"),
    (u64::MAX, "+Inf"),
];

/// Why Redis gave no decision.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisFailure {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis failed")]
    Failed(#[source] redis::RedisError),
    #[error("Redis answered something the limiter did not ask for")]
    Unexpected,
}

/// One limit of a Redis decision: where its count lives and how it is counted.
pub(crate) struct RedisLimit<'a> {
    pub(crate) limit: &'a Arc<Limit>,
    /// The caller's part of the key (`c=acme`, `ip=192.0.2.7`).
    pub(crate) key: &'a str,
    /// Whose limit it is: `r:<route>` or `p:<plan>`.
    pub(crate) scope: &'a str,
}

/// The shared Redis of a runtime (carried across reloads while its settings are unchanged).
pub(crate) struct RedisBackend {
    settings: RedisSettings,
    client: redis::Client,
    manager: OnceLock<Result<ConnectionManager, String>>,
    script: redis::Script,
    /// Whether the last call succeeded (so that an outage is logged once, not per request).
    healthy: AtomicBool,
    ok: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    timeouts: Arc<AtomicU64>,
    latency: Vec<Arc<AtomicU64>>,
}

impl RedisBackend {
    pub(crate) fn new(
        settings: &RedisSettings,
        metrics: &Metrics,
    ) -> Result<RedisBackend, redis::RedisError> {
        let calls =
            |outcome: &str| metrics.counter(&RATE_LIMIT_REDIS_CALLS, &[("outcome", outcome)]);
        Ok(RedisBackend {
            client: redis::Client::open(settings.url.as_str())?,
            settings: settings.clone(),
            manager: OnceLock::new(),
            script: redis::Script::new(SCRIPT),
            healthy: AtomicBool::new(true),
            ok: calls("ok"),
            errors: calls("error"),
            timeouts: calls("timeout"),
            latency: LATENCY_BUCKETS_US
                .iter()
                .map(|(_, le)| metrics.counter(&RATE_LIMIT_REDIS_LATENCY, &[("le", le)]))
                .collect(),
        })
    }

    pub(crate) fn on_error(&self) -> super::policy::OnRedisError {
        self.settings.on_error
    }

    /// The connection manager, made on first use (it needs the Tokio runtime). It connects
    /// in the background and again whenever the connection breaks.
    fn manager(&self) -> Result<ConnectionManager, RedisFailure> {
        let made = self.manager.get_or_init(|| {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.settings.connect_timeout))
                .set_response_timeout(Some(self.settings.timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_millis(500));
            ConnectionManager::new_lazy_with_config(self.client.clone(), config)
                .map_err(|error| error.to_string())
        });
        match made {
            Ok(manager) => Ok(manager.clone()),
            Err(_) => Err(RedisFailure::Unexpected),
        }
    }

    /// Start connecting (needs the Tokio runtime): the first requests need not wait for it.
    pub(crate) fn start(self: &Arc<Self>) {
        let backend = self.clone();
        tokio::spawn(async move {
            if let Ok(mut manager) = backend.manager() {
                let ping = redis::cmd("PING");
                let call = ping.query_async::<String>(&mut manager);
                let _ = tokio::time::timeout(backend.settings.connect_timeout, call).await;
            }
        });
    }

    /// The Redis key of one limit.
    fn key_of(&self, limit: &RedisLimit<'_>, unix: u64) -> String {
        // `{…}` is the hash tag: one caller's keys stay together on a Redis Cluster slot.
        let mut key = format!(
            "{}:{{{}}}:{}:{}",
            self.settings.key_prefix, limit.key, limit.scope, limit.limit.name
        );
        if let LimitKind::Quota { unit, .. } = &limit.limit.kind {
            key.push_str(&format!(":w{}", unit.window(unix).index));
        }
        key
    }

    /// Decide `limits` for one request, in one round trip.
    pub(crate) async fn decide(
        &self,
        limits: &[RedisLimit<'_>],
    ) -> Result<(Option<Duration>, Vec<Reading>), RedisFailure> {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let mut invocation = self.script.prepare_invoke();
        for limit in limits {
            invocation.key(self.key_of(limit, unix));
            match &limit.limit.kind {
                LimitKind::Rate { burst, .. } => {
                    let interval = limit.limit.emission_interval().unwrap_or_default();
                    let interval_us = u64::try_from(interval.as_micros())
                        .unwrap_or(u64::MAX)
                        .max(1);
                    invocation.arg("r").arg(interval_us).arg(*burst);
                }
                LimitKind::Quota { limit: quota, unit } => {
                    let ends_in = unit.window(unix).ends_at.saturating_sub(unix).max(1);
                    invocation.arg("q").arg(*quota).arg(ends_in);
                }
            }
        }
        let started = Instant::now();
        let result = match self.manager() {
            Ok(mut manager) => {
                let call = invocation.invoke_async::<Vec<i64>>(&mut manager);
                match tokio::time::timeout(self.settings.timeout, call).await {
                    Ok(Ok(values)) => Ok(values),
                    // The client's own response timeout (set to the same budget) is a
                    // timeout too.
                    Ok(Err(error)) if error.is_timeout() => {
                        Err(RedisFailure::Timeout(self.settings.timeout))
                    }
                    Ok(Err(error)) => Err(RedisFailure::Failed(error)),
                    Err(_) => Err(RedisFailure::Timeout(self.settings.timeout)),
                }
            }
            Err(failure) => Err(failure),
        };
        self.observe(started.elapsed(), &result);
        let values = result?;
        if values.len() != 2 + 2 * limits.len() {
            return Err(RedisFailure::Unexpected);
        }
        let micros = |value: i64| Duration::from_micros(u64::try_from(value).unwrap_or(0));
        let refused = (values[0] != 0).then(|| micros(values[1]));
        let readings = limits
            .iter()
            .enumerate()
            .map(|(i, limit)| Reading {
                limit: limit.limit.clone(),
                // A refused request counted against no limit: the others still have the one
                // the script set aside for it.
                remaining: u64::try_from(values[2 + 2 * i])
                    .map_or(0, |left| left + u64::from(refused.is_some())),
                reset: micros(values[3 + 2 * i]),
                refused: values[2 + 2 * i] < 0,
            })
            .collect();
        Ok((refused, readings))
    }

    fn observe<T>(&self, elapsed: Duration, result: &Result<T, RedisFailure>) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        for ((bound, _), counter) in LATENCY_BUCKETS_US.iter().zip(&self.latency) {
            if us <= *bound {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!(url = %redacted(&self.settings.url), "Redis answers again: shared rate limits are back");
                }
            }
            Err(failure) => {
                let counter = match failure {
                    RedisFailure::Timeout(_) => &self.timeouts,
                    _ => &self.errors,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if self.healthy.swap(false, Ordering::Relaxed) {
                    let fallback = match self.settings.on_error {
                        super::policy::OnRedisError::Local => "local limiters decide (fail open)",
                        super::policy::OnRedisError::Refuse => {
                            "requests get 503 rate_limit_unavailable (fail closed)"
                        }
                    };
                    tracing::warn!(
                        url = %redacted(&self.settings.url),
                        error = %failure,
                        cause = ?std::error::Error::source(failure).map(ToString::to_string),
                        "Redis cannot decide rate limits; until it answers, {fallback}"
                    );
                }
            }
        }
    }
}

/// A Redis URL without its password, for logs.
fn redacted(url: &str) -> String {
    match url.split_once('@') {
        Some((scheme_and_credentials, host)) => {
            let scheme = scheme_and_credentials
                .split_once("://")
                .map_or("redis", |(scheme, _)| scheme);
            format!("{scheme}://…@{host}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_logged_without_passwords() {
        assert_eq!(
            redacted("redis://:secret@10.0.0.1:6379/0"),
            "redis://…@10.0.0.1:6379/0"
        );
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
