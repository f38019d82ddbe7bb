//! Per-route policies, each a tower `Layer`, and the stack they are composed into.
//!
//! A route's stack is built once when a config is loaded ([`build_route_stack`]) and stored
//! type-erased as a [`RouteHandler`] in the route table; the request path calls it without
//! knowing what is inside. Order, outermost first:
//! body limit (413 before the backend sees a byte) -> header/path transforms -> timeout (504)
//! -> the upstream cluster. Later policies (CORS, auth, rate limits, transcoding) slot in
//! here as further layers; none of them needs to know about the router or the others.
//!
//! Every layer's service has error type [`GatewayError`]: a layer that refuses a request
//! returns a typed error, and `error.rs` turns it into the JSON answer.

pub mod body_limit;
pub mod timeout;
pub mod transform;

use crate::body::Body;
use crate::config::model;
use crate::error::GatewayError;
use crate::upstream::{Cluster, UpstreamService};
use http::{Request, Response};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tower_layer::Layer;
use tower_service::Service;

pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, GatewayError>> + Send>>;

/// A route's whole stack behind one object-safe call.
pub trait RouteHandler: Send + Sync + 'static {
    fn handle(&self, req: Request<Body>) -> HandlerFuture;
}

/// Adapts any cloneable tower service into a [`RouteHandler`]; each request drives its own
/// clone through `poll_ready` and `call`, so services never share per-call state.
struct TowerHandler<S>(S);

impl<S> RouteHandler for TowerHandler<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    fn handle(&self, req: Request<Body>) -> HandlerFuture {
        let mut service = self.0.clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
            service.call(req).await
        })
    }
}

/// Compose the stack of one route over its cluster.
pub fn build_route_stack(route: &model::Route, cluster: Arc<Cluster>) -> Arc<dyn RouteHandler> {
    let upstream = UpstreamService::new(cluster);
    let service = timeout::TimeoutLayer::new(route.timeout).layer(upstream);
    let service = transform::TransformLayer::from_route(route).layer(service);
    let service = body_limit::BodyLimitLayer::new(route.max_body_size).layer(service);
    Arc::new(TowerHandler(service))
}
