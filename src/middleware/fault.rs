//! Fault injection per route: the `fault` key — delay and/or abort a share of requests, or
//! those that ask for it with a header, so a platform team can rehearse failures without
//! touching a backend. Off unless declared.
//!
//! Sits after auth and the route's own answers, before the request transforms and the
//! timeout: only callers the route admits can meet (or ask for) a fault; a delay holds the
//! request before it is forwarded and does not count against the route's `timeout` (as a
//! slow network in front of the backend would); an abort is answered with the configured
//! status through the error table (`fault_injected`), so it carries the route's CORS and
//! response headers like a real failure. Every fault is counted in
//! `portico_faults_injected_total{route,fault}`.

use crate::body::Body;
use crate::chance::Share;
use crate::config::check::{Description, RouteCheck, RoutePolicy};
use crate::config::source::KeyPath;
use crate::error::GatewayError;
use crate::metrics::{Metrics, FAULTS_INJECTED};
use http::{HeaderName, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;
use tower_layer::Layer;
use tower_service::Service;

/// The route's faults, checked; `None` when it has none.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct FaultPolicy {
    pub(crate) faults: Option<Arc<Faults>>,
}

#[derive(Debug, PartialEq)]
pub(crate) struct Faults {
    pub(crate) delay: Option<(Duration, Share)>,
    pub(crate) abort: Option<(StatusCode, Share)>,
    /// A request with this header (`delay`, `abort` or both, comma-separated) gets those
    /// faults whatever the shares say.
    pub(crate) header: Option<HeaderName>,
}

/// `fault` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultRouteFile {
    fault: Option<FaultFile>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultFile {
    delay: Option<DelayFile>,
    abort: Option<AbortFile>,
    /// The header a request names its faults in. Default: none.
    header: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct DelayFile {
    /// How long.
    duration: String,
    /// Share of requests, 0..=100. Default `0` (only on request by header).
    percent: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct AbortFile {
    /// The answer's status, 400..=599.
    status: u16,
    /// Share of requests, 0..=100. Default `0` (only on request by header).
    percent: Option<f64>,
}

fn share(route: &mut RouteCheck<'_, '_>, path: &KeyPath, percent: Option<f64>) -> Option<Share> {
    let percent = percent.unwrap_or(0.0);
    let share = Share::from_percent(percent);
    if share.is_none() {
        route.report(path, format!("{percent} is not a percentage from 0 to 100"));
    }
    share
}

impl RoutePolicy for FaultPolicy {
    const KEYS: &'static [&'static str] = &["fault"];
    type File = FaultRouteFile;

    fn adds_layer(&self) -> bool {
        self.faults.is_some()
    }

    fn check(file: &FaultRouteFile, route: &mut RouteCheck<'_, '_>) -> Option<Self> {
        let Some(file) = &file.fault else {
            return Some(FaultPolicy::default());
        };
        let path = route.key("fault");
        let delay = match &file.delay {
            None => Some(None),
            Some(delay) => {
                let duration = route.duration(
                    &path.key("delay").key("duration"),
                    Some(&delay.duration),
                    Duration::ZERO,
                    false,
                );
                let share = share(route, &path.key("delay").key("percent"), delay.percent);
                duration.zip(share).map(Some)
            }
        };
        let abort = match &file.abort {
            None => Some(None),
            Some(abort) => {
                let status = match StatusCode::from_u16(abort.status) {
                    Ok(status) if (400..=599).contains(&abort.status) => Some(status),
                    _ => {
                        route.report(
                            &path.key("abort").key("status"),
                            format!("{} is not an error status (400 to 599)", abort.status),
                        );
                        None
                    }
                };
                let share = share(route, &path.key("abort").key("percent"), abort.percent);
                status.zip(share).map(Some)
            }
        };
        let header = match &file.header {
            None => Some(None),
            Some(text) => match HeaderName::from_bytes(text.as_bytes()) {
                Ok(name) => Some(Some(name)),
                Err(_) => {
                    route.report(
                        &path.key("header"),
                        format!("{text:?} is not a header name"),
                    );
                    None
                }
            },
        };
        if file.delay.is_none() && file.abort.is_none() {
            route.report(&path, "declares no fault: give delay, abort or both");
            return None;
        }
        Some(FaultPolicy {
            faults: Some(Arc::new(Faults {
                delay: delay?,
                abort: abort?,
                header: header?,
            })),
        })
    }

    fn describe(&self, _request_path: &str, out: &mut Description) {
        let Some(faults) = &self.faults else {
            return;
        };
        let mut parts = Vec::new();
        if let Some((duration, share)) = faults.delay {
            parts.push(format!("delay {duration:?} for {}%", share.percent()));
        }
        if let Some((status, share)) = faults.abort {
            parts.push(format!(
                "abort {} for {}%",
                status.as_u16(),
                share.percent()
            ));
        }
        if let Some(header) = &faults.header {
            parts.push(format!("or when `{header}` asks"));
        }
        out.line("fault injection", parts.join(", "));
    }
}

/// What an enabled fault layer needs per request.
pub(crate) struct FaultRuntime {
    faults: Arc<Faults>,
    delayed: Arc<AtomicU64>,
    aborted: Arc<AtomicU64>,
}

#[derive(Clone)]
pub(crate) struct FaultLayer {
    on: Option<Arc<FaultRuntime>>,
}

impl FaultLayer {
    pub(crate) fn new(route: &str, policy: &FaultPolicy, metrics: &Metrics) -> FaultLayer {
        FaultLayer {
            on: policy.faults.clone().map(|faults| {
                Arc::new(FaultRuntime {
                    faults,
                    delayed: metrics
                        .counter(&FAULTS_INJECTED, &[("route", route), ("fault", "delay")]),
                    aborted: metrics
                        .counter(&FAULTS_INJECTED, &[("route", route), ("fault", "abort")]),
                })
            }),
        }
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = Fault<S>;

    fn layer(&self, inner: S) -> Fault<S> {
        Fault {
            inner,
            on: self.on.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Fault<S> {
    inner: S,
    on: Option<Arc<FaultRuntime>>,
}

/// Which faults a request asked for by header.
fn asked(req: &Request<Body>, header: &HeaderName) -> (bool, bool) {
    let mut delay = false;
    let mut abort = false;
    for value in req.headers().get_all(header) {
        for word in value.as_bytes().split(|b| *b == b',') {
            let word = word.trim_ascii();
            delay |= word.eq_ignore_ascii_case(b"delay");
            abort |= word.eq_ignore_ascii_case(b"abort");
        }
    }
    (delay, abort)
}

impl<S> Service<Request<Body>> for Fault<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError> + Clone,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = FaultFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let Some(runtime) = &self.on else {
            return FaultFuture::Calling {
                future: self.inner.call(req),
            };
        };
        let faults = &runtime.faults;
        let (delay_asked, abort_asked) = match &faults.header {
            Some(header) => {
                let asked = asked(&req, header);
                // The fault header is the gateway's: the backend never sees it.
                req.headers_mut().remove(header);
                asked
            }
            None => (false, false),
        };
        let delay = faults
            .delay
            .filter(|(_, share)| delay_asked || share.hit())
            .map(|(duration, _)| duration);
        let abort = faults
            .abort
            .filter(|(_, share)| abort_asked || share.hit())
            .map(|(status, _)| GatewayError::FaultInjected { status });
        if delay.is_some() {
            runtime.delayed.fetch_add(1, Relaxed);
        }
        if abort.is_some() {
            runtime.aborted.fetch_add(1, Relaxed);
        }
        match (delay, abort) {
            (None, None) => FaultFuture::Calling {
                future: self.inner.call(req),
            },
            (None, Some(error)) => FaultFuture::Aborted { error: Some(error) },
            (Some(duration), abort) => FaultFuture::Delaying {
                delayed: Box::pin(Delayed {
                    sleep: tokio::time::sleep(duration),
                    next: Some((req, self.inner.clone(), abort)),
                }),
            },
        }
    }
}

pin_project! {
    #[project = FaultFutureProj]
    pub(crate) enum FaultFuture<S>
    where
        S: Service<Request<Body>>,
    {
        Calling { #[pin] future: S::Future },
        // Boxed: only delayed requests carry the timer and the request while they wait.
        Delaying { delayed: Pin<Box<Delayed<S>>> },
        Aborted { error: Option<GatewayError> },
    }
}

pin_project! {
    pub(crate) struct Delayed<S> {
        #[pin]
        sleep: Sleep,
        // The request, the service to call with it, and the abort that follows the delay
        // instead, if any.
        next: Option<(Request<Body>, S, Option<GatewayError>)>,
    }
}

impl<S> Future for FaultFuture<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>,
{
    type Output = Result<Response<Body>, GatewayError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                FaultFutureProj::Calling { future } => return future.poll(cx),
                FaultFutureProj::Aborted { error } => {
                    return Poll::Ready(Err(error.take().unwrap_or(GatewayError::FaultInjected {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                    })))
                }
                FaultFutureProj::Delaying { delayed } => {
                    let delayed = delayed.as_mut().project();
                    ready!(delayed.sleep.poll(cx));
                    let Some((req, mut inner, abort)) = delayed.next.take() else {
                        return Poll::Ready(Err(GatewayError::FaultInjected {
                            status: StatusCode::SERVICE_UNAVAILABLE,
                        }));
                    };
                    let following = match abort {
                        Some(error) => FaultFuture::Aborted { error: Some(error) },
                        None => FaultFuture::Calling {
                            future: inner.call(req),
                        },
                    };
                    self.set(following);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::test_support::{route_problems, Below};

    fn layer(faults: Faults) -> (Fault<Below>, Below, Metrics) {
        let metrics = Metrics::default();
        let below = Below::ok();
        let policy = FaultPolicy {
            faults: Some(Arc::new(faults)),
        };
        let service = FaultLayer::new("r", &policy, &metrics).layer(below.clone());
        (service, below, metrics)
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_holds_the_request_before_it_is_forwarded() {
        let (mut service, below, metrics) = layer(Faults {
            delay: Some((Duration::from_secs(3), Share::ALL)),
            abort: None,
            header: None,
        });
        // The clock is paused: it moves only when told, so nothing here depends on speed.
        let mut call = Box::pin(service.call(Request::new(Body::empty())));
        assert!(futures_poll_once(&mut call).await.is_none(), "delayed");
        tokio::time::advance(Duration::from_millis(2_999)).await;
        assert!(
            futures_poll_once(&mut call).await.is_none(),
            "still delayed a millisecond before the end"
        );
        assert_eq!(below.calls(), 0, "not forwarded during the delay");
        tokio::time::advance(Duration::from_millis(1)).await;
        let response = futures_poll_once(&mut call)
            .await
            .expect("forwarded once the delay is over")
            .expect("the inner answer");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(below.calls(), 1);
        assert!(metrics
            .render()
            .contains("portico_faults_injected_total{route=\"r\",fault=\"delay\"} 1"));
    }

    async fn futures_poll_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            Poll::Ready(match Pin::new(&mut *future).poll(cx) {
                Poll::Ready(output) => Some(output),
                Poll::Pending => None,
            })
        })
        .await
    }

    #[tokio::test]
    async fn a_header_asks_for_the_configured_faults_only() {
        let (mut service, below, _) = layer(Faults {
            delay: None,
            abort: Some((
                StatusCode::BAD_GATEWAY,
                Share::from_percent(0.0).expect("0"),
            )),
            header: Some(HeaderName::from_static("x-fault")),
        });
        assert!(service.call(Request::new(Body::empty())).await.is_ok());
        let asking = Request::builder()
            .header("x-fault", "Delay, abort")
            .body(Body::empty())
            .expect("request");
        let error = service.call(asking).await.expect_err("aborted");
        assert!(matches!(error, GatewayError::FaultInjected { status } if status == 502));
        assert_eq!(below.calls(), 1);
    }

    #[test]
    fn faults_are_checked_at_their_keys() {
        assert!(route_problems("fault: { abort: { status: 503, percent: 12.5 } }").is_empty());
        let p = route_problems(
            "fault: { delay: { duration: 0s, percent: 120 }, abort: { status: 200 } }",
        );
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("fault.delay.duration"), "{p:?}");
        assert!(p[1].contains("fault.delay.percent"), "{p:?}");
        assert!(p[2].contains("fault.abort.status"), "{p:?}");
        assert!(route_problems("fault: {}")[0].contains("declares no fault"));
    }
}
