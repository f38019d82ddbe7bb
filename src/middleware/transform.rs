//! Request and response rewriting, per route: path prefix stripping, Host rewrite and the
//! `request_headers` / `response_headers` operations (remove, then set, then add).
//!
//! Runs after the body limit and before the timeout, so it sees the request as the client
//! sent it (after the gateway's own forwarding headers) and the response exactly as the
//! upstream sent it. Routes without any transform still go through it at the cost of a few
//! branch checks.

use crate::body::Body;
use crate::config::model::{HeaderOps, Route};
use crate::error::GatewayError;
use http::header::HOST;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, Uri};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

#[derive(Debug, Default)]
struct Transforms {
    strip_prefix: Option<String>,
    host_rewrite: Option<HeaderValue>,
    request: HeaderOps,
    response: HeaderOps,
}

#[derive(Debug, Clone)]
pub struct TransformLayer {
    transforms: Arc<Transforms>,
}

impl TransformLayer {
    pub fn from_route(route: &Route) -> TransformLayer {
        TransformLayer {
            transforms: Arc::new(Transforms {
                strip_prefix: route.strip_prefix.clone().filter(|p| p != "/"),
                host_rewrite: route.host_rewrite.clone(),
                request: route.request_headers.clone(),
                response: route.response_headers.clone(),
            }),
        }
    }
}

impl<S> Layer<S> for TransformLayer {
    type Service = Transform<S>;

    fn layer(&self, inner: S) -> Transform<S> {
        Transform {
            inner,
            transforms: self.transforms.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Transform<S> {
    inner: S,
    transforms: Arc<Transforms>,
}

/// `/v1/users/42` with prefix `/v1` -> `/users/42`; `/v1` -> `/`; no match -> unchanged.
pub fn strip_path_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() {
        Some("/")
    } else if rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

fn rewrite_path(uri: &Uri, prefix: &str) -> Option<Uri> {
    let stripped = strip_path_prefix(uri.path(), prefix)?;
    let target = match uri.query() {
        Some(query) => format!("{stripped}?{query}"),
        None => stripped.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(target).ok()?);
    Uri::from_parts(parts).ok()
}

impl<S> Service<Request<Body>> for Transform<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let t = &self.transforms;
        if let Some(prefix) = &t.strip_prefix {
            if let Some(uri) = rewrite_path(req.uri(), prefix) {
                *req.uri_mut() = uri;
            }
        }
        if let Some(host) = &t.host_rewrite {
            req.headers_mut().insert(HOST, host.clone());
        }
        if !t.request.is_empty() {
            t.request.apply(req.headers_mut());
        }
        ResponseFuture {
            inner: self.inner.call(req),
            transforms: self.transforms.clone(),
        }
    }
}

pin_project! {
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        transforms: Arc<Transforms>,
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, GatewayError>>,
{
    type Output = Result<Response<Body>, GatewayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        if !this.transforms.response.is_empty() {
            this.transforms.response.apply(response.headers_mut());
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_only_on_segment_boundaries() {
        assert_eq!(strip_path_prefix("/v1/users/42", "/v1"), Some("/users/42"));
        assert_eq!(strip_path_prefix("/v1", "/v1"), Some("/"));
        assert_eq!(strip_path_prefix("/v1/", "/v1"), Some("/"));
        assert_eq!(strip_path_prefix("/v10/users", "/v1"), None);
        assert_eq!(strip_path_prefix("/other", "/v1"), None);
    }

    #[test]
    fn rewriting_keeps_the_query() {
        let uri: Uri = "/v1/users?id=3&x=%20".parse().expect("uri");
        assert_eq!(
            rewrite_path(&uri, "/v1").expect("rewritten"),
            "/users?id=3&x=%20"
        );
    }
}
