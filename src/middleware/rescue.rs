//! The rescue layer: where a route's typed errors become answers.
//!
//! Sits just inside the route's response decorators (response headers, later CORS), so that
//! every answer — the upstream's, or one the gateway makes itself because a layer below
//! refused the request (413, 403, 504, 502…) — flows back out through them. Below it, layers
//! fail with [`GatewayError`]; above it, the stack never fails (`Error = Infallible`). The
//! rendering itself is `error.rs`'s: JSON for HTTP callers, `grpc-status` for gRPC callers,
//! both carrying the request id from the [`RequestContext`].

use crate::body::Body;
use crate::context::{Caller, RequestContext};
use crate::error::GatewayError;
use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RescueLayer;

impl<S> Layer<S> for RescueLayer {
    type Service = Rescue<S>;

    fn layer(&self, inner: S) -> Rescue<S> {
        Rescue { inner }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Rescue<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for Rescue<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = RescueFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Every layer of a route stack is always ready; a refusal comes from `call`.
        let _ = ready!(self.inner.poll_ready(cx));
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // What an error answer needs is taken now: the request is gone once it is passed on.
        let (request_id, caller, route) = match RequestContext::of(&req) {
            Some(context) => (
                context.request_id.clone(),
                context.caller,
                Some(context.route.clone()),
            ),
            None => (
                HeaderValue::from_static(""),
                Caller::of(req.headers()),
                None,
            ),
        };
        RescueFuture {
            inner: self.inner.call(req),
            request_id,
            caller,
            route,
        }
    }
}

pin_project! {
    pub(crate) struct RescueFuture<F> {
        #[pin]
        inner: F,
        request_id: HeaderValue,
        caller: Caller,
        route: Option<Arc<str>>,
    }
}

impl<F> Future for RescueFuture<F>
where
    F: Future<Output = Result<Response<Body>, GatewayError>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(Ok(match ready!(this.inner.poll(cx)) {
            Ok(response) => response,
            Err(error) => error.answer(this.request_id, *this.caller, this.route.as_deref()),
        }))
    }
}
