//! Concurrency limits: at most so many requests of a route in flight at once, per route or
//! per key (consumer, client address, …): the `concurrency_limit` key.
//!
//! On the request path, right after the rate-limit layer. A request takes a slot before it
//! goes on and holds it until its response has been sent whole (the slot travels with the
//! response body), or until it fails; one over the limit is refused at once — 503
//! `concurrency_limited` by default, or 429 — never queued.

use super::key::{KeyPart, KeySpec};
use super::policy::{check_key, check_key_has_identity, KeyFile};
use crate::body::{Body, BodyError};
use crate::client_ip::TrustedProxies;
use crate::config::check::{Description, RouteCheck, RoutePolicy};
use crate::error::GatewayError;
use crate::metrics::{Metrics, CONCURRENCY_REFUSALS};
use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// The status of a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConcurrencyStatus {
    ServiceUnavailable,
    TooManyRequests,
}

/// A route's concurrency limit, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ConcurrencySettings {
    pub(crate) max: u32,
    pub(crate) key: KeySpec,
    pub(crate) fallback: KeySpec,
    pub(crate) status: ConcurrencyStatus,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct ConcurrencyPolicy {
    pub(crate) settings: Option<Arc<ConcurrencySettings>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConcurrencyRouteFile {
    concurrency_limit: Option<ConcurrencyFile>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConcurrencyFile {
    /// Required: requests in flight at once (1..=1000000).
    max: Option<u32>,
    /// Default: `route` (one limit for the whole route).
    key: Option<KeyFile>,
    /// Default: `route`.
    fallback_key: Option<KeyFile>,
    /// 503 (default) or 429.
    status: Option<u16>,
}

impl RoutePolicy for ConcurrencyPolicy {
    const KEYS: &'static [&'static str] = &["concurrency_limit"];
    type File = ConcurrencyRouteFile;

    fn adds_layer(&self) -> bool {
        self.settings.is_some()
    }

    fn check(file: &ConcurrencyRouteFile, route: &mut RouteCheck<'_, '_>) -> Option<Self> {
        let Some(file) = &file.concurrency_limit else {
            return Some(ConcurrencyPolicy::default());
        };
        let path = route.key("concurrency_limit");
        let Some(max) = file.max else {
            route.report(
                &path,
                "needs `max`: how many requests may be in flight at once",
            );
            return None;
        };
        let max = route.count(&path.key("max"), Some(max), 1, (1, 1_000_000));
        let key = check_key(file.key.as_ref(), KeyPart::Route, &path.key("key"), route);
        let fallback = check_key(
            file.fallback_key.as_ref(),
            KeyPart::Route,
            &path.key("fallback_key"),
            route,
        );
        let status = match file.status {
            None | Some(503) => Some(ConcurrencyStatus::ServiceUnavailable),
            Some(429) => Some(ConcurrencyStatus::TooManyRequests),
            Some(other) => {
                route.report(&path.key("status"), format!("{other}: must be 503 or 429"));
                None
            }
        };
        let (max, key, fallback, status) = (max?, key?, fallback?, status?);
        if file.key.is_some() {
            check_key_has_identity(&key, &path.key("key"), route)?;
        }
        if let Some(part) = fallback.parts.iter().find(|part| !part.always_present()) {
            route.report(
                &path.key("fallback_key"),
                format!(
                    "`{}` can be missing too: a fallback key is made of `ip` and `route`",
                    part.label()
                ),
            );
            return None;
        }
        Some(ConcurrencyPolicy {
            settings: Some(Arc::new(ConcurrencySettings {
                max,
                key,
                fallback,
                status,
            })),
        })
    }

    fn describe(&self, _request_path: &str, out: &mut Description) {
        if let Some(settings) = &self.settings {
            out.line(
                "concurrency",
                format!(
                    "at most {} in flight per {} ({} beyond)",
                    settings.max,
                    settings.key.label(),
                    match settings.status {
                        ConcurrencyStatus::ServiceUnavailable => "503",
                        ConcurrencyStatus::TooManyRequests => "429",
                    }
                ),
            );
        }
    }

    fn reads_context(&self) -> bool {
        self.settings
            .as_ref()
            .is_some_and(|s| s.key.needs_context() || s.fallback.needs_context())
    }

    fn reads_identity(&self) -> bool {
        self.settings
            .as_ref()
            .is_some_and(|s| s.key.needs_identity() || s.fallback.needs_identity())
    }
}

/// The slots of one route: in flight per key.
struct Slots {
    settings: Arc<ConcurrencySettings>,
    route: Arc<str>,
    trusted: Arc<TrustedProxies>,
    in_flight: Mutex<HashMap<String, u32>>,
    refusals: Arc<AtomicU64>,
}

/// A slot held; given back when dropped.
struct Slot {
    slots: Arc<Slots>,
    key: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self
            .slots
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = map.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.key);
            }
        }
    }
}

impl Slots {
    fn take(self: &Arc<Self>, key: String) -> Option<Slot> {
        let mut map = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = map.entry(key.clone()).or_insert(0);
        if *count >= self.settings.max {
            if *count == 0 {
                map.remove(&key);
            }
            return None;
        }
        *count += 1;
        Some(Slot {
            slots: self.clone(),
            key,
        })
    }
}

#[derive(Clone)]
pub(crate) struct ConcurrencyLayer {
    slots: Option<Arc<Slots>>,
}

impl ConcurrencyLayer {
    pub(crate) fn new(
        policy: &ConcurrencyPolicy,
        trusted: &TrustedProxies,
        metrics: &Metrics,
        route: &str,
    ) -> ConcurrencyLayer {
        ConcurrencyLayer {
            slots: policy.settings.as_ref().map(|settings| {
                Arc::new(Slots {
                    settings: settings.clone(),
                    route: Arc::from(route),
                    trusted: Arc::new(trusted.clone()),
                    in_flight: Mutex::new(HashMap::new()),
                    refusals: metrics.counter(&CONCURRENCY_REFUSALS, &[("route", route)]),
                })
            }),
        }
    }
}

impl<S> Layer<S> for ConcurrencyLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> ConcurrencyLimit<S> {
        ConcurrencyLimit {
            inner,
            slots: self.slots.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct ConcurrencyLimit<S> {
    inner: S,
    slots: Option<Arc<Slots>>,
}

impl<S> Service<Request<Body>> for ConcurrencyLimit<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = ConcurrencyFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let Some(slots) = &self.slots else {
            return ConcurrencyFuture::Admitted {
                future: self.inner.call(req),
                slot: None,
            };
        };
        let settings = &slots.settings;
        let key = settings
            .key
            .make(&req, &slots.route, &slots.trusted)
            .or_else(|| settings.fallback.make(&req, &slots.route, &slots.trusted))
            .unwrap_or_default();
        match slots.take(key) {
            Some(slot) => ConcurrencyFuture::Admitted {
                future: self.inner.call(req),
                slot: Some(Box::new(slot)),
            },
            None => {
                slots.refusals.fetch_add(1, Ordering::Relaxed);
                ConcurrencyFuture::Refused {
                    error: Some(GatewayError::ConcurrencyLimited {
                        max: settings.max,
                        too_many_requests: settings.status == ConcurrencyStatus::TooManyRequests,
                    }),
                }
            }
        }
    }
}

pin_project! {
    #[project = ConcurrencyFutureProj]
    pub(crate) enum ConcurrencyFuture<F> {
        Refused { error: Option<GatewayError> },
        // Boxed: a route without a concurrency limit keeps a small future.
        Admitted { #[pin] future: F, slot: Option<Box<Slot>> },
    }
}

impl<F> Future for ConcurrencyFuture<F>
where
    F: Future<Output = Result<Response<Body>, GatewayError>>,
{
    type Output = Result<Response<Body>, GatewayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ConcurrencyFutureProj::Refused { error } => Poll::Ready(Err(error.take().unwrap_or(
                GatewayError::ConcurrencyLimited {
                    max: 0,
                    too_many_requests: false,
                },
            ))),
            ConcurrencyFutureProj::Admitted { future, slot } => {
                let response = std::task::ready!(future.poll(cx))?;
                let Some(slot) = slot.take() else {
                    return Poll::Ready(Ok(response));
                };
                // The slot is held until the response body has been sent whole.
                Poll::Ready(Ok(response.map(|body| {
                    Body::boxed(SlotBody {
                        inner: body,
                        slot: Some(slot),
                    })
                })))
            }
        }
    }
}

pin_project! {
    /// A response body that gives its request's slot back when it ends.
    struct SlotBody {
        #[pin]
        inner: Body,
        slot: Option<Box<Slot>>,
    }
}

impl http_body::Body for SlotBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut this = self.project();
        let frame = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        // Given back with the last frame: hyper does not poll a body that says it has ended.
        if frame.is_none() || this.inner.is_end_stream() {
            this.slot.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::test_support::route_problems;

    #[test]
    fn concurrency_limits_are_checked() {
        assert!(route_problems("concurrency_limit: { max: 10, key: ip, status: 429 }").is_empty());
        assert!(route_problems("concurrency_limit: { key: ip }")[0].contains("needs `max`"));
        assert!(
            route_problems("concurrency_limit: { max: 1, status: 500 }")[0].contains("503 or 429")
        );
    }

    #[test]
    fn slots_are_given_back_and_keys_forgotten() {
        let settings = Arc::new(ConcurrencySettings {
            max: 2,
            key: KeySpec {
                parts: vec![KeyPart::Route],
            },
            fallback: KeySpec {
                parts: vec![KeyPart::Route],
            },
            status: ConcurrencyStatus::ServiceUnavailable,
        });
        let slots = Arc::new(Slots {
            settings,
            route: Arc::from("r"),
            trusted: Arc::default(),
            in_flight: Mutex::new(HashMap::new()),
            refusals: Arc::default(),
        });
        let a = slots.take("k".into()).expect("first");
        let b = slots.take("k".into()).expect("second");
        assert!(slots.take("k".into()).is_none(), "third refused");
        let other = slots.take("other".into()).expect("another key has its own");
        drop(a);
        let c = slots.take("k".into()).expect("a slot came back");
        drop((b, c, other));
        assert!(slots.in_flight.lock().unwrap().is_empty());
    }
}
