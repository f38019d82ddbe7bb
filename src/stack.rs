//! A route's stack: the layers a request passes once its route is known, outermost first.
//!
//! On the request path: `gateway::handle` calls the stack of the route the router chose. It
//! is built once per route when a config is loaded ([`build_route_stack`]), never per
//! request, and it is one of two concrete types ([`RouteStack`]). A route with a policy that
//! adds a layer gets the full stack, where a policy the route does not use is a layer
//! switched off (a branch, nothing cloned). A route with none gets the lean stack — rescue,
//! body limit, timeout, upstream — so that it pays nothing for the policies it does not use,
//! not even the switched-off layers' calls and the moves of the request and of the nested
//! future through them. No future is boxed until the upstream's.
//!
//! The order is the design: read [`build_route_stack`] top to bottom (response headers →
//! rescue → body limit → auth → request transforms → timeout → upstream, with the route's
//! retries).

use crate::body::Body;
use crate::concerns::{RoutePolicies, Sections};
use crate::grpc::{Grpc, GrpcApi, GrpcLayer};
use crate::metrics::Metrics;
use crate::middleware::auth::providers::AuthServices;
use crate::middleware::auth::{Auth, AuthLayer};
use crate::middleware::body_limit::{limited, BodyLimit, BodyLimitLayer};
use crate::middleware::compression::{Compress, CompressLayer, Decompress, DecompressLayer};
use crate::middleware::cors::{Cors, CorsLayer};
use crate::middleware::direct::{Direct, DirectLayer};
use crate::middleware::fault::{Fault, FaultLayer};
use crate::middleware::ip_rules::{IpFilter, IpRulesLayer};
use crate::middleware::mirror::{Mirror, MirrorLayer};
use crate::middleware::rate_limit::{
    ConcurrencyLayer, ConcurrencyLimit, RateLimit, RateLimitLayer, RateLimitServices,
};
use crate::middleware::rescue::{rescued, Rescue, RescueLayer};
use crate::middleware::split::Destination;
use crate::middleware::timeout::{timed, Timeout, TimeoutLayer};
use crate::middleware::transform::{
    RequestTransform, RequestTransformLayer, ResponseHeaders, ResponseHeadersLayer,
};
use crate::upstream::{Cluster, Upstream};
use http::{Request, Response};
use pin_project_lite::pin_project;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// A route's stack: the full one, or the lean one for a route no policy adds a layer to
/// ([`RoutePolicy::adds_layer`](crate::config::check::RoutePolicy::adds_layer)).
#[derive(Clone)]
pub(crate) enum RouteStack {
    Full(FullStack),
    Lean(LeanStack),
}

/// The stack of a route with policies, outermost first (as built in [`build_route_stack`]).
pub(crate) type FullStack = Cors<
    ResponseHeaders<
        Compress<
            Rescue<
                IpFilter<
                    BodyLimit<
                        Auth<
                            RateLimit<
                                ConcurrencyLimit<
                                    Direct<
                                        Fault<
                                            RequestTransform<
                                                Timeout<Decompress<Grpc<Mirror<Destination>>>>,
                                            >,
                                        >,
                                    >,
                                >,
                            >,
                        >,
                    >,
                >,
            >,
        >,
    >,
>;

/// The stack of a route no policy adds a layer to: the same layers as [`FullStack`] has
/// for it, without the switched-off ones. When it makes one call to one cluster (no split,
/// no retries), [`call`] runs these layers' work around the cluster's own future, so that
/// the request's whole path is one future with nothing boxed.
pub(crate) type LeanStack = Rescue<BodyLimit<Timeout<Destination>>>;

/// What the layers of a runtime's routes share: built once per runtime, before its routes.
pub(crate) struct Services {
    pub(crate) auth: AuthServices,
    pub(crate) rate_limit: RateLimitServices,
    pub(crate) metrics: Metrics,
}

/// Compose one route's stack over its cluster (for a route that answers by itself, one
/// that is never called); `sections` are the settings routes share.
pub(crate) fn build_route_stack(
    route: &str,
    policies: &RoutePolicies,
    sections: &Sections,
    cluster: Arc<Cluster>,
    clusters: &[Arc<Cluster>],
    services: &Services,
    grpc_api: Option<&Arc<GrpcApi>>,
) -> RouteStack {
    // The route's cluster, or one of its traffic split's; the upstream call with the
    // route's retries if it has any: a retry repeats only the upstream call (each try bounded
    // by its per-try timeout), against the cluster's budget.
    let destination = Destination::new(&policies.split, &policies.retry, cluster.clone(), clusters);
    if !policies.adds_layers() {
        // The full stack's order, without the layers that would be switched off.
        let layers = (
            RescueLayer::new(route),
            BodyLimitLayer::new(&policies.body_limit),
            TimeoutLayer::new(&policies.timeout),
        );
        return RouteStack::Lean(layers.layer(destination));
    }
    let layers = (
        // Outermost: a browser's preflight is answered before anything asks it for
        // credentials, and every answer below — errors included — gets the CORS headers a
        // browser application needs to read it.
        CorsLayer::new(route, &policies.cors),
        // Decorates every answer of the route — the upstream's and the gateway's own errors
        // alike — so it sits outside the rescue layer (later: rate-limit headers).
        ResponseHeadersLayer::new(&policies.transform),
        // Compresses what the route answers, its errors included; the decorators above see
        // the final Content-Encoding.
        CompressLayer::new(&policies.compression),
        // Typed errors of every layer below become the JSON or grpc-status answer here, so the
        // decorators above see them like any other response.
        RescueLayer::new(route),
        // Callers the route refuses by address are refused before anything is done for them.
        IpRulesLayer::new(&policies.ip_rules, &sections.trusted_proxies),
        // 413 from Content-Length before anything else looks at the request, and before a
        // byte of the body is read (or a `100 Continue` invites it).
        BodyLimitLayer::new(&policies.body_limit),
        // Who may call: decided before the route does any work for the caller.
        AuthLayer::new(
            &policies.auth,
            &services.auth,
            route,
            shares_identity(policies, &cluster, clusters),
        ),
        // How much: keyed by the identity auth establishes; a 429 is rendered by the rescue
        // layer and decorated like any answer. Its headers join the response on the way back.
        RateLimitLayer::new(&services.rate_limit, route),
        // How many at once: a slot is held until the response has been sent whole.
        ConcurrencyLayer::new(
            &policies.concurrency,
            &sections.trusted_proxies,
            &services.metrics,
            route,
        ),
        // A route's own answer (maintenance page, redirect) once the caller may have it.
        DirectLayer::new(&policies.direct),
        // Rehearsed failures, for callers the route admits; a delay is not the upstream's
        // time, so it comes before the timeout.
        FaultLayer::new(route, &policies.fault, &services.metrics),
        // Rewrites apply only to requests that were admitted.
        RequestTransformLayer::new(&policies.transform),
        // Only the upstream side below it (decoding, translating, mirroring, sending), so
        // that it measures the upstream and nothing the gateway does first — all of a retrying
        // route's tries together.
        TimeoutLayer::new(&policies.timeout),
        // Below the timeout, which still sees the client's own body arrive; decoded sizes
        // are counted on the way to the backend.
        DecompressLayer::new(&policies.compression),
        // Once every policy above has seen the caller's request as it came, the upstream gets
        // a gRPC call: HTTP/JSON transcoding and gRPC-Web translation (the route's timeout
        // becomes the call's `grpc-timeout`).
        GrpcLayer::new(&policies.grpc, &policies.timeout, grpc_api),
        // Last, so the shadow sees the request exactly as the primary does.
        MirrorLayer::new(route, &policies.mirror, clusters, &services.metrics),
    );
    RouteStack::Full(layers.layer(destination))
}

/// Run a request through a route's stack. Never fails: the rescue layer has made every
/// error an answer.
///
/// A plain function that returns the route's future, rather than an `async fn`: the request
/// moves into that future once, where an `async fn`'s future would keep room for its request
/// argument beside the nested future that took it (and each request's future, with this one
/// inside, is moved whole several times on its way to being polled).
pub(crate) fn call(stack: &RouteStack, req: Request<Body>) -> impl Future<Output = Response<Body>> {
    match stack {
        RouteStack::Full(stack) => StackCall::Full {
            future: run(stack.clone(), req),
        },
        RouteStack::Lean(stack) => {
            let limit = stack.inner();
            let timeout = limit.inner();
            match timeout.inner().single().and_then(Upstream::direct) {
                // One call to one cluster: the lean stack's three layers around the
                // cluster's own future, all of it inside this request's future — no
                // boxed future, no copy of the stack.
                Some(cluster) => StackCall::Direct {
                    future: rescued(stack.route(), req, |req| {
                        limited(limit.limit(), req, |req| {
                            timed(timeout.timeout(), req, |req| cluster.clone().send(req))
                        })
                    }),
                },
                None => StackCall::Lean {
                    future: run(stack.clone(), req),
                },
            }
        }
    }
}

pin_project! {
    /// The future of [`call`]: the route's stack driven as a service (full or lean), or the
    /// lean stack's layers around one cluster's call.
    #[project = StackCallProj]
    enum StackCall<F, L, D> {
        Full { #[pin] future: F },
        Lean { #[pin] future: L },
        Direct { #[pin] future: D },
    }
}

impl<F, L, D> Future for StackCall<F, L, D>
where
    F: Future<Output = Response<Body>>,
    L: Future<Output = Response<Body>>,
    D: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Response<Body>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<Body>> {
        match self.project() {
            StackCallProj::Full { future } => future.poll(cx),
            StackCallProj::Lean { future } => future.poll(cx),
            StackCallProj::Direct { future } => future.poll(cx).map(|result| match result {
                Ok(response) => response,
                Err(never) => match never {},
            }),
        }
    }
}

/// Each request drives its own copy of the stack (a few reference counts), so no two
/// requests share per-call state. Every layer is always ready.
async fn run<S>(mut stack: S, req: Request<Body>) -> Response<Body>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
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

/// Whether a layer below auth reads the caller's identity: a policy that says so, or a
/// cluster the route may call that hashes on the consumer.
fn shares_identity(
    policies: &RoutePolicies,
    cluster: &Arc<Cluster>,
    clusters: &[Arc<Cluster>],
) -> bool {
    policies.reads_identity()
        || policies
            .split
            .clusters(Some(cluster), clusters)
            .any(|c| c.hashes_on_consumer())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route clones its stack and holds its future per request: policies a route does
    /// not use must not make them much larger (the uncommon states are boxed). Bounds, with
    /// a little room, from the sizes this was written with (136 and 272 bytes; the lean
    /// stack's future 216).
    #[test]
    fn the_stack_and_its_future_stay_small() {
        let stack = std::mem::size_of::<RouteStack>();
        let future = std::mem::size_of::<<FullStack as Service<Request<Body>>>::Future>();
        let lean = std::mem::size_of::<<LeanStack as Service<Request<Body>>>::Future>();
        assert!(stack <= 160, "the route stack is {stack} bytes");
        assert!(future <= 320, "the full stack's future is {future} bytes");
        assert!(lean <= 240, "the lean stack's future is {lean} bytes");
    }
}
