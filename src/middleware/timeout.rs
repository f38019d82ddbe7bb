//! Per-route upstream timeout (504): the `timeout` key.
//!
//! Sits innermost, just before the upstream, so that it measures the upstream and nothing
//! the gateway does first (auth, transforms).
//!
//! Bounds the time from handing the request to the upstream until its response head
//! arrives — connecting, sending the body and the backend's think time included. A response
//! body that is already streaming is not cut by it: long downloads stay possible, and a
//! stalled backend mid-body is ended by the connection's own failure handling instead.

use crate::body::Body;
use crate::config::check::{Description, RouteCheck, RoutePolicy};
use crate::error::GatewayError;
use http::{Request, Response};
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
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
        ResponseFuture {
            inner: tokio::time::timeout(self.timeout, self.inner.call(req)),
            timeout: self.timeout,
        }
    }
}

pin_project! {
    pub(crate) struct ResponseFuture<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        timeout: Duration,
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, GatewayError>>,
{
    type Output = Result<Response<Body>, GatewayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(_elapsed)) => {
                Poll::Ready(Err(GatewayError::UpstreamTimeout(*this.timeout)))
            }
            Poll::Pending => Poll::Pending,
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
