//! The rate-limit layer: a route's limits (and its caller's plan), enforced.
//!
//! On the request path, in the route stack right after auth and inside the rescue layer. For
//! each request of a route with limits: the key (`key.rs`, or the fallback key when the
//! request lacks a part of it); the route's limits and the plan's, each on its store — the
//! local ones decided at once, the Redis ones in one round trip (a boxed future, only for
//! routes that use Redis); then either 429 `rate_limited` (a typed error the rescue layer
//! renders, with `Retry-After` and the rate-limit headers) or the request goes on, and the
//! rate-limit headers are added to its response on the way back.
//!
//! Headers (`rate_limit.headers`): `ietf` — `RateLimit-Policy` lists the limits that apply
//! (`"name";q=<count>;w=<seconds>`) and `RateLimit` where the caller stands in each
//! (`"name";r=<remaining>;t=<seconds until full or until the window ends>`), as in
//! draft-ietf-httpapi-ratelimit-headers; `classic` — the `X-RateLimit-Limit`, `-Remaining`
//! and `-Reset` trio for the limit closest to refusing; `none`.

use super::limits::Limit;
use super::local::{Reading, Verdict};
use super::policy::{HeaderStyle, OnRedisError, Store};
use super::redis::RedisLimit;
use super::services::{PlanLimiter, RateLimitServices, RouteLimiter};
use crate::body::Body;
use crate::error::GatewayError;
use crate::middleware::auth::identity::Identity;
use crate::middleware::BoxedAnswer;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{Request, Response};
use pin_project_lite::pin_project;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// What a refused caller is told: the headers of the answer, and which limit refused.
#[derive(Debug)]
pub(crate) struct RateLimitRefusal {
    pub(crate) limit: Arc<str>,
    pub(crate) retry_after: u64,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Clone)]
pub(crate) struct RateLimitLayer {
    limiter: Option<Arc<RouteLimiter>>,
}

impl RateLimitLayer {
    pub(crate) fn new(services: &RateLimitServices, route: &str) -> RateLimitLayer {
        RateLimitLayer {
            limiter: services.route(route).cloned(),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct RateLimit<S> {
    inner: S,
    limiter: Option<Arc<RouteLimiter>>,
}

impl<S> Service<Request<Body>> for RateLimit<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = RateLimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let Some(limiter) = &self.limiter else {
            return RateLimitFuture::Admitted {
                future: self.inner.call(req),
                headers: Box::default(),
            };
        };
        let settings = &limiter.settings;
        let key = settings
            .key
            .make(&req, &limiter.route, &limiter.trusted)
            .or_else(|| {
                settings
                    .fallback
                    .make(&req, &limiter.route, &limiter.trusted)
            })
            .unwrap_or_default();
        let plan = plan_of(limiter, &req);
        let route_on_redis = settings.store == Store::Redis && !settings.limits.is_empty();
        let plan_on_redis = plan
            .as_ref()
            .is_some_and(|(p, _)| p.plan.store == Store::Redis);
        // The local limits first: a refusal here asks nothing of Redis.
        let mut verdict = Verdict::default();
        if !route_on_redis {
            verdict.merge(limiter.local.check(&key));
        }
        if let (Some((plan, plan_key)), false) = (&plan, plan_on_redis) {
            if verdict.refused.is_none() {
                verdict.merge(plan.local.check(plan_key));
            }
        }
        if verdict.refused.is_some() || !(route_on_redis || plan_on_redis) {
            return match decided(limiter, verdict) {
                Ok(headers) => RateLimitFuture::Admitted {
                    future: self.inner.call(req),
                    headers: headers.into_boxed_slice(),
                },
                Err(error) => RateLimitFuture::Refused { error: Some(error) },
            };
        }
        // Redis decides the rest: the request waits in its own future. The service's clone
        // is the one that is ready (tower's convention).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limiter = limiter.clone();
        RateLimitFuture::Waiting {
            future: Box::pin(async move {
                let redis_verdict = decide_on_redis(
                    &limiter,
                    route_on_redis.then_some(key.as_str()),
                    plan.as_ref().filter(|_| plan_on_redis),
                )
                .await?;
                verdict.merge(redis_verdict);
                let headers = decided(&limiter, verdict)?;
                let mut response = inner.call(req).await?;
                add_headers(&mut response, headers);
                Ok(response)
            }),
        }
    }
}

/// The caller's plan and its key (`c=<consumer>`), for a route that applies plans.
fn plan_of(limiter: &RouteLimiter, req: &Request<Body>) -> Option<(Arc<PlanLimiter>, String)> {
    if limiter.plans.is_empty() {
        return None;
    }
    let consumer = req.extensions().get::<Arc<Identity>>()?.consumer.as_ref()?;
    let plan = limiter.plans.get(consumer.plan.as_deref()?)?;
    Some((plan.clone(), format!("c={}", consumer.id)))
}

/// Decide the Redis limits of a request; when Redis cannot, as `on_error` says.
async fn decide_on_redis(
    limiter: &RouteLimiter,
    route_key: Option<&str>,
    plan: Option<&(Arc<PlanLimiter>, String)>,
) -> Result<Verdict, GatewayError> {
    let route_scope = format!("r:{}", limiter.route);
    let plan_scope = plan.map(|(plan, _)| format!("p:{}", plan.plan.name));
    let mut asked: Vec<RedisLimit<'_>> = Vec::new();
    if let Some(key) = route_key {
        for limit in limiter.local.limits() {
            asked.push(RedisLimit {
                limit,
                key,
                scope: &route_scope,
            });
        }
    }
    if let (Some((plan, key)), Some(scope)) = (plan, &plan_scope) {
        for limit in plan.local.limits() {
            asked.push(RedisLimit { limit, key, scope });
        }
    }
    let Some(redis) = &limiter.redis else {
        return Err(GatewayError::RateLimitUnavailable);
    };
    match redis.decide(&asked).await {
        Ok((refused, readings)) => Ok(Verdict { refused, readings }),
        Err(_) => match redis.on_error() {
            OnRedisError::Refuse => {
                limiter.counters.fail_closed.fetch_add(1, Relaxed);
                Err(GatewayError::RateLimitUnavailable)
            }
            OnRedisError::Local => {
                limiter.counters.fail_open.fetch_add(1, Relaxed);
                let mut verdict = Verdict::default();
                if let Some(key) = route_key {
                    verdict.merge(limiter.local.check(key));
                }
                if let Some((plan, key)) = plan {
                    if verdict.refused.is_none() {
                        verdict.merge(plan.local.check(key));
                    }
                }
                Ok(verdict)
            }
        },
    }
}

/// Count the decision; the headers for the response, or the refusal.
fn decided(
    limiter: &RouteLimiter,
    verdict: Verdict,
) -> Result<Vec<(HeaderName, HeaderValue)>, GatewayError> {
    let style = limiter.settings.headers;
    match verdict.refused {
        None => {
            limiter.counters.allowed.fetch_add(1, Relaxed);
            Ok(render(style, &verdict.readings, Some(limiter)))
        }
        Some(wait) => {
            limiter.counters.refused.fetch_add(1, Relaxed);
            // The limit that refused (of several, the one that waits longest).
            let refusing = verdict
                .readings
                .iter()
                .filter(|reading| reading.refused)
                .max_by_key(|reading| reading.reset);
            if let Some(counter) = refusing.and_then(|r| limiter.counters.refusals_of(&r.limit)) {
                counter.fetch_add(1, Relaxed);
            }
            let retry_after = seconds(wait).max(1);
            let mut headers = render(style, &verdict.readings, Some(limiter));
            headers.push((RETRY_AFTER, HeaderValue::from(retry_after)));
            Err(GatewayError::RateLimited(Box::new(RateLimitRefusal {
                limit: refusing.map_or_else(|| Arc::from("rate_limit"), |r| r.limit.name.clone()),
                retry_after,
                headers,
            })))
        }
    }
}

/// Whole seconds, rounded up.
fn seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// The rate-limit headers for `readings`. `RateLimit-Policy` is the same on every answer
/// that reports exactly the route's own limits: `limiter` holds it made once.
fn render(
    style: HeaderStyle,
    readings: &[Reading],
    limiter: Option<&RouteLimiter>,
) -> Vec<(HeaderName, HeaderValue)> {
    if readings.is_empty() {
        return Vec::new();
    }
    match style {
        HeaderStyle::None => Vec::new(),
        HeaderStyle::Ietf => {
            let mut out = Vec::with_capacity(2);
            let made = limiter
                .and_then(|limiter| limiter.policy_header.as_ref())
                .filter(|_| {
                    let own = limiter.map_or(&[][..], |limiter| limiter.local.limits());
                    own.len() == readings.len()
                        && own
                            .iter()
                            .zip(readings)
                            .all(|(limit, reading)| Arc::ptr_eq(limit, &reading.limit))
                });
            match made {
                Some(value) => out.push((RATELIMIT_POLICY.clone(), value.clone())),
                None => {
                    let limits: Vec<&Limit> = readings.iter().map(|r| &*r.limit).collect();
                    if let Some(value) = policy_header(&limits) {
                        out.push((RATELIMIT_POLICY.clone(), value));
                    }
                }
            }
            // Written digit by digit: this runs for every admitted request.
            let mut state = Vec::with_capacity(readings.len() * 32);
            for reading in readings {
                if !state.is_empty() {
                    state.extend_from_slice(b", ");
                }
                state.push(b'"');
                state.extend_from_slice(reading.limit.name.as_bytes());
                state.extend_from_slice(b"\";r=");
                push_decimal(&mut state, reading.remaining);
                state.extend_from_slice(b";t=");
                push_decimal(&mut state, seconds(reading.reset));
            }
            if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(state)) {
                out.push((RATELIMIT.clone(), value));
            }
            out
        }
        HeaderStyle::Classic => {
            // The limit closest to refusing speaks for all.
            let Some(closest) = readings.iter().min_by_key(|r| r.remaining) else {
                return Vec::new();
            };
            vec![
                (
                    X_RATELIMIT_LIMIT.clone(),
                    HeaderValue::from(closest.limit.count()),
                ),
                (
                    X_RATELIMIT_REMAINING.clone(),
                    HeaderValue::from(closest.remaining),
                ),
                (
                    X_RATELIMIT_RESET.clone(),
                    HeaderValue::from(seconds(closest.reset)),
                ),
            ]
        }
    }
}

/// `RateLimit-Policy` for `limits`: `"name";q=<count>;w=<seconds>, …`.
pub(crate) fn policy_header(limits: &[&Limit]) -> Option<HeaderValue> {
    let mut policy = String::new();
    for limit in limits {
        let separator = if policy.is_empty() { "" } else { ", " };
        let (quota, window) = limit.quota_and_window();
        let name = &limit.name;
        let _ = write!(policy, "{separator}\"{name}\";q={quota};w={window}");
    }
    HeaderValue::from_str(&policy).ok()
}

/// `value` in decimal, appended.
fn push_decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn add_headers(response: &mut Response<Body>, headers: Vec<(HeaderName, HeaderValue)>) {
    let map = response.headers_mut();
    for (name, value) in headers {
        // The backend does not get to speak for the gateway's limits.
        map.insert(name, value);
    }
}

pin_project! {
    #[project = RateLimitFutureProj]
    pub(crate) enum RateLimitFuture<F> {
        Refused { error: Option<GatewayError> },
        Admitted {
            #[pin]
            future: F,
            // A boxed slice (two words, no allocation when empty): a route without a
            // rate limit keeps a small future.
            headers: Box<[(HeaderName, HeaderValue)]>,
        },
        Waiting { future: BoxedAnswer },
    }
}

impl<F> Future for RateLimitFuture<F>
where
    F: Future<Output = Result<Response<Body>, GatewayError>>,
{
    type Output = Result<Response<Body>, GatewayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RateLimitFutureProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or(GatewayError::RateLimitUnavailable))),
            RateLimitFutureProj::Admitted { future, headers } => {
                let mut response = ready!(future.poll(cx))?;
                add_headers(&mut response, std::mem::take(headers).into_vec());
                Poll::Ready(Ok(response))
            }
            RateLimitFutureProj::Waiting { future } => future.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::limits::LimitKind;
    use super::*;

    fn reading(name: &str, count: u32, remaining: u64, reset_ms: u64) -> Reading {
        reading_per(name, count, Duration::from_secs(1), remaining, reset_ms)
    }

    fn reading_per(
        name: &str,
        count: u32,
        period: Duration,
        remaining: u64,
        reset_ms: u64,
    ) -> Reading {
        Reading {
            limit: Arc::new(Limit {
                name: name.into(),
                kind: LimitKind::Rate {
                    count,
                    period,
                    burst: count,
                },
            }),
            remaining,
            reset: Duration::from_millis(reset_ms),
            refused: false,
        }
    }

    #[test]
    fn a_grpc_caller_gets_resource_exhausted_and_the_headers() {
        let refusal = RateLimitRefusal {
            limit: Arc::from("burst"),
            retry_after: 2,
            headers: vec![(RETRY_AFTER, HeaderValue::from(2u64))],
        };
        let error = GatewayError::RateLimited(Box::new(refusal));
        let grpc = error.render("id", crate::context::Caller::Grpc);
        assert_eq!(grpc.headers()["grpc-status"], "8");
        assert_eq!(grpc.headers()[RETRY_AFTER], "2");
        let http = error.render("id", crate::context::Caller::Http);
        assert_eq!(http.status(), http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(http.headers()[RETRY_AFTER], "2");
        let unavailable =
            GatewayError::RateLimitUnavailable.render("id", crate::context::Caller::Grpc);
        assert_eq!(unavailable.headers()["grpc-status"], "14");
    }

    #[test]
    fn headers_in_both_styles() {
        let readings = [reading("burst", 20, 7, 650), reading("steady", 5, 2, 1200)];
        let ietf = render(HeaderStyle::Ietf, &readings, None);
        assert_eq!(ietf[0].1, "\"burst\";q=20;w=1, \"steady\";q=5;w=1");
        assert_eq!(ietf[1].1, "\"burst\";r=7;t=1, \"steady\";r=2;t=2");
        let classic = render(HeaderStyle::Classic, &readings, None);
        assert_eq!(
            classic[0],
            (X_RATELIMIT_LIMIT.clone(), HeaderValue::from(5u64))
        );
        assert_eq!(classic[1].1, "2");
        assert_eq!(classic[2].1, "2");
        assert!(render(HeaderStyle::None, &readings, None).is_empty());
    }

    #[test]
    fn a_sub_second_rate_is_advertised_over_a_whole_second_window_at_the_same_rate() {
        let readings = [
            reading_per("fast", 5, Duration::from_millis(500), 4, 100),
            reading_per("odd", 2, Duration::from_millis(1500), 1, 700),
            reading_per("steady", 3, Duration::from_secs(60), 2, 20_000),
        ];
        let ietf = render(HeaderStyle::Ietf, &readings, None);
        assert_eq!(
            ietf[0].1,
            "\"fast\";q=10;w=1, \"odd\";q=4;w=3, \"steady\";q=3;w=60"
        );
        // The classic trio has no window: its limit is the count of the limit's own period.
        let classic = render(HeaderStyle::Classic, &readings[..1], None);
        assert_eq!(classic[0].1, "5");
    }
}
