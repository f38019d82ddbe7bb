//! The rescue layer: where a route's typed errors become answers.
//!
//! Sits just inside the route's response decorators (response headers, later CORS), so that
//! every answer — the upstream's, or one the gateway makes itself because a layer below
//! refused the request (413, 403, 504, 502…) — flows back out through them. Below it, layers
//! fail with [`GatewayError`]; above it, the stack never fails (`Error = Infallible`). The
//! rendering itself is `error.rs`'s: JSON for HTTP callers, `grpc-status` for gRPC callers,
//! both carrying the request id.

use crate::body::Body;
use crate::context::{Caller, RequestContext};
use crate::error::GatewayError;
use crate::request_id::X_REQUEST_ID;
use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// The rescue layer of route `route` (named in the log line of every error it renders).
#[derive(Debug, Clone)]
pub(crate) struct RescueLayer {
    route: Arc<str>,
}

impl RescueLayer {
    pub(crate) fn new(route: &str) -> RescueLayer {
        RescueLayer {
            route: route.into(),
        }
    }
}

impl<S> Layer<S> for RescueLayer {
    type Service = Rescue<S>;

    fn layer(&self, inner: S) -> Rescue<S> {
        Rescue {
            inner,
            route: self.route.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Rescue<S> {
    inner: S,
    route: Arc<str>,
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
        let Rescue { inner, route } = self;
        rescued(route, req, |req| inner.call(req))
    }
}

impl<S> Rescue<S> {
    /// The route's name, for [`rescued`].
    pub(crate) fn route(&self) -> &Arc<str> {
        &self.route
    }

    /// What is below the rescue layer.
    pub(crate) fn inner(&self) -> &S {
        &self.inner
    }
}

/// The rescue layer's work around the call below it (`call_inner`): the layer's `call`, and
/// a lean route's upstream call driven in place (`stack.rs`).
pub(crate) fn rescued<F>(
    route: &Arc<str>,
    req: Request<Body>,
    call_inner: impl FnOnce(Request<Body>) -> F,
) -> RescueFuture<F> {
    // What an error answer needs is taken now: the request is gone once it is passed on.
    // The gateway has set the request id header; the context, where there is one, says
    // the same.
    let (request_id, caller) = match RequestContext::of(&req) {
        Some(context) => (context.request_id.clone(), context.caller),
        None => (
            req.headers()
                .get(&X_REQUEST_ID)
                .cloned()
                .unwrap_or_else(|| HeaderValue::from_static("")),
            Caller::of(req.headers()),
        ),
    };
    RescueFuture {
        inner: call_inner(req),
        request_id,
        caller,
        route: route.clone(),
    }
}

pin_project! {
    pub(crate) struct RescueFuture<F> {
        #[pin]
        inner: F,
        request_id: HeaderValue,
        caller: Caller,
        route: Arc<str>,
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
            Err(error) => error.answer(this.request_id, *this.caller, Some(this.route)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::test_context;
    use crate::middleware::test_support::Below;
    use std::time::Duration;

    /// A response decorator shaped like CORS: it stamps whatever answer comes back.
    #[derive(Clone)]
    struct Stamp<S>(S);

    impl<S> Service<Request<Body>> for Stamp<S>
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
        S::Future: Send + 'static,
    {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            self.0.poll_ready(cx)
        }

        fn call(&mut self, req: Request<Body>) -> Self::Future {
            let future = self.0.call(req);
            Box::pin(async move {
                let mut response = future.await?;
                response.headers_mut().insert(
                    "access-control-allow-origin",
                    HeaderValue::from_static("https://app.example"),
                );
                Ok(response)
            })
        }
    }

    fn request() -> Request<Body> {
        let mut req = Request::new(Body::empty());
        req.extensions_mut()
            .insert(test_context(([192, 0, 2, 7], 5555).into(), None));
        req
    }

    #[tokio::test]
    async fn decorators_outside_the_rescue_see_every_error_answer() {
        let cases: [(Below, u16, &str); 4] = [
            (
                Below::answering(|| Err(GatewayError::NoRoute)),
                404,
                "route_not_found",
            ),
            (
                Below::answering(|| Err(GatewayError::PayloadTooLarge { limit: 1 })),
                413,
                "payload_too_large",
            ),
            (
                Below::answering(|| Err(GatewayError::UpstreamTimeout(Duration::from_secs(5)))),
                504,
                "upstream_timeout",
            ),
            (
                Below::answering(|| {
                    Err(GatewayError::UpstreamConnect {
                        cluster: "c".into(),
                        source: std::io::Error::other("refused"),
                    })
                }),
                502,
                "upstream_connect_failed",
            ),
        ];
        for (below, status, code) in cases {
            let mut stack = Stamp(RescueLayer::new("test-route").layer(below));
            let Ok(response) = stack.call(request()).await;
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(
                response.headers()["access-control-allow-origin"],
                "https://app.example",
                "{code}"
            );
            let body = match response.into_body() {
                Body::Full { data: Some(data) } => data,
                other => panic!("{code}: not a JSON body: {other:?}"),
            };
            let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(json["error"]["code"], code);
            assert_eq!(json["error"]["request_id"], "test-request");
        }
    }

    #[tokio::test]
    async fn answers_that_are_not_errors_pass_unchanged() {
        let mut stack = Stamp(RescueLayer::new("test-route").layer(Below::ok()));
        let Ok(response) = stack.call(request()).await;
        assert_eq!(response.status(), http::StatusCode::OK);
        assert!(response
            .extensions()
            .get::<crate::error::LocalAnswer>()
            .is_none());
    }
}
