//! Retries, per route: the `retry` key.
//!
//! Runs in the upstream call, the innermost service of the route's stack (so below the route
//! timeout: the route's `timeout` bounds all tries together, and `per_try_timeout` each one).
//! A route without `retry` calls its cluster directly and pays nothing for this. A try that fails in a listed way
//! (`connect_failure`, `reset`, `timeout`, or a listed status such as 503) is tried again
//! after an exponential back-off with full jitter, preferring an endpoint the request has
//! not been to yet (`upstream::TriedEndpoints`).
//!
//! What is never retried: methods that are not idempotent (unless the route opts in with
//! `non_idempotent: true`); upgrades; and any request whose body could not be kept — only a
//! body with a `Content-Length` of at most `max_buffered_body` is read whole first and
//! replayed, so a streamed body that was partly sent is never sent again. (Failing over to
//! another endpoint when no connection could be opened happens below, in the cluster, and
//! is always safe: the request has not left then.)
//!
//! Retries cannot amplify an outage: each cluster has a retry budget (`retry_budget`: a
//! floor plus a percentage of the requests of routes that retry, per window) and an optional
//! limit on concurrent retries (`circuit_breaker.max_retries`); when either says no, the
//! last answer stands. The number of tries is in the access log (`attempts`).

use crate::body::Body;
use crate::config::check::{Description, RouteCheck, RoutePolicy};
use crate::config::source::Seg;
use crate::error::GatewayError;
use crate::upstream::limits::Limit;
use crate::upstream::{Cluster, DownstreamUpgrade, TriedEndpoints};
use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_RETRIES: u32 = 2;
const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);
const DEFAULT_BACKOFF_MAX: Duration = Duration::from_millis(250);
const DEFAULT_MAX_BUFFERED_BODY: u64 = 64 * 1024;
const MAX_BUFFERED_BODY: u64 = 16 * 1024 * 1024;

/// The route's retry settings; `None` = no retries (the layer is switched off).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RetryPolicy {
    pub(crate) retry: Option<Arc<RetrySettings>>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RetrySettings {
    pub(crate) retries: u32,
    pub(crate) on: RetryOn,
    pub(crate) per_try_timeout: Option<Duration>,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) non_idempotent: bool,
    pub(crate) max_buffered_body: u64,
}

/// Which failures are tried again.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct RetryOn {
    pub(crate) connect_failure: bool,
    pub(crate) reset: bool,
    pub(crate) timeout: bool,
    pub(crate) statuses: Vec<StatusCode>,
}

/// `retry` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryFile {
    retry: Option<RetryKeysFile>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryKeysFile {
    /// Tries after the first. Default 2.
    retries: Option<u32>,
    /// Default `[connect_failure, reset, timeout, 502, 503, 504]`.
    on: Option<Vec<String>>,
    /// Bound on each try. Default: none (only the route's `timeout`).
    per_try_timeout: Option<String>,
    /// Default `25ms`.
    backoff_base: Option<String>,
    /// Default `250ms`.
    backoff_max: Option<String>,
    /// Retry POST and PATCH too. Default false.
    non_idempotent: Option<bool>,
    /// Largest body kept for replay. Default `64KiB`.
    max_buffered_body: Option<String>,
}

impl RoutePolicy for RetryPolicy {
    const KEYS: &'static [&'static str] = &["retry"];
    type File = RetryFile;

    /// No: retries are the upstream call's own (`Destination`), in every stack.
    fn adds_layer(&self) -> bool {
        false
    }

    fn check(file: &RetryFile, route: &mut RouteCheck<'_, '_>) -> Option<Self> {
        let Some(keys) = &file.retry else {
            return Some(RetryPolicy { retry: None });
        };
        let path = route.key("retry");
        let retries = route.count(&path.key("retries"), keys.retries, DEFAULT_RETRIES, (1, 10));
        let mut on = RetryOn::default();
        let mut on_ok = true;
        let default_on = ["connect_failure", "reset", "timeout", "502", "503", "504"];
        let words: Vec<String> = match &keys.on {
            Some(words) => words.clone(),
            None => default_on.iter().map(|w| w.to_string()).collect(),
        };
        for (index, word) in words.iter().enumerate() {
            match word.as_str() {
                "connect_failure" => on.connect_failure = true,
                "reset" => on.reset = true,
                "timeout" => on.timeout = true,
                code => match code
                    .parse::<u16>()
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                {
                    Some(status) if status.is_server_error() => on.statuses.push(status),
                    _ => {
                        route.report(
                            &path.key("on").index(index),
                            format!(
                                "unknown retry condition {word:?}: expected connect_failure, \
                                 reset, timeout or a 5xx status such as 503"
                            ),
                        );
                        on_ok = false;
                    }
                },
            }
        }
        let per_try_timeout = match &keys.per_try_timeout {
            None => Some(None),
            Some(text) => route
                .duration(
                    &path.key("per_try_timeout"),
                    Some(text),
                    Duration::ZERO,
                    false,
                )
                .map(Some),
        };
        let backoff_base = route.duration(
            &path.key("backoff_base"),
            keys.backoff_base.as_deref(),
            DEFAULT_BACKOFF_BASE,
            true,
        );
        let backoff_max = route.duration(
            &path.key("backoff_max"),
            keys.backoff_max.as_deref(),
            DEFAULT_BACKOFF_MAX.max(backoff_base.unwrap_or_default()),
            true,
        );
        if let (Some(base), Some(max)) = (backoff_base, backoff_max) {
            if max < base {
                route.report(
                    &path.key("backoff_max"),
                    format!("{max:?} is shorter than backoff_base ({base:?})"),
                );
                return None;
            }
        }
        let max_buffered_body = route.size(
            &path.key("max_buffered_body"),
            keys.max_buffered_body.as_deref(),
            DEFAULT_MAX_BUFFERED_BODY,
        );
        if max_buffered_body.is_some_and(|size| size > MAX_BUFFERED_BODY) {
            route.report(
                &path.key("max_buffered_body"),
                "is out of range: at most 16MiB (a larger body is better streamed once)",
            );
            return None;
        }
        let settings = RetrySettings {
            retries: retries?,
            on: on_ok.then_some(on)?,
            per_try_timeout: per_try_timeout?,
            backoff_base: backoff_base?,
            backoff_max: backoff_max?,
            non_idempotent: keys.non_idempotent.unwrap_or(false),
            max_buffered_body: max_buffered_body?,
        };
        Some(RetryPolicy {
            retry: Some(Arc::new(settings)),
        })
    }

    fn describe(&self, _request_path: &str, out: &mut Description) {
        let Some(settings) = &self.retry else {
            return;
        };
        let mut on: Vec<String> = [
            (settings.on.connect_failure, "connect_failure"),
            (settings.on.reset, "reset"),
            (settings.on.timeout, "timeout"),
        ]
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, word)| word.to_string())
        .collect();
        on.extend(settings.on.statuses.iter().map(|s| s.as_str().to_string()));
        out.line(
            "retry",
            format!(
                "up to {} more tries on {}, {} methods, bodies up to {} bytes replayed, \
                 back-off {:?}..{:?}{}",
                settings.retries,
                on.join(", "),
                if settings.non_idempotent {
                    "all"
                } else {
                    "idempotent"
                },
                settings.max_buffered_body,
                settings.backoff_base,
                settings.backoff_max,
                settings
                    .per_try_timeout
                    .map(|t| format!(", {t:?} per try"))
                    .unwrap_or_default()
            ),
        );
    }

    /// Conditions may be written as bare status codes, sizes as bare numbers.
    fn wants_text(path: &[Seg]) -> bool {
        match path {
            [Seg::Key(retry), Seg::Key(on), Seg::Index(_)] => retry == "retry" && on == "on",
            [Seg::Key(retry), Seg::Key(key)] => retry == "retry" && key == "max_buffered_body",
            _ => false,
        }
    }
}

/// The number of tries a request took, for its access log line; in the request's
/// extensions when the route retries and there is an access log.
#[derive(Clone, Debug, Default)]
pub(crate) struct AttemptCount(pub(crate) Arc<AtomicU32>);

/// What a retrying route's upstream call needs: its settings and its cluster (budget,
/// limits). Made once per route; a route without retries has none and its upstream call
/// is the cluster's, untouched.
pub(crate) struct Retrying {
    settings: Arc<RetrySettings>,
    cluster: Arc<Cluster>,
}

impl Retrying {
    pub(crate) fn new(policy: &RetryPolicy, cluster: &Arc<Cluster>) -> Option<Arc<Retrying>> {
        policy.retry.as_ref().map(|settings| {
            Arc::new(Retrying {
                settings: settings.clone(),
                cluster: cluster.clone(),
            })
        })
    }
}

/// Why a try may be tried again.
fn retriable(on: &RetryOn, result: &Result<Response<Body>, GatewayError>) -> bool {
    match result {
        Ok(response) => on.statuses.contains(&response.status()),
        Err(error) => match error {
            GatewayError::UpstreamConnect { .. }
            | GatewayError::UpstreamConnectTimeout { .. }
            | GatewayError::UpstreamHandshake(_)
            | GatewayError::UpstreamTls { .. } => on.connect_failure,
            GatewayError::UpstreamProtocol(_) => on.reset,
            GatewayError::UpstreamTimeout(_) => on.timeout,
            // The gateway's own limits, and anything the client did, are not retried.
            _ => false,
        },
    }
}

/// The back-off before retry number `retry` (1-based): `base × 2^(retry-1)`, at most `max`,
/// drawn uniformly below that ("full jitter"), so retries of many requests spread out.
fn backoff(settings: &RetrySettings, retry: u32) -> Duration {
    let ceiling = settings
        .backoff_base
        .saturating_mul(1u32 << (retry - 1).min(16))
        .min(settings.backoff_max);
    ceiling.mul_f64(fastrand::f64())
}

/// The body to replay on every try, if the request's can be kept.
async fn keep_body(
    body: Body,
    declared: Option<u64>,
    limit: u64,
) -> Result<Result<Option<Bytes>, Body>, GatewayError> {
    match body {
        Body::Empty => Ok(Ok(None)),
        Body::Full { data } => Ok(Ok(data)),
        Body::Client { body } if declared.is_some_and(|len| len <= limit) => {
            match body.collect().await {
                Ok(collected) => Ok(Ok(Some(collected.to_bytes()))),
                Err(error) => Err(GatewayError::from_request_body(error)),
            }
        }
        other => Ok(Err(other)),
    }
}

/// Send `req` to the route's cluster, trying again as the route's settings allow.
pub(crate) async fn tries(
    retrying: Arc<Retrying>,
    req: Request<Body>,
) -> Result<Response<Body>, GatewayError> {
    let Retrying { settings, cluster } = &*retrying;
    let attempts = req.extensions().get::<AttemptCount>().cloned();
    let count = |attempts: &Option<AttemptCount>| {
        if let Some(attempts) = attempts {
            attempts.0.fetch_add(1, Relaxed);
        }
    };
    let replayable_method = settings.non_idempotent || req.method().is_idempotent();
    let upgrade = req.extensions().get::<DownstreamUpgrade>().is_some();
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (parts, body) = req.into_parts();
    let kept = if replayable_method && !upgrade && parts.method != Method::CONNECT {
        keep_body(body, declared, settings.max_buffered_body).await?
    } else {
        Err(body)
    };
    let body = match kept {
        Ok(body) => body,
        // Not replayable: one try (connect failures still fail over inside the cluster).
        Err(body) => {
            count(&attempts);
            return one_try(cluster, settings, Request::from_parts(parts, body)).await;
        }
    };
    cluster.limits.note_request(&cluster.policy.retry_budget);
    let tried = TriedEndpoints::default();
    let mut retry = 0;
    // Held from a retry's start to the next one's (or the end): the concurrent retries.
    let mut retry_slot = None;
    loop {
        let _ = &retry_slot;
        let mut req =
            Request::from_parts(parts.clone(), body.clone().map_or(Body::Empty, Body::full));
        req.extensions_mut().insert(TriedEndpoints {
            retry: retry > 0,
            ..tried.clone()
        });
        count(&attempts);
        let result = one_try(cluster, settings, req).await;
        if retry >= settings.retries || !retriable(&settings.on, &result) {
            return result;
        }
        // Both the concurrent-retry limit and the budget must allow another try; otherwise
        // this answer stands.
        match cluster
            .limits
            .take(Limit::Retries, cluster.policy.circuit_breaker.max_retries)
        {
            Ok(taken) => retry_slot = taken,
            Err(_) => return result,
        }
        if !cluster.limits.try_budget(&cluster.policy.retry_budget) {
            return result;
        }
        drop(result);
        retry += 1;
        tokio::time::sleep(backoff(settings, retry)).await;
    }
}

async fn one_try(
    cluster: &Arc<Cluster>,
    settings: &RetrySettings,
    req: Request<Body>,
) -> Result<Response<Body>, GatewayError> {
    let future = cluster.clone().send(req);
    match settings.per_try_timeout {
        None => future.await,
        Some(limit) => match tokio::time::timeout(limit, future).await {
            Ok(result) => result,
            Err(_) => Err(GatewayError::UpstreamTimeout(limit)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RetrySettings {
        RetrySettings {
            retries: 2,
            on: RetryOn {
                connect_failure: true,
                reset: true,
                timeout: true,
                statuses: vec![StatusCode::SERVICE_UNAVAILABLE],
            },
            per_try_timeout: None,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(30),
            non_idempotent: false,
            max_buffered_body: 1024,
        }
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_below() {
        let s = settings();
        for _ in 0..100 {
            assert!(backoff(&s, 1) <= Duration::from_millis(10));
            assert!(backoff(&s, 2) <= Duration::from_millis(20));
            assert!(backoff(&s, 5) <= Duration::from_millis(30));
        }
    }

    #[test]
    fn what_is_retried() {
        let on = settings().on;
        let status = |code: u16| {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::from_u16(code).expect("status");
            Ok(r)
        };
        assert!(retriable(&on, &status(503)));
        assert!(!retriable(&on, &status(500)));
        assert!(!retriable(&on, &status(200)));
        assert!(retriable(
            &on,
            &Err(GatewayError::UpstreamTimeout(Duration::from_secs(1)))
        ));
        assert!(!retriable(
            &on,
            &Err(GatewayError::PayloadTooLarge { limit: 1 })
        ));
        assert!(!retriable(
            &on,
            &Err(GatewayError::UpstreamOverflow {
                cluster: "c".into(),
                limit: "max_requests"
            })
        ));
    }
}
