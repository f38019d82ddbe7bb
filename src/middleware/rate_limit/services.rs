//! The limiters of one runtime: each route's, each plan's, and the shared Redis.
//!
//! Off the request path: built with the runtime (at start and on every reload, on the
//! background thread), before the route stacks that use them. Counting state is asked of
//! `ResourceCarry` by concern and name, with the limits it counts as its config: a route or
//! plan whose limits did not change keeps its counts across a reload; one whose limits
//! changed starts afresh. The Redis connection is carried the same way.

use super::layer::policy_header;
use super::limits::Limit;
use super::local::{LimiterClock, LocalLimiter, StoreCounters};
use super::policy::{Plan, RouteLimits, Store};
use super::redis::RedisBackend;
use crate::client_ip::TrustedProxies;
use crate::config::Config;
use crate::metrics::{Metrics, RATE_LIMIT_DECISIONS, RATE_LIMIT_REFUSALS};
use crate::middleware::auth::consumers::{ConsumerDirectory, ConsumerGuard};
use crate::resources::ResourceCarry;
use http::HeaderValue;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// A plan's limiter: its limits (named `<plan>/<limit>`), counted in its store.
pub(crate) struct PlanLimiter {
    pub(crate) plan: Arc<Plan>,
    /// Counts the plan's limits on the local backend, or stands in for Redis when it fails
    /// open.
    pub(crate) local: Arc<LocalLimiter>,
}

/// What one route's rate-limit layer works with.
pub(crate) struct RouteLimiter {
    pub(crate) route: Arc<str>,
    pub(crate) settings: Arc<RouteLimits>,
    /// The route's own limits on the local backend (or the safety net of Redis).
    pub(crate) local: Arc<LocalLimiter>,
    /// Plans by name, for a route that applies them.
    pub(crate) plans: Arc<HashMap<Arc<str>, Arc<PlanLimiter>>>,
    pub(crate) redis: Option<Arc<RedisBackend>>,
    pub(crate) trusted: Arc<TrustedProxies>,
    pub(crate) counters: DecisionCounters,
    /// `RateLimit-Policy` for the route's own limits, made once.
    pub(crate) policy_header: Option<HeaderValue>,
}

/// `portico_rate_limit_decisions_total{route,outcome}` and the refusals by limit.
pub(crate) struct DecisionCounters {
    pub(crate) allowed: Arc<AtomicU64>,
    pub(crate) refused: Arc<AtomicU64>,
    pub(crate) fail_open: Arc<AtomicU64>,
    pub(crate) fail_closed: Arc<AtomicU64>,
    /// Each limit's refusals (route's and plans'), found by the limit's address.
    refusals: Vec<(usize, Arc<AtomicU64>)>,
}

impl DecisionCounters {
    /// The refusal counter of `limit`, if it is one of this route's.
    pub(crate) fn refusals_of(&self, limit: &Arc<Limit>) -> Option<&Arc<AtomicU64>> {
        let wanted = Arc::as_ptr(limit) as usize;
        self.refusals
            .iter()
            .find(|(address, _)| *address == wanted)
            .map(|(_, counter)| counter)
    }
}

/// The rate-limit state of one runtime.
#[derive(Default)]
pub(crate) struct RateLimitServices {
    routes: HashMap<String, Arc<RouteLimiter>>,
    pub(crate) redis: Option<Arc<RedisBackend>>,
    /// The declared plans, when a route applies them (then every consumer's plan must be
    /// one of these, in a reloaded consumers file as at config load).
    applied_plans: Option<Arc<HashMap<Arc<str>, Arc<PlanLimiter>>>>,
}

/// Why the rate-limit state could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the Redis client for rate limits")]
pub(crate) struct RateLimitBuildError(#[source] ::redis::RedisError);

impl RateLimitServices {
    pub(crate) fn build(
        config: &Config,
        carry: &mut ResourceCarry<'_>,
        metrics: &Metrics,
    ) -> Result<RateLimitServices, RateLimitBuildError> {
        let clock = &LimiterClock::System;
        let section = &config.sections.rate_limiting;
        let redis = match &section.redis {
            Some(settings) => Some(
                carry
                    .obtain("rate_limit", "redis", settings, || {
                        RedisBackend::new(settings, metrics)
                    })
                    .map_err(RateLimitBuildError)?,
            ),
            None => None,
        };
        let local =
            |carry: &mut ResourceCarry<'_>, scope: &str, limits: &[Limit], max_keys: usize| {
                let config = (limits.to_vec(), max_keys);
                carry
                    .obtain("rate_limit", scope, &config, || {
                        Ok::<_, std::convert::Infallible>(LocalLimiter::new(
                            limits,
                            max_keys,
                            clock.clone(),
                            &|limit| StoreCounters::new(metrics, scope, &limit.name),
                        ))
                    })
                    .unwrap_or_else(|never| match never {})
            };
        let mut plans = HashMap::new();
        for (name, plan) in &section.plans {
            let scope = format!("plan:{name}");
            let limits: Vec<Limit> = plan
                .limits
                .iter()
                .map(|limit| Limit {
                    name: Arc::from(format!("{name}/{}", limit.name)),
                    kind: limit.kind.clone(),
                })
                .collect();
            let limiter = local(carry, &scope, &limits, plan.max_keys);
            plans.insert(
                name.clone(),
                Arc::new(PlanLimiter {
                    plan: plan.clone(),
                    local: limiter,
                }),
            );
        }
        let plans = Arc::new(plans);
        let trusted = Arc::new(config.sections.trusted_proxies.clone());
        let mut routes = HashMap::new();
        let mut applied_plans = None;
        for route in &config.routes {
            let Some(settings) = &route.policies.rate_limit.limits else {
                continue;
            };
            let scope = format!("route:{}", route.name);
            let limiter = local(carry, &scope, &settings.limits, settings.max_keys);
            let decision = |outcome: &str| {
                metrics.counter(
                    &RATE_LIMIT_DECISIONS,
                    &[("route", &route.name), ("outcome", outcome)],
                )
            };
            let mut refusals = Vec::new();
            for limit in limiter.limits() {
                let counter = metrics.counter(
                    &RATE_LIMIT_REFUSALS,
                    &[("route", &route.name), ("policy", &limit.name)],
                );
                refusals.push((Arc::as_ptr(limit) as usize, counter));
            }
            if settings.plan {
                for plan in plans.values() {
                    for limit in plan.local.limits() {
                        let counter = metrics.counter(
                            &RATE_LIMIT_REFUSALS,
                            &[("route", &route.name), ("policy", &limit.name)],
                        );
                        refusals.push((Arc::as_ptr(limit) as usize, counter));
                    }
                }
            }
            if settings.plan {
                applied_plans = Some(plans.clone());
            }
            let policy_header =
                policy_header(&limiter.limits().iter().map(|l| &**l).collect::<Vec<_>>());
            let uses_redis = settings.store == Store::Redis
                || (settings.plan && plans.values().any(|p| p.plan.store == Store::Redis));
            routes.insert(
                route.name.clone(),
                Arc::new(RouteLimiter {
                    route: Arc::from(route.name.as_str()),
                    settings: settings.clone(),
                    local: limiter,
                    plans: if settings.plan {
                        plans.clone()
                    } else {
                        Arc::default()
                    },
                    redis: if uses_redis { redis.clone() } else { None },
                    trusted: trusted.clone(),
                    policy_header,
                    counters: DecisionCounters {
                        allowed: decision("allowed"),
                        refused: decision("refused"),
                        fail_open: decision("fail_open"),
                        fail_closed: decision("fail_closed"),
                        refusals,
                    },
                }),
            );
        }
        Ok(RateLimitServices {
            routes,
            redis,
            applied_plans,
        })
    }

    /// The check a reloaded consumers file must pass, when a route applies plans: every
    /// consumer's plan is declared. A consumer with an unknown plan would be limited by
    /// nothing but the route, so the file is refused whole, like any bad consumers file.
    pub(crate) fn consumer_guard(&self) -> Option<ConsumerGuard> {
        let plans = self.applied_plans.clone()?;
        Some(Box::new(move |directory: &ConsumerDirectory| {
            let problems: Vec<String> = directory
                .plans()
                .filter(|(_, plan)| !plans.contains_key(*plan))
                .map(|(id, plan)| {
                    format!(
                        "consumer `{id}` has plan `{plan}`, which rate_limiting.plans does not \
                         declare (a route applies plans: declare it, or the consumer would be \
                         limited by nothing but the route)"
                    )
                })
                .collect();
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems)
            }
        }))
    }

    /// The limiter of route `route`, if it has limits.
    pub(crate) fn route(&self, route: &str) -> Option<&Arc<RouteLimiter>> {
        self.routes.get(route)
    }
}
