//! Per-route policies, one module per concern, each a tower `Layer`.
//!
//! A concern owns everything about itself: the keys it reads from a route (its `File`
//! struct), their checks (`RoutePolicy::check`, reporting with positions into the shared
//! problem list), its typed config, what `portico explain` prints about it, and its layer.
//! `concerns.rs` lists the concerns; `stack.rs` puts their layers in order. None of them
//! knows about the router or the others; what they need to know about the request they read
//! from its [`crate::context::RequestContext`].
//!
//! Below the rescue layer, a layer that refuses a request returns a typed
//! [`crate::error::GatewayError`]; the rescue layer renders it, and the layers above it
//! (response decorators) see the rendered answer like any other response.

use crate::body::Body;
use crate::error::GatewayError;
use http::Response;
use std::future::Future;
use std::pin::Pin;

/// A route's answer on its way, boxed: for the paths that must wait in a future of their own
/// (an IdP or Redis to ask, a cluster picked per request, retries).
pub(crate) type BoxedAnswer =
    Pin<Box<dyn Future<Output = Result<Response<Body>, GatewayError>> + Send>>;

pub(crate) mod auth;
pub(crate) mod body_limit;
pub(crate) mod captures;
pub(crate) mod compression;
pub(crate) mod cors;
pub(crate) mod direct;
pub(crate) mod fault;
pub(crate) mod ip_rules;
pub(crate) mod mirror;
pub(crate) mod rate_limit;
pub(crate) mod rescue;
pub(crate) mod retry;
pub(crate) mod split;
#[cfg(test)]
pub(crate) mod test_support;
pub(crate) mod timeout;
pub(crate) mod transform;
