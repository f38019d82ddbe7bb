//! Request body size limit (413), per route: the `max_body_size` key.
//!
//! Sits first in a route's stack, just inside the rescue layer. A request whose `Content-Length` is over the route's limit
//! is refused before a byte of its body is read — and before any `100 Continue` goes out, so
//! a well-behaved client does not even send it. A body without a length (chunked, HTTP/2) is
//! counted while it streams and cut at the limit; the upstream exchange then fails with a
//! typed error that becomes the 413.

use crate::body::Body;
use crate::config::check::{Description, RouteCheck, RoutePolicy};
use crate::config::source::Seg;
use crate::error::GatewayError;
use http::header::CONTENT_LENGTH;
use http::{Request, Response};
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

const DEFAULT_MAX_BODY_SIZE: u64 = 10 * 1024 * 1024;

/// The route's body limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyLimitPolicy {
    pub(crate) max_body_size: u64,
}

/// `max_body_size` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct BodyLimitFile {
    /// Largest request body accepted. Default `10MiB`.
    max_body_size: Option<String>,
}

impl RoutePolicy for BodyLimitPolicy {
    const KEYS: &'static [&'static str] = &["max_body_size"];
    type File = BodyLimitFile;

    /// No: every route has a body limit: its layer is in every stack.
    fn adds_layer(&self) -> bool {
        false
    }

    fn check(file: &BodyLimitFile, route: &mut RouteCheck<'_, '_>) -> Option<Self> {
        let path = route.key("max_body_size");
        let max_body_size =
            route.size(&path, file.max_body_size.as_deref(), DEFAULT_MAX_BODY_SIZE)?;
        Some(BodyLimitPolicy { max_body_size })
    }

    fn describe(&self, _request_path: &str, out: &mut Description) {
        out.line("max body size", format!("{} bytes", self.max_body_size));
    }

    /// A size may be written as a bare number of bytes.
    fn wants_text(path: &[Seg]) -> bool {
        matches!(path, [Seg::Key(key)] if key == "max_body_size")
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimitLayer {
    limit: u64,
}

impl BodyLimitLayer {
    pub(crate) fn new(policy: &BodyLimitPolicy) -> BodyLimitLayer {
        BodyLimitLayer {
            limit: policy.max_body_size,
        }
    }
}

impl<S> Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;

    fn layer(&self, inner: S) -> BodyLimit<S> {
        BodyLimit {
            inner,
            limit: self.limit,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct BodyLimit<S> {
    inner: S,
    limit: u64,
}

impl<S> Service<Request<Body>> for BodyLimit<S>
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
        let BodyLimit { inner, limit } = self;
        limited(*limit, req, |req| inner.call(req))
    }
}

impl<S> BodyLimit<S> {
    /// The route's limit, for [`limited`].
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// What is below the body limit.
    pub(crate) fn inner(&self) -> &S {
        &self.inner
    }
}

/// The body limit's work around the call below it (`call_inner`): the layer's `call`, and a
/// lean route's upstream call driven in place (`stack.rs`).
pub(crate) fn limited<F>(
    limit: u64,
    mut req: Request<Body>,
    call_inner: impl FnOnce(Request<Body>) -> F,
) -> ResponseFuture<F> {
    // hyper has already refused malformed or conflicting Content-Length values.
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return ResponseFuture::Rejected { limit };
    }
    if let Body::Client { body } = req.body_mut() {
        body.set_limit(limit);
    }
    ResponseFuture::Inner {
        future: call_inner(req),
    }
}

pin_project! {
    #[project = ResponseFutureProj]
    pub(crate) enum ResponseFuture<F> {
        Rejected { limit: u64 },
        Inner { #[pin] future: F },
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, GatewayError>>,
{
    type Output = Result<Response<Body>, GatewayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Rejected { limit } => {
                Poll::Ready(Err(GatewayError::PayloadTooLarge { limit: *limit }))
            }
            ResponseFutureProj::Inner { future } => future.poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::test_support::Below;

    fn request(len: u64) -> Request<Body> {
        Request::builder()
            .header(CONTENT_LENGTH, len)
            .body(Body::full(vec![b'x'; len as usize]))
            .expect("request")
    }

    #[tokio::test]
    async fn over_limit_is_refused_without_calling_the_backend() {
        let below = Below::ok();
        let mut svc =
            BodyLimitLayer::new(&BodyLimitPolicy { max_body_size: 10 }).layer(below.clone());
        let err = svc.call(request(11)).await.expect_err("413");
        assert!(matches!(err, GatewayError::PayloadTooLarge { limit: 10 }));
        assert_eq!(below.calls(), 0);
    }

    #[tokio::test]
    async fn at_limit_passes() {
        let below = Below::ok();
        let mut svc =
            BodyLimitLayer::new(&BodyLimitPolicy { max_body_size: 10 }).layer(below.clone());
        svc.call(request(10)).await.expect("passes");
        assert_eq!(below.calls(), 1);
    }
}
