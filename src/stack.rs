//! A route's stack: the layers a request passes once its route is known, outermost first.
//!
//! On the request path: `gateway::handle` calls the stack of the route the router chose. It
//! is built once per route when a config is loaded ([`build_route_stack`]), never per
//! request, and it is one concrete type for every route ([`RouteStack`]): a policy a route
//! does not use is a layer switched off (a branch, nothing cloned), so a route without
//! policies pays almost nothing for them, and no future is boxed until the upstream's.
//!
//! The order is the design: read [`build_route_stack`] top to bottom.

use crate::body::Body;
use crate::concerns::RoutePolicies;
use crate::grpc::{Grpc, GrpcApi, GrpcLayer};
use crate::middleware::auth::{Auth, AuthLayer};
use crate::middleware::body_limit::{BodyLimit, BodyLimitLayer};
use crate::middleware::rescue::{Rescue, RescueLayer};
use crate::middleware::timeout::{Timeout, TimeoutLayer};
use crate::middleware::transform::{
    RequestTransform, RequestTransformLayer, ResponseHeaders, ResponseHeadersLayer,
};
use crate::upstream::{Cluster, Upstream};
use http::{Request, Response};
use std::convert::Infallible;
use std::sync::Arc;
use tower_layer::Layer;
use tower_service::Service;

/// Every route's stack, outermost first (as built in [`build_route_stack`]).
pub(crate) type RouteStack =
    ResponseHeaders<Rescue<BodyLimit<Auth<RequestTransform<Timeout<Grpc<Upstream>>>>>>>;

/// Compose one route's stack over its cluster.
pub(crate) fn build_route_stack(
    route: &str,
    policies: &RoutePolicies,
    cluster: Arc<Cluster>,
    grpc_api: Option<&Arc<GrpcApi>>,
) -> RouteStack {
    let layers = (
        // Decorates every answer of the route — the upstream's and the gateway's own errors
        // alike — so it sits outside the rescue layer (later: CORS, rate-limit headers).
        ResponseHeadersLayer::new(&policies.transform),
        // Typed errors of every layer below become the JSON or grpc-status answer here, so the
        // decorators above see them like any other response.
        RescueLayer::new(route),
        // 413 from Content-Length before anything else looks at the request, and before a
        // byte of the body is read (or a `100 Continue` invites it).
        BodyLimitLayer::new(&policies.body_limit),
        // Who may call: decided before the route does any work for the caller (later: rate
        // limits, keyed by the identity auth establishes).
        AuthLayer::new(&policies.auth),
        // Rewrites apply only to requests that were admitted.
        RequestTransformLayer::new(&policies.transform),
        // So that it measures the upstream and nothing the gateway does first.
        TimeoutLayer::new(&policies.timeout),
        // Last, so every policy above sees the caller's request as it came and the upstream
        // gets a gRPC call: HTTP/JSON transcoding and gRPC-Web translation (the route's
        // timeout becomes the call's `grpc-timeout`).
        GrpcLayer::new(&policies.grpc, &policies.timeout, grpc_api),
    );
    layers.layer(Upstream::new(cluster))
}

/// Run a request through a route's stack. Never fails: the rescue layer has made every
/// error an answer.
pub(crate) async fn call(stack: &RouteStack, req: Request<Body>) -> Response<Body> {
    // Each request drives its own copy of the stack (a few reference counts), so no two
    // requests share per-call state. Every layer is always ready.
    let mut stack = stack.clone();
    let result: Result<Response<Body>, Infallible> = async {
        std::future::poll_fn(|cx| stack.poll_ready(cx)).await?;
        stack.call(req).await
    }
    .await;
    match result {
        Ok(response) => response,
        Err(never) => match never {},
    }
}
