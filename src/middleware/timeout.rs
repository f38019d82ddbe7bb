//! Per-route upstream timeout (504): the `timeout` key.
//!
//! Sits innermost, just before the upstream, so that it measures the upstream and nothing
//! the gateway does first (auth, transforms).
//!
//! It bounds the upstream's answer: from the moment the request has been received whole —
//! its body's last byte in, or at once for a request without a body — until the response
//! head arrives. A client that is slow to send its body is not the upstream's fault: as in
//! Envoy, the route timeout starts only once the body is complete, and until then the
//! listener's `request_body_timeout` applies (408 for a client still sending when it runs out;
//! 504 if the client had sent what it had and the upstream was not reading it). A response
//! body that is already streaming is not cut by it: long downloads stay possible, and a
//! stalled backend mid-body is ended by the connection's own failure handling instead. One
//! timer per request covers both budgets.

use crate::body::{Body, BodyProgress};
use crate::config::check::{Description, RouteCheck, RoutePolicy};
use crate::error::GatewayError;
use http::{Request, Response};
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// The route's upstream timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeoutPolicy {
    pub(crate) timeout: Duration,
}

/// `timeout` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct TimeoutFile {
    /// Time for the upstream to answer with a response head. Default `15s`.
    timeout: Option<String>,
}

impl RoutePolicy for TimeoutPolicy {
    const KEYS: &'static [&'static str] = &["timeout"];
    type File = TimeoutFile;

    /// No: every route has a timeout: its layer is in every stack.
    fn adds_layer(&self) -> bool {
        false
    }

    fn check(file: &TimeoutFile, route: &mut RouteCheck<'_, '_>) -> Option<Self> {
        let path = route.key("timeout");
        let timeout =
            route.duration(&path, file.timeout.as_deref(), DEFAULT_ROUTE_TIMEOUT, false)?;
        Some(TimeoutPolicy { timeout })
    }

    fn describe(&self, _request_path: &str, out: &mut Description) {
        out.line("timeout", format!("{:?}", self.timeout));
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    pub(crate) fn new(policy: &TimeoutPolicy) -> TimeoutLayer {
        TimeoutLayer {
            timeout: policy.timeout,
        }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            timeout: self.timeout,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Timeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Service<Request<Body>> for Timeout<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let Timeout { inner, timeout } = self;
        timed(*timeout, req, |req| inner.call(req))
    }
}

impl<S> Timeout<S> {
    /// The route's timeout, for [`timed`].
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// What is below the timeout.
    pub(crate) fn inner(&self) -> &S {
        &self.inner
    }
}

/// The timeout's work around the call below it (`call_inner`): the layer's `call`, and a
/// lean route's upstream call driven in place (`stack.rs`).
pub(crate) fn timed<F>(
    timeout: Duration,
    mut req: Request<Body>,
    call_inner: impl FnOnce(Request<Body>) -> F,
) -> ResponseFuture<F> {
    let body = match req.body_mut() {
        // The upstream's time starts when the body is in; until then, the body's own.
        Body::Client { body } => Some(body.progress()),
        _ => None,
    };
    ResponseFuture {
        inner: call_inner(req),
        timer: None,
        body,
        timeout,
    }
}

pin_project! {
    pub(crate) struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // The body's deadline while the body is coming in, the upstream's after. Made on the
        // first poll that needs it: a small body is usually in by then, and the timer is
        // registered once.
        #[pin]
        timer: Option<Sleep>,
        // The request body still coming in, if any.
        body: Option<Arc<BodyProgress>>,
        timeout: Duration,
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, GatewayError>>,
{
    type Output = Result<Response<Body>, GatewayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result);
        }
        if let Some(body) = this.body.as_ref() {
            if body.poll_ended(cx).is_ready() {
                // The request is complete: from now on the upstream's time counts.
                let deadline = Instant::now() + *this.timeout;
                match this.timer.as_mut().as_pin_mut() {
                    Some(timer) => timer.reset(deadline),
                    None => this.timer.set(Some(tokio::time::sleep_until(deadline))),
                }
                *this.body = None;
            } else {
                if this.timer.is_none() {
                    this.timer
                        .set(Some(tokio::time::sleep_until(body.deadline())));
                }
                if let Some(timer) = this.timer.as_mut().as_pin_mut() {
                    if timer.poll(cx).is_ready() {
                        // The body's budget ran out. If the client was the one holding it up,
                        // the body itself reports 408 as well; answer for whichever side
                        // stalled.
                        return Poll::Ready(Err(if body.waiting_for_client() {
                            GatewayError::RequestBodyTimeout(body.budget())
                        } else {
                            GatewayError::UpstreamTimeout(*this.timeout)
                        }));
                    }
                }
                return Poll::Pending;
            }
        }
        if this.timer.is_none() {
            this.timer.set(Some(tokio::time::sleep(*this.timeout)));
        }
        match this.timer.as_pin_mut().map(|timer| timer.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(GatewayError::UpstreamTimeout(*this.timeout))),
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Never;

    impl Service<Request<Body>> for Never {
        type Response = Response<Body>;
        type Error = GatewayError;
        type Future = std::future::Pending<Result<Response<Body>, GatewayError>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Request<Body>) -> Self::Future {
            std::future::pending()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_upstream_becomes_a_504() {
        let mut svc = TimeoutLayer::new(&TimeoutPolicy {
            timeout: Duration::from_secs(5),
        })
        .layer(Never);
        let err = svc
            .call(Request::new(Body::empty()))
            .await
            .expect_err("times out");
        assert!(matches!(err, GatewayError::UpstreamTimeout(d) if d == Duration::from_secs(5)));
        assert_eq!(err.class().status, http::StatusCode::GATEWAY_TIMEOUT);
    }
}
